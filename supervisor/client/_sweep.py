"""What the two executors share: batches as sweeps, and which pushes end which member.

Pure: no I/O, no awaits. `batch_body` turns the parameters of many submits
into the body of one ``POST /api/sweeps`` (zipped axes of what varies, base
``params`` of what does not); `sweep_body` is the body of an explicit sweep;
`Tracker` reads the pushed messages of ``/api/events`` and says which
member futures they end, and how. `current_executor` is the executor of the
innermost ``with`` block (a `contextvars.ContextVar`, so each thread and
each asyncio task sees its own).

The futures themselves (`concurrent.futures.Future` in `executor`,
`asyncio.Future` in `executor_aio`) carry what `Tracker` needs:
``params``, and once their sweep is made ``sweep_id``, ``index`` and
``simulation``.
"""

import contextvars
import json

from supervisor.client import _base

#: seconds a batch waits for one more submit before it goes (the clock
#: restarts with each submit, up to `MAX_BATCH_WAIT_SECS`)
BATCH_SECS = 0.005

#: seconds the first submit of a batch waits at most
MAX_BATCH_WAIT_SECS = 0.1

#: submits in one batch (one sweep) at most
MAX_BATCH = 1000

#: member indices in one ``POST /api/sweeps/{id}/cancel?members=``
MAX_CANCEL_MEMBERS = 500

#: the executor of the innermost ``with`` block; see `current_executor`
_current = contextvars.ContextVar("supervisor_client_executor")


class NoExecutor(_base.Error, LookupError):
    """`current_executor` was called outside any executor's ``with`` block."""


def current_executor():
    """The `Executor` (or `AsyncExecutor`) whose ``with`` block this code runs in.

    Library code submits through it without being passed it::

        def scan(values):
            ex = supervisor.client.current_executor()
            return [ex.submit(steps=v) for v in values]

    Raises:
        NoExecutor: outside every executor's ``with`` block
    """
    e = _current.get(None)
    if e is None:
        raise NoExecutor(
            "no current executor: call inside `with client.executor(...)`"
            " (or `async with`)"
        )
    return e


def enter(executor):
    """Make `executor` current; returns the token `leave` takes."""
    return _current.set(executor)


def leave(token):
    _current.reset(token)


def batch_body(code, code_params, members, options):
    """The body of one ``POST /api/sweeps`` whose members are `members`, in order.

    What all members give alike goes in the base ``params``; each parameter
    that differs is an axis of the zip (a member that does not give it gets
    the catalog's default, which is what a run without it gets). When
    nothing differs, one parameter repeats its value (replicas).

    Args:
        code (str): the catalog's name
        code_params (list): the code's ``params`` from ``GET /api/codes``,
            or None if the catalog has no such code (the server refuses it)
        members (list): each submit's parameters (dict), in order
        options (dict): ``cores``, ``driver``, ``max_parallel``, ``name``
    Returns:
        dict: the body
    Raises:
        Error: the code has no parameters, so no axis (use ``Client.submit``)
    """
    defaults = {p["name"]: p.get("default") for p in code_params or ()}
    names = list(dict.fromkeys(k for m in members for k in m))
    base = {}
    axes = {}
    for n in names:
        vs = [m[n] if n in m else defaults.get(n) for m in members]
        k = _key(vs[0])
        if all(_key(v) == k for v in vs):
            base[n] = vs[0]
        else:
            axes[n] = vs
    if not axes:
        if names:
            n = names[0]
            axes[n] = [base.pop(n)] * len(members)
        elif code_params:
            # one with a default the catalog accepts back (not a None)
            p = next(
                (p for p in code_params if p.get("default") is not None),
                code_params[0],
            )
            axes[p["name"]] = [p.get("default")] * len(members)
        elif code_params is not None:
            raise _base.Error(
                f"code {code} has no parameters, so its runs cannot be a sweep's"
                " members: use Client.submit"
            )
    return sweep_body(code, axes, "zip", base, options)


def sweep_body(code, axes, combine, params, options):
    """The body of ``POST /api/sweeps``; `options` that are None are left out."""
    b = {"code": code, "params": params, "axes": axes, "combine": combine}
    b.update((k, v) for k, v in options.items() if v is not None)
    return b


def check_json(params):
    """`params` as given, or TypeError now if they are not JSON (not in a batch)."""
    try:
        json.dumps(params)
    except (TypeError, ValueError) as e:
        raise TypeError(f"parameters must be JSON values: {e}") from e
    return params


def member_params(params, kwargs):
    """One submit's parameters: a dict `params`, updated by keyword ones."""
    if params is not None and not isinstance(params, dict):
        raise TypeError(f"params must be a dict, not {type(params).__name__}")
    return check_json(dict(params or {}, **kwargs))


def map_rows(params, iterables):
    """The parameter dicts of ``map``: `params` (an iterable of dicts), or
    the keyword `iterables` zipped (all of one length), as ``map(f, *its)``."""
    if params is not None:
        if iterables:
            raise TypeError("map takes an iterable of dicts or keyword iterables")
        return [member_params(p, {}) for p in params]
    if not iterables:
        raise TypeError("map needs an iterable of dicts or keyword iterables")
    n = list(iterables)
    return [
        member_params(dict(zip(n, v)), {})
        for v in zip(*iterables.values(), strict=True)
    ]


def outcome(job_):
    """(job, None) if the run completed, else (None, `RunFailed`)."""
    if job_["status"] == _base.COMPLETED:
        return job_, None
    return None, _base.RunFailed(job_)


class Tracker:
    """Which member futures the pushed messages end, and with what.

    A member's pushes may come before its sweep's reply names its
    simulation: while a sweep is being made (`begin_claim` .. `end_claim`)
    the ends of simulations not yet known are kept, and `claim` takes
    them. A snapshot (after a reconnect or a ``resync``) repeats each
    simulation's state, so an end missed while disconnected is seen then.
    """

    def __init__(self):
        #: simulation id -> its member's future
        self._by_sim = {}
        self._claiming = 0
        #: simulation id -> (job, error) of ends pushed while claiming
        self._unclaimed = {}
        # while a snapshot comes: the simulations followed when it began,
        # less those it has told of (None: no snapshot under way)
        self._unseen = None

    def connected(self):
        """A new events connection: its snapshot tells of every simulation
        there is; one followed since before it and not in it is gone."""
        self._unseen = set(self._by_sim)

    def begin_claim(self):
        self._claiming += 1

    def end_claim(self):
        self._claiming -= 1
        if not self._claiming:
            self._unclaimed.clear()

    def claim(self, futures):
        """Follow `futures` (their ``simulation`` known now).

        Returns:
            list: (future, job, error) of those that ended already
        """
        res = []
        for f in futures:
            o = self._unclaimed.pop(f.simulation, None)
            if o is None:
                self._by_sim[f.simulation] = f
            else:
                res.append((f, *o))
        return res

    def drop(self, future):
        if self._by_sim.get(future.simulation) is future:
            del self._by_sim[future.simulation]

    def __len__(self):
        return len(self._by_sim)

    def message(self, msg):
        """What `msg` ends: a list of (future, job, error)."""
        t = msg.get("type")
        if t == "job":
            return self._end(msg.get("simulation"), msg.get("job"))
        if t == "resync":
            # a new snapshot follows
            self.connected()
            return []
        if t == "synced":
            return self._synced()
        if t == "simulation":
            s = msg.get("simulation") or {}
            if self._unseen is not None:
                self._unseen.discard(s.get("id"))
            if s.get("deleted"):
                e = _base.ApiError(
                    404, "deleted", f"simulation {s.get('id')} was deleted"
                )
                return self._ended(s.get("id"), (None, e))
            return self._end(s.get("id"), s.get("job"))
        return []

    def _synced(self):
        gone = self._unseen or ()
        self._unseen = None
        res = []
        for sid in gone:
            e = _base.ApiError(404, "deleted", f"simulation {sid} was deleted")
            res += self._ended(sid, (None, e))
        return res

    def _end(self, sim_id, job_):
        if not job_ or job_.get("status") not in _base.ENDED:
            return []
        return self._ended(sim_id, outcome(job_))

    def _ended(self, sim_id, o):
        f = self._by_sim.pop(sim_id, None)
        if f is not None:
            return [(f, *o)]
        if self._claiming:
            self._unclaimed[sim_id] = o
        return []


class SweepWatch:
    """Which pushed messages tell of one sweep (``watch_sweep``). Pure.

    A new connection's snapshot has every sweep of the caller before
    ``synced``: one not in it is unknown (or not the caller's).
    """

    def __init__(self, sweep_id):
        self.sweep_id = sweep_id
        self.seen = False
        self.synced = False

    def reconnecting(self):
        self.seen = False
        self.synced = False

    def message(self, msg):
        """The sweep's summary if `msg` is about it, else None.

        Raises:
            ApiError: the sweep is unknown, or was deleted
        """
        t = msg.get("type")
        if t == "resync":
            self.reconnecting()
        elif t == "synced":
            self.synced = True
            if not self.seen:
                raise _base.ApiError(404, "unknown_sweep", f"no sweep {self.sweep_id}")
        elif t == "sweep":
            s = msg.get("sweep") or {}
            if s.get("id") == self.sweep_id:
                if s.get("deleted"):
                    raise _base.ApiError(
                        404, "deleted", f"sweep {self.sweep_id} was deleted"
                    )
                self.seen = True
                return s
        return None


def _key(value):
    # 1, 1.0 and True are not alike for the catalog
    return json.dumps(value, sort_keys=True)
