"""What both pools share: the run records, a run's way from its op to its end, events.

`Records` is the base of `agent.pool.Pool` (local processes) and
`agent.slurm.SlurmPool` (Slurm jobs). It holds the `agent.run.Run` records
and their tasks, and takes every run the same way: claim its directory,
prepare it in the run's lane, `_launch` the process or job, and `_finish`
the record with one ``exited`` event. Every outcome, even a refusal, ends in
``exited``. A pool fills in the hooks (`_lane`, `_launch`, `_kill`, ...);
those a pool may not need have a default.
"""

import asyncio
import os
import pathlib

from agent import rundir, staging
from agent.log import log, stack
from agent.run import Run
from agent.tasks import Tasks


class PoolError(Exception):
    """A request the pool refuses outright (e.g. a run id it already holds)."""


class Records:
    """The run records of one pool and what every pool does with them.

    Args:
        run_root (str or Path): every run directory is inside it (created)
        kill_grace_secs (float): SIGTERM to SIGKILL
        on_event (callable): ``on_event(run, kind)`` with kind one of
            started, progress, frame, log, exited (and batch, `agent.slurm`);
            the data is in the `Run` (pid, progress, frames[-1], log, status...)
    """

    def __init__(self, run_root, kill_grace_secs, on_event):
        self.run_root = pathlib.Path(run_root).resolve()
        self.run_root.mkdir(parents=True, exist_ok=True)
        self.kill_grace_secs = kill_grace_secs
        #: run_id -> Run, running or ended and not yet forgotten
        self.runs = {}
        self._on_event = on_event
        self._tasks = Tasks(type(self).__name__)
        self._destroyed = False
        #: where library files of runs are fetched to (`agent.staging.Cache`),
        #: for an agent that cannot see the supervisor's disk; else None
        self.library_cache = None

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
        r = self._new_run(op)
        self.runs[r.run_id] = r
        r.task = self._tasks.spawn(self._execute(r))
        return r

    def cancel(self, run_id):
        """Stop a run; an unknown or ended run is fine.

        Returns:
            awaitable: done when the run has ended (``exited`` was emitted)
        """
        r = self.runs.get(run_id)
        if r is None or r.is_exited:
            f = asyncio.get_running_loop().create_future()
            f.set_result(None)
            return f
        if not r.canceled:
            r.canceled = True
            if r.state in ("queued", "preparing"):
                # nothing launched yet: stop waiting for the lane or the directory
                r.task.cancel()
            else:
                self._kill(r)
        return asyncio.shield(r.ended)

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

    def running(self):
        """Runs and analyses that have not ended."""
        return [r for r in self.runs.values() if not r.is_exited]

    def destroy(self):
        """Cancel every task, without events; idempotent. Await `join` afterwards."""
        if self._destroyed:
            return
        self._destroyed = True
        self._destroying()
        self._tasks.cancel()

    async def join(self):
        """Wait until every task of the pool has ended."""
        await self._tasks.join()
        for r in self.runs.values():
            # a run that goes on without us (a Slurm job) kept its log open
            r.close_log_file()

    # --- hooks -------------------------------------------------------------

    def reattach(self):
        """Take up the runs an agent before us left going (default: none)."""

    def _new_run(self, op):
        """The record of a new run (not yet in `runs`)."""
        return Run(op, self._emit)

    def _lane(self, run):
        """The semaphore `run` is prepared and launched under."""
        raise NotImplementedError

    def _prepare(self, run):
        """Make the run's directory fresh (in a thread: it blocks)."""
        rundir.prepare_dir(
            run.dir,
            run.params,
            run.inputs,
            run.op.get("links"),
            self.run_root,
            self.code_uid(),
            run.op.get("site_files"),
        )

    def room_root(self):
        """The run root and what its library cache holds (`agent.space.over`)."""
        return self.run_root, self.library_cache.held() if self.library_cache else {}

    async def _stage(self, run):
        """Bring the run's library files that are not here (its op's
        ``library``, into `library_cache`; those on this host's disk are
        its ``links``); why they cannot be, or None."""
        return await staging.stage_run(self.library_cache, run, self._emit)

    def code_uid(self):
        """The uid its codes run as (a sandbox may run them as another)."""
        return os.geteuid()

    async def _launch(self, run):
        """Start the process or job, in the run's lane (state ``spawning``).

        The local pool waits here for the end; a run that is not ended on
        return goes on to `_launched`.
        """
        raise NotImplementedError

    async def _launched(self, run):
        """After the lane is released, for a run that has not ended."""

    def _goes_on(self, run):
        """True if `run` goes on without this pool (a submitted Slurm job)."""
        return False

    def _kill(self, run):
        """Stop a launched (or launching) run that was canceled; it ends later."""
        raise NotImplementedError

    def _destroying(self):
        """The pool is being destroyed; its tasks are canceled next."""

    def _forgotten(self, run_id):
        """A record was dropped (the Slurm pool also drops its job)."""

    # --- the way of a run --------------------------------------------------

    async def _execute(self, run, way=None):
        """The run's task: its way (by default from its op), and its one end.

        Args:
            way (callable): returns the awaitable to follow instead (a run
                re-attached from a table: it was launched before us)
        """
        try:
            if way is not None:
                await way()
            else:
                await self._from_op(run)
        except asyncio.CancelledError:
            if not self._goes_on(run):
                self._finish(run, "canceled", None, None)
            if self._destroyed:
                raise
            # cancel() stopped a run that had not launched: that is its end
            asyncio.current_task().uncancel()
        except Exception as e:
            log("run_error", run_id=run.run_id, error=stack(e))
            self._finish(run, "error", None, f"agent error: {e!r}")
        finally:
            if not self._goes_on(run):
                # every way above ends the run; nothing may wait for it forever
                run.close_log_file()
                if not run.ended.done():
                    run.ended.set_result(None)

    async def _from_op(self, run):
        e = await rundir.claim_dir(self.run_root, run, self.runs)
        if e:
            self._finish(run, "error", None, e)
            return
        async with self._lane(run):
            run.state = "preparing"
            try:
                await asyncio.to_thread(self._prepare, run)
                run.open_log_file()
            except OSError as e:
                self._finish(run, "error", None, f"cannot prepare run_dir: {e}")
                return
            e = await self._stage(run)
            if e:
                self._finish(run, "error", None, e)
                return
            run.state = "spawning"
            await self._launch(run)
        if not run.is_exited:
            await self._launched(run)

    def _finish(self, run, status, exit_code, error):
        if run.is_exited:
            return
        run.close_log_file()
        run.state = "exited"
        run.status = status
        run.exit_code = exit_code
        run.error = error
        log(
            "run_exited",
            run_id=run.run_id,
            status=status,
            exit_code=exit_code,
            **run.log_fields(),
        )
        self._emit(run, "exited")
        if not run.ended.done():
            run.ended.set_result(None)

    def _emit(self, run, kind):
        if self._destroyed:
            return
        try:
            self._on_event(run, kind)
        except Exception as e:
            log("on_event_error", run_id=run.run_id, kind=kind, error=stack(e))
