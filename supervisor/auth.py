"""Who is asking: the one reader of credentials for HTTP and both websockets.

Clients and agents send ``Authorization: Bearer <token>`` (an agent's token
is its secret); the GUI sends a signed, HttpOnly session cookie instead.
"""

#: the signed session cookie of the GUI
COOKIE = "simvisor_user"
#: days a session cookie is good for
COOKIE_DAYS = 30

_BEARER = "Bearer "


def bearer(request):
    """The bearer token of `request`; None if it sends none ('' if empty)."""
    h = request.headers.get("Authorization", "")
    return h[len(_BEARER) :].strip() if h.startswith(_BEARER) else None


def session_user(handler, users):
    """The user of `handler`'s session cookie, if it is still valid."""
    return users.by_session(handler.get_signed_cookie(COOKIE, max_age_days=COOKIE_DAYS))


def client_address(request, trusted_proxies):
    """Who is really asking: the peer, or what a trusted proxy says it forwards.

    X-Forwarded-For is read only from a configured proxy (anyone can send
    the header), right to left, skipping the proxies themselves.
    """
    ip = request.remote_ip
    if ip not in trusted_proxies:
        return ip
    for x in reversed(request.headers.get("X-Forwarded-For", "").split(",")):
        x = x.strip()
        if x and x not in trusted_proxies:
            return x
    return ip


def is_https(request, trusted_proxies):
    """Did the browser use TLS (directly, or to a trusted proxy)?"""
    if request.protocol == "https":
        return True
    return (
        request.remote_ip in trusted_proxies
        and request.headers.get("X-Forwarded-Proto", "").strip().lower() == "https"
    )


def user(handler, users):
    """The user `handler`'s request speaks for (bearer first), or None."""
    t = bearer(handler.request)
    if t is not None:
        return users.by_token(t)
    return session_user(handler, users)
