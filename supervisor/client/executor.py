"""`Executor`: runs of one code as `concurrent.futures.Future` objects, as sweeps.

In the way of `concurrent.futures.Executor` (and SCALE-MS): a submit is one
run of the executor's code with some parameters, its future's result the
run's final job::

    with c.executor("heat", cores=2, driver="local") as ex:
        futures = [ex.submit(steps=s) for s in (1000, 2000, 4000)]
        for f in concurrent.futures.as_completed(futures):
            print(f.params, f.result()["result"])
        jobs = list(ex.map(steps=[100, 200]))          # in order
        grid = ex.sweep({"steps": [100, 200], "alpha": [0.01, 0.02]}, nx=51)

- Submits made close together (each within `_sweep.BATCH_SECS` of the
  last, for at most `_sweep.MAX_BATCH_WAIT_SECS`, at most ``max_batch``)
  go as one sweep: one ``POST /api/sweeps`` whose zipped axes are the
  parameters that differ between them. Every run is a sweep member, an
  ordinary simulation (its files, frames, log: ``future.simulation``).
- A future's result is the member's final job; if the run ended
  ``error``, ``timed_out`` or ``canceled`` (by someone else) it raises
  `RunFailed` (its ``job`` says how); a refused submit raises the API's
  `ApiError` (a refused batch is split, so only the submits refused
  themselves fail).
- ``future.cancel()`` on a future not ended cancels its member on the
  server (one not started yet never runs) and returns True; the run's
  state on the server is its job (``running()`` stays False: a member
  runs where the server says). ``cancel`` wins over an end that was not
  seen yet.
- Completions come from one ``/api/events`` websocket (no polling),
  which rides out a supervisor restart as the client's `Reconnect` says;
  a snapshot after a reconnect tells of what ended meanwhile.
- Leaving the ``with`` block is ``shutdown(wait=True)``: it waits for every
  future; ``shutdown(cancel_futures=True)`` cancels every sweep with a
  member not ended (the server replies once all its members are terminal,
  their processes gone) and those futures end cancelled.
- Inside the ``with`` block the executor is `current_executor()`, so
  library code can submit without being passed it.

The engine (`_engine.Engine`, the same as `AsyncExecutor`'s) runs on a
Tornado IOLoop in a thread of the executor's own; futures are completed
from there.
"""

import asyncio
import concurrent.futures
import threading
import time

import tornado.ioloop

from supervisor.client import _engine, _sweep, aio


class MemberFuture(concurrent.futures.Future):
    """The future of one member: its result is the member's final job.

    Attributes:
        params (dict): what it was submitted with
        sweep_id (str): its sweep, once made (else None)
        index (int): its place in the sweep
        simulation (str): its simulation's id
    """

    def __init__(self, params):
        super().__init__()
        self.params = params
        self.sweep_id = None
        self.index = None
        self.simulation = None


class Executor:
    """Runs of one code, as futures. Use as a context manager or call `shutdown`.

    Args:
        client (Client): how it reaches the API (its URL, token, timeouts,
            reconnect policy)
        code (str): the code every submit runs
        cores (int): cores of each run
        driver (str): where they run
        max_parallel (int): members of one sweep (one batch) running at once
        name (str): the name of its sweeps
        batch_secs (float): how long a batch waits for one more submit
        max_batch (int): submits in one sweep at most
    """

    def __init__(
        self,
        client,
        code,
        cores=None,
        driver=None,
        max_parallel=None,
        name=None,
        batch_secs=_sweep.BATCH_SECS,
        max_batch=_sweep.MAX_BATCH,
    ):
        self.code = code
        self._engine = _engine.Engine(
            aio.AsyncClient(
                client.url, client._token, client.timeout_secs, client.reconnect
            ),
            code,
            {
                "cores": cores,
                "driver": driver,
                "max_parallel": max_parallel,
                "name": name,
            },
            MemberFuture,
            self._watch,
            batch_secs,
            max_batch,
        )
        self._io_loop = tornado.ioloop.IOLoop(make_current=False)
        self._loop = self._io_loop.asyncio_loop
        self._lock = threading.Lock()
        self._shut = False
        self._finished = None
        self._tokens = []
        self._thread = threading.Thread(
            target=self._serve, name=f"executor-{code}", daemon=True
        )
        self._thread.start()

    def __repr__(self):
        return f"Executor({self.code})"

    def __enter__(self):
        self._tokens.append(_sweep.enter(self))
        return self

    def __exit__(self, *exc):
        try:
            self.shutdown(wait=True)
        finally:
            _sweep.leave(self._tokens.pop())

    @property
    def sweeps(self):
        """The ids of the sweeps it made, in order."""
        return list(self._engine.sweeps)

    def submit(self, params=None, /, **kwargs):
        """One run with `params` (a dict) and keyword parameters; its `MemberFuture`.

        Raises:
            RuntimeError: after `shutdown`
            TypeError: the parameters are not JSON
        """
        f = MemberFuture(_sweep.member_params(params, kwargs))
        self._watch(f)
        with self._lock:
            if self._shut:
                raise RuntimeError("cannot submit after shutdown")
            self._loop.call_soon_threadsafe(self._engine.add, f)
        return f

    def map(self, params=None, /, *, timeout=None, **iterables):
        """Submit one run per parameter dict of `params`, or per element of
        the keyword `iterables` zipped (``ex.map(steps=[1, 2], nx=[3, 4])``:
        all of one length); an iterator of their final jobs in order.

        All are submitted at once (one sweep); as `concurrent.futures`'s
        ``map``, a failed run raises when its turn comes, and the runs not
        ended are cancelled if the iterator is closed or raises.

        Raises:
            TimeoutError: from ``next`` if a job is not there `timeout`
                seconds after the call
        """
        fs = [self.submit(p) for p in _sweep.map_rows(params, iterables)]
        end = None if timeout is None else time.monotonic() + timeout

        def _results():
            try:
                for f in fs:
                    yield f.result(
                        None if end is None else max(0.0, end - time.monotonic())
                    )
            finally:
                for f in fs:
                    f.cancel()

        return _results()

    def sweep(self, axes, params=None, /, *, combine="grid", name=None, **kwargs):
        """One sweep (one request) of `axes` over the base parameters; its futures.

        Args:
            axes (dict): parameter -> list of values or ``{start, stop, num,
                scale?}``, as ``POST /api/sweeps`` takes them
            params (dict): base parameters, updated by keyword ones
            combine (str): ``grid`` (first axis slowest) or ``zip``
            name (str): the sweep's name
        Returns:
            list: a `MemberFuture` per member, in the sweep's order
        Raises:
            ApiError: the API refused the sweep
        """
        p = _sweep.member_params(params, kwargs)
        with self._lock:
            if self._shut:
                raise RuntimeError("cannot make a sweep after shutdown")
            c = asyncio.run_coroutine_threadsafe(
                self._engine.sweep(axes, combine, p, name), self._loop
            )
        return c.result()

    def shutdown(self, wait=True, *, cancel_futures=False):
        """No more submits; send what is batched, and with `wait` wait for
        every future (and cancel) to end; then close the events stream
        and the executor's thread. Idempotent.

        Args:
            wait (bool): else it returns at once and closes by itself once
                every future ended
            cancel_futures (bool): cancel on the server every member not
                ended (its sweep's cancel: the reply comes once they are
                terminal) and end those futures cancelled
        Raises:
            Error: a cancel the server refused
        """
        with self._lock:
            if not self._shut:
                self._shut = True
                self._finished = asyncio.run_coroutine_threadsafe(
                    self._finish(cancel_futures), self._loop
                )
                self._finished.add_done_callback(self._stop)
            elif cancel_futures and not self._finished.done():
                # a second call (the first did not wait), now cancelling
                asyncio.run_coroutine_threadsafe(
                    self._engine.shutdown(True), self._loop
                ).result()
        if wait:
            try:
                self._finished.result()
            finally:
                self._thread.join()

    async def _finish(self, cancel_futures):
        try:
            await self._engine.shutdown(cancel_futures)
            await self._engine.wait()
        finally:
            await self._engine.close()

    def _stop(self, _):
        # once _finish is done (its result set): the loop ends, the thread too
        self._loop.call_soon_threadsafe(self._io_loop.stop)

    def _serve(self):
        try:
            self._io_loop.start()
        finally:
            self._io_loop.close(all_fds=True)

    def _watch(self, future):
        future.add_done_callback(self._done)

    def _done(self, future):
        # any thread: the user's (cancel) or the loop's (an end)
        if not future.cancelled():
            return
        # CANCELLED -> CANCELLED_AND_NOTIFIED: concurrent.futures.wait and
        # as_completed count it done only then (an executor's duty)
        future.set_running_or_notify_cancel()
        try:
            self._loop.call_soon_threadsafe(self._engine.future_done, future)
        except RuntimeError:
            # the loop is closed: everything has ended
            pass
