"""Dialing the supervisor: the agent's websocket connect and its reconnect backoff.

The agent always dials out to the supervisor's ``/agent`` websocket (nothing
listens on a login node or in a container), authenticated by its secret in a
header, with Tornado's ping as keepalive. A network-less container reaches
the supervisor through a unix socket (`UnixResolver`). Between attempts the
agent waits `backoff_secs`; `agent.client` runs the loop.
"""

import random
import socket

import tornado.httpclient
import tornado.netutil
import tornado.websocket

from agent import protocol

#: first reconnect delay; it doubles up to --max-backoff-secs
INITIAL_BACKOFF_SECS = 0.1

#: websocket keepalive (Tornado's ping); a dead link is noticed within the timeout.
#: Tornado 6.3 and later wait that long for the pong of each ping (no longer
#: than the interval); before, each ping checks the time since the last pong,
#: which a timeout equal to the interval passes on a loaded host (the agent
#: on a login node's Debian 12 Tornado 6.2 dropped its link every 15 s)
PING_INTERVAL_SECS = 15.0
PING_TIMEOUT_SECS = (
    PING_INTERVAL_SECS if tornado.version_info >= (6, 3) else 2 * PING_INTERVAL_SECS
)

CONNECT_TIMEOUT_SECS = 10.0


def backoff_secs(attempt, initial_secs, max_secs, rand=random.random):
    """Delay before reconnect attempt `attempt`: "full jitter" exponential backoff.

    Args:
        attempt (int): failed attempts since the last welcome (0 first)
        initial_secs (float): cap of the first delay
        max_secs (float): largest cap
        rand (callable): uniform in [0, 1)
    Returns:
        float: seconds, uniform in [0, min(max_secs, initial_secs * 2**attempt))
    """
    # the exponent is bounded so a long outage cannot overflow a float
    return rand() * min(max_secs, initial_secs * 2 ** min(attempt, 64))


async def connect(url, agent_id, secret, resolver=None):
    """Open the websocket to the supervisor.

    Args:
        url (str): ws://host:port/agent
        agent_id (str): sent in `protocol.AGENT_ID_HEADER`
        secret (str): sent as a bearer token, never logged
        resolver (UnixResolver): None: connect over TCP
    Returns:
        tornado.websocket.WebSocketClientConnection: connected
    Raises:
        Exception: refused, unreachable, or rejected at the upgrade (401/403/404)
    """
    return await tornado.websocket.websocket_connect(
        tornado.httpclient.HTTPRequest(
            url,
            headers={
                "Authorization": "Bearer " + secret,
                protocol.AGENT_ID_HEADER: agent_id,
            },
            connect_timeout=CONNECT_TIMEOUT_SECS,
            request_timeout=CONNECT_TIMEOUT_SECS,
        ),
        max_message_size=protocol.MAX_MESSAGE_BYTES,
        ping_interval=PING_INTERVAL_SECS,
        ping_timeout=PING_TIMEOUT_SECS,
        # (only when set: Tornado before 6.3, e.g. a login node's
        # distribution package, has no such argument)
        **({"resolver": resolver} if resolver else {}),
    )


class UnixResolver(tornado.netutil.Resolver):
    """Resolves every host to one unix socket (``--unix-socket``).

    Tornado's TCP client connects to whatever address family a resolver
    returns, so the websocket client works unchanged over a socket file.
    """

    def initialize(self, path):
        self.path = path

    async def resolve(self, host, port, family=socket.AF_UNSPEC):
        return [(socket.AF_UNIX, self.path)]


def brief(e):
    """`e` in a few words, for the log of a failed connect."""
    return f"{type(e).__name__}: {e}"[:300]
