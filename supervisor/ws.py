"""The two websockets: ``/api/events`` (push to people) and ``/agent``.

Both read credentials with `auth` and refuse with the HTTP layer's
`errors` (status and JSON body). Frames from agents are validated by
`agent.protocol`; a bad frame gets an error reply and a log line, never a
crash. Handling of a valid frame is a table lookup built once (kind ->
handler).
"""

import asyncio
import itertools
import json
import socket
import time

import tornado.iostream
import tornado.netutil
import tornado.web
import tornado.websocket
from pykern.pkdebug import pkdexc, pkdlog

from agent import protocol
from supervisor import auth, errors, events, gate, http_base

#: an /api/events socket's kernel send buffer (the kernel doubles it)
EVENTS_SEND_BUFFER_BYTES = 64 * 1024

#: an agent's messages already read are handled in turns of about this
#: long; then the loop serves everyone else (a health check, a browser's
#: request) before the next. A burst of frames, each pushed at once to every
#: subscriber, would otherwise hold the loop for tens of ms.
AGENT_TURN_SECS = 0.002


def _refuse(handler, error):
    """Answer a websocket upgrade with `error` (an `errors.Error`), as HTTP does."""
    handler.set_status(error.status)
    if isinstance(error, errors.TooMany) and error.retry_after_secs:
        handler.set_header("Retry-After", str(int(error.retry_after_secs)))
    handler.set_header("Content-Type", "application/json")
    handler.finish(json.dumps(errors.body(error)))


class _Socket(tornado.websocket.WebSocketHandler):
    """What both websockets share: a slot of the gate while open, and wrong
    credentials slowed down as on HTTP."""

    #: whether this websocket counts against its address's cap (`gate.Gate`)
    per_address = True

    def _upgrade(self, *args, **kwargs):
        """The websocket, holding a slot of `gate` for as long as it is open.

        (Tornado's ``get`` returns only when the websocket has closed.)
        """
        a = gate.peer(self.request)
        if not self.sv.gate.admit(a, self.per_address):
            _refuse(
                self, errors.TooMany("too_many_connections", "too many connections")
            )
            return None
        return self._held(a, *args, **kwargs)

    async def _held(self, address, *args, **kwargs):
        try:
            await tornado.websocket.WebSocketHandler.get(self, *args, **kwargs)
        finally:
            self.sv.gate.release(address, self.per_address)

    def _wrong_credentials(self, error):
        """Refuse with `error`, or 429 once this address fails too often."""
        _refuse(self, http_base.wrong_credentials(self.sv, self.request) or error)


#: what an events client may send in one message (it only listens; a ping)
_MAX_CLIENT_MESSAGE_BYTES = 4096


class Events(_Socket):
    """Push: the current state first, then every change as it happens."""

    @property
    def max_message_size(self):
        # not the agents' limit: a listener has no business with megabytes,
        # which Tornado would hold per socket until the message ends
        return _MAX_CLIENT_MESSAGE_BYTES

    def initialize(self, sv):
        self.sv = sv
        self.sub = None
        self._simulation = None

    async def get(self, *args, **kwargs):
        u = auth.user(self, self.sv.users)
        if u is None:
            if auth.bearer(self.request) is not None:
                self._wrong_credentials(errors.Unauthorized())
            else:
                _refuse(self, errors.Unauthorized())
            return
        n = self.sv.users.plan_of(u.name).max_event_sockets
        if self.sv.hub.open_of(u.name) >= n:
            _refuse(
                self,
                errors.TooMany(
                    "too_many_sockets",
                    f"at most {n} event streams open at once",
                    # a guess: streams close when their pages do
                    retry_after_secs=5,
                ),
            )
            return
        try:
            # read before the upgrade: a bad one is an HTTP error, not a
            # stream that opens and closes without a word
            # an empty ?simulation= is none (the snapshot of all is sent then)
            self._simulation = self.get_query_argument("simulation", None) or None
        except tornado.web.HTTPError:
            _refuse(
                self,
                errors.BadInput("bad_argument", "simulation must be UTF-8 text"),
            )
            return
        self.user = u
        c = self._upgrade(*args, **kwargs)
        if c is not None:
            await c

    def check_origin(self, origin):
        # bearer clients are not browsers; a browser must be same-origin
        if auth.bearer(self.request) is not None:
            return True
        return super().check_origin(origin)

    def open(self):
        # pushes are small and come in bursts: do not let Nagle delay them
        self.set_nodelay(True)
        # a fixed kernel send buffer (no autotuning up to 4 MiB each): a slow
        # reader's backlog stays in the subscriber's coalescing queue, and
        # 1,000 streams cannot pin gigabytes of kernel memory
        self.ws_connection.stream.socket.setsockopt(
            socket.SOL_SOCKET, socket.SO_SNDBUF, EVENTS_SEND_BUFFER_BYTES
        )
        s = self._simulation
        self.sub = events.Subscriber(
            self.user,
            s,
            self._write,
            self.close,
            lambda: itertools.chain(
                () if s else self.sv.sweeps.snapshot(self.user),
                self.sv.sims.snapshot(self.user, s),
            ),
            self.sv.cfg.max_event_queue_bytes,
        )
        # subscribed first: changes made while the snapshot is written are
        # queued behind it (coalesced), so none is missed
        self.sv.hub.subscribe(self.sub)
        self.sub.start()

    def _write(self, data):
        """Write `data` (websocket frames, `events.frame`): its future, or
        None if the kernel took it all at once."""
        c = self.ws_connection
        if c is None or c.is_closing():
            raise events.Closed()
        # the stream's own future: done once the bytes left its buffer (no
        # task per message, as write_message makes); no compression is
        # negotiated (get_compression_options is not overridden), so the
        # frames are the payloads behind their headers
        st = c.stream
        try:
            if not st.writing() and not isinstance(st, tornado.iostream.SSLIOStream):
                # nothing of ours pending: straight into the socket, one
                # syscall, no buffer or future (most pushes, to a subscriber
                # keeping up); what the kernel does not take goes through
                # the stream, behind which nothing can overtake it
                try:
                    n = st.socket.send(data)
                except BlockingIOError:
                    n = 0
                except OSError as e:
                    raise events.Closed() from e
                if n == len(data):
                    return None
                data = memoryview(data)[n:]
            return st.write(data)
        except tornado.iostream.StreamClosedError as e:
            raise events.Closed() from e

    def on_message(self, message):
        # clients only listen; a ping keeps proxies happy
        pass

    def on_close(self):
        self.sv.memory.closed()
        if self.sub:
            self.sub.closed = True
            self.sv.hub.unsubscribe(self.sub)


class Agent(_Socket):
    per_address = False

    def initialize(self, sv):
        self.sv = sv
        self.agent = None
        self._handlers = None

    async def get(self, *args, **kwargs):
        a = self.sv.agents.authenticate(
            self.request.headers.get(protocol.AGENT_ID_HEADER),
            auth.bearer(self.request),
        )
        if a is None:
            pkdlog(
                "agent rejected id={} ip={}",
                self.request.headers.get(protocol.AGENT_ID_HEADER),
                self.request.remote_ip,
            )
            self._wrong_credentials(
                errors.Unauthorized("unknown agent or wrong secret")
            )
            return
        self.agent = a
        c = self._upgrade(*args, **kwargs)
        if c is not None:
            await c

    def check_origin(self, origin):
        return True

    def is_open(self):
        c = self.ws_connection
        return c is not None and not c.is_closing()

    def write_frames(self, data):
        """Write whole websocket frames (`events.frame`: unmasked, the agent is
        the client; no compression is negotiated); dropped once closed."""
        if self.is_open():
            try:
                self.ws_connection.stream.write(data)
            except tornado.iostream.StreamClosedError:
                pass

    def open(self):
        self.set_nodelay(True)
        self.sv.agents.attach(self.agent, self)
        self._handlers = self.sv.agent_handlers
        self._turn_start = None
        self._turn_over = None

    def on_message(self, text):
        self._handle(text)
        now = time.monotonic()
        if self._turn_start is None:
            self._turn_start = now
            self._turn_over = asyncio.get_running_loop().create_future()
            # runs once this connection lets the loop go on: the turn's end
            asyncio.get_running_loop().call_soon(self._end_turn)
        elif now - self._turn_start >= AGENT_TURN_SECS:
            # Tornado reads the next message only once the turn has ended
            return self._turn_over
        return None

    def _end_turn(self):
        self._turn_start = None
        self._turn_over.set_result(None)

    def _handle(self, text):
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
        self.sv.memory.closed()
        if self.agent is not None:
            self.sv.agents.closed(self.agent, self)


def listen_agent_socket(sv, gate_):
    """The server of the unix socket agents in network-less containers (and
    local ones) dial, or None if no driver has one.

    It serves only ``/agent`` (and needs the agent's secret): simulation
    code in those containers can reach it, and nothing else of ours.
    """
    p = {d.agent_socket for d in sv.drivers.values()} - {None}
    if not p:
        return None
    (p,) = p
    p.parent.mkdir(parents=True, exist_ok=True)
    s = tornado.netutil.bind_unix_socket(str(p), mode=0o666)
    res = gate.Server(
        tornado.web.Application(
            [(r"/agent", Agent, {"sv": sv})],
            websocket_max_message_size=protocol.MAX_MESSAGE_BYTES,
            websocket_ping_interval=15,
            websocket_ping_timeout=15,
        ),
        xheaders=False,
        idle_connection_timeout=sv.cfg.header_timeout_secs,
        gate=gate_,
        per_address=False,
    )
    res.add_socket(s)
    pkdlog("agents also on unix socket={}", p)
    return res
