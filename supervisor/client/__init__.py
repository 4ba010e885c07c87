"""Python clients of the simvisor API, in the spirit of concurrent.futures.

`Client` (blocking, on requests) and `AsyncClient` (on Tornado) have the same
surface. ``submit`` creates a simulation and runs it; the handle it returns
stands for that one run. ``result()`` waits for the run to end by listening
on the ``/api/events`` websocket (never by polling) and returns the final
job, or raises `RunFailed` if the run ended ``error``, ``canceled`` or
``timed_out``, as ``Future.result`` raises the call's exception::

    with client.Client("http://127.0.0.1:8000", token) as c:
        h = c.submit("heat", {"steps": 2000})
        job = h.result(timeout=60)
        frames = h.frames()

    c = client.AsyncClient("http://127.0.0.1:8000", token)
    h = await c.submit("heat", {"steps": 2000})
    job = await h

Errors the API reports (its JSON ``{"error", "message"}`` body) raise
`ApiError`. A watch rides out a supervisor restart as its `Reconnect` policy
says (by default for `RECONNECT_SECS`).

Many runs of one code go through an executor, as `concurrent.futures` does
(``Client.executor``: `Executor`, `MemberFuture`; ``AsyncClient.executor``:
`AsyncExecutor` with asyncio futures): submits close together are one sweep,
futures end from pushed events, and the current executor is
`current_executor()`::

    with c.executor("heat", cores=1) as ex:
        fs = [ex.submit(steps=s) for s in (1000, 2000)]
        jobs = [f.result() for f in concurrent.futures.as_completed(fs)]

The package: `_base` is the shared core (errors, request building, the run
watch, the reconnect policy), `sync` and `aio` the two thin front ends, `_ws`
the events websocket both use; `_sweep` (pure: batches as sweep bodies,
which pushes end which member) and `_engine` (the batches, events and
cancels on one loop) are the executors' core, `executor` and `executor_aio`
their front ends. It imports nothing of the server.
"""

from supervisor.client._base import (
    ENDED,
    RECONNECT_SECS,
    ApiError,
    Error,
    Reconnect,
    RunFailed,
)
from supervisor.client._sweep import NoExecutor, current_executor
from supervisor.client.aio import AsyncClient, AsyncEvents, AsyncHandle
from supervisor.client.executor import Executor, MemberFuture
from supervisor.client.executor_aio import AsyncExecutor, AsyncMemberFuture
from supervisor.client.sync import Client, Events, Handle

__all__ = [
    "ENDED",
    "RECONNECT_SECS",
    "ApiError",
    "AsyncClient",
    "AsyncEvents",
    "AsyncExecutor",
    "AsyncHandle",
    "AsyncMemberFuture",
    "Client",
    "Error",
    "Events",
    "Executor",
    "Handle",
    "MemberFuture",
    "NoExecutor",
    "Reconnect",
    "RunFailed",
    "current_executor",
]
