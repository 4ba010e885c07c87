"""``supervisor.client`` is a client package: importing it loads nothing of the
server, its drivers' SDKs or pykern, and each of its modules imports first.
"""

import json
import pathlib
import subprocess
import sys

import pytest

_ROOT = pathlib.Path(__file__).resolve().parents[1]

#: top-level packages and server modules a client must not load
_FORBIDDEN = (
    "supervisor.server",
    "supervisor.http",
    "supervisor.ws",
    "supervisor.runs",
    "supervisor.agents",
    "supervisor.dispatch",
    "supervisor.store",
    "supervisor.drivers",
    "docker",
    "asyncssh",
    "plotly",
    "pykern",
    "prometheus_client",
)

#: seconds a fresh interpreter may take to import the client
_IMPORT_SECS = 30


def _loaded_after(statement):
    p = subprocess.run(
        [
            sys.executable,
            "-c",
            f"import json, sys; {statement}; print(json.dumps(sorted(sys.modules)))",
        ],
        capture_output=True,
        text=True,
        timeout=_IMPORT_SECS,
        cwd=_ROOT,
    )
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


@pytest.mark.parametrize(
    "module",
    [
        "supervisor.client",
        "supervisor.client._base",
        "supervisor.client._ws",
        "supervisor.client.sync",
        "supervisor.client.aio",
    ],
)
def test_imports_nothing_of_the_server(module):
    m = _loaded_after(f"import {module}; from supervisor.client import *")
    bad = [x for x in m if any(x == f or x.startswith(f + ".") for f in _FORBIDDEN)]
    assert not bad, f"import {module} loaded {bad}"
    # the one supervisor module outside the client package is its __init__
    assert [
        x
        for x in m
        if x.startswith("supervisor") and not x.startswith("supervisor.client")
    ] == ["supervisor"]


def test_loads_from_this_tree():
    p = subprocess.run(
        [sys.executable, "-c", "import supervisor.client as c; print(c.__file__)"],
        capture_output=True,
        text=True,
        timeout=_IMPORT_SECS,
        cwd=_ROOT,
    )
    assert p.stdout.strip() == str(_ROOT / "supervisor" / "client" / "__init__.py")


def test_names():
    from supervisor import client

    for n in (
        "Client",
        "AsyncClient",
        "Events",
        "AsyncEvents",
        "Handle",
        "AsyncHandle",
        "Error",
        "ApiError",
        "RunFailed",
        "Reconnect",
        "RECONNECT_SECS",
        "ENDED",
    ):
        assert n in client.__all__
        assert getattr(client, n) is not None
    assert issubclass(client.ApiError, client.Error)
    assert issubclass(client.RunFailed, client.Error)


def test_statuses_match_the_server():
    from supervisor import job
    from supervisor.client import _base

    assert _base.ENDED == job.ENDED
    for n in ("COMPLETED", "ERROR", "CANCELED", "TIMED_OUT"):
        assert getattr(_base, n) == getattr(job, n)
