"""Figures: each measured through a real supervisor process.

`RealAgentBench` uses a supervisor whose local driver starts a real agent,
which runs real code processes (rows: start, end, cancel, throughput).
`FakeAgentBench` seeds an agent record before its supervisor starts and
connects as that agent from the bench process, answering ops itself, so what
is left is the supervisor's own cost (rows: push latency, dispatch ceiling).
Times run from just before a request is sent to the moment the bench's
``/api/events`` websocket receives the push that shows the result.
"""

import asyncio
import secrets
import sys
import time

from tests.bench import clients, floors
from tests.bench.clients import Api, Events, FakeAgent, KeptAlive, is_job
from tests.bench.report import BenchError


class _Bench:
    """A started `conftest.Server` and the bench's clients of it."""

    def __init__(self, conftest, data_dir, **cfg):
        # the rows measure the service, not the limits' policy (rate, and
        # how many simulations a user keeps: the rows make thousands)
        cfg.setdefault("rate_per_sec", 0)
        for p in ("basic", "premium"):
            cfg.setdefault(f"{p}_max_simulations", 10**6)
        self.server = conftest.Server(data_dir, **cfg)
        self.conftest = conftest
        self.api = None
        #: the timed requests (run, cancel), over a connection kept open
        self.kept = None
        self.events = None
        self.agent = None

    async def start(self):
        await asyncio.to_thread(self.server.start)
        self.api = Api(self.server.url, self.server.tokens["admin"])
        self.kept = KeptAlive(self.server.url, self.server.tokens["admin"])
        self.events = await Events.connect(self.server.url, self.server.tokens["admin"])
        return self

    async def run_and_wait(self, sim_id, statuses, what):
        """POST run; (seconds until the first push in `statuses`, that job)."""
        m0 = self.events.mark()
        t0 = time.perf_counter()
        await self.kept.call("POST", f"/simulations/{sim_id}/run", expect=202)
        t, m = await self.events.wait_for(
            lambda m: is_job(m, sim_id, statuses), m0, what
        )
        return t - t0, m["job"], m0, t0

    async def run_to_end(self, sim_id, cores=1):
        """POST run with `cores`; (seconds until the run's end push, that job)."""
        m0 = self.events.mark()
        t0 = time.perf_counter()
        j = await self.kept.call(
            "POST", f"/simulations/{sim_id}/run", {"cores": cores}, expect=202
        )
        t, m = await self.events.wait_for(
            lambda m: is_job(m, sim_id, clients.ENDED)
            and m["job"]["run_id"] == j["run_id"],
            m0,
            "the run's end",
        )
        return t - t0, m["job"]

    async def cleanup(self):
        """Close the bench's clients, then `Server.cleanup`; returns leftovers."""
        for c in (self.events, self.agent):
            if c is not None:
                try:
                    await c.close()
                except Exception as e:
                    # the supervisor and what it started are stopped below anyway
                    print(f"bench: closing {c!r} failed: {e}", file=sys.stderr)
        if self.api is not None:
            self.api.close()
            self.kept.close()
        return await asyncio.to_thread(self.server.cleanup)


class RealAgentBench(_Bench):
    """Local driver, real agent, real processes; admin on the premium plan."""

    def __init__(self, conftest, data_dir, cores):
        super().__init__(conftest, data_dir, local_cores=cores, agent_idle_secs=600)

    async def start(self):
        await super().start()
        await self.api.call(
            "PATCH", "/admin/users/admin", {"plan": "premium"}, expect=200
        )
        return self

    async def sleep_run(self, sim_id):
        """One ``sleep`` secs=0 run: (secs to ``running`` push, secs to ``completed`` push)."""
        s, j, m0, t0 = await self.run_and_wait(
            sim_id, ("running", *clients.ENDED), "running"
        )
        if j["status"] != "running":
            raise BenchError(
                f"sleep run went {j['status']} without running: {j['error']}"
            )
        rid = j["run_id"]
        t, m = await self.events.wait_for(
            lambda m: is_job(m, sim_id, clients.ENDED) and m["job"]["run_id"] == rid,
            m0,
            "sleep completed",
        )
        if m["job"]["status"] != "completed":
            raise BenchError(
                f"sleep run ended {m['job']['status']}: {m['job']['error']}"
            )
        return s, t - t0

    async def cancel_run(self, sim_id):
        """Start ``forever``, wait for its heartbeat, time the cancel request.

        The reply comes once the agent confirmed the process group is gone;
        /proc is checked to be sure.
        """
        _, j, m0, _ = await self.run_and_wait(
            sim_id, ("running", *clients.ENDED), "running"
        )
        if j["status"] != "running":
            raise BenchError(f"forever went {j['status']}: {j['error']}")
        await self.events.wait_for(
            lambda m: m.get("type") == "log"
            and m["simulation"] == sim_id
            and "heartbeat" in m["text"],
            m0,
            "forever heartbeat",
        )
        d = self.server.data_dir / "run" / "admin" / sim_id
        p = [x for x in self.conftest.procs_under(d) if clients.pgid_of(x) == x]
        if len(p) != 1:
            raise BenchError(f"expected one group leader under {d}, found {p}")
        t0 = time.perf_counter()
        j = await self.kept.call("POST", f"/simulations/{sim_id}/cancel", expect=200)
        t1 = time.perf_counter()
        if j["status"] != "canceled":
            raise BenchError(f"cancel replied status={j['status']}")
        left = clients.group_members(p[0])
        if left:
            raise BenchError(f"cancel replied but group {p[0]} still has {left}")
        return t1 - t0

    async def throughput(self, count):
        """`count` fresh ``sleep`` secs=0 simulations run at once.

        Returns:
            tuple: (runs per second, supervisor CPU secs per run, agent CPU
            secs per run, pushes per run), counted to the last ``completed``
        """
        ids = await self.api.create_sims(count, "sleep", {"secs": 0})
        ag = await self.api.call("GET", "/admin/agents", expect=200)
        if len(ag) != 1 or not ag[0].get("pid"):
            raise BenchError(f"expected one local agent, found {ag}")
        pids = (self.server.proc.pid, ag[0]["pid"])
        cpu = [clients.cpu_secs(p) for p in pids]
        m0 = self.events.mark()
        t0 = time.perf_counter()
        await asyncio.gather(
            *(self.api.call("POST", f"/simulations/{i}/run", expect=202) for i in ids)
        )
        t, jobs = await self.events.wait_ended(
            ids, m0, f"{count} sleep runs", timeout=60
        )
        cpu = [(clients.cpu_secs(p) - x) / count for p, x in zip(pids, cpu)]
        n = (self.events.mark() - m0) / count
        bad = [j for j in jobs.values() if j["status"] != "completed"]
        if bad:
            raise BenchError(f"{len(bad)} runs did not complete: {bad[0]['error']}")
        return count / (t - t0), *cpu, n


class FakeAgentBench(_Bench):
    """A supervisor whose only agent (admin, local, localhost) is the bench."""

    AGENT_ID = "admin-local-bench"

    def __init__(self, conftest, data_dir, max_running, **cfg):
        self._secret = secrets.token_urlsafe(32)
        clients.seed_agent(data_dir, self.AGENT_ID, self._secret)
        super().__init__(
            conftest,
            data_dir,
            local_cores=max_running,
            basic_max_running=max_running,
            agent_idle_secs=600,
            **cfg,
        )

    async def start(self):
        await super().start()
        self.agent = await FakeAgent.connect(
            self.server.url, self.AGENT_ID, self._secret
        )
        return self

    async def hold_run(self):
        """A run held ``running`` by the fake agent, for `HeldRun.push`."""
        a = self.agent
        a.auto_complete = False
        (sid,) = await self.api.create_sims(1, "sleep", {"secs": 0})
        ev = await Events.connect(
            self.server.url, self.server.tokens["admin"], simulation=sid
        )
        try:
            m0 = ev.mark()
            await self.api.call("POST", f"/simulations/{sid}/run", expect=202)
            rid = (await a.next_run())["run_id"]
            a.send("started", run_id=rid, pid=0)
            await ev.wait_for(lambda m: is_job(m, sid, ("running",)), m0, "running")
        except BaseException:
            await ev.close()
            raise
        return HeldRun(a, ev, sid, rid)

    async def dispatch_throughput(self, count):
        """`count` fresh simulations run at once, each answered at once by the
        fake agent (started, exited completed).

        Returns:
            tuple: (runs per second to the last ``completed`` push, supervisor
            CPU seconds per run, durable store writes per run, pushes per run
            to the bench's admin websocket, CPU seconds per second); CPU and
            writes are counted until every end record is durable
        """
        a = self.agent
        a.auto_complete = True
        ids = await self.api.create_sims(count, "sleep", {"secs": 0})
        n = a.run_ops
        f = a.forgets
        w = await self.store_writes()
        c = clients.cpu_secs(self.server.proc.pid)
        m0 = self.events.mark()
        t0 = time.perf_counter()
        await asyncio.gather(
            *(self.api.call("POST", f"/simulations/{i}/run", expect=202) for i in ids)
        )
        t, jobs = await self.events.wait_ended(
            ids, m0, f"{count} dispatched runs", timeout=60
        )
        p = (self.events.mark() - m0) / count
        bad = [j for j in jobs.values() if j["status"] != "completed"]
        if bad:
            raise BenchError(f"{len(bad)} runs did not complete: {bad[0]['error']}")
        # the end records are written after the push; a forget follows each
        await a.wait_forgets(f + count)
        c = clients.cpu_secs(self.server.proc.pid) - c
        busy = c / (time.perf_counter() - t0)
        if a.run_ops - n != count:
            raise BenchError(f"fake agent got {a.run_ops - n} run ops for {count} runs")
        a.check()
        w = (await self.store_writes() - w) / count
        return count / (t - t0), c / count, w, p, busy

    async def logout_posts(self, count):
        """The floor of `dispatch_throughput`, with the same diagnostics."""
        c = clients.cpu_secs(self.server.proc.pid)
        r = await floors.http_posts(self.api, count)
        return r, (clients.cpu_secs(self.server.proc.pid) - c) / count, 0, 0, 0

    async def store_writes(self):
        """The supervisor's count of durable writes (from /metrics)."""
        r = await self.api.call_text("GET", "/metrics", root=True)
        for line in r.splitlines():
            if line.startswith("simvisor_store_writes_total "):
                return float(line.split()[1])
        raise BenchError("no simvisor_store_writes_total in /metrics")


class HeldRun:
    """A running run of the fake agent; each `push` times one progress push."""

    def __init__(self, agent, events, sim_id, run_id):
        self._agent = agent
        self._events = events
        self._sim_id = sim_id
        self._run_id = run_id
        self._count = 0

    async def push(self):
        """Seconds from the agent's ``progress`` frame to the job push with it."""
        self._count += 1
        v = self._count / (self._count + 1)
        m0 = self._events.mark()
        t0 = time.perf_counter()
        self._agent.send("progress", run_id=self._run_id, progress=v)
        t, _ = await self._events.wait_for(
            lambda m: is_job(m, self._sim_id) and m["job"]["progress"] == v,
            m0,
            "progress push",
        )
        return t - t0

    async def release(self):
        try:
            m0 = self._events.mark()
            self._agent.send(
                "exited",
                run_id=self._run_id,
                status="completed",
                exit_code=0,
                error=None,
            )
            await self._events.wait_for(
                lambda m: is_job(m, self._sim_id, ("completed",)), m0, "completed"
            )
            self._agent.check()
        finally:
            await self._events.close()
