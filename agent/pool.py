"""The agent's process pool: starts simulation codes, times them out and kills them.

Each run is a process in its own process group (its own session), started in
its run directory with a clean environment, under a keeper of its own
(`agent.keeper`): the run's pid is the keeper's, which ends the run's whole
tree (even children in a session of their own) on cancel, on time out and
when the code exits, and then exits as the code did. Its stdout and stderr
go through the keeper to an output file that the pool follows into its
`agent.run.Run` record (`agent.keeping`).

A run does not die with its agent: each is an entry of the run table in the
work directory (`agent.runtable`), and a new agent there re-attaches the
runs still going (`reattach`: their output read again from the start, so
the log and frames are the same), or reports how those that ended meanwhile
ended. A keeper that no agent re-attaches within ``orphan_secs`` ends its
tree by itself. Without a work directory (a container's agent), the table
is a temporary directory and ``orphan_secs`` 0: the runs end with the agent.

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
import os
import shutil
import signal
import subprocess
import tempfile
import time

from agent import analysis_worker, follow, keeper, keeping, limits, outputs, reap
from agent import launch, reads, records, rundir, runtable, space
from agent import sandbox as agent_sandbox
from agent.log import log, stack
from agent.run import Run


#: after SIGKILL (or after the grace), how long a process group may take to
#: disappear before we give up waiting (a process stuck in the kernel)
GROUP_EXIT_SLACK_SECS = 5.0


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
        work_dir (str or Path): the run table (outside `run_root`); None:
            a temporary one, removed by `join`
        owner (str): who holds the runs (the agent id), in their entries
        orphan_secs (float): how long a run whose agent died waits for a
            new one to re-attach it before its keeper ends it
        library_cache (agent.staging.Cache): where runs' library files are
            fetched to, if this host cannot see the supervisor's disk
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
        work_dir=None,
        owner=None,
        orphan_secs=0.0,
        library_cache=None,
    ):
        super().__init__(run_root, kill_grace_secs, on_event)
        self.library_cache = library_cache
        self.oom_score_adj = oom_score_adj
        self.sandbox = sandbox or agent_sandbox.Bare()
        self.cgroups = cgroups if cgroups and cgroups.mode != "none" else None
        #: run_id -> agent.cgroup_run.RunCgroup of the runs launched with one
        self._run_cgroups = {}
        self._temp_dir = (
            None if work_dir else tempfile.mkdtemp(prefix="simvisor-agent-")
        )
        self.table = runtable.RunTable(work_dir or self._temp_dir)
        self.owner = owner
        self.orphan_secs = orphan_secs
        self._lanes = {
            "run": asyncio.Semaphore(max_procs),
            "analysis": asyncio.Semaphore(max_analyses),
        }
        self._inotify = follow.Inotify.open()
        #: the warm analysis worker, started with the first analysis it serves
        self._worker = None

    def reattach(self):
        """Re-attach the runs of the table (an agent before us started them).

        Each is read again from the start of its output, so its log and
        frames are what that agent had; one whose keeper ended meanwhile
        ends with the keeper's status.
        """
        for i, f, e in self.table.load():
            try:
                r = Run(dict(e["op"], inputs={}), self._emit)
                pid, ticks = int(e["keeper_pid"]), int(e["keeper_start"])
                float(e["started_at"])
            except (KeyError, TypeError, ValueError) as x:
                log("reattach_failed", run_id=i, error=stack(x))
                self.table.remove(i)
                continue
            self.runs[i] = r
            r.dir = rundir.resolve_inside(self.run_root, r.run_dir)
            r.pid = pid
            r.state = "running"
            k = keeping.Keeping(r, f, self._inotify)
            fd = runtable.open_keeper(pid, ticks)
            if fd is None:
                k.gone_at_start = True
                k.exited.set_result(None)
            else:
                k.watch_pid(fd)
                # one that does not take it is ending by itself (orphaned)
                runtable.adopt(f.adopt)
            if e.get("owner") != self.owner:
                self.table.save(i, dict(e, owner=self.owner))
            log("reattach", run_id=i, keeper_pid=pid, alive=fd is not None)
            if r.dir is not None:
                try:
                    r.open_log_file()
                except OSError as x:
                    log("reattach_log_failed", run_id=i, error=str(x))
            k.catch_up()
            r.task = self._tasks.spawn(
                self._execute(r, lambda r=r, k=k, e=e: self._reattached(r, k, e))
            )

    async def _reattached(self, run, k, entry):
        if run.dir is None:
            self._kill(run)
        k.follow()
        s = self._lane(run)
        if s.locked():
            # more runs than lanes (the limits changed): they go on anyway
            await self._watch(run, k, entry, True)
            return
        async with s:
            await self._watch(run, k, entry, True)

    def _lane(self, run):
        return self._lanes[run.kind]

    def code_uid(self):
        return self.sandbox.code_uid()

    def _kill(self, run):
        """Kill a run's process group; `cancel` is done when no process of it remains."""
        if run.op.get("worker"):
            # the worker is killed with the request (its next one starts anew)
            run.task.cancel()
        elif run.state == "running":
            self._terminate(run)
        # spawning: _launch sees the flag once the process exists

    def _destroying(self):
        """Kill every tree now (`join` waits until every process is reaped)."""
        for r in self.runs.values():
            if r.pid is not None and not r.is_exited:
                reap.kill(r.pid, keeper.KILL_SIGNAL)

    def _forgotten(self, run_id):
        self.table.remove(run_id)

    async def join(self):
        await super().join()
        if self._worker is not None:
            await self._worker.kill()
        if self._inotify is not None:
            self._inotify.close()
        if self._temp_dir:
            shutil.rmtree(self._temp_dir, ignore_errors=True)

    async def _launch(self, run):
        """Spawn the run's keeper, record it, and wait until it and its group have ended."""
        if run.op.get("worker"):
            await self._analyse(run)
            return
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
            k = keeping.Keeping(
                run,
                self.table.create(run.run_id),
                self._inotify,
                # no successor reads a temporary table (a container's small
                # /tmp): what was read gives its space back
                release=self._temp_dir is not None,
            )
        except (OSError, ValueError) as e:
            self._finish(run, "error", None, f"cannot record the run: {e}")
            return
        try:
            transport, _ = await loop.subprocess_exec(
                lambda: keeping.KeeperExit(k),
                # the keeper outside the sandbox: it sees (and ends) the tree
                *keeper.argv(
                    self.sandbox.command(run),
                    self.kill_grace_secs,
                    self.oom_score_adj,
                    cg.dirs if cg else (),
                    dict(
                        output=k.files.output,
                        status=k.files.status,
                        adopt=k.files.adopt,
                        agent_pid=os.getpid(),
                        orphan_secs=self.orphan_secs,
                    ),
                    # no one file past the room its plan leaves (`agent.space`)
                    run.op.get("max_bytes"),
                ),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                # the keeper's own errors before it has its files: our log
                stderr=None,
                cwd=run.dir,
                env=self.sandbox.environ(launch.environ(run.cores, run.launch)),
                start_new_session=True,
            )
        except (OSError, ValueError, subprocess.SubprocessError) as e:
            k.close()
            self.table.remove(run.run_id)
            self._finish(run, "error", None, f"cannot start {run.argv[0]}: {e}")
            return
        run.pid = transport.get_pid()
        run.state = "running"
        k.follow()
        log("run_started", run_id=run.run_id, kind=run.kind, code=run.code, pid=run.pid)
        try:
            self._emit(run, "started")
            e = dict(
                op={x: v for x, v in run.op.items() if x != "inputs"},
                keeper_pid=run.pid,
                keeper_start=runtable.start_ticks(run.pid),
                started_at=time.time(),
                oom_kills=oom_kills,
                orphan_secs=self.orphan_secs,
                owner=self.owner,
            )
            try:
                # after "started": the table is for a successor, not the start
                self.table.save(run.run_id, e)
            except OSError as x:
                log("run_entry_failed", run_id=run.run_id, error=str(x))
            await self._watch(run, k, e)
        finally:
            transport.close()

    async def _watch(self, run, k, entry, reattached=False):
        """Until the keeper and the run's group have ended; then the run ends.

        A run re-attached from the table has no cgroup here: its keeper
        removes its cgroup itself (its parent agent is gone).
        """
        loop = asyncio.get_running_loop()
        cg = self._run_cgroups.get(run.run_id)
        self._follow_outputs(run, reads.Journal(k.files.reads), reattached)
        left = run.max_run_secs - (time.time() - entry["started_at"])
        timeout_timer = loop.call_later(max(0.0, left), self._time_out, run)
        space_task = asyncio.ensure_future(
            space.watch(run, lambda n: self._over_bytes(run, n), self.room_root)
        )
        try:
            if run.canceled:
                self._terminate(run)
            rc = await asyncio.shield(k.exited)
            timeout_timer.cancel()
            if k.gone_at_start:
                # ended before we came: its tree with it (the pid may be another's now)
                pass
            elif run.kill_start_secs is None:
                # ended by itself: no child outlives its run
                reap.killpg(run.pid, signal.SIGKILL)
                deadline = loop.time() + GROUP_EXIT_SLACK_SECS
            else:
                # let the rest of the group heed SIGTERM until the grace ends
                deadline = (
                    run.kill_start_secs + self.kill_grace_secs + GROUP_EXIT_SLACK_SECS
                )
            if k.gone_at_start:
                pass
            elif cg is not None:
                # the keeper exits once the cgroup is empty: nothing to wait
                # for, unless the keeper gave up or was killed
                if not await reap.wait_cgroup_gone(cg, deadline):
                    log("cgroup_not_gone", run_id=run.run_id, pids=cg.pids())
            elif not await reap.wait_group_gone(run.pid, deadline):
                reap.killpg(run.pid, signal.SIGKILL)
                log("group_not_gone", run_id=run.run_id, pgid=run.pid)
            k.end_output()
            if run.outputs is not None:
                run.outputs.end()
            space_task.cancel()
            if run.over_bytes is None and not (run.canceled or run.timed_out):
                # what it wrote since the last walk counts too
                run.over_bytes = await space.over(run, self.room_root)
            st = self._end_of(run, k, rc, entry, cg)
            if cg is not None and not cg.remove(parents=True):
                # gone before the run's end is told (busy: again afterwards)
                self._run_cgroups.pop(run.run_id, None)
            self._finish(run, *st)
        finally:
            timeout_timer.cancel()
            space_task.cancel()
            if run.kill_timer:
                run.kill_timer.cancel()
            if not run.is_exited:
                # destroyed (or failed) while running: leave nothing behind
                reap.kill(run.pid, keeper.KILL_SIGNAL)
                d = loop.time() + GROUP_EXIT_SLACK_SECS
                try:
                    await asyncio.wait_for(asyncio.shield(k.exited), d - loop.time())
                    if cg is not None:
                        gone = await reap.wait_cgroup_gone(cg, d)
                    else:
                        gone = await reap.wait_group_gone(run.pid, d)
                except (TimeoutError, asyncio.CancelledError):
                    gone = False
                if not gone:
                    # the keeper is stuck: the group (and the cgroup) at least
                    reap.killpg(run.pid, signal.SIGKILL)
                    if cg is not None:
                        cg.kill()
            k.close()
            if run.outputs is not None:
                run.outputs.close()

    async def _analyse(self, run):
        """An analysis the warm worker serves: no process of its own."""
        if self._worker is None:
            self._worker = analysis_worker.for_agent(
                self.run_root, self.sandbox, launch.environ(1)
            )
        await analysis_worker.serve_run(self._worker, run, self._emit, self._finish)

    def _new_run(self, op):
        r = super()._new_run(op)
        r.mpi_launcher = [shutil.which("mpirun") or "mpirun", *launch.MPI_LAUNCHER]
        return r

    def _follow_outputs(self, run, journal, reattached):
        """Follow the run's declared output files (`agent.outputs`), from
        their start, or (`reattached`) from where the journal's reads end."""
        if not run.follow or run.dir is None:
            return
        try:
            run.outputs = outputs.Outputs(run, self._inotify, journal)
        except (TypeError, ValueError) as e:
            run.append_log(
                f"[simvisor agent: its output files are not followed: {e}]\n"
            )
            return
        if reattached:
            run.outputs.replay()
        else:
            try:
                journal.create()
            except OSError as e:
                log("reads_journal_failed", run_id=run.run_id, error=str(e))
        run.outputs.start()

    def _end_of(self, run, k, rc, entry, cg=None):
        """(status, exit code, error) of a run whose keeper has ended."""
        s = k.status()
        if s is None and rc is None:
            return "error", None, "its keeper ended without a status (killed?)"
        if s is not None:
            rc = s["returncode"]
        rc = self.sandbox.exit_code(rc)
        if s is not None and s["orphaned"] and not run.canceled:
            t = entry.get("orphan_secs", self.orphan_secs)
            return (
                "error",
                rc,
                f"its agent died and no agent re-attached it within {t} s",
            )
        if cg is None and s is not None and s.get("cgroup"):
            # re-attached: the run's cgroup was its keeper's to remove
            cg = limits.EndCounts(s["cgroup"])
        return _end_status(run, rc, entry.get("oom_kills"), cg)

    def _terminate(self, run):
        """Tell the keeper to stop the tree (SIGTERM, SIGKILL after the grace).

        If the keeper is not gone soon after the grace, the group is SIGKILLed.
        """
        if run.kill_timer:
            return
        loop = asyncio.get_running_loop()
        run.kill_start_secs = loop.time()
        reap.kill(run.pid, keeper.STOP_SIGNAL)
        run.kill_timer = loop.call_later(
            self.kill_grace_secs + GROUP_EXIT_SLACK_SECS, self._kill_now, run
        )

    def _kill_now(self, run):
        """The keeper did not end the tree in time: its group and its cgroup."""
        reap.killpg(run.pid, signal.SIGKILL)
        cg = self._run_cgroups.get(run.run_id)
        if cg is not None:
            cg.kill()

    def _over_bytes(self, run, n):
        if run.state != "running" or run.canceled:
            return
        run.over_bytes = n
        log("run_over_bytes", run_id=run.run_id, bytes=n, max=run.op["max_bytes"])
        self._terminate(run)

    def _time_out(self, run):
        if run.state != "running" or run.canceled:
            return
        run.timed_out = True
        log("run_timed_out", run_id=run.run_id, max_run_secs=run.max_run_secs)
        self._terminate(run)


def _end_status(run, rc, oom_kills_before=None, run_cgroup=None):
    p = limits.pids_note(run_cgroup)
    if p:
        # whatever the end, the log says it (a code may cope, or fail later)
        run.append_log(f"[simvisor agent: {p}]\n")
    if run.canceled:
        return "canceled", rc, None
    if run.timed_out:
        return "timed_out", rc, f"max run time of {run.max_run_secs} secs exceeded"
    if run.over_bytes is not None or (
        rc == -signal.SIGXFSZ and run.op.get("max_bytes") is not None
    ):
        n = run.over_bytes or run.op["max_bytes"]
        return "error", rc, space.error(n, run.op["max_bytes"])
    if rc == 0:
        return "completed", 0, None
    e = limits.out_of_memory_error(oom_kills_before, run_cgroup)
    if e:
        return "error", rc, f"{e} ({run.end_error(rc)})"
    if p:
        return "error", rc, f"{run.end_error(rc)} ({p})"
    return "error", rc, run.end_error(rc)
