"""The agent's process pool: starts simulation codes, times them out and kills them.

Each run is a process in its own process group (its own session), started in
its run directory with a clean environment. Its stdout and stderr go to its
`agent.run.Run` record through `agent.run.Output`.

Runs and analyses have separate lanes (semaphores), so an analysis never
waits behind long runs. Pure asyncio and event driven; the one poll is the
wait for a killed process group to empty, since the kernel gives no event for
that.

Also the agent's small shared helpers: `log` (key=value lines on stderr; the
agent depends on the stdlib and tornado only) and `resolve_inside`.
"""

import asyncio
import ctypes
import datetime
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import traceback

from agent import limits
from agent.run import LOG_FILE, Output, Run

#: written into the run directory before the code starts (see agent.codes)
PARAMS_FILE = "params.json"

#: argv element replaced by the agent's own interpreter
PYTHON_ARG = "{python}"

#: after SIGKILL (or after the grace), how long a process group may take to
#: disappear before we give up waiting (a process stuck in the kernel)
GROUP_EXIT_SLACK_SECS = 5.0

#: how long the pipes may stay open after the group is gone (held by a
#: process that left the group) before the run ends without them
PIPE_DRAIN_SECS = 2.0

_PR_SET_PDEATHSIG = 1

_MAX_LOG_VALUE_CHARS = 2000

_ENV_PASSED = ("PATH", "HOME", "LANG", "TMPDIR")


def _load_prctl():
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        # not Linux: runs still get their own group, only not the death signal
        return None


# loaded before any fork: the child only calls it
_prctl = _load_prctl()


def log(event, **fields):
    """Write one ``time event key=value ...`` line to stderr. Never pass a secret.

    Args:
        event (str): what happened, one word
        fields: values; strings with spaces or quotes are JSON quoted
    """
    t = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    p = [t[:-4] + "Z", event]
    for k, v in fields.items():
        s = v if isinstance(v, str) else repr(v)
        if len(s) > _MAX_LOG_VALUE_CHARS:
            s = s[:_MAX_LOG_VALUE_CHARS] + "..."
        if not s or any(c.isspace() or c in "\"'=" for c in s):
            s = json.dumps(s)
        p.append(f"{k}={s}")
    sys.stderr.write(" ".join(p) + "\n")
    sys.stderr.flush()


def resolve_inside(root, path):
    """`path` (relative to `root`) resolved, or None if it is `root` or escapes it.

    Args:
        root (pathlib.Path): resolved directory
        path (str): relative (or absolute) path
    Returns:
        pathlib.Path: resolved, strictly inside `root`; None if not
    """
    if not path or "\0" in path:
        return None
    p = (root / path).resolve()
    if p == root or not p.is_relative_to(root):
        return None
    return p


class PoolError(Exception):
    """A request the pool refuses outright (e.g. a run id it already holds)."""


class Records:
    """What both pools share: the run records and their events.

    A pool sets ``runs``, ``_on_event`` and ``_destroyed``.
    """

    def forget(self, run_id):
        """Drop an ended run's record.

        Returns:
            bool: False if the run is still going (it is kept)
        """
        r = self.runs.get(run_id)
        if r is None:
            return True
        if not r.is_exited:
            return False
        del self.runs[run_id]
        self._forgotten(run_id)
        return True

    def _forgotten(self, run_id):
        """A record was dropped (the Slurm pool also drops its job)."""

    def running(self):
        """Runs and analyses that have not ended."""
        return [r for r in self.runs.values() if not r.is_exited]

    def _emit(self, run, kind):
        if self._destroyed:
            return
        try:
            self._on_event(run, kind)
        except Exception as e:
            log("on_event_error", run_id=run.run_id, kind=kind, error=stack(e))


class Pool(Records):
    """Starts, watches and cancels runs, in two bounded lanes.

    Args:
        run_root (str or Path): every run directory is inside it (created)
        kill_grace_secs (float): SIGTERM to SIGKILL
        max_procs (int): runs at once
        max_analyses (int): analyses at once
        on_event (callable): ``on_event(run, kind)`` with kind one of
            started, progress, frame, log, exited; the data is in the `Run`
            (pid, progress, frames[-1], log, status...)
        oom_score_adj (int): each simulation's, if not None (see `agent.limits`)
    """

    def __init__(
        self,
        run_root,
        kill_grace_secs,
        max_procs,
        max_analyses,
        on_event,
        oom_score_adj=None,
    ):
        self.run_root = pathlib.Path(run_root).resolve()
        self.run_root.mkdir(parents=True, exist_ok=True)
        self.kill_grace_secs = kill_grace_secs
        self.oom_score_adj = oom_score_adj
        #: run_id -> Run, running or ended and not yet forgotten
        self.runs = {}
        self._on_event = on_event
        self._lanes = {
            "run": asyncio.Semaphore(max_procs),
            "analysis": asyncio.Semaphore(max_analyses),
        }
        self._tasks = set()
        self._destroyed = False

    def start(self, op):
        """Start a run or analysis; every outcome, even a refusal, ends in ``exited``.

        Args:
            op (dict): a parsed ``run`` or ``analysis`` message
        Returns:
            Run: the record, already in `runs`
        Raises:
            PoolError: the run id is already held, or the pool is destroyed
        """
        if self._destroyed:
            raise PoolError("pool is shut down")
        if op["run_id"] in self.runs:
            raise PoolError(f"run_id={op['run_id']} is already held")
        r = Run(op, self._emit)
        self.runs[r.run_id] = r
        r.task = asyncio.get_running_loop().create_task(self._execute(r))
        self._tasks.add(r.task)
        r.task.add_done_callback(self._tasks.discard)
        return r

    def cancel(self, run_id):
        """Kill a run's process group; an unknown or ended run is fine.

        Returns:
            awaitable: done when the run has ended (``exited`` was emitted)
                and no process of its group remains
        """
        r = self.runs.get(run_id)
        if r is None or r.is_exited:
            f = asyncio.get_running_loop().create_future()
            f.set_result(None)
            return f
        if not r.canceled:
            r.canceled = True
            if r.state in ("queued", "preparing"):
                # no process yet: stop waiting for the lane or the directory
                r.task.cancel()
            elif r.state == "running":
                self._terminate(r)
            # spawning: _spawn_and_wait sees the flag once the process exists
        return asyncio.shield(r.ended)

    def destroy(self):
        """SIGKILL every group and cancel every task, without events; idempotent.

        Await `join` afterwards so every process is reaped.
        """
        if self._destroyed:
            return
        self._destroyed = True
        for r in self.runs.values():
            if r.pid is not None and not r.is_exited:
                _killpg(r.pid, signal.SIGKILL)
        for t in list(self._tasks):
            t.cancel()

    async def join(self):
        """Wait until every task of the pool has ended."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def _execute(self, run):
        try:
            e = await claim_dir(self.run_root, run, self.runs)
            if e:
                self._finish(run, "error", None, e)
                return
            async with self._lanes[run.kind]:
                run.state = "preparing"
                try:
                    await asyncio.to_thread(
                        prepare_dir, run.dir, run.params, run.inputs
                    )
                    run.open_log_file()
                except OSError as e:
                    self._finish(run, "error", None, f"cannot prepare run_dir: {e}")
                    return
                run.state = "spawning"
                await self._spawn_and_wait(run)
        except asyncio.CancelledError:
            self._finish(run, "canceled", None, None)
            if self._destroyed:
                raise
            # cancel() stopped a run that had no process yet: that is its end
            asyncio.current_task().uncancel()
        except Exception as e:
            log("run_error", run_id=run.run_id, error=stack(e))
            self._finish(run, "error", None, f"agent error: {e!r}")
        finally:
            run.close_log_file()
            if not run.ended.done():
                run.ended.set_result(None)

    async def _spawn_and_wait(self, run):
        loop = asyncio.get_running_loop()
        oom_kills = limits.oom_kills()
        try:
            transport, out = await loop.subprocess_exec(
                lambda: Output(run),
                *[sys.executable if a == PYTHON_ARG else a for a in run.argv],
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                cwd=run.dir,
                env=_environ(run.cores),
                start_new_session=True,
                preexec_fn=_die_with_parent(os.getpid(), self.oom_score_adj),
            )
        except (OSError, ValueError, subprocess.SubprocessError) as e:
            self._finish(run, "error", None, f"cannot start {run.argv[0]}: {e}")
            return
        run.pid = transport.get_pid()
        run.state = "running"
        timeout_timer = loop.call_later(run.max_run_secs, self._time_out, run)
        log("run_started", run_id=run.run_id, kind=run.kind, code=run.code, pid=run.pid)
        try:
            self._emit(run, "started")
            if run.canceled:
                self._terminate(run)
            rc = await asyncio.shield(out.exited)
            timeout_timer.cancel()
            if run.kill_start_secs is None:
                # ended by itself: no child outlives its run
                _killpg(run.pid, signal.SIGKILL)
                deadline = loop.time() + GROUP_EXIT_SLACK_SECS
            else:
                # let the rest of the group heed SIGTERM until the grace ends
                deadline = (
                    run.kill_start_secs + self.kill_grace_secs + GROUP_EXIT_SLACK_SECS
                )
            if not await _wait_group_gone(run.pid, deadline):
                _killpg(run.pid, signal.SIGKILL)
                log("group_not_gone", run_id=run.run_id, pgid=run.pid)
            try:
                await asyncio.wait_for(asyncio.shield(out.closed), PIPE_DRAIN_SECS)
            except TimeoutError:
                run.append_log(
                    "[simvisor agent: a process outside the run's process group"
                    " still holds its output open; not waiting for it]\n"
                )
            out.flush()
            self._finish(run, *_end_status(run, rc, oom_kills))
        finally:
            timeout_timer.cancel()
            if run.kill_timer:
                run.kill_timer.cancel()
            if not run.is_exited:
                # destroyed (or failed) while running: leave nothing behind
                _killpg(run.pid, signal.SIGKILL)
                d = loop.time() + GROUP_EXIT_SLACK_SECS
                try:
                    await asyncio.wait_for(asyncio.shield(out.exited), d - loop.time())
                    await _wait_group_gone(run.pid, d)
                except (TimeoutError, asyncio.CancelledError):
                    pass
            transport.close()

    def _terminate(self, run):
        """SIGTERM the group now and SIGKILL it after the grace."""
        if run.kill_timer:
            return
        loop = asyncio.get_running_loop()
        run.kill_start_secs = loop.time()
        _killpg(run.pid, signal.SIGTERM)
        run.kill_timer = loop.call_later(
            self.kill_grace_secs, _killpg, run.pid, signal.SIGKILL
        )

    def _time_out(self, run):
        if run.state != "running" or run.canceled:
            return
        run.timed_out = True
        log("run_timed_out", run_id=run.run_id, max_run_secs=run.max_run_secs)
        self._terminate(run)

    def _finish(self, run, status, exit_code, error):
        if run.is_exited:
            return
        run.state = "exited"
        run.status = status
        run.exit_code = exit_code
        run.error = error
        log("run_exited", run_id=run.run_id, status=status, exit_code=exit_code)
        self._emit(run, "exited")
        if not run.ended.done():
            run.ended.set_result(None)


async def claim_dir(run_root, run, runs):
    """Set ``run.dir`` once no other run of that directory is still dying.

    Args:
        runs (dict): the pool's records (a superseded run, or one dropped at
            welcome, may still be ending in the same directory)
    Returns:
        str: why the run cannot have it, or None
    """
    d = resolve_inside(run_root, run.run_dir)
    if d is None:
        return f"run_dir={run.run_dir!r} is not inside run_root"
    e = check_inputs(run.inputs)
    if e:
        return e
    run.dir = d
    for o in list(runs.values()):
        if o is not run and o.run_dir == run.run_dir and not o.ended.done():
            await asyncio.shield(o.ended)
    return None


def check_inputs(inputs):
    for n in inputs:
        if (
            not n
            or n in (".", "..", PARAMS_FILE, LOG_FILE)
            or "/" in n
            or "\0" in n
            or n != os.path.basename(n)
        ):
            return f"input name={n!r} is not a plain file name (or is reserved)"
    return None


def _die_with_parent(agent_pid, oom_score_adj=None):
    """preexec_fn: the leader gets SIGKILL when the agent dies.

    Only the leader: children it starts are killed with its group by the
    agent, or orphaned if the agent itself is SIGKILLed. With
    `oom_score_adj`, the OOM killer picks the simulation before the agent.
    """

    def f():
        if oom_score_adj is not None:
            limits.set_oom_score_adj(oom_score_adj)
        if _prctl is not None:
            _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        # the agent may have died between fork and prctl
        if os.getppid() != agent_pid:
            os.kill(os.getpid(), signal.SIGKILL)

    return f


def _end_status(run, rc, oom_kills_before=None):
    if run.canceled:
        return "canceled", rc, None
    if run.timed_out:
        return "timed_out", rc, f"max run time of {run.max_run_secs} secs exceeded"
    if rc == 0:
        return "completed", 0, None
    e = limits.out_of_memory_error(oom_kills_before)
    if e:
        return "error", rc, f"{e} ({run.end_error(rc)})"
    return "error", rc, run.end_error(rc)


def _environ(cores):
    """The simulation sees only these: nothing of the agent (its secret) leaks."""
    rv = {k: os.environ[k] for k in _ENV_PASSED if k in os.environ}
    rv.setdefault("PATH", os.defpath)
    rv.setdefault("LANG", "C.UTF-8")
    rv["SIMVISOR_CORES"] = str(cores)
    rv["OMP_NUM_THREADS"] = str(cores)
    return rv


def _group_pids(pgid):
    """Pids of live (not zombie) processes in process group `pgid`."""
    rv = []
    try:
        names = os.listdir("/proc")
    except OSError:
        return rv
    for n in names:
        if not n.isdigit():
            continue
        try:
            with open(f"/proc/{n}/stat", "rb") as f:
                s = f.read()
        except OSError:
            continue
        # comm (in parens) may hold anything; the fields after it are fixed
        x = s[s.rfind(b")") + 2 :].split()
        if len(x) > 2 and x[0] != b"Z" and int(x[2]) == pgid:
            rv.append(int(n))
    return rv


def _killpg(pgid, sig):
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def prepare_dir(path, params, inputs):
    """A fresh run directory: what a previous run left is removed."""
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    (path / PARAMS_FILE).write_text(
        json.dumps(params, indent=1) + "\n", encoding="utf-8"
    )
    for n, t in inputs.items():
        (path / n).write_text(t, encoding="utf-8")


def stack(e):
    """The end of `e`'s traceback (where it was raised), for `log`."""
    return "".join(traceback.format_exception(e))[-_MAX_LOG_VALUE_CHARS:]


async def _wait_group_gone(pgid, deadline):
    """Poll /proc until group `pgid` is empty: the kernel gives no event for it.

    Returns:
        bool: False if it was not empty by `deadline` (loop time)
    """
    loop = asyncio.get_running_loop()
    delay = 0.005
    while _group_pids(pgid):
        r = deadline - loop.time()
        if r <= 0:
            return False
        await asyncio.sleep(min(delay, r))
        delay = min(delay * 2, 0.1)
    return True
