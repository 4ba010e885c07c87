"""Row 13 driven from the bench: the supervisor's push fan-out beside a bare relay.

The load and who subscribes are described in `push_load`. Both sides run the
same sender (in the bench process, on a 50 ms clock), the same subscribers'
process and the same ``/api/health``-style poller (one request at a time,
every 50 ms); the supervisor's RSS is sampled every 100 ms. Everything
started here is stopped here (the supervisor by `_Bench.cleanup`).
"""

import asyncio
import json
import sys
import time

import tornado.httpclient
import tornado.websocket

from tests.bench import clients, figures, push_load
from tests.bench.push_load import FRAMES_PER_SEC, LOAD_SECS, RUNS, SUBSCRIBERS, WIDE
from tests.bench.report import BenchError

_HEALTH_EVERY_SECS = 0.05
_RSS_EVERY_SECS = 0.1
_WAIT_SECS = 60


def _rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise BenchError(f"no VmRSS for pid {pid}")


def _frame_data(seq):
    """A frame as a code sends it: a data point of a few series, and the
    send time (first, so the subscribers find it without parsing JSON)."""
    return {
        "t": time.perf_counter_ns(),
        "step": seq,
        "time": round(seq / FRAMES_PER_SEC, 3),
        "values": [round((seq * 0.37 + k) % 1.0, 6) for k in range(8)],
    }


def _paths(prefix, one, ids):
    """990 streams of one simulation each (spread over the runs), 10 of all."""
    return [one + ids[i % len(ids)] for i in range(SUBSCRIBERS - WIDE)] + [
        prefix
    ] * WIDE


class _Subscribers:
    """The subscribers' process (`push_load` ``clients``)."""

    def __init__(self):
        self.proc = None

    async def start(self, port, paths, headers, synced):
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.bench.push_load",
            "clients",
            # the report carries up to 20,000 samples on one line
            limit=1 << 24,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            cwd=clients.ROOT,
        )
        self._say(
            host="127.0.0.1", port=port, paths=paths, headers=headers, synced=synced
        )
        r = await self._read()
        if r.get("ready") != len(paths):
            raise BenchError(f"subscribers: {r}")
        return r

    def _say(self, **kwargs):
        self.proc.stdin.write((json.dumps(kwargs) + "\n").encode())

    def command(self, line):
        self.proc.stdin.write(line.encode() + b"\n")

    async def _read(self):
        try:
            b = await asyncio.wait_for(self.proc.stdout.readline(), _WAIT_SECS)
        except asyncio.TimeoutError:
            raise BenchError(f"subscribers silent for {_WAIT_SECS} s") from None
        if not b:
            raise BenchError(f"subscribers exited rc={await self.proc.wait()}")
        return json.loads(b)

    async def stop_recording(self):
        self.command("stop")
        return await self._read()

    async def stop(self):
        if self.proc is None or self.proc.returncode is not None:
            return
        try:
            self.command("close")
            self.proc.stdin.close()
            await asyncio.wait_for(self.proc.wait(), 20)
        except (asyncio.TimeoutError, ConnectionError):
            self.proc.kill()
            await self.proc.wait()


async def _load(send_tick, health_url, rss_pid, subs):
    """Run the load for `LOAD_SECS`: (subscribers' report, health secs, RSS MiB)."""
    stop = asyncio.Event()
    health = []
    rss = []
    http = tornado.httpclient.AsyncHTTPClient()

    async def poll_health():
        while not stop.is_set():
            t0 = time.perf_counter()
            await http.fetch(health_url, request_timeout=_WAIT_SECS)
            health.append(time.perf_counter() - t0)
            await asyncio.sleep(_HEALTH_EVERY_SECS)

    async def sample_rss():
        while not stop.is_set():
            rss.append(_rss_mib(rss_pid))
            await asyncio.sleep(_RSS_EVERY_SECS)

    tasks = [asyncio.create_task(poll_health())]
    if rss_pid:
        tasks.append(asyncio.create_task(sample_rss()))
    try:
        subs.command("go")
        t0 = time.perf_counter()
        late = 0
        for tick in range(LOAD_SECS * FRAMES_PER_SEC):
            d = t0 + tick / FRAMES_PER_SEC - time.perf_counter()
            if d > 0:
                await asyncio.sleep(d)
            else:
                late += 1
            send_tick(tick)
        sent_secs = time.perf_counter() - t0
        # what is still on its way arrives
        await asyncio.sleep(0.5)
        r = await subs.stop_recording()
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
    r["ticks"] = LOAD_SECS * FRAMES_PER_SEC
    r["send_secs"] = sent_secs
    r["late_ticks"] = late
    return r, health, rss


async def figure(conftest, data_dir):
    """The load through a real supervisor; a dict of what was measured."""
    b = figures.FakeAgentBench(conftest, data_dir, RUNS)
    n = SUBSCRIBERS + 50
    b.server.cfg.update(
        basic_max_event_sockets=n,
        premium_max_event_sockets=n,
        max_connections_per_address=4 * n,
    )
    subs = _Subscribers()
    out = {}
    try:
        await b.start()
        a = b.agent
        ids = await b.api.create_sims(RUNS, "sleep", {"secs": 0})
        runs = []
        for sid in ids:
            m0 = b.events.mark()
            await b.api.call("POST", f"/simulations/{sid}/run", expect=202)
            rid = (await a.next_run())["run_id"]
            a.send("started", run_id=rid, pid=0)
            await b.events.wait_for(
                lambda m, s=sid: clients.is_job(m, s, ("running",)), m0, "running"
            )
            runs.append(rid)
        pid = b.server.proc.pid
        out["rss_start"] = _rss_mib(pid)
        t = b.server.tokens["admin"]
        c = await subs.start(
            b.server.port,
            _paths("/api/events", "/api/events?simulation=", ids),
            f"Authorization: Bearer {t}\r\n",
            True,
        )
        out["connect_secs"] = c["connect_secs"]
        out["rss_connected"] = _rss_mib(pid)

        def tick(seq):
            for rid in runs:
                a.send("frame", run_id=rid, seq=seq, data=_frame_data(seq))

        r, health, rss = await _load(tick, b.server.url + "/api/health", pid, subs)
        out.update(r, health=health, rss_peak=max(rss))
        await asyncio.sleep(push_load.SETTLE_SECS)
        out["rss_after"] = _rss_mib(pid)
        await subs.stop()
        await asyncio.sleep(push_load.SETTLE_SECS)
        out["rss_closed"] = _rss_mib(pid)
        m0 = b.events.mark()
        for rid in runs:
            a.send("exited", run_id=rid, status="completed", exit_code=0, error=None)
        await b.events.wait_ended(ids, m0, "held runs completed")
        a.check()
        # the frames the runs made are the service's data, not push memory:
        # forget them (delete the simulations) before the last sample
        for sid in ids:
            await b.api.call("DELETE", f"/simulations/{sid}", expect=200)
        await asyncio.sleep(push_load.SETTLE_SECS)
        out["rss_end"] = _rss_mib(pid)
        return out
    finally:
        await subs.stop()
        out["leftovers"] = await b.cleanup()


async def floor():
    """The same load through `push_load`'s bare relay."""
    relay = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.bench.push_load",
        "relay",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        cwd=clients.ROOT,
    )
    subs = _Subscribers()
    ins = {}
    try:
        port = int(await asyncio.wait_for(relay.stdout.readline(), _WAIT_SECS))
        ids = [f"f{i:011x}" for i in range(RUNS)]
        for i in ids:
            ins[i] = await tornado.websocket.websocket_connect(
                f"ws://127.0.0.1:{port}/in?ch={i}"
            )
        await subs.start(port, _paths("/out?ch=*", "/out?ch=", ids), "", False)

        def tick(seq):
            for i in ids:
                ins[i].write_message(
                    json.dumps(
                        {
                            "type": "frame",
                            "simulation": i,
                            "seq": seq,
                            "frame": _frame_data(seq),
                        },
                        separators=(",", ":"),
                    )
                )

        r, health, _ = await _load(
            tick, f"http://127.0.0.1:{port}/api/health", None, subs
        )
        r["health"] = health
        return r
    finally:
        await subs.stop()
        for w in ins.values():
            w.close()
        relay.stdin.close()
        try:
            await asyncio.wait_for(relay.wait(), 10)
        except asyncio.TimeoutError:
            relay.kill()
            await relay.wait()


def expected_deliveries(ticks):
    """Frames every subscriber should get: its runs' frames, all of them."""
    return ticks * (SUBSCRIBERS - WIDE + RUNS * WIDE)


def _p99_ms(secs):
    s = sorted(secs)
    return s[min(len(s) - 1, len(s) * 99 // 100)] * 1000 if s else float("nan")


def note(fi, fl):
    """The row's note: the goal figures, whether met, and the checks."""
    e = expected_deliveries(fi["ticks"])
    h, hf = _p99_ms(fi["health"]), _p99_ms(fl["health"])
    r = fi["rss_end"] / fi["rss_start"]
    met = {
        f"push p99 <= {push_load.GOAL_P99_MS} ms": fi["p99_ms"]
        <= push_load.GOAL_P99_MS,
        f"/api/health p99 <= {push_load.GOAL_HEALTH_P99_MS} ms": h
        <= push_load.GOAL_HEALTH_P99_MS,
        "RSS at the end within 10 % of start": r <= push_load.GOAL_RSS_RATIO,
    }
    goal = "; ".join(f"{k}: {'met' if v else 'NOT met'}" for k, v in met.items())
    other = {k: v for k, v in fi["counts"].items() if k != "frame"}
    return (
        f"subscribers: {SUBSCRIBERS - WIDE} streams of one simulation "
        f"(?simulation=ID, ~{(SUBSCRIBERS - WIDE) // RUNS} per run) and {WIDE} "
        f"of everything, all the admin's (whose fake agent holds the {RUNS} "
        f"runs), in one separate process of bare asyncio sockets; "
        f"{LOAD_SECS} s of load, {fi['late_ticks']} of {fi['ticks']} sender "
        f"ticks late. Latency: frame sent by the agent -> received by a "
        f"subscriber. Push p50/p99/max: {fi['p50_ms']:.1f}/{fi['p99_ms']:.1f}/"
        f"{fi['max_ms']:.1f} ms (floor {fl['p50_ms']:.1f}/{fl['p99_ms']:.1f}/"
        f"{fl['max_ms']:.1f} ms). Deliveries: {fi['count']} of {e} frames due "
        f"({fi['count'] / fi['secs']:.0f}/s; floor {fl['count']} of "
        f"{expected_deliveries(fl['ticks'])}); other pushes {other or 'none'}. "
        f"/api/health p99 during it: {h:.1f} ms "
        f"(n={len(fi['health'])}; floor {hf:.1f} ms). Supervisor RSS: start "
        f"{fi['rss_start']:.1f} MiB (runs held, no subscribers), subscribers "
        f"connected {fi['rss_connected']:.1f}, peak {fi['rss_peak']:.1f}, "
        f"{push_load.SETTLE_SECS} s after the load {fi['rss_after']:.1f} "
        f"(subscribers still connected, the runs' {fi['ticks'] * RUNS} frames "
        f"kept), after they closed {fi['rss_closed']:.1f}, at the end (runs "
        f"ended, their simulations and frames deleted) {fi['rss_end']:.1f} "
        f"({r:.2f}x start, {fi['rss_end'] / fi['rss_connected']:.2f}x with "
        f"the subscribers connected). "
        f"Subscribers' process CPU while measuring: "
        f"{fi['cpu_secs'] / fi['secs']:.0%} of a core (floor "
        f"{fl['cpu_secs'] / fl['secs']:.0%}), so not the bottleneck when "
        f"well under 100 %. Goal (issue 10): {goal}"
    )
