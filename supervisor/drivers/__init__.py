"""Drivers start and kill agents and report their targets' core budgets.

The interface every driver implements (see `local.LocalDriver`):

- ``name``: the driver's name in the API (``driver`` of a run)
- ``targets()``: the `resources.Target` s runs of this driver may use;
  a target's name is the agent's host
- ``recover(agents, on_exit)``: at start, the agents known before a restart
  (they may still be running and reconnect)
- ``async start(agent, secret, on_exit)``: start the agent process, giving it
  `secret` without putting it on a command line or in a log; record what is
  needed to find it again in ``agent.info``; call ``on_exit(agent, message,
  dead=...)`` if the process ends (``dead``: its runs surely ended with it)
- ``async kill(agent)``: stop the agent process for good; idempotent
- ``resize(agent, cores)``: the cores of the runs the agent holds changed
- ``describe(agent)``: extra fields for the admin page
- ``async destroy()``: shutdown; agents keep running

Drivers whose agents start only when their user signs in (`sbatch`) set
``needs_login`` and implement ``async login(agent, secret, creds,
wait_ready)``; ``remote_files`` says run directories are not on this host
(files go through the agent); ``lost_grace_secs`` and ``idle_secs``, if set,
replace the global settings for their agents and runs.
"""


def build(cfg, supervisor_url, plan_of):
    """The configured drivers by name (built once at start).

    Args:
        supervisor_url (callable): the agent websocket's URL
        plan_of (callable): user name -> `resources.Plan`
    """
    from supervisor.drivers import local

    ds = [local.LocalDriver(cfg, supervisor_url)]
    if cfg.sbatch_hosts:
        from supervisor.drivers import sbatch

        ds.append(sbatch.SbatchDriver(cfg, supervisor_url))
    if cfg.docker_hosts:
        from supervisor.drivers import docker

        ds.append(docker.DockerDriver(cfg, supervisor_url, plan_of))
    res = {}
    for d in ds:
        assert d.name not in res, f"duplicate driver={d.name}"
        res[d.name] = d
    return res
