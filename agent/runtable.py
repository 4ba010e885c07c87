"""The local pool's run table: what a new agent needs to re-attach the runs of one that died.

Like the Slurm pool's job table (`agent.slurm_jobs`), it lives in the
agent's work directory, outside the run root (a sandboxed code cannot see
it, a user's file ops cannot reach it), one directory per run under
``<work_dir>/runs/<run_id>/``:

- ``run.json``: the run op (without its inputs), the keeper's pid and its
  start time (so a pid reused since is never taken for the keeper), the
  wall time of the start, the OOM kill count before it, the agent that holds it
- ``output``: the code's stdout and stderr, as its keeper writes them
  (`agent.keeper_io` records)
- ``status``: the keeper's last word, once the run's tree is gone
- ``adopt``: the keeper's adoption FIFO (`agent.keeper_io.Lifeline`)

A new agent loads the table (`load`), checks each keeper (`open_keeper`),
adopts it (`adopt`) and reads its output again from the start. `end_keepers` is for a driver whose agent is gone for good: it ends
the runs that agent left. Blocking, small, no event loop.
"""

import json
import os
import pathlib
import re
import shutil
import signal

from agent.log import log

ENTRY_FILE = "run.json"
OUTPUT_FILE = "output"
STATUS_FILE = "status"
ADOPT_FILE = "adopt"
READS_FILE = "reads"

#: the keeper's "kill everything now" (`agent.keeper.KILL_SIGNAL`)
_KILL_SIGNAL = signal.SIGUSR1

#: a run id as the protocol has it (a directory name, never a path)
_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


class Files:
    """The paths of one run's entry."""

    def __init__(self, run_dir):
        self.dir = pathlib.Path(run_dir)
        self.entry = self.dir / ENTRY_FILE
        self.output = self.dir / OUTPUT_FILE
        self.status = self.dir / STATUS_FILE
        self.adopt = self.dir / ADOPT_FILE
        #: the journal of its followed files' reads (`agent.reads`)
        self.reads = self.dir / READS_FILE


class RunTable:
    """The runs of the agents of one work directory (one at a time holds it).

    Args:
        work_dir (str or Path): created (mode 0700) if missing
    """

    def __init__(self, work_dir):
        self.dir = pathlib.Path(work_dir).resolve() / "runs"
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.dir.parent, 0o700)

    def files(self, run_id):
        if not _ID_RE.fullmatch(run_id):
            raise ValueError(f"run_id={run_id!r} is not an id")
        return Files(self.dir / run_id)

    def create(self, run_id):
        """A fresh entry directory: an empty output file, the adoption FIFO.

        What was there is removed.
        """
        f = self.files(run_id)
        if f.dir.exists():
            shutil.rmtree(f.dir)
        f.dir.mkdir(mode=0o700)
        os.close(os.open(f.output, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        os.mkfifo(f.adopt, 0o600)
        return f

    def save(self, run_id, entry):
        """Replace the run's ``run.json`` atomically (a crash leaves the old or the new).

        Not fsynced: the table must survive its agent, not the host (the
        keepers do not survive a reboot either).
        """
        f = self.files(run_id)
        t = f.dir / f".{ENTRY_FILE}.tmp"
        t.write_text(json.dumps(entry))
        os.replace(t, f.entry)

    def remove(self, run_id):
        shutil.rmtree(self.files(run_id).dir, ignore_errors=True)

    def load(self):
        """Every entry: (run_id, `Files`, entry); unreadable ones are removed.

        An entry directory without ``run.json`` is a start that its agent did
        not finish recording: its keeper (if any) is orphaned and ends itself.
        """
        rv = []
        for i, f, e in _entries(self.dir):
            if isinstance(e, Exception):
                log("run_entry_unreadable", path=str(f.entry), error=str(e))
                shutil.rmtree(f.dir, ignore_errors=True)
            else:
                rv.append((i, f, e))
        return rv


def _entries(runs_dir):
    """(run_id, `Files`, entry or the error that makes it unreadable) of each entry."""
    try:
        ds = sorted(runs_dir.iterdir())
    except OSError:
        return
    for d in ds:
        f = Files(d)
        try:
            e = json.loads(f.entry.read_text())
            if not isinstance(e, dict) or e["op"]["run_id"] != d.name:
                raise ValueError("not an entry of this run")
        except FileNotFoundError:
            continue
        except (OSError, ValueError, KeyError, TypeError) as x:
            yield d.name, f, x
            continue
        yield d.name, f, e


def start_ticks(pid):
    """The start time of process `pid` (clock ticks since boot), or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            s = f.read()
    except OSError:
        return None
    # comm (in parens) may hold anything; starttime is the 20th field after it
    x = s[s.rfind(b")") + 2 :].split()
    return int(x[19]) if len(x) > 19 else None


def open_keeper(pid, ticks):
    """A pidfd of the keeper `pid` started at `ticks`, or None if it is gone.

    The pidfd pins the process: checked after it is open, the start time
    proves it is the keeper and not a process that got its pid since.
    """
    try:
        fd = os.pidfd_open(pid)
    except OSError:
        return None
    if start_ticks(pid) != ticks:
        os.close(fd)
        return None
    return fd


def adopt(path):
    """Tell the keeper of adoption FIFO `path` that we are its agent now.

    Returns:
        bool: False if no keeper holds it (it has ended, or is ending)
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        # ENXIO: no reader, the keeper let go of it
        return False
    try:
        os.write(fd, f"{os.getpid()}\n".encode())
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def end_keepers(work_dir, owner):
    """End the runs whose entries `owner` (an agent id) holds: it is gone for good.

    Each keeper still alive gets its "kill everything now": it ends its tree
    and writes its status. Reads the table, changes nothing in it.

    Returns:
        list: the run ids whose keepers were told
    """
    rv = []
    for i, _, e in _entries(pathlib.Path(work_dir) / "runs"):
        if isinstance(e, Exception) or e.get("owner") != owner:
            continue
        p = e.get("keeper_pid")
        fd = open_keeper(p, e.get("keeper_start")) if isinstance(p, int) else None
        if fd is None:
            continue
        try:
            signal.pidfd_send_signal(fd, _KILL_SIGNAL)
            rv.append(i)
        except OSError:
            pass
        finally:
            os.close(fd)
    return rv
