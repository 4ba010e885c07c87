"""A sweep's members on a batch driver (sbatch): one Slurm job array.

Pure policy for `sweeps.Sweeps`. Elsewhere a sweep's ``max_parallel`` caps
its members in flight (queued, starting, running, being handed over). On a
batch driver it is the job array's ``%LIMIT`` instead: the members handed
over together are one ``sbatch --array`` (`agent.slurm_array`: the runs of
one ``array`` key that come together), which Slurm runs ``max_parallel`` at
a time. While none of the sweep is in flight, as many as the plan's running
slots go at once; later members go only while fewer than ``max_parallel``
are in flight, so that no array beside the first runs past the limit.
"""


def in_flight_limit(slots, ahead, max_parallel, busy, batch):
    """Members of a sweep that may be in flight at once.

    Args:
        slots (int): the running slots of its user's plan
        ahead (int): members in flight per slot
        max_parallel (int): the sweep's, or None
        busy (bool): some member is in flight
        batch (bool): its driver is a batch driver (`runs.Runs.is_batch`)
    Returns:
        int: the limit
    """
    n = ahead * slots
    if not max_parallel:
        return n
    if batch and not busy:
        return max(slots, min(n, max_parallel))
    return min(n, max_parallel)


def array_of(sweeps, sim):
    """The ``array`` of `sim`'s run op (`runs.Runs.watch_jobs`), or None.

    Args:
        sweeps (dict): sweep id -> `sweeps.Sweep`
    Returns:
        dict: key (the sweep), limit (its ``max_parallel``), index (the
        member's: tasks go in member order); None: `sim` is no member
    """
    w = sweeps.get(sim.sweep["id"]) if sim.sweep else None
    if w is None:
        return None
    return {"key": w.id, "limit": w.max_parallel, "index": sim.sweep["index"]}
