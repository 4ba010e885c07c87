"""Slurm without I/O: command lines, the batch script, parsing, state mapping.

Pure functions for `agent.slurm`, tested without Slurm.

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
    b = batch or {}
    rv = [
        "sbatch",
        "--parsable",
        f"--job-name=simvisor-{run_id}",
        f"--chdir={run_dir}",
        f"--output={run_dir / OUT_FILE}",
        f"--error={run_dir / ERR_FILE}",
        f"--time={time_limit_minutes(max_run_secs)}",
    ]
    if b.get("cores_as") == "cpus" and launch != "mpi":
        rv += ["--ntasks=1", f"--cpus-per-task={cores}"]
    else:
        rv += [f"--ntasks={cores}"]
    for k in ("partition", "account", "qos"):
        if b.get(k):
            rv.append(f"--{k}={b[k]}")
    rv += list(b.get("extra", ()))
    rv.append(str(run_dir / SCRIPT_FILE))
    return rv


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
    """``squeue -h -o '%i|%T|%r'`` -> {job_id: (state, reason)}."""
    rv = {}
    for l in text.splitlines():
        p = l.strip().split("|", 2)
        if len(p) == 3 and p[0]:
            rv[p[0]] = (p[1].strip(), _reason(p[2]))
    return rv


def parse_sacct(text):
    """``sacct -n -P -X -o JobIDRaw,State,ExitCode`` -> {job_id: (state, exit, signal)}.

    sacct writes "CANCELLED by 1001"; the state is the first word.
    """
    rv = {}
    for l in text.splitlines():
        p = l.strip().split("|")
        if len(p) < 3 or not p[0]:
            continue
        s = p[1].split()[0] if p[1].split() else ""
        e, _, g = p[2].partition(":")
        rv[p[0]] = (
            s,
            int(e) if e.isdigit() else None,
            int(g) if g.isdigit() else None,
        )
    return rv


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
