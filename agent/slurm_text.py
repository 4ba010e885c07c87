"""Slurm without I/O: command lines, the batch script, parsing, state mapping.

Pure functions for `agent.slurm`, tested without Slurm.

A job array (`agent.slurm_array`: runs of one sweep submitted together) is
one ``sbatch --array=0-N%LIMIT`` of `ARRAY_SCRIPT_FILE` in a directory of
its own in the run root: entry ``i`` there links to the run directory of
task ``i``, so Slurm writes each task's stdout and stderr into its run's
directory (``--output=DIR/%a/run.out``) and the task runs that run's own job
script there. A task's id is ``ARRAYID_TASK``; squeue ``-r`` shows each task
on its own line, sacct shows tasks that never started as one record
(``123_[4-19%2]``), and a pending task canceled alone leaves no record at
all: `state_of` and `arrays_in` read those shapes.

An ``mpi`` launch runs its ranks inside the job's allocation: the job asks
for ``--ntasks`` (whatever ``cores_as`` says: a rank is a task) and its
script starts them with Open MPI's ``mpirun``, which reads the allocation
from the job's environment. Not ``srun``: Debian 12's Open MPI 4.1 has no
PMI support for a direct launch (under ``srun --mpi=pmi2`` its ranks fail
in MPI_Init) and the pmix plugin of its Slurm 22.05 cannot load libpmix. A
site whose MPI only ``srun`` starts (Cray MPICH) needs another launcher.
"""

import math
import shlex

#: the job's stdout and stderr, next to its outputs
OUT_FILE = "run.out"
ERR_FILE = "run.err"
SCRIPT_FILE = "job.sh"

#: a job array's directory in the run root, and its script there
ARRAYS_DIR = ".simvisor-arrays"
ARRAY_SCRIPT_FILE = "array.sh"

#: tasks of one job array at most (Slurm's default MaxArraySize, 1001,
#: allows indices 0 to 1000)
MAX_ARRAY_TASKS = 1000

#: how a job's script starts the ranks of an ``mpi`` launch (`agent.run.Run`
#: fills ``{cores}``): the allocation has one slot per task, so no
#: oversubscription, and the site's binding policy
MPI_LAUNCHER = ("mpirun", "-np", "{cores}")

#: Slurm states after which a job does nothing more
TERMINAL = {
    "BOOT_FAIL",
    "CANCELLED",
    "COMPLETED",
    "DEADLINE",
    "FAILED",
    "NODE_FAIL",
    "OUT_OF_MEMORY",
    "PREEMPTED",
    "REVOKED",
    "TIMEOUT",
}

#: reported while a query fails: the job may be fine, we cannot tell
UNKNOWN = "UNKNOWN"

#: squeue output (``-o``): job id, state, reason
SQUEUE_FORMAT = "%i|%T|%r"

#: one squeue of every job and array task of the agent's user (``-r``: each
#: pending array task on its own line)
SQUEUE_ARGV = ("squeue", "--me", "-h", "-t", "all", "-r", "-o", SQUEUE_FORMAT)

#: sacct output (``-o``): ``JobID`` is an array task's ``123_4`` (``JobIDRaw``
#: would be the task's own number)
SACCT_FORMAT = "JobID,State,ExitCode"

_MAX_ERROR_CHARS = 2000


class SlurmError(Exception):
    """A Slurm command failed; the message is its own error text."""


def time_limit_minutes(max_run_secs):
    """``--time`` in whole minutes, never below the run's limit (Slurm's unit)."""
    return max(1, math.ceil(max_run_secs / 60))


def sbatch_argv(run_id, run_dir, cores, max_run_secs, batch, launch="process"):
    """The sbatch command line for one run (pure).

    Args:
        run_dir (Path): the run directory (absolute)
        cores (int): tasks, or cpus of one task if batch["cores_as"] == "cpus"
            (never for an ``mpi`` launch: each rank is a task)
        batch (dict): partition, account, qos, cores_as, extra (list)
        launch (str): "process" or "mpi"
    Returns:
        list: argv
    """
    return [
        "sbatch",
        "--parsable",
        f"--job-name=simvisor-{run_id}",
        f"--chdir={run_dir}",
        f"--output={run_dir / OUT_FILE}",
        f"--error={run_dir / ERR_FILE}",
        *_job_options(cores, max_run_secs, batch, launch),
        str(run_dir / SCRIPT_FILE),
    ]


def array_sbatch_argv(
    key, array_dir, count, limit, cores, max_run_secs, batch, launch="process"
):
    """The sbatch command line of a job array of `count` runs (pure).

    Each task has the resources one run of them would have (`sbatch_argv`);
    Slurm opens ``array_dir/<task>/run.out``, through the link to the task's
    run directory.

    Args:
        key (str): the array's key (its sweep), in the job's name
        array_dir (Path): the array's directory (absolute)
        limit (int): tasks running at once (``%LIMIT``), or None: any
    Returns:
        list: argv
    """
    a = f"--array=0-{count - 1}"
    if limit and limit < count:
        a += f"%{limit}"
    return [
        "sbatch",
        "--parsable",
        f"--job-name=simvisor-array-{key}",
        f"--chdir={array_dir}",
        f"--output={array_dir / '%a' / OUT_FILE}",
        f"--error={array_dir / '%a' / ERR_FILE}",
        a,
        *_job_options(cores, max_run_secs, batch, launch),
        str(array_dir / ARRAY_SCRIPT_FILE),
    ]


def _job_options(cores, max_run_secs, batch, launch):
    b = batch or {}
    rv = [f"--time={time_limit_minutes(max_run_secs)}"]
    if b.get("cores_as") == "cpus" and launch != "mpi":
        rv += ["--ntasks=1", f"--cpus-per-task={cores}"]
    else:
        rv += [f"--ntasks={cores}"]
    for k in ("partition", "account", "qos"):
        if b.get(k):
            rv.append(f"--{k}={b[k]}")
    rv += list(b.get("extra", ()))
    return rv


def array_script(array_dir):
    """The batch script of a job array: task N runs the job script of the
    run directory that entry N of `array_dir` links to, in it (pure)."""
    return "\n".join(
        [
            "#!/bin/bash",
            "# simvisor job array: task N runs N/job.sh in its run directory",
            f'cd -P {shlex.quote(str(array_dir))}/"$SLURM_ARRAY_TASK_ID" || exit 1',
            f"exec ./{SCRIPT_FILE}",
            "",
        ]
    )


def job_script(run_id, argv, cores, launch="process"):
    """The batch script: the code's command in its run directory (pure).

    Args:
        argv (list): the command (an ``mpi`` launch's starts with `MPI_LAUNCHER`)
        launch (str): "mpi": `cores` ranks of one thread each (and hwloc
            quiet about what it cannot see); else one process of `cores` threads
    """
    e = [f"SIMVISOR_CORES={int(cores)}"]
    if launch == "mpi":
        e += ["OMP_NUM_THREADS=1", "HWLOC_HIDE_ERRORS=2"]
    else:
        e += [f"OMP_NUM_THREADS={int(cores)}"]
    return "\n".join(
        [
            "#!/bin/bash",
            f"# simvisor run {run_id}",
            "export " + " ".join(e),
            "exec " + shlex.join(argv),
            "",
        ]
    )


def parse_sbatch(stdout):
    """The job id of ``sbatch --parsable`` ("id" or "id;cluster")."""
    i = stdout.strip().split(";")[0]
    if not i.isdigit():
        raise SlurmError(f"sbatch said {stdout.strip()[:200]!r}, not a job id")
    return i


def parse_squeue(text):
    """``squeue -h -o '%i|%T|%r'`` -> {job_id: (state, reason)}.

    An array's tasks are each a job id (``123_4``), also those squeue
    without ``-r`` writes as one line (``123_[5-9%2]``).
    """
    rv = {}
    for i, s, r in _fields(text, 3):
        _put(rv, i, (s.strip(), _reason(r)))
    return rv


def parse_sacct(text):
    """``sacct -n -P -X -o JobID,State,ExitCode`` -> {job_id: (state, exit, signal)}.

    sacct writes "CANCELLED by 1001"; the state is the first word. An
    array's tasks that never started are one record (``123_[5-9%2]``):
    each of them is a job id here, unless a record of its own says more.
    """
    rv = {}
    for i, s, c in _fields(text, 3):
        e, _, g = c.partition(":")
        _put(
            rv,
            i,
            (
                s.split()[0] if s.split() else "",
                int(e) if e.isdigit() else None,
                int(g) if g.isdigit() else None,
            ),
        )
    return rv


def _fields(text, n):
    for l in text.splitlines():
        p = l.strip().split("|", n - 1)
        if len(p) == n and p[0]:
            yield p


def _put(table, job_id, value):
    ids = expand_job_id(job_id)
    if ids == [job_id]:
        table[job_id] = value
        return
    for i in ids:
        # a task's own record (it started) says more than its array's
        table.setdefault(i, value)


def expand_job_id(text):
    """The job ids of a squeue or sacct id: ``123``, ``123_4``, or the tasks
    of one line of an array, ``123_[4-6,9%2]`` -> ``123_4 123_5 123_6 123_9``
    (pure; a malformed range: the text itself)."""
    a, sep, t = text.partition("_")
    if not sep or not (t.startswith("[") and t.endswith("]")):
        return [text]
    rv = []
    try:
        for p in t[1:-1].split("%")[0].split(","):
            lo, _, hi = p.partition("-")
            for x in range(int(lo), int(hi or lo) + 1):
                rv.append(f"{a}_{x}")
    except ValueError:
        return [text]
    return rv


def split_job_id(job_id):
    """("123", 4) for the array task ``123_4``; (job_id, None) for a job."""
    a, sep, t = job_id.partition("_")
    return (a, int(t)) if sep and t.isdigit() else (job_id, None)


def state_of(table, job_id):
    """`job_id`'s entry in a parsed squeue or sacct table, or None.

    An array task's may be its array's own record (``123``): squeue and
    sacct show it, ended, for the pending tasks canceled together.
    """
    rv = table.get(job_id)
    if rv is None:
        a, t = split_job_id(job_id)
        if t is not None:
            m = table.get(a)
            if m is not None and m[0] in TERMINAL:
                return m
    return rv


def arrays_in(*tables):
    """The job ids of the arrays any task or record of which is in `tables`."""
    return {split_job_id(i)[0] for t in tables for i in t}


def sacct_ids(job_ids):
    """What to ask sacct about `job_ids`: jobs, and arrays as a whole (an
    array's tasks that never started have no record of their own)."""
    return sorted({split_job_id(i)[0] for i in job_ids})


def scancel_argv(job_ids, live_ids):
    """One scancel of `job_ids` (pure).

    An array all of whose live tasks (`live_ids`: every job and task still
    followed) are canceled is canceled as a whole (one request to Slurm,
    and squeue shows each pending task CANCELLED); else its tasks as one
    argument, ``123_[4-6,9]``.
    """
    jobs = []
    tasks = {}
    for i in job_ids:
        a, t = split_job_id(i)
        if t is None:
            jobs.append(i)
        else:
            tasks.setdefault(a, set()).add(t)
    live = {}
    for i in live_ids:
        a, t = split_job_id(i)
        if t is not None:
            live.setdefault(a, set()).add(t)
    rv = ["scancel", *sorted(set(jobs))]
    for a, ts in sorted(tasks.items()):
        if live.get(a, set()) <= ts:
            rv.append(a)
        elif len(ts) == 1:
            rv.append(f"{a}_{next(iter(ts))}")
        else:
            rv.append(f"{a}_[{index_ranges(ts)}]")
    return rv


def index_ranges(indices):
    """``0-4,7,9-10`` of the task indices `indices` (pure)."""
    rv = []
    for i in sorted(indices):
        if rv and rv[-1][1] == i - 1:
            rv[-1][1] = i
        else:
            rv.append([i, i])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in rv)


def _reason(r):
    r = r.strip()
    return "" if r in ("None", "(null)") else r


def end_of(state, exit_code, signal_, canceled, timed_out, time_limit_min):
    """Our end of a Slurm job in terminal `state` (pure).

    Args:
        canceled (bool): we canceled it (the user asked)
        timed_out (bool): we canceled it at the run's max run time
    Returns:
        tuple: (status, error or None); the caller adds the stderr tail
    """
    if state == "COMPLETED":
        return "completed", None
    if state == "CANCELLED":
        if canceled:
            return "canceled", None
        if timed_out:
            return "timed_out", "max run time exceeded"
        return "canceled", "canceled in Slurm (scancel or a site administrator)"
    if state == "TIMEOUT":
        return (
            "timed_out",
            f"Slurm time limit of {time_limit_min} min reached (TIMEOUT)",
        )
    if state == "DEADLINE":
        return "timed_out", "Slurm deadline reached (DEADLINE)"
    if state == "OUT_OF_MEMORY":
        return "error", "out of memory: Slurm killed the job (OUT_OF_MEMORY)"
    if state == "NODE_FAIL":
        return "error", "a node of the job failed (NODE_FAIL)"
    if state == "PREEMPTED":
        return "error", "preempted by a higher priority job (PREEMPTED)"
    if state == "BOOT_FAIL":
        return "error", "a node of the job failed to boot (BOOT_FAIL)"
    if state == "FAILED":
        if signal_:
            return "error", f"killed by signal {signal_} (FAILED)"
        return "error", f"exit code {exit_code} (FAILED)"
    return "error", f"Slurm ended the job in state {state}"
