"""Drivers start and kill agents and report their targets' core budgets.

The interface, with its defaults, is `base.Driver`: `local` (subprocesses of
this host), `docker` (a container per user per Docker host) and `sbatch`
(agents on HPC login nodes, started at a user's sign-in).
"""


def names(cfg):
    """The names of the configured drivers, the default first."""
    n = ["local"]
    if cfg.sbatch_hosts:
        n.append("sbatch")
    if cfg.docker_hosts:
        n.append("docker")
    return sorted(n, key=lambda d: d != cfg.default_driver)


def build(cfg, supervisor_url, plan_of):
    """The configured drivers by name (built once at start).

    Args:
        supervisor_url (callable): the agent websocket's URL
        plan_of (callable): user name -> `resources.Plan`
    """
    return {n: _BUILD[n](cfg, supervisor_url, plan_of) for n in names(cfg)}


# imported only when configured: the docker SDK and asyncssh are not small


def _local(cfg, supervisor_url, plan_of):
    from supervisor.drivers import local

    return local.LocalDriver(cfg, supervisor_url)


def _sbatch(cfg, supervisor_url, plan_of):
    from supervisor.drivers import sbatch

    return sbatch.SbatchDriver(cfg, supervisor_url)


def _docker(cfg, supervisor_url, plan_of):
    from supervisor.drivers import docker

    return docker.DockerDriver(cfg, supervisor_url, plan_of)


_BUILD = {"local": _local, "sbatch": _sbatch, "docker": _docker}
