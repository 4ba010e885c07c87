"""The `Supervisor`: built once at start, passed to every handler.

It composes the store, users, catalog, simulations, resources, agents, runs,
drivers and the push hub, and holds the few operations that span them
(simulation create/edit/delete, files, admin views). `serve` runs it until
SIGTERM or SIGINT; agents and their simulations keep running across a restart.
"""

import asyncio
import base64
import os
import pathlib
import re
import secrets
import signal
import stat
import time

import plotly
import tornado.httpserver
import tornado.netutil
import tornado.web
from pykern.pkdebug import pkdlog

from agent import protocol
from supervisor import (
    adoption,
    agents,
    catalog,
    drivers,
    errors,
    events,
    http,
    job,
    metrics,
    resources,
    runs,
    sims,
    store,
    users,
    ws,
)

_STATIC = pathlib.Path(__file__).resolve().parents[1] / "static"
#: plotly.js as the plotly package bundles it: nothing comes from the internet
_PLOTLY = pathlib.Path(plotly.__file__).parent / "package_data"
_MAX_NAME_CHARS = 200


class Supervisor:
    def __init__(self, cfg):
        self.cfg = cfg
        self.data_dir = pathlib.Path(cfg.data_dir).resolve()
        self.port = None
        self.store = store.Store(self.data_dir)
        self.users = users.Users(self.store)
        self.catalog = catalog.Catalog(cfg.catalog, cfg.test_codes)
        self.plans = {
            p: resources.Plan(
                p,
                cfg[f"{p}_max_running"],
                cfg[f"{p}_max_run_secs"],
                cfg[f"{p}_max_cores"],
                cfg.max_analyses,
                cfg[f"{p}_mem_bytes"],
            )
            for p in users.PLANS
        }
        self.run_ids = job.RunIds()
        self.hub = events.Hub()
        self.sims = sims.Sims(cfg, self.store)
        self.drivers = drivers.build(
            cfg, lambda: f"ws://127.0.0.1:{self.port}/agent", self.plan_of
        )
        self.runs = runs.Runs(self)
        self.adoption = adoption.Adoption(self, self.runs)
        self.resources = resources.Resources(
            [t for d in self.drivers.values() for t in d.targets()],
            on_change=self.runs.positions_changed,
        )
        self.agents = agents.Agents(
            cfg,
            self.store,
            self.drivers,
            on_ready=self.adoption.agent_ready,
            on_lost=self.adoption.agent_lost,
            on_stopped=self.adoption.agent_stopped,
        )
        self.agent_handlers = dict(
            hello=self.agents.hello,
            reply=self.agents.reply,
            error=lambda a, m: pkdlog("{} reports error={}", a, m["message"]),
            **self.runs.on_agent_message,
        )
        assert set(self.agent_handlers) == set(protocol.TO_SUPERVISOR)
        self.metrics = metrics.Metrics(self)
        self._server = None
        self._agent_server = None

    def plan_of(self, user_name):
        u = self.users.get(user_name)
        return self.plans[u.plan if u else "basic"]

    # --- start and stop ------------------------------------------------------

    async def start(self):
        """Load the store, listen, and recover what was running."""
        # first start: no admin yet (users added by the CLI do not count)
        first = not any(u.is_admin() for u in self.users.all())
        s = tornado.netutil.bind_sockets(self.cfg.port, self.cfg.host)
        self.port = s[0].getsockname()[1]
        self.agents.load()
        self.adoption.recover(self.sims.load())
        self._server = tornado.httpserver.HTTPServer(
            self._app(),
            # bodies a bit over our limit get a JSON 413 from the handler
            max_body_size=self.cfg.max_body_bytes * 2,
            xheaders=False,
        )
        if first:
            # before we listen: once healthy, the token file is there
            await self._first_start()
        self._server.add_sockets(s)
        self._listen_agent_socket()
        pkdlog("listening url=http://{}:{}/", self.cfg.host, self.port)

    def _listen_agent_socket(self):
        """Agents in network-less containers reach us through a unix socket.

        It serves only ``/agent`` (and needs the agent's secret): simulation
        code in those containers can reach it, and nothing else of ours.
        """
        p = {getattr(d, "agent_socket", None) for d in self.drivers.values()} - {None}
        if not p:
            return
        (p,) = p
        p.parent.mkdir(parents=True, exist_ok=True)
        s = tornado.netutil.bind_unix_socket(str(p), mode=0o666)
        self._agent_server = tornado.httpserver.HTTPServer(
            tornado.web.Application(
                [(r"/agent", ws.Agent, {"sv": self})],
                websocket_max_message_size=protocol.MAX_MESSAGE_BYTES,
                websocket_ping_interval=15,
                websocket_ping_timeout=15,
            ),
            xheaders=False,
        )
        self._agent_server.add_socket(s)
        pkdlog("agents also on unix socket={}", p)

    async def _first_start(self):
        u = self.users.get("admin")
        if u is None:
            _, t, f = self.users.add("admin", role="admin")
        else:
            t, f = self.users.update(u, role="admin", new_token=True)
        await f
        p = self.data_dir / "admin-token"
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as o:
            o.write(t + "\n")
        # the token itself is never printed: it is in the file
        print(
            f"simvisor: created user admin; its token is in {p}\n"
            f"simvisor: sign in at http://{self.cfg.host}:{self.port}/",
            flush=True,
        )

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
        await self.runs.destroy()
        await self.agents.destroy()
        for d in self.drivers.values():
            await d.destroy()
        self.sims.destroy()
        # the final writes must land even if we are being canceled
        await asyncio.shield(self.store.flush())
        self.store.destroy()

    # --- simulations -------------------------------------------------------

    async def create_simulation(self, user, body):
        c = self.catalog.get(body.get("code"))
        n = _name(body.get("name", c.title))
        p = c.check_params(body.get("params", {}))
        s = self.sims.create(user, c.name, n, p)
        await self.sims.save(s)
        self._publish_sim(s)
        return s

    async def update_simulation(self, sim, body):
        x = set(body) - {"name", "params"}
        if x:
            raise errors.BadInput("bad_field", f"cannot change {', '.join(sorted(x))}")
        if "params" in body and sim.job.status in job.ACTIVE:
            raise errors.Conflict("running", "parameters cannot change while it runs")
        n = _name(body["name"]) if "name" in body else sim.name
        p = (
            self.catalog.get(sim.code).check_params(body["params"], base=sim.params)
            if "params" in body
            else sim.params
        )
        sim.name = n
        sim.params = p
        sim.updated = time.time()
        await self.sims.save(sim)
        self._publish_sim(sim)
        return sim

    async def delete_simulation(self, sim):
        # a run requested while we waited for the cancel is canceled too
        while sim.run is not None:
            await self.runs.cancel(sim)
        if sim.deleted:
            return
        f = self.sims.delete(sim)
        d = self.inputs_dir(sim)
        for p in d.glob("*") if d.exists() else ():
            p.unlink()
        self.hub.publish(
            sim.user,
            sim.id,
            {"type": "simulation", "simulation": {"id": sim.id, "deleted": True}},
        )
        await f

    def _publish_sim(self, sim):
        self.hub.publish(
            sim.user, sim.id, {"type": "simulation", "simulation": sim.to_dict()}
        )

    def snapshot(self, user, sim_id=None):
        """What a new events subscriber sees first."""
        if sim_id:
            try:
                ss = [self.sims.get(user, sim_id)]
            except errors.NotFound:
                ss = []
        elif user.is_admin():
            ss = list(self.sims.by_id.values())
        else:
            ss = self.sims.for_user(user.name)
        for s in ss:
            yield {"type": "simulation", "simulation": s.to_dict()}
        yield {"type": "synced"}

    # --- files ---------------------------------------------------------------

    def inputs_dir(self, sim):
        return self.data_dir / "inputs" / sim.user / sim.id

    async def list_files(self, sim):
        a = self._remote_agent(sim)
        if a is None:
            return await asyncio.to_thread(
                _list_files, self._run_dir(sim), self.inputs_dir(sim)
            )
        r = await self._agent_file_op(a, "list_files", path=sim.id)
        d = self.inputs_dir(sim)
        i = await asyncio.to_thread(
            lambda: sorted(p.name for p in d.iterdir()) if d.exists() else []
        )
        return {"files": r["files"], "inputs": i}

    def _remote_agent(self, sim):
        """The agent that holds `sim`'s run directory, if it is not on this host.

        Raises:
            errors.Conflict: its user must sign in to the host first
        """
        j = sim.job
        d = self.drivers.get(j.driver) if j.driver else None
        if not getattr(d, "remote_files", False) or not j.host:
            return None
        a = self.agents.connected(sim.user, j.driver, j.host)
        if a is None:
            raise errors.Conflict(
                "sign_in_required",
                f"the files are on {j.host}: sign in there to see them",
            )
        return a

    async def _agent_file_op(self, agent, kind, **fields):
        try:
            return await self.agents.call(agent, kind, _FILE_OP_SECS, **fields)
        except (agents.AgentGone, TimeoutError) as e:
            raise errors.Conflict(
                "agent_unavailable", f"the agent on {agent.host} did not answer: {e}"
            ) from None
        except RuntimeError as e:
            raise errors.NotFound("unknown_file", str(e)) from None

    async def read_output(self, sim, path, write):
        """Send an output file to `write` (async, bytes) in chunks.

        Returns:
            str: the file's name
        """
        a = self._remote_agent(sim)
        if a is None:
            p = self.output_path(sim, path)
            with open(p, "rb") as f:
                # off the event loop, and no faster than the client reads
                while c := await asyncio.to_thread(f.read, 256 * 1024):
                    await write(c)
            return p.name
        o = 0
        while True:
            r = await self._agent_file_op(
                a,
                "fetch_file",
                path=f"{sim.id}/{path}",
                max_bytes=_FETCH_CHUNK_BYTES,
                offset=o,
            )
            if r["size"] > self.cfg.max_fetch_bytes:
                raise errors.TooLarge(
                    "too_large",
                    f"{path} is {r['size']} bytes; downloads through an agent are"
                    f" limited to {self.cfg.max_fetch_bytes}",
                )
            c = base64.b64decode(r["content_b64"])
            o += len(c)
            if c:
                await write(c)
            if not r["truncated"] or not c or o >= self.cfg.max_fetch_bytes:
                return pathlib.PurePosixPath(path).name

    # --- sign-in to login nodes (sbatch) ---------------------------------------

    def sign_in_hosts(self, user):
        """The login nodes `user` may run on, and whether they must sign in."""
        d = self.drivers.get("sbatch")
        if d is None:
            return {"hosts": []}
        return {
            "hosts": [
                dict(
                    h.to_dict(),
                    signed_in=not self.agents.needs_sign_in(user.name, d.name, n),
                    waiting=sum(
                        1
                        for s in self.sims.for_user(user.name)
                        if s.job.status == job.QUEUED
                        and s.job.driver == d.name
                        and s.job.situation.startswith("sign in")
                    ),
                )
                for n, h in d.hosts.items()
            ]
        }

    async def sign_in(self, user, body):
        d = self.drivers.get("sbatch")
        h = body.get("host")
        if d is None or h not in d.hosts:
            raise errors.NotFound("unknown_host", f"there is no login node {h!r}")
        c = {k: body.get(k) for k in ("user", "password", "otp")}
        if not isinstance(c["user"], str) or not _LOGIN_USER_RE.match(c["user"]):
            raise errors.BadInput("bad_user", "give your user name on the login node")
        if not isinstance(c["password"], str) or not c["password"]:
            raise errors.BadInput("bad_password", "give your password")
        if d.hosts[h].otp != "none" and not (
            isinstance(c["otp"], str) and c["otp"].strip()
        ):
            raise errors.BadInput("bad_code", f"{h} asks for a one-time code")
        if isinstance(c["otp"], str):
            c["otp"] = c["otp"].strip()
        try:
            a = await self.agents.sign_in(user.name, d.name, h, c)
        except agents.AgentStartFailed as e:
            raise errors.Conflict("agent_lost", str(e)) from None
        finally:
            c.clear()
        self.sign_in_changed(a)
        return {"host": h, "signed_in": True, "agent": a.to_dict()}

    def sign_in_changed(self, agent):
        """Tell the agent's user whether they are signed in to its host."""
        d = self.drivers.get(agent.driver)
        if getattr(d, "needs_login", False):
            self.hub.publish(
                agent.user,
                None,
                {
                    "type": "sign_in",
                    # admins see every user's events: say whose it is
                    "user": agent.user,
                    "host": agent.host,
                    "signed_in": not self.agents.needs_sign_in(
                        agent.user, agent.driver, agent.host
                    ),
                },
            )

    def _run_dir(self, sim):
        """The run directory, refused if simulation code made it a symlink."""
        d = self.sims.run_dir(sim)
        # run_root is resolved; the user and simulation parts are writable by
        # the simulation (its agent's run root), so they must be real dirs
        for p in (d.parent, d):
            if p.is_symlink():
                pkdlog("{} run dir component is a symlink path={}", sim, p)
                return None
        return d

    def output_path(self, sim, path):
        d = self._run_dir(sim)
        p = (d / path).resolve() if d else None
        if p is None or not p.is_relative_to(d) or not p.is_file():
            raise errors.NotFound("unknown_file", f"no file {path}")
        return p

    async def put_input(self, sim, name, content):
        if (
            not isinstance(name, str)
            or "/" in name
            or name.startswith(".")
            or not name
            or len(name) > 100
            or name == "params.json"
        ):
            raise errors.BadInput(
                "bad_name", "input file name must be a plain file name"
            )
        if len(content) > self.cfg.max_upload_bytes:
            raise errors.TooLarge(
                "too_large",
                f"input files are limited to {self.cfg.max_upload_bytes} bytes",
            )
        try:
            content.decode()
        except UnicodeDecodeError as e:
            raise errors.BadInput("not_text", "input files must be UTF-8 text") from e
        await self.store.call(store.write_atomic, self.inputs_dir(sim) / name, content)

    # --- admin ---------------------------------------------------------------

    async def admin_containers(self):
        """Every container of every driver that has them, per host."""
        res = []
        for d in self.drivers.values():
            if hasattr(d, "containers"):
                res += await d.containers()
        return res

    async def kill_container(self, container_id):
        """Kill a container: its agent (whose runs end canceled), or a stray."""
        for a in self.agents.all():
            if a.info.get("container_id") == container_id:
                self.agents.kill(a)
                return
        for d in self.drivers.values():
            if hasattr(d, "remove_container") and await d.remove_container(
                container_id
            ):
                return
        raise errors.NotFound("unknown_container", f"no container {container_id}")

    def admin_jobs(self):
        res = []
        for s in self.sims.by_id.values():
            if s.job.status in job.ACTIVE:
                res.append(
                    dict(
                        s.job.to_dict(),
                        user=s.user,
                        simulation=s.id,
                        name=s.name,
                        code=s.code,
                        agent=s.agent_id,
                    )
                )
        res.sort(key=lambda r: r["queued_at"] or 0)
        for r in res:
            del r["history"]
        return res


#: one file op through an agent
_FILE_OP_SECS = 60.0
#: bytes per fetch_file of a download through an agent
_FETCH_CHUNK_BYTES = 1024 * 1024
#: a user name on a login node (POSIX portable)
_LOGIN_USER_RE = re.compile(r"^[a-z_][a-z0-9_.-]{0,31}$")


def _list_files(run_dir, inputs_dir):
    """Files of a run (no symlinks followed) and its inputs; blocking."""
    res = []
    if run_dir is not None:
        for top, dirs, files in os.walk(run_dir, followlinks=False):
            dirs.sort()
            for f in sorted(files):
                p = pathlib.Path(top) / f
                st = p.lstat()
                if not stat.S_ISREG(st.st_mode):
                    continue
                res.append(
                    {
                        "path": str(p.relative_to(run_dir)),
                        "size": st.st_size,
                        "mtime": st.st_mtime,
                    }
                )
    i = sorted(p.name for p in inputs_dir.iterdir()) if inputs_dir.exists() else []
    return {"files": res, "inputs": i}


def _name(v):
    if not isinstance(v, str) or not v.strip() or len(v) > _MAX_NAME_CHARS:
        raise errors.BadInput(
            "bad_name", f"name must be text of 1 to {_MAX_NAME_CHARS} characters"
        )
    return v.strip()


def serve(cfg):
    """Run the supervisor until SIGTERM or SIGINT."""

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
