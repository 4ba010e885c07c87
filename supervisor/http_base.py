"""The base of every API handler: credentials, strict bodies, errors, replies.

Errors are translated here, in one place: `errors.Error` becomes its status
and ``{"error", "message"}``; anything else a logged 500. Clients send a
bearer token; the GUI a signed, HttpOnly session cookie plus Tornado's XSRF
header (`auth`). Each handler declares its operations (`api`) for the API
document (`openapi`).

Bodies are streamed (`stream_request_body`): credentials, the caller's rate
and the declared size are checked from the headers alone, before a byte of
the body is read, so an unauthenticated or oversized request costs no
memory (a JSON 401 or 413, and the connection is closed); what is read is
kept only up to the operation's limit. A handler whose body adds to what
its user stores (`body_quota`) is refused the same way, from the declared
length or, without one, as soon as the streamed bytes pass the room left.
"""

import json
import re
import time

import tornado.web
from pykern.pkdebug import pkdexc, pkdlog

from supervisor import auth, errors, schema
from supervisor.openapi import ADMIN, NO_BODY_BYTES, PUBLIC, ops

#: the connection's own limit while we enforce ours (Tornado's would answer
#: an empty 400 instead of our JSON 413)
_UNBOUNDED_BYTES = 2**62

#: a refused request's declared body up to this is read (and dropped) before
#: the refusal is sent: closing with unread bytes makes the kernel reset the
#: connection, and the client may lose the reply (a bigger one is not read)
_DRAIN_BYTES = 64 * 1024


#: a query integer: at most 18 ASCII digits (an int64 whatever its value)
_DIGITS_RE = re.compile(r"[0-9]{1,18}")


@tornado.web.stream_request_body
class Base(tornado.web.RequestHandler):
    #: method -> `openapi.Op`: what the API document says of this handler
    api = ops()
    #: requests count against the caller's rate (health checks do not)
    rate_limited = True

    def initialize(self, sv):
        self.sv = sv
        self.user = None
        self._t0 = time.perf_counter()
        self._chunks = []
        self._body_bytes = 0
        # of this body, counted in its user's bytes on their way in
        self._held = 0
        self._max_body_bytes = sv.cfg.max_body_bytes
        # (bytes, errors.Error) of `body_quota`, once known
        self._quota = None
        # the refusal sent once a small body is read (`_refuse`)
        self._refusal = None
        # the reply goes before the body is read: the connection then closes
        self._unread = False

    def prepare(self):
        """Everything the headers tell, before the body is read."""
        if self._refusal is not None:
            return
        try:
            self._prepare()
        except (errors.Error, tornado.web.HTTPError) as e:
            self._refuse(e)

    def _refuse(self, error):
        """Refuse with `error`: at once, or after a small declared body is read.

        A body of at most `_DRAIN_BYTES` is read and dropped first, so the
        reply is not lost to the reset a close with unread bytes causes; the
        connection then stays open for the next request. A 413 (too large,
        over the quota) is sent at once, unread, as the API promises.
        """
        n = self.request.headers.get("Content-Length", "")
        # no body at all (no length, not chunked) is read at once too
        none = not n and "Transfer-Encoding" not in self.request.headers
        if (
            not (none or (n.isdigit() and int(n) <= _DRAIN_BYTES))
            or getattr(error, "status", None) == 413
        ):
            # a body over a limit is refused before it is read, whatever its size
            self._unread = True
            raise error
        self._refusal = error

        def refused(*args, **kwargs):
            raise error

        # what Tornado calls once the body is in
        setattr(self, self.request.method.lower(), refused)

    def _prepare(self):
        self.request.connection.set_max_body_size(_UNBOUNDED_BYTES)
        op = self.api.get(self.request.method.lower())
        # what takes no body gets almost none (an undeclared method, a GET)
        self._max_body_bytes = NO_BODY_BYTES
        if op is not None and (op.request or op.request_content):
            self._max_body_bytes = op.max_body_bytes or self.sv.cfg.max_body_bytes
        self.user = auth.user(self, self.sv.users)
        if self.rate_limited:
            self._check_rates()
        if op is None and self.api:
            raise tornado.web.HTTPError(405)
        if op is not None and op.auth != PUBLIC:
            self.require_admin() if op.auth == ADMIN else self.require_user()
        n = self.request.headers.get("Content-Length", "")
        if n.isdigit() and int(n) > self._max_body_bytes:
            raise self._too_large()
        self._quota = self.body_quota()
        if self._quota and n.isdigit() and int(n) > self._quota[0]:
            raise self._quota[1]

    def body_quota(self):
        """Room for this request's body in what its user stores, if it counts.

        Called once the caller is known, before the body is read.

        Returns:
            tuple: (bytes, errors.Error to refuse more with), or None
        """
        return None

    def data_received(self, chunk):
        # once answered or refused, the rest is not ours to keep
        if self._finished or self._refusal is not None:
            return
        self._body_bytes += len(chunk)
        if self._quota and self._body_bytes > self._quota[0]:
            # now, not at the end: nothing more of it is read
            self._chunks = []
            self._unread = True
            self._handle_request_exception(self._quota[1])
            return
        if self._body_bytes > self._max_body_bytes:
            # a chunked body past the limit: refused now, not at its end
            self._chunks = []
            self._unread = True
            self._handle_request_exception(self._too_large())
            return
        if not self._hold(len(chunk)):
            return
        self._chunks.append(chunk)

    def _hold(self, n):
        """Count `n` more body bytes of this request's user; False if refused.

        A user's bodies on their way in at once are bounded
        (``max_user_body_bytes``): many slow uploads cannot pin the
        supervisor's memory. Unauthenticated bodies are small by their
        handlers' limits.
        """
        if self.user is None:
            return True
        h = self.sv.body_bytes
        u = self.user.name
        if h.get(u, 0) + n > self.sv.cfg.max_user_body_bytes:
            self._chunks = []
            self._unread = True
            self._release_held()
            self._handle_request_exception(
                errors.TooMany(
                    "too_many_uploads",
                    "your requests' bodies on their way in are over "
                    f"{self.sv.cfg.max_user_body_bytes} bytes: wait for them",
                    retry_after_secs=1,
                )
            )
            return False
        h[u] = h.get(u, 0) + n
        self._held += n
        return True

    def _release_held(self):
        if self._held:
            u = self.user.name
            n = self.sv.body_bytes.get(u, 0) - self._held
            if n > 0:
                self.sv.body_bytes[u] = n
            else:
                self.sv.body_bytes.pop(u, None)
            self._held = 0

    def on_connection_close(self):
        self._release_held()
        super().on_connection_close()

    def raw_body(self):
        """The request body (bytes), at most the operation's limit."""
        if self._body_bytes > self._max_body_bytes:
            raise self._too_large()
        if self._quota and self._body_bytes > self._quota[0]:
            raise self._quota[1]
        return b"".join(self._chunks)

    def _too_large(self):
        return errors.TooLarge(
            "body_too_large",
            f"request body is over the limit of {self._max_body_bytes} bytes",
        )

    def _check_rates(self):
        """Wrong credentials slow down their address; every caller has a rate."""
        now = time.monotonic()
        ip = self.client_address()
        if self.user is None and auth.bearer(self.request) is not None:
            self.bad_credentials()
        k = self.user.name if self.user else f"address {ip}"
        if w := self.sv.request_rate.take(k, now):
            raise errors.TooMany(
                "rate_limited", f"too many requests: wait {w:.0f} s", w
            )

    def client_address(self):
        """The client's address (through a trusted proxy: the one it forwards)."""
        return auth.client_address(self.request, self.sv.cfg.trusted_proxies)

    def bad_credentials(self):
        """A wrong token from this address: a 429 once they come too often.

        Only failures count, and only after the token was checked: a right
        token always works, so nobody can lock others out by failing from
        the same address (tokens are 256 random bits: the slow-down bounds
        floods and logs, not a guess that cannot succeed).
        """
        e = wrong_credentials(self.sv, self.request)
        if e is not None:
            raise e

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
        try:
            super().check_xsrf_cookie()
        except tornado.web.HTTPError:
            self._refuse(
                errors.Forbidden(
                    "a request with the session cookie needs the _xsrf cookie's "
                    "value in its X-XSRFToken header",
                    code="bad_xsrf",
                )
            )

    def require_user(self):
        if self.user is None:
            raise errors.Unauthorized()
        return self.user

    def require_admin(self):
        u = self.require_user()
        if not u.is_admin():
            raise errors.Forbidden()
        return u

    def body(self, type_):
        """The request body checked against `type_` (a `schema` type): a dict."""
        return schema.decode(self.raw_body(), type_)

    def whoami(self, user):
        n = self.sv.sim_store.usage.bytes_of(user.name)
        b = self.sv.library.used_bytes(user.name)
        return dict(self.sv.users.whoami(user, n, b), xsrf=self.xsrf_token.decode())

    def reply(self, obj, status=200):
        self.reply_json(json.dumps(obj), status)

    def reply_json(self, text, status=200):
        """Reply with `text` (str or bytes), JSON already."""
        # pushes of what this request changed go out first (`Hub.uncork`)
        self.sv.hub.uncork()
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        self.finish(text)

    def _handle_request_exception(self, e):
        if isinstance(e, OSError) and (x := errors.from_os_error(e)) is not None:
            # a full disk: the client is told, without a stack per request
            # (the store logs its own failures once, /api/health shows them)
            e = x
        if self._unread and not self._finished:
            # Tornado closes a connection whose body it did not read: say so
            self.set_header("Connection", "close")
        if isinstance(e, errors.Error):
            if not self._finished:
                if isinstance(e, errors.TooMany) and e.retry_after_secs:
                    self.set_header("Retry-After", str(int(e.retry_after_secs)))
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
        self._release_held()
        self.sv.metrics.observe_request(
            self.request.method, self.get_status(), time.perf_counter() - self._t0
        )


def int_arg(handler, name, default):
    """A non-negative integer query argument: ASCII digits only (not ``٣``,
    ``1_000``, `` 5`` or ``+5``, which Python's `int` takes)."""
    a = handler.get_query_arguments(name, strip=False)
    if not a:
        return default
    if len(a) > 1:
        raise errors.BadInput("bad_argument", f"{name} is given {len(a)} times")
    v = a[0]
    if not _DIGITS_RE.fullmatch(v):
        raise errors.BadInput(
            "bad_argument", f"{name} must be a non-negative integer (ASCII digits)"
        )
    return int(v)


def wrong_credentials(sv, request):
    """Count a wrong token from `request`'s address (`Base.bad_credentials`).

    Returns:
        errors.TooMany: once they come too often from there, else None
    """
    w = sv.bad_credentials.take(
        auth.client_address(request, sv.cfg.trusted_proxies), time.monotonic()
    )
    if not w:
        return None
    return errors.TooMany(
        "too_many_failures",
        f"too many wrong credentials from your address: wait {w:.0f} s",
        w,
    )
