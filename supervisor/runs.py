"""Runs: from a run request to the run's end, and what agents report.

A run request returns at once; the job's own task dispatches `_start`, whose
prerequisites (turn, user limit, cores, a connected agent) are checked in that
order, synchronously, each raising `Awaited` when not ready. Then it commits
(cores, status `starting`, the op to the agent) and does its one edge await:
the agent's `started`. From then on, the agent's messages drive the run; each
applies only if it names the job's current run id.

A `Run` owns what the run holds (its queue entry, cores, timers, its task);
`Run.destroy` gives everything back and is idempotent, so cancel, supersede,
timeouts and agent loss all end the same way, in `_end`.
"""

import asyncio
import json
import time

from pykern.pkdebug import pkdexc, pkdlog

from supervisor import agents, errors, job, resources, tasks
from supervisor.dispatch import dispatch

#: queue positions are pushed at most this often
_POSITIONS_DELAY_SECS = 0.05


class Run:
    """The current run of one simulation, while its job is active."""

    def __init__(self, sim, run_id, max_run_secs, request=None):
        self.sim = sim
        self.run_id = run_id
        self.max_run_secs = max_run_secs
        self.request = request
        self.grant = None
        self.agent = None
        self.task = None
        self.started = asyncio.get_running_loop().create_future()
        # deadlines: the agent confirms the start, the max run time, the
        # grace of a lost run; each replaced or canceled on its own
        self.start_timer = None
        self.max_timer = None
        self.grace_timer = None
        # (status, error) a cancel asked for, applied when the agent confirms
        self.end_as = None
        self.inputs = {}
        self.destroyed = False

    def destroy(self, resources_):
        if self.destroyed:
            return
        self.destroyed = True
        if self.request is not None:
            resources_.remove(self.request)
        if self.grant is not None:
            self.grant.destroy()
        for t in (self.start_timer, self.max_timer, self.grace_timer):
            if t is not None:
                t.cancel()
        if not self.started.done():
            self.started.set_result(None)
        if self.task is not None and self.task is not asyncio.current_task():
            self.task.cancel()

    def pkdebug_str(self):
        return f"Run({self.run_id} sim={self.sim.id})"


class Runs:
    def __init__(self, sv):
        self._sv = sv
        self._cfg = sv.cfg
        # run_id -> Run, for every active run
        self.active = {}
        self._tasks = tasks.Tasks("runs")
        self._positions_pending = False
        self.restarts = 0
        # kind -> handler of an agent message about a run; built once
        self.on_agent_message = _table(
            started=self._started,
            batch_state=self._batch_state,
            progress=self._progress,
            frame=self._frame,
            log=self._log,
            exited=self._exited,
        )

    # --- requests ------------------------------------------------------------

    async def run(self, user, sim, cores=None, driver=None):
        """Queue a new run of `sim`, superseding (canceling) the current one.

        The old run is canceled first and confirmed gone, so the two never
        share the run directory; then everything is checked again.
        """
        while True:
            # bad input must not cancel anything: check it all first
            code, _, _ = self._check_request(user, sim, cores, driver)
            u = await asyncio.to_thread(read_uploads, self._sv.inputs_dir(sim))
            i = self.inputs(user, sim, code, u)
            if sim.deleted:
                raise errors.NotFound("unknown_simulation", f"no simulation {sim.id}")
            if sim.run is None:
                break
            await self.cancel(sim, error="superseded by a newer run")
        await self.request_run(user, sim, cores, driver, i)

    def _check_request(self, user, sim, cores, driver):
        """Validate a run request; returns (code, plan, driver)."""
        sv = self._sv
        code = sv.catalog.get(sim.code)
        plan = sv.plans[user.plan]
        driver = driver or self._cfg.default_driver
        d = sv.drivers.get(driver) if isinstance(driver, str) else None
        if d is None:
            raise errors.BadInput("unknown_driver", f"there is no driver {driver!r}")
        cores = 1 if cores is None else cores
        m = min(code.max_cores, plan.max_cores)
        if not isinstance(cores, int) or isinstance(cores, bool) or not 1 <= cores <= m:
            raise errors.BadInput(
                "bad_cores", f"cores must be an integer from 1 to {m} for {code.name}"
            )
        return code, plan, d

    def request_run(self, user, sim, cores, driver, inputs):
        """Queue a new run of `sim` (none active); returns the durable future."""
        assert sim.run is None
        sv = self._sv
        code, plan, d = self._check_request(user, sim, cores, driver)
        cores = 1 if cores is None else cores
        driver = d.name
        sv.sims.new_run(sim)
        sim.job.queue(sv.run_ids.next(), cores, driver, code.kind, time.time())
        self.queue(sim, plan, d, inputs)
        return self.changed(sim)

    def queue(self, sim, plan, driver, inputs):
        """Start the dispatch of the job's (queued) run."""
        j = sim.job
        lane = resources.ANALYSIS if j.kind == "analysis" else resources.RUN
        # hosts where the user has an agent first: reuse beats a new one
        h = self._sv.agents.hosts_of(sim.user, driver.name)
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
        )
        r.inputs = inputs
        sim.run = r
        self.active[r.run_id] = r
        self._sv.resources.add(r.request)
        r.task = self._tasks.spawn(self._run_task(r))

    def inputs(self, user, sim, code, uploads):
        """Input files for the run op: uploads and analysis sources."""
        res = dict(uploads)
        for p in code.params:
            if p["type"] == "simulation":
                src = self._sv.sims.get(user, sim.params.get(p["name"]))
                res["source_frames.jsonl"] = "".join(
                    json.dumps(f, separators=(",", ":")) + "\n" for f in src.frames
                )
        n = sum(len(v) for v in res.values())
        if n > self._cfg.max_inputs_chars:
            raise errors.TooLarge(
                "inputs_too_large",
                f"inputs of {n} characters exceed the limit of {self._cfg.max_inputs_chars}",
            )
        return res

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
            sim.job.situation = "canceling"
            self._publish_job(sim)
            i, f = self._sv.agents.new_op(a)
            a.send("cancel", op_id=i, run_id=r.run_id)
            try:
                # the agent reports exited (canceled), then replies
                await asyncio.wait_for(asyncio.shield(f), self._cfg.cancel_timeout_secs)
            except (asyncio.TimeoutError, agents.AgentGone, RuntimeError) as e:
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
        sv = self._sv
        sim = run.sim
        # 1. prerequisites, in order; each passes or raises Awaited
        if run.destroyed or sim.run is not run:
            return
        t = sv.resources.check(run.request)
        a = sv.agents.check_ready(sim.user, sim.job.driver, t.name)
        # 2. commit, synchronously
        run.grant = sv.resources.commit(run.request, t)
        run.request = None
        run.agent = a
        a.runs[run.run_id] = run
        sv.agents.check_idle(a)
        sim.agent_id = a.id
        sim.job.transition(job.STARTING)
        sim.job.host = t.name
        sim.job.situation = "starting"
        sim.job.queue_position = None
        c = sv.catalog.get(sim.code)
        d = sv.drivers[sim.job.driver]
        b = (
            d.batch_options(t.name, c, sv.plan_of(sim.user))
            if hasattr(d, "batch_options")
            else None
        )
        a.send(
            "analysis" if c.kind == "analysis" else "run",
            **({"batch": b} if b is not None else {}),
            op_id=0,
            run_id=run.run_id,
            code=c.name,
            argv=c.command,
            params=sim.params,
            run_dir=sim.id,
            cores=sim.job.cores,
            max_run_secs=run.max_run_secs,
            inputs=run.inputs,
        )
        run.start_timer = asyncio.get_running_loop().call_later(
            self._cfg.agent_start_timeout_secs, self._start_expired, run
        )
        self.changed(sim)
        # 3. the one edge await; the agent's messages do the rest
        await run.started

    def _start_expired(self, run):
        if not run.destroyed and run.sim.job.status == job.STARTING:
            self.end(
                run,
                job.ERROR,
                error=f"the agent did not start the run within {self._cfg.agent_start_timeout_secs} s",
            )

    def _on_wait(self, run, situation):
        self.restarts += 1
        j = run.sim.job
        if j.situation != situation:
            j.situation = situation
            self._publish_job(run.sim)

    def positions_changed(self):
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
        for req, p in self._sv.resources.positions().items():
            r = self.active.get(self._sv.sims.by_id[req.key].job.run_id)
            if r and r.sim.job.queue_position != p:
                r.sim.job.queue_position = p
                self._publish_job(r.sim)

    # --- agent messages ------------------------------------------------------

    def _current(self, agent, msg):
        r = self.active.get(msg["run_id"])
        if r is None or r.destroyed or r.agent is not agent:
            return None
        return r

    def _started(self, agent, msg):
        r = self._current(agent, msg)
        if r is None or r.sim.job.status != job.STARTING:
            return
        self.running(r)
        self.changed(r.sim)

    def _batch_state(self, agent, msg):
        r = self._current(agent, msg)
        if r is None:
            return
        j = r.sim.job
        b = {k: msg[k] for k in ("job_id", "state", "reason")}
        if j.batch == b:
            return
        j.batch = b
        if j.status == job.RUNNING:
            j.situation = _batch_situation(b)
            if b["state"] == "RUNNING" and r.max_timer is None:
                self._arm_max_timer(r)
        self.changed(r.sim)

    def _progress(self, agent, msg):
        r = self._current(agent, msg)
        if r is not None:
            r.sim.job.progress = msg["progress"]
            self._publish_job(r.sim)

    def _frame(self, agent, msg):
        r = self._current(agent, msg)
        if r is not None and self._sv.sims.add_frame(r.sim, msg["seq"], msg["data"]):
            self._publish(
                r.sim,
                {
                    "type": "frame",
                    "simulation": r.sim.id,
                    "seq": msg["seq"],
                    "frame": msg["data"],
                },
            )

    def _log(self, agent, msg):
        r = self._current(agent, msg)
        if r is None:
            return
        t = self._sv.sims.add_log(r.sim, msg["offset"], msg["text"])
        if t:
            self._publish(
                r.sim,
                {
                    "type": "log",
                    "simulation": r.sim.id,
                    "offset": r.sim.log_chars - len(t),
                    "text": t,
                },
            )

    def _exited(self, agent, msg):
        r = self._current(agent, msg)
        if r is None:
            # not ours any more: the agent may drop it
            agent.send("forget", run_id=msg["run_id"])
            return
        st, e = msg["status"], msg["error"]
        if st == job.CANCELED and r.end_as:
            st, e = r.end_as
        f = self.end(r, st, exit_code=msg["exit_code"], error=e, from_agent=True)
        # the agent keeps the run until its end is durable here
        f.add_done_callback(lambda _: agent.send("forget", run_id=msg["run_id"]))

    # --- ends ----------------------------------------------------------------

    def end(self, run, status, exit_code=None, error=None, from_agent=False):
        """End `run` with `status`; returns the future of the durable record.

        Unless the agent itself reported the end, a connected agent is told to
        kill the run (a disconnected one does when it returns: the run is not
        adopted).
        """
        sim = run.sim
        if sim.run is not run:
            f = asyncio.get_running_loop().create_future()
            f.set_result(None)
            return f
        a = run.agent
        if not from_agent and sim.job.status in job.ON_AGENT and a and a.is_ready():
            # op 0: nobody waits for this reply
            a.send("cancel", op_id=0, run_id=run.run_id)
        sim.run = None
        self.active.pop(run.run_id, None)
        if sim.job.status == job.QUEUED and status not in (job.CANCELED, job.ERROR):
            status = job.ERROR
        sim.job.end(status, time.time(), exit_code, error)
        self._sv.sims.end_run(sim)
        a = run.agent
        run.destroy(self._sv.resources)
        if a is not None:
            a.runs.pop(run.run_id, None)
            self._sv.agents.check_idle(a)
        pkdlog("{} ended status={} error={}", run, status, error)
        return self.changed(sim)

    def running(self, run):
        """STARTING or LOST -> RUNNING: the agent has the process."""
        j = run.sim.job
        j.transition(job.RUNNING)
        j.situation = _batch_situation(j.batch) if j.batch else ""
        for t in (run.start_timer, run.grace_timer, run.max_timer):
            if t is not None:
                t.cancel()
        run.start_timer = run.grace_timer = run.max_timer = None
        # a batch job's max run time counts from when the scheduler runs it
        if not getattr(self._sv.drivers.get(j.driver), "batch", False) or (
            j.batch and j.batch["state"] == "RUNNING"
        ):
            self._arm_max_timer(run)
        if not run.started.done():
            run.started.set_result(None)

    def _arm_max_timer(self, run):
        j = run.sim.job
        if not j.started_at:
            j.started_at = time.time()
        if run.max_timer is not None:
            run.max_timer.cancel()
        s = (
            run.max_run_secs
            + self._cfg.max_run_slack_secs
            - (time.time() - j.started_at)
        )
        run.max_timer = asyncio.get_running_loop().call_later(
            max(0, s), self._max_run_expired, run
        )

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

    # --- publishing and persistence ------------------------------------------

    def changed(self, sim):
        self._publish_job(sim)
        if sim.deleted:
            f = asyncio.get_running_loop().create_future()
            f.set_result(None)
            return f
        return self._sv.sims.save(sim)

    def _publish_job(self, sim):
        self._publish(
            sim, {"type": "job", "simulation": sim.id, "job": sim.job.to_dict()}
        )

    def _publish(self, sim, msg):
        self._sv.hub.publish(sim.user, sim.id, msg)

    async def destroy(self):
        await self._tasks.destroy()


def read_uploads(path):
    """The uploaded input files of a simulation (blocking: use a thread)."""
    if not path.exists():
        return {}
    return {f.name: f.read_text() for f in sorted(path.iterdir())}


def _batch_situation(batch):
    """What the scheduler says of a batch job, for people."""
    r = f" ({batch['reason']})" if batch.get("reason") else ""
    return f"Slurm job {batch['job_id']}: {batch['state']}{r}"


def _table(**handlers):
    return dict(handlers)
