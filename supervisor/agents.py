"""Agents: who they are, whether they are connected, and talking to them.

One agent per (user, driver, host), started by its driver when that user's
run is next, reused while the user has work, shut down after an idle period.
An agent proves who it is with a per-agent secret (stored here as a hash, so
agents can re-authenticate after a supervisor restart) bound to one user and
one driver. `Agents.check_ready` is a dispatch prerequisite: it returns a
connected agent or raises `Awaited` while one starts.
"""

import asyncio
import hmac
import secrets
import time

import tornado.websocket
from pykern.pkdebug import pkdexc, pkdlog

from agent import protocol
from supervisor import errors, tasks, users
from supervisor.dispatch import Awaited

STARTING = "starting"
CONNECTED = "connected"
DISCONNECTED = "disconnected"
STOPPED = "stopped"

#: the reason given when an admin kills an agent (its runs end canceled)
KILLED_BY_ADMIN = "killed by an admin"


class AgentStartFailed(Exception):
    """The agent did not call back; the message says why (shown to users)."""


class AgentGone(Exception):
    """The agent went away while an op waited for its reply."""


class Agent:
    def __init__(self, doc):
        self.id = doc["id"]
        self.user = doc["user"]
        self.driver = doc["driver"]
        self.host = doc["host"]
        self.secret_hash = doc["secret_hash"]
        self.created = doc.get("created", time.time())
        # what the driver needs to find it again (pid, container id)
        self.info = dict(doc.get("info", {}))
        self.state = DISCONNECTED
        self.conn = None
        self.ready = asyncio.get_running_loop().create_future()
        self.connected_since = None
        self.last_message_at = None
        # run_id -> the run's context (supervisor.runs.Run)
        self.runs = {}
        self.ops = {}
        self.timer = None
        #: only between creation and a sign-in's start of it
        self.secret = None

    def to_doc(self):
        return {
            "id": self.id,
            "user": self.user,
            "driver": self.driver,
            "host": self.host,
            "secret_hash": self.secret_hash,
            "created": self.created,
            "info": self.info,
        }

    def to_dict(self):
        return {
            "id": self.id,
            "user": self.user,
            "driver": self.driver,
            "host": self.host,
            "state": self.state,
            "connected_since": self.connected_since,
            "last_message_at": self.last_message_at,
            "runs": sorted(self.runs),
            "pid": self.info.get("pid"),
            "container_id": self.info.get("container_id"),
        }

    def is_ready(self):
        return self.state == CONNECTED and self.conn is not None

    def send(self, kind, **fields):
        """Queue a frame; False if the agent is not connected."""
        if self.conn is None:
            return False
        try:
            self.conn.write_message(protocol.make(protocol.TO_AGENT, kind, **fields))
        except tornado.websocket.WebSocketClosedError:
            return False
        return True

    def pkdebug_str(self):
        return f"Agent({self.id} user={self.user} state={self.state})"


class Agents:
    def __init__(self, cfg, store, drivers, on_ready, on_lost, on_stopped):
        """
        Args:
            on_ready (callable): (agent, hello) -> welcome runs map
            on_lost (callable): (agent) connection closed
            on_stopped (callable): (agent, reason) gone for good (killed, reaped)
        """
        self._cfg = cfg
        self._store = store
        self._drivers = drivers
        self._on_ready = on_ready
        self._on_lost = on_lost
        self._on_stopped = on_stopped
        self.by_id = {}
        self._by_key = {}
        self._op_ids = iter(range(1, 2**62))
        # (user, driver, host) -> future resolved when the user signs in
        self._sign_ins = {}
        self._tasks = tasks.Tasks("agents")
        self._destroyed = False

    def load(self):
        """Agents known before a restart: wait for them to reconnect."""
        for _, d in self._store.load_all("agents"):
            a = Agent(d)
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
                self._agent_exited,
            )

    def _add(self, agent):
        self.by_id[agent.id] = agent
        self._by_key[(agent.user, agent.driver, agent.host)] = agent

    def all(self):
        return list(self.by_id.values())

    def hosts_of(self, user, driver):
        """Hosts where `user` has an agent of `driver` (running or starting)."""
        return {h for u, d, h in self._by_key if u == user and d == driver}

    # --- the dispatch prerequisite -----------------------------------------

    def check_ready(self, user, driver, host):
        """The connected agent of (user, driver, host), or raise `Awaited`."""
        a = self._by_key.get((user, driver, host))
        if a is not None and a.is_ready():
            return a
        if a is None:
            if getattr(self._drivers[driver], "needs_login", False):
                raise Awaited(
                    self._sign_in_future((user, driver, host)),
                    f"sign in to {host} to run there",
                )
            a = self._create(user, driver, host)
        return self._await_ready(a)

    def _sign_in_future(self, key):
        f = self._sign_ins.get(key)
        if f is None or f.done():
            f = self._sign_ins[key] = asyncio.get_running_loop().create_future()
        return f

    def needs_sign_in(self, user, driver, host):
        """True unless `user` has a connected (or starting) agent there."""
        a = self._by_key.get((user, driver, host))
        return a is None or a.state not in (CONNECTED, STARTING)

    async def sign_in(self, user, driver, host, creds):
        """Start `user`'s agent on `host` with their credentials (sbatch).

        A connected agent is kept (nothing to do); one that is gone is
        replaced: the new one re-attaches its jobs. Raises the driver's
        error (`errors.Error`) if the login or the agent's start fails.

        Returns:
            Agent: connected
        """
        k = (user, driver, host)
        a = self._by_key.get(k)
        if a is not None and a.is_ready():
            return a
        if a is not None:
            if a.state == STARTING:
                raise errors.Conflict(
                    "sign_in_in_progress", f"a sign-in to {host} is in progress"
                )
            # disconnected: its runs stay lost until the new agent has them
            self._stop(a, AgentGone("replaced by a new sign-in"))
        a = self._create(user, driver, host, start=False)

        async def _ready():
            await asyncio.wait_for(
                asyncio.shield(a.ready), self._cfg.agent_start_timeout_secs
            )

        try:
            await self._drivers[driver].login(a, a.secret, creds, _ready)
        except BaseException as e:
            self._stop(a, AgentStartFailed(f"sign-in failed: {e}"))
            raise
        finally:
            a.secret = None
        if a.state != CONNECTED:
            raise AgentStartFailed(f"the agent on {host} went away")
        self._store.save(f"agents/{a.id}.json", a.to_doc())
        f = self._sign_ins.pop(k, None)
        if f is not None and not f.done():
            f.set_result(None)
        return a

    def _await_ready(self, agent):
        raise Awaited(
            agent.ready,
            (
                "starting agent"
                if agent.state == STARTING
                else "waiting for agent to reconnect"
            ),
        )

    def _create(self, user, driver, host, start=True):
        s = secrets.token_urlsafe(32)
        a = Agent(
            {
                "id": f"{user}-{driver}-{secrets.token_hex(4)}",
                "user": user,
                "driver": driver,
                "host": host,
                "secret_hash": users.hash_token(s),
            }
        )
        a.state = STARTING
        self._add(a)
        # durable before the agent can call back, so a restart knows it
        self._store.save(f"agents/{a.id}.json", a.to_doc())
        if start:
            self._tasks.spawn(self._start(a, s))
        else:
            # the caller starts it (a sign-in) and forgets the secret
            a.secret = s
        return a

    async def _start(self, agent, secret):
        self._set_timer(
            agent, self._cfg.agent_start_timeout_secs, self._start_expired, agent
        )
        try:
            d = self._drivers[agent.driver]
            await d.start(agent, secret, self._agent_exited)
            if agent.state == STOPPED:
                # stopped (timed out, killed) while it was being started
                await d.kill(agent)
                return
            self._store.save(f"agents/{agent.id}.json", agent.to_doc())
        except Exception as e:
            pkdlog("{} start failed error={} stack={}", agent, e, pkdexc())
            self._stop(agent, AgentStartFailed(f"agent failed to start: {e}"))

    def _agent_exited(self, agent, message, dead=False):
        """Driver callback: the agent's process ended.

        Args:
            dead (bool): its runs surely ended with it (a container is gone)
        """
        if agent.state == STARTING:
            self._stop(agent, AgentStartFailed(message), dead=True)
        elif dead:
            # its runs end now, with the reason (e.g. out of memory)
            self._stop(agent, AgentGone(message), dead=True)
        elif agent.state != STOPPED and agent.conn is None:
            # its runs stay lost for their grace period (DESIGN: lost, then
            # error with the reason), though a local agent will not return
            self._stop(agent, AgentGone(message))

    def _start_expired(self, agent):
        if agent.state == STARTING:
            self._stop(
                agent,
                AgentStartFailed(
                    f"agent did not call back within {self._cfg.agent_start_timeout_secs} s"
                ),
            )

    def _reconnect_expired(self, agent):
        if agent.state == DISCONNECTED:
            self._stop(agent, AgentGone("agent did not reconnect"))

    def _stop(self, agent, reason, dead=False):
        """Forget the agent and kill what is left of it; idempotent.

        Args:
            dead (bool): its process is known to be gone (or is being killed)
        """
        if agent.state == STOPPED:
            return
        pkdlog("{} stopped reason={}", agent, reason)
        agent.state = STOPPED
        self._cancel_timer(agent)
        if self.by_id.get(agent.id) is agent:
            del self.by_id[agent.id]
            del self._by_key[(agent.user, agent.driver, agent.host)]
        self._store.delete(f"agents/{agent.id}.json")
        if not agent.ready.done():
            if isinstance(reason, AgentStartFailed) and not getattr(
                self._drivers[agent.driver], "needs_login", False
            ):
                agent.ready.set_exception(reason)
                # retrieved by whoever awaits it; none may be waiting
                agent.ready.exception()
            else:
                # waiters restart and start a new agent
                agent.ready.set_result(None)
        for f in agent.ops.values():
            if not f.done():
                f.set_exception(AgentGone(str(reason)))
        agent.ops.clear()
        if agent.conn is not None:
            agent.send("shutdown")
            agent.conn.close()
            agent.conn = None
        self._on_stopped(agent, str(reason), dead)
        self._tasks.spawn(self._drivers[agent.driver].kill(agent))

    def kill(self, agent, reason=KILLED_BY_ADMIN):
        self._stop(agent, AgentGone(reason), dead=True)

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
        agent.state = CONNECTED
        agent.connected_since = time.time()
        agent.info["pid"] = msg["pid"]
        agent.info["agent_host"] = msg["host"]
        agent.send("welcome", runs=self._on_ready(agent, msg))
        if not agent.ready.done():
            agent.ready.set_result(None)
        self.check_idle(agent)

    def closed(self, agent, conn):
        if agent.conn is not conn:
            return
        agent.conn = None
        if agent.state == STOPPED or self._destroyed:
            # at shutdown runs are not lost: the agent reconnects to the next start
            return
        pkdlog("{} disconnected", agent)
        if agent.state == CONNECTED:
            agent.state = DISCONNECTED
        if agent.ready.done():
            # waiters of a pending one keep it: hello resolves it
            agent.ready = asyncio.get_running_loop().create_future()
        for f in agent.ops.values():
            if not f.done():
                f.set_exception(AgentGone(f"agent {agent.id} disconnected"))
        agent.ops.clear()
        self._on_lost(agent)
        if agent.state == DISCONNECTED:
            # (a starting agent keeps its start deadline)
            self._set_timer(
                agent,
                self._cfg.agent_start_timeout_secs,
                self._reconnect_expired,
                agent,
            )

    def reply(self, agent, msg):
        f = agent.ops.pop(msg["op_id"], None)
        if f is None or f.done():
            return
        if msg["ok"]:
            f.set_result(msg["result"])
        else:
            f.set_exception(RuntimeError(msg["error"] or "agent op failed"))

    async def call(self, agent, kind, timeout_secs, **fields):
        """Send op `kind` and await its reply's result (raises on failure)."""
        i, f = self.new_op(agent)
        if not agent.send(kind, op_id=i, **fields):
            agent.ops.pop(i, None)
            raise AgentGone(f"agent {agent.id} is not connected")
        try:
            return await asyncio.wait_for(asyncio.shield(f), timeout_secs)
        finally:
            agent.ops.pop(i, None)

    def connected(self, user, driver, host):
        """The connected agent of (user, driver, host), or None."""
        a = self._by_key.get((user, driver, host))
        return a if a is not None and a.is_ready() else None

    def new_op(self, agent):
        """An op id and the future its reply resolves."""
        i = next(self._op_ids)
        f = asyncio.get_running_loop().create_future()
        agent.ops[i] = f
        return i, f

    # --- idle reaping ------------------------------------------------------

    def check_idle(self, agent):
        """Called when an agent's run set changes: reap after an idle period."""
        if agent.state != CONNECTED:
            return
        self._drivers[agent.driver].resize(
            agent, sum(r.grant.cores for r in agent.runs.values() if r.grant)
        )
        if agent.runs:
            self._cancel_timer(agent)
        elif agent.timer is None:
            d = self._drivers[agent.driver]
            self._set_timer(
                agent,
                getattr(d, "idle_secs", self._cfg.agent_idle_secs),
                self._idle_expired,
                agent,
            )

    def _idle_expired(self, agent):
        if not agent.runs and agent.state == CONNECTED:
            self._stop(agent, AgentGone("idle"), dead=True)

    def _set_timer(self, agent, secs, fn, *args):
        self._cancel_timer(agent)
        agent.timer = asyncio.get_running_loop().call_later(secs, fn, *args)

    def _cancel_timer(self, agent):
        if agent.timer is not None:
            agent.timer.cancel()
            agent.timer = None

    async def destroy(self):
        """Shutdown: agents keep running (they reconnect to the next start)."""
        self._destroyed = True
        for a in self.by_id.values():
            self._cancel_timer(a)
            if a.conn is not None:
                a.conn.close()
        await self._tasks.destroy()
