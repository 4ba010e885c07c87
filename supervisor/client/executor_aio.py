"""`AsyncExecutor`: `Executor`'s surface on asyncio, with asyncio futures.

On the caller's event loop: ``submit`` is a plain call that returns an
`AsyncMemberFuture` at once (submits of one tick go as one sweep);
``await`` it, or use `asyncio.wait`, `asyncio.as_completed`,
`asyncio.gather`::

    async with c.executor("sleep") as ex:
        fs = [ex.submit(secs=s) for s in (0.1, 0.2)]
        for f in asyncio.as_completed(fs):
            job = await f

As with any asyncio future, cancelling a task that awaits one (a timeout
of `asyncio.wait_for`, say) cancels it, and so its run: wrap it in
`asyncio.shield` to wait without that.
"""

import asyncio

from supervisor.client import _engine, _sweep


class AsyncMemberFuture(asyncio.Future):
    """The asyncio future of one member: its result is the member's final job.

    Attributes:
        params (dict): what it was submitted with
        sweep_id (str): its sweep, once made (else None)
        index (int): its place in the sweep
        simulation (str): its simulation's id
    """

    def __init__(self, params, loop):
        super().__init__(loop=loop)
        self.params = params
        self.sweep_id = None
        self.index = None
        self.simulation = None


class AsyncExecutor:
    """Runs of one code as asyncio futures; see `supervisor.client.executor.Executor`.

    Args:
        client (AsyncClient): how it reaches the API
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
            client,
            code,
            {
                "cores": cores,
                "driver": driver,
                "max_parallel": max_parallel,
                "name": name,
            },
            self._new_future,
            self._watch,
            batch_secs,
            max_batch,
        )
        self._shut = False
        self._tokens = []
        #: with shutdown(wait=False): the task that closes once all ended
        self._closer = None

    def __repr__(self):
        return f"AsyncExecutor({self.code})"

    async def __aenter__(self):
        self._tokens.append(_sweep.enter(self))
        return self

    async def __aexit__(self, *exc):
        try:
            await self.shutdown()
        finally:
            _sweep.leave(self._tokens.pop())

    @property
    def sweeps(self):
        """The ids of the sweeps it made, in order."""
        return list(self._engine.sweeps)

    def submit(self, params=None, /, **kwargs):
        """One run with `params` (a dict) and keyword parameters; its future.

        Raises:
            RuntimeError: after `shutdown`
            TypeError: the parameters are not JSON
        """
        if self._shut:
            raise RuntimeError("cannot submit after shutdown")
        f = self._new_future(_sweep.member_params(params, kwargs))
        self._watch(f)
        self._engine.add(f)
        return f

    def map(self, params=None, /, *, timeout=None, **iterables):
        """Submit one run per parameter dict of `params`, or per element of
        the keyword `iterables` zipped; an async iterator of their jobs in
        order. See `Executor.map`."""
        fs = [self.submit(p) for p in _sweep.map_rows(params, iterables)]
        return self._results(fs, timeout)

    async def _results(self, futures, timeout):
        end = None if timeout is None else asyncio.get_running_loop().time() + timeout
        try:
            for f in futures:
                if end is None:
                    yield await f
                else:
                    r = max(0.0, end - asyncio.get_running_loop().time())
                    yield await asyncio.wait_for(f, r)
        finally:
            for f in futures:
                f.cancel()

    async def sweep(self, axes, params=None, /, *, combine="grid", name=None, **kwargs):
        """One sweep (one request) of `axes` over the base parameters; its futures.

        Args:
            axes (dict): parameter -> list of values or ``{start, stop, num,
                scale?}``, as ``POST /api/sweeps`` takes them
            params (dict): base parameters, updated by keyword ones
            combine (str): ``grid`` or ``zip``
            name (str): the sweep's name
        Returns:
            list: an `AsyncMemberFuture` per member, in the sweep's order
        Raises:
            ApiError: the API refused the sweep
        """
        if self._shut:
            raise RuntimeError("cannot make a sweep after shutdown")
        return await self._engine.sweep(
            axes, combine, _sweep.member_params(params, kwargs), name
        )

    async def shutdown(self, wait=True, *, cancel_futures=False):
        """No more submits; send what is batched, and with `wait` wait for
        every future (and cancel) to end, then close the events stream.

        Args:
            wait (bool): else the stream closes by itself once all ended
            cancel_futures (bool): cancel every member not ended on the
                server (its sweep's cancel) and end those futures cancelled
        Raises:
            Error: a cancel the server refused
        """
        self._shut = True
        await self._engine.shutdown(cancel_futures)
        if wait:
            await self._finish()
        elif self._closer is None:
            self._closer = asyncio.get_running_loop().create_task(self._finish())

    async def _finish(self):
        try:
            await self._engine.wait()
        finally:
            await self._engine.close()

    def _new_future(self, params):
        return AsyncMemberFuture(params, asyncio.get_running_loop())

    def _watch(self, future):
        future.add_done_callback(self._engine.future_done)
