"""Runs: from a run request to the run's end; the one owner of the run lifecycle.

A run request returns at once; the job's own task dispatches `_start`, whose
prerequisites (turn, user limit, cores, a connected agent) are checked in that
order, synchronously, each raising `Awaited` when not ready. Then it commits
(cores, status `starting`, the op to the agent) and does its one edge await:
the agent's `started`. From then on, the agent's messages (`reports`) drive
the run; each applies only if it names the job's current run id.

`Runs` alone sets a simulation's current run (``sim.run``), the active runs
and each agent's run set, and tells `Agents` an agent's load. Agents coming
and going reach it as a `agents.Watcher`; what becomes of their runs is the
policy of `recovery`. The runs loaded after a restart are taken up again by
`restart`.
"""

import asyncio
import time

from pykern.pkdebug import pkdexc, pkdlog

from supervisor import agents, errors, job, recovery, reports, resources, restart
from supervisor import staging, tasks
from supervisor.dispatch import dispatch
from supervisor.run import Run

#: queue positions are pushed at most this often
_POSITIONS_DELAY_SECS = 0.05


class Runs(agents.Watcher):
    def __init__(
        self, cfg, catalog, users, drivers, resources_, agents_, sims, files, hub, ids
    ):
        self._cfg = cfg
        self._catalog = catalog
        self._users = users
        self._drivers = drivers
        self._resources = resources_
        self._agents = agents_
        self._sims = sims
        self._files = files
        self._hub = hub
        self._ids = ids
        # run_id -> Run, for every active run
        self.active = {}
        # agent id -> {run_id: Run}: what each agent holds
        self._held = {}
        self._tasks = tasks.Tasks("runs")
        self._positions_pending = False
        self._sweep_job = self._array_of = lambda sim: None
        self.restarts = 0
        #: what agents report about runs (`reports.Reports.handlers`)
        self.reports = reports.Reports(self, sims)
        #: library files sent to agents that fetch them (`staging`)
        self.staging_files = staging.Staging(
            self, agents_, files.library, catalog, self._tasks
        )
        assert not set(self.reports.handlers) & set(self.staging_files.handlers)
        self.reports.handlers.update(self.staging_files.handlers)
        self._restart = restart.Restart(
            self, users, drivers, files, catalog, ids, resources_, agents_
        )
        resources_.watch(self._positions_changed)
        agents_.watch(self)

    # --- requests ------------------------------------------------------------

    async def run(self, user, sim, cores=None, driver=None):
        """Queue a new run of `sim`, superseding (canceling) the current one.

        The old run is canceled first and confirmed gone, so the two never
        share the run directory; then everything is checked again.
        """
        while True:
            # bad input must not cancel anything: check it all first
            code, _, _ = self.check_request(user, sim.code, cores, driver)
            i = await self._files.run_inputs(user, sim, code)
            if sim.deleted:
                raise errors.NotFound("unknown_simulation", f"no simulation {sim.id}")
            if sim.run is None:
                break
            await self.cancel(sim, error="superseded by a newer run")
        code, plan, d = self.check_request(user, sim.code, cores, driver)
        self._sims.new_run(sim)
        sim.job.queue(self._ids.next(), cores or 1, d.name, code.kind, time.time())
        self.queue(sim, plan, d, i)
        await self.changed(sim)
        return sim.job

    def check_request(self, user, code_name, cores, driver):
        """Validate a run request; returns (code, plan, driver)."""
        code = self._catalog.get(code_name)
        plan = self._users.plan_of(user.name)
        driver = driver or self._cfg.default_driver
        d = self._drivers.get(driver) if isinstance(driver, str) else None
        if d is None:
            raise errors.BadInput("unknown_driver", f"there is no driver {driver!r}")
        cores = 1 if cores is None else cores
        m = min(code.max_cores, plan.max_cores)
        if not isinstance(cores, int) or isinstance(cores, bool) or not 1 <= cores <= m:
            raise errors.BadInput(
                "bad_cores", f"cores must be an integer from 1 to {m} for {code.name}"
            )
        return code, plan, d

    def queue(self, sim, plan, driver, inputs):
        """Start the dispatch of the job's (queued) run."""
        j = sim.job
        lane = resources.ANALYSIS if j.kind == "analysis" else resources.RUN
        # hosts where the user has an agent first: reuse beats a new one
        h = self._agents.hosts_of(sim.user, driver.name)
        r = Run(
            sim,
            j.run_id,
            plan.max_run_secs,
            resources.Request(
                sim.id,
                sim.user,
                plan,
                j.cores,
                sorted((t.name for t in driver.targets()), key=lambda n: n not in h),
                lane,
            ),
            inputs,
        )
        self.attach(r)
        self._resources.add(r.request)
        r.task = self._tasks.spawn(self._run_task(r))

    async def cancel(self, sim, status=job.CANCELED, error=None, run=None):
        """End the current run (if `run`: only that one); idempotent.

        Waits for the agent's confirmation that the process group is gone.
        """
        r = sim.run
        if r is None or (run is not None and r is not run):
            return
        a = r.agent
        if sim.job.status in (job.STARTING, job.RUNNING) and a and a.is_ready():
            # the agent's exited (canceled) then ends it with our reason
            r.end_as = (status, error)
            i, f = self._agents.new_op(a)
            # the agent first: the stop is what the user waits for
            self._agents.send(a, "cancel", op_id=i, run_id=r.run_id)
            sim.job.situation = "canceling"
            sim.job.canceling = True
            self.publish_job(sim)
            try:
                # the agent reports exited (canceled), then replies: the
                # exited is the confirmation (the tree is gone), the reply
                # only says more when there is no exited (a refusal)
                await _first(f, r.ended, self._cfg.cancel_timeout_secs)
            except (TimeoutError, agents.AgentGone, agents.OpFailed) as e:
                pkdlog("{} cancel not confirmed error={}", r, e)
        # a queued run, a lost one (its agent kills it when it reconnects: the
        # run is not adopted), or one the agent did not confirm in time
        await self.end(r, status, error=error)

    # --- the dispatch handler ----------------------------------------------

    async def _run_task(self, run):
        try:
            await dispatch(self._start, run, self._on_wait)
        except agents.AgentStartFailed as e:
            self.end(run, job.ERROR, error=str(e))
        except asyncio.CancelledError:
            raise
        except Exception as e:
            pkdlog("{} error={} stack={}", run, e, pkdexc())
            self.end(run, job.ERROR, error=f"internal error: {e}")

    async def _start(self, run):
        sim = run.sim
        # 1. prerequisites, in order; each passes or raises Awaited
        if run.destroyed or sim.run is not run:
            return
        t = self._resources.check(run.request)
        a = self._agents.check_ready(sim.user, sim.job.driver, t.name)
        # 2. commit, synchronously
        run.grant = self._resources.commit(run.request, t)
        run.request = None
        self._hold(run, a)
        sim.agent_id = a.id
        sim.job.transition(job.STARTING)
        sim.job.host = t.name
        sim.job.waiting("starting", None)
        sim.job.queue_position = None
        c = self._catalog.get(sim.code)
        p = self._users.plan_of(sim.user)
        b = self._drivers[sim.job.driver].batch_options(t.name, c, p)
        if b is not None and (x := self._array_of(sim)) is not None:
            b = dict(b, array=x)
        self._agents.send(
            a,
            "analysis" if c.kind == "analysis" else "run",
            **({"batch": b} if b is not None else {}),
            **c.adapter.op_fields(sim.params),
            op_id=0,
            run_id=run.run_id,
            code=c.name,
            argv=c.adapter.argv(c.command, sim.job.cores),
            params=sim.params,
            run_dir=sim.id,
            cores=sim.job.cores,
            max_run_secs=run.max_run_secs,
            inputs=run.inputs,
            **self._files.run_fields(sim, c, p),
        )
        run.arm_start(self._cfg.agent_start_timeout_secs, self._start_expired)
        self.changed(sim)
        # 3. the one edge await; the agent's messages do the rest
        await run.started

    def staging(self, run, wait):
        """The agent fetches a library file for `run`: its start waits on."""
        run.arm_start(self._cfg.agent_start_timeout_secs, self._start_expired)
        s = f"staging {wait['file']}: {wait['done']} of {wait['total']} bytes"
        if run.sim.job.waiting(s, dict(wait, reason="staging")):
            self.publish_job(run.sim)

    def _start_expired(self, run):
        if not run.destroyed and run.sim.job.status == job.STARTING:
            self.end(
                run,
                job.ERROR,
                error=f"the agent did not start the run within {self._cfg.agent_start_timeout_secs} s",
            )

    def _on_wait(self, run, awaited):
        self.restarts += 1
        if run.sim.job.waiting(awaited.situation, awaited.wait):
            self.publish_job(run.sim)

    def _positions_changed(self):
        """Resources changed: publish queue positions, batched.

        Each start moves every queued run up one, so a burst of starts would
        push n positions n times; a short delay sends only the latest.
        """
        if not self._positions_pending:
            self._positions_pending = True
            asyncio.get_running_loop().call_later(
                _POSITIONS_DELAY_SECS, self._publish_positions
            )

    def _publish_positions(self):
        self._positions_pending = False
        for req, p in self._resources.positions().items():
            s = self._sims.by_id.get(req.key)
            r = self.active.get(s.job.run_id) if s else None
            if r and r.sim.job.queue_position != p:
                r.sim.job.queue_position = p
                self.publish_job(r.sim)

    # --- ownership: sim.run, the active runs, each agent's run set -----------

    def attach(self, run):
        run.sim.run = run
        self.active[run.run_id] = run

    def _hold(self, run, agent):
        """`agent` holds `run` now (and no other agent does)."""
        if run.agent is not None and run.agent is not agent:
            self._release(run)
        run.agent = agent
        self._held.setdefault(agent.id, {})[run.run_id] = run
        self._load_changed(agent)

    def _release(self, run):
        a = run.agent
        h = self._held.get(a.id)
        if h is not None:
            h.pop(run.run_id, None)
            if not h:
                del self._held[a.id]
        self._load_changed(a)

    def _load_changed(self, agent):
        h = self._held.get(agent.id, {})
        self._agents.load_changed(
            agent, list(h), sum(r.grant.cores for r in h.values() if r.grant)
        )

    def held(self, agent):
        """The runs `agent` holds."""
        return list(self._held.get(agent.id, {}).values())

    def forget(self, agent, run_id):
        """Tell `agent` it may drop `run_id` (its end is durable here)."""
        self._agents.send(agent, "forget", run_id=run_id)

    def current(self, agent, run_id):
        """The active run `run_id` if `agent` holds it, else None."""
        r = self.active.get(run_id)
        if r is None or r.destroyed or r.agent is not agent:
            return None
        return r

    # --- ends ----------------------------------------------------------------

    def end(
        self, run, status, exit_code=None, error=None, from_agent=False, result=None
    ):
        """End `run` with `status`; returns the future of the durable record.

        `result`: what the agent said the run reports (`agent.results`).

        Unless the agent itself reported the end, a connected agent is told to
        kill the run (a disconnected one does when it returns: the run is not
        adopted).
        """
        sim = run.sim
        if sim.run is not run:
            return _done()
        a = run.agent
        if not from_agent and sim.job.status in job.ON_AGENT and a and a.is_ready():
            # op 0: nobody waits for this reply
            self._agents.send(a, "cancel", op_id=0, run_id=run.run_id)
        sim.run = None
        self.active.pop(run.run_id, None)
        if sim.job.status == job.QUEUED and status not in (job.CANCELED, job.ERROR):
            status = job.ERROR
        # a run that did not complete has no result (a canceled one's last
        # report is partial: a sweep's table and plot would take it as final)
        r = result if status == job.COMPLETED else None
        sim.job.end(status, time.time(), exit_code, error, result=r)
        self._sims.end_run(sim)
        run.destroy(self._resources)
        if a is not None:
            self._release(run)
        pkdlog("{} ended status={} error={}", run, status, error)
        return self.changed(sim)

    def running(self, run):
        """STARTING or LOST -> RUNNING: the agent has the process."""
        j = run.sim.job
        j.transition(job.RUNNING)
        j.waiting(reports.batch_situation(j.batch) if j.batch else "", None)
        run.running()
        # a batch job's max run time counts from when the scheduler runs it
        if not self._drivers[j.driver].batch or (
            j.batch and j.batch["state"] == "RUNNING"
        ):
            self.arm_max_run(run)

    def arm_max_run(self, run):
        run.arm_max_run(self._cfg.max_run_slack_secs, self._max_run_expired)

    def _max_run_expired(self, run):
        # the agent should have ended it already; make sure
        if not run.destroyed:
            self._tasks.spawn(
                self.cancel(
                    run.sim,
                    job.TIMED_OUT,
                    error=f"exceeded the max run time of {run.max_run_secs} s",
                    run=run,
                )
            )

    # --- agents that come and go (recovery policy applied) ------------------

    def agent_ready(self, agent, hello):
        """An agent said hello: adopt the runs it holds; returns welcome's map."""
        res = {}
        adopt, orphans = recovery.on_hello(
            list(self.active.values()), {h["run_id"] for h in hello["runs"]}, agent
        )
        for r in adopt:
            self._hold(r, agent)
            if r.sim.job.status != job.RUNNING:
                self.running(r)
            self.changed(r.sim)
            res[r.run_id] = {
                "frames_next": r.sim.job.frames,
                "log_next": r.sim.log_chars,
            }
        for r in orphans:
            self.end(r, job.ERROR, error=f"agent {agent.id} restarted without this run")
        # what a restart said it waits for (`restart`) is what it holds now
        self._load_changed(agent)
        return res

    def _waiting_for(self, agent):
        """The runs `agent` holds and, after a restart, those awaiting its hello."""
        return self.held(agent) + [
            r
            for r in self.active.values()
            if r.agent is None
            and r.sim.agent_id == agent.id
            and r.sim.job.status in job.ON_AGENT
        ]

    def agent_lost(self, agent):
        """The agent's connection closed: its runs are lost until it returns."""
        for r in self.held(agent):
            j = r.sim.job
            if recovery.on_lost(j.status):
                j.transition(job.LOST)
                self.wait_lost(r, "agent disconnected", agent.host)

    def agent_restarting(self, agent, reason):
        """The agent died holding runs; a new one re-attaches them (or they end)."""
        for r in self._waiting_for(agent):
            j = r.sim.job
            if recovery.on_lost(j.status):
                j.transition(job.LOST)
            if j.status == job.LOST:
                # the restart decides (its hello, or its failure ends the
                # run): the grace is only a backstop
                g = self._grace_secs(r) + self._cfg.agent_start_timeout_secs
                self.wait_lost(r, recovery.RESTARTING, agent.host, "agent_restart", g)

    def wait_lost(self, run, situation, host, reason="agent_lost", grace_secs=None):
        run.sim.job.waiting(situation, {"reason": reason, "host": host})
        run.arm_grace(grace_secs or self._grace_secs(run), self._grace_expired)
        self.changed(run.sim)

    def _grace_secs(self, run):
        # a driver no longer configured: its runs still get the global grace
        d = self._drivers.get(run.sim.job.driver)
        return d.lost_grace_secs if d else self._cfg.lost_grace_secs

    def _grace_expired(self, run):
        if not run.destroyed and run.sim.job.status == job.LOST:
            self.end(
                run,
                job.ERROR,
                error=f"lost: its agent did not return within {self._grace_secs(run)} s",
            )

    def agent_stopped(self, agent, reason, dead):
        """The agent is gone for good (killed, reaped, never started)."""
        for r in self._waiting_for(agent):
            e = recovery.on_stopped(r.sim.job.status, reason, dead)
            if e is not None:
                self.end(r, e[0], error=e[1])

    # --- restart -------------------------------------------------------------

    def recover(self, sims):
        """After a restart: requeue queued runs, mark on-agent runs lost (`restart`)."""
        sims = list(sims)
        # pushes of a run after the loaded one are a new run's (`events._kind`)
        self._hub.know_runs((s.id, s.job.run_id) for s in sims if s.job.run_id)
        self._restart.recover(sims)

    # --- publishing and persistence ------------------------------------------

    def changed(self, sim):
        """Push the job and write the simulation; returns the durable future."""
        self.publish_job(sim)
        if sim.deleted:
            return _done()
        return self._sims.save(sim)

    def publish_job(self, sim):
        self.publish(
            sim, {"type": "job", "simulation": sim.id, "job": sim.job.to_dict()}
        )
        if sim.sweep is not None:
            self._sweep_job(sim)

    def watch_jobs(self, on_member, array_of):
        """Call ``on_member(sim)`` on each change of a sweep member's job;
        ``array_of(sim)`` is a member's job array (`agent.slurm_array`) on a
        batch driver, or None."""
        self._sweep_job, self._array_of = on_member, array_of

    def is_batch(self, driver):
        """Do runs of `driver` wait in a scheduler's queue (a job array)?"""
        return driver in self._drivers and self._drivers[driver].batch

    def publish(self, sim, msg):
        self._hub.publish(sim.user, sim.id, msg)

    async def destroy(self):
        await self._tasks.destroy()


async def _first(reply, ended, timeout_secs):
    """Until `ended` or `reply` (whose error is raised), at most `timeout_secs`."""
    # the reply that comes after the end is not waited for: seen, not logged
    reply.add_done_callback(lambda f: f.cancelled() or f.exception())
    done, _ = await asyncio.wait(
        (reply, ended), timeout=timeout_secs, return_when=asyncio.FIRST_COMPLETED
    )
    if ended in done:
        return
    if not done:
        raise TimeoutError(f"no reply within {timeout_secs} s")
    reply.result()


def _done():
    f = asyncio.get_running_loop().create_future()
    f.set_result(None)
    return f
