"""What the sync and async clients share, as httpx's ``BaseClient`` serves both.

Pure: no I/O, no awaits. The errors, the few job statuses a client needs,
building requests and reading error bodies, `_RunWatch` (which pushed
messages tell of one run) and the one reconnect policy (`Reconnect`) with
the per-watch state that applies it (`_Watch`). The front ends
(`supervisor.client.sync`, `supervisor.client.aio`) only do the I/O.

Imports nothing of the server: the status names below are the API's
(``supervisor.job`` holds the same strings; a test checks they agree).
"""

import json
import time
import urllib.parse

COMPLETED = "completed"
ERROR = "error"
CANCELED = "canceled"
TIMED_OUT = "timed_out"

#: a run in one of these has ended
ENDED = frozenset((COMPLETED, ERROR, CANCELED, TIMED_OUT))

#: seconds a watch keeps trying to reconnect to a supervisor that went away
RECONNECT_SECS = 30.0

#: seconds a request may take, unless the client is given another limit
TIMEOUT_SECS = 30.0

#: characters of a non-JSON error body kept in `ApiError.message`
_MAX_ERROR_TEXT_CHARS = 500


class Error(Exception):
    """Base of the client's exceptions."""


class ApiError(Error):
    """The API refused a request: its HTTP status and JSON error body."""

    def __init__(self, status, code, message):
        super().__init__(f"{message} (HTTP {status} {code})")
        self.status = status
        self.code = code
        self.message = message


class RunFailed(Error):
    """The run ended ``error``, ``canceled`` or ``timed_out``; `job` says how."""

    def __init__(self, job_):
        e = job_.get("error")
        super().__init__(
            f"run {job_.get('run_id')} ended {job_.get('status')}"
            + (f": {e}" if e else "")
        )
        self.job = job_


class Reconnect:
    """When a watch reconnects after losing ``/api/events``, and when it gives up.

    Args:
        first_delay_secs (float): pause before the first new attempt; doubles
        max_delay_secs (float): longest pause between attempts
        give_up_secs (float): how long the supervisor may stay unreachable
    """

    def __init__(
        self, first_delay_secs=0.1, max_delay_secs=2.0, give_up_secs=RECONNECT_SECS
    ):
        self.first_delay_secs = first_delay_secs
        self.max_delay_secs = max_delay_secs
        self.give_up_secs = give_up_secs


class Request:
    """One HTTP request, built the same for both clients.

    Attributes:
        method (str): e.g. ``GET``
        url (str): absolute, with the query string
        headers (dict): authorization and content type
        body (bytes): JSON, or None
    """

    def __init__(self, method, url, headers, body):
        self.method = method
        self.url = url
        self.headers = headers
        self.body = body


class BaseClient:
    """Where the API is, who asks, and how its requests are built.

    Args:
        url (str): the supervisor, e.g. ``http://127.0.0.1:8000``
        token (str): API token
        timeout_secs (float): limit of one HTTP request
        reconnect (Reconnect): how watches ride out a restart (default: `Reconnect`)
    """

    def __init__(self, url, token, timeout_secs=TIMEOUT_SECS, reconnect=None):
        self.url = url.rstrip("/")
        self.timeout_secs = timeout_secs
        self.reconnect = reconnect or Reconnect()
        self._token = token

    def _build_request(self, method, path, body=None, query=None):
        q = urllib.parse.urlencode(
            {k: v for k, v in (query or {}).items() if v is not None}
        )
        if body is None and method in ("POST", "PATCH", "PUT"):
            body = {}
        return Request(
            method,
            f"{self.url}/api{path}" + (f"?{q}" if q else ""),
            {
                "Authorization": "Bearer " + self._token,
                "Content-Type": "application/json",
            },
            None if body is None else json.dumps(body).encode(),
        )

    def _events_request(self, simulation):
        u = "ws" + self.url[4:] if self.url.startswith("http") else self.url
        q = f"?simulation={quote(simulation)}" if simulation else ""
        return Request(
            "GET",
            f"{u}/api/events{q}",
            {"Authorization": "Bearer " + self._token},
            None,
        )


class BaseHandle:
    """One run of one simulation, like a `concurrent.futures.Future`.

    Attributes:
        id (str): the simulation
        run_id (str): the run, or None for "the current or next run" until
            `watch` or `result` sees one
    """

    def __init__(self, client, sim_id, run_id):
        self.id = sim_id
        self.run_id = run_id
        self._client = client

    def __repr__(self):
        return f"{type(self).__name__}(id={self.id} run_id={self.run_id})"

    def _ended(self, job_):
        w = _RunWatch(self.id, self.run_id)
        w.job(job_)
        return w.final is not None

    def _path(self, suffix=""):
        return sim_path(self.id, suffix)

    def _watch(self, timeout_secs):
        return _Watch(self, self._client.reconnect, timeout_secs)


def api_error(status, body, reason=None):
    """The `ApiError` of a refused request's `body` (bytes; JSON if the API's)."""
    try:
        b = json.loads(body)
        return ApiError(status, b["error"], b["message"])
    except (ValueError, TypeError, KeyError):
        t = body.decode(errors="replace").strip() if isinstance(body, bytes) else ""
        return ApiError(
            status,
            "http_error",
            t[:_MAX_ERROR_TEXT_CHARS] or reason or "request failed",
        )


def checked(status, body, reason=None):
    """`body` of a response, or raises its `ApiError` if `status` is an error."""
    if status >= 400:
        raise api_error(status, body, reason)
    return body


def create_body(code, params, name):
    b = {"code": code, "params": params or {}}
    if name is not None:
        b["name"] = name
    return b


def file_path(sim_id, path):
    return sim_path(sim_id, "/files/" + urllib.parse.quote(path))


def loads(text):
    """The value of JSON `text` (a response body or a pushed message); None stays None."""
    return None if text is None else json.loads(text)


def outcome(job_):
    """`job_` if its run completed; else raises `RunFailed`."""
    if job_["status"] != COMPLETED:
        raise RunFailed(job_)
    return job_


def quote(value):
    return urllib.parse.quote(str(value), safe="")


def run_body(cores, driver):
    return {k: v for k, v in (("cores", cores), ("driver", driver)) if v is not None}


def sim_path(sim_id, suffix=""):
    return f"/simulations/{quote(sim_id)}{suffix}"


def sweep_path(sweep_id, suffix=""):
    return f"/sweeps/{quote(sweep_id)}{suffix}"


def sweep_create_body(code, axes, params, combine, name, cores, driver, max_parallel):
    """The body of ``POST /api/sweeps``; what is None is left out (the API's default)."""
    b = {"code": code, "axes": axes}
    for k, v in (
        ("params", params),
        ("combine", combine),
        ("name", name),
        ("cores", cores),
        ("driver", driver),
        ("max_parallel", max_parallel),
    ):
        if v is not None:
            b[k] = v
    return b


def members_query(members):
    """The query of ``POST /api/sweeps/{id}/cancel``: all members, or those given."""
    if members is None:
        return None
    return {"members": ",".join(str(int(i)) for i in members)}


class _RunWatch:
    """Which pushed messages tell of one run, and whether it has ended.

    Pure. ``run_id=None`` means the simulation's current run, or its next if
    it has never run. A simulation's snapshot arrives first, so a run that
    ended before the connection opened is seen ended at once.
    """

    def __init__(self, sim_id, run_id):
        self.sim_id = sim_id
        self.run_id = run_id
        self.seen = False
        self.synced = False
        #: the job of the run's end, once it has ended
        self.final = None

    def reconnecting(self):
        """A new connection: a new snapshot follows."""
        self.seen = False
        self.synced = False

    def message(self, msg):
        """This run's job if `msg` tells of it, else None.

        Raises:
            ApiError: the simulation is deleted or not visible to the caller
        """
        t = msg.get("type")
        if t == "resync":
            # the server dropped what it had queued for us: a new snapshot
            # follows, as after a reconnect
            self.reconnecting()
        elif t == "synced":
            self.synced = True
            if not self.seen:
                raise ApiError(404, "not_found", f"no simulation {self.sim_id}")
        elif t == "simulation":
            s = msg["simulation"]
            if s.get("id") == self.sim_id:
                if s.get("deleted"):
                    raise ApiError(
                        404, "deleted", f"simulation {self.sim_id} was deleted"
                    )
                self.seen = True
                return self.job(s["job"])
        elif t == "job" and msg.get("simulation") == self.sim_id:
            return self.job(msg["job"])
        return None

    def job(self, job_):
        """This run's view of `job_` (a job dict), or None if not about it yet."""
        if self.run_id is None:
            if job_.get("run_id") is None:
                return None
            self.run_id = job_["run_id"]
        if job_.get("run_id") == self.run_id:
            if job_["status"] in ENDED:
                self.final = job_
            return job_
        # a newer run replaced this one, which therefore ended
        for h in job_.get("history") or ():
            if h.get("run_id") == self.run_id:
                self.final = dict(h)
                return self.final
        self.final = {
            "run_id": self.run_id,
            "status": CANCELED,
            "error": f"replaced by run {job_.get('run_id')}",
        }
        return self.final


class Backoff:
    """Reconnect state of one events stream: its deadline, the pause before
    the next attempt, and when to give up (as a `Reconnect` policy says).

    Pure (it reads the clock). A loop connects, calls `synced` once the
    snapshot is in, and on a lost connection calls `lost`, then pauses
    `backoff` seconds and connects again.

    Args:
        policy (Reconnect): the client's
        timeout_secs (float): deadline of the whole stream (None: none)
        what (object): what it follows, for messages
    """

    def __init__(self, policy, timeout_secs, what):
        self._policy = policy
        self._timeout_secs = timeout_secs
        self._what = what
        self._deadline = (
            None if timeout_secs is None else time.monotonic() + timeout_secs
        )
        self._down_since = None
        self._delay_secs = policy.first_delay_secs

    def backoff(self):
        """Seconds to pause before reconnecting.

        Raises:
            TimeoutError: the deadline comes before the pause ends
        """
        r = self.remaining()
        if r is not None and r < self._delay_secs:
            raise self.timed_out()
        d = self._delay_secs
        self._delay_secs = min(d * 2, self._policy.max_delay_secs)
        return d

    def lost(self, error):
        """The connection failed with `error` (an `OSError`, or None: closed).

        Raises:
            ConnectionError: the supervisor has been unreachable too long
        """
        n = time.monotonic()
        if self._down_since is None:
            self._down_since = n
        elif n - self._down_since > self._policy.give_up_secs:
            raise ConnectionError(f"{self._what}: events lost: {error}") from error

    def synced(self):
        """Connected and current again: the next loss starts afresh."""
        self._down_since = None
        self._delay_secs = self._policy.first_delay_secs

    def remaining(self):
        """Seconds to the deadline, or None without one."""
        if self._deadline is None:
            return None
        return max(0.0, self._deadline - time.monotonic())

    def timed_out(self):
        return TimeoutError(f"{self._what} did not end within {self._timeout_secs} s")


class _Watch(Backoff):
    """One `watch` of a handle: its `_RunWatch`, deadline and reconnect backoff.

    The front ends' loops are the same: connect, feed every message to
    `message` and yield what it returns until `ended`; on a lost connection
    call `lost`, pause `backoff` seconds and reconnect.
    """

    def __init__(self, handle, reconnect, timeout_secs):
        super().__init__(reconnect, timeout_secs, handle)
        self._handle = handle
        self._run = _RunWatch(handle.id, handle.run_id)

    def backoff(self):
        """Seconds to pause before reconnecting; a new snapshot follows.

        Raises:
            TimeoutError: the deadline comes before the pause ends
        """
        d = super().backoff()
        self._run.reconnecting()
        return d

    def ended(self):
        return self._run.final is not None

    def message(self, msg):
        """The run's job if `msg` tells of it (the handle learns its run), else None."""
        j = self._run.message(msg)
        if self._run.synced:
            self.synced()
        if j is not None:
            self._handle.run_id = self._run.run_id
        return j
