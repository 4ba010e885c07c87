"""Sign-in to login nodes: a user's credentials start their agent there.

Drivers whose agents need a login (`base.Driver.needs_login`, the sbatch
driver) start an agent only here: the user gives their password (and a
one-time code where the site asks for one); the driver logs in, starts the
agent and waits for its hello; the credentials are dropped whatever the end.
Runs that waited for the sign-in (`wait.reason == "sign_in"`) are woken.
Users hear whether they are signed in to each host by ``sign_in`` pushes.
"""

from supervisor import agent_state, agents, errors, job, names
from supervisor.agents import Watcher


class SignIn(Watcher):
    def __init__(self, cfg, drivers, agents_, sims, hub):
        self._cfg = cfg
        # drivers whose agents start at a sign-in
        self._drivers = {n: d for n, d in drivers.items() if d.needs_login}
        self._agents = agents_
        self._sims = sims
        self._hub = hub
        agents_.watch(self)

    def hosts(self, user):
        """The login nodes `user` may run on, and whether they must sign in."""
        res = []
        for d in self._drivers.values():
            for n, h in d.login_hosts().items():
                res.append(
                    dict(
                        h,
                        signed_in=not self._agents.needs_sign_in(user.name, d.name, n),
                        waiting=self._waiting(user, d.name, n),
                    )
                )
        return {"hosts": res}

    def _waiting(self, user, driver, host):
        return sum(
            1
            for s in self._sims.for_user(user.name)
            if s.job.status == job.QUEUED
            and s.job.driver == driver
            and s.job.wait == {"reason": "sign_in", "host": host}
        )

    def _driver(self, host):
        for d in self._drivers.values():
            if host in d.login_hosts():
                return d
        raise errors.NotFound("unknown_host", f"there is no login node {host!r}")

    async def sign_in(self, user, body):
        """Start `user`'s agent on ``body["host"]`` with their credentials.

        A connected agent is kept (nothing to do); one that is gone is
        replaced: the new one re-attaches its jobs.

        Returns:
            dict: {host, signed_in, agent}
        Raises:
            errors.Error: bad input, or the driver's `LoginFailed`
        """
        h = body.get("host")
        if not isinstance(h, str):
            raise errors.NotFound("unknown_host", f"there is no login node {h!r}")
        d = self._driver(h)
        c = _credentials(body, d.login_hosts()[h]["otp"], h)
        try:
            a = await self._start(user.name, d, h, c)
        except agents.AgentStartFailed as e:
            raise errors.Conflict("agent_lost", str(e)) from None
        finally:
            c.clear()
        self._publish(a)
        return {"host": h, "signed_in": True, "agent": a.to_dict()}

    async def _start(self, user, driver, host, creds):
        a = self._agents.of(user, driver.name, host)
        if a is not None and a.is_ready():
            return a
        if a is not None:
            if a.state == agent_state.STARTING:
                raise errors.Conflict(
                    "sign_in_in_progress", f"a sign-in to {host} is in progress"
                )
            # disconnected: its runs stay lost until the new agent has them
            self._agents.stop(a, agents.AgentGone("replaced by a new sign-in"))
        a, secret = self._agents.create(user, driver.name, host)

        async def _ready():
            await self._agents.wait_ready(a, self._cfg.agent_start_timeout_secs)

        try:
            await driver.login(a, secret, creds, _ready)
        except BaseException as e:
            self._agents.stop(a, agents.AgentStartFailed(f"sign-in failed: {e}"))
            raise
        if a.state != agent_state.CONNECTED:
            raise agents.AgentStartFailed(f"the agent on {host} went away")
        self._agents.signed_in(a)
        return a

    # --- what users hear -------------------------------------------------------

    def agent_ready(self, agent, hello):
        self._publish(agent)
        return {}

    def agent_lost(self, agent):
        self._publish(agent)

    def agent_stopped(self, agent, reason, dead):
        self._publish(agent)

    def _publish(self, agent):
        """Tell the agent's user whether they are signed in to its host."""
        if agent.driver not in self._drivers:
            return
        self._hub.publish(
            agent.user,
            None,
            {
                "type": "sign_in",
                # admins see every user's events: say whose it is
                "user": agent.user,
                "host": agent.host,
                "signed_in": not self._agents.needs_sign_in(
                    agent.user, agent.driver, agent.host
                ),
            },
        )


def _credentials(body, otp, host):
    """The checked credentials of a sign-in request (the caller clears them)."""
    c = {k: body.get(k) for k in ("user", "password", "otp")}
    names.login_user(c["user"])
    if not isinstance(c["password"], str) or not c["password"]:
        raise errors.BadInput("bad_password", "give your password")
    if otp != "none" and not (isinstance(c["otp"], str) and c["otp"].strip()):
        raise errors.BadInput("bad_code", f"{host} asks for a one-time code")
    if isinstance(c["otp"], str):
        c["otp"] = c["otp"].strip()
    return c
