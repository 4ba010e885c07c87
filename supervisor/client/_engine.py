"""The `Engine` both executors run: batches, the events reader, cancels.

It does an executor's work on one event loop: it gathers submits
into batches (each one ``POST /api/sweeps`` of zipped members), learns the
members' simulations (one ``GET /api/sweeps/{id}``), follows their ends on
one ``/api/events`` websocket (`_sweep.Tracker`; never by polling), sends
the cancels of cancelled futures (one ``POST .../cancel?members=`` per
sweep for those cancelled together) and, at shutdown, cancels whole sweeps. The front ends
give it their kind of future: `executor_aio.AsyncExecutor` asyncio ones on
the caller's loop; `executor.Executor` `concurrent.futures` ones, with the
engine on a loop of its own thread.

A refused batch is split in halves and each sent again, so that only the
submits the API refuses themselves fail (a batch is one sweep, and one bad
member refuses a whole sweep).
"""

import asyncio
import concurrent.futures

from supervisor.client import _base, _sweep

#: refusals that may be of some members only (a value, a body too large):
#: the batch is split; others (the code, driver, cores, plan) are of all
_SPLIT_CODES = frozenset(
    ("bad_param", "bad_params", "unknown_param", "bad_axes", "too_many_members")
)

_INVALID_STATE = (asyncio.InvalidStateError, concurrent.futures.InvalidStateError)


class Engine:
    """An executor's batches, events reader and cancels, on one event loop.

    Every method runs on that loop.

    Args:
        client (AsyncClient): how it reaches the API
        code (str): what every member runs
        options (dict): ``cores``, ``driver``, ``max_parallel``, ``name``
        new_future (callable): ``new_future(params)``, a future of the front
            end's kind
        watch (callable): ``watch(future)`` makes `future_done` be called on
            this loop once `future` is done (the front end's callback)
        batch_secs (float): see `_sweep.BATCH_SECS`
        max_batch (int): submits in one sweep at most
    """

    def __init__(self, client, code, options, new_future, watch, batch_secs, max_batch):
        self.client = client
        self.code = code
        self._options = options
        self._new_future = new_future
        self._watch = watch
        self._batch_secs = batch_secs
        self._max_batch = max_batch
        #: submits not sent yet, the loop time of the first and of the last
        self._batch = []
        self._batch_first = None
        self._batch_last = None
        self._timer = None
        self._tracker = _sweep.Tracker()
        #: futures not ended (dict: in order of submit)
        self._open = {}
        #: sweep id -> member indices to cancel on the server soon
        self._to_cancel = {}
        self._cancel_soon = None
        self._tasks = set()
        self._sending = set()
        self._reader = None
        self._code_params = None
        self._code_known = False
        self._cancel_all = False
        self._closed = False
        #: why the events stream gave up (every future then fails with it)
        self._error = None
        #: refused cancels, raised by `shutdown`
        self._cancel_errors = []
        self._quiet = asyncio.Event()
        #: ids of the sweeps made, in order
        self.sweeps = []

    def pkdebug_str(self):
        return f"Engine({self.code} open={len(self._open)} sweeps={len(self.sweeps)})"

    # --- submits and batches ---------------------------------------------------

    def add(self, future):
        """Send `future` (a submit: ``future.params``) with the next batch."""
        if future.done():
            # cancelled before it got here
            return
        self._open[future] = None
        self._quiet.clear()
        if self._error is not None or self._closed:
            self._settle(future, None, self._error or _base.Error("executor closed"))
            return
        self._start()
        t = asyncio.get_running_loop().time()
        self._batch.append(future)
        if self._batch_first is None:
            self._batch_first = t
        self._batch_last = t
        if len(self._batch) >= self._max_batch:
            self._flush()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(
                self._batch_secs, self._due
            )

    def _due(self):
        self._timer = None
        if not self._batch:
            return
        loop = asyncio.get_running_loop()
        t = min(
            self._batch_last + self._batch_secs,
            self._batch_first + _sweep.MAX_BATCH_WAIT_SECS,
        )
        if loop.time() < t:
            # another submit came meanwhile: wait for the next
            self._timer = loop.call_at(t, self._due)
            return
        self._flush()

    def _flush(self):
        """Send what is batched now."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        b = [f for f in self._batch if not f.done()]
        self._batch = []
        self._batch_first = self._batch_last = None
        if b:
            t = self._spawn(self._send(b))
            self._sending.add(t)
            t.add_done_callback(self._sending.discard)

    async def _send(self, batch):
        self._tracker.begin_claim()
        try:
            await self._post(batch)
        except Exception as e:
            # a fault of the client: each future says it
            self._fail(batch, e)
        finally:
            self._tracker.end_claim()

    async def _post(self, batch):
        try:
            p = await self._params()
            b = _sweep.batch_body(
                self.code, p, [f.params for f in batch], self._options
            )
            w = await self.client.create_sweep(**b)
        except _base.ApiError as e:
            if len(batch) > 1 and (e.code in _SPLIT_CODES or e.status == 413):
                h = len(batch) // 2
                await asyncio.gather(self._post(batch[:h]), self._post(batch[h:]))
            else:
                self._fail(batch, e)
            return
        except (_base.Error, OSError) as e:
            self._fail(batch, e)
            return
        try:
            await self._register(w["id"], batch)
        except (_base.Error, OSError) as e:
            self._fail(batch, e)

    async def _params(self):
        """The catalog's parameters of the code (None: no such code)."""
        if not self._code_known:
            cs = await self.client.codes()
            self._code_params = next(
                (c["params"] for c in cs if c["name"] == self.code), None
            )
            self._code_known = True
        return self._code_params

    async def sweep(self, axes, combine, params, name):
        """One sweep of `axes` over `params`; its members' futures, in order.

        Raises:
            ApiError: the API refused it
        """
        if self._closed:
            raise RuntimeError("cannot make a sweep after shutdown")
        self._start()
        o = dict(self._options)
        if name is not None:
            o["name"] = name
        b = _sweep.sweep_body(self.code, axes, combine, params, o)
        self._tracker.begin_claim()
        try:
            w = await self.client.create_sweep(**b)
            return await self._register(w["id"], None, params)
        finally:
            self._tracker.end_claim()

    async def _register(self, sweep_id, batch, params=None):
        """Give each future its member (batch None: new futures, one per member)."""
        self.sweeps.append(sweep_id)
        d = await self.client.sweep(sweep_id)
        if batch is None:
            batch = []
            for m in d["members"]:
                f = self._new_future(dict(params, **m["params"]))
                self._open[f] = None
                self._watch(f)
                batch.append(f)
            self._quiet.clear()
        for f, m in zip(batch, d["members"], strict=True):
            f.sweep_id = sweep_id
            f.index = m["index"]
            f.simulation = m["simulation"]
        for f in batch:
            if f.cancelled():
                # while its sweep was being made
                self._cancel_member(f)
        for f, j, e in self._tracker.claim([f for f in batch if not f.done()]):
            self._settle(f, j, e)
        if self._error is not None:
            self._fail(batch, self._error)
        return batch

    # --- ends ------------------------------------------------------------------

    def _settle(self, future, job_, error):
        self._open.pop(future, None)
        self._tracker.drop(future)
        try:
            if not future.done():
                if error is None:
                    future.set_result(job_)
                else:
                    future.set_exception(error)
        except _INVALID_STATE:
            # cancelled by its user at this moment (another thread)
            pass
        self._check_quiet()

    def _fail(self, futures, error):
        for f in futures:
            self._settle(f, None, error)

    def future_done(self, future):
        """`future` is done; if its user cancelled it, cancel its member."""
        if not future.cancelled():
            return
        self._open.pop(future, None)
        self._tracker.drop(future)
        if future.simulation is not None and not self._cancel_all:
            self._cancel_member(future)
        self._check_quiet()

    def _cancel_member(self, future):
        self._to_cancel.setdefault(future.sweep_id, set()).add(future.index)
        if self._cancel_soon is None:
            # cancels close together (a loop of cancel()) go together
            self._cancel_soon = asyncio.get_running_loop().call_later(
                self._batch_secs, self._cancels
            )

    def _cancels(self):
        """Send the member cancels asked for: one request per sweep (and chunk)."""
        self._cancel_soon = None
        c, self._to_cancel = self._to_cancel, {}
        for i, xs in c.items():
            xs = sorted(xs)
            for k in range(0, len(xs), _sweep.MAX_CANCEL_MEMBERS):
                self._spawn(self._cancel(i, xs[k : k + _sweep.MAX_CANCEL_MEMBERS]))

    async def _cancel(self, sweep_id, members=None):
        try:
            await self.client.cancel_sweep(sweep_id, members)
        except Exception as e:
            # the future is cancelled already: shutdown says it
            self._cancel_errors.append(e)

    # --- the events stream -----------------------------------------------------

    def _start(self):
        if self._reader is None and not self._closed:
            self._reader = asyncio.get_running_loop().create_task(self._read())

    async def _read(self):
        b = _base.Backoff(self.client.reconnect, None, f"executor of {self.code}")
        while True:
            try:
                async with self.client.events() as ev:
                    self._tracker.connected()
                    while (m := await ev.read()) is not None:
                        if m.get("type") == "synced":
                            b.synced()
                        for f, j, e in self._tracker.message(m):
                            self._settle(f, j, e)
            except _base.ApiError as e:
                # refused (401: a revoked token)
                return self._give_up(e)
            except OSError as e:
                lost = e
            except Exception as e:
                # a fault of the client: each future says it
                return self._give_up(e)
            else:
                # the server closed it (a restart)
                lost = None
            try:
                b.lost(lost)
            except ConnectionError as e:
                return self._give_up(e)
            await asyncio.sleep(b.backoff())

    def _give_up(self, error):
        self._error = error
        self._fail([*self._batch, *self._open], error)
        self._batch = []

    # --- shutdown --------------------------------------------------------------

    async def shutdown(self, cancel_futures=False):
        """Send what is batched, or (`cancel_futures`) cancel everything not ended.

        With `cancel_futures`, every sweep with a member not ended is
        canceled on the server (the reply comes once all its members are
        terminal) and those futures end cancelled.
        """
        if not cancel_futures:
            self._flush()
            return
        self._cancel_all = True
        for f in self._batch:
            f.cancel()
        self._batch = []
        self._flush()
        # batches under way make their sweeps first
        while self._sending:
            await asyncio.gather(*self._sending, return_exceptions=True)
        ids = list(dict.fromkeys(f.sweep_id for f in self._open if f.sweep_id))
        for f in list(self._open):
            f.cancel()
            self._open.pop(f, None)
            self._tracker.drop(f)
        await asyncio.gather(*(self._cancel(i) for i in ids))
        self._check_quiet()

    async def wait(self):
        """Until every future has ended and every request is answered.

        Raises:
            Error: a cancel the server refused
        """
        while self._busy():
            self._quiet.clear()
            await self._quiet.wait()
        if self._cancel_errors:
            e = self._cancel_errors[0]
            raise _base.Error(f"a cancel of members was refused: {e}") from e

    async def close(self):
        """Stop reading events; idempotent. Futures not ended fail."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._cancel_soon is not None:
            self._cancel_soon.cancel()
            self._cancel_soon = None
        ts = [*self._tasks, *([self._reader] if self._reader else [])]
        self._reader = None
        for t in ts:
            t.cancel()
        await asyncio.gather(*ts, return_exceptions=True)
        self._fail([*self._batch, *self._open], _base.Error("executor closed"))
        self._batch = []

    def _spawn(self, coro):
        t = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(t)
        t.add_done_callback(self._task_done)
        return t

    def _task_done(self, task):
        self._tasks.discard(task)
        self._check_quiet()

    def _busy(self):
        """Futures not ended, submits or cancels not sent, requests unanswered."""
        return bool(self._open or self._batch or self._to_cancel or self._tasks)

    def _check_quiet(self):
        if not self._busy():
            self._quiet.set()
