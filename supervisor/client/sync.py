"""The blocking client: `Client`, `Handle`, `Events`, on requests.

A thin front end of `supervisor.client._base`: it sends the requests the
base builds and runs the shared watch loop with blocking reads and sleeps.
Its websockets run on a private Tornado IOLoop, one per `Events`, so it must
not be called from inside a running event loop (use `AsyncClient` there).
"""

import contextlib
import time

import requests
import tornado.ioloop

from supervisor.client import _base, _sweep, _ws, executor


class Client(_base.BaseClient):
    """Blocking client. Use as a context manager or call `close`.

    Args:
        url (str): the supervisor, e.g. ``http://127.0.0.1:8000``
        token (str): API token
        timeout_secs (float): limit of one HTTP request
        reconnect (Reconnect): how watches ride out a restart
    """

    def __init__(self, url, token, timeout_secs=_base.TIMEOUT_SECS, reconnect=None):
        super().__init__(url, token, timeout_secs, reconnect)
        self._session = requests.Session()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        self._session.close()

    def codes(self):
        """The catalog: a list of codes with their parameters."""
        return self._json("GET", "/codes")

    def simulations(self, user=None):
        """The caller's simulations (an admin may name another `user`)."""
        return self._json("GET", "/simulations", query={"user": user})

    def simulation(self, sim_id):
        """A `Handle` of `sim_id`'s current run (or its next, if it never ran)."""
        s = self._json("GET", _base.sim_path(sim_id))
        return Handle(self, s["id"], s["job"]["run_id"])

    def create(self, code, params=None, name=None):
        """Create a simulation; returns it (a dict with its ``id``)."""
        return self._json(
            "POST", "/simulations", body=_base.create_body(code, params, name)
        )

    def run(self, sim_id, cores=None, driver=None):
        """Start a run of `sim_id` (superseding a current one); returns its `Handle`."""
        j = self._json(
            "POST",
            _base.sim_path(sim_id, "/run"),
            body=_base.run_body(cores, driver),
        )
        return Handle(self, sim_id, j["run_id"])

    def submit(self, code, params=None, cores=None, name=None, driver=None):
        """Create a simulation and run it; returns the run's `Handle`."""
        return self.run(self.create(code, params, name)["id"], cores, driver)

    def cancel(self, sim_id):
        """Cancel `sim_id`'s current run (idempotent); returns the job."""
        return self._json("POST", _base.sim_path(sim_id, "/cancel"))

    def delete(self, sim_id):
        """Cancel a current run, then delete the simulation and its files."""
        self._send("DELETE", _base.sim_path(sim_id))

    def events(self, simulation=None):
        """`Events`: the live push messages, optionally of one simulation."""
        return Events(self, simulation)

    def executor(self, code, **kwargs):
        """An `Executor` of `code` (see `supervisor.client.executor`)::

        with c.executor("heat", cores=1) as ex:
            futures = [ex.submit(steps=s) for s in (100, 200)]
        """
        return executor.Executor(self, code, **kwargs)

    def create_sweep(
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
        """Create a sweep: one run of `code` per member of `axes`; its summary.

        Args:
            axes (dict): parameter -> list of values or ``{start, stop, num,
                scale?}``
            params (dict): base parameters
            combine (str): ``grid`` (the default) or ``zip``
        """
        return self._json(
            "POST",
            "/sweeps",
            body=_base.sweep_create_body(
                code, axes, params, combine, name, cores, driver, max_parallel
            ),
        )

    def sweeps(self):
        """The caller's sweeps (summaries)."""
        return self._json("GET", "/sweeps")

    def sweep(self, sweep_id):
        """One sweep with its ``members``."""
        return self._json("GET", _base.sweep_path(sweep_id))

    def cancel_sweep(self, sweep_id, members=None):
        """Cancel every member (or those of `members`, indices); its summary once they ended."""
        return self._json(
            "POST",
            _base.sweep_path(sweep_id, "/cancel"),
            query=_base.members_query(members),
        )

    def retry_sweep(self, sweep_id):
        """Run the failed members again; the summary with ``retried``."""
        return self._json("POST", _base.sweep_path(sweep_id, "/retry"))

    def delete_sweep(self, sweep_id):
        """Cancel, then delete the sweep and its members' simulations."""
        return self._json("DELETE", _base.sweep_path(sweep_id))

    def watch_sweep(self, sweep_id, timeout=None):
        """Yield the sweep's summary as pushed, from now until it is not running.

        Reconnects as `Handle.watch` does. Close it if you stop early.

        Raises:
            TimeoutError: still running after `timeout` seconds
            ApiError: no such sweep, or it was deleted
        """
        b = _base.Backoff(self.reconnect, timeout, f"sweep {sweep_id}")
        w = _sweep.SweepWatch(sweep_id)
        while True:
            try:
                with self.events() as ev:
                    while (m := ev.read(b.remaining())) is not None:
                        if (s := w.message(m)) is not None:
                            yield s
                            if s["status"] != "running":
                                return
                        if w.synced:
                            b.synced()
            except TimeoutError as e:
                raise b.timed_out() from e
            except OSError as e:
                b.lost(e)
            else:
                # the server closed it (a restart): as lost
                b.lost(None)
            time.sleep(b.backoff())
            w.reconnecting()

    def _json(self, method, path, body=None, query=None):
        return _base.loads(self._send(method, path, body, query))

    def _send(self, method, path, body=None, query=None):
        q = self._build_request(method, path, body, query)
        r = self._session.request(
            q.method, q.url, data=q.body, headers=q.headers, timeout=self.timeout_secs
        )
        return _base.checked(r.status_code, r.content, r.reason)


class Events:
    """Iterator of the messages pushed on ``/api/events``: the snapshot
    (``simulation`` messages, then ``synced``), then every change.

    A reader too slow to keep up gets ``resync``, then a new snapshot: what
    it knew is replaced by it. Newer ``frame`` and ``log`` messages may skip
    older ones then (their ``seq``/``offset`` shows the gap; fetch the rest).

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
        return self._io_loop.run_sync(lambda: _ws.read(self._conn, timeout_secs))

    def close(self):
        """Close the websocket and the loop; idempotent."""
        self._closed = True
        if self._io_loop is None:
            return
        try:
            if self._conn is not None:
                self._io_loop.run_sync(lambda: _ws.close(self._conn))
        finally:
            self._io_loop.close(all_fds=True)
            self._io_loop = None
            self._conn = None

    def _connect(self):
        if self._conn is not None:
            return
        c = self._client
        r = c._events_request(self.simulation)
        self._io_loop = tornado.ioloop.IOLoop(make_current=False)
        try:
            self._conn = self._io_loop.run_sync(lambda: _ws.connect(r, c.timeout_secs))
        except BaseException:
            self._io_loop.close(all_fds=True)
            self._io_loop = None
            raise


class Handle(_base.BaseHandle):
    """One run of one simulation, like a `concurrent.futures.Future`.

    Attributes:
        id (str): the simulation
        run_id (str): the run, or None for "the current or next run" until
            `watch` or `result` sees one
    """

    def job(self):
        """The simulation's job now (it may be of a newer run)."""
        return self._json(self._path("/job"))

    def status(self):
        return self.job()["status"]

    def done(self):
        """Whether this run has ended."""
        return self._ended(self.job())

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
        with contextlib.closing(self.watch(timeout)) as w:
            for x in w:
                j = x
        return _base.outcome(j)

    def watch(self, timeout=None):
        """Yield this run's job as pushed, from its current state to its end.

        Reconnects (the server sends the current state first) if the
        supervisor goes away for less than the client's
        ``reconnect.give_up_secs``. Close the generator if you stop early
        (``contextlib.closing``).

        Raises:
            TimeoutError: the run did not end within `timeout` seconds
            ConnectionError: the supervisor stayed unreachable too long
        """
        w = self._watch(timeout)
        while True:
            try:
                with self._client.events(self.id) as ev:
                    while (m := ev.read(w.remaining())) is not None:
                        if (j := w.message(m)) is not None:
                            yield j
                            if w.ended():
                                return
            except TimeoutError as e:
                raise w.timed_out() from e
            except OSError as e:
                w.lost(e)
            time.sleep(w.backoff())

    def frames(self, since=0):
        """The run's frames (in situ output) from index `since` on."""
        return self._json(self._path("/frames"), query={"since": since})["frames"]

    def log(self, tail=None):
        """The run's log text (its last `tail` lines)."""
        b = self._client._send("GET", self._path("/log"), query={"tail": tail})
        return b.decode(errors="replace")

    def files(self):
        """``{"files": [{path, size, mtime}], "inputs": [names]}``"""
        return self._json(self._path("/files"))

    def download(self, path):
        """The bytes of output file `path`."""
        return self._client._send("GET", _base.file_path(self.id, path))

    def _json(self, path, query=None):
        return self._client._json("GET", path, query=query)
