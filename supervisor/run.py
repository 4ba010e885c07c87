"""One run of a simulation while its job is active, and the deadlines it keeps.

A `Run` owns what the run holds: its queue entry (`resources.Request`), its
cores (`resources.Grant`), its dispatch task and its three deadlines (the
agent confirms the start, the max run time, the grace of a lost run), each a
timer armed and disarmed here. `Run.destroy` gives everything back and is
idempotent, so cancel, supersede, timeouts and agent loss all end the same
way. Only `Runs` creates runs and changes what they are attached to.
"""

import asyncio
import time


class Run:
    """The current run of one simulation, while its job is active."""

    def __init__(self, sim, run_id, max_run_secs, request=None, inputs=None):
        self.sim = sim
        self.run_id = run_id
        self.max_run_secs = max_run_secs
        self.request = request
        self.inputs = inputs or {}
        self.grant = None
        #: the agent that holds (or was sent) it; set by `Runs`
        self.agent = None
        self.task = None
        #: resolved when the agent has the process, or the run ended or was lost
        self.started = asyncio.get_running_loop().create_future()
        self._start_timer = None
        self._max_timer = None
        self._grace_timer = None
        # (status, error) a cancel asked for, applied when the agent confirms
        self.end_as = None
        self.destroyed = False
        #: resolved when the run has ended (`destroy`)
        self.ended = asyncio.get_running_loop().create_future()

    # --- deadlines -----------------------------------------------------------

    def arm_start(self, secs, on_expired):
        """The agent must confirm the start within `secs`: else ``on_expired(run)``."""
        self._start_timer = _rearm(self._start_timer, secs, on_expired, self)

    def arm_max_run(self, slack_secs, on_expired):
        """The max run time, counted from the job's start (set now if unset)."""
        j = self.sim.job
        if not j.started_at:
            j.started_at = time.time()
        s = self.max_run_secs + slack_secs - (time.time() - j.started_at)
        self._max_timer = _rearm(self._max_timer, max(0, s), on_expired, self)

    def has_max_run(self):
        return self._max_timer is not None

    def arm_grace(self, secs, on_expired):
        """Lost: its agent must return within `secs`. The start deadline is off."""
        self._start_timer = _cancel(self._start_timer)
        self._grace_timer = _rearm(self._grace_timer, secs, on_expired, self)
        self.release_start()

    def running(self):
        """The agent has the process: no start deadline, no grace, a new max."""
        self._start_timer = _cancel(self._start_timer)
        self._grace_timer = _cancel(self._grace_timer)
        self._max_timer = _cancel(self._max_timer)
        self.release_start()

    def release_start(self):
        """The dispatch task's edge await ends (started, lost or ended)."""
        if not self.started.done():
            self.started.set_result(None)

    def destroy(self, resources_):
        if self.destroyed:
            return
        self.destroyed = True
        if not self.ended.done():
            self.ended.set_result(None)
        if self.request is not None:
            resources_.remove(self.request)
            self.request = None
        if self.grant is not None:
            self.grant.destroy()
        self._start_timer = _cancel(self._start_timer)
        self._max_timer = _cancel(self._max_timer)
        self._grace_timer = _cancel(self._grace_timer)
        self.release_start()
        if self.task is not None and self.task is not asyncio.current_task():
            self.task.cancel()

    def pkdebug_str(self):
        return f"Run({self.run_id} sim={self.sim.id})"


def _cancel(timer):
    if timer is not None:
        timer.cancel()
    return None


def _rearm(timer, secs, fn, run):
    _cancel(timer)
    return asyncio.get_running_loop().call_later(secs, fn, run)
