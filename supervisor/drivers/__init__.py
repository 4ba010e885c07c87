"""Drivers start and kill agents and report their targets' core budgets.

The interface every driver implements (see `local.LocalDriver`):

- ``name``: the driver's name in the API (``driver`` of a run)
- ``targets()``: the `resources.Target` s runs of this driver may use;
  a target's name is the agent's host
- ``async start(agent, secret, on_exit)``: start the agent process, giving it
  `secret` without putting it on a command line or in a log; record what is
  needed to find it again in ``agent.info``; call ``on_exit(agent, message)``
  if the process ends
- ``async kill(agent)``: stop the agent process for good; idempotent
- ``describe(agent)``: extra fields for the admin page
- ``async destroy()``: shutdown; agents keep running
"""


def build(cfg, supervisor_url):
    """The configured drivers by name (built once at start)."""
    from supervisor.drivers import local

    res = {}
    for d in (local.LocalDriver(cfg, supervisor_url),):
        assert d.name not in res, f"duplicate driver={d.name}"
        res[d.name] = d
    return res
