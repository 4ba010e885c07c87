"""What the bench talks to a supervisor with: HTTP, ``/api/events``, ``/agent``.

All asyncio and Tornado, in the bench process, so a time taken before a
request and a time taken when a push arrives are on one clock
(`time.perf_counter`). Every wait has a timeout.
"""

import asyncio
import importlib.util
import json
import os
import pathlib
import socket
import time
import urllib.parse

import tornado.httpclient
import tornado.websocket

from agent import protocol
from supervisor import users
from tests.bench.report import BenchError

ROOT = pathlib.Path(__file__).resolve().parents[2]

#: the longest any single wait of the bench may take
WAIT_SECS = 30.0

#: statuses a run ends in
ENDED = frozenset(("completed", "error", "canceled", "timed_out"))


def load_conftest():
    """tests/conftest.py as a module (its `Server`, `procs_under`)."""
    s = importlib.util.spec_from_file_location(
        "simvisor_bench_conftest", ROOT / "tests" / "conftest.py"
    )
    m = importlib.util.module_from_spec(s)
    s.loader.exec_module(m)
    return m


def ws_url(http_url):
    return "ws" + http_url[len("http") :]


def group_members(pgid):
    """Pids of live (not zombie) processes in process group `pgid`."""
    res = []
    for d in pathlib.Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            x = (d / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if x[0] != "Z" and int(x[2]) == pgid:
            res.append(int(d.name))
    return res


def cpu_secs(pid):
    """User + system CPU seconds of process `pid` so far."""
    x = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(x[11]) + int(x[12])) / os.sysconf("SC_CLK_TCK")


def pgid_of(pid):
    try:
        return int(
            pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[2]
        )
    except OSError:
        return None


class Api:
    """JSON over HTTP as one user, with `max_clients` requests in flight."""

    def __init__(self, base_url, token, max_clients=64):
        self.base_url = base_url
        self._headers = {
            "Authorization": "Bearer " + token,
            "Content-Type": "application/json",
        }
        self._client = tornado.httpclient.AsyncHTTPClient(
            force_instance=True, max_clients=max_clients
        )

    async def call(self, method, path, body=None, expect=None, timeout=WAIT_SECS):
        """``method /api<path>``; the decoded reply, checked against `expect`."""
        if body is None and method in ("POST", "PATCH", "PUT"):
            body = {}
        r = await self._client.fetch(
            self.base_url + "/api" + path,
            method=method,
            headers=self._headers,
            body=None if body is None else json.dumps(body),
            raise_error=False,
            connect_timeout=timeout,
            request_timeout=timeout,
        )
        if r.code == 599:
            raise BenchError(f"{method} {path}: {r.error}")
        if expect is not None and r.code != expect:
            raise BenchError(f"{method} {path}: {r.code} {r.body[:300]!r}")
        return json.loads(r.body) if r.body else None

    async def upload(self, path, data, timeout=WAIT_SECS):
        """POST the bytes `data` to ``/api<path>`` (an input file); 201 expected."""
        r = await self._client.fetch(
            self.base_url + "/api" + path,
            method="POST",
            headers=dict(self._headers, **{"Content-Type": "application/octet-stream"}),
            body=data,
            raise_error=False,
            request_timeout=timeout,
        )
        if r.code != 201:
            raise BenchError(f"POST {path}: {r.code} {r.body[:300]!r}")

    async def call_text(self, method, path, root=False, timeout=WAIT_SECS):
        """``method path`` (under /api unless `root`); the body as text."""
        r = await self._client.fetch(
            self.base_url + ("" if root else "/api") + path,
            method=method,
            headers=self._headers,
            raise_error=False,
            connect_timeout=timeout,
            request_timeout=timeout,
        )
        if r.code != 200:
            raise BenchError(f"{method} {path}: {r.code} {r.error or r.body[:300]!r}")
        return r.body.decode()

    async def create_sims(self, count, code, params, concurrency=16):
        """`count` new simulations; their ids."""
        s = asyncio.Semaphore(concurrency)

        async def one(i):
            async with s:
                b = {"code": code, "name": f"bench-{code}-{i}", "params": params}
                return (await self.call("POST", "/simulations", b, expect=201))["id"]

        return await asyncio.gather(*(one(i) for i in range(count)))

    def close(self):
        self._client.close()


class KeptAlive:
    """One HTTP/1.1 connection kept open, one request at a time, as one user.

    What a browser's request costs: its connection is open already. Tornado's
    simple client opens a new connection for each request and resolves the
    host in a thread first, which is the client's cost, not the service's.
    """

    def __init__(self, base_url, token):
        u = urllib.parse.urlsplit(base_url)
        self._host, self._port = u.hostname, u.port
        self._auth = "Bearer " + token
        self._reader = self._writer = None

    async def call(self, method, path, body=None, expect=None, timeout=WAIT_SECS):
        """``method /api<path>``; the decoded reply, checked against `expect`."""
        return await asyncio.wait_for(self._call(method, path, body, expect), timeout)

    async def _call(self, method, path, body, expect):
        if self._writer is None or self._writer.is_closing():
            self._reader, self._writer = await asyncio.open_connection(
                self._host, self._port
            )
            self._writer.get_extra_info("socket").setsockopt(
                socket.IPPROTO_TCP, socket.TCP_NODELAY, 1
            )
        b = json.dumps({} if body is None else body).encode()
        self._writer.write(
            (
                f"{method} /api{path} HTTP/1.1\r\nHost: {self._host}:{self._port}\r\n"
                f"Authorization: {self._auth}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(b)}\r\n\r\n"
            ).encode()
            + b
        )
        status = (await self._reader.readline()).split(None, 2)
        if len(status) < 2:
            self.close()
            raise BenchError(f"{method} {path}: the connection ended without a reply")
        n = None
        while True:
            h = await self._reader.readline()
            if h in (b"\r\n", b""):
                break
            k, _, v = h.decode("latin-1").partition(":")
            if k.strip().lower() == "content-length":
                n = int(v)
            elif k.strip().lower() == "transfer-encoding":
                self.close()
                raise BenchError(f"{method} {path}: a chunked reply (not read here)")
        r = await self._reader.readexactly(n or 0)
        code = int(status[1])
        if expect is not None and code != expect:
            raise BenchError(f"{method} {path}: {code} {r[:300]!r}")
        return json.loads(r) if r else None

    def close(self):
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def is_job(m, sim_id, statuses=None):
    """Is `m` a job push of `sim_id` (with a status in `statuses`)?"""
    return (
        m.get("type") == "job"
        and m.get("simulation") == sim_id
        and (statuses is None or m["job"]["status"] in statuses)
    )


class Events:
    """One ``/api/events`` websocket; every message kept with its arrival time.

    `mark` then `wait_for(pred, since=mark)` never misses a push that arrived
    before the wait began: the history is searched first, then new messages
    are offered as they come. A predicate sees each message once, so it may
    keep state (e.g. count completions).
    """

    def __init__(self, ws):
        self._ws = ws
        self.history = []
        self._waiters = []
        self.closed_reason = None
        self._task = asyncio.get_running_loop().create_task(self._read())

    @classmethod
    async def connect(cls, base_url, token, simulation=None):
        u = ws_url(base_url) + "/api/events"
        if simulation:
            u += "?simulation=" + simulation
        ws = await asyncio.wait_for(
            tornado.websocket.websocket_connect(
                tornado.httpclient.HTTPRequest(
                    u,
                    headers={"Authorization": "Bearer " + token},
                    connect_timeout=WAIT_SECS,
                    request_timeout=WAIT_SECS,
                )
            ),
            WAIT_SECS,
        )
        e = cls(ws)
        await e.wait_for(lambda m: m.get("type") == "synced", 0, "events synced")
        return e

    async def _read(self):
        e = "events websocket closed"
        try:
            while True:
                t = await self._ws.read_message()
                now = time.perf_counter()
                if t is None:
                    break
                m = json.loads(t)
                self.history.append((now, m))
                for w in list(self._waiters):
                    if w[1].done():
                        self._waiters.remove(w)
                    elif w[0](m):
                        self._waiters.remove(w)
                        w[1].set_result((now, m))
        except Exception as x:
            # a bad push or a predicate that failed on it: the waits report it
            e = f"events reader failed: {type(x).__name__}: {x}"
        finally:
            self.closed_reason = e
            for _, f in self._waiters:
                if not f.done():
                    f.set_exception(BenchError(e))
            self._waiters = []

    def mark(self):
        return len(self.history)

    async def wait_for(self, pred, since, what, timeout=WAIT_SECS):
        """(arrival time, message) of the first message from `since` that `pred` accepts."""
        for t, m in self.history[since:]:
            if pred(m):
                return t, m
        if self._task.done():
            raise BenchError(f"{self.closed_reason} while waiting for {what}")
        f = asyncio.get_running_loop().create_future()
        w = (pred, f)
        self._waiters.append(w)
        try:
            return await asyncio.wait_for(f, timeout)
        except asyncio.TimeoutError:
            raise BenchError(
                f"timed out after {timeout} s waiting for {what}"
            ) from None
        finally:
            if w in self._waiters:
                self._waiters.remove(w)

    async def wait_ended(self, sim_ids, since, what, timeout=WAIT_SECS):
        """Wait until each of `sim_ids` has ended; (time of the last, {id: job})."""
        left = set(sim_ids)
        jobs = {}

        def pred(m):
            if m.get("type") == "job" and m["simulation"] in left:
                if m["job"]["status"] in ENDED:
                    left.discard(m["simulation"])
                    jobs[m["simulation"]] = m["job"]
            return not left

        t, _ = await self.wait_for(pred, since, what, timeout)
        return t, jobs

    async def close(self):
        self._ws.close()
        try:
            await asyncio.wait_for(self._task, WAIT_SECS)
        except asyncio.TimeoutError:
            self._task.cancel()


class FakeAgent:
    """An agent that runs nothing: it speaks the real protocol on ``/agent``.

    In `auto_complete` mode each ``run`` op is answered at once with
    ``started`` and ``exited`` (completed); otherwise run ops are queued in
    `runs` for the bench to drive. ``cancel`` is confirmed at once.
    """

    def __init__(self, ws, agent_id):
        self._ws = ws
        self.agent_id = agent_id
        self.auto_complete = False
        self.runs = asyncio.Queue()
        self.errors = []
        self.run_ops = 0
        #: ``forget`` comes once the supervisor's end record is durable
        self.forgets = 0
        self._forget_waiters = []
        self._task = None

    @classmethod
    async def connect(cls, base_url, agent_id, secret):
        ws = await asyncio.wait_for(
            tornado.websocket.websocket_connect(
                tornado.httpclient.HTTPRequest(
                    ws_url(base_url) + "/agent",
                    headers={
                        "Authorization": "Bearer " + secret,
                        protocol.AGENT_ID_HEADER: agent_id,
                    },
                    connect_timeout=WAIT_SECS,
                    request_timeout=WAIT_SECS,
                ),
                max_message_size=protocol.MAX_MESSAGE_BYTES,
            ),
            WAIT_SECS,
        )
        # a burst (started, exited) must not wait on Nagle and the peer's
        # delayed ACK: the bench measures the supervisor, not the kernel's
        # batching (tornado leaves Nagle on; a real agent should turn it off too)
        ws.protocol.set_nodelay(True)
        a = cls(ws, agent_id)
        # pid 0: the local driver never signals an agent without a real pid
        a.send(
            "hello", agent_id=agent_id, version="bench", host="bench", pid=0, runs=[]
        )
        t = await asyncio.wait_for(ws.read_message(), WAIT_SECS)
        m = protocol.parse(protocol.TO_AGENT, t) if t else None
        if m is None or m["kind"] != "welcome":
            ws.close()
            raise BenchError(f"fake agent: expected welcome, got {t!r:.200}")
        a._task = asyncio.get_running_loop().create_task(a._read())
        return a

    def send(self, kind, **fields):
        try:
            self._ws.write_message(
                protocol.make(protocol.TO_SUPERVISOR, kind, **fields)
            )
        except tornado.websocket.WebSocketClosedError as e:
            raise BenchError("fake agent: the supervisor closed the connection") from e

    def check(self):
        if self.errors:
            raise BenchError(f"fake agent got errors: {self.errors[:3]}")
        if self._task.done():
            raise BenchError("fake agent: connection closed")

    async def _read(self):
        try:
            while True:
                t = await self._ws.read_message()
                if t is None:
                    return
                self._receive(protocol.parse(protocol.TO_AGENT, t))
        except Exception as e:
            # the bench reports it at its next check
            self.errors.append(f"{type(e).__name__}: {e}")

    def _receive(self, m):
        k = m["kind"]
        if k in ("run", "analysis"):
            self.run_ops += 1
            if self.auto_complete:
                self.send("started", run_id=m["run_id"], pid=0)
                self.send(
                    "exited",
                    run_id=m["run_id"],
                    status="completed",
                    exit_code=0,
                    error=None,
                )
            else:
                self.runs.put_nowait(m)
        elif k == "cancel":
            self.send(
                "exited",
                run_id=m["run_id"],
                status="canceled",
                exit_code=None,
                error=None,
            )
            self.send("reply", op_id=m["op_id"], ok=True, result=None, error=None)
        elif k == "forget":
            self.forgets += 1
            for n, f in list(self._forget_waiters):
                if self.forgets >= n and not f.done():
                    f.set_result(None)
        elif k == "error":
            self.errors.append(m["message"])
        elif k == "shutdown":
            self._ws.close()
        # welcome: nothing to do for an agent that holds nothing

    async def wait_forgets(self, count):
        """Until `count` forget ops have arrived in all (end records durable)."""
        if self.forgets >= count:
            return
        w = (count, asyncio.get_running_loop().create_future())
        self._forget_waiters.append(w)
        try:
            await asyncio.wait_for(w[1], WAIT_SECS)
        except asyncio.TimeoutError:
            raise BenchError(
                f"fake agent: {self.forgets} of {count} forget ops"
            ) from None
        finally:
            self._forget_waiters.remove(w)

    async def next_run(self):
        try:
            return await asyncio.wait_for(self.runs.get(), WAIT_SECS)
        except asyncio.TimeoutError:
            raise BenchError(f"fake agent: no run op within {WAIT_SECS} s") from None

    async def close(self):
        self._ws.close()
        if self._task:
            try:
                await asyncio.wait_for(self._task, WAIT_SECS)
            except asyncio.TimeoutError:
                self._task.cancel()


def seed_agent(
    data_dir, agent_id, secret, user="admin", driver="local", host="localhost"
):
    """Write the agent's record so a supervisor started on `data_dir` knows it."""
    p = pathlib.Path(data_dir) / "db" / "agents" / f"{agent_id}.json"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(
        json.dumps(
            {
                "id": agent_id,
                "user": user,
                "driver": driver,
                "host": host,
                "secret_hash": users.hash_token(secret),
            }
        )
    )
    os.chmod(p, 0o600)
