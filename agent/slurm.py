"""Runs as Slurm jobs: the agent's pool on an HPC login node (``--slurm``).

`SlurmPool` is an `agent.records.Records` like `agent.pool.Pool` (start,
cancel, forget, running, destroy, join, runs), but a run is a batch job
(`agent.slurm_jobs.SlurmRun`): its directory is prepared on the shared
filesystem, a script is submitted with ``sbatch --parsable``, and the job is
followed with ``squeue`` (and ``sacct`` once it has left the queue). Slurm gives no events, so this is the one place the
system polls, with backoff: quickly after a change, slower while nothing
changes. A query that fails means the state is unknown, never that the job
died. Progress, frames and log come from the job's files on the shared
filesystem, which gives no inotify events either: its stdout and stderr,
and the output files a code adapter declares (``follow``: LAMMPS's log and
dump, through `agent.outputs`), read at least every `TAIL_SECS` from its
submission to its end, and to their end before the run's ``exited``.

An ``mpi`` launch asks Slurm for one task per core and starts its ranks in
the allocation (`agent.slurm_text.MPI_LAUNCHER`), with the environment the
local pool gives MPI codes.

Every submitted job is written to a job table in the work directory, so an
agent restarted on the login node re-attaches to its jobs: it rebuilds each
run's record from the job's files, read again as the journal of the agent
before it says they were read (`agent.slurm_jobs.JobReads`), which gives
the same frames and log offsets the supervisor already has.

The members of a sweep that come together are one job array, each a task
``ARRAYID_TASK`` followed like a job; cancels that come together are one
scancel (`agent.slurm_array`). The job table is written once per round of
queries, not once per job.

The command lines, parsing and the state mapping are pure functions in
`agent.slurm_text`, tested without Slurm; a run's record and the job table
are `agent.slurm_jobs`. The way of a run up to its submission is
`agent.records`, shared with the local pool.
"""

import asyncio
import time

from agent import analysis_worker, launch, outputs, records, rundir, slurm_query
from agent import staging
from agent.log import log
from agent.sandbox import Bare
from agent.slurm_array import Arrays, Cancels
from agent.slurm_jobs import READS_DIR, JobReads, JobTable, SlurmRun
from agent.slurm_query import command as _command
from agent.slurm_text import (
    MPI_LAUNCHER,
    SCRIPT_FILE,
    TERMINAL,
    UNKNOWN,
    SlurmError,
    end_of,
    job_script,
    parse_sbatch,
    sbatch_argv,
    time_limit_minutes,
)

#: after a submission, squeue keeps its first pace this long
FRESH_SECS = 3.0

#: squeue while a cancel waits for Slurm to end the job
CANCEL_POLL_SECS = 0.05

#: read the output files of running jobs this often
TAIL_SECS = 0.25

#: a job neither squeue nor sacct knows for this long has vanished
VANISHED_SECS = 600.0

#: a forgotten job leaves the job table on disk within this
FORGET_SAVE_SECS = 0.5

_MAX_ERROR_CHARS = 2000


class SlurmPool(records.Records):
    """Runs as Slurm jobs; see the module doc.

    Args:
        run_root (str or Path): every run directory is inside it (shared filesystem)
        work_dir (str or Path): the job table and the journals of the jobs' reads
        on_event (callable): like `agent.pool.Pool`, plus kind ``batch``
            (the job id, state or reason changed: ``run.batch``)
        kill_grace_secs (float): scancel's confirmation is awaited this long
            plus `agent.slurm_query.COMMAND_TIMEOUT_SECS`
        poll_secs (tuple): (first, max) delay between squeue queries
        max_procs (int): jobs submitted at once
        library (agent.staging.Requests): fetches library files
    """

    def __init__(
        self,
        run_root,
        work_dir,
        on_event,
        kill_grace_secs=2.0,
        poll_secs=(0.25, 5.0),
        max_procs=64,
        library=None,
    ):
        super().__init__(run_root, kill_grace_secs, on_event)
        self.table = JobTable(work_dir)
        if library is not None:
            self.library_cache = staging.Cache(
                self.table.path.parent / "library", library
            )
        self._reads_dir = self.table.path.parent / READS_DIR
        self._poll_min, self._poll_max = poll_secs
        self._slots = asyncio.Semaphore(max_procs)
        self._wake = asyncio.Event()
        self._follower = None
        #: the warm analysis worker, started with the first analysis
        self._worker = None
        self._arrays = Arrays(
            self.run_root, _command, self._tasks, self._array_submitted, self._refused
        )
        self._cancels = Cancels(
            _command,
            lambda: [r.job_id for r in self.running() if r.job_id],
            lambda r, e: self._set_batch(r, UNKNOWN, e),
            self._cancel_sent,
            self._tasks,
            self._poll_max,
        )
        #: (run, status, exit_code, error) to finish once the table is saved
        self._ends = []
        self._table_dirty = False
        self._save_timer = None
        self._attach()

    # --- the hooks of records.Records ----------------------------------------

    def _new_run(self, op):
        r = SlurmRun(op, self._emit)
        # mpirun of the job's node, in the job's PATH
        r.mpi_launcher = list(MPI_LAUNCHER)
        return r

    def _lane(self, run):
        return self._slots

    def _goes_on(self, run):
        # submitted: the job does not need the agent (a new one re-attaches it)
        return run.job_id is not None

    def _kill(self, run):
        if run.job_id is not None:
            self._cancels.add(run)
        elif self._arrays.discard(run):
            # its array is not submitted yet: it never will be with it
            self._refused(run, None, "canceled")
        elif run.op.get("worker") and self._worker is not None:
            # its request ends (the next one starts a new worker)
            self._tasks.spawn(self._worker.kill())
        # spawning: a submission in flight is canceled once its id is known

    def _forgotten(self, run_id):
        if self.table.jobs.pop(run_id, None) is not None and self._save_timer is None:
            # the supervisor forgets a sweep's members one by one: one write
            self._save_timer = asyncio.get_running_loop().call_later(
                FORGET_SAVE_SECS, self._save_table
            )
        (self._reads_dir / run_id).unlink(missing_ok=True)

    def _save_table(self):
        if self._save_timer is not None:
            self._save_timer.cancel()
            self._save_timer = None
        self.table.save()

    def _destroying(self):
        self._arrays.destroy()
        self._cancels.destroy()
        if self._save_timer is not None:
            self._save_table()

    async def join(self):
        await super().join()
        if self._worker is not None:
            await self._worker.kill()
        for r in self.runs.values():
            # a job that goes on: a successor appends to its journal
            if r.reads is not None:
                r.reads.close()

    def _prepare(self, run):
        super()._prepare(run)
        p = run.dir / SCRIPT_FILE
        p.write_text(job_script(run.run_id, run.command(), run.cores, run.launch))
        p.chmod(0o700)

    async def _launch(self, run):
        """Submit the job (its id, or the run ends with Slurm's refusal).

        An analysis of the warm worker is no job: the worker serves it here
        (`agent.analysis_worker`; small, beside the agent on the login node).
        """
        if run.op.get("worker"):
            if self._worker is None:
                self._worker = analysis_worker.for_agent(
                    self.run_root, Bare(), launch.environ(1)
                )
            await analysis_worker.serve_run(self._worker, run, self._emit, self._finish)
            return
        try:
            self._new_reads(run).create()
        except OSError as e:
            self._finish(run, "error", None, f"cannot journal the job's reads: {e}")
            return
        if run.batch_options.get("array"):
            # submitted with the others of its array (awaited in `_launched`)
            self._arrays.add(run)
            return
        try:
            out = await _command(
                sbatch_argv(
                    run.run_id,
                    run.dir,
                    run.cores,
                    run.max_run_secs,
                    run.batch_options,
                    run.launch,
                )
            )
            run.job_id = parse_sbatch(out)
            # before any read of its files: a successor's log starts the same
            self._log_submitted(run)
        except SlurmError as x:
            self._finish(run, "error", None, f"Slurm refused the job: {x}")
        finally:
            if run.job_id is None:
                # no job: nothing to read, now or by a successor
                run.reads.remove()

    async def _launched(self, run):
        """Record the job (durably) and follow it."""
        if run.array_wait is not None:
            # recorded with the others of its array (`_array_submitted`)
            await run.array_wait
            if run.is_exited or run.job_id is None:
                return
        else:
            self._record(run)
            self._save_table()
        run.submitted = asyncio.get_running_loop().time()
        log("submitted", run_id=run.run_id, job_id=run.job_id)
        self._set_batch(run, "PENDING", "submitted")
        self._emit(run, "started")
        if run.canceled:
            self._cancels.add(run)
        self._poke()

    def _record(self, run):
        run.pid = 0
        run.state = "running"
        self.table.jobs[run.run_id] = dict(
            op={k: v for k, v in run.op.items() if k != "inputs"},
            job_id=run.job_id,
            submitted_at=time.time(),
            started_at=None,
            end=None,
            array=run.array_task,
        )

    def _array_submitted(self, runs):
        """The runs of a job array were submitted: one write of the table."""
        for r in runs:
            # before any read of its files, as for a job
            self._log_submitted(r)
            self._record(r)
        self._save_table()

    def _refused(self, run, error, status="error"):
        """A run of an array ends without its job (`agent.slurm_array`)."""
        run.reads.remove()
        self._finish(run, status, None, error)

    # --- runs ----------------------------------------------------------------

    def _attach(self):
        """Runs of the job table (an agent before us submitted them)."""
        for i, e in self.table.jobs.items():
            r = SlurmRun(dict(e["op"], inputs={}), self._emit)
            self.runs[r.run_id] = r
            r.dir = rundir.resolve_inside(self.run_root, r.run_dir)
            r.job_id = e["job_id"]
            r.array_task = e.get("array")
            r.started_at = e.get("started_at")
            r.pid = 0
            r.state = "running"
            r.batch.update(job_id=r.job_id, state=UNKNOWN, reason="re-attaching")
            log("reattach", run_id=i, job_id=r.job_id)
            if r.dir is None:
                self._finish(r, "error", None, "run_dir is not inside run_root")
                continue
            try:
                r.open_log_file()
            except OSError as x:
                self._finish(r, "error", None, f"cannot open the run's log: {x}")
                continue
            # in the order of the submission: the log's offsets must not move
            reads = self._new_reads(r)
            self._log_submitted(r)
            n = reads.replay()
            log("reattach_replayed", run_id=i, reads=n, frames=len(r.frames))
            if e.get("end"):
                r.reads.end()
                self._finish(r, **e["end"])
            else:
                self._arrays.known(r)
        if self.running():
            self._poke()

    def _new_reads(self, run):
        """The run's parsers of its declared files (`agent.outputs`) and its `JobReads`."""
        run.outputs = None
        if run.follow:
            try:
                # fed by the reads (`Outputs.feed`), never started: no inotify
                run.outputs = outputs.Outputs(run, None)
            except (TypeError, ValueError) as e:
                run.append_log(
                    f"[simvisor agent: its output files are not followed: {e}]\n"
                )
        run.reads = JobReads(run, self._reads_dir / run.run_id)
        return run.reads

    def _log_submitted(self, run):
        # the same text when re-attached: the log's offsets must not move
        run.append_log(f"[simvisor agent: submitted as Slurm job {run.job_id}]\n")

    def _set_batch(self, run, state, reason):
        b = run.batch
        if (b["job_id"], b["state"], b["reason"]) == (run.job_id, state, reason):
            return False
        b.update(job_id=run.job_id, state=state, reason=reason)
        self._emit(run, "batch")
        return True

    def _cancel_sent(self):
        # Slurm has yet to end the jobs: ask soon and often (`_follow`)
        self._poke()

    def _poke(self):
        """Query Slurm soon (a change is expected)."""
        self._wake.set()
        if self._follower is None or self._follower.done():
            self._follower = self._tasks.spawn(self._follow())

    # --- following -----------------------------------------------------------

    async def _follow(self):
        """Query Slurm and read output files until no job is left to follow."""
        loop = asyncio.get_running_loop()
        delay = self._poll_min
        next_query = 0
        while True:
            live = [r for r in self.runs.values() if r.job_id and not r.is_exited]
            if not live:
                return
            if self._wake.is_set() or loop.time() >= next_query:
                if self._wake.is_set():
                    self._wake.clear()
                    delay = self._poll_min
                changed = await self._query(live)
                delay = self._poll_min if changed else min(delay * 2, self._poll_max)
                if any(loop.time() - r.submitted < FRESH_SECS for r in live):
                    # Slurm starts a new job within a scheduling pass or
                    # two: do not back off before it has had them
                    delay = min(delay, self._poll_min)
                if any(r.cancel_sent for r in live):
                    # a cancel waits for Slurm's confirmation (COMPLETING
                    # lasts tens of ms): ask often, it is short
                    delay = CANCEL_POLL_SECS
                next_query = loop.time() + delay
            for r in live:
                if not r.is_exited:
                    r.reads.read()
            try:
                await asyncio.wait_for(
                    self._wake.wait(), min(TAIL_SECS, next_query - loop.time())
                )
            except TimeoutError:
                pass

    async def _query(self, live):
        """One round of queries (`agent.slurm_query`); True if something changed."""
        a = await slurm_query.ask([r.job_id for r in live])
        changed = False
        for r in live:
            changed |= self._answer(r, *a[r.job_id])
        self._flush_ends()
        return changed

    def _answer(self, run, state, reason, exit_code, signal_):
        if state == UNKNOWN:
            return self._set_batch(run, UNKNOWN, reason)
        if state is not None:
            run.last_seen = time.monotonic()
            return self._update(run, state, reason, exit_code, signal_)
        if time.monotonic() - run.last_seen > VANISHED_SECS:
            m = f"Slurm job {run.job_id} is unknown to squeue and sacct"
            self._end(run, "error", None, m)
            return True
        return self._set_batch(run, UNKNOWN, reason)

    def _update(self, run, state, reason, exit_code, signal_):
        changed = self._set_batch(run, state, reason)
        self._cancels.check(run, state)
        if state == "RUNNING" and run.started_at is None:
            run.started_at = time.time()
            self.table.jobs[run.run_id]["started_at"] = run.started_at
            # saved with this round's ends (`_flush_ends`)
            self._table_dirty = True
        if state in TERMINAL:
            if state == "FAILED" and exit_code is None:
                # squeue has no exit code; sacct does (later round)
                self._tasks.spawn(self._exit_code(run))
                return changed
            if state == "COMPLETED" and exit_code is None:
                # squeue's COMPLETED: the script exited 0 (Slurm's meaning)
                exit_code = 0
            run.reads.end()
            st, e = end_of(
                state,
                exit_code,
                signal_,
                run.canceled,
                run.timed_out,
                time_limit_minutes(run.max_run_secs),
            )
            t = _code_error(run)
            if st == "error" and t:
                e = f"{e}: {t}"[-_MAX_ERROR_CHARS:]
            self._end(run, st, exit_code, e)
            return True
        if (
            state == "RUNNING"
            and not run.timed_out
            and time.time() - run.started_at > run.max_run_secs
        ):
            run.timed_out = True
            log("run_timed_out", run_id=run.run_id, max_run_secs=run.max_run_secs)
            self._cancels.add(run)
        return changed

    async def _exit_code(self, run):
        if run.asking_exit:
            return
        run.asking_exit = True
        try:
            a = await slurm_query.ask_sacct([run.job_id])
            if not run.is_exited:
                self._answer(run, *a[run.job_id])
        finally:
            run.asking_exit = False
        if not run.is_exited and run.batch["state"] == "FAILED" and not run.ending:
            # sacct is not there (or has no record yet): end without it
            run.reads.end()
            self._end(run, "error", None, f"FAILED: {run.end_error(1)}")
        self._flush_ends()

    def _end(self, run, status, exit_code, error):
        """End the run once its end is in the table (`_flush_ends`)."""
        if run.ending:
            return
        run.ending = True
        # what the job wrote is the run's before it ends (idempotent)
        run.reads.end()
        self._arrays.task_ended(run)
        e = self.table.jobs.get(run.run_id)
        if e is not None:
            e["end"] = dict(status=status, exit_code=exit_code, error=error)
            self._table_dirty = True
        self._ends.append((run, status, exit_code, error))

    def _flush_ends(self):
        """One write of the table for this round's changes, then the ends."""
        if self._table_dirty:
            self._table_dirty = False
            self._save_table()
        e, self._ends = self._ends, []
        for r, status, exit_code, error in e:
            self._finish(r, status, exit_code, error)


def _code_error(run):
    """What a failed job said of its error: the code's own lines (its
    declared files), else the tail of its stderr."""
    if run.outputs is not None and run.outputs.errors:
        return "\n".join(run.outputs.errors)
    return run.stderr_tail()
