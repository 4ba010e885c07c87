"""What admins see and do: every job, agent, host, container and user.

Each method is one admin request; the HTTP layer has checked the role.
"""

from supervisor import errors, job


class Admin:
    def __init__(self, sims, runs, agents, drivers, resources, users, hub):
        """
        Args:
            sims (sim_store.SimStore): every simulation
        """
        self._sims = sims
        self._runs = runs
        self._agents = agents
        self._drivers = drivers
        self._resources = resources
        self._users = users
        self._hub = hub

    def jobs(self):
        """Every active job, oldest first, without its history."""
        res = []
        for s in self._sims.by_id.values():
            if s.job.status in job.ACTIVE:
                d = dict(
                    s.job.to_dict(),
                    user=s.user,
                    simulation=s.id,
                    name=s.name,
                    code=s.code,
                    agent=s.agent_id,
                )
                del d["history"]
                res.append(d)
        res.sort(key=lambda r: r["queued_at"] or 0)
        return res

    async def cancel(self, admin, sim_id):
        s = self._sims.get(admin, sim_id)
        await self._runs.cancel(s, error=f"canceled by admin {admin.name}")
        return s.job.to_dict()

    # --- agents and containers -------------------------------------------------

    def agents(self):
        return [a.to_dict() for a in self._agents.all()]

    def kill_agent(self, agent_id):
        """Stop an agent (and its container); its runs end canceled."""
        a = self._agents.get(agent_id)
        if a is None:
            raise errors.NotFound("unknown_agent", f"no agent {agent_id}")
        self._agents.kill(a)
        return {"killed": agent_id}

    async def containers(self):
        """Every container of every driver, per host."""
        res = []
        for d in self._drivers.values():
            res += await d.containers()
        return res

    async def kill_container(self, container_id):
        """Kill a container: its agent (whose runs end canceled), or a stray."""
        for a in self._agents.all():
            if a.info.get("container_id") == container_id:
                self._agents.kill(a)
                return {"killed": container_id}
        for d in self._drivers.values():
            if await d.remove_container(container_id):
                return {"killed": container_id}
        raise errors.NotFound("unknown_container", f"no container {container_id}")

    # --- hosts -----------------------------------------------------------------

    def hosts(self):
        return [t.to_dict() for t in self._resources.targets.values()]

    def host(self, name):
        """The target `name` (`resources.Target`), or NotFound."""
        t = self._resources.targets.get(name)
        if t is None:
            raise errors.NotFound("unknown_host", f"no host {name}")
        return t

    def drain(self, target, body):
        """Stop (``drain: true``, the default) or resume new work on a host."""
        self._resources.drain(target.name, bool(body.get("drain", True)))
        return target.to_dict()

    # --- users -----------------------------------------------------------------

    def users(self):
        return [u.to_dict() for u in self._users.all()]

    async def add_user(self, body):
        u, t, f = self._users.add(
            body.get("name"), body.get("role", "user"), body.get("plan", "basic")
        )
        await f
        return dict(u.to_dict(), token=t)

    def user(self, name):
        """The user `name`, or NotFound."""
        u = self._users.get(name)
        if u is None:
            raise errors.NotFound("unknown_user", f"no user {name}")
        return u

    async def update_user(self, u, body):
        """Role, plan, a new token, or revoke every token (and end their streams)."""
        was_admin = u.is_admin()
        t, f = self._users.update(
            u,
            role=body.get("role"),
            plan=body.get("plan"),
            new_token=bool(body.get("new_token")),
            revoke_tokens=bool(body.get("revoke_tokens")),
        )
        if body.get("revoke_tokens") or u.is_admin() != was_admin:
            # a stream sees what its role allowed when it opened: a new
            # role takes a new stream (a demoted admin's saw everyone's)
            self._hub.close_user(u.name)
        await f
        return dict(u.to_dict(), token=t) if t else u.to_dict()
