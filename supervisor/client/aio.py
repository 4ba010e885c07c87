"""The async client: `AsyncClient`, `AsyncHandle`, `AsyncEvents`, on Tornado.

`Client`'s surface as coroutines. A thin front end of
`supervisor.client._base`, as `supervisor.client.sync` is: the same requests,
the same watch loop, awaited.
"""

import asyncio
import contextlib

import tornado.httpclient

from supervisor.client import _base, _ws, executor_aio


class AsyncClient(_base.BaseClient):
    """`Client`'s surface as coroutines, on Tornado's AsyncHTTPClient.

    Args:
        url (str): the supervisor, e.g. ``http://127.0.0.1:8000``
        token (str): API token
        timeout_secs (float): limit of one HTTP request
        reconnect (Reconnect): how watches ride out a restart
    """

    async def codes(self):
        return await self._json("GET", "/codes")

    async def simulations(self, user=None):
        return await self._json("GET", "/simulations", query={"user": user})

    async def simulation(self, sim_id):
        s = await self._json("GET", _base.sim_path(sim_id))
        return AsyncHandle(self, s["id"], s["job"]["run_id"])

    async def create(self, code, params=None, name=None):
        return await self._json(
            "POST", "/simulations", body=_base.create_body(code, params, name)
        )

    async def run(self, sim_id, cores=None, driver=None):
        j = await self._json(
            "POST",
            _base.sim_path(sim_id, "/run"),
            body=_base.run_body(cores, driver),
        )
        return AsyncHandle(self, sim_id, j["run_id"])

    async def submit(self, code, params=None, cores=None, name=None, driver=None):
        s = await self.create(code, params, name)
        return await self.run(s["id"], cores, driver)

    async def cancel(self, sim_id):
        return await self._json("POST", _base.sim_path(sim_id, "/cancel"))

    async def delete(self, sim_id):
        await self._send("DELETE", _base.sim_path(sim_id))

    def events(self, simulation=None):
        """`AsyncEvents`: ``async with`` and ``async for`` it."""
        return AsyncEvents(self, simulation)

    def executor(self, code, **kwargs):
        """An `AsyncExecutor` of `code`: ``async with c.executor("heat") as ex``."""
        return executor_aio.AsyncExecutor(self, code, **kwargs)

    async def create_sweep(
        self,
        code,
        axes,
        params=None,
        combine=None,
        name=None,
        cores=None,
        driver=None,
        max_parallel=None,
    ):
        """See `Client.create_sweep`."""
        return await self._json(
            "POST",
            "/sweeps",
            body=_base.sweep_create_body(
                code, axes, params, combine, name, cores, driver, max_parallel
            ),
        )

    async def sweeps(self):
        return await self._json("GET", "/sweeps")

    async def sweep(self, sweep_id):
        return await self._json("GET", _base.sweep_path(sweep_id))

    async def cancel_sweep(self, sweep_id, members=None):
        return await self._json(
            "POST",
            _base.sweep_path(sweep_id, "/cancel"),
            query=_base.members_query(members),
        )

    async def retry_sweep(self, sweep_id):
        return await self._json("POST", _base.sweep_path(sweep_id, "/retry"))

    async def delete_sweep(self, sweep_id):
        return await self._json("DELETE", _base.sweep_path(sweep_id))

    async def _json(self, method, path, body=None, query=None):
        return _base.loads(await self._send(method, path, body, query))

    async def _send(self, method, path, body=None, query=None):
        q = self._build_request(method, path, body, query)
        r = await tornado.httpclient.AsyncHTTPClient().fetch(
            tornado.httpclient.HTTPRequest(
                q.url,
                method=q.method,
                headers=q.headers,
                body=q.body,
                request_timeout=self.timeout_secs,
            ),
            raise_error=False,
        )
        return _base.checked(r.code, r.body, r.reason)


class AsyncEvents:
    """Async iterator of the messages pushed on ``/api/events`` (see `Events`:
    the same snapshot first, and ``resync`` when the reader fell behind)."""

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
        return await _ws.read(self._conn, timeout_secs)

    async def aclose(self):
        """Close the websocket and wait (briefly) for it to close; idempotent."""
        self._closed = True
        c = self._conn
        self._conn = None
        if c is not None:
            await _ws.close(c)

    async def _connect(self):
        if self._conn is None:
            c = self._client
            self._conn = await _ws.connect(
                c._events_request(self.simulation), c.timeout_secs
            )


class AsyncHandle(_base.BaseHandle):
    """`Handle` as coroutines; ``await handle`` is ``await handle.result()``."""

    def __await__(self):
        return self.result().__await__()

    async def job(self):
        return await self._json(self._path("/job"))

    async def status(self):
        return (await self.job())["status"]

    async def done(self):
        return self._ended(await self.job())

    async def cancel(self):
        return await self._client.cancel(self.id)

    async def result(self, timeout=None):
        """See `Handle.result`."""
        j = None
        async with contextlib.aclosing(self.watch(timeout)) as w:
            async for x in w:
                j = x
        return _base.outcome(j)

    async def watch(self, timeout=None):
        """Async generator of this run's job as pushed; see `Handle.watch`.

        Close it if you stop early (``contextlib.aclosing``).
        """
        w = self._watch(timeout)
        while True:
            try:
                async with self._client.events(self.id) as ev:
                    while (m := await ev.read(w.remaining())) is not None:
                        if (j := w.message(m)) is not None:
                            yield j
                            if w.ended():
                                return
            except TimeoutError as e:
                raise w.timed_out() from e
            except OSError as e:
                w.lost(e)
            await asyncio.sleep(w.backoff())

    async def frames(self, since=0):
        return (await self._json(self._path("/frames"), query={"since": since}))[
            "frames"
        ]

    async def log(self, tail=None):
        b = await self._client._send("GET", self._path("/log"), query={"tail": tail})
        return b.decode(errors="replace")

    async def files(self):
        return await self._json(self._path("/files"))

    async def download(self, path):
        return await self._client._send("GET", _base.file_path(self.id, path))

    async def _json(self, path, query=None):
        return await self._client._json("GET", path, query=query)
