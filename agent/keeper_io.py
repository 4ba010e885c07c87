"""A keeper's files and lifeline: what lets a run outlive its agent.

`agent.keeper` uses these when the pool gives it files (``--output``):

- `Copier`: the code's stdout and stderr are pipes into the keeper, which
  appends them, as they come, to the output file as records (`encode`: the
  stream, 1 or 2, the length, the bytes). One file keeps the order in which
  stdout and stderr came, so an agent that reads it again from the start
  (a successor, after a crash) rebuilds the same log and frames at the
  same offsets. The file is the agent's, outside the run directory: a
  sandboxed code can neither see nor replace it.
- `Lifeline`: the keeper watches its current agent's process (a pidfd).
  When it ends, the keeper waits ``orphan_secs`` for a successor (a new
  agent that found the run in its run table) to adopt it through its
  adoption FIFO and, if none does, ends the tree as if told to by
  `KILL_SIGNAL` and says so in its status.
- `write_status`: the keeper's last word (the code's return code, and
  whether it was orphaned), replaced atomically once the tree is gone, so
  an agent that is not the keeper's parent knows how the run ended.

`KeeperFiles` puts the three around the keeper's code; the keeper imports
this module only once its code has started. Stdlib only, and no
import of the `agent` package: the keeper loads it by path (``python -I
-S``). `Decoder` is the agent's side (with `agent.keeping.read_status`).
"""

import os
import select
import struct
import threading
import time

#: a record's header: stream (1: stdout, 2: stderr) and length
HEADER = struct.Struct(">BI")

#: most bytes the keeper reads from a pipe at once (and so in one record)
CHUNK_BYTES = 64 * 1024


def encode(stream, data):
    return HEADER.pack(stream, len(data)) + data


class Decoder:
    """Records in (any split), ``(stream, bytes)`` out; a partial record waits."""

    def __init__(self):
        self._pending = b""
        self.broken = False

    def feed(self, data):
        b = self._pending + data if self._pending else data
        rv = []
        i = 0
        h = HEADER.size
        while len(b) - i >= h:
            s, n = HEADER.unpack_from(b, i)
            if s not in (1, 2) or n > CHUNK_BYTES:
                # not written by a keeper: nothing after it can be trusted
                self.broken = True
                self._pending = b""
                return rv
            if len(b) - i - h < n:
                break
            rv.append((s, b[i + h : i + h + n]))
            i += h + n
        self._pending = b[i:]
        return rv

    def reset(self):
        """The file was read again from its start."""
        self._pending = b""


class Copier(threading.Thread):
    """Appends what comes from the code's pipes to the output file, as records.

    Args:
        pipes (dict): read fd -> stream (1 or 2)
        out_fd (int): the output file, opened for appending
    """

    def __init__(self, pipes, out_fd):
        super().__init__(name="copier", daemon=True)
        self._pipes = dict(pipes)
        self._out = out_fd
        self._wake_r, self._wake_w = os.pipe()
        self.write_failed = None

    def finish(self, timeout_secs):
        """The tree is gone: copy what is left in the pipes, then stop."""
        os.write(self._wake_w, b".")
        self.join(timeout_secs)

    def run(self):
        p = select.poll()
        for fd in self._pipes:
            p.register(fd, select.POLLIN)
        p.register(self._wake_r, select.POLLIN)
        while self._pipes:
            for fd, _ in p.poll():
                if fd == self._wake_r:
                    self._drain()
                    return
                if self._copy(fd) == 0:
                    p.unregister(fd)

    def _copy(self, fd):
        """One read of `fd` copied: its length, 0 at its end, None if nothing is there."""
        try:
            b = os.read(fd, CHUNK_BYTES)
        except BlockingIOError:
            return None
        except OSError:
            b = b""
        if not b:
            del self._pipes[fd]
            os.close(fd)
            return 0
        self._write(encode(self._pipes[fd], b))
        return len(b)

    def _drain(self):
        # the keeper itself holds the stderr pipe (its own messages): no
        # end comes, so read what is there
        for fd in list(self._pipes):
            os.set_blocking(fd, False)
            while self._copy(fd):
                pass

    def _write(self, data):
        m = memoryview(data)
        while m:
            try:
                n = os.write(self._out, m)
            except OSError as e:
                # the disk is full: the code must not block on its pipes
                self.write_failed = str(e)
                return
            m = m[n:]


class Lifeline(threading.Thread):
    """The keeper's link to its agent; `on_orphaned` when none is left long enough.

    The agent is a pidfd (readable once it has ended). A new agent adopts
    the keeper by writing its pid to the adoption FIFO (in the agent's
    run table, mode 0600: only the agent's user can), which the keeper
    holds open for reading and writing, so it never sees an end of it.

    Args:
        agent_pid (int): the agent that started the keeper (its parent)
        adopt_path (str): the adoption FIFO
        orphan_secs (float): how long without an agent before `on_orphaned`
        on_orphaned (callable): called once, from this thread
    """

    def __init__(self, agent_pid, adopt_path, orphan_secs, on_orphaned):
        super().__init__(name="lifeline", daemon=True)
        self._fifo = os.open(adopt_path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        self._agent = _pidfd(agent_pid)
        if self._agent is not None and os.getppid() != agent_pid:
            # it died before we looked: the pid is not our agent's
            os.close(self._agent)
            self._agent = None
        self.orphan_secs = orphan_secs
        self._on_orphaned = on_orphaned
        self.orphaned = False

    def run(self):
        since = None if self._agent is not None else time.monotonic()
        while True:
            p = select.poll()
            p.register(self._fifo, select.POLLIN)
            t = None
            if self._agent is not None:
                p.register(self._agent, select.POLLIN)
            else:
                t = max(0.0, since + self.orphan_secs - time.monotonic()) * 1000
            ev = p.poll(t)
            if not ev and self._agent is None:
                self.orphaned = True
                # a new agent that comes now cannot adopt: it sees the end
                os.close(self._fifo)
                self._on_orphaned()
                return
            for fd, _ in ev:
                if fd == self._agent:
                    os.close(self._agent)
                    self._agent = None
                    since = time.monotonic()
                elif fd == self._fifo:
                    a = _pidfd(_last_pid(self._fifo))
                    if a is not None:
                        if self._agent is not None:
                            # the newest agent is the one that counts
                            os.close(self._agent)
                        self._agent = a
                        since = None


def _last_pid(fd):
    try:
        b = os.read(fd, 4096)
    except BlockingIOError:
        return None
    x = b.split()
    return int(x[-1]) if x and x[-1].isdigit() else None


def _pidfd(pid):
    if not pid:
        return None
    try:
        return os.pidfd_open(pid)
    except OSError:
        return None


class KeeperFiles:
    """The keeper's side: the copy of the output, the lifeline, the status.

    Args:
        out_fd (int): the output file, open for appending
        pipes (dict): read fd -> stream (1, 2): the code's stdout and stderr
        status (str): where `end` writes the status
        agent_pid, adopt_path, orphan_secs, on_orphaned: see `Lifeline`
    """

    def __init__(
        self, out_fd, pipes, status, agent_pid, adopt_path, orphan_secs, on_orphaned
    ):
        self._status = status
        self._copier = Copier(pipes, out_fd)
        self._lifeline = Lifeline(agent_pid, adopt_path, orphan_secs, on_orphaned)

    def start(self):
        self._copier.start()
        self._lifeline.start()

    def end(self, returncode, timeout_secs, cgroup=None):
        """The rest of the output (waiting at most `timeout_secs`), then the status."""
        self._copier.finish(timeout_secs)
        write_status(self._status, returncode, self._lifeline.orphaned, cgroup)


def write_status(path, returncode, orphaned, cgroup=None):
    """The keeper's last word, replaced atomically (a reader sees all or nothing).

    Args:
        returncode (int): the code's, as asyncio gives it (-N: signal N)
        orphaned (bool): ended because no agent was left
        cgroup (dict): the run cgroup's counts at the end, names to ints or
            None (`agent.cgroup_run.RunCgroup.end_counts`), if it had one
    """
    t = f"{path}.tmp"
    # JSON, without importing json (the keeper's start is on the hot path)
    s = f'{{"returncode": {int(returncode)}, "orphaned": {str(bool(orphaned)).lower()}'
    if cgroup is not None:
        c = ", ".join(
            f'"{k}": {"null" if v is None else int(v)}'
            for k, v in sorted(cgroup.items())
        )
        s += f', "cgroup": {{{c}}}'
    with open(t, "w") as f:
        f.write(s + "}")
    os.replace(t, path)
