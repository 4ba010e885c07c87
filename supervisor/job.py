"""A simulation's compute state: statuses, the transition table, run history.

Pure: no I/O, no awaits. The supervisor changes a `Job` only through
`Job.transition`, which refuses what the table does not allow, so an illegal
transition is a bug the tests catch rather than a corrupt document.
"""

import itertools
import time

MISSING = "missing"
QUEUED = "queued"
STARTING = "starting"
RUNNING = "running"
COMPLETED = "completed"
ERROR = "error"
CANCELED = "canceled"
TIMED_OUT = "timed_out"
LOST = "lost"

#: a run in one of these holds (or waits for) resources
ACTIVE = frozenset((QUEUED, STARTING, RUNNING, LOST))
#: a run in one of these has an agent-side process (or may have)
ON_AGENT = frozenset((STARTING, RUNNING, LOST))
ENDED = frozenset((COMPLETED, ERROR, CANCELED, TIMED_OUT))
STATUSES = frozenset((MISSING,)) | ACTIVE | ENDED

#: from -> allowed next statuses
TRANSITIONS = {
    # or never run: a sweep's member canceled, or refused, before its turn
    MISSING: {QUEUED, CANCELED, ERROR},
    QUEUED: {STARTING, CANCELED, ERROR},
    # back to QUEUED: the agent vanished before it confirmed the start, so the
    # run is retried under a new run id (the old one is never adopted)
    STARTING: {QUEUED, RUNNING, COMPLETED, ERROR, CANCELED, TIMED_OUT, LOST},
    RUNNING: {COMPLETED, ERROR, CANCELED, TIMED_OUT, LOST},
    LOST: {RUNNING, COMPLETED, ERROR, CANCELED, TIMED_OUT},
    COMPLETED: {QUEUED},
    ERROR: {QUEUED},
    CANCELED: {QUEUED},
    TIMED_OUT: {QUEUED},
}

#: runs kept in a job's history
MAX_HISTORY = 20

#: serialized fields, in the order the API shows them
FIELDS = (
    "status",
    "run_id",
    "situation",
    "wait",
    "canceling",
    "queue_position",
    "batch",
    "progress",
    "cores",
    "driver",
    "host",
    "kind",
    "queued_at",
    "started_at",
    "ended_at",
    "exit_code",
    "error",
    "result",
    "frames",
    "history",
)


class IllegalTransition(AssertionError):
    """A transition the table does not allow: always a bug."""


class RunIds:
    """Unique, monotonic run ids: never a timestamp with 1 s resolution.

    The prefix is the start time in microseconds so ids from a restarted
    supervisor sort after the old ones; the suffix counts within the process.
    """

    def __init__(self, now_us=None):
        self._prefix = format(now_us or int(time.time() * 1e6), "x")
        self._counter = itertools.count(1)

    def next(self):
        return f"{self._prefix}-{next(self._counter):012x}"


class Job:
    """The compute state of one simulation."""

    def __init__(self, doc=None):
        d = doc or {}
        self.status = d.get("status", MISSING)
        if self.status not in STATUSES:
            raise ValueError(f"unknown status={self.status!r}")
        self.run_id = d.get("run_id")
        #: the situation in words, for people only
        self.situation = d.get("situation", "")
        #: why it waits, for programs: None, or {"reason": CODE, ...details}
        self.wait = d.get("wait")
        #: a cancel waits for the agent to confirm the process is gone; never
        #: true in a loaded document: the cancel did not survive the restart
        self.canceling = False
        self.queue_position = d.get("queue_position")
        #: a batch job's scheduler view: {job_id, state, reason} (sbatch)
        self.batch = d.get("batch")
        self.progress = d.get("progress", 0.0)
        self.cores = d.get("cores", 1)
        self.driver = d.get("driver")
        self.host = d.get("host")
        self.kind = d.get("kind", "run")
        self.queued_at = d.get("queued_at")
        self.started_at = d.get("started_at")
        self.ended_at = d.get("ended_at")
        self.exit_code = d.get("exit_code")
        self.error = d.get("error")
        #: what the run reported at its end: {name: number or None} (the
        #: code's catalog ``result``), None if it declares none or did not say
        self.result = d.get("result")
        self.frames = d.get("frames", 0)
        self.history = list(d.get("history", []))

    def is_active(self):
        return self.status in ACTIVE

    def queue(self, run_id, cores, driver, kind, now):
        """A new run: reset the per-run fields."""
        self.transition(QUEUED)
        self.run_id = run_id
        self.cores = cores
        self.driver = driver
        self.kind = kind
        self.host = None
        self.queued_at = now
        self.started_at = None
        self.ended_at = None
        self.exit_code = None
        self.error = None
        self.result = None
        self.progress = 0.0
        self.frames = 0
        self.situation = "queued"
        # until its dispatch has checked the prerequisites (a moment later)
        self.wait = {"reason": "queued"}
        self.canceling = False
        self.queue_position = None
        self.batch = None

    def end(self, status, now, exit_code=None, error=None, result=None):
        """The run ended; record it in the history.

        Args:
            result (dict): what the agent said the run reports (or None)
        """
        self.transition(status)
        self.ended_at = now
        self.exit_code = exit_code
        self.error = error
        self.result = result
        self.situation = ""
        self.wait = None
        self.canceling = False
        self.queue_position = None
        if status == COMPLETED:
            self.progress = 1.0
        self.history.insert(
            0,
            {
                "run_id": self.run_id,
                "status": status,
                "queued_at": self.queued_at,
                "started_at": self.started_at,
                "ended_at": now,
                "cores": self.cores,
                "driver": self.driver,
                "host": self.host,
                "exit_code": exit_code,
                "error": error,
                "result": result,
            },
        )
        del self.history[MAX_HISTORY:]

    def never_ran(self, status, now, error):
        """A sweep's member that will not run (canceled, or refused at its turn)."""
        self.transition(status)
        self.ended_at = now
        self.error = error
        self.situation = ""
        self.wait = None

    def waiting(self, situation, wait):
        """Say why the run waits: in words and as a reason code.

        Returns:
            bool: whether anything changed
        """
        if self.situation == situation and self.wait == wait:
            return False
        self.situation = situation
        self.wait = wait
        return True

    def transition(self, status):
        """Move to `status` or raise `IllegalTransition`."""
        if status not in TRANSITIONS.get(self.status, ()):
            raise IllegalTransition(
                f"run_id={self.run_id} {self.status} -> {status} not allowed"
            )
        self.status = status

    def to_dict(self):
        return {f: getattr(self, f) for f in FIELDS}

    def pkdebug_str(self):
        return f"Job(run_id={self.run_id} status={self.status})"
