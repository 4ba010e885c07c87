"""Row 13: push to 1,000 ``/api/events`` subscribers while 20 runs send 20 frames/s.

Who subscribes (all as the admin, whose fake agent holds the runs): 990
per-simulation streams (``?simulation=ID``, 49 or 50 on each of the 20 runs)
and 10 streams of everything, so every subscriber gets real pushes: 20
frames/s each, and 400/s each for the 10. The fake agent (`clients.FakeAgent`,
in the bench process) sends each run's frame every 50 ms with its send time
(`time.perf_counter_ns`, CLOCK_MONOTONIC: one clock for all processes) in the
frame's data; a subscriber's latency is its arrival time minus that.

The subscribers live in one separate process (``python -m tests.bench.push_load
clients``): bare asyncio sockets, a websocket frame parser of a few lines, and
no JSON parsing of frames (the send time is found by a byte search). It
reports the CPU it used while measuring, so a reader can see that it was not
the bottleneck. The floor: the same fan-out of the same bytes to the same
number of subscribers, through a bare Tornado relay (``python -m
tests.bench.push_load relay``: each message on ``/in?ch=X`` written to every
``/out?ch=X`` and ``/out?ch=*``), by the same sender and the same clients.
"""

import asyncio
import base64
import json
import os
import resource
import sys
import time

#: the load: runs, frames per second of each, subscribers, seconds
RUNS = 20
FRAMES_PER_SEC = 20
SUBSCRIBERS = 1000
WIDE = 10
LOAD_SECS = 12
#: after the load: seconds before the RSS "after" sample
SETTLE_SECS = 3
#: goal of issue 10
GOAL_P99_MS = 50
GOAL_HEALTH_P99_MS = 20
GOAL_RSS_RATIO = 1.10

_CONNECTS_AT_ONCE = 50
_WAIT_SECS = 60


# --- the subscribers' process ----------------------------------------------


class _Sub(asyncio.Protocol):
    """One websocket client: handshake, then text frames to `_Clients.got`."""

    def __init__(self, owner, request, wants_synced):
        self._owner = owner
        self._request = request
        self._wants_synced = wants_synced
        self._buf = b""
        self._open = False
        self.ready = asyncio.get_running_loop().create_future()
        self.transport = None

    def connection_made(self, transport):
        self.transport = transport
        transport.write(self._request)

    def connection_lost(self, exc):
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(f"closed: {exc}"))
        self._owner.lost += 1

    def data_received(self, data):
        b = self._buf + data
        if not self._open:
            i = b.find(b"\r\n\r\n")
            if i < 0:
                self._buf = b
                return
            if not b.startswith(b"HTTP/1.1 101"):
                self.ready.set_exception(ConnectionError(b[:200].decode()))
                self.transport.close()
                return
            self._open = True
            b = b[i + 4 :]
            if not self._wants_synced:
                self.ready.set_result(None)
        i = 0
        n = len(b)
        while n - i >= 2:
            x = b[i + 1] & 0x7F
            h = 2
            if x == 126:
                if n - i < 4:
                    break
                x = int.from_bytes(b[i + 2 : i + 4], "big")
                h = 4
            elif x == 127:
                if n - i < 10:
                    break
                x = int.from_bytes(b[i + 2 : i + 10], "big")
                h = 10
            if n - i < h + x:
                break
            op = b[i] & 0x0F
            p = b[i + h : i + h + x]
            i += h + x
            if op == 0x1:
                self._owner.got(self, p)
            elif op == 0x9:
                self.transport.write(bytes((0x8A, 0x80 | x)) + b"\0\0\0\0" + p)
        self._buf = b[i:]


class _Clients:
    """All subscribers of one load; latencies recorded between go and stop."""

    def __init__(self):
        self.subs = []
        self.lost = 0
        self.recording = False
        self.lat_ns = []
        self.counts = {}
        self.bytes = 0

    def got(self, sub, payload):
        if payload.startswith(b'{"type":"frame"'):
            if self.recording:
                now = time.perf_counter_ns()
                i = payload.find(b'"t":') + 4
                j = payload.find(b",", i)
                self.lat_ns.append(now - int(payload[i:j]))
                self.bytes += len(payload)
            return
        if payload == b'{"type":"synced"}' and not sub.ready.done():
            sub.ready.set_result(None)
        if self.recording:
            t = json.loads(payload).get("type")
            self.counts[t] = self.counts.get(t, 0) + 1

    async def connect(self, host, port, paths, headers, wants_synced):
        loop = asyncio.get_running_loop()
        sem = asyncio.Semaphore(_CONNECTS_AT_ONCE)

        async def one(path):
            k = base64.b64encode(os.urandom(16)).decode()
            r = (
                f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
                "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {k}\r\nSec-WebSocket-Version: 13\r\n"
                f"{headers}\r\n"
            ).encode()
            async with sem:
                _, s = await loop.create_connection(
                    lambda: _Sub(self, r, wants_synced), host, port
                )
                self.subs.append(s)
                await asyncio.wait_for(s.ready, _WAIT_SECS)

        await asyncio.gather(*(one(p) for p in paths))


async def _clients_main():
    """Read the spec, connect, then obey ``go``/``stop``/``close`` lines."""
    loop = asyncio.get_running_loop()
    r = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(r), sys.stdin)
    spec = json.loads(await r.readline())
    c = _Clients()
    t0 = time.monotonic()
    await c.connect(
        spec["host"], spec["port"], spec["paths"], spec["headers"], spec["synced"]
    )
    _say(ready=len(c.subs), connect_secs=time.monotonic() - t0)
    cpu = wall = 0
    while line := (await r.readline()).strip():
        if line == b"go":
            c.recording = True
            cpu = _cpu_secs()
            wall = time.monotonic()
        elif line == b"stop":
            c.recording = False
            s = sorted(c.lat_ns)
            k = max(1, len(s) // 20000)
            _say(
                count=len(s),
                p50_ms=_pct(s, 50) / 1e6,
                p99_ms=_pct(s, 99) / 1e6,
                max_ms=s[-1] / 1e6 if s else None,
                # every k-th of the sorted samples: the same quantiles
                samples_ms=[x / 1e6 for x in s[::k]],
                secs=time.monotonic() - wall,
                cpu_secs=_cpu_secs() - cpu,
                counts=c.counts,
                lost=c.lost,
            )
        elif line == b"close":
            break
    for s in c.subs:
        s.transport.close()


def _cpu_secs():
    u = resource.getrusage(resource.RUSAGE_SELF)
    return u.ru_utime + u.ru_stime


def _pct(sorted_samples, p):
    if not sorted_samples:
        return float("nan")
    return sorted_samples[min(len(sorted_samples) - 1, len(sorted_samples) * p // 100)]


def _consume(future):
    """A write to a subscriber that closed at the end: nothing to report."""
    if not future.cancelled():
        future.exception()


def _say(**kwargs):
    sys.stdout.write(json.dumps(kwargs) + "\n")
    sys.stdout.flush()


# --- the floor's relay -------------------------------------------------------


async def _relay_main():
    import tornado.web
    import tornado.websocket

    from tests.bench import relay

    outs = {}

    class Out(tornado.websocket.WebSocketHandler):
        def open(self):
            self.set_nodelay(True)
            self.ch = self.get_query_argument("ch")
            outs.setdefault(self.ch, set()).add(self)

        def on_close(self):
            outs.get(self.ch, set()).discard(self)

    class In(tornado.websocket.WebSocketHandler):
        def open(self):
            self.set_nodelay(True)
            self.ch = self.get_query_argument("ch")

        def on_message(self, message):
            for o in (*outs.get(self.ch, ()), *outs.get("*", ())):
                try:
                    o.write_message(message).add_done_callback(_consume)
                except tornado.websocket.WebSocketClosedError:
                    # a subscriber leaving at the end
                    pass

    class Health(tornado.web.RequestHandler):
        def get(self):
            self.write({"ok": True})

    await relay.serve(
        tornado.web.Application(
            [(r"/in", In), (r"/out", Out), (r"/api/health", Health)],
            websocket_ping_interval=15,
        )
    )


if __name__ == "__main__":
    asyncio.run(_clients_main() if sys.argv[1] == "clients" else _relay_main())
