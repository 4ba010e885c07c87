"""Memory limits as the agent sees them: whose fault a SIGKILL was.

Under a memory limit (a container's, or any cgroup's) the kernel's OOM killer
ends a process with SIGKILL, which looks like any other kill. The cgroup
counts those kills (``oom_kill`` in ``memory.events`` on cgroup v2,
``memory.oom_control`` on v1), so the agent reads the count before a run
starts and after it ends: if it went up, the run ran out of memory.

A run with a cgroup of its own (`agent.cgroup`) and a memory limit there
has its own count, which says that the run hit its own limit.

With ``--sim-oom-score-adj 1000`` simulations are the kernel's first choice,
so it is the simulation that dies, not the agent (`agent.keeper` sets it in
the code, not in itself; raising one's own score needs no privilege).
"""

import os

_CGROUP = "/sys/fs/cgroup"


def _cgroup_dirs():
    """Candidate directories of our memory cgroup, most specific first."""
    try:
        with open("/proc/self/cgroup") as f:
            lines = f.read().splitlines()
    except OSError:
        return []
    v1 = v2 = None
    for x in lines:
        n, ctl, path = x.split(":", 2)
        if "memory" in ctl.split(","):
            v1 = path
        elif n == "0" and ctl == "":
            v2 = path
    rv = []
    if v1 is not None:
        m = os.path.join(_CGROUP, "memory")
        # in a container the mount is the container's own cgroup
        rv += [(m + v1, "memory.oom_control"), (m, "memory.oom_control")]
    if v2 is not None:
        rv += [(_CGROUP + v2, "memory.events"), (_CGROUP, "memory.events")]
    return rv


def oom_kills():
    """How many processes the OOM killer ended in our cgroup, or None if unknown."""
    for d, f in _cgroup_dirs():
        try:
            with open(os.path.join(d, f)) as x:
                for line in x:
                    k, _, v = line.partition(" ")
                    if k == "oom_kill":
                        return int(v)
        except (OSError, ValueError):
            continue
    return None


def memory_limit_bytes():
    """Our cgroup's memory limit, or None if there is none (or it is unknown)."""
    for d, f in _cgroup_dirs():
        p = os.path.join(
            d, "memory.limit_in_bytes" if f == "memory.oom_control" else "memory.max"
        )
        try:
            with open(p) as x:
                v = x.read().strip()
        except OSError:
            continue
        if v == "max" or not v.isdigit() or int(v) >= 2**62:
            return None
        return int(v)
    return None


class EndCounts:
    """A run cgroup as its keeper last saw it (`RunCgroup.end_counts`).

    What an agent that re-attached a run has instead of the cgroup, which
    the run's keeper removed: the same calls as `agent.cgroup_run.RunCgroup`
    for `out_of_memory_error` and `pids_note`.
    """

    def __init__(self, counts):
        self._counts = counts
        self.memory_limit_bytes = counts.get("memory_limit_bytes")
        self.pids_limit = counts.get("pids_limit")

    def oom_kills(self):
        return self._counts.get("oom_kills")

    def pids_refused(self):
        return self._counts.get("pids_refused")


def out_of_memory_error(kills_before, run_cgroup=None):
    """The error text if the OOM killer struck since `kills_before`, else None.

    Args:
        kills_before (int): `oom_kills` before the run (None: unknown)
        run_cgroup (agent.cgroup_run.RunCgroup): the run's own, if it has one
            (its count is the run's alone; read before it is removed)
    """
    m = run_cgroup.memory_limit_bytes if run_cgroup else None
    if m and run_cgroup.oom_kills():
        return f"out of memory: the run's memory limit of {_mib(m)} was reached"
    n = oom_kills()
    if kills_before is None or n is None or n <= kills_before:
        return None
    m = memory_limit_bytes()
    return "out of memory" + (
        f": the memory limit of {_mib(m)} was reached" if m else ""
    )


def pids_note(run_cgroup):
    """What to tell of process starts refused at the run's pids limit, or None."""
    n = run_cgroup.pids_refused() if run_cgroup else None
    if not n:
        return None
    m = run_cgroup.pids_limit
    return f"{n} process start(s) refused at the run's limit" + (
        f" of {m} processes" if m else ""
    )


def _mib(n):
    return f"{n // (1024 * 1024)} MiB"
