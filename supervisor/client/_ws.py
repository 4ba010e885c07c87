"""The ``/api/events`` websocket as coroutines, on Tornado's websocket client.

`AsyncEvents` awaits them; `Events` runs them on its private IOLoop, so both
connect, read and close the same way.
"""

import asyncio

import tornado.httpclient
import tornado.websocket

from supervisor.client import _base

#: seconds `close` waits for the server to acknowledge the close
_CLOSE_WAIT_SECS = 2.0


async def connect(request, timeout_secs):
    """Open the websocket of `request` (a `_base.Request`).

    Raises:
        ApiError: the server refused it (e.g. 401)
        ConnectionError: the server could not be reached
    """
    r = tornado.httpclient.HTTPRequest(
        request.url,
        headers=request.headers,
        connect_timeout=timeout_secs,
        request_timeout=timeout_secs,
    )
    try:
        return await tornado.websocket.websocket_connect(r)
    except tornado.httpclient.HTTPClientError as e:
        if e.response is None:
            raise ConnectionError(f"events websocket: {e}") from e
        raise _base.api_error(e.code, e.response.body, str(e)) from e


async def read(conn, timeout_secs):
    """The next message (a dict), or None once the connection is closed.

    Raises:
        TimeoutError: none came within `timeout_secs` (None: no limit)
    """
    return _base.loads(await asyncio.wait_for(conn.read_message(), timeout_secs))


async def close(conn):
    """Close `conn` and let the handshake finish, so nothing is left pending."""
    conn.close()
    try:
        async with asyncio.timeout(_CLOSE_WAIT_SECS):
            while await conn.read_message() is not None:
                pass
    except TimeoutError:
        pass
