"""Recovery policy: what becomes of runs when agents or the supervisor come back.

Pure decisions, no I/O: `Runs` asks and applies them.

- An agent said hello: the runs it holds that are still current and its own
  are adopted (and it is told where the supervisor's copy of their frames and
  log ends); runs sent to it that it no longer has end in error.
- An agent's connection closed: its starting and running runs are `lost`.
- An agent died holding runs and its driver starts it again (local): its
  runs stay `lost` (`RESTARTING`) until the new process's hello adopts them.
- An agent is gone for good: an admin's kill cancels its runs; a dead
  process ends them in error; runs that are only lost keep their grace.
- After a supervisor restart: queued runs are queued again (under a new run
  id: the agent may hold a run op sent under the old one, never adopted);
  runs that were on agents are lost until their agents return, or, for an
  agent whose process is known to be gone (a local one), until the agent
  started again at once re-attaches them (`restart`).
"""

from supervisor import agent_state, agents, job

#: what becomes of an active job after a restart
REQUEUE = "requeue"
LOST = "lost"

#: the situation of a run whose agent died and is being started again
RESTARTING = "its agent died: a new one is re-attaching the run"


def may_adopt(run, agent, agent_id):
    """Is `agent` the one to hold `run`?

    Its own agent, before or after a restart of ours (`agent_id`: the one the
    run was sent to); or, for a driver whose agents a sign-in replaces
    (sbatch), a new agent of the same user, driver and host that found the
    run in its job table, unless another agent still holds it.
    """
    if run.agent is agent or agent_id == agent.id:
        return True
    j = run.sim.job
    return (
        run.sim.user == agent.user
        and j.driver == agent.driver
        and j.host == agent.host
        and (run.agent is None or run.agent.state == agent_state.STOPPED)
    )


def on_hello(active, held, agent):
    """Which runs `agent`'s hello adopts and which it orphans.

    Args:
        active (iterable): every active `Run`
        held (set): the run ids the agent says it holds
    Returns:
        tuple: (runs to adopt, runs to end: the agent no longer has them)
    """
    adopt = []
    orphans = []
    for r in active:
        if r.destroyed or r.sim.job.status not in job.ON_AGENT:
            continue
        if r.run_id in held:
            if may_adopt(r, agent, r.sim.agent_id):
                adopt.append(r)
        elif r.agent is agent or (r.agent is None and r.sim.agent_id == agent.id):
            # sent to this agent (before a restart of ours, too)
            orphans.append(r)
    return adopt, orphans


def on_lost(status):
    """Does a run in `status` become lost when its agent's connection closes?"""
    return status in (job.STARTING, job.RUNNING)


def on_stopped(status, reason, dead):
    """How a run of an agent gone for good ends: (status, error), or None.

    Args:
        reason (str): why the agent stopped
        dead (bool): its process is known to have ended, so its runs did too;
            otherwise (it did not reconnect) lost runs keep their grace
    """
    if reason == agents.KILLED_BY_ADMIN:
        return job.CANCELED, "agent killed by an admin"
    if dead or status != job.LOST:
        return job.ERROR, f"agent stopped: {reason}"
    return None


def on_restart(sim, has_driver, has_user):
    """What becomes of an active job loaded after a restart.

    Returns:
        str: `REQUEUE`, `LOST`, or an error message (it cannot be recovered)
    """
    if sim.job.status == job.QUEUED:
        if not (has_driver and has_user):
            return f"driver {sim.job.driver} is gone"
        return REQUEUE
    return LOST
