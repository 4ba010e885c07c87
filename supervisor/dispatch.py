"""Awaitless dispatch: run a handler until its prerequisites are all ready.

A handler checks every prerequisite synchronously. One that is not ready
raises `Awaited` with what to wait for, a machine-readable reason (`wait`) and
a situation for people to read; the dispatcher reports them, waits, and runs the handler again from the
top, so nothing checked before the wait is trusted after it. Code that changes
state does so between awaits; there are no locks.
"""

import asyncio


class Awaited(Exception):
    """A prerequisite is not ready: wait for `waitable`, then restart.

    The only exception used for control flow; only `dispatch` catches it.

    Args:
        waitable (Future): resolved when the prerequisite may be ready
        situation (str): the wait in words, for people
        reason (str): the wait as a code, for programs (a job's ``wait.reason``)
        detail: what else a program needs (``host``, ``cores``, ``position``)
    """

    def __init__(self, waitable, situation, reason="other", **detail):
        super().__init__(situation)
        self.waitable = waitable
        self.situation = situation
        self.wait = {"reason": reason, **detail}


async def dispatch(handler, request, on_wait=None):
    """Call ``await handler(request)`` until it returns.

    Args:
        handler (coroutine function): checks, commits, then one edge await
        request (object): passed to handler; it owns what the handler holds
        on_wait (callable): ``on_wait(request, awaited)`` before each wait
            (publish the wait, count the restart)
    Returns:
        object: what the handler returned
    """
    while True:
        try:
            return await handler(request)
        except Awaited as a:
            if on_wait:
                on_wait(request, a)
            w = a.waitable
            try:
                await asyncio.shield(w)
            except asyncio.CancelledError:
                # our own cancellation propagates; a waitable canceled by its
                # owner (a waiter dropped on removal) just means "check again"
                if asyncio.current_task().cancelling():
                    raise
