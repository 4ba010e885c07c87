"""The JSON HTTP API of API.md: thin handlers, each calling one service.

A handler looks its object up first and reads its input after, so an
unknown object is a 404 before bad input is a 400. The base class
(`http_base`) checks credentials and bodies and translates errors; the
admin handlers are `http_admin`. `ROUTES` is the one table of paths: the
Tornado routes and the OpenAPI document are both made from it.
"""

import mimetypes

import swagger_ui_bundle
import tornado.web

from supervisor import VERSION, auth, errors, http_admin, http_library, http_sweeps
from supervisor import names, openapi, schema
from supervisor.http_base import Base, int_arg
from supervisor.openapi import PUBLIC, Op, action, ops

#: credentials are short: a login's body needs no more
_SMALL_BODY_BYTES = 64 * 1024


class Health(Base):
    api = ops(get=Op("is the service up", schema.Health, auth=PUBLIC))
    rate_limited = False

    def get(self):
        r = {"ok": True, "version": VERSION}
        if (e := self.sv.store.health()) is not None:
            # up and answering, but what it is asked may not be kept yet
            r["degraded"] = {"store": e}
        self.reply(r)


class Login(Base):
    # anonymous by nature: the address bucket must not hold up a right token;
    # wrong ones are slowed (`bad_credentials`)
    rate_limited = False

    api = ops(
        post=Op(
            "sign in with a token: a session cookie",
            schema.Whoami,
            request=schema.Login,
            auth=PUBLIC,
            also=(401,),
            max_body_bytes=_SMALL_BODY_BYTES,
        )
    )

    def post(self):
        u = self.sv.users.by_token(self.body(schema.Login)["token"])
        if u is None:
            self.bad_credentials()
            raise errors.Unauthorized("that token is not valid")
        self.set_signed_cookie(
            auth.COOKIE,
            u.session_value(),
            httponly=True,
            secure=auth.is_https(self.request, self.sv.cfg.trusted_proxies),
            samesite="Strict",
            expires_days=auth.COOKIE_DAYS,
        )
        self.reply(self.whoami(u))


class Logout(Base):
    api = ops(post=action("end the session", schema.Ok, auth=PUBLIC))

    def post(self):
        self.body(schema.NoBody)
        self.clear_cookie(auth.COOKIE)
        self.reply({"ok": True})


class Whoami(Base):
    api = ops(get=Op("the signed-in user, limits, drivers", schema.Whoami))

    def get(self):
        self.reply(self.whoami(self.require_user()))


class Codes(Base):
    api = ops(get=Op("the code catalog", [schema.Code]))

    def get(self):
        self.require_user()
        self.reply(self.sv.catalog.to_list())


class Simulations(Base):
    api = ops(
        get=Op(
            "the caller's simulations (admins: anyone's)",
            [schema.Simulation],
            query=(
                ("user", {"type": "string"}, "whose (admins only)"),
                (
                    "members",
                    {"type": "integer", "enum": [0, 1]},
                    "0: leave out the members of sweeps (GET /api/sweeps has them)",
                ),
            ),
            also=(403,),
        ),
        post=Op(
            "create a simulation", schema.Simulation, 201, request=schema.SimCreate
        ),
    )

    def get(self):
        u = self.require_user()
        m = int_arg(self, "members", 1)
        if m not in (0, 1):
            raise errors.BadInput("bad_argument", "members must be 0 or 1")
        self.reply(
            self.sv.sims.list(u, self.get_query_argument("user", None), members=m)
        )

    async def post(self):
        u = self.require_user()
        self.reply(await self.sv.sims.create(u, self.body(schema.SimCreate)), 201)


class Simulation(Base):
    api = ops(
        get=Op("one simulation, with its job", schema.Simulation, lookup=True),
        patch=Op(
            "rename it or change its parameters",
            schema.Simulation,
            request=schema.SimPatch,
            lookup=True,
        ),
        delete=action(
            "cancel its run, delete it and its files", schema.Deleted, lookup=True
        ),
    )

    def get(self, sim_id):
        self.reply(self.sv.sims.get(self.require_user(), sim_id).to_dict())

    async def patch(self, sim_id):
        u = self.require_user()
        s = self.sv.sims.get(u, sim_id)
        self.reply(await self.sv.sims.update(u, s, self.body(schema.SimPatch)))

    async def delete(self, sim_id):
        u = self.require_user()
        self.sv.sims.get(u, sim_id)
        self.body(schema.NoBody)
        self.reply(await self.sv.sims.delete(u, sim_id))


class Run(Base):
    api = ops(
        post=Op(
            "queue a run (supersedes a running one)",
            schema.Job,
            202,
            request=schema.RunRequest,
            lookup=True,
        )
    )

    async def post(self, sim_id):
        u = self.require_user()
        s = self.sv.sims.get(u, sim_id)
        self.reply(await self.sv.sims.run(u, s, self.body(schema.RunRequest)), 202)


class Cancel(Base):
    api = ops(post=action("cancel the current run", schema.Job, lookup=True))

    async def post(self, sim_id):
        u = self.require_user()
        self.sv.sims.get(u, sim_id)
        self.body(schema.NoBody)
        self.reply(await self.sv.sims.cancel(u, sim_id))


class Job(Base):
    api = ops(get=Op("the simulation's job", schema.Job, lookup=True))

    def get(self, sim_id):
        self.reply(self.sv.sims.job(self.require_user(), sim_id))


class Frames(Base):
    api = ops(
        get=Op(
            "in situ frames of the current run",
            schema.Frames,
            query=(("since", {"type": "integer", "minimum": 0}, "first frame"),),
            lookup=True,
        )
    )

    async def get(self, sim_id):
        s = self.sv.sims.get(self.require_user(), sim_id)
        self.reply_json(await self.sv.sims.frames(s, int_arg(self, "since", 0)))


class Log(Base):
    api = ops(
        get=Op(
            "the current run's log (X-Log-End, X-Run-Id)",
            query=(("tail", {"type": "integer", "minimum": 0}, "last lines"),),
            content="text/plain",
            lookup=True,
        )
    )

    def get(self, sim_id):
        s = self.sv.sims.get(self.require_user(), sim_id)
        t, end, run_id = self.sv.sims.log(s, int_arg(self, "tail", None))
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        # where the text ends in the whole log: pushed log messages carry
        # offsets, so a client can join this tail and the pushes exactly
        self.set_header("X-Log-End", str(end))
        self.set_header("X-Run-Id", run_id)
        self.finish(t)


class Files(Base):
    api = ops(
        get=Op("the run's files and the inputs", schema.FileList, lookup=True),
        post=Op(
            "upload an input file (?name=)",
            schema.Uploaded,
            201,
            query=(("name", {"type": "string"}, "the file's name"),),
            request_content="application/octet-stream",
            lookup=True,
        ),
    )

    async def get(self, sim_id):
        self.reply(await self.sv.files.list(self.require_user(), sim_id))

    def body_quota(self):
        if self.request.method != "POST":
            return None
        n = _raw_query_argument(self, "name")
        return self.sv.files.upload_room(self.user, self.path_args[0], n)

    async def post(self, sim_id):
        u = self.require_user()
        n = _raw_query_argument(self, "name")
        self.reply(await self.sv.files.put_input(u, sim_id, n, self.raw_body()), 201)


class File(Base):
    api = ops(
        get=Op(
            "download an output file (its type guessed from its name)",
            content="*/*",
            lookup=True,
        )
    )

    async def get(self, sim_id, path):
        u = self.require_user()
        n = path.rsplit("/", 1)[-1]
        started = []

        def _start():
            # only once the file is found: an error is not a download
            started.append(True)
            self.set_header(
                "Content-Type",
                mimetypes.guess_type(n)[0] or "application/octet-stream",
            )
            self.set_header("Content-Disposition", names.content_disposition(n))

        async def _write(chunk):
            if not started:
                _start()
            self.write(chunk)
            await self.flush()

        await self.sv.files.read_output(u, sim_id, path, _write)
        if not started:
            _start()
        self.finish()


class SignInHosts(Base):
    api = ops(get=Op("login nodes and whether you are signed in", schema.LoginHosts))

    def get(self):
        self.reply(self.sv.sign_in.hosts(self.require_user()))


class SignIn(Base):
    api = ops(
        post=Op(
            "sign in to a login node: start your agent there",
            schema.SignedIn,
            request=schema.SignInRequest,
            max_body_bytes=_SMALL_BODY_BYTES,
            lookup=True,
        )
    )

    async def post(self):
        u = self.require_user()
        self.reply(await self.sv.sign_in.sign_in(u, self.body(schema.SignInRequest)))


class Metrics(Base):
    api = ops(
        get=Op(
            "Prometheus metrics (admins, or from loopback)",
            content="text/plain",
            auth=PUBLIC,
        )
    )

    def get(self):
        if self.user is None or not self.user.is_admin():
            if self.client_address() not in ("127.0.0.1", "::1"):
                raise errors.Unauthorized()
        self.set_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
        self.finish(self.sv.metrics.render())


class NotFoundApi(Base):
    def _prepare(self):
        # through Base.prepare: a small body is read first, the connection kept
        raise errors.NotFound("not_found", f"no such API: {self.request.path}")


def _raw_query_argument(handler, name):
    """A query argument as sent (Tornado's own strips it and blanks controls)."""
    v = handler.request.query_arguments.get(name)
    if not v:
        return None
    try:
        return v[-1].decode()
    except UnicodeDecodeError:
        raise errors.BadInput(f"bad_{name}", f"{name} is not UTF-8") from None


#: every API path (an `openapi` template) and its handler
ROUTES = (
    ("/api/health", Health),
    ("/api/login", Login),
    ("/api/logout", Logout),
    ("/api/whoami", Whoami),
    ("/api/codes", Codes),
    ("/api/simulations", Simulations),
    ("/api/simulations/{id}", Simulation),
    ("/api/simulations/{id}/run", Run),
    ("/api/simulations/{id}/cancel", Cancel),
    ("/api/library", http_library.LibraryList),
    ("/api/library/{name}/upload", http_library.LibraryUpload),
    ("/api/library/{name}", http_library.LibraryFile),
    ("/api/simulations/{id}/job", Job),
    ("/api/simulations/{id}/frames", Frames),
    ("/api/simulations/{id}/log", Log),
    ("/api/simulations/{id}/files", Files),
    ("/api/simulations/{id}/files/{path}", File),
    *http_sweeps.ROUTES,
    ("/api/sbatch/hosts", SignInHosts),
    ("/api/sbatch/login", SignIn),
    ("/api/admin/jobs", http_admin.AdminJobs),
    ("/api/admin/jobs/{id}/cancel", http_admin.AdminCancel),
    ("/api/admin/agents", http_admin.AdminAgents),
    ("/api/admin/agents/{agent_id}/kill", http_admin.AdminAgentKill),
    ("/api/admin/containers", http_admin.AdminContainers),
    ("/api/admin/containers/{container_id}/kill", http_admin.AdminContainerKill),
    ("/api/admin/hosts", http_admin.AdminHosts),
    ("/api/admin/hosts/{host}/drain", http_admin.AdminDrain),
    ("/api/admin/users", http_admin.AdminUsers),
    ("/api/admin/users/{user}", http_admin.AdminUser),
    ("/metrics", Metrics),
)


class OpenApi(Base):
    def initialize(self, sv, doc):
        super().initialize(sv)
        self._doc = doc

    def get(self):
        if self.get_query_argument("for", None) == "swagger-ui":
            self.reply(openapi.for_swagger_ui(self._doc))
        else:
            self.reply(self._doc)


class Docs(Base):
    def get(self):
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.finish(openapi.docs_page("/api/docs/assets"))


class DocsScript(Base):
    def get(self):
        self.set_header("Content-Type", "text/javascript; charset=utf-8")
        self.finish(openapi.DOCS_JS)


def routes(sv):
    """Tornado's routes: the API, its document and docs page, then 404s."""
    d = openapi.document(ROUTES)
    return [
        *((openapi.route_regex(t), h, {"sv": sv}) for t, h in ROUTES),
        (r"/api/openapi\.json", OpenApi, {"sv": sv, "doc": d}),
        (r"/api/docs", Docs, {"sv": sv}),
        (r"/api/docs\.js", DocsScript, {"sv": sv}),
        (
            r"/api/docs/assets/(.*)",
            tornado.web.StaticFileHandler,
            {"path": swagger_ui_bundle.swagger_ui_path},
        ),
        (r"/api/.*", NotFoundApi, {"sv": sv}),
    ]
