"""After a supervisor restart: the active runs of the store, taken up again.

`Runs.recover` hands the loaded simulations here; `recovery` has the policy.
Queued runs are queued again (under a new run id); runs that were on agents
are `lost` until their agent says hello. An agent whose process is known to
be gone (`Driver.process_gone`: a local agent killed with the supervisor,
or while none ran) is not waited for: `Agents` starts it again at once, as
after any crash of an agent holding runs, and the new process re-attaches
the runs still going from its run table, or reports how those that ended
meanwhile ended; runs it no longer has end `error` at its hello, and if it
cannot start they end `error` with why. Seconds, not a grace period.
"""

import time

from pykern.pkdebug import pkdexc, pkdlog

from supervisor import agent_state, job, recovery
from supervisor.run import Run


class Restart:
    """What `Runs` does with the simulations it loads after a restart.

    Args:
        runs (supervisor.runs.Runs): queues, attaches, loses and ends the runs
    """

    def __init__(self, runs, users, drivers, files, catalog, ids, resources_, agents_):
        self._runs = runs
        self._users = users
        self._drivers = drivers
        self._files = files
        self._catalog = catalog
        self._ids = ids
        self._resources = resources_
        self._agents = agents_

    def recover(self, sims):
        """Requeue queued runs, mark on-agent runs lost, restart gone agents."""
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
        self._agents_gone()

    def _recover(self, s):
        j = s.job
        u = self._users.get(s.user)
        d = self._drivers.get(j.driver)
        a = recovery.on_restart(s, d is not None, u is not None)
        plan = self._users.plan_of(s.user)
        if a == recovery.REQUEUE:
            i = self._files.run_inputs_of(
                u,
                s,
                self._catalog.get(s.code),
                self._files.uploads_now(s),
            )
            # a new run id: the agent may hold a run op sent under the old one
            s.job.run_id = self._ids.next()
            self._runs.queue(s, plan, d, i)
            self._runs.changed(s)
        elif a == recovery.LOST:
            r = Run(s, j.run_id, plan.max_run_secs)
            r.grant = self._resources.adopt(s.user, j.host, j.cores)
            self._runs.attach(r)
            if j.status != job.LOST:
                j.transition(job.LOST)
            self._runs.wait_lost(
                r, "supervisor restarted: waiting for the agent", j.host
            )
        else:
            j.end(job.ERROR, time.time(), error=a)
            self._runs.changed(s)

    def _agents_gone(self):
        """Agents whose process is gone are not waited for.

        One that runs wait for (lost) is as if it had just died holding
        them: it is started again to re-attach them. One that none wait for
        is stopped, and what it left ends (a run sent to it that the store
        had not yet recorded is queued again); a run queued for its user
        starts a new agent at once.
        """
        waiting = {}
        for r in self._runs.active.values():
            if r.agent is None and r.sim.job.status == job.LOST and r.sim.agent_id:
                waiting.setdefault(r.sim.agent_id, []).append(r)
        for a in self._agents.all():
            if a.state != agent_state.DISCONNECTED:
                continue
            d = self._drivers[a.driver]
            rs = waiting.get(a.id, [])
            if rs and d.agent_restarts:
                # what it holds decides its restart, now or when it dies
                # before its hello (other drivers learn it at the hello)
                self._agents.load_changed(
                    a,
                    [r.run_id for r in rs],
                    sum(r.grant.cores for r in rs if r.grant),
                )
            m = d.process_gone(a)
            if m is not None:
                pkdlog("{} gone at restart, runs={}: {}", a, len(rs), m)
                self._agents.agent_exited(a, m, dead=True, crashed=True)
