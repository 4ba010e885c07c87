"""The `Supervisor`: the composition root, built once at start.

It builds the components and wires each to the collaborators it uses, then
starts them, recovers what was running, and stops them; the handlers
(`http`, `ws`) get it and call one service of it per request. `serve` runs
it until SIGTERM or SIGINT; agents and their simulations keep running
across a restart.
"""

import asyncio
import pathlib
import secrets
import signal
import sys

import plotly
import tornado.netutil
import tornado.web
from pykern.pkdebug import pkdlog

from agent import protocol
from supervisor import (
    admin,
    agents,
    catalog,
    drivers,
    events,
    files,
    gate,
    http,
    job,
    library,
    memory,
    metrics,
    rate,
    resources,
    runs,
    sign_in,
    sim_store,
    sims,
    store,
    sweeps,
    users,
    ws,
)

#: how often a thread holding the GIL hands it over (`sys.setswitchinterval`)
SWITCH_SECS = 0.0005

_STATIC = pathlib.Path(__file__).resolve().parents[1] / "static"
#: plotly.js as the plotly package bundles it: nothing comes from the internet
_PLOTLY = pathlib.Path(plotly.__file__).parent / "package_data"


class Supervisor:
    def __init__(self, cfg):
        self.cfg = cfg
        self.data_dir = pathlib.Path(cfg.data_dir).resolve()
        self.port = None
        self.store = store.Store(self.data_dir)
        self.catalog = catalog.Catalog(cfg.catalog, cfg.test_codes)
        self.hub = events.Hub()
        self.memory = memory.Trimmer()
        self.body_bytes = {}  # user -> body bytes on their way in (http_base)
        self.users = users.Users(self.store, users.build_plans(cfg), drivers.names(cfg))
        self.drivers = drivers.build(cfg, self._agent_url, self.users.plan_of)
        self.resources = resources.Resources(
            [t for d in self.drivers.values() for t in d.targets()]
        )
        self.agents = agents.Agents(cfg, self.store, self.drivers)
        self.sim_store = sim_store.SimStore(cfg, self.store)
        self.library = library.Library(
            self.data_dir, self.store, self.users.plan_of, self.sim_store, self.catalog
        )
        self.files = files.Files(
            cfg,
            self.store,
            self.drivers,
            self.agents,
            self.sim_store,
            self.users.plan_of,
            self.library,
        )
        self.runs = runs.Runs(
            cfg,
            self.catalog,
            self.users,
            self.drivers,
            self.resources,
            self.agents,
            self.sim_store,
            self.files,
            self.hub,
            job.RunIds(),
        )
        self.sims = sims.Sims(
            self.sim_store,
            self.catalog,
            self.runs,
            self.files,
            self.hub,
            self.users,
            self.library,
        )
        self.sign_in = sign_in.SignIn(
            cfg, self.drivers, self.agents, self.sim_store, self.hub
        )
        self.admin = admin.Admin(
            self.sim_store,
            self.runs,
            self.agents,
            self.drivers,
            self.resources,
            self.users,
            self.hub,
        )
        #: requests per user (or address), and wrong credentials per address
        self.request_rate = rate.Limiter(cfg.rate_per_sec, cfg.rate_burst)
        self.bad_credentials = rate.Limiter(
            cfg.bad_credentials_per_sec, cfg.bad_credentials_burst
        )
        self.metrics = metrics.Metrics(
            self.sim_store, self.resources, self.agents, self.runs, self.store, self.hub
        )
        #: kind -> handler of an agent's message; built once
        self.agent_handlers = dict(
            hello=self.agents.hello,
            reply=self.agents.reply,
            error=lambda a, m: pkdlog("{} reports error={}", a, m["message"]),
            **self.runs.reports.handlers,
        )
        self.sweeps = sweeps.Sweeps(
            cfg,
            self.store,
            self.sim_store,
            self.sims,
            self.runs,
            self.catalog,
            self.users,
            self.hub,
        )
        assert set(self.agent_handlers) == set(protocol.TO_SUPERVISOR)
        #: open connections and websockets (`gate.Gate`), made at start
        self.gate = None
        self._server = None
        self._agent_server = None

    def _agent_url(self):
        """Where agents dial us (known once we listen)."""
        return f"ws://127.0.0.1:{self.port}/agent"

    # --- start and stop ------------------------------------------------------

    async def start(self):
        """Load the store, listen, and recover what was running."""
        # first start: no admin yet (users added by the CLI do not count)
        first = not any(u.is_admin() for u in self.users.all())
        s = tornado.netutil.bind_sockets(self.cfg.port, self.cfg.host)
        self.port = s[0].getsockname()[1]
        self.agents.load()
        self.library.load()
        self.runs.recover(self.sim_store.load())
        self.sweeps.load()
        g = self.gate = gate.gate(self.cfg)
        self._server = gate.Server(
            self._app(),
            # API handlers stream and set their own limits; the rest (static
            # files, websockets) take no body
            max_body_size=64 * 1024,
            xheaders=False,
            idle_connection_timeout=self.cfg.header_timeout_secs,
            body_timeout=self.cfg.body_timeout_secs,
            gate=g,
        )
        if first:
            # before we listen: once healthy, the token file is there
            p = await self.users.first_admin(self.data_dir / "admin-token")
            # the token itself is never printed: it is in the file
            print(
                f"simvisor: created user admin; its token is in {p}\n"
                f"simvisor: sign in at http://{self.cfg.host}:{self.port}/",
                flush=True,
            )
        self._server.add_sockets(s)
        self.sweeps.start()
        self._agent_server = ws.listen_agent_socket(self, g)
        pkdlog("listening url=http://{}:{}/", self.cfg.host, self.port)

    def _app(self):
        return tornado.web.Application(
            [
                (r"/agent", ws.Agent, {"sv": self}),
                (r"/api/events", ws.Events, {"sv": self}),
                *http.routes(self),
                (
                    r"/vendor/(plotly\.min\.js)",
                    tornado.web.StaticFileHandler,
                    {"path": str(_PLOTLY)},
                ),
                (
                    r"/(.*)",
                    tornado.web.StaticFileHandler,
                    {"path": str(_STATIC), "default_filename": "index.html"},
                ),
            ],
            cookie_secret=self._cookie_secret(),
            xsrf_cookies=True,
            websocket_max_message_size=protocol.MAX_MESSAGE_BYTES,
            websocket_ping_interval=15,
            websocket_ping_timeout=15,
        )

    def _cookie_secret(self):
        p = self.store.root / "cookie-secret"
        if not p.exists():
            store.write_atomic(p, secrets.token_urlsafe(48).encode())
        return p.read_text().strip()

    async def stop(self):
        """Stop serving; agents and their runs keep going."""
        if self._server:
            self._server.stop()
        if self._agent_server:
            self._agent_server.stop()
        await self.sweeps.destroy()
        await self.runs.destroy()
        await self.agents.destroy()
        for d in self.drivers.values():
            await d.destroy()
        self.sim_store.destroy()
        self.memory.destroy()
        # the final writes must land even if we are being canceled
        await asyncio.shield(self.store.flush())
        self.store.destroy()


def serve(cfg):
    """Run the supervisor until SIGTERM or SIGINT."""
    # the store's writer thread takes the GIL back after each syscall; at
    # the default 5 ms a busy loop made each of its commits wait ~10 ms
    sys.setswitchinterval(SWITCH_SECS)

    async def _main():
        sv = Supervisor(cfg)
        await sv.start()
        done = asyncio.Event()
        loop = asyncio.get_running_loop()
        for s in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(s, done.set)
        await done.wait()
        pkdlog("stopping")
        await sv.stop()

    asyncio.run(_main())
