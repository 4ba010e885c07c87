"""Runs on agents that come and go: adoption, loss, grace, restart recovery.

When an agent says hello, the runs it holds that are still current are
adopted (and the agent told where the supervisor's copy of their frames and
log ends); runs sent to it that it no longer has end in error. When its
connection closes, its runs are `lost` for a grace period. After a supervisor
restart, queued runs are queued again and runs that were on agents are lost
until their agents return.
"""

import asyncio
import time

from pykern.pkdebug import pkdexc, pkdlog

from supervisor import agents, job, runs


class Adoption:
    def __init__(self, sv, runs_):
        self._sv = sv
        self._runs = runs_

    def agent_ready(self, agent, hello):
        """An agent said hello: adopt the runs it holds; returns welcome's map."""
        res = {}
        held = {h["run_id"]: h for h in hello["runs"]}
        for rid in held:
            r = self._runs.active.get(rid)
            if r is None or r.destroyed or r.sim.job.status not in job.ON_AGENT:
                continue
            if not _may_adopt(r, agent):
                continue
            r.agent = agent
            agent.runs[rid] = r
            if r.sim.job.status != job.RUNNING:
                self._runs.running(r)
            self._runs.changed(r.sim)
            res[rid] = {"frames_next": len(r.sim.frames), "log_next": r.sim.log_chars}
        self._sv.sign_in_changed(agent)
        # runs sent to this agent (before a restart of ours, too) that it no
        # longer has: their end is unknown
        for r in list(self._runs.active.values()):
            if (
                r.run_id not in held
                and r.sim.job.status in job.ON_AGENT
                and (
                    r.agent is agent or (r.agent is None and r.sim.agent_id == agent.id)
                )
            ):
                self._runs.end(
                    r, job.ERROR, error=f"agent {agent.id} restarted without this run"
                )
        return res

    def agent_lost(self, agent):
        """The agent's connection closed: its runs are lost until it returns."""
        self._sv.sign_in_changed(agent)
        for r in list(agent.runs.values()):
            j = r.sim.job
            if j.status in (job.STARTING, job.RUNNING):
                j.transition(job.LOST)
                j.situation = "agent disconnected"
                self._lost(r)
                self._runs.changed(r.sim)

    def _lost(self, run):
        if not run.started.done():
            run.started.set_result(None)
        for t in (run.start_timer, run.grace_timer):
            if t is not None:
                t.cancel()
        run.start_timer = None
        run.grace_timer = asyncio.get_running_loop().call_later(
            self._grace_secs(run), self._grace_expired, run
        )

    def _grace_secs(self, run):
        d = self._sv.drivers.get(run.sim.job.driver)
        return getattr(d, "lost_grace_secs", self._sv.cfg.lost_grace_secs)

    def _grace_expired(self, run):
        if not run.destroyed and run.sim.job.status == job.LOST:
            self._runs.end(
                run,
                job.ERROR,
                error=f"lost: its agent did not return within {self._grace_secs(run)} s",
            )

    def agent_stopped(self, agent, reason, dead):
        """The agent is gone for good (killed, reaped, never started).

        Args:
            dead (bool): its process is known to have ended, so its runs did
                too; otherwise (it did not reconnect) lost runs keep their grace
        """
        self._sv.sign_in_changed(agent)
        rs = list(agent.runs.values())
        # after a restart, runs wait for their agent's hello to attach
        rs += [
            r
            for r in self._runs.active.values()
            if r.agent is None
            and r.sim.agent_id == agent.id
            and r.sim.job.status in job.ON_AGENT
        ]
        for r in rs:
            if reason == agents.KILLED_BY_ADMIN:
                self._runs.end(r, job.CANCELED, error="agent killed by an admin")
            elif dead or r.sim.job.status != job.LOST:
                self._runs.end(r, job.ERROR, error=f"agent stopped: {reason}")

    # --- restart -------------------------------------------------------------

    def recover(self, sims):
        """After a restart: requeue queued runs, mark on-agent runs lost."""
        for s in sorted(sims, key=lambda s: s.job.queued_at or 0):
            if not s.job.is_active():
                continue
            try:
                self._recover(s)
            except Exception as e:
                # one bad document must not keep the service down
                pkdlog("{} cannot recover error={} stack={}", s, e, pkdexc())
                if s.run is not None:
                    self._runs.end(
                        s.run, job.ERROR, error=f"not recovered after a restart: {e}"
                    )
                else:
                    if s.job.status == job.QUEUED:
                        s.job.end(job.ERROR, time.time(), error=f"not recovered: {e}")
                    self._runs.changed(s)

    def _recover(self, s):
        sv = self._sv
        j = s.job
        u = sv.users.get(s.user)
        plan = sv.plans[u.plan if u else "basic"]
        if j.status == job.QUEUED:
            d = sv.drivers.get(j.driver)
            if d is None or u is None:
                j.end(job.ERROR, time.time(), error=f"driver {j.driver} is gone")
                self._runs.changed(s)
                return
            i = self._runs.inputs(
                u, s, sv.catalog.get(s.code), runs.read_uploads(sv.inputs_dir(s))
            )
            # a new run id: the agent may hold a run op sent under the
            # old one just before we died; that one is not adopted
            s.job.run_id = sv.run_ids.next()
            self._runs.queue(s, plan, d, i)
            self._runs.changed(s)
            return
        r = runs.Run(s, j.run_id, plan.max_run_secs)
        r.grant = sv.resources.adopt(s.user, j.host, j.cores)
        s.run = r
        self._runs.active[r.run_id] = r
        if j.status != job.LOST:
            j.transition(job.LOST)
        j.situation = "supervisor restarted: waiting for the agent"
        self._lost(r)
        self._runs.changed(s)


def _may_adopt(run, agent):
    """Is `agent` the one to hold `run`?

    Its own agent, before or after a restart of ours; or, for a driver whose
    agents a sign-in replaces (sbatch), a new agent of the same user, driver
    and host that found the run in its job table, unless another agent
    still holds it.
    """
    if run.agent is agent or run.sim.agent_id == agent.id:
        return True
    j = run.sim.job
    return (
        run.sim.user == agent.user
        and j.driver == agent.driver
        and j.host == agent.host
        and (run.agent is None or run.agent.state == agents.STOPPED)
    )
