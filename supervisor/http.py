"""The JSON HTTP API of API.md: thin handlers, each calling one service.

A handler looks its object up first and reads its input after, so an
unknown object is a 404 before bad input is a 400.
Errors are translated here, in one place: `errors.Error` becomes its status
and ``{"error", "message"}``; anything else a logged 500. Clients send a
bearer token; the GUI a signed, HttpOnly session cookie plus Tornado's XSRF
header (`auth`). Someone else's object is a 404, never a 403.
"""

import json
import mimetypes
import time

import tornado.web
from pykern.pkdebug import pkdexc, pkdlog

from supervisor import VERSION, auth, errors


class Base(tornado.web.RequestHandler):
    def initialize(self, sv):
        self.sv = sv
        self.user = None
        self._t0 = time.perf_counter()

    def prepare(self):
        self.user = auth.user(self, self.sv.users)
        if len(self.request.body) > self.sv.cfg.max_body_bytes:
            raise errors.TooLarge("body_too_large", "request body is too large")

    def check_xsrf_cookie(self):
        # only the session cookie is sent by browsers on their own: a bearer
        # token or no credential at all (a 401 follows) carries no XSRF risk;
        # nor does a stale session cookie (revoked, or a new cookie secret),
        # which must not stop a browser that lost its _xsrf cookie from
        # signing in again
        if auth.bearer(self.request) is not None:
            return
        if auth.session_user(self, self.sv.users) is None:
            return
        super().check_xsrf_cookie()

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
        return dict(self.sv.users.whoami(user), xsrf=self.xsrf_token.decode())

    def reply(self, obj, status=200):
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        self.finish(json.dumps(obj))

    def _handle_request_exception(self, e):
        if isinstance(e, errors.Error):
            if not self._finished:
                self.reply(errors.body(e), e.status)
            return
        if isinstance(e, tornado.web.HTTPError):
            if not self._finished:
                m = e.log_message or e.reason or "request refused"
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
            auth.COOKIE,
            u.session_value(),
            httponly=True,
            samesite="Strict",
            expires_days=auth.COOKIE_DAYS,
        )
        self.reply(self.whoami(u))


class Logout(Base):
    def post(self):
        self.clear_cookie(auth.COOKIE)
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
        self.reply(self.sv.sims.list(u, self.get_query_argument("user", None)))

    async def post(self):
        self.reply(await self.sv.sims.create(self.require_user(), self.body()), 201)


class Simulation(Base):
    def get(self, sim_id):
        self.reply(self.sv.sims.get(self.require_user(), sim_id).to_dict())

    async def patch(self, sim_id):
        s = self.sv.sims.get(self.require_user(), sim_id)
        self.reply(await self.sv.sims.update(s, self.body()))

    async def delete(self, sim_id):
        self.reply(await self.sv.sims.delete(self.require_user(), sim_id))


class Run(Base):
    async def post(self, sim_id):
        u = self.require_user()
        s = self.sv.sims.get(u, sim_id)
        self.reply(await self.sv.sims.run(u, s, self.body()), 202)


class Cancel(Base):
    async def post(self, sim_id):
        self.reply(await self.sv.sims.cancel(self.require_user(), sim_id))


class Job(Base):
    def get(self, sim_id):
        self.reply(self.sv.sims.job(self.require_user(), sim_id))


class Frames(Base):
    def get(self, sim_id):
        s = self.sv.sims.get(self.require_user(), sim_id)
        self.reply(self.sv.sims.frames(s, _int_arg(self, "since", 0)))


class Log(Base):
    def get(self, sim_id):
        s = self.sv.sims.get(self.require_user(), sim_id)
        t, end, run_id = self.sv.sims.log(s, _int_arg(self, "tail", None))
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        # where the text ends in the whole log: pushed log messages carry
        # offsets, so a client can join this tail and the pushes exactly
        self.set_header("X-Log-End", str(end))
        self.set_header("X-Run-Id", run_id)
        self.finish(t)


class Files(Base):
    async def get(self, sim_id):
        self.reply(await self.sv.files.list(self.require_user(), sim_id))

    async def post(self, sim_id):
        u = self.require_user()
        n = self.get_query_argument("name", None)
        self.reply(await self.sv.files.put_input(u, sim_id, n, self.request.body), 201)


class File(Base):
    async def get(self, sim_id, path):
        u = self.require_user()
        n = path.rsplit("/", 1)[-1]
        self.set_header(
            "Content-Type", mimetypes.guess_type(n)[0] or "application/octet-stream"
        )
        self.set_header("Content-Disposition", f'attachment; filename="{n}"')

        async def _write(chunk):
            self.write(chunk)
            await self.flush()

        await self.sv.files.read_output(u, sim_id, path, _write)
        self.finish()


class SignInHosts(Base):
    def get(self):
        self.reply(self.sv.sign_in.hosts(self.require_user()))


class SignIn(Base):
    async def post(self):
        self.reply(await self.sv.sign_in.sign_in(self.require_user(), self.body()))


class AdminJobs(Base):
    def get(self):
        self.require_admin()
        self.reply(self.sv.admin.jobs())


class AdminCancel(Base):
    async def post(self, sim_id):
        self.reply(await self.sv.admin.cancel(self.require_admin(), sim_id))


class AdminAgents(Base):
    def get(self):
        self.require_admin()
        self.reply(self.sv.admin.agents())


class AdminAgentKill(Base):
    def post(self, agent_id):
        self.require_admin()
        self.reply(self.sv.admin.kill_agent(agent_id))


class AdminContainers(Base):
    async def get(self):
        self.require_admin()
        self.reply(await self.sv.admin.containers())


class AdminContainerKill(Base):
    async def post(self, container_id):
        self.require_admin()
        self.reply(await self.sv.admin.kill_container(container_id))


class AdminHosts(Base):
    def get(self):
        self.require_admin()
        self.reply(self.sv.admin.hosts())


class AdminDrain(Base):
    def post(self, name):
        self.require_admin()
        t = self.sv.admin.host(name)
        self.reply(self.sv.admin.drain(t, self.body()))


class AdminUsers(Base):
    def get(self):
        self.require_admin()
        self.reply(self.sv.admin.users())

    async def post(self):
        self.require_admin()
        self.reply(await self.sv.admin.add_user(self.body()), 201)


class AdminUser(Base):
    async def patch(self, name):
        self.require_admin()
        u = self.sv.admin.user(name)
        self.reply(await self.sv.admin.update_user(u, self.body()))


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
