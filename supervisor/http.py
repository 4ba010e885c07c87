"""The JSON HTTP API of API.md: thin handlers over the `Supervisor`.

Errors are translated here, in one place: `errors.Error` becomes its status
and ``{"error", "message"}``; anything else a logged 500. Clients send a
bearer token; the GUI a signed, HttpOnly session cookie plus Tornado's XSRF
header. Someone else's object is a 404, never a 403.
"""

import json
import mimetypes
import time

import tornado.web
from pykern.pkdebug import pkdexc, pkdlog

from supervisor import VERSION, errors, job

COOKIE = "simvisor_user"


class Base(tornado.web.RequestHandler):
    def initialize(self, sv):
        self.sv = sv
        self.user = None
        self._bearer = False
        self._t0 = time.perf_counter()

    def prepare(self):
        h = self.request.headers.get("Authorization", "")
        if h.startswith("Bearer "):
            self._bearer = True
            self.user = self.sv.users.by_token(h[7:].strip())
        else:
            self.user = self.sv.users.by_session(self._session_cookie())
        if len(self.request.body) > self.sv.cfg.max_body_bytes:
            raise errors.TooLarge("body_too_large", "request body is too large")

    def check_xsrf_cookie(self):
        # only the session cookie is sent by browsers on their own: a bearer
        # token or no credential at all (a 401 follows) carries no XSRF risk;
        # nor does a stale session cookie (revoked, or a new cookie secret),
        # which must not stop a browser that lost its _xsrf cookie from
        # signing in again
        if self.request.headers.get("Authorization", "").startswith("Bearer "):
            return
        if self.sv.users.by_session(self._session_cookie()) is None:
            return
        super().check_xsrf_cookie()

    def _session_cookie(self):
        return self.get_signed_cookie(COOKIE, max_age_days=30)

    def require_user(self):
        if self.user is None:
            raise errors.Unauthorized()
        return self.user

    def require_admin(self):
        u = self.require_user()
        if not u.is_admin():
            raise errors.Forbidden()
        return u

    def body(self):
        if not self.request.body:
            return {}
        try:
            b = json.loads(self.request.body)
        except ValueError as e:
            raise errors.BadInput("bad_json", f"body is not JSON: {e}") from e
        if not isinstance(b, dict):
            raise errors.BadInput("bad_json", "body must be a JSON object")
        return b

    def whoami(self, user):
        """The signed-in user, the limits of their plan, and the XSRF token."""
        p = self.sv.plans[user.plan]
        return {
            "user": user.to_dict(),
            "limits": {
                "max_cores": p.max_cores,
                "max_running": p.max_running,
                "max_run_secs": p.max_run_secs,
            },
            # where runs may go: the first is the default
            "drivers": sorted(
                self.sv.drivers, key=lambda d: d != self.sv.cfg.default_driver
            ),
            "xsrf": self.xsrf_token.decode(),
        }

    def sim(self, sim_id):
        return self.sv.sims.get(self.require_user(), sim_id)

    def reply(self, obj, status=200):
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        self.finish(json.dumps(obj))

    def _handle_request_exception(self, e):
        if isinstance(e, errors.Error):
            if not self._finished:
                self.reply({"error": e.code, "message": e.message}, e.status)
            return
        if isinstance(e, tornado.web.HTTPError):
            if not self._finished:
                m = e.log_message or getattr(e, "reason", None) or "request refused"
                self.reply({"error": "http_error", "message": m}, e.status_code)
            return
        pkdlog(
            "{} {} error={} stack={}",
            self.request.method,
            self.request.path,
            e,
            pkdexc(),
        )
        if not self._finished:
            self.reply(
                {"error": "internal", "message": "internal error; it was logged"}, 500
            )

    def on_finish(self):
        self.sv.metrics.observe_request(
            self.request.method, self.get_status(), time.perf_counter() - self._t0
        )


class Health(Base):
    def get(self):
        self.reply({"ok": True, "version": VERSION})


class Login(Base):
    def post(self):
        u = self.sv.users.by_token(self.body().get("token"))
        if u is None:
            raise errors.Unauthorized("that token is not valid")
        self.set_signed_cookie(
            COOKIE, u.session_value(), httponly=True, samesite="Strict", expires_days=30
        )
        self.reply(self.whoami(u))


class Logout(Base):
    def post(self):
        self.clear_cookie(COOKIE)
        self.reply({"ok": True})


class Whoami(Base):
    def get(self):
        self.reply(self.whoami(self.require_user()))


class Codes(Base):
    def get(self):
        self.require_user()
        self.reply(self.sv.catalog.to_list())


class Simulations(Base):
    def get(self):
        u = self.require_user()
        n = self.get_query_argument("user", None)
        if n and n != u.name:
            self.require_admin()
        self.reply([s.to_dict() for s in self.sv.sims.for_user(n or u.name)])

    async def post(self):
        s = await self.sv.create_simulation(self.require_user(), self.body())
        self.reply(s.to_dict(), 201)


class Simulation(Base):
    def get(self, sim_id):
        self.reply(self.sim(sim_id).to_dict())

    async def patch(self, sim_id):
        s = await self.sv.update_simulation(self.sim(sim_id), self.body())
        self.reply(s.to_dict())

    async def delete(self, sim_id):
        await self.sv.delete_simulation(self.sim(sim_id))
        self.reply({"deleted": sim_id})


class Run(Base):
    async def post(self, sim_id):
        s = self.sim(sim_id)
        b = self.body()
        await self.sv.runs.run(self.user, s, b.get("cores"), b.get("driver"))
        self.reply(s.job.to_dict(), 202)


class Cancel(Base):
    async def post(self, sim_id):
        s = self.sim(sim_id)
        await self.sv.runs.cancel(s)
        self.reply(s.job.to_dict())


class Job(Base):
    def get(self, sim_id):
        self.reply(self.sim(sim_id).job.to_dict())


class Frames(Base):
    def get(self, sim_id):
        s = self.sim(sim_id)
        n = _int_arg(self, "since", 0)
        self.reply(
            {"frames": s.frames[n:], "next": len(s.frames), "run_id": s.job.run_id}
        )


class Log(Base):
    def get(self, sim_id):
        s = self.sim(sim_id)
        t = s.log_tail
        n = _int_arg(self, "tail", None)
        if n is not None:
            t = "".join(t.splitlines(keepends=True)[-n:]) if n else ""
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        # where the text ends in the whole log: pushed log messages carry
        # offsets, so a client can join this tail and the pushes exactly
        self.set_header("X-Log-End", str(s.log_chars))
        self.set_header("X-Run-Id", s.job.run_id or "")
        self.finish(t)


class Files(Base):
    async def get(self, sim_id):
        s = self.sim(sim_id)
        self.reply(await self.sv.list_files(s))

    async def post(self, sim_id):
        s = self.sim(sim_id)
        if s.job.status in job.ACTIVE:
            raise errors.Conflict("running", "inputs cannot change while it runs")
        n = self.get_query_argument("name", None)
        if n is None:
            raise errors.BadInput("bad_name", "give the file's name as ?name=")
        await self.sv.put_input(s, n, self.request.body)
        self.reply({"name": n, "size": len(self.request.body)}, 201)


class File(Base):
    async def get(self, sim_id, path):
        n = path.rsplit("/", 1)[-1]
        self.set_header(
            "Content-Type", mimetypes.guess_type(n)[0] or "application/octet-stream"
        )
        self.set_header("Content-Disposition", f'attachment; filename="{n}"')

        async def _write(chunk):
            self.write(chunk)
            await self.flush()

        await self.sv.read_output(self.sim(sim_id), path, _write)
        self.finish()


class SignInHosts(Base):
    def get(self):
        self.reply(self.sv.sign_in_hosts(self.user))


class SignIn(Base):
    async def post(self):
        self.reply(await self.sv.sign_in(self.user, self.body()))


class AdminJobs(Base):
    def get(self):
        self.require_admin()
        self.reply(self.sv.admin_jobs())


class AdminCancel(Base):
    async def post(self, sim_id):
        self.require_admin()
        s = self.sim(sim_id)
        await self.sv.runs.cancel(s, error=f"canceled by admin {self.user.name}")
        self.reply(s.job.to_dict())


class AdminAgents(Base):
    def get(self):
        self.require_admin()
        self.reply([a.to_dict() for a in self.sv.agents.all()])


class AdminAgentKill(Base):
    def post(self, agent_id):
        self.require_admin()
        a = self.sv.agents.by_id.get(agent_id)
        if a is None:
            raise errors.NotFound("unknown_agent", f"no agent {agent_id}")
        self.sv.agents.kill(a)
        self.reply({"killed": agent_id})


class AdminContainers(Base):
    async def get(self):
        self.require_admin()
        self.reply(await self.sv.admin_containers())


class AdminContainerKill(Base):
    async def post(self, container_id):
        self.require_admin()
        await self.sv.kill_container(container_id)
        self.reply({"killed": container_id})


class AdminHosts(Base):
    def get(self):
        self.require_admin()
        self.reply([t.to_dict() for t in self.sv.resources.targets.values()])


class AdminDrain(Base):
    def post(self, name):
        self.require_admin()
        if name not in self.sv.resources.targets:
            raise errors.NotFound("unknown_host", f"no host {name}")
        d = self.body().get("drain", True)
        self.sv.resources.drain(name, bool(d))
        self.reply(self.sv.resources.targets[name].to_dict())


class AdminUsers(Base):
    def get(self):
        self.require_admin()
        self.reply([u.to_dict() for u in self.sv.users.all()])

    async def post(self):
        self.require_admin()
        b = self.body()
        u, t, f = self.sv.users.add(
            b.get("name"), b.get("role", "user"), b.get("plan", "basic")
        )
        await f
        self.reply(dict(u.to_dict(), token=t), 201)


class AdminUser(Base):
    async def patch(self, name):
        self.require_admin()
        u = self.sv.users.get(name)
        if u is None:
            raise errors.NotFound("unknown_user", f"no user {name}")
        b = self.body()
        t, f = self.sv.users.update(
            u,
            role=b.get("role"),
            plan=b.get("plan"),
            new_token=bool(b.get("new_token")),
            revoke_tokens=bool(b.get("revoke_tokens")),
        )
        if b.get("revoke_tokens"):
            self.sv.hub.close_user(u.name)
        await f
        self.reply(dict(u.to_dict(), token=t) if t else u.to_dict())


class Metrics(Base):
    def get(self):
        if self.user is None or not self.user.is_admin():
            if self.request.remote_ip not in ("127.0.0.1", "::1"):
                raise errors.Unauthorized()
        self.set_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
        self.finish(self.sv.metrics.render())


class NotFoundApi(Base):
    def prepare(self):
        raise errors.NotFound("not_found", f"no such API: {self.request.path}")


def _int_arg(handler, name, default):
    v = handler.get_query_argument(name, None)
    if v is None:
        return default
    try:
        n = int(v)
    except ValueError:
        n = -1
    if n < 0:
        raise errors.BadInput("bad_argument", f"{name} must be a non-negative integer")
    return n


def routes(sv):
    s = r"/api/simulations/([0-9a-f]{1,32})"
    r = [
        (r"/api/health", Health),
        (r"/api/login", Login),
        (r"/api/logout", Logout),
        (r"/api/whoami", Whoami),
        (r"/api/codes", Codes),
        (r"/api/simulations", Simulations),
        (s, Simulation),
        (s + "/run", Run),
        (s + "/cancel", Cancel),
        (s + "/job", Job),
        (s + "/frames", Frames),
        (s + "/log", Log),
        (s + "/files", Files),
        (s + "/files/(.+)", File),
        (r"/api/sbatch/hosts", SignInHosts),
        (r"/api/sbatch/login", SignIn),
        (r"/api/admin/jobs", AdminJobs),
        (r"/api/admin/jobs/([0-9a-f]{1,32})/cancel", AdminCancel),
        (r"/api/admin/agents", AdminAgents),
        (r"/api/admin/agents/([A-Za-z0-9_.-]+)/kill", AdminAgentKill),
        (r"/api/admin/containers", AdminContainers),
        (r"/api/admin/containers/([0-9a-f]{64})/kill", AdminContainerKill),
        (r"/api/admin/hosts", AdminHosts),
        (r"/api/admin/hosts/([A-Za-z0-9_.:-]+)/drain", AdminDrain),
        (r"/api/admin/users", AdminUsers),
        (r"/api/admin/users/([a-z0-9_-]+)", AdminUser),
        (r"/metrics", Metrics),
        (r"/api/.*", NotFoundApi),
    ]
    return [(p, h, {"sv": sv}) for p, h in r]
