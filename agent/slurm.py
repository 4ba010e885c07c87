"""Runs as Slurm jobs: the agent's pool on an HPC login node (``--slurm``).

`SlurmPool` has the interface of `agent.pool.Pool` (start, cancel, forget,
running, destroy, join, runs), but a run is a batch job: its directory is
prepared on the shared filesystem, a script is submitted with ``sbatch
--parsable``, and the job is followed with ``squeue`` (and ``sacct`` once it
has left the queue). Slurm gives no events, so this is the one place the
system polls, with backoff: quickly after a change, slower while nothing
changes. A query that fails means the state is unknown, never that the job
died. Progress, frames and log come from the job's output files, read as
they grow (a shared filesystem has no inotify).

Every submitted job is written to a job table in the work directory, so an
agent restarted on the login node re-attaches to its jobs: it rebuilds each
run's record from the job's output files, which gives the same frames and
log offsets the supervisor already has.

The command lines, parsing and the state mapping are pure functions in
`agent.slurm_text`, tested without Slurm.
"""

import asyncio
import json
import os
import pathlib
import sys
import tempfile
import time

from agent import pool
from agent.pool import log
from agent.run import Output, Run
from agent.slurm_text import (
    ERR_FILE,
    OUT_FILE,
    SCRIPT_FILE,
    SQUEUE_FORMAT,
    TERMINAL,
    UNKNOWN,
    SlurmError,
    end_of,
    job_script,
    parse_sacct,
    parse_sbatch,
    parse_squeue,
    sbatch_argv,
    time_limit_minutes,
)

#: the job table in the work directory
JOBS_FILE = "jobs.json"

#: how long one squeue/sacct/sbatch/scancel may take
COMMAND_TIMEOUT_SECS = 30.0

#: after a submission, squeue keeps its first pace this long
FRESH_SECS = 3.0

#: squeue while a cancel waits for Slurm to end the job
CANCEL_POLL_SECS = 0.05

#: read the output files of running jobs this often
TAIL_SECS = 0.25

#: a job neither squeue nor sacct knows for this long has vanished
VANISHED_SECS = 600.0

_MAX_ERROR_CHARS = 2000


class JobTable:
    """The jobs this agent submitted, durable in ``<work_dir>/jobs.json``.

    run_id -> {"op": the run op without its inputs, "job_id",
    "submitted_at", "started_at" (first seen RUNNING, wall time), "end":
    {"status", "exit_code", "error"} or None}
    """

    def __init__(self, work_dir):
        self.path = pathlib.Path(work_dir) / JOBS_FILE
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.jobs = json.loads(self.path.read_text())
        except FileNotFoundError:
            self.jobs = {}
        except ValueError as e:
            # a torn table cannot happen (atomic writes); keep the evidence
            log("job_table_unreadable", path=str(self.path), error=str(e))
            self.path.rename(self.path.with_suffix(".bad"))
            self.jobs = {}

    def save(self):
        fd, t = tempfile.mkstemp(dir=self.path.parent, prefix=".jobs.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(self.jobs, f, indent=1)
                f.flush()
                os.fsync(f.fileno())
            os.replace(t, self.path)
        except BaseException:
            try:
                os.unlink(t)
            except OSError:
                pass
            raise


class SlurmPool(pool.Records):
    """Runs as Slurm jobs; see the module doc.

    Args:
        run_root (str or Path): every run directory is inside it (shared filesystem)
        work_dir (str or Path): the job table
        on_event (callable): like `agent.pool.Pool`, plus kind ``batch``
            (the job id, state or reason changed: ``run.batch``)
        kill_grace_secs (float): scancel's confirmation is awaited this long
            plus `COMMAND_TIMEOUT_SECS`
        poll_secs (tuple): (first, max) delay between squeue queries
        max_procs (int): jobs submitted at once
    """

    def __init__(
        self,
        run_root,
        work_dir,
        on_event,
        kill_grace_secs=2.0,
        poll_secs=(0.25, 5.0),
        max_procs=64,
    ):
        self.run_root = pathlib.Path(run_root).resolve()
        self.run_root.mkdir(parents=True, exist_ok=True)
        self.kill_grace_secs = kill_grace_secs
        self.runs = {}
        self.table = JobTable(work_dir)
        self._on_event = on_event
        self._poll_min, self._poll_max = poll_secs
        self._slots = asyncio.Semaphore(max_procs)
        self._tasks = set()
        self._destroyed = False
        self._wake = asyncio.Event()
        self._follower = None
        self._attach()

    # --- the Pool interface ------------------------------------------------

    def start(self, op):
        if self._destroyed:
            raise pool.PoolError("pool is shut down")
        if op["run_id"] in self.runs:
            raise pool.PoolError(f"run_id={op['run_id']} is already held")
        r = self._new_run(op)
        r.task = self._spawn(self._submit(r))
        return r

    def cancel(self, run_id):
        r = self.runs.get(run_id)
        f = asyncio.get_running_loop().create_future()
        if r is None or r.is_exited:
            f.set_result(None)
            return f
        if not r.canceled:
            r.canceled = True
            if r.job_id is None:
                # not submitted yet: stop before sbatch (a submission in
                # flight is canceled once its id is known)
                if r.state in ("queued", "preparing"):
                    r.task.cancel()
            else:
                self._spawn(self._scancel(r))
        return asyncio.shield(r.ended)

    def _forgotten(self, run_id):
        if self.table.jobs.pop(run_id, None) is not None:
            self.table.save()

    def destroy(self):
        """Stop following; the jobs go on (a new agent re-attaches them)."""
        if self._destroyed:
            return
        self._destroyed = True
        for t in list(self._tasks):
            t.cancel()

    async def join(self):
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        for r in self.runs.values():
            r.close_log_file()

    # --- runs ----------------------------------------------------------------

    def _new_run(self, op):
        r = Run(op, self._emit)
        r.batch = dict(job_id=None, state="", reason="")
        r.job_id = None
        r.started_at = None
        r.out = Output(r)
        r.offsets = {OUT_FILE: 0, ERR_FILE: 0}
        r.last_seen = time.monotonic()
        #: loop time of the submission (0: submitted by an agent before us)
        r.submitted = 0.0
        self.runs[r.run_id] = r
        return r

    def _attach(self):
        """Runs of the job table (an agent before us submitted them)."""
        for i, e in self.table.jobs.items():
            r = self._new_run(dict(e["op"], inputs={}))
            r.dir = pool.resolve_inside(self.run_root, r.run_dir)
            r.job_id = e["job_id"]
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
            self._log_submitted(r)
            self._read_output(r)
            if e.get("end"):
                self._read_output(r, final=True)
                self._finish(r, **e["end"])
        if self.running():
            self._poke()

    def _spawn(self, coro):
        t = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)
        return t

    async def _submit(self, run):
        try:
            e = await pool.claim_dir(self.run_root, run, self.runs)
            if e:
                self._finish(run, "error", None, e)
                return
            async with self._slots:
                run.state = "preparing"
                try:
                    await asyncio.to_thread(self._prepare, run)
                    run.open_log_file()
                except OSError as x:
                    self._finish(run, "error", None, f"cannot prepare run_dir: {x}")
                    return
                run.state = "spawning"
                try:
                    out = await _command(
                        sbatch_argv(
                            run.run_id,
                            run.dir,
                            run.cores,
                            run.max_run_secs,
                            run.batch_options,
                        )
                    )
                    run.job_id = parse_sbatch(out)
                except SlurmError as x:
                    self._finish(run, "error", None, f"Slurm refused the job: {x}")
                    return
            run.pid = 0
            run.state = "running"
            self.table.jobs[run.run_id] = dict(
                op={k: v for k, v in run.op.items() if k != "inputs"},
                job_id=run.job_id,
                submitted_at=time.time(),
                started_at=None,
                end=None,
            )
            await asyncio.to_thread(self.table.save)
            run.submitted = asyncio.get_running_loop().time()
            log("submitted", run_id=run.run_id, job_id=run.job_id)
            self._log_submitted(run)
            self._set_batch(run, "PENDING", "submitted")
            self._emit(run, "started")
            if run.canceled:
                self._spawn(self._scancel(run))
            self._poke()
        except asyncio.CancelledError:
            if run.job_id is None:
                self._finish(run, "canceled", None, None)
            if self._destroyed:
                raise
            asyncio.current_task().uncancel()
        except Exception as e:
            log("run_error", run_id=run.run_id, error=pool.stack(e))
            self._finish(run, "error", None, f"agent error: {e!r}")

    def _prepare(self, run):
        pool.prepare_dir(run.dir, run.params, run.inputs)
        argv = [sys.executable if a == pool.PYTHON_ARG else a for a in run.argv]
        p = run.dir / SCRIPT_FILE
        p.write_text(job_script(run.run_id, argv, run.cores))
        p.chmod(0o700)

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

    async def _scancel(self, run):
        """Cancel the job and wait until Slurm says it has ended."""
        while not run.is_exited:
            try:
                await _command(["scancel", run.job_id])
                break
            except SlurmError as e:
                # the controller may be down: the job is not gone; try again
                log("scancel_failed", run_id=run.run_id, error=str(e))
                self._set_batch(run, UNKNOWN, f"scancel failed: {e}")
                await asyncio.sleep(self._poll_max)
        run.cancel_sent = True
        self._poke()

    def _poke(self):
        """Query Slurm soon (a change is expected)."""
        self._wake.set()
        if self._follower is None or self._follower.done():
            self._follower = self._spawn(self._follow())

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
                if any(getattr(r, "cancel_sent", False) for r in live):
                    # a cancel waits for Slurm's confirmation (COMPLETING
                    # lasts tens of ms): ask often, it is short
                    delay = CANCEL_POLL_SECS
                next_query = loop.time() + delay
            for r in live:
                if not r.is_exited:
                    self._read_output(r)
            try:
                await asyncio.wait_for(
                    self._wake.wait(), min(TAIL_SECS, next_query - loop.time())
                )
            except TimeoutError:
                pass

    async def _query(self, live):
        """One round of squeue (and sacct for jobs that left it); True if something changed."""
        changed = False
        try:
            q = parse_squeue(
                await _command(
                    ["squeue", "--me", "-h", "-t", "all", "-o", SQUEUE_FORMAT]
                )
            )
        except SlurmError as e:
            for r in live:
                changed |= self._set_batch(r, UNKNOWN, f"squeue failed: {e}")
            return changed
        gone = []
        for r in live:
            s = q.get(r.job_id)
            if s is None:
                gone.append(r)
                continue
            r.last_seen = time.monotonic()
            changed |= self._update(r, s[0], s[1], None, None)
        if gone:
            changed |= await self._query_sacct(gone)
        return changed

    async def _query_sacct(self, runs):
        try:
            a = parse_sacct(
                await _command(
                    [
                        "sacct",
                        "-n",
                        "-P",
                        "-X",
                        "-j",
                        ",".join(r.job_id for r in runs),
                        "-o",
                        "JobIDRaw,State,ExitCode",
                    ]
                )
            )
        except SlurmError as e:
            a = None
            err = f"sacct failed: {e}"
        changed = False
        for r in runs:
            s = a.get(r.job_id) if a is not None else None
            if s is not None:
                r.last_seen = time.monotonic()
                changed |= self._update(r, s[0], "", s[1], s[2])
            elif time.monotonic() - r.last_seen > VANISHED_SECS:
                self._end(
                    r,
                    "error",
                    None,
                    f"Slurm job {r.job_id} is unknown to squeue and sacct",
                )
                changed = True
            else:
                changed |= self._set_batch(
                    r, UNKNOWN, err if a is None else "not in squeue or sacct yet"
                )
        return changed

    def _update(self, run, state, reason, exit_code, signal_):
        changed = self._set_batch(run, state, reason)
        if state == "RUNNING" and run.started_at is None:
            run.started_at = time.time()
            self.table.jobs[run.run_id]["started_at"] = run.started_at
            self.table.save()
        if state in TERMINAL:
            if state == "FAILED" and exit_code is None:
                # squeue has no exit code; sacct does (later round)
                self._spawn(self._exit_code(run))
                return changed
            self._read_output(run, final=True)
            st, e = end_of(
                state,
                exit_code,
                signal_,
                run.canceled,
                run.timed_out,
                time_limit_minutes(run.max_run_secs),
            )
            t = run.stderr_tail()
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
            self._spawn(self._scancel(run))
        return changed

    async def _exit_code(self, run):
        if getattr(run, "asking_exit", False):
            return
        run.asking_exit = True
        try:
            await self._query_sacct([run])
        finally:
            run.asking_exit = False
        if not run.is_exited and run.batch["state"] == "FAILED":
            # sacct is not there (or has no record yet): end without it
            self._read_output(run, final=True)
            self._end(run, "error", None, f"FAILED: {run.end_error(1)}")

    def _end(self, run, status, exit_code, error):
        e = self.table.jobs.get(run.run_id)
        if e is not None:
            e["end"] = dict(status=status, exit_code=exit_code, error=error)
            self.table.save()
        self._finish(run, status, exit_code, error)

    def _finish(self, run, status, exit_code, error):
        if run.is_exited:
            return
        run.close_log_file()
        run.state = "exited"
        run.status = status
        run.exit_code = exit_code
        run.error = error
        log("run_exited", run_id=run.run_id, status=status, job_id=run.job_id)
        self._emit(run, "exited")
        if not run.ended.done():
            run.ended.set_result(None)

    def _read_output(self, run, final=False):
        """New bytes of the job's stdout and stderr go to the run's record."""
        for n, fd in ((OUT_FILE, 1), (ERR_FILE, 2)):
            try:
                with open(run.dir / n, "rb") as f:
                    f.seek(run.offsets[n])
                    b = f.read(pool_read_bytes())
            except FileNotFoundError:
                continue
            except OSError as e:
                log("output_unreadable", run_id=run.run_id, file=n, error=str(e))
                continue
            if b:
                run.offsets[n] += len(b)
                run.out.pipe_data_received(fd, b)
        if final:
            run.out.flush()


def pool_read_bytes():
    """Most read from one output file per tick: the log stays bounded per step."""
    return 4 * 1024 * 1024


async def _command(argv):
    """Run a Slurm command; its stdout, or `SlurmError` with its stderr."""
    try:
        p = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
    except OSError as e:
        raise SlurmError(f"{argv[0]}: {e.strerror or e}") from e
    try:
        o, e = await asyncio.wait_for(p.communicate(), COMMAND_TIMEOUT_SECS)
    except TimeoutError:
        p.kill()
        await p.wait()
        raise SlurmError(
            f"{argv[0]} did not answer within {COMMAND_TIMEOUT_SECS} s"
        ) from None
    if p.returncode != 0:
        t = e.decode(errors="replace").strip() or f"exit code {p.returncode}"
        raise SlurmError(t[-_MAX_ERROR_CHARS:])
    return o.decode(errors="replace")
