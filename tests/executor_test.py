"""The client's executors (`supervisor.client.executor`, `executor_aio`):
their pure core (batches as sweep bodies, which pushes end which member),
then futures against a real supervisor running real agents and codes.
"""

import asyncio
import concurrent.futures
import contextvars
import threading
import time

import pytest
from conftest import procs_under, wait_for

from supervisor import client, job
from supervisor.client import _sweep

#: seconds any one wait of these tests may take
_SECS = 60

_HEAT = [
    {"name": "steps", "type": "int", "default": 300000},
    {"name": "nx", "type": "int", "default": 101},
    {"name": "alpha", "type": "float", "default": 0.02},
]


# --- the pure core -------------------------------------------------------------


def test_batch_body_zips_what_differs():
    b = _sweep.batch_body(
        "heat",
        _HEAT,
        [{"steps": 10, "nx": 5}, {"steps": 20, "nx": 5}, {"nx": 5, "alpha": 0.1}],
        {"cores": 2, "driver": None, "max_parallel": None, "name": None},
    )
    assert b == {
        "code": "heat",
        "params": {"nx": 5},
        # a member without a parameter gets the catalog's default
        "axes": {"steps": [10, 20, 300000], "alpha": [0.02, 0.02, 0.1]},
        "combine": "zip",
        "cores": 2,
    }
    # 1, 1.0 and True are not alike to the catalog: they differ
    b = _sweep.batch_body("heat", _HEAT, [{"nx": 1}, {"nx": 1.0}, {"nx": True}], {})
    assert b["axes"] == {"nx": [1, 1.0, True]} and b["params"] == {}


def test_batch_body_of_replicas():
    # nothing differs: one parameter repeats its value
    b = _sweep.batch_body("heat", _HEAT, [{"nx": 7, "steps": 3}] * 3, {})
    assert b["axes"] == {"nx": [7, 7, 7]} and b["params"] == {"steps": 3}
    # no parameter given: the first with a default, at its default
    p = [{"name": "source", "type": "simulation", "default": None}, *_HEAT]
    assert _sweep.batch_body("heat", p, [{}, {}], {})["axes"] == {
        "steps": [300000, 300000]
    }
    with pytest.raises(client.Error, match="no parameters"):
        _sweep.batch_body("forever", [], [{}], {})
    # an unknown code: the server says so
    assert _sweep.batch_body("nope", None, [{}], {})["axes"] == {}


def test_params_and_map_rows():
    assert _sweep.member_params({"a": 1}, {"b": 2}) == {"a": 1, "b": 2}
    with pytest.raises(TypeError, match="JSON"):
        _sweep.member_params(None, {"a": object()})
    with pytest.raises(TypeError):
        _sweep.member_params([1], {})
    assert _sweep.map_rows(None, {"a": [1, 2], "b": "xy"}) == [
        {"a": 1, "b": "x"},
        {"a": 2, "b": "y"},
    ]
    assert _sweep.map_rows([{"a": 1}], {}) == [{"a": 1}]
    with pytest.raises(ValueError):
        _sweep.map_rows(None, {"a": [1, 2], "b": [1]})
    with pytest.raises(TypeError):
        _sweep.map_rows([{}], {"a": [1]})
    with pytest.raises(TypeError):
        _sweep.map_rows(None, {})


class _F:
    """What `Tracker` reads of a future."""

    def __init__(self, sim):
        self.simulation = sim


def _job(status, **kw):
    return {"status": status, "run_id": "r1", **kw}


def test_tracker_claims_ends_pushed_before_the_reply():
    t = _sweep.Tracker()
    # not claiming: an unknown simulation's end is nobody's
    assert t.message({"type": "job", "simulation": "a", "job": _job("completed")}) == []
    t.begin_claim()
    done = _job("completed")
    assert t.message({"type": "job", "simulation": "a", "job": done}) == []
    assert t.message({"type": "job", "simulation": "b", "job": _job("running")}) == []
    # a snapshot's simulation message, and a deletion
    t.message({"type": "simulation", "simulation": {"id": "c", "job": _job("error")}})
    t.message({"type": "simulation", "simulation": {"id": "d", "deleted": True}})
    fa, fb, fc, fd = _F("a"), _F("b"), _F("c"), _F("d")
    r = {f.simulation: (j, e) for f, j, e in t.claim([fa, fb, fc, fd])}
    t.end_claim()
    assert r["a"] == (done, None)
    assert isinstance(r["c"][1], client.RunFailed)
    assert r["c"][1].job["status"] == "error"
    assert r["d"][1].status == 404
    assert set(r) == {"a", "c", "d"} and len(t) == 1
    # b is followed now
    assert t.message({"type": "job", "simulation": "b", "job": _job("running")}) == []
    ((f, j, e),) = t.message(
        {"type": "job", "simulation": "b", "job": _job("canceled")}
    )
    assert f is fb and j is None and e.job["status"] == "canceled"
    assert len(t) == 0


def test_sweep_watch():
    w = _sweep.SweepWatch("w1")
    assert w.message({"type": "sweep", "sweep": {"id": "w2"}}) is None
    assert w.message({"type": "sweep", "sweep": {"id": "w1", "x": 1}}) == {
        "id": "w1",
        "x": 1,
    }
    w.message({"type": "synced"})
    with pytest.raises(client.ApiError):
        w.message({"type": "sweep", "sweep": {"id": "w1", "deleted": True}})
    w.reconnecting()
    with pytest.raises(client.ApiError) as e:
        w.message({"type": "synced"})
    assert e.value.status == 404


def test_no_current_executor():
    with pytest.raises(client.NoExecutor):
        client.current_executor()


# --- against a supervisor ------------------------------------------------------


@pytest.fixture
def alice(server):
    with client.Client(server.url, server.add_user("alice")) as c:
        yield c


def _members(c, sweep_id):
    return c.sweep(sweep_id)["members"]


def test_as_completed_wait_and_one_batch(server, alice):
    secs = [0.05, 0.01, 0.03, 0.0, 0.02, 0.04]
    with alice.executor("sleep") as ex:
        fs = [ex.submit(secs=s) for s in secs]
        assert all(isinstance(f, concurrent.futures.Future) for f in fs)
        done, _ = concurrent.futures.wait(
            fs, timeout=_SECS, return_when=concurrent.futures.FIRST_COMPLETED
        )
        assert done
        seen = [f for f in concurrent.futures.as_completed(fs, timeout=_SECS)]
    assert sorted(seen, key=fs.index) == fs
    # the six quick submits were one sweep, members in submit order
    (w,) = alice.sweeps()
    assert ex.sweeps == [w["id"]]
    assert w["size"] == 6 and w["counts"] == {"completed": 6}
    assert w["combine"] == "zip"
    ms = _members(alice, w["id"])
    for f, s, m in zip(fs, secs, ms):
        j = f.result()
        assert j["status"] == job.COMPLETED and j["result"] == {"secs": s}
        assert (f.sweep_id, f.index, f.simulation) == (
            w["id"],
            m["index"],
            m["simulation"],
        )
        assert m["params"] == {"secs": s}
    # a submit after the batch went is a sweep of its own
    with alice.executor("sleep", batch_secs=0.001) as ex:
        assert ex.submit(secs=0).result(_SECS)["status"] == job.COMPLETED
        assert ex.submit({"secs": 0}).result(_SECS)["status"] == job.COMPLETED
    assert len(ex.sweeps) == 2 and len(alice.sweeps()) == 3
    with pytest.raises(RuntimeError):
        ex.submit(secs=0)


def test_leaving_the_block_waits(alice):
    with alice.executor("sleep", max_parallel=1) as ex:
        fs = [ex.submit(secs=0.2), ex.submit(secs=0.1)]
        assert not any(f.done() for f in fs)
    assert [f.result(0)["status"] for f in fs] == [job.COMPLETED] * 2
    # shutdown(wait=False) returns at once; the futures still end
    ex = alice.executor("sleep")
    f = ex.submit(secs=0.3)
    ex.shutdown(wait=False)
    assert not f.done()
    assert f.result(_SECS)["status"] == job.COMPLETED
    with pytest.raises(RuntimeError):
        ex.submit(secs=0)


def test_failures_surface_as_exceptions(alice):
    with alice.executor("sleep") as ex:
        good = [ex.submit(secs=0), ex.submit(secs=0.01)]
        bad = ex.submit(secs=-1)
        more = ex.submit(secs=0.02)
    # the refused one alone fails; the others' batch is made without it
    with pytest.raises(client.ApiError) as e:
        bad.result(0)
    assert e.value.status == 400 and e.value.code == "bad_param"
    assert bad.simulation is None
    for f in [*good, more]:
        assert f.result(0)["status"] == job.COMPLETED
    with alice.executor("crash") as ex:
        fs = [ex.submit(message=f"boom {i}") for i in range(3)]
        for f in concurrent.futures.as_completed(fs, timeout=_SECS):
            with pytest.raises(client.RunFailed) as e:
                f.result()
            assert e.value.job["status"] == job.ERROR
            assert f.params["message"] in e.value.job["error"]
    # refusals of the whole request fail every future (not split)
    with alice.executor("sleep", driver="nope") as ex:
        fs = [ex.submit(secs=0) for _ in range(3)]
    for f in fs:
        with pytest.raises(client.ApiError) as e:
            f.result(0)
        assert e.value.code == "unknown_driver"
    with alice.executor("forever") as ex:
        with pytest.raises(client.Error, match="no parameters"):
            ex.submit().result(_SECS)


def test_future_cancel_cancels_its_member(server, alice):
    with alice.executor("sleep", max_parallel=1) as ex:
        running = ex.submit(secs=_SECS)
        quick = ex.submit(secs=0.01)
        pending = ex.submit(secs=_SECS)
        wait_for(
            lambda: running.simulation
            and alice.simulation(running.simulation).status() == job.RUNNING,
            30,
            what="the first member running",
        )
        assert pending.cancel() and running.cancel()
        assert pending.cancelled() and running.cancelled()
        assert not running.running()
        done, _ = concurrent.futures.wait([running, pending], timeout=5)
        assert len(done) == 2
        with pytest.raises(concurrent.futures.CancelledError):
            running.result()
        assert quick.result(_SECS)["status"] == job.COMPLETED
        assert not quick.cancel()
    # the with block waited for the cancels: both ended on the server
    j = alice.simulation(pending.simulation).job()
    assert j["status"] == job.CANCELED and "before it ran" in j["error"]
    assert j["started_at"] is None
    assert alice.simulation(running.simulation).job()["status"] == job.CANCELED
    d = alice.sweep(ex.sweeps[0])
    assert d["counts"] == {"canceled": 2, "completed": 1}, d["counts"]
    for f in (running, pending):
        assert not procs_under(server.data_dir / "run" / "alice" / f.simulation)
    # the API it uses refuses members that are not the sweep's
    for q, code in (
        ("9", "bad_members"),
        ("1,x", "bad_argument"),
        ("", "bad_argument"),
    ):
        r = server.api(
            "POST", f"/sweeps/{ex.sweeps[0]}/cancel?members={q}", "alice", json={}
        )
        assert r.status_code == 400 and r.json()["error"] == code, (q, r.text)


def test_shutdown_cancel_futures(server, alice):
    ex = alice.executor("sleep", max_parallel=2)
    fs = [ex.submit(secs=_SECS) for _ in range(6)]
    wait_for(
        lambda: ex.sweeps and alice.sweep(ex.sweeps[0])["counts"].get("running") == 2,
        30,
        what="two members running",
    )
    t = time.monotonic()
    ex.shutdown(cancel_futures=True)
    assert time.monotonic() - t < 15
    assert all(f.cancelled() for f in fs)
    done, _ = concurrent.futures.wait(fs, timeout=0)
    assert len(done) == 6
    d = alice.sweep(ex.sweeps[0])
    assert d["counts"] == {"canceled": 6} and d["status"] == "canceled", d
    for m in d["members"]:
        assert not procs_under(server.data_dir / "run" / "alice" / m["simulation"])
    ex.shutdown()  # idempotent
    with pytest.raises(RuntimeError):
        ex.submit(secs=0)


def test_map_and_sweep(alice):
    with alice.executor("sleep") as ex:
        jobs = list(ex.map(secs=[0.03, 0.0, 0.01]))
        assert [j["result"]["secs"] for j in jobs] == [0.03, 0.0, 0.01]
        jobs = list(ex.map([{"secs": 0.02}, {}], timeout=_SECS))
        assert [j["result"]["secs"] for j in jobs] == [0.02, 1.0]
        fs = ex.sweep({"secs": {"start": 0.0, "stop": 0.04, "num": 5}}, name="naps")
        assert [f.index for f in fs] == list(range(5))
        assert [f.result(_SECS)["result"]["secs"] for f in fs] == pytest.approx(
            [0.0, 0.01, 0.02, 0.03, 0.04]
        )
        with pytest.raises(client.ApiError) as e:
            ex.sweep({"secs": [1, -1]})
        assert e.value.code == "bad_param"
    assert len(ex.sweeps) == 3
    assert alice.sweep(ex.sweeps[2])["name"] == "naps"
    with alice.executor("crash") as ex:
        it = ex.map(message=["a", "b"])
        with pytest.raises(client.RunFailed):
            next(it)


def test_grid_sweep_of_heat(alice):
    with alice.executor("heat", cores=1) as ex:
        fs = ex.sweep({"steps": [100, 200], "alpha": [0.01, 0.02]}, nx=21)
        assert [f.params for f in fs] == [
            {"nx": 21, "steps": s, "alpha": a} for s in (100, 200) for a in (0.01, 0.02)
        ]
        js = [f.result(_SECS) for f in fs]
    assert all(j["status"] == job.COMPLETED for j in js)
    assert alice.sweep(ex.sweeps[0])["cores"] == 1


def _library_scan(values):
    # library code: the executor is found, not passed
    ex = client.current_executor()
    return [ex.submit(secs=v) for v in values]


def test_current_executor(alice):
    with alice.executor("sleep") as ex:
        assert client.current_executor() is ex
        with alice.executor("sleep") as inner:
            assert client.current_executor() is inner
        assert client.current_executor() is ex
        fs = _library_scan([0.0, 0.01])
        # a thread sees it when run in a copy of this context
        box = []
        t = threading.Thread(
            target=contextvars.copy_context().run,
            args=(lambda: box.append(client.current_executor()),),
        )
        t.start()
        t.join()
        assert box == [ex]
    assert [f.result(0)["status"] for f in fs] == [job.COMPLETED] * 2
    with pytest.raises(client.NoExecutor):
        _library_scan([0])


def test_result_across_a_restart(server, alice):
    with alice.executor("sleep") as ex:
        f = ex.submit(secs=2)
        wait_for(
            lambda: f.simulation
            and alice.simulation(f.simulation).status() == job.RUNNING,
            30,
            what="running",
        )
        server.stop()
        server.start()
        # the events stream reconnects; the snapshot tells of the end
        try:
            j = f.result(_SECS)
        except client.RunFailed as e:
            j = e.job
    assert j["status"] in job.ENDED
    assert alice.simulation(f.simulation).job()["status"] == j["status"]


# --- the async executor --------------------------------------------------------


async def test_async_executor(server):
    c = client.AsyncClient(server.url, server.add_user("alice"))
    async with c.executor("sleep") as ex:
        assert client.current_executor() is ex
        fs = [ex.submit(secs=s) for s in (0.03, 0.0, 0.01)]
        assert all(isinstance(f, asyncio.Future) for f in fs)
        got = [await f for f in asyncio.as_completed(fs, timeout=_SECS)]
        assert sorted(j["result"]["secs"] for j in got) == [0.0, 0.01, 0.03]
        jobs = await asyncio.gather(*fs)
        assert [j["result"]["secs"] for j in jobs] == [0.03, 0.0, 0.01]
        assert [j["result"]["secs"] async for j in ex.map(secs=[0.02, 0.0])] == [
            0.02,
            0.0,
        ]
        gs = await ex.sweep({"secs": [0.0, 0.01]})
        done, _ = await asyncio.wait(gs, timeout=_SECS)
        assert len(done) == 2
        bad = ex.submit(message="x")
        with pytest.raises(client.ApiError):
            await bad
    assert len(ex.sweeps) == 3
    assert (await c.sweep(ex.sweeps[0]))["counts"] == {"completed": 3}
    async with c.executor("crash") as ex:
        with pytest.raises(client.RunFailed):
            await ex.submit(message="boom")
    with pytest.raises(client.NoExecutor):
        client.current_executor()


async def test_async_cancel(server):
    c = client.AsyncClient(server.url, server.add_user("alice"))
    ex = c.executor("sleep", max_parallel=1)
    fs = [ex.submit(secs=_SECS) for _ in range(4)]
    one = ex.submit(secs=_SECS)
    while not (ex.sweeps and (await c.sweep(ex.sweeps[0]))["counts"].get("running")):
        await asyncio.sleep(0.05)
    one.cancel()
    await ex.shutdown(cancel_futures=True)
    assert all(f.cancelled() for f in [*fs, one])
    d = await c.sweep(ex.sweeps[0])
    assert d["counts"] == {"canceled": 5}, d["counts"]
    for m in d["members"]:
        assert not procs_under(server.data_dir / "run" / "alice" / m["simulation"])
    with pytest.raises(RuntimeError):
        ex.submit(secs=0)
