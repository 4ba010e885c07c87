"""Push in bounded memory: coalescing, resync of a subscriber too far behind,
paced snapshots; against the pure queue and a real supervisor with real
(bare-socket) websocket clients that stop reading.
"""

import asyncio
import base64
import json
import os
import select
import socket
import struct
import threading
import time

import requests

from supervisor import events
from supervisor.client import _base
from tests.bench import clients

# --- the queue, pure ----------------------------------------------------------


class _User:
    name = "alice"

    def is_admin(self):
        return False


class _Writer:
    """Records writes; each returns a future the test resolves (a socket that
    drains only when told)."""

    def __init__(self):
        self.written = []
        self.pending = []

    def __call__(self, data):
        self.written += [json.loads(p) for p in events.unframe(data)]
        f = asyncio.get_running_loop().create_future()
        self.pending.append(f)
        return f

    async def drain(self):
        """Resolve writes until none is left pending (as a reading client)."""
        # what a subscriber keeping up was sent this turn goes at its end
        await asyncio.sleep(0)
        while self.pending:
            self.pending.pop(0).set_result(None)
            # the subscriber's callback, then its next write
            await asyncio.sleep(0)
            await asyncio.sleep(0)


def _sub(writer, snapshot=(), max_bytes=1 << 20):
    h = events.Hub()
    s = events.Subscriber(
        _User(), None, writer, lambda: None, lambda: list(snapshot), max_bytes
    )
    h.subscribe(s)
    s.start()
    return h, s


def _job(sim, status, progress=None):
    return {"type": "job", "simulation": sim, "job": {"status": status, "p": progress}}


def _frame(sim, seq):
    return {"type": "frame", "simulation": sim, "seq": seq, "frame": {"x": seq}}


async def test_coalescing_keeps_the_newest_in_order():
    w = _Writer()
    h, _ = _sub(w, [events.SYNCED])
    await w.drain()
    h.publish("alice", "a", _job("a", "running", 0.0))
    # a subscriber keeping up is written at the end of the loop's turn
    assert [m["type"] for m in w.written] == ["synced"]
    await asyncio.sleep(0)
    assert [m["type"] for m in w.written] == ["synced", "job"]
    # the socket has not drained: the rest queue and coalesce
    for i in range(1, 50):
        h.publish("alice", "a", _job("a", "running", i / 50))
        h.publish("alice", "a", _frame("a", i))
        h.publish("alice", "b", _job("b", "queued", i))
    h.publish(
        "alice", "a", {"type": "log", "simulation": "a", "offset": 0, "text": "x"}
    )
    h.publish(
        "alice", "a", {"type": "log", "simulation": "a", "offset": 1, "text": "y"}
    )
    w.written = []
    await w.drain()
    assert w.written == [
        _job("a", "running", 49 / 50),
        _frame("a", 49),
        _job("b", "queued", 49),
        {"type": "log", "simulation": "a", "offset": 1, "text": "y"},
    ]


async def test_a_new_runs_pieces_and_a_job_after_a_simulation_keep_order():
    w = _Writer()
    h, _ = _sub(w, [events.SYNCED])
    # the socket is busy with the snapshot until drained
    h.publish("alice", "a", _frame("a", 7))
    h.publish("alice", "a", _job("a", "completed"))
    sim = {"type": "simulation", "simulation": {"id": "a", "name": "n"}}
    h.publish("alice", "a", sim)
    # a new run: its job, then its first frame (seq lower than the queued one)
    h.publish("alice", "a", _job("a", "queued"))
    h.publish("alice", "a", _frame("a", 0))
    w.written = []
    await w.drain()
    # the simulation message superseded the queued job; the new job follows
    # it, and the new run's frame 0 follows the new job (the old run's is
    # dropped: the page starts over with the new run)
    assert w.written == [sim, _job("a", "queued"), _frame("a", 0)]


async def test_a_deletion_drops_what_was_queued_of_it():
    w = _Writer()
    h, _ = _sub(w, [events.SYNCED])
    h.publish("alice", "a", _frame("a", 1))
    h.publish("alice", "a", _job("a", "running"))
    h.publish("alice", "b", _job("b", "running"))
    d = {"type": "simulation", "simulation": {"id": "a", "deleted": True}}
    h.publish("alice", "a", d)
    w.written = []
    await w.drain()
    assert w.written == [_job("b", "running"), d]


async def test_too_far_behind_resyncs_from_a_fresh_snapshot():
    w = _Writer()
    state = {"n": 0}

    def snapshot():
        # built when written, so it has the state of then
        return [
            events.frame(
                events.dumps({"type": "simulation", "simulation": {"id": state["n"]}})
            ),
            events.SYNCED,
        ]

    h = events.Hub()
    s = events.Subscriber(_User(), None, w, lambda: None, snapshot, 2000)
    h.subscribe(s)
    s.start()
    # distinct simulations do not coalesce: the queue passes its bound
    for i in range(100):
        h.publish("alice", f"s{i}", _job(f"s{i}", "running"))
        state["n"] = i
    assert s.queued_bytes <= 2000 and h.resyncs >= 1
    h.publish("alice", "z", _job("z", "queued"))
    w.written = []
    await w.drain()
    t = [m["type"] for m in w.written]
    # what was queued before the last resync is gone; the snapshot replaces it
    i = len(t) - 1 - t[::-1].index("resync")
    assert t[i : i + 3] == ["resync", "simulation", "synced"]
    # then what was published since, in order
    assert set(t[i + 3 :]) == {"job"} and len(t) - i - 3 < 100
    assert w.written[i + 1]["simulation"]["id"] == 99
    assert w.written[-1] == _job("z", "queued")
    assert not s.closed


async def test_a_snapshot_is_written_a_page_at_a_time():
    w = _Writer()
    m = events.frame(
        events.dumps({"type": "simulation", "simulation": {"pad": "x" * 1000}})
    )
    _sub(w, [m] * 1000 + [events.SYNCED])
    # one page, then nothing until it drained
    assert len(w.written) * len(m) <= events.SNAPSHOT_PAGE_BYTES + len(m)
    assert len(w.pending) == 1
    await w.drain()
    assert len(w.written) == 1001 and w.written[-1]["type"] == "synced"


async def test_a_closed_connection_ends_the_subscriber_quietly():
    def write(data):
        raise events.Closed()

    h, s = _sub(write, [events.SYNCED])
    assert s.closed
    # later publishes are dropped, not queued
    h.publish("alice", "a", _job("a", "running"))
    assert s.queued_bytes == 0


class _Named:
    def __init__(self, name, admin=False):
        self.name = name
        self._admin = admin

    def is_admin(self):
        return self._admin


async def test_fan_out_by_owner_admin_and_simulation():
    h = events.Hub()
    got = {}
    for n, user, sim in (
        ("wide", _Named("alice"), None),
        ("one", _Named("alice"), "a"),
        ("other", _Named("alice"), "b"),
        ("bob_on_a", _Named("bob"), "a"),
        ("admin_on_a", _Named("root", True), "a"),
        ("admin", _Named("root", True), None),
        ("bob", _Named("bob"), None),
    ):
        w = got[n] = _Writer()
        s = events.Subscriber(user, sim, w, lambda: None, tuple, 1 << 20)
        h.subscribe(s)
        s.start()
    h.publish("alice", "a", _job("a", "running"))
    await asyncio.sleep(0)
    assert {n for n, w in got.items() if w.written} == {
        "wide",
        "one",
        "admin_on_a",
        "admin",
    }
    assert h.open_of("alice") == 3 and h.count() == 7


def test_client_watch_takes_a_resync_as_a_new_snapshot():
    w = _base._Watch(_Handle("r1"), _base.Reconnect(), None)
    s = {"type": "simulation", "simulation": {"id": "s1", "job": {"run_id": "r1"}}}
    s["simulation"]["job"]["status"] = "running"
    w.message(s)
    w.message({"type": "synced"})
    w.message({"type": "resync"})
    # the simulation is not in the new snapshot: it was deleted meanwhile
    try:
        w.message({"type": "synced"})
    except _base.ApiError as e:
        assert e.status == 404
    else:
        raise AssertionError("a snapshot without the simulation was not noticed")


class _Handle:
    def __init__(self, run_id=None):
        self.id = "s1"
        self.run_id = run_id


# --- a real supervisor, clients on bare sockets -------------------------------


class RawEvents:
    """``/api/events`` on a bare blocking socket: it reads only when asked, so
    it can stall the server's writes (with a small receive buffer)."""

    def __init__(self, url, token, rcvbuf=None):
        h, p = url.split("//", 1)[1].split(":")
        s = self.sock = socket.socket()
        if rcvbuf:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        s.settimeout(30)
        s.connect((h, int(p)))
        k = base64.b64encode(os.urandom(16)).decode()
        s.sendall(
            (
                f"GET /api/events HTTP/1.1\r\nHost: {h}:{p}\r\n"
                "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {k}\r\nSec-WebSocket-Version: 13\r\n"
                f"Authorization: Bearer {token}\r\n\r\n"
            ).encode()
        )
        self._buf = b""
        self.closed = False
        self.sent_at = time.monotonic()

    def handshake(self):
        while b"\r\n\r\n" not in self._buf:
            self._more()
        h, self._buf = self._buf.split(b"\r\n\r\n", 1)
        assert h.startswith(b"HTTP/1.1 101"), h[:200]

    def _more(self):
        b = self.sock.recv(1 << 16)
        if not b:
            raise ConnectionError("closed by the server")
        self._buf += b

    def _take(self, n):
        while len(self._buf) < n:
            self._more()
        r, self._buf = self._buf[:n], self._buf[n:]
        return r

    def read(self):
        """The next message (a dict), or None if the server closed."""
        while True:
            a, b = self._take(2)
            n = b & 0x7F
            if n == 126:
                (n,) = struct.unpack("!H", self._take(2))
            elif n == 127:
                (n,) = struct.unpack("!Q", self._take(8))
            d = self._take(n)
            op = a & 0x0F
            if op == 0x8:
                self.closed = True
                return None
            if op == 0x9:
                # a pong, masked (zero mask) as clients must
                self.sock.sendall(bytes((0x8A, 0x80 | len(d))) + b"\0\0\0\0" + d)
                continue
            return json.loads(d)

    def fileno(self):
        return self.sock.fileno()

    def close(self):
        self.sock.close()


def _rss_bytes(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def _apply(state, m):
    """A client's view, as the GUI keeps it (static/js/events.js)."""
    t = m["type"]
    if t == "resync":
        state["seen"] = set()
    elif t == "simulation":
        s = m["simulation"]
        if s.get("deleted"):
            state["sims"].pop(s["id"], None)
        else:
            state["sims"][s["id"]] = s
            state["seen"].add(s["id"])
    elif t == "job" and m["simulation"] in state["sims"]:
        state["sims"][m["simulation"]]["job"] = m["job"]
    elif t == "synced":
        for i in set(state["sims"]) - state["seen"]:
            del state["sims"][i]


async def test_stalled_subscriber_is_coalesced_and_resynced_in_bounded_memory(
    server_factory, tmp_path
):
    d = tmp_path / "data"
    secret = "s" * 43
    clients.seed_agent(d, "admin-local-t", secret)
    sv = server_factory(
        data_dir=d, max_event_queue_bytes=8192, agent_idle_secs=600, local_cores=2
    )
    agent = await clients.FakeAgent.connect(sv.url, "admin-local-t", secret)
    try:
        sid = sv.create("admin", "sleep", secs=0)["id"]
        c = RawEvents(sv.url, sv.tokens["admin"], rcvbuf=4096)
        c.handshake()
        assert c.read()["type"] == "simulation" and c.read()["type"] == "synced"
        # from here the client reads nothing until the end
        sv.run("admin", sid)
        rid = (await agent.next_run())["run_id"]
        agent.send("started", run_id=rid, pid=0)
        rss0 = _rss_bytes(sv.proc.pid)
        n = 60000
        for i in range(1, n + 1):
            agent.send("progress", run_id=rid, progress=i / (n + 1))
            if i % 2000 == 0:
                await asyncio.sleep(0.01)
        await _until(lambda: sv.job("admin", sid)["progress"] == n / (n + 1))
        # ~25 MB of job pushes went to a client that reads nothing
        grown = _rss_bytes(sv.proc.pid) - rss0
        assert grown < 10 * 1024 * 1024, f"supervisor grew {grown} bytes"
        # distinct simulations (long names, so big messages that do not
        # coalesce): more than the queue and the socket buffers may hold
        # (about 140 KiB: ws.EVENTS_SEND_BUFFER_BYTES, doubled, and the client's), so a
        # resync
        made = [
            sv.api(
                "POST",
                "/simulations",
                "admin",
                json={"code": "sleep", "name": f"{i:03d}" + "n" * 190},
                expect=201,
            ).json()["id"]
            for i in range(300)
        ]
        for i in range(200):
            agent.send("frame", run_id=rid, seq=i, data={"x": i})
        agent.send("progress", run_id=rid, progress=1.0)
        agent.send("exited", run_id=rid, status="completed", exit_code=0, error=None)
        await _until(lambda: sv.job("admin", sid)["status"] == "completed")
        agent.check()
        # the last change: its push ends what the client reads
        sv.api("PATCH", f"/simulations/{sid}", json={"name": "end"}, expect=200)
        # now read it all: the end state must be the server's
        got = await asyncio.to_thread(_read_to_the_end, c, sid)
        c.close()
    finally:
        await agent.close()
    types = [m["type"] for m in got]
    assert "resync" in types and not c.closed
    # what the kernel buffers held got through; the rest coalesced
    assert types.count("job") < n / 4, "job pushes were not coalesced"
    r = types[::-1].index("resync")
    after = got[len(got) - r :]
    # the frames queued after the resync coalesced to the newest
    assert [m["seq"] for m in after if m["type"] == "frame"] == [199]
    # ... and a client recovers the rest from the frames API
    f = sv.api("GET", f"/simulations/{sid}/frames?since=0", expect=200).json()
    assert [x["x"] for x in f["frames"]] == list(range(200))
    st = {"sims": {}, "seen": set()}
    for m in got:
        _apply(st, m)
    want = {s["id"]: s for s in sv.api("GET", "/simulations", expect=200).json()}
    assert set(st["sims"]) == set(want) == {sid, *made}
    for i, s in want.items():
        assert st["sims"][i]["name"] == s["name"]
        assert st["sims"][i]["job"] == s["job"], i


def _read_to_the_end(c, sid):
    """Messages until the push of the rename to "end" (after any snapshot)."""
    got = []
    live = True
    while True:
        m = c.read()
        assert m is not None, "the server closed the stream"
        got.append(m)
        t = m["type"]
        if t == "resync":
            live = False
        elif t == "synced":
            live = True
        elif live and t == "simulation" and m["simulation"]["name"] == "end":
            return got


async def _until(pred, timeout_secs=60):
    end = time.monotonic() + timeout_secs
    while not await asyncio.to_thread(pred):
        assert time.monotonic() < end, "timed out"
        await asyncio.sleep(0.05)


def _seed_sims(data_dir, user, count, pad):
    d = data_dir / "db" / "jobs" / user
    d.mkdir(parents=True)
    for i in range(count):
        s = f"{user[:2]}{i:010x}"
        (d / f"{s}.json").write_text(
            json.dumps(
                {
                    "id": s,
                    "user": user,
                    "code": "sleep",
                    "name": f"sim {i} {pad}",
                    "params": {"secs": i},
                    "created": 1e9 + i,
                }
            )
        )


def test_reconnect_storm_does_not_delay_another_user(server_factory, tmp_path):
    d = tmp_path / "data"
    _seed_sims(d, "bob", 1000, "x" * 150)
    sv = server_factory(data_dir=d, basic_max_event_sockets=400, rate_per_sec=0)
    sv.add_user("bob")
    sv.add_user("carol")
    sv.create("carol", "sleep", secs=1)
    socks = []
    done = threading.Event()
    lat = []
    errors = []

    storm_secs = []

    def storm():
        t0 = time.monotonic()
        try:
            # 200 sockets at once; each reads its snapshot to the end
            socks.extend(RawEvents(sv.url, sv.tokens["bob"]) for _ in range(200))
            synced = _read_all(socks)
            errors.extend(f"{n} simulations" for n in synced if n != 1000)
        except Exception as e:
            errors.append(repr(e))
        finally:
            storm_secs.append(time.monotonic() - t0)
            done.set()

    t = threading.Thread(target=storm)
    s = requests.Session()
    h = {"Authorization": "Bearer " + sv.tokens["carol"]}
    t.start()
    try:
        while not done.is_set():
            t0 = time.monotonic()
            r = s.get(sv.url + "/api/simulations", headers=h, timeout=30)
            lat.append(time.monotonic() - t0)
            assert r.status_code == 200 and len(r.json()) == 1
    finally:
        t.join(60)
        for c in socks:
            c.close()
    assert not errors, errors[:3]
    assert len(lat) >= 3, "the storm was over before it could be measured"
    # generous: the storm's snapshots are ~30 MB of pushes; carol waits for
    # a page or two of them at most, never for a whole snapshot
    assert (
        max(lat) < 2.0
    ), f"carol waited {max(lat):.2f} s (n={len(lat)}) storm {storm_secs}"


def _read_all(socks):
    """Read every socket's snapshot; the count of simulations of each."""
    for c in socks:
        c.handshake()
    counts = {c: 0 for c in socks}
    left = set(socks)
    for c in socks:
        c.sock.setblocking(False)
    end = time.monotonic() + 90
    while left:
        assert time.monotonic() < end, f"{len(left)} sockets not synced"
        r, _, _ = select.select(list(left), [], [], 5)
        for c in r:
            try:
                c._more()
            except BlockingIOError:
                continue
            while (m := _parse(c)) is not None:
                if m["type"] == "simulation":
                    counts[c] += 1
                elif m["type"] == "synced":
                    left.discard(c)
    return list(counts.values())


def _parse(c):
    """A whole message from `c`'s buffer, or None if more is needed."""
    b = c._buf
    if len(b) < 2:
        return None
    n = b[1] & 0x7F
    h = 2
    if n == 126:
        if len(b) < 4:
            return None
        (n,) = struct.unpack("!H", b[2:4])
        h = 4
    elif n == 127:
        if len(b) < 10:
            return None
        (n,) = struct.unpack("!Q", b[2:10])
        h = 10
    if len(b) < h + n:
        return None
    c._buf = b[h + n :]
    if b[0] & 0x0F == 0x9:
        # a ping (the storm outlasted the ping interval): answer it
        c.sock.sendall(bytes((0x8A, 0x80 | n)) + b"\0\0\0\0" + b[h : h + n])
        return _parse(c)
    if b[0] & 0x0F != 0x1:
        raise ConnectionError(f"not a text message: {b[: h + n][:100]!r}")
    return json.loads(b[h : h + n])


async def test_a_new_runs_job_is_not_passed_by_the_old_runs_pieces():
    # frames and log pieces carry no run id: a piece queued before the job of
    # a new run must not come after it (nor be replaced in place, before that
    # job, by a later piece of the new run), or a client takes it for the new
    # run's (or the new run's for the old one's)
    def job(status, run_id):
        return {
            "type": "job",
            "simulation": "a",
            "job": {"status": status, "run_id": run_id},
        }

    w = _Writer()
    h, _ = _sub(w, [events.SYNCED])
    await w.drain()
    h.publish("alice", "a", job("running", "r1"))
    await asyncio.sleep(0)
    # the socket is busy with that: the rest queue
    h.publish("alice", "a", _frame("a", 5))
    h.publish("alice", "a", job("completed", "r1"))
    h.publish("alice", "a", job("running", "r2"))
    h.publish("alice", "a", _frame("a", 7))
    w.written = []
    await w.drain()
    assert w.written == [job("running", "r2"), _frame("a", 7)]
    # a job of the same run drops nothing
    w.written = []
    h.publish("alice", "a", _frame("a", 8))
    h.publish("alice", "a", _frame("a", 9))
    h.publish("alice", "a", job("running", "r2"))
    await w.drain()
    assert w.written == [_frame("a", 8), _frame("a", 9), job("running", "r2")]


async def test_after_a_restart_the_first_job_of_a_new_run_drops_the_old_pieces():
    # the hub is told the runs loaded: without that, the first job it sees
    # of a simulation cannot tell a new run from the loaded one
    def job(status, run_id):
        return {
            "type": "job",
            "simulation": "a",
            "job": {"status": status, "run_id": run_id},
        }

    w = _Writer()
    h, _ = _sub(w, [events.SYNCED])
    h.know_runs([("a", "r1")])
    await w.drain()
    h.publish("alice", "a", _frame("a", 4))
    await asyncio.sleep(0)
    # the socket is busy with that: the rest queue
    h.publish("alice", "a", _frame("a", 5))
    h.publish("alice", "a", job("queued", "r2"))
    w.written = []
    await w.drain()
    assert w.written == [job("queued", "r2")]


async def test_what_a_turn_of_the_loop_publishes_is_one_write_every_frame_kept():
    w = _Writer()
    h, _ = _sub(w, [events.SYNCED])
    await w.drain()
    w.written = []
    ms = [_job("a", "running", i / 10) for i in range(10)] + [_frame("a", 1)]
    for m in ms:
        h.publish("alice", "a", m)
    assert not w.pending
    await asyncio.sleep(0)
    # one write (one future) of all of them: none coalesced, in order
    assert len(w.pending) == 1 and w.written == ms
