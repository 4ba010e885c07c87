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

The package: `_base` is the shared core (errors, request building, the run
watch, the reconnect policy), `sync` and `aio` the two thin front ends, `_ws`
the events websocket both use. It imports nothing of the server.
"""

from supervisor.client._base import (
    ENDED,
    RECONNECT_SECS,
    ApiError,
    Error,
    Reconnect,
    RunFailed,
)
from supervisor.client.aio import AsyncClient, AsyncEvents, AsyncHandle
from supervisor.client.sync import Client, Events, Handle

__all__ = [
    "ENDED",
    "RECONNECT_SECS",
    "ApiError",
    "AsyncClient",
    "AsyncEvents",
    "AsyncHandle",
    "Client",
    "Error",
    "Events",
    "Handle",
    "Reconnect",
    "RunFailed",
]
