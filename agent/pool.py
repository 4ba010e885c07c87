"""The agent's process pool: starts simulation codes, times them out and kills them.

Each run is a process in its own process group (its own session), started in
its run directory with a clean environment, under a keeper of its own
(`agent.keeper`): the run's pid is the keeper's, which ends the run's whole
tree (even children in a session of their own) on cancel, on time out, when
the code exits and when the agent dies, and then exits as the code did. Its
stdout and stderr go to its `agent.run.Run` record through `agent.run.Output`.

Where the host allows it, each run also has a cgroup of its own
(`agent.cgroup`, the agent's ``--cgroups``): its cores, memory and pids
limits (the op's ``cores``, ``max_memory_bytes``, ``max_pids``), its kill and
its end. The keeper exits only once that cgroup is empty, so the run is over
when the keeper is; the pool removes the cgroup and reads its OOM kills.

Runs and analyses have separate lanes (semaphores), so an analysis never
waits behind long runs. Pure asyncio and event driven; the one poll is the
wait for a killed process group to empty when there is no cgroup, since the
kernel gives no event for that.

The way of a run (directory, lane, start, end, events) is `agent.records`,
shared with the Slurm pool; the run directory is `agent.rundir`.
"""

import asyncio
import ctypes
import os
import signal
import subprocess

from agent import keeper, limits, records
from agent import sandbox as agent_sandbox
from agent.log import log
from agent.run import Output

#: after SIGKILL (or after the grace), how long a process group may take to
#: disappear before we give up waiting (a process stuck in the kernel)
GROUP_EXIT_SLACK_SECS = 5.0

#: how long the pipes may stay open after the group is gone (held by a
#: process that left the group) before the run ends without them
PIPE_DRAIN_SECS = 2.0

_PR_SET_PDEATHSIG = 1

_ENV_PASSED = ("PATH", "HOME", "LANG", "TMPDIR")


def _load_prctl():
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        # not Linux: runs still get their own group, only not the death signal
        return None


# loaded before any fork: the child only calls it
_prctl = _load_prctl()


class Pool(records.Records):
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
        sandbox (agent.sandbox.Bare): wraps each code (default: none)
        cgroups (agent.cgroup.Layout): where run cgroups go (default: none,
            the keeper walks /proc)
    """

    def __init__(
        self,
        run_root,
        kill_grace_secs,
        max_procs,
        max_analyses,
        on_event,
        oom_score_adj=None,
        sandbox=None,
        cgroups=None,
    ):
        super().__init__(run_root, kill_grace_secs, on_event)
        self.oom_score_adj = oom_score_adj
        self.sandbox = sandbox or agent_sandbox.Bare()
        self.cgroups = cgroups if cgroups and cgroups.mode != "none" else None
        #: run_id -> agent.cgroup_run.RunCgroup of the runs launched with one
        self._run_cgroups = {}
        self._lanes = {
            "run": asyncio.Semaphore(max_procs),
            "analysis": asyncio.Semaphore(max_analyses),
        }

    def _lane(self, run):
        return self._lanes[run.kind]

    def _kill(self, run):
        """Kill a run's process group; `cancel` is done when no process of it remains."""
        if run.state == "running":
            self._terminate(run)
        # spawning: _launch sees the flag once the process exists

    def _destroying(self):
        """Kill every tree now (`join` waits until every process is reaped)."""
        for r in self.runs.values():
            if r.pid is not None and not r.is_exited:
                _kill(r.pid, keeper.KILL_SIGNAL)

    async def _launch(self, run):
        """Spawn the run's process and wait until it and its group have ended."""
        oom_kills = limits.oom_kills()
        try:
            cg = self._run_cgroups[run.run_id] = self._new_cgroup(run)
        except OSError as e:
            self._finish(run, "error", None, f"cannot make the run's cgroup: {e}")
            return
        try:
            await self._launch_in(run, cg, oom_kills)
        finally:
            await self._remove_cgroup(run)

    def _new_cgroup(self, run):
        if self.cgroups is None:
            return None
        return self.cgroups.create(
            run.run_id,
            cores=run.cores,
            memory_bytes=run.op.get("max_memory_bytes"),
            pids=run.op.get("max_pids"),
        )

    async def _remove_cgroup(self, run):
        cg = self._run_cgroups.pop(run.run_id, None)
        if cg is None:
            return
        # v1 may hold an emptied cgroup busy for a moment
        for d in (0.01, 0.05, 0.2, 0.5):
            left = cg.remove(parents=True)
            if not left:
                return
            await asyncio.sleep(d)
        log("cgroup_not_removed", run_id=run.run_id, dirs=" ".join(left))

    async def _launch_in(self, run, cg, oom_kills):
        loop = asyncio.get_running_loop()
        try:
            transport, out = await loop.subprocess_exec(
                lambda: Output(run),
                # the keeper outside the sandbox: it sees (and ends) the tree
                *keeper.argv(
                    self.sandbox.command(run),
                    self.kill_grace_secs,
                    self.oom_score_adj,
                    cg.dirs if cg else (),
                ),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                cwd=run.dir,
                env=self.sandbox.environ(_environ(run.cores)),
                start_new_session=True,
                preexec_fn=_die_with_parent(os.getpid()),
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
            if cg is not None:
                # the keeper exits once the cgroup is empty: nothing to wait
                # for, unless the keeper gave up or was killed
                if not await _wait_cgroup_gone(cg, deadline):
                    log("cgroup_not_gone", run_id=run.run_id, pids=cg.pids())
            elif not await _wait_group_gone(run.pid, deadline):
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
            rc = self.sandbox.exit_code(rc)
            st = _end_status(run, rc, oom_kills, cg)
            if cg is not None:
                # gone before the run's end is told (busy: again afterwards)
                cg.remove(parents=True)
            self._finish(run, *st)
        finally:
            timeout_timer.cancel()
            if run.kill_timer:
                run.kill_timer.cancel()
            if not run.is_exited:
                # destroyed (or failed) while running: leave nothing behind
                _kill(run.pid, keeper.KILL_SIGNAL)
                d = loop.time() + GROUP_EXIT_SLACK_SECS
                try:
                    await asyncio.wait_for(asyncio.shield(out.exited), d - loop.time())
                    if cg is not None:
                        gone = await _wait_cgroup_gone(cg, d)
                    else:
                        gone = await _wait_group_gone(run.pid, d)
                except (TimeoutError, asyncio.CancelledError):
                    gone = False
                if not gone:
                    # the keeper is stuck: the group (and the cgroup) at least
                    _killpg(run.pid, signal.SIGKILL)
                    if cg is not None:
                        cg.kill()
            transport.close()

    def _terminate(self, run):
        """Tell the keeper to stop the tree (SIGTERM, SIGKILL after the grace).

        If the keeper is not gone soon after the grace, the group is SIGKILLed.
        """
        if run.kill_timer:
            return
        loop = asyncio.get_running_loop()
        run.kill_start_secs = loop.time()
        _kill(run.pid, keeper.STOP_SIGNAL)
        run.kill_timer = loop.call_later(
            self.kill_grace_secs + GROUP_EXIT_SLACK_SECS, self._kill_now, run
        )

    def _kill_now(self, run):
        """The keeper did not end the tree in time: its group and its cgroup."""
        _killpg(run.pid, signal.SIGKILL)
        cg = self._run_cgroups.get(run.run_id)
        if cg is not None:
            cg.kill()

    def _time_out(self, run):
        if run.state != "running" or run.canceled:
            return
        run.timed_out = True
        log("run_timed_out", run_id=run.run_id, max_run_secs=run.max_run_secs)
        self._terminate(run)


def _die_with_parent(agent_pid):
    """preexec_fn: the keeper kills its run's tree when the agent dies.

    `keeper.KILL_SIGNAL` is its parent-death signal: even a SIGKILLed agent
    leaves no process of a run behind (the keeper, a subreaper, sees them
    all). The code, not the keeper, gets the simulations' oom_score_adj.
    """

    def f():
        if _prctl is not None:
            _prctl(_PR_SET_PDEATHSIG, keeper.KILL_SIGNAL, 0, 0, 0)
        # the agent may have died between fork and prctl
        if os.getppid() != agent_pid:
            os.kill(os.getpid(), signal.SIGKILL)

    return f


def _end_status(run, rc, oom_kills_before=None, run_cgroup=None):
    if run.canceled:
        return "canceled", rc, None
    if run.timed_out:
        return "timed_out", rc, f"max run time of {run.max_run_secs} secs exceeded"
    if rc == 0:
        return "completed", 0, None
    e = limits.out_of_memory_error(oom_kills_before, run_cgroup)
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


def _kill(pid, sig):
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _killpg(pgid, sig):
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


async def _wait_cgroup_gone(cg, deadline):
    """Until the run's cgroup is empty (SIGKILLed again each round), or `deadline`.

    Normally it is at once: the keeper exits only once it is. Else a poll.

    Returns:
        bool: False if it was not empty by `deadline` (loop time)
    """
    loop = asyncio.get_running_loop()
    delay = 0.005
    while cg.left():
        r = deadline - loop.time()
        if r <= 0:
            return False
        cg.kill()
        await asyncio.sleep(min(delay, r))
        delay = min(delay * 2, 0.1)
    return True


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
