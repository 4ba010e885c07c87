"""Job arrays and gathered cancels of the Slurm pool (`agent.slurm`).

Runs whose op's ``batch`` names an ``array`` (``{"key", "limit"}``: the
members of one sweep, `supervisor.sweeps`) that come close together go to
Slurm as one job array. `Arrays` collects them by key and by the shape of
their jobs (cores, time, options: one array has one shape) until none came
for `QUIET_SECS` (at most `MAX_WAIT_SECS` after the first, at most
`slurm_text.MAX_ARRAY_TASKS` tasks), makes the array's directory in the run
root (entry ``i`` links to task ``i``'s run directory, beside the script of
`slurm_text.array_script`) and submits one ``sbatch --array=0-N%LIMIT``.
Each run is then task ``ARRAYID_i`` of it, in the job table and followed as
any job is (one squeue a round for all of them). A task's link goes when the
task has ended, the directory with the last one.

`Cancels` gathers the scancels of array tasks wanted close together (a
sweep's cancel is one ``cancel`` op per member, which a busy supervisor
sends over a fraction of a second) into one scancel
(`slurm_text.scancel_argv`); a job's goes at once. One scancel runs at a
time: those wanted meanwhile go in the next. scancel says nothing (and
exits 0) when Slurm did not take a request, so a job still pending or
running `CANCEL_AGAIN_SECS` after its scancel is canceled again.

Both wait on the event loop's timers, never in a polling loop.
"""

import asyncio
import json
import os
import shutil
import time

from agent.log import log
from agent.slurm_text import (
    ARRAY_SCRIPT_FILE,
    ARRAYS_DIR,
    MAX_ARRAY_TASKS,
    SlurmError,
    array_sbatch_argv,
    array_script,
    parse_sbatch,
    scancel_argv,
    split_job_id,
    time_limit_minutes,
)

#: runs of one array come this close together (the supervisor sends a
#: sweep's run ops in a burst)
QUIET_SECS = 0.2

#: the first run of an array waits at most this long for the others
MAX_WAIT_SECS = 2.0

#: cancels of array tasks this close together go in one scancel
CANCEL_QUIET_SECS = 0.1

#: ... the first waits at most this long for the others
CANCEL_MAX_WAIT_SECS = 2.0

#: a job Slurm still runs (or holds) this long after its scancel is canceled again
CANCEL_AGAIN_SECS = 3.0


class Arrays:
    """Runs that go to Slurm as job arrays; see the module doc.

    Args:
        run_root (Path): the arrays' directories go in it (the shared filesystem)
        command (callable): ``await command(argv)``: stdout, or `SlurmError`
        tasks (agent.tasks.Tasks): owns the submissions
        submitted (callable): ``submitted(runs)``: record the runs (their
            ``job_id`` and ``array_task`` set) durably
        refused (callable): ``refused(run, error)``: the run ends, never a job
    """

    def __init__(self, run_root, command, tasks, submitted, refused):
        self.root = run_root / ARRAYS_DIR
        self._command = command
        self._tasks = tasks
        self._submitted = submitted
        self._refused = refused
        #: the shape of the arrays being collected -> `_Group`
        self._groups = {}
        #: directory name -> task indices whose link is still there
        self._links = {}

    def add(self, run):
        """Submit `run` with those of its array that come close to it.

        Its ``array_wait`` is resolved once it is submitted (its ``job_id``
        set), refused (it has ended) or discarded.
        """
        loop = asyncio.get_running_loop()
        run.array_wait = loop.create_future()
        s = array_shape(run)
        g = self._groups.get(s)
        if g is None:
            g = self._groups[s] = _Group(s, loop.time())
        g.runs.append(run)
        if g.timer is not None:
            g.timer.cancel()
        if len(g.runs) >= MAX_ARRAY_TASKS:
            self._flush(g)
            return
        d = min(QUIET_SECS, g.first_at + MAX_WAIT_SECS - loop.time())
        g.timer = loop.call_later(max(0.0, d), self._flush, g)

    def discard(self, run):
        """Take `run` out of an array not yet submitted; False if it is not in one."""
        g = self._groups.get(array_shape(run)) if run.array_wait else None
        if g is None or run not in g.runs:
            return False
        g.runs.remove(run)
        if not g.runs:
            g.timer.cancel()
            del self._groups[g.shape]
        run.array_wait.set_result(None)
        return True

    def known(self, run):
        """`run` (re-attached from the job table) is a task whose link is there."""
        if run.array_task is not None:
            n, i = run.array_task
            self._links.setdefault(n, set()).add(i)

    def task_ended(self, run):
        """`run`'s task has ended: its link goes, and with the last one the directory."""
        if run.array_task is None:
            return
        n, i = run.array_task
        left = self._links.get(n)
        if left is None:
            return
        left.discard(i)
        d = self.root / n
        try:
            if left:
                (d / str(i)).unlink(missing_ok=True)
            else:
                del self._links[n]
                shutil.rmtree(d)
        except OSError as e:
            log("array_dir_cleanup_failed", dir=str(d), error=str(e))

    def destroy(self):
        for g in self._groups.values():
            if g.timer is not None:
                g.timer.cancel()
        self._groups.clear()

    def _flush(self, group):
        if self._groups.get(group.shape) is group:
            del self._groups[group.shape]
        if group.timer is not None:
            group.timer.cancel()
        # in the order of their index (a sweep's members): Slurm starts
        # the tasks of an array in theirs
        group.runs.sort(key=lambda r: r.batch_options["array"]["index"])
        self._tasks.spawn(self._submit(group.runs))

    async def _submit(self, runs):
        r = runs[0]
        a = r.batch_options["array"]
        # unique: run ids are
        n = f"{a['key']}-{r.run_id}"
        d = self.root / n
        try:
            try:
                await asyncio.to_thread(_make_dir, d, [x.dir for x in runs])
            except OSError as e:
                for x in runs:
                    self._refused(x, f"cannot make the job array's directory: {e}")
                return
            argv = array_sbatch_argv(
                a["key"],
                d,
                len(runs),
                a.get("limit"),
                r.cores,
                r.max_run_secs,
                r.batch_options,
                r.launch,
            )
            try:
                i = parse_sbatch(await self._command(argv))
            except SlurmError as e:
                await asyncio.to_thread(shutil.rmtree, d, True)
                for x in runs:
                    self._refused(x, f"Slurm refused the job: {e}")
                return
            log("submitted_array", job_id=i, tasks=len(runs), key=a["key"])
            self._links[n] = set(range(len(runs)))
            for t, x in enumerate(runs):
                x.job_id = f"{i}_{t}"
                x.array_task = [n, t]
            self._submitted(runs)
        finally:
            for x in runs:
                if not x.array_wait.done():
                    x.array_wait.set_result(None)


class _Group:
    """Runs of one shape collected for one array."""

    def __init__(self, shape, first_at):
        self.shape = shape
        self.first_at = first_at
        self.runs = []
        self.timer = None


def array_shape(run):
    """What the runs of one array share (pure): its key and limit, and each
    job's resources (cores, time, launch, the other sbatch options)."""
    b = dict(run.batch_options)
    a = b.pop("array")
    # not its index: the runs of one array differ in that
    return (
        a["key"],
        a.get("limit"),
        run.cores,
        time_limit_minutes(run.max_run_secs),
        run.launch,
        json.dumps(b, sort_keys=True),
    )


def _make_dir(path, run_dirs):
    """The array's directory: entry i links to run directory i; its script."""
    # a crashed agent's, of the same first run (it submitted nothing then)
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    for i, d in enumerate(run_dirs):
        os.symlink(d, path / str(i))
    p = path / ARRAY_SCRIPT_FILE
    p.write_text(array_script(path))
    p.chmod(0o700)


class Cancels:
    """The scancels wanted close together, as one command.

    Args:
        command (callable): ``await command(argv)``: stdout, or `SlurmError`
        live_ids (callable): the job ids of every job still followed
        failed (callable): ``failed(run, reason)``: its scancel failed (the
            job is not gone: it is tried again after `retry_secs`)
        sent (callable): ``sent()`` once a scancel succeeded
        tasks (agent.tasks.Tasks): owns the commands
        retry_secs (float): a failed scancel is tried again after this
    """

    def __init__(self, command, live_ids, failed, sent, tasks, retry_secs):
        self._command = command
        self._live_ids = live_ids
        self._failed = failed
        self._sent = sent
        self._tasks = tasks
        self._retry_secs = retry_secs
        #: run_id -> run, to cancel in the next scancel
        self._runs = {}
        self._first_at = None
        self._timer = None
        #: a scancel is under way (the next waits for it)
        self._busy = False

    def add(self, run):
        """scancel `run`'s job soon (with the others asked for meanwhile)."""
        self._runs[run.run_id] = run
        self._arm()

    def check(self, run, state):
        """Slurm says `state` of `run`'s job: cancel it again if the scancel
        was not taken (see the module doc)."""
        if (
            run.cancel_sent
            and state in ("PENDING", "RUNNING")
            and time.monotonic() - run.cancel_sent_at > CANCEL_AGAIN_SECS
        ):
            log("scancel_again", run_id=run.run_id, job_id=run.job_id, state=state)
            run.cancel_sent = False
            self.add(run)

    def destroy(self):
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._runs.clear()

    def _arm(self):
        if self._busy or not self._runs:
            return
        loop = asyncio.get_running_loop()
        if self._timer is not None:
            self._timer.cancel()
        else:
            self._first_at = loop.time()
        if any(split_job_id(r.job_id)[1] is None for r in self._runs.values()):
            # a job's: at once (with the tasks' wanted so far)
            d = 0.0
        else:
            d = min(
                CANCEL_QUIET_SECS, self._first_at + CANCEL_MAX_WAIT_SECS - loop.time()
            )
        self._timer = loop.call_later(max(0.0, d), self._flush)

    def _flush(self):
        self._timer = None
        runs = list(self._runs.values())
        self._runs.clear()
        self._busy = True
        self._tasks.spawn(self._send(runs))

    async def _send(self, runs):
        """scancel the jobs of `runs` until Slurm took it (or they ended)."""
        try:
            while True:
                live = [r for r in runs if not r.is_exited]
                if not live:
                    return
                argv = scancel_argv([r.job_id for r in live], self._live_ids())
                try:
                    await self._command(argv)
                    break
                except SlurmError as e:
                    # the controller may be down: the jobs are not gone; again
                    log("scancel_failed", jobs=len(live), error=str(e))
                    for r in live:
                        self._failed(r, f"scancel failed: {e}")
                    await asyncio.sleep(self._retry_secs)
            log("scancel", jobs=len(live), argv=" ".join(argv[1:]))
            t = time.monotonic()
            for r in live:
                r.cancel_sent = True
                r.cancel_sent_at = t
            self._sent()
        finally:
            self._busy = False
            self._arm()
