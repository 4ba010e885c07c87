"""What Slurm says of the Slurm pool's jobs: its commands and one round of queries.

`command` runs one Slurm command (sbatch, squeue, sacct, scancel) as a
subprocess of the event loop, bounded in time. `ask` is one round for the
jobs the pool follows (`agent.slurm`): one ``squeue -r`` of every job and
array task of the agent's user, then one sacct of those squeue no longer
shows (a job leaves it ``MinJobAge`` after its end, or at once when the
controller restarts), asked by job and by whole array, so a round is two
commands at most however many jobs and tasks there are. A query that fails
says so: the job's state is unknown, never its end.

The parsing is `agent.slurm_text`'s (pure, tested without Slurm).
"""

import asyncio

from agent.slurm_text import (
    SACCT_FORMAT,
    SQUEUE_ARGV,
    UNKNOWN,
    SlurmError,
    arrays_in,
    parse_sacct,
    parse_squeue,
    sacct_ids,
    split_job_id,
    state_of,
)

#: how long one squeue/sacct/sbatch/scancel may take
COMMAND_TIMEOUT_SECS = 30.0

#: a missing job's reason while squeue and sacct do not know it
NOT_KNOWN = "not in squeue or sacct yet"

_MAX_ERROR_CHARS = 2000


async def ask(job_ids):
    """One round of squeue (and one sacct for the jobs that left it).

    Returns:
        dict: job_id -> (state, reason, exit_code, signal): the state is
        Slurm's, or `UNKNOWN` (a query failed: the reason says which), or
        None (neither squeue nor sacct knows the job: the reason says why)
    """
    try:
        q = parse_squeue(await command(list(SQUEUE_ARGV)))
    except SlurmError as e:
        return {i: (UNKNOWN, f"squeue failed: {e}", None, None) for i in job_ids}
    rv = {}
    gone = []
    for i in job_ids:
        s = state_of(q, i)
        if s is None:
            gone.append(i)
        else:
            rv[i] = (s[0], s[1], None, None)
    if gone:
        rv.update(await ask_sacct(gone, q))
    return rv


async def ask_sacct(job_ids, squeue=None):
    """One sacct of `job_ids` (array tasks: of their arrays, whole); like `ask`.

    Args:
        squeue (dict): this round's parsed squeue, if any
    """
    try:
        a = parse_sacct(
            await command(
                [
                    "sacct",
                    "-n",
                    "-P",
                    "-X",
                    "-j",
                    ",".join(sacct_ids(job_ids)),
                    "-o",
                    SACCT_FORMAT,
                ]
            )
        )
    except SlurmError as e:
        return {i: (None, f"sacct failed: {e}", None, None) for i in job_ids}
    known = arrays_in(squeue or {}, a)
    rv = {}
    for i in job_ids:
        s = state_of(a, i)
        if s is not None:
            rv[i] = (s[0], "", s[1], s[2])
        elif split_job_id(i)[1] is not None and split_job_id(i)[0] in known:
            # its array is there, not it: Slurm keeps no record of a pending
            # task canceled alone (by us, or outside)
            rv[i] = ("CANCELLED", "", None, None)
        else:
            rv[i] = (None, NOT_KNOWN, None, None)
    return rv


async def command(argv):
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
