"""Tests of supervisor.client and the ``supervisor sim`` CLI against a real
supervisor (the `server` fixture) running real agents and codes.
"""

import asyncio
import contextlib
import json
import os
import pathlib
import subprocess
import sys
import threading

import pytest

from supervisor import client, job

_ROOT = pathlib.Path(__file__).resolve().parents[1]

#: heat steps that finish well within 2 s
_HEAT = {"steps": 2000}

#: seconds any one run of these tests may take
_RUN_SECS = 60


@pytest.fixture
def admin(server):
    with client.Client(server.url, server.tokens["admin"]) as c:
        yield c


def test_submit_result_frames(admin):
    h = admin.submit("heat", _HEAT, cores=1, name="small")
    assert h.run_id
    j = h.result(timeout=_RUN_SECS)
    assert j["status"] == job.COMPLETED
    assert j["run_id"] == h.run_id
    assert j["frames"] > 0
    f = h.frames()
    assert len(f) == j["frames"]
    assert h.frames(since=len(f)) == []
    assert h.done()
    assert h.status() == job.COMPLETED
    # the run ended before this handle looked: the snapshot says so at once
    h2 = admin.simulation(h.id)
    assert h2.run_id == h.run_id
    assert h2.result(timeout=5)["run_id"] == h.run_id
    assert isinstance(h.log(), str)
    assert "files" in h.files()
    assert any(s["id"] == h.id for s in admin.simulations())
    assert "heat" in [c["name"] for c in admin.codes()]


async def test_async_submit(server):
    c = client.AsyncClient(server.url, server.tokens["admin"])
    h = await c.submit("heat", _HEAT)
    j = await h
    assert j["status"] == job.COMPLETED
    assert j["frames"] > 0
    assert len(await h.frames()) == j["frames"]
    assert await h.done()
    assert (await (await c.simulation(h.id)).result(timeout=5))["run_id"] == h.run_id
    with pytest.raises(client.ApiError) as e:
        await c.submit("no_such_code")
    assert e.value.status == 400


async def test_async_events_and_cancel(server):
    c = client.AsyncClient(server.url, server.tokens["admin"])
    h = await c.submit("forever")
    async with c.events(simulation=h.id) as ev:
        async for m in ev:
            if m["type"] == "job" and m["job"]["status"] == job.RUNNING:
                break
            if (
                m["type"] == "simulation"
                and m["simulation"]["job"]["status"] == job.RUNNING
            ):
                break
    await h.cancel()
    with pytest.raises(client.RunFailed) as e:
        await h.result(timeout=_RUN_SECS)
    assert e.value.job["status"] == job.CANCELED


def test_events_order(admin):
    s = admin.create("heat", _HEAT)
    seen = []
    with admin.events(simulation=s["id"]) as ev:
        for m in ev:
            if m["type"] == "synced":
                break
        h = admin.run(s["id"])
        for m in ev:
            if m["type"] != "job":
                continue
            assert m["simulation"] == s["id"]
            assert m["job"]["run_id"] == h.run_id
            t = m["job"]["status"]
            if not seen or seen[-1] != t:
                seen.append(t)
            if t in job.ENDED:
                break
    assert seen == [job.QUEUED, job.STARTING, job.RUNNING, job.COMPLETED]
    assert ev.read() is None


def test_cancel_forever(admin):
    h = admin.submit("forever")
    with contextlib.closing(h.watch(timeout=_RUN_SECS)) as w:
        for j in w:
            if j["status"] == job.RUNNING:
                break
    assert not h.done()
    with pytest.raises(TimeoutError):
        h.result(timeout=0.2)
    h.cancel()
    with pytest.raises(client.RunFailed) as e:
        h.result(timeout=_RUN_SECS)
    assert e.value.job["status"] == job.CANCELED
    assert e.value.job["run_id"] == h.run_id
    # idempotent
    assert h.cancel()["status"] == job.CANCELED


def test_crash(admin):
    h = admin.submit("crash", {"message": "boom at step 7"})
    with pytest.raises(client.RunFailed) as e:
        h.result(timeout=_RUN_SECS)
    assert e.value.job["status"] == job.ERROR
    assert "boom at step 7" in e.value.job["error"]
    assert "boom at step 7" in str(e.value)


def test_superseded(admin):
    h = admin.submit("forever")
    h2 = admin.run(h.id)
    assert h2.run_id != h.run_id
    with pytest.raises(client.RunFailed) as e:
        h.result(timeout=_RUN_SECS)
    assert e.value.job["status"] == job.CANCELED
    assert e.value.job["run_id"] == h.run_id
    admin.cancel(h.id)
    with pytest.raises(client.RunFailed):
        h2.result(timeout=_RUN_SECS)


def test_api_errors(server, admin):
    with pytest.raises(client.ApiError) as e:
        admin.submit("no_such_code")
    assert e.value.status == 400
    assert e.value.code
    with pytest.raises(client.ApiError) as e:
        admin.create("heat", {"steps": -1})
    assert e.value.status == 400
    s = admin.create("heat", _HEAT)
    with client.Client(server.url, server.add_user("bob")) as bob:
        for f in (
            lambda: bob.simulation(s["id"]),
            lambda: bob.run(s["id"]),
            lambda: bob.cancel(s["id"]),
            lambda: client.Handle(bob, s["id"], None).result(timeout=10),
        ):
            with pytest.raises(client.ApiError) as e:
                f()
            assert e.value.status == 404
    with client.Client(server.url, "not-a-token") as c:
        with pytest.raises(client.ApiError) as e:
            c.codes()
        assert e.value.status == 401
        with pytest.raises(client.ApiError) as e:
            c.events().read()
        assert e.value.status == 401


def test_result_across_restart(server, admin):
    h = admin.submit("sleep", {"secs": 2})
    with contextlib.closing(h.watch(timeout=_RUN_SECS)) as w:
        for j in w:
            if j["status"] == job.RUNNING:
                break

    def _restart():
        server.stop()
        server.start()

    t = threading.Thread(target=_restart)
    t.start()
    try:
        # the events connection drops; result reconnects and resynchronises
        try:
            j = h.result(timeout=_RUN_SECS)
        except client.RunFailed as e:
            j = e.job
    finally:
        t.join()
    assert j["run_id"] == h.run_id
    assert j["status"] in job.ENDED
    assert admin.simulation(h.id).job()["status"] == j["status"]


async def test_async_result_across_restart(server):
    c = client.AsyncClient(server.url, server.tokens["admin"])
    h = await c.submit("sleep", {"secs": 2})
    async with contextlib.aclosing(h.watch(timeout=_RUN_SECS)) as w:
        async for j in w:
            if j["status"] == job.RUNNING:
                break

    def _restart():
        server.stop()
        server.start()

    # the same reconnect policy as the sync client's, awaited
    r = asyncio.create_task(asyncio.to_thread(_restart))
    try:
        try:
            j = await h.result(timeout=_RUN_SECS)
        except client.RunFailed as e:
            j = e.job
    finally:
        await r
    assert j["run_id"] == h.run_id
    assert j["status"] in job.ENDED


def test_deleted_while_waiting(admin):
    h = admin.submit("forever")
    admin.delete(h.id)
    with pytest.raises(client.ApiError) as e:
        h.result(timeout=_RUN_SECS)
    assert e.value.status == 404


def _cli(server, *args, timeout=_RUN_SECS):
    e = dict(
        os.environ,
        SUPERVISOR_PKCLI_SIM_URL=server.url,
        SUPERVISOR_PKCLI_SIM_TOKEN=server.tokens["admin"],
    )
    p = subprocess.run(
        [sys.executable, "-m", "supervisor.cli", "sim", *args],
        env=e,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=_ROOT,
    )
    return p


def _lines(text):
    # the progress bar redraws in place with \r
    return [x.strip() for x in text.replace("\r", "\n").splitlines() if x.strip()]


def test_cli_submit_watch(server):
    p = _cli(server, "submit", "heat", "--params", json.dumps(_HEAT), "--watch")
    assert p.returncode == 0, p.stderr
    o = _lines(p.stdout)
    assert o[-1] == job.COMPLETED
    assert "running" in o
    assert any(x.startswith("[") and x.endswith("100%") for x in o), o


def test_cli_create_run_watch(server):
    p = _cli(server, "create", "heat", "--name", "cli", "--params", json.dumps(_HEAT))
    assert p.returncode == 0, p.stderr
    sim_id = p.stdout.strip()
    assert sim_id
    p = _cli(server, "status", sim_id)
    assert p.stdout.strip() == job.MISSING, p.stderr
    p = _cli(server, "run", sim_id, "--cores", "1")
    assert p.returncode == 0, p.stderr
    p = _cli(server, "watch", sim_id)
    assert p.returncode == 0, p.stderr
    assert _lines(p.stdout)[-1] == job.COMPLETED
    p = _cli(server, "status", sim_id)
    assert p.stdout.strip() == job.COMPLETED
    p = _cli(server, "list")
    assert any(x.split()[0] == sim_id for x in _lines(p.stdout)), p.stdout


def test_cli_watch_next_run(server, admin):
    s = admin.create("heat", _HEAT)
    e = dict(
        os.environ,
        SUPERVISOR_PKCLI_SIM_URL=server.url,
        SUPERVISOR_PKCLI_SIM_TOKEN=server.tokens["admin"],
    )
    with subprocess.Popen(
        [sys.executable, "-m", "supervisor.cli", "sim", "watch", s["id"]],
        env=e,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=_ROOT,
    ) as p:
        try:
            assert "waiting for a run" in p.stdout.readline()
            admin.run(s["id"])
            out, err = p.communicate(timeout=_RUN_SECS)
        finally:
            if p.poll() is None:
                p.kill()
    assert p.returncode == 0, err
    assert _lines(out)[-1] == job.COMPLETED


def test_cli_cancel_and_errors(server, admin):
    h = admin.submit("forever")
    p = _cli(server, "cancel", h.id)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == job.CANCELED
    p = _cli(server, "watch", h.id)
    assert _lines(p.stdout)[-1] == job.CANCELED
    p = _cli(server, "create", "no_such_code")
    assert p.returncode == 1
    assert "400" in p.stderr
    p = _cli(server, "status", "0123abcd")
    assert p.returncode == 1
    assert "404" in p.stderr
    p = _cli(server, "list", "--token", "not-a-token")
    assert p.returncode == 1
    assert "401" in p.stderr
