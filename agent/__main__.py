"""``python -m agent``: start an agent.

The secret is one line on stdin (never argv or the environment, so ``ps``
and ``/proc/<pid>/environ`` do not show it); stdin is then closed.
"""

import argparse
import asyncio
import ctypes
import os
import signal
import sys

import agent
from agent import client, protocol
from agent.pool import log

_PR_SET_DUMPABLE = 4


def parse_args(argv=None):
    """The command line (see the module doc); also for tests that call `client.main`.

    Args:
        argv (list): arguments without the program name; None: sys.argv
    Returns:
        argparse.Namespace: what `client.Client` expects
    """
    p = argparse.ArgumentParser(prog="python -m agent", description=__doc__)
    p.add_argument("--url", required=True, help="ws://host:port/agent")
    p.add_argument(
        "--unix-socket",
        help="reach the supervisor through this unix socket (the url names only the path)",
    )
    p.add_argument("--agent-id", required=True)
    p.add_argument("--run-root", required=True, help="every run directory is inside it")
    p.add_argument(
        "--kill-grace-secs", type=float, default=2.0, help="SIGTERM to SIGKILL"
    )
    p.add_argument("--max-procs", type=int, default=64, help="runs at once")
    p.add_argument(
        "--sim-oom-score-adj",
        type=int,
        default=None,
        help="simulations' oom_score_adj (e.g. 1000: under a memory limit the kernel kills a simulation, not the agent)",
    )
    p.add_argument("--max-analyses", type=int, default=8, help="analyses at once")
    p.add_argument(
        "--max-backoff-secs", type=float, default=10.0, help="reconnect delay cap"
    )
    p.add_argument(
        "--give-up-secs",
        type=float,
        default=3600.0,
        help="exit after this long without a connection and with no run running",
    )
    a = p.parse_args(argv)
    if a.max_procs < 1 or a.max_analyses < 1:
        p.error("--max-procs and --max-analyses must be at least 1")
    try:
        # the id must make a valid hello; better to fail here than at each connect
        protocol.make(
            protocol.TO_SUPERVISOR,
            "hello",
            agent_id=a.agent_id,
            version=agent.VERSION,
            host="",
            pid=0,
            runs=[],
        )
    except protocol.ProtocolError:
        p.error(f"--agent-id={a.agent_id!r} is not a valid id")
    return a


def read_secret():
    """One line from stdin; then stdin is /dev/null so no later read can block."""
    s = sys.stdin.readline().strip()
    sys.stdin.close()
    # fd 0 is free now: keep it taken so no socket or file ever lands on it
    os.open(os.devnull, os.O_RDONLY)
    return s


def _not_dumpable():
    """A simulation of the same uid must not read the secret from our memory."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0)
    except (OSError, AttributeError):
        pass


async def _main(args, secret):
    c = client.Client(args, secret)
    loop = asyncio.get_running_loop()
    for s in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(s, c.stop)
    return await c.run()


def main():
    a = parse_args()
    secret = read_secret()
    if not secret:
        log("no_secret", error="expected the secret as one line on stdin")
        return 2
    _not_dumpable()
    log(
        "agent_start",
        agent_id=a.agent_id,
        pid=os.getpid(),
        url=a.url,
        unix_socket=a.unix_socket or "",
        run_root=a.run_root,
    )
    rv = asyncio.run(_main(a, secret))
    log("agent_exit", code=rv)
    return rv


if __name__ == "__main__":
    sys.exit(main())
