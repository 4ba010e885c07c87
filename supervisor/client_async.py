"""The async client of the simvisor API: `AsyncClient`, `AsyncHandle`, `AsyncEvents`.

`Client`'s surface as coroutines, on Tornado's AsyncHTTPClient and websocket
client; see `supervisor.client` for the model and an example. The errors, the
pure helpers (`_RunWatch` and friends) and the constants are shared with the
sync client and live there; ``supervisor.client`` re-exports this module's
classes, so ``from supervisor.client import AsyncClient`` works too.
"""

import asyncio
import json
import time
import urllib.parse

import tornado.httpclient

import supervisor.client
from supervisor.client import (
    _RECONNECT_DELAY_SECS,
    _api_error,
    _close,
    _create_body,
    _events_connect,
    _events_request,
    _outcome,
    _quote,
    _run_body,
    _RunWatch,
)


class AsyncClient:
    """`Client`'s surface as coroutines, on Tornado's AsyncHTTPClient.

    Args:
        url (str): the supervisor, e.g. ``http://127.0.0.1:8000``
        token (str): API token
        timeout_secs (float): limit of one HTTP request
    """

    def __init__(self, url, token, timeout_secs=30.0):
        self.url = url.rstrip("/")
        self.timeout_secs = timeout_secs
        self._token = token

    async def codes(self):
        return await self._json("GET", "/codes")

    async def simulations(self, user=None):
        return await self._json("GET", "/simulations", query={"user": user})

    async def simulation(self, sim_id):
        s = await self._json("GET", f"/simulations/{_quote(sim_id)}")
        return AsyncHandle(self, s["id"], s["job"]["run_id"])

    async def create(self, code, params=None, name=None):
        return await self._json(
            "POST", "/simulations", body=_create_body(code, params, name)
        )

    async def run(self, sim_id, cores=None, driver=None):
        j = await self._json(
            "POST", f"/simulations/{_quote(sim_id)}/run", body=_run_body(cores, driver)
        )
        return AsyncHandle(self, sim_id, j["run_id"])

    async def submit(self, code, params=None, cores=None, name=None, driver=None):
        s = await self.create(code, params, name)
        return await self.run(s["id"], cores, driver)

    async def cancel(self, sim_id):
        return await self._json("POST", f"/simulations/{_quote(sim_id)}/cancel")

    async def delete(self, sim_id):
        await self._request("DELETE", f"/simulations/{_quote(sim_id)}")

    def events(self, simulation=None):
        """`AsyncEvents`: ``async with`` and ``async for`` it."""
        return AsyncEvents(self, simulation)

    async def _json(self, method, path, body=None, query=None):
        return json.loads((await self._request(method, path, body, query)).body)

    async def _request(self, method, path, body=None, query=None):
        q = urllib.parse.urlencode(
            {k: v for k, v in (query or {}).items() if v is not None}
        )
        if body is None and method in ("POST", "PATCH", "PUT"):
            body = {}
        r = await tornado.httpclient.AsyncHTTPClient().fetch(
            tornado.httpclient.HTTPRequest(
                f"{self.url}/api{path}" + (f"?{q}" if q else ""),
                method=method,
                headers={
                    "Authorization": "Bearer " + self._token,
                    "Content-Type": "application/json",
                },
                body=None if body is None else json.dumps(body),
                request_timeout=self.timeout_secs,
            ),
            raise_error=False,
        )
        if r.code >= 400:
            raise _api_error(r.code, r.body, r.reason)
        return r


class AsyncEvents:
    """Async iterator of the messages pushed on ``/api/events``."""

    def __init__(self, client, simulation=None):
        self.simulation = simulation
        self._client = client
        self._conn = None
        self._closed = False

    async def __aenter__(self):
        await self._connect()
        return self

    async def __aexit__(self, *exc):
        await self.aclose()

    def __aiter__(self):
        return self

    async def __anext__(self):
        m = await self.read()
        if m is None:
            raise StopAsyncIteration
        return m

    async def read(self, timeout_secs=None):
        """The next message, or None once the connection is closed."""
        if self._closed:
            return None
        await self._connect()
        t = await asyncio.wait_for(self._conn.read_message(), timeout_secs)
        return None if t is None else json.loads(t)

    async def aclose(self):
        """Close the websocket and wait (briefly) for it to close; idempotent."""
        self._closed = True
        c = self._conn
        self._conn = None
        if c is None:
            return
        await _close(c)

    async def _connect(self):
        if self._conn is None:
            c = self._client
            self._conn = await _events_connect(
                _events_request(c.url, c._token, self.simulation, c.timeout_secs)
            )


class AsyncHandle:
    """`Handle` as coroutines; ``await handle`` is ``await handle.result()``."""

    def __init__(self, client, sim_id, run_id):
        self.id = sim_id
        self.run_id = run_id
        self._client = client

    def __repr__(self):
        return f"AsyncHandle(id={self.id} run_id={self.run_id})"

    def __await__(self):
        return self.result().__await__()

    async def job(self):
        return await self._get("/job")

    async def status(self):
        return (await self.job())["status"]

    async def done(self):
        w = _RunWatch(self.id, self.run_id)
        w.job(await self.job())
        return w.final is not None

    async def cancel(self):
        return await self._client.cancel(self.id)

    async def result(self, timeout=None):
        """See `Handle.result`."""
        j = None
        try:
            async with asyncio.timeout(timeout):
                async for x in self.watch():
                    j = x
        except TimeoutError as e:
            raise TimeoutError(f"{self} did not end within {timeout} s") from e
        return _outcome(j)

    async def watch(self):
        """Async generator of this run's job as pushed; see `Handle.watch`.

        Bound it with ``asyncio.timeout``; close it if you stop early
        (``contextlib.aclosing``).
        """
        w = _RunWatch(self.id, self.run_id)
        down_since = None
        delay = _RECONNECT_DELAY_SECS[0]
        while True:
            try:
                async with self._client.events(self.id) as ev:
                    while (m := await ev.read()) is not None:
                        j = w.message(m)
                        if w.synced:
                            down_since = None
                            delay = _RECONNECT_DELAY_SECS[0]
                        if j is not None:
                            self.run_id = w.run_id
                            yield j
                            if w.final is not None:
                                return
            except TimeoutError:
                # an OSError too, but never one to reconnect after
                raise
            except OSError as e:
                # read through the module, as before the split, so a caller
                # that sets client.RECONNECT_SECS governs both clients
                if down_since is None:
                    down_since = time.monotonic()
                elif time.monotonic() - down_since > supervisor.client.RECONNECT_SECS:
                    raise ConnectionError(f"{self}: events lost: {e}") from e
            w.reconnecting()
            await asyncio.sleep(delay)
            delay = min(delay * 2, _RECONNECT_DELAY_SECS[1])

    async def frames(self, since=0):
        return (await self._get("/frames", query={"since": since}))["frames"]

    async def log(self, tail=None):
        r = await self._client._request(
            "GET", f"/simulations/{_quote(self.id)}/log", query={"tail": tail}
        )
        return r.body.decode()

    async def files(self):
        return await self._get("/files")

    async def download(self, path):
        r = await self._client._request(
            "GET", f"/simulations/{_quote(self.id)}/files/{urllib.parse.quote(path)}"
        )
        return r.body

    async def _get(self, path, query=None):
        return await self._client._json(
            "GET", f"/simulations/{_quote(self.id)}{path}", query=query
        )
