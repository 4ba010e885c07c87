"""How a local or container run's code starts: its environment, and its MPI ranks.

Nothing of the agent reaches a code (its secret, its variables): the code
gets `environ`, built from scratch. A code of ``launch: mpi`` (a code
adapter's, `supervisor.adapter`) starts its ``cores`` ranks under mpirun.
"""

import os


#: after mpirun: how a local or container run starts its `cores` ranks (as
#: many as asked, whatever the cores the machine shows: the run's cgroup
#: holds it to its cores; no pinning, which would fight the cgroup)
MPI_LAUNCHER = ("-np", "{cores}", "--oversubscribe", "--bind-to", "none")

_ENV_PASSED = ("PATH", "HOME", "LANG", "TMPDIR")


def environ(cores, launch="process"):
    """The simulation sees only these: nothing of the agent (its secret) leaks."""
    rv = {k: os.environ[k] for k in _ENV_PASSED if k in os.environ}
    rv.setdefault("PATH", os.defpath)
    rv.setdefault("LANG", "C.UTF-8")
    rv["SIMVISOR_CORES"] = str(cores)
    # `cores` ranks of one thread each, or one process of `cores` threads
    rv["OMP_NUM_THREADS"] = "1" if launch == "mpi" else str(cores)
    # hwloc (Open MPI, GROMACS) finds no /sys in the sandbox and says so
    rv["HWLOC_HIDE_ERRORS"] = "2"
    if launch == "mpi" and os.geteuid() == 0:
        # mpirun refuses root unless told (the sandbox runs codes as nobody)
        rv["OMPI_ALLOW_RUN_AS_ROOT"] = rv["OMPI_ALLOW_RUN_AS_ROOT_CONFIRM"] = "1"
    return rv
