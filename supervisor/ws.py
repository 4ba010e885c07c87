"""The two websockets: ``/api/events`` (push to people) and ``/agent``.

Frames from agents are validated by `agent.protocol`; a bad frame gets an
error reply and a log line, never a crash. Handling of a valid frame is a
table lookup built once (kind -> handler).
"""

import json
import time

import tornado.websocket
from pykern.pkdebug import pkdexc, pkdlog

from agent import protocol
from supervisor import events, http


class Events(tornado.websocket.WebSocketHandler):
    """Push: the current state first, then every change as it happens."""

    def initialize(self, sv):
        self.sv = sv
        self.sub = None

    def _user(self):
        h = self.request.headers.get("Authorization", "")
        if h.startswith("Bearer "):
            return self.sv.users.by_token(h[7:].strip())
        return self.sv.users.by_session(
            self.get_signed_cookie(http.COOKIE, max_age_days=30)
        )

    async def get(self, *args, **kwargs):
        u = self._user()
        if u is None:
            self.set_status(401)
            self.set_header("Content-Type", "application/json")
            self.finish(
                json.dumps(
                    {"error": "unauthorized", "message": "sign in with a valid token"}
                )
            )
            return
        self.user = u
        await super().get(*args, **kwargs)

    def check_origin(self, origin):
        # bearer clients are not browsers; a browser must be same-origin
        if self.request.headers.get("Authorization", "").startswith("Bearer "):
            return True
        return super().check_origin(origin)

    def open(self):
        # pushes are small and come in bursts: do not let Nagle delay them
        self.set_nodelay(True)
        s = self.get_query_argument("simulation", None)
        self.sub = events.Subscriber(
            self.user,
            s,
            self.write_message,
            self.close,
        )
        # current state first, then changes: nothing can interleave, since
        # both happen in this same synchronous turn
        for m in self.sv.snapshot(self.user, s):
            self.sub.send_text(json.dumps(m, separators=(",", ":")))
        self.sv.hub.subscribe(self.sub)

    def on_message(self, message):
        # clients only listen; a ping keeps proxies happy
        pass

    def on_close(self):
        if self.sub:
            self.sub.closed = True
            self.sv.hub.unsubscribe(self.sub)


class Agent(tornado.websocket.WebSocketHandler):
    def initialize(self, sv):
        self.sv = sv
        self.agent = None
        self._handlers = None

    async def get(self, *args, **kwargs):
        h = self.request.headers.get("Authorization", "")
        a = self.sv.agents.authenticate(
            self.request.headers.get(protocol.AGENT_ID_HEADER),
            h[7:].strip() if h.startswith("Bearer ") else None,
        )
        if a is None:
            pkdlog(
                "agent rejected id={} ip={}",
                self.request.headers.get(protocol.AGENT_ID_HEADER),
                self.request.remote_ip,
            )
            self.set_status(401)
            self.finish()
            return
        self.agent = a
        await super().get(*args, **kwargs)

    def check_origin(self, origin):
        return True

    def open(self):
        self.set_nodelay(True)
        self.sv.agents.attach(self.agent, self)
        self._handlers = self.sv.agent_handlers

    def on_message(self, text):
        a = self.agent
        a.last_message_at = time.time()
        try:
            m = protocol.parse(protocol.TO_SUPERVISOR, text)
        except protocol.ProtocolError as e:
            pkdlog("{} bad frame error={}", a, e)
            self._error(str(e))
            return
        if a.conn is not self:
            # a connection that was replaced: nothing it says counts
            return
        try:
            self._handlers[m["kind"]](a, m)
        except Exception as e:
            pkdlog("{} kind={} error={} stack={}", a, m["kind"], e, pkdexc())
            self._error(f"{m['kind']} failed: {e}")

    def _error(self, message):
        try:
            self.write_message(
                protocol.make(protocol.TO_AGENT, "error", message=message)
            )
        except tornado.websocket.WebSocketClosedError:
            pass

    def on_close(self):
        if self.agent is not None:
            self.sv.agents.closed(self.agent, self)
