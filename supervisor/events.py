"""Push: every change a subscriber may see, sent as it happens, in bounded memory.

Subscribers are the ``/api/events`` websockets. A user sees their own
simulations; an admin sees everyone's. Nothing here awaits.

Each change is serialised once (`Hub.publish`) and the same bytes are queued
on every subscriber who may see it. A subscriber writes to its socket only
when its previous write has drained, so a slow client costs no CPU and its
queue fills instead. The queue coalesces: a message supersedes a queued one
with the same key (a simulation's ``job`` or ``simulation`` state, its newest
``frame`` or ``log`` piece, a host's ``sign_in``), so what a slow client gets
is the newest state, and frames or log text it skipped it fetches (their
``seq`` or ``offset`` shows the gap; ``GET .../frames?since=``, ``.../log``).
When the queue still holds more than its bound in bytes, it is dropped and
the subscriber is resynchronised: ``{"type": "resync"}``, then the snapshot
(one ``simulation`` message each, then ``synced``), then changes again.

A snapshot is built lazily from each simulation's cached message (the cache
entry is dropped by any publish about it) and written a page at a time, each
page after the previous one drained, so a reconnect storm of one user yields
the event loop to everyone else's requests between pages.
"""

import asyncio
import collections
import struct

import msgspec
from pykern.pkdebug import pkdlog

#: snapshot bytes written at once, before waiting for them to drain
SNAPSHOT_PAGE_BYTES = 64 * 1024

_ENCODER = msgspec.json.Encoder()

#: live messages written at once (a slow client's backlog in one write)
LIVE_PAGE_BYTES = 256 * 1024


class Closed(Exception):
    """What a subscriber's writer raises once its connection is closed."""


def dumps(msg):
    """`msg` as the payload sent (compact JSON)."""
    return _ENCODER.encode(msg)


def frame(payload):
    """The websocket text frame (server to client: unmasked, final) of `payload`.

    Built once per message, so every subscriber is written the same bytes
    (Tornado's write_message frames and copies per connection).
    """
    n = len(payload)
    if n < 126:
        return struct.pack("!BB", 0x81, n) + payload
    if n <= 0xFFFF:
        return struct.pack("!BBH", 0x81, 126, n) + payload
    return struct.pack("!BBQ", 0x81, 127, n) + payload


def unframe(data):
    """The payloads of the frames in `data` (what `frame` built), in order."""
    out = []
    i = 0
    while i < len(data):
        n = data[i + 1] & 0x7F
        h = 2
        if n == 126:
            (n,) = struct.unpack_from("!H", data, i + 2)
            h = 4
        elif n == 127:
            (n,) = struct.unpack_from("!Q", data, i + 2)
            h = 10
        out.append(data[i + h : i + h + n])
        i += h + n
    return out


RESYNC = frame(b'{"type":"resync"}')
SYNCED = frame(b'{"type":"synced"}')


class _Kind:
    """How one published message coalesces with those queued before it.

    Args:
        key: what it supersedes (None: nothing; it is always queued)
        order: ``seq`` or ``offset`` of a frame or log piece (None otherwise);
            a piece supersedes in place only if it comes later in the same
            run (a lower one starts a new run, so it goes to the end)
        drops: keys of queued messages it makes redundant
        after: keys which, if queued, it must follow (so it goes to the end)
    """

    __slots__ = ("after", "drops", "key", "order")

    def __init__(self, key, order=None, drops=(), after=()):
        self.key = key
        self.order = order
        self.drops = drops
        self.after = after


def _kind(simulation_id, msg, new_run=False):
    """How `msg` coalesces; `new_run`: its job is of a run after the last one's.

    Frames and log pieces carry no run id, so those of a run that was
    replaced must not be written after the job that tells of the new run
    (nor coalesce with the new run's, in place before that job): a job of a
    new run drops what is queued of the old one's pieces.
    """
    t = msg.get("type")
    i = simulation_id
    pieces = (("frame", i), ("log", i)) if new_run else ()
    if t == "job":
        # a queued simulation message holds an older job: follow it
        return _Kind(("job", i), drops=pieces, after=(("simulation", i),))
    if t == "simulation":
        if msg["simulation"].get("deleted"):
            return _Kind(
                ("simulation", i), drops=(("job", i), ("frame", i), ("log", i))
            )
        return _Kind(("simulation", i), drops=(("job", i), *pieces))
    if t == "frame":
        return _Kind(("frame", i), order=msg["seq"])
    if t == "log":
        return _Kind(("log", i), order=msg["offset"])
    if t == "sweep":
        # its newest summary only (a deletion supersedes it too)
        return _Kind(("sweep", msg["sweep"]["id"]))
    if t == "sign_in":
        return _Kind(("sign_in", msg.get("user"), msg.get("host")))
    return _Kind(None)


class Hub:
    def __init__(self):
        # user name -> every stream of theirs (caps, revocation)
        self._by_user = {}
        # the fan-out: owner name -> streams of all that user's simulations;
        # admins' streams of everyone's; simulation id -> streams of just it
        self._wide = {}
        self._wide_admins = set()
        self._by_sim = {}
        # simulation id -> its snapshot message (bytes); dropped on any change
        self._snapshot_cache = {}
        # simulation id -> run id of the last job published of it
        self._run_of = {}
        #: messages queued on subscribers, ever
        self.sent = 0
        #: subscribers resynchronised because they fell too far behind, ever
        self.resyncs = 0
        # subscribers with frames held to the end of this turn of the loop
        self.corked = set()

    def uncork(self):
        """Write what this turn published now: before an HTTP reply, so a
        client sees the push of its own change no later than the reply."""
        for s in list(self.corked):
            s.uncork()

    def subscribe(self, sub):
        sub.hub = self
        self._by_user.setdefault(sub.user.name, set()).add(sub)
        if sub.simulation_id is not None:
            self._by_sim.setdefault(sub.simulation_id, set()).add(sub)
        elif sub.is_admin:
            self._wide_admins.add(sub)
        else:
            self._wide.setdefault(sub.user.name, set()).add(sub)

    def unsubscribe(self, sub):
        _discard(self._by_user, sub.user.name, sub)
        _discard(self._by_sim, sub.simulation_id, sub)
        _discard(self._wide, sub.user.name, sub)
        self._wide_admins.discard(sub)

    def close_user(self, name):
        """End a user's connections (their sessions were revoked)."""
        for s in list(self._by_user.get(name, ())):
            s.closed = True
            self.unsubscribe(s)
            s.close()

    def open_of(self, name):
        """Open streams of user `name`."""
        return len(self._by_user.get(name, ()))

    def count(self):
        return sum(len(s) for s in self._by_user.values())

    def publish(self, owner, simulation_id, msg):
        """Send `msg` (a dict with "type") to those who may see `owner`'s work."""
        n = False
        if simulation_id is not None:
            self._snapshot_cache.pop(simulation_id, None)
            n = self._new_run(simulation_id, msg)
        subs = [*self._wide.get(owner, ()), *self._wide_admins]
        for s in self._by_sim.get(simulation_id, ()):
            # someone else's simulation is not found for them (no snapshot
            # either), so it is not pushed either
            if s.is_admin or s.user.name == owner:
                subs.append(s)
        if not subs:
            return
        t = frame(dumps(msg))
        k = _kind(simulation_id, msg, n)
        self.sent += len(subs)
        for s in subs:
            s.push(k, t)

    def know_runs(self, pairs):
        """The current run of each simulation, as loaded: (simulation id, run id)."""
        self._run_of.update(pairs)

    def _new_run(self, simulation_id, msg):
        """Whether `msg` tells of a run other than the last one published."""
        t = msg.get("type")
        if t == "job":
            j = msg.get("job") or {}
        elif t == "simulation":
            s = msg.get("simulation") or {}
            if s.get("deleted"):
                self._run_of.pop(simulation_id, None)
                return False
            j = s.get("job") or {}
        else:
            return False
        r = j.get("run_id")
        o = self._run_of.get(simulation_id, r)
        self._run_of[simulation_id] = r
        return o != r

    def simulation_message(self, sim):
        """The snapshot message of `sim` (a frame), serialised once per change."""
        m = self._snapshot_cache.get(sim.id)
        if m is None:
            m = self._snapshot_cache[sim.id] = frame(
                dumps({"type": "simulation", "simulation": sim.to_dict()})
            )
        return m


class Subscriber:
    """One ``/api/events`` connection: its coalescing queue and its writer.

    Args:
        write (callable): takes bytes (whole websocket frames, `frame`),
            writes them, returns a future that is done once they left our
            buffers, or None if they left at once (raises `Closed` if the
            connection is)
        close (callable): closes the connection
        snapshot (callable): returns an iterator of the snapshot's messages
            (frames), the last being `SYNCED`; called again on each resync
        max_queued_bytes (int): queued beyond this, the queue is dropped and
            the subscriber resynchronised
    """

    def __init__(self, user, simulation_id, write, close, snapshot, max_queued_bytes):
        self.user = user
        self.is_admin = user.is_admin()
        self.simulation_id = simulation_id
        self.hub = None
        self._write = write
        self._close = close
        self._snapshot_of = snapshot
        self._max_queued_bytes = max_queued_bytes
        # key -> (order, payload), oldest first
        self._queue = collections.OrderedDict()
        self.queued_bytes = 0
        # the snapshot being written (an iterator), or None
        self._snapshot = None
        self._writing = False
        # frames of this turn of the loop, written together by `uncork`
        self._cork = []
        self._cork_bytes = 0
        self._cork_max = min(LIVE_PAGE_BYTES, max_queued_bytes)
        self.closed = False

    def pkdebug_str(self):
        return (
            f"Subscriber({self.user.name} sim={self.simulation_id} "
            f"queued={len(self._queue)}/{self.queued_bytes}B)"
        )

    def start(self):
        """Write the snapshot, then the changes queued since `Hub.subscribe`."""
        self._snapshot = iter(self._snapshot_of())
        self._pump()

    def close(self):
        self._close()

    def push(self, kind, payload):
        """Queue `payload` (of `kind`, a `_Kind`) and write if the socket is idle."""
        if self.closed:
            return
        q = self._queue
        if not q and not self._writing and self._snapshot is None:
            # the common case, a subscriber keeping up: out at the end of this
            # turn of the loop, with whatever else it publishes (one write of
            # many frames, not one syscall each; every frame kept, in order)
            self._cork.append(payload)
            self._cork_bytes += len(payload)
            if len(self._cork) == 1:
                if self.hub is not None:
                    self.hub.corked.add(self)
                asyncio.get_running_loop().call_soon(self.uncork)
            elif self._cork_bytes >= self._cork_max:
                # a burst (a sweep's thousands of members): written now, so
                # what follows queues behind a write that waits, coalesced
                # and within the bound, as for a subscriber not keeping up
                self.uncork()
            return
        for d in kind.drops:
            self._unqueue(d)
        k = kind.key if kind.key is not None else object()
        o = q.get(k)
        if o is not None:
            if kind.order is not None and (o[0] is None or kind.order <= o[0]):
                # a new run's piece: after whatever came since
                self._unqueue(k)
            elif any(a in q for a in kind.after):
                self._unqueue(k)
            else:
                self.queued_bytes -= len(o[1])
        q[k] = (kind.order, payload)
        self.queued_bytes += len(payload)
        if self.queued_bytes > self._max_queued_bytes:
            self._resync()
        self._pump()

    def uncork(self):
        c = self._cork
        self._cork = []
        self._cork_bytes = 0
        if self.hub is not None:
            self.hub.corked.discard(self)
        if c and not self.closed:
            # nothing was queued meanwhile: pushes go to the queue only once
            # a write waits or a snapshot is written, which only this starts
            self._send(c, False)

    def _unqueue(self, key):
        o = self._queue.pop(key, None)
        if o is not None:
            self.queued_bytes -= len(o[1])

    def _resync(self):
        """Too far behind: drop the queue; the snapshot replaces it."""
        pkdlog("{} too far behind: resync queued_bytes={}", self, self.queued_bytes)
        self._queue.clear()
        self.queued_bytes = 0
        self._snapshot = _resync_then(self._snapshot_of)
        if self.hub is not None:
            self.hub.resyncs += 1

    def _page(self):
        """(payloads to write next, whether any is the snapshot's)."""
        out = []
        n = 0
        if self._snapshot is not None:
            for m in self._snapshot:
                out.append(m)
                n += len(m)
                if n >= SNAPSHOT_PAGE_BYTES:
                    return out, True
            self._snapshot = None
            if out:
                return out, True
        q = self._queue
        while q and n < LIVE_PAGE_BYTES:
            _, (_, m) = q.popitem(last=False)
            out.append(m)
            n += len(m)
        self.queued_bytes -= n
        return out, False

    def _pump(self):
        while not self._writing and not self.closed:
            p, snapshot = self._page()
            if not p:
                return
            self._send(p, snapshot)

    def _send(self, frames, snapshot):
        try:
            f = self._write(frames[0] if len(frames) == 1 else b"".join(frames))
        except Closed:
            # on_close unsubscribes
            self.closed = True
            return
        if f is None or f.done():
            if not snapshot:
                # flushed at once: nothing to wait for
                self._check(f)
                return
            # a snapshot page always waits a turn of the loop, so others run
            self._writing = True
            asyncio.get_running_loop().call_soon(self._drained, f)
            return
        self._writing = True
        f.add_done_callback(self._drained)

    def _drained(self, future):
        self._writing = False
        if self._check(future):
            self._pump()

    def _check(self, future):
        """False if the write failed (a closed stream: on_close cleans up)."""
        if future is None:
            return True
        if future.cancelled() or future.exception() is not None:
            self.closed = True
            return False
        return True


def _discard(index, key, sub):
    s = index.get(key)
    if s is not None:
        s.discard(sub)
        if not s:
            del index[key]


def _resync_then(snapshot_of):
    yield RESYNC
    yield from snapshot_of()
