"""What agents report about runs: started, scheduler state, progress, frames, log, exit.

Each message applies only if it names an active run that its agent holds
(`Runs.current`); anything else is about a run that is no longer current and
is ignored (an ``exited`` of one is answered ``forget``, so the agent may drop
it). Ends and starts go through `Runs`, which owns the run lifecycle; the
rest (progress, frames, log) is recorded in the simulation and pushed.
"""

from supervisor import job


class Reports:
    def __init__(self, runs, sims):
        self._runs = runs
        self._sims = sims
        #: kind -> handler(agent, msg); built once
        self.handlers = dict(
            started=self._started,
            batch_state=self._batch_state,
            progress=self._progress,
            frame=self._frame,
            log=self._log,
            exited=self._exited,
        )

    def _started(self, agent, msg):
        r = self._runs.current(agent, msg["run_id"])
        if r is None or r.sim.job.status != job.STARTING:
            return
        self._runs.running(r)
        self._runs.changed(r.sim)

    def _batch_state(self, agent, msg):
        r = self._runs.current(agent, msg["run_id"])
        if r is None:
            return
        j = r.sim.job
        b = {k: msg[k] for k in ("job_id", "state", "reason")}
        if j.batch == b:
            return
        j.batch = b
        if j.status == job.RUNNING:
            j.waiting(batch_situation(b), None)
            if b["state"] == "RUNNING" and not r.has_max_run():
                self._runs.arm_max_run(r)
        self._runs.changed(r.sim)

    def _progress(self, agent, msg):
        r = self._runs.current(agent, msg["run_id"])
        if r is not None:
            r.sim.job.progress = msg["progress"]
            self._runs.publish_job(r.sim)

    def _frame(self, agent, msg):
        r = self._runs.current(agent, msg["run_id"])
        if r is not None and self._sims.add_frame(r.sim, msg["seq"], msg["data"]):
            self._runs.publish(
                r.sim,
                {
                    "type": "frame",
                    "simulation": r.sim.id,
                    "seq": msg["seq"],
                    "frame": msg["data"],
                },
            )

    def _log(self, agent, msg):
        r = self._runs.current(agent, msg["run_id"])
        if r is None:
            return
        t = self._sims.add_log(r.sim, msg["offset"], msg["text"])
        if t:
            self._runs.publish(
                r.sim,
                {
                    "type": "log",
                    "simulation": r.sim.id,
                    "offset": r.sim.log_chars - len(t),
                    "text": t,
                },
            )

    def _exited(self, agent, msg):
        r = self._runs.current(agent, msg["run_id"])
        if r is None:
            # not ours any more: the agent may drop it
            self._runs.forget(agent, msg["run_id"])
            return
        st, e = msg["status"], msg["error"]
        if st == job.CANCELED and r.end_as:
            st, e = r.end_as
        f = self._runs.end(
            r,
            st,
            exit_code=msg["exit_code"],
            error=e,
            from_agent=True,
            result=msg.get("result"),
        )
        # the agent keeps the run until its end is durable here
        f.add_done_callback(lambda _: self._runs.forget(agent, msg["run_id"]))


def batch_situation(batch):
    """What the scheduler says of a batch job, for people."""
    r = f" ({batch['reason']})" if batch.get("reason") else ""
    return f"Slurm job {batch['job_id']}: {batch['state']}{r}"
