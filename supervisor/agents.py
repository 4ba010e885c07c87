"""Agents: who they are, whether they are connected, and talking to them.

One agent per (user, driver, host), started by its driver when that user's
run is next, reused while the user has work, shut down after an idle period.
An agent proves who it is with a per-agent secret (stored here as a hash, so
agents can re-authenticate after a supervisor restart) bound to one user and
one driver. `Agents.check_ready` is a dispatch prerequisite: it returns a
connected agent or raises `Awaited` while one starts (or, for drivers that
need a login, until its user signs in).

An agent whose driver restarts agents (local) and that dies holding runs is
started again under the same id, with a new secret; its runs wait, lost,
for its hello, which re-attaches them (`_restart`). Connection states and
their table are in `agent_state`. What an agent holds is `Runs`' business: it tells `Agents` the load (`load_changed`) and hears of
agents that come and go through the `Watcher` interface.
"""

import asyncio
import hmac
import secrets
import time

from pykern.pkdebug import pkdexc, pkdlog

from supervisor import agent_ops, tasks, users
from supervisor.agent_state import (
    CONNECTED,
    DISCONNECTED,
    LIVE,
    STARTING,
    STOPPED,
    Agent,
)
from supervisor.dispatch import Awaited

#: the reason given when an admin kills an agent (its runs end canceled)
KILLED_BY_ADMIN = "killed by an admin"

#: an agent's restarts count against `Driver.agent_restarts` within this
#: window: crashes days apart do not use up its budget
RESTART_WINDOW_SECS = 600.0


class AgentStartFailed(Exception):
    """The agent did not call back; the message says why (shown to users)."""


#: an op's failures (`agent_ops`), re-exported: callers catch them from here
AgentGone = agent_ops.AgentGone
OpFailed = agent_ops.OpFailed


class Watcher:
    """What a component hears of agents; every method has a default."""

    def agent_ready(self, agent, hello):
        """`agent` said hello. Returns: dict: run id -> where to resume."""
        return {}

    def agent_lost(self, agent):
        """Its connection closed; it may come back."""

    def agent_restarting(self, agent, reason):
        """Its process died holding runs; a new one is starting to re-attach them."""

    def agent_stopped(self, agent, reason, dead):
        """Gone for good. `dead`: its process surely ended (so did its runs)."""


class Agents:
    def __init__(self, cfg, store, drivers):
        self._cfg = cfg
        self._store = store
        self._drivers = drivers
        self._watchers = []
        self.by_id = {}
        self._by_key = {}
        ops = agent_ops.Ops()
        #: talking to an agent: frames out, ops and their replies (`agent_ops`)
        self.send, self.flush, self.new_op = ops.send, ops.flush, ops.new_op
        self.reply, self.call = ops.reply, ops.call
        self._fail_ops = ops.fail
        # (user, driver, host) -> future resolved when the user signs in
        self._sign_ins = {}
        self._tasks = tasks.Tasks("agents")
        self._destroyed = False

    def watch(self, watcher):
        """Tell `watcher` (a `Watcher`) of agents that come and go."""
        self._watchers.append(watcher)

    def load(self):
        """Agents known before a restart: wait for them to reconnect."""
        for _, d in self._store.load_all("agents"):
            a = self._new(d, DISCONNECTED)
            if a.driver not in self._drivers:
                pkdlog("{} forgotten: no driver={}", a, a.driver)
                self._store.delete(f"agents/{a.id}.json")
                continue
            self._add(a)
            # give it as long as a start to call back, then forget it
            self._set_timer(
                a, self._cfg.agent_start_timeout_secs, self._reconnect_expired, a
            )
        for d in self._drivers.values():
            d.recover(
                [a for a in self.by_id.values() if a.driver == d.name],
                self.agent_exited,
            )

    def _new(self, doc, state):
        a = Agent(doc, state)
        a.ready = asyncio.get_running_loop().create_future()
        return a

    def _add(self, agent):
        self.by_id[agent.id] = agent
        self._by_key[(agent.user, agent.driver, agent.host)] = agent

    def all(self):
        return list(self.by_id.values())

    def get(self, agent_id):
        return self.by_id.get(agent_id)

    def of(self, user, driver, host):
        """The agent of (user, driver, host) in any state but stopped, or None."""
        return self._by_key.get((user, driver, host))

    def hosts_of(self, user, driver):
        """Hosts where `user` has an agent of `driver` (running or starting)."""
        return {h for u, d, h in self._by_key if u == user and d == driver}

    def connected(self, user, driver, host):
        """The connected agent of (user, driver, host), or None."""
        a = self.of(user, driver, host)
        return a if a is not None and a.is_ready() else None

    def needs_sign_in(self, user, driver, host):
        """True unless `user` has a connected (or starting) agent there."""
        a = self.of(user, driver, host)
        return a is None or a.state not in LIVE

    # --- the dispatch prerequisite -----------------------------------------

    def check_ready(self, user, driver, host):
        """The connected agent of (user, driver, host), or raise `Awaited`."""
        a = self.of(user, driver, host)
        if a is not None and a.is_ready():
            return a
        if a is None:
            if self._drivers[driver].needs_login:
                raise Awaited(
                    self._sign_in_future((user, driver, host)),
                    f"sign in to {host} to run there",
                    "sign_in",
                    host=host,
                )
            a, s = self.create(user, driver, host)
            self._tasks.spawn(self._start(a, s))
        if a.state == STARTING:
            raise Awaited(a.ready, "starting agent", "agent_start", host=host)
        raise Awaited(
            a.ready, "waiting for agent to reconnect", "agent_reconnect", host=host
        )

    def _sign_in_future(self, key):
        f = self._sign_ins.get(key)
        if f is None or f.done():
            f = self._sign_ins[key] = asyncio.get_running_loop().create_future()
        return f

    # --- start and stop ------------------------------------------------------

    def create(self, user, driver, host):
        """A new agent, `starting`, durable before it can call back.

        Returns:
            tuple: (Agent, its secret): the caller starts it and forgets the secret
        """
        s = secrets.token_urlsafe(32)
        a = self._new(
            {
                "id": f"{user}-{driver}-{secrets.token_hex(4)}",
                "user": user,
                "driver": driver,
                "host": host,
                "secret_hash": users.hash_token(s),
            },
            STARTING,
        )
        self._add(a)
        # durable before the agent can call back, so a restart knows it
        self._store.save(f"agents/{a.id}.json", a.to_doc())
        return a, s

    async def _start(self, agent, secret, failed=None):
        """Start the agent's process.

        Args:
            failed (callable): ``failed(error)``: the reason to stop a
                restarted agent with if its start fails (None: a first start)
        """
        if failed is None:
            self._set_timer(
                agent, self._cfg.agent_start_timeout_secs, self._start_expired, agent
            )
        try:
            d = self._drivers[agent.driver]
            await d.start(agent, secret, self.agent_exited)
            if agent.state == STOPPED:
                # stopped (timed out, killed) while it was being started
                await d.kill(agent)
                return
            self._store.save(f"agents/{agent.id}.json", agent.to_doc())
        except Exception as e:
            pkdlog("{} start failed error={} stack={}", agent, e, pkdexc())
            if failed is None:
                self.stop(agent, AgentStartFailed(f"agent failed to start: {e}"))
            else:
                self.stop(agent, failed(e), dead=True)

    async def wait_ready(self, agent, timeout_secs):
        """Until `agent` says hello (raises TimeoutError)."""
        await asyncio.wait_for(asyncio.shield(agent.ready), timeout_secs)

    def signed_in(self, agent):
        """A sign-in started `agent`: keep it, wake runs waiting for it."""
        self._store.save(f"agents/{agent.id}.json", agent.to_doc())
        f = self._sign_ins.pop((agent.user, agent.driver, agent.host), None)
        if f is not None and not f.done():
            f.set_result(None)

    def agent_exited(self, agent, message, dead=False, crashed=False):
        """Driver callback: the agent's process ended (or, after a restart,
        was found gone: `restart`).

        An agent of a driver that restarts agents (`Driver.agent_restarts`)
        that crashed holding runs is started again: the new process
        re-attaches them (their trees wait for it). Otherwise, or once the
        restarts are spent, it is stopped.

        Args:
            dead (bool): its runs end with it unless it is restarted (a
                container is gone, a local agent's keepers end their runs)
            crashed (bool): it did not exit on purpose (a signal, an error)
        """
        if agent.state == STOPPED:
            return
        d = self._drivers[agent.driver]
        if (
            crashed
            and agent.state != STARTING
            and (agent.run_ids or agent.restarting is not None)
            and _recent(agent.restart_times) < d.agent_restarts
            and not self._destroyed
        ):
            self._restart(agent, message)
        elif agent.restarting is not None:
            self.stop(
                agent,
                AgentGone(f"{agent.restarting}; the new agent exited too: {message}"),
                dead=True,
            )
        elif agent.state == STARTING:
            self.stop(agent, AgentStartFailed(message), dead=True)
        elif dead:
            # its runs end now, with the reason (e.g. out of memory)
            self.stop(agent, AgentGone(message), dead=True)
        elif agent.state != STOPPED and agent.conn is None:
            # its runs stay lost for their grace period (DESIGN: lost, then
            # error with the reason): they may still be going
            self.stop(agent, AgentGone(message))

    def _restart(self, agent, message):
        """Start the process of `agent` again; its runs wait (lost) for its hello."""
        agent.restarts += 1
        agent.restart_times.append(time.monotonic())
        if agent.restarting is None:
            agent.restarting = message
        message = agent.restarting
        pkdlog("{} restart={} after: {}", agent, agent.restarts, message)
        if agent.conn is not None:
            # the process is gone: so is its connection, whatever TCP says
            c = agent.conn
            self.closed(agent, c)
            c.close()
        for w in self._watchers:
            w.agent_restarting(agent, message)
        self._set_timer(
            agent, self._cfg.agent_start_timeout_secs, self._restart_expired, agent
        )
        # a new secret: the old one went with the old process
        x = secrets.token_urlsafe(32)
        agent.secret_hash = users.hash_token(x)
        self._store.save(f"agents/{agent.id}.json", agent.to_doc())
        self._tasks.spawn(
            self._start(
                agent,
                x,
                lambda e: AgentGone(f"{message}; a new agent could not start: {e}"),
            )
        )

    def _restart_expired(self, agent):
        if agent.restarting is not None and agent.state != STOPPED:
            self.stop(
                agent,
                AgentGone(
                    f"{agent.restarting}; no new agent called back within"
                    f" {self._cfg.agent_start_timeout_secs} s"
                ),
                dead=True,
            )

    def _start_expired(self, agent):
        if agent.state == STARTING:
            self.stop(
                agent,
                AgentStartFailed(
                    f"agent did not call back within {self._cfg.agent_start_timeout_secs} s"
                ),
            )

    def _reconnect_expired(self, agent):
        if agent.state == DISCONNECTED:
            self.stop(agent, AgentGone("agent did not reconnect"))

    def stop(self, agent, reason, dead=False):
        """Forget the agent and kill what is left of it; idempotent.

        Args:
            reason (Exception): `AgentStartFailed` or `AgentGone`, with why
            dead (bool): its process is known to be gone (or is being killed)
        """
        if agent.state == STOPPED:
            return
        pkdlog("{} stopped reason={}", agent, reason)
        agent.transition(STOPPED)
        self._cancel_timer(agent)
        if self.by_id.get(agent.id) is agent:
            del self.by_id[agent.id]
            del self._by_key[(agent.user, agent.driver, agent.host)]
        self._store.delete(f"agents/{agent.id}.json")
        if not agent.ready.done():
            if (
                isinstance(reason, AgentStartFailed)
                and not self._drivers[agent.driver].needs_login
            ):
                agent.ready.set_exception(reason)
                # retrieved by whoever awaits it; none may be waiting
                agent.ready.exception()
            else:
                # waiters restart and start a new agent
                agent.ready.set_result(None)
        self._fail_ops(agent, str(reason))
        if agent.conn is not None:
            self.send(agent, "shutdown")
            self.flush(agent)
            agent.conn.close()
            agent.conn = None
        for w in self._watchers:
            w.agent_stopped(agent, str(reason), dead)
        self._tasks.spawn(self._drivers[agent.driver].kill(agent))

    def kill(self, agent, reason=KILLED_BY_ADMIN):
        self.stop(agent, AgentGone(reason), dead=True)

    # --- the websocket -----------------------------------------------------

    def authenticate(self, agent_id, secret):
        a = self.by_id.get(agent_id) if agent_id else None
        if a is None or not secret:
            return None
        if not hmac.compare_digest(a.secret_hash, users.hash_token(secret)):
            return None
        return a

    def attach(self, agent, conn):
        """An authenticated connection opened; `hello` comes next."""
        old = agent.conn
        if old is not None and old is not conn:
            # a stale connection the agent gave up on: treat it as closed
            # (its ops fail, its runs are lost until hello re-adopts them)
            self.closed(agent, old)
            old.close()
        agent.conn = conn
        agent.last_message_at = time.time()

    def hello(self, agent, msg):
        if msg["agent_id"] != agent.id:
            raise ValueError(f"hello agent_id={msg['agent_id']} != {agent.id}")
        if agent.state == STOPPED:
            # forgotten meanwhile: it must not come back to life
            agent.conn.close()
            return
        self._cancel_timer(agent)
        if agent.state != CONNECTED:
            agent.transition(CONNECTED)
        agent.connected_since = time.time()
        agent.info["pid"] = msg["pid"]
        agent.info["agent_host"] = msg["host"]
        welcome = {}
        for w in self._watchers:
            welcome.update(w.agent_ready(agent, msg))
        if agent.restarting is not None:
            pkdlog("{} restarted: re-attached its runs", agent)
            agent.restarting = None
        self.send(agent, "welcome", runs=welcome)
        if not agent.ready.done():
            agent.ready.set_result(None)
        self._check_idle(agent)

    def closed(self, agent, conn):
        if agent.conn is not conn:
            return
        agent.conn = None
        if agent.state == STOPPED or self._destroyed:
            # at shutdown runs are not lost: the agent reconnects to the next start
            return
        pkdlog("{} disconnected", agent)
        if agent.state == CONNECTED:
            agent.transition(DISCONNECTED)
        if agent.ready.done():
            # waiters of a pending one keep it: hello resolves it
            agent.ready = asyncio.get_running_loop().create_future()
        self._fail_ops(agent, f"agent {agent.id} disconnected")
        for w in self._watchers:
            w.agent_lost(agent)
        if agent.state == DISCONNECTED:
            # (a starting agent keeps its start deadline)
            self._set_timer(
                agent,
                self._cfg.agent_start_timeout_secs,
                self._reconnect_expired,
                agent,
            )

    # --- load and idle reaping -----------------------------------------------

    def load_changed(self, agent, run_ids, cores):
        """`Runs` says what `agent` holds now: resize, reap after an idle period."""
        agent.run_ids = tuple(run_ids)
        agent.cores = cores
        self._check_idle(agent)

    def _check_idle(self, agent):
        if agent.state != CONNECTED:
            return
        d = self._drivers[agent.driver]
        d.resize(agent, agent.cores)
        if agent.run_ids:
            self._cancel_timer(agent)
        elif agent.timer is None:
            self._set_timer(agent, d.idle_secs, self._idle_expired, agent)

    def _idle_expired(self, agent):
        if not agent.run_ids and agent.state == CONNECTED:
            self.stop(agent, AgentGone("idle"), dead=True)

    def _set_timer(self, agent, secs, fn, *args):
        self._cancel_timer(agent)
        agent.timer = asyncio.get_running_loop().call_later(secs, fn, *args)

    def _cancel_timer(self, agent):
        if agent.timer is not None:
            agent.timer.cancel()
            agent.timer = None

    async def destroy(self):
        """Shutdown: agents with runs keep running (they reconnect to the next
        start); idle ones that their driver can start again are told to exit
        and forgotten, so none lingers after the supervisor is gone."""
        self._destroyed = True
        for a in self.by_id.values():
            self._cancel_timer(a)
            if (
                a.is_ready()
                and not a.run_ids
                and not self._drivers[a.driver].needs_login
            ):
                pkdlog("{} idle at shutdown: told to exit", a)
                self.send(a, "shutdown")
                self._store.delete(f"agents/{a.id}.json")
            if a.conn is not None:
                self.flush(a)
                a.conn.close()
        await self._tasks.destroy()


def _recent(times):
    """How many of `times` (monotonic) are within `RESTART_WINDOW_SECS`; drops the rest."""
    t = time.monotonic() - RESTART_WINDOW_SECS
    times[:] = [x for x in times if x > t]
    return len(times)
