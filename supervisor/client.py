"""Python clients of the simvisor API, in the spirit of concurrent.futures.

`Client` (blocking, on requests) and `AsyncClient` (on Tornado) have the same
surface. ``submit`` creates a simulation and runs it; the handle it returns
stands for that one run. ``result()`` waits for the run to end by listening
on the ``/api/events`` websocket (never by polling) and returns the final
job, or raises `RunFailed` if the run ended ``error``, ``canceled`` or
``timed_out``, as ``Future.result`` raises the call's exception::

    with client.Client("http://127.0.0.1:8000", token) as c:
        h = c.submit("heat", {"steps": 2000})
        job = h.result(timeout=60)
        frames = h.frames()

    c = client.AsyncClient("http://127.0.0.1:8000", token)
    h = await c.submit("heat", {"steps": 2000})
    job = await h

Errors the API reports (its JSON ``{"error", "message"}`` body) raise
`ApiError`. The sync client runs its websockets on a private Tornado IOLoop,
one per `Events`, so it must not be called from inside a running event loop
(use `AsyncClient` there).

This module holds the errors, the pure helpers both clients share and the
sync client. The async client lives in `supervisor.client_async` and is
re-exported here, so ``client.AsyncClient`` keeps working.
"""

import asyncio
import json
import time
import urllib.parse

import requests
import tornado.httpclient
import tornado.ioloop
import tornado.websocket

from supervisor import job

#: seconds a watch keeps trying to reconnect to a supervisor that went away
RECONNECT_SECS = 30.0

#: seconds `Events.close` waits for the server to acknowledge the close
_CLOSE_WAIT_SECS = 2.0

#: first and longest pause between reconnection attempts, seconds
_RECONNECT_DELAY_SECS = (0.1, 2.0)


class Error(Exception):
    """Base of this module's exceptions."""


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


# --- pure helpers shared by both clients ------------------------------------


def _api_error(status, body, reason=None):
    try:
        b = json.loads(body)
        return ApiError(status, b["error"], b["message"])
    except (ValueError, TypeError, KeyError):
        t = body.decode(errors="replace").strip() if isinstance(body, bytes) else ""
        return ApiError(status, "http_error", t[:500] or reason or "request failed")


def _outcome(job_):
    if job_["status"] != job.COMPLETED:
        raise RunFailed(job_)
    return job_


def _quote(value):
    return urllib.parse.quote(str(value), safe="")


def _deadline(timeout_secs):
    return None if timeout_secs is None else time.monotonic() + timeout_secs


def _remaining(deadline):
    return None if deadline is None else max(0.0, deadline - time.monotonic())


def _run_body(cores, driver):
    return {k: v for k, v in (("cores", cores), ("driver", driver)) if v is not None}


def _create_body(code, params, name):
    b = {"code": code, "params": params or {}}
    if name is not None:
        b["name"] = name
    return b


def _events_request(url, token, simulation, timeout_secs):
    u = "ws" + url[4:] if url.startswith("http") else url
    q = f"?simulation={_quote(simulation)}" if simulation else ""
    return tornado.httpclient.HTTPRequest(
        f"{u}/api/events{q}",
        headers={"Authorization": "Bearer " + token},
        connect_timeout=timeout_secs,
        request_timeout=timeout_secs,
    )


async def _events_connect(request):
    try:
        return await tornado.websocket.websocket_connect(request)
    except tornado.httpclient.HTTPClientError as e:
        if e.response is None:
            raise ConnectionError(f"events websocket: {e}") from e
        raise _api_error(e.code, e.response.body, str(e)) from e


async def _close(conn):
    conn.close()
    # let the close handshake finish so nothing is left pending on the loop
    try:
        async with asyncio.timeout(_CLOSE_WAIT_SECS):
            while await conn.read_message() is not None:
                pass
    except TimeoutError:
        pass


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
        if t == "synced":
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
            if job_["status"] in job.ENDED:
                self.final = job_
            return job_
        # a newer run replaced this one, which therefore ended
        for h in job_.get("history") or ():
            if h.get("run_id") == self.run_id:
                self.final = dict(h)
                return self.final
        self.final = {
            "run_id": self.run_id,
            "status": job.CANCELED,
            "error": f"replaced by run {job_.get('run_id')}",
        }
        return self.final


# --- sync -------------------------------------------------------------------


class Client:
    """Blocking client. Use as a context manager or call `close`.

    Args:
        url (str): the supervisor, e.g. ``http://127.0.0.1:8000``
        token (str): API token
        timeout_secs (float): limit of one HTTP request
    """

    def __init__(self, url, token, timeout_secs=30.0):
        self.url = url.rstrip("/")
        self.timeout_secs = timeout_secs
        self._token = token
        self._session = requests.Session()
        self._session.headers["Authorization"] = "Bearer " + token

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        self._session.close()

    def codes(self):
        """The catalog: a list of codes with their parameters."""
        return self._request("GET", "/codes").json()

    def simulations(self, user=None):
        """The caller's simulations (an admin may name another `user`)."""
        return self._request("GET", "/simulations", query={"user": user}).json()

    def simulation(self, sim_id):
        """A `Handle` of `sim_id`'s current run (or its next, if it never ran)."""
        s = self._request("GET", f"/simulations/{_quote(sim_id)}").json()
        return Handle(self, s["id"], s["job"]["run_id"])

    def create(self, code, params=None, name=None):
        """Create a simulation; returns it (a dict with its ``id``)."""
        return self._request(
            "POST", "/simulations", body=_create_body(code, params, name)
        ).json()

    def run(self, sim_id, cores=None, driver=None):
        """Start a run of `sim_id` (superseding a current one); returns its `Handle`."""
        j = self._request(
            "POST", f"/simulations/{_quote(sim_id)}/run", body=_run_body(cores, driver)
        ).json()
        return Handle(self, sim_id, j["run_id"])

    def submit(self, code, params=None, cores=None, name=None, driver=None):
        """Create a simulation and run it; returns the run's `Handle`."""
        return self.run(self.create(code, params, name)["id"], cores, driver)

    def cancel(self, sim_id):
        """Cancel `sim_id`'s current run (idempotent); returns the job."""
        return self._request("POST", f"/simulations/{_quote(sim_id)}/cancel").json()

    def delete(self, sim_id):
        """Cancel a current run, then delete the simulation and its files."""
        self._request("DELETE", f"/simulations/{_quote(sim_id)}")

    def events(self, simulation=None):
        """`Events`: the live push messages, optionally of one simulation."""
        return Events(self, simulation)

    def _request(self, method, path, body=None, query=None):
        r = self._session.request(
            method,
            f"{self.url}/api{path}",
            json=body,
            params={k: v for k, v in (query or {}).items() if v is not None},
            timeout=self.timeout_secs,
        )
        if r.status_code >= 400:
            raise _api_error(r.status_code, r.content, r.reason)
        return r


class Events:
    """Iterator of the messages pushed on ``/api/events``: the snapshot
    (``simulation`` messages, then ``synced``), then every change.

    Connects on `__enter__` or the first read; ends when the server closes.
    Runs the websocket on its own IOLoop, which `close` closes.
    """

    def __init__(self, client, simulation=None):
        self.simulation = simulation
        self._client = client
        self._io_loop = None
        self._conn = None
        self._closed = False

    def __enter__(self):
        self._connect()
        return self

    def __exit__(self, *exc):
        self.close()

    def __iter__(self):
        return self

    def __next__(self):
        m = self.read()
        if m is None:
            raise StopIteration
        return m

    def read(self, timeout_secs=None):
        """The next message, or None once the connection is closed.

        Raises:
            TimeoutError: none came within `timeout_secs`
        """
        if self._closed:
            return None
        self._connect()

        async def _read():
            return await asyncio.wait_for(self._conn.read_message(), timeout_secs)

        t = self._io_loop.run_sync(_read)
        return None if t is None else json.loads(t)

    def close(self):
        """Close the websocket and the loop; idempotent."""
        self._closed = True
        if self._io_loop is None:
            return
        try:
            if self._conn is not None:
                self._io_loop.run_sync(lambda: _close(self._conn))
        finally:
            self._io_loop.close(all_fds=True)
            self._io_loop = None
            self._conn = None

    def _connect(self):
        if self._conn is not None:
            return
        c = self._client
        r = _events_request(c.url, c._token, self.simulation, c.timeout_secs)
        self._io_loop = tornado.ioloop.IOLoop(make_current=False)
        try:
            self._conn = self._io_loop.run_sync(lambda: _events_connect(r))
        except BaseException:
            self._io_loop.close(all_fds=True)
            self._io_loop = None
            raise


class Handle:
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
        return f"Handle(id={self.id} run_id={self.run_id})"

    def job(self):
        """The simulation's job now (it may be of a newer run)."""
        return self._get("/job").json()

    def status(self):
        return self.job()["status"]

    def done(self):
        """Whether this run has ended."""
        w = _RunWatch(self.id, self.run_id)
        w.job(self.job())
        return w.final is not None

    def cancel(self):
        """Cancel the simulation's current run (idempotent); returns the job."""
        return self._client.cancel(self.id)

    def result(self, timeout=None):
        """Wait for this run to end; returns its final job.

        If a newer run has replaced this one, the job returned (or carried
        by `RunFailed`) is this run's entry in the job's history.

        Args:
            timeout (float): seconds; None waits as long as it takes
        Raises:
            RunFailed: it ended error, canceled or timed_out
            TimeoutError: it did not end within `timeout`
            ApiError: the simulation is unknown or was deleted
        """
        j = None
        for x in self.watch(timeout):
            j = x
        return _outcome(j)

    def watch(self, timeout=None):
        """Yield this run's job as pushed, from its current state to its end.

        Reconnects (the server sends the current state first) if the
        supervisor goes away for less than `RECONNECT_SECS`. Close the
        generator if you stop early (``contextlib.closing``).

        Raises:
            TimeoutError: the run did not end within `timeout` seconds
        """
        deadline = _deadline(timeout)
        w = _RunWatch(self.id, self.run_id)
        down_since = None
        delay = _RECONNECT_DELAY_SECS[0]
        while True:
            try:
                with self._client.events(self.id) as ev:
                    while (m := ev.read(_remaining(deadline))) is not None:
                        j = w.message(m)
                        if w.synced:
                            down_since = None
                            delay = _RECONNECT_DELAY_SECS[0]
                        if j is not None:
                            self.run_id = w.run_id
                            yield j
                            if w.final is not None:
                                return
            except TimeoutError as e:
                raise TimeoutError(f"{self} did not end within {timeout} s") from e
            except OSError as e:
                if down_since is None:
                    down_since = time.monotonic()
                elif time.monotonic() - down_since > RECONNECT_SECS:
                    raise ConnectionError(f"{self}: events lost: {e}") from e
            w.reconnecting()
            r = _remaining(deadline)
            if r is not None and r < delay:
                raise TimeoutError(f"{self} did not end within {timeout} s")
            time.sleep(delay)
            delay = min(delay * 2, _RECONNECT_DELAY_SECS[1])

    def frames(self, since=0):
        """The run's frames (in situ output) from index `since` on."""
        return self._get("/frames", query={"since": since}).json()["frames"]

    def log(self, tail=None):
        """The run's log text (its last `tail` lines)."""
        return self._get("/log", query={"tail": tail}).text

    def files(self):
        """``{"files": [{path, size, mtime}], "inputs": [names]}``"""
        return self._get("/files").json()

    def download(self, path):
        """The bytes of output file `path`."""
        return self._get("/files/" + urllib.parse.quote(path)).content

    def _get(self, path, query=None):
        return self._client._request(
            "GET", f"/simulations/{_quote(self.id)}{path}", query=query
        )


# --- async, re-exported -----------------------------------------------------

_ASYNC_NAMES = frozenset(("AsyncClient", "AsyncEvents", "AsyncHandle"))


def __getattr__(name):
    # Lazy (PEP 562) rather than a plain import at the bottom: client_async
    # imports this module, so a plain import would fail whenever client_async
    # is imported first (this module would then run to its end and ask the
    # half-initialized client_async for names it has not yet defined).
    # Resolving on first use works in either order.
    if name in _ASYNC_NAMES:
        from supervisor import client_async

        return getattr(client_async, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted((*globals(), *_ASYNC_NAMES))
