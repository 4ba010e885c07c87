"""The admin API (role admin): every job, agent, container, host and user."""

from supervisor import schema
from supervisor.http_base import Base
from supervisor.openapi import ADMIN, Op, action, ops


class AdminJobs(Base):
    api = ops(get=Op("every active job", [schema.AdminJob], auth=ADMIN))

    def get(self):
        self.require_admin()
        self.reply(self.sv.admin.jobs())


class AdminCancel(Base):
    api = ops(post=action("cancel anyone's run", schema.Job, auth=ADMIN, lookup=True))

    async def post(self, sim_id):
        a = self.require_admin()
        self.sv.sims.get(a, sim_id)
        self.body(schema.NoBody)
        self.reply(await self.sv.admin.cancel(a, sim_id))


class AdminAgents(Base):
    api = ops(get=Op("every agent", [schema.Agent], auth=ADMIN))

    def get(self):
        self.require_admin()
        self.reply(self.sv.admin.agents())


class AdminAgentKill(Base):
    api = ops(
        post=action(
            "stop an agent; its runs end canceled",
            schema.Killed,
            auth=ADMIN,
            lookup=True,
        )
    )

    def post(self, agent_id):
        self.require_admin()
        self.body(schema.NoBody)
        self.reply(self.sv.admin.kill_agent(agent_id))


class AdminContainers(Base):
    api = ops(get=Op("every container", [schema.Container], auth=ADMIN))

    async def get(self):
        self.require_admin()
        self.reply(await self.sv.admin.containers())


class AdminContainerKill(Base):
    api = ops(post=action("kill a container", schema.Killed, auth=ADMIN, lookup=True))

    async def post(self, container_id):
        self.require_admin()
        self.body(schema.NoBody)
        self.reply(await self.sv.admin.kill_container(container_id))


class AdminHosts(Base):
    api = ops(get=Op("targets, cores used and free", [schema.Host], auth=ADMIN))

    def get(self):
        self.require_admin()
        self.reply(self.sv.admin.hosts())


class AdminDrain(Base):
    api = ops(
        post=Op(
            "drain a host (or undrain: drain false)",
            schema.Host,
            request=schema.Drain,
            auth=ADMIN,
            lookup=True,
        )
    )

    def post(self, name):
        self.require_admin()
        t = self.sv.admin.host(name)
        self.reply(self.sv.admin.drain(t, self.body(schema.Drain)))


class AdminUsers(Base):
    api = ops(
        get=Op("every user", [schema.User], auth=ADMIN),
        post=Op(
            "add a user (the reply has its token)",
            schema.NewUser,
            201,
            request=schema.UserCreate,
            auth=ADMIN,
        ),
    )

    def get(self):
        self.require_admin()
        self.reply(self.sv.admin.users())

    async def post(self):
        self.require_admin()
        self.reply(await self.sv.admin.add_user(self.body(schema.UserCreate)), 201)


class AdminUser(Base):
    api = ops(
        patch=Op(
            "change a user's role or plan, mint or revoke tokens",
            schema.UserMaybeToken,
            request=schema.UserPatch,
            auth=ADMIN,
            lookup=True,
        )
    )

    async def patch(self, name):
        self.require_admin()
        u = self.sv.admin.user(name)
        self.reply(await self.sv.admin.update_user(u, self.body(schema.UserPatch)))
