"""A supervisor in this process with a fake driver: no sockets, no processes.

The test plays the agent: it answers the driver's `start`, opens a
connection object (`Conn`) and sends what an agent sends, through the same
handler table the ``/agent`` websocket uses. Everything else (agents, runs,
resources, store, push) is the real thing.
"""

import asyncio
import json

from agent import protocol
from supervisor import config, events, resources, server
from supervisor.drivers import base

HOST = "h1"


class Driver(base.Driver):
    """Records starts and kills; the test plays the agent."""

    def __init__(self, cfg, name="local", needs_login=False, cores=4):
        super().__init__(cfg, lambda: "ws://127.0.0.1:1/agent")
        self.name = name
        self.needs_login = needs_login
        self.target = resources.Target(HOST, cores)
        self.starts = asyncio.Queue()
        self.killed = []
        self.sizes = {}

    def targets(self):
        return [self.target]

    async def start(self, agent, secret, on_exit):
        agent.info["pid"] = 1
        self.starts.put_nowait((agent, secret, on_exit))

    async def kill(self, agent):
        self.killed.append(agent.id)

    def resize(self, agent, cores):
        self.sizes[agent.id] = cores


class Conn:
    """What `Agents` writes to: an agent's websocket, recorded."""

    def __init__(self):
        self.frames = asyncio.Queue()
        self.closed = False

    def is_open(self):
        return not self.closed

    def write_frames(self, data):
        for p in events.unframe(data):
            self.frames.put_nowait(json.loads(p))

    def close(self):
        self.closed = True

    async def next(self, kind, timeout_secs=5):
        """The next frame of `kind` (others before it are skipped)."""
        while True:
            m = await asyncio.wait_for(self.frames.get(), timeout_secs)
            if m["kind"] == kind:
                return m


class Push:
    """A subscriber of the hub: job changes of one user, as they are pushed."""

    def __init__(self, hub, user):
        self.jobs = asyncio.Queue()
        self.sign_ins = asyncio.Queue()
        hub.subscribe(
            events.Subscriber(user, None, self._write, lambda: None, tuple, 1 << 30)
        )

    def _write(self, data):
        for t in events.unframe(data):
            m = json.loads(t)
            if m["type"] == "job":
                self.jobs.put_nowait(m["job"])
            elif m["type"] == "sign_in":
                self.sign_ins.put_nowait(m)
        f = asyncio.get_running_loop().create_future()
        f.set_result(None)
        return f

    async def until(self, pred, timeout_secs=5):
        """The first pushed job for which `pred(job)` is true."""
        while True:
            j = await asyncio.wait_for(self.jobs.get(), timeout_secs)
            if pred(j):
                return j


class World:
    """A `Supervisor` whose only driver is a fake, with one user."""

    def __init__(self, tmp_path, driver_args=None, **cfg):
        self.cfg = config.load(data_dir=str(tmp_path), test_codes=True, **cfg)
        self.sv = server.Supervisor(self.cfg)
        d = self.sv.drivers["local"]
        self.driver = Driver(self.cfg, **(driver_args or {}))
        # the real driver's target, so resources and the fake agree
        self.driver.target = d.targets()[0]
        self.driver.target.name = HOST
        self.sv.resources.targets = {HOST: self.driver.target}
        self.sv.drivers["local"] = self.driver
        self.user = None
        self.push = None

    async def start(self):
        self.sv.agents.load()
        self.sv.runs.recover(self.sv.sim_store.load())
        self.user, _, f = self.sv.users.add("alice")
        await f
        self.push = Push(self.sv.hub, self.user)
        return self

    async def stop(self):
        await self.sv.stop()

    async def sim(self, code="sleep", **params):
        return (await self.sv.sims.create(self.user, {"code": code, "params": params}))[
            "id"
        ]

    async def run(self, sim_id):
        """Request a run of `sim_id`, as ``POST .../run`` does; returns the job."""
        return await self.sv.sims.run(
            self.user, self.sv.sims.get(self.user, sim_id), {}
        )

    def send(self, agent, kind, **fields):
        """A frame from the agent, through the ``/agent`` handler table."""
        m = protocol.parse(
            protocol.TO_SUPERVISOR,
            protocol.make(protocol.TO_SUPERVISOR, kind, **fields),
        )
        self.sv.agent_handlers[kind](agent, m)

    async def connect(self, agent, runs=()):
        """The agent connects and says hello; returns its connection."""
        c = Conn()
        self.sv.agents.attach(agent, c)
        self.send(
            agent,
            "hello",
            agent_id=agent.id,
            version="test",
            pid=1,
            host="test",
            runs=[
                {"run_id": r, "state": "running", "frames": 0, "log_chars": 0}
                for r in runs
            ],
        )
        return c

    async def started_agent(self):
        """The agent the driver was asked to start, connected."""
        a, _, _ = await asyncio.wait_for(self.driver.starts.get(), 5)
        return a, await self.connect(a)

    async def running(self, sim_id):
        """Run `sim_id` to `running`; returns (agent, conn, run op)."""
        await self.run(sim_id)
        a, c = await self.started_agent()
        op = await c.next("run")
        self.send(a, "started", run_id=op["run_id"], pid=2)
        await self.push.until(lambda j: j["status"] == "running")
        return a, c, op
