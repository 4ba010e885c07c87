"""The run lifecycle in process: ownership, timers, waits; no sockets, milliseconds.

A real `Supervisor` (runs, agents, resources, store, push) with a fake
driver; the test plays the agent (`inproc`).
"""

import asyncio

import pytest

from inproc import HOST, Push, World
from supervisor import agent_state, job


@pytest.fixture
async def world(tmp_path):
    w = await World(
        tmp_path,
        agent_start_timeout_secs=0.3,
        cancel_timeout_secs=0.3,
        lost_grace_secs=0.2,
        max_run_slack_secs=0.0,
    ).start()
    yield w
    await w.stop()


def _run(w, sim_id):
    return w.sv.sim_store.by_id[sim_id].run


async def test_ownership_from_queue_to_end(world):
    w = world
    s = await w.sim(secs=1)
    j = await w.run(s)
    # by the time the run is durable, its dispatch may already wait for the agent
    assert j["status"] == "queued" and not j["canceling"]
    assert j["wait"] in ({"reason": "queued"}, {"reason": "agent_start", "host": HOST})
    a, c = await w.started_agent()
    op = await c.next("run")
    r = _run(w, s)
    # committed: the agent holds the run, its cores are taken
    assert r.run_id == op["run_id"] == j["run_id"]
    assert a.run_ids == (r.run_id,) and a.cores == 1
    assert w.sv.runs.held(a) == [r]
    assert w.driver.target.used == 1
    j = w.sv.sim_store.by_id[s].job
    assert j.status == job.STARTING and j.host == HOST and j.wait is None
    w.send(a, "started", run_id=r.run_id, pid=2)
    assert j.status == job.RUNNING and r.has_max_run()
    w.send(a, "progress", run_id=r.run_id, progress=0.5)
    w.send(a, "exited", run_id=r.run_id, status="completed", exit_code=0, error=None)
    assert j.status == job.COMPLETED and j.progress == 1.0
    # everything given back
    assert _run(w, s) is None and r.destroyed and not w.sv.runs.active
    assert a.run_ids == () and w.driver.target.used == 0
    # the agent may drop it once the end is durable
    assert (await c.next("forget"))["run_id"] == r.run_id


async def test_messages_of_another_run_are_ignored(world):
    w = world
    s = await w.sim(secs=1)
    a, c, _op = await w.running(s)
    w.send(a, "exited", run_id="0-000000000001", status="error", exit_code=1, error="x")
    assert w.sv.sim_store.by_id[s].job.status == job.RUNNING
    # and the agent is told to forget it
    assert (await c.next("forget"))["run_id"] == "0-000000000001"


async def test_start_deadline(world):
    w = world
    s = await w.sim(secs=1)
    await w.run(s)
    a, c = await w.started_agent()
    await c.next("run")
    j = await w.push.until(lambda j: j["status"] == "error")
    assert "did not start the run within" in j["error"]
    assert a.run_ids == () and w.driver.target.used == 0


async def test_max_run_time(world):
    w = world
    w.sv.users.plan_of("alice").max_run_secs = 0.1
    s = await w.sim(secs=1)
    _a, c, op = await w.running(s)
    # the supervisor asks the agent to cancel; unconfirmed, it ends it itself
    m = await c.next("cancel")
    assert m["run_id"] == op["run_id"]
    j = await w.push.until(lambda j: j["status"] == "timed_out")
    assert "max run time" in j["error"] and not j["canceling"]


async def test_cancel_is_confirmed_by_the_agent(world):
    w = world
    s = await w.sim(secs=1)
    a, c, op = await w.running(s)
    t = asyncio.create_task(w.sv.sims.cancel(w.user, s))
    m = await c.next("cancel")
    j = await w.push.until(lambda j: j["canceling"])
    assert j["status"] == "running" and j["situation"] == "canceling"
    w.send(
        a, "exited", run_id=op["run_id"], status="canceled", exit_code=None, error=None
    )
    w.send(a, "reply", op_id=m["op_id"], ok=True, result=None, error=None)
    j = await t
    assert j["status"] == "canceled" and not j["canceling"]


async def test_cancel_ends_at_the_agents_exited_not_its_reply(world):
    """The exited (canceled) is the confirmation: the reply is not waited for."""
    w = world
    s = await w.sim(secs=1)
    a, c, op = await w.running(s)
    t = asyncio.create_task(w.sv.sims.cancel(w.user, s))
    await c.next("cancel")
    w.send(
        a, "exited", run_id=op["run_id"], status="canceled", exit_code=None, error=None
    )
    # well inside cancel_timeout_secs (0.3), with no reply at all
    j = await asyncio.wait_for(t, 0.2)
    assert j["status"] == "canceled" and not j["canceling"] and j["error"] is None


async def test_lost_grace_then_error(world):
    w = world
    s = await w.sim(secs=1)
    a, c, _op = await w.running(s)
    w.sv.agents.closed(a, c)
    j = await w.push.until(lambda j: j["status"] == "lost")
    assert j["wait"] == {"reason": "agent_lost", "host": HOST}
    j = await w.push.until(lambda j: j["status"] == "error")
    assert "did not return within" in j["error"]
    assert w.driver.target.used == 0


async def test_lost_then_adopted(world):
    w = world
    s = await w.sim(secs=1)
    a, c, op = await w.running(s)
    w.sv.agents.closed(a, c)
    await w.push.until(lambda j: j["status"] == "lost")
    c = await w.connect(a, runs=[op["run_id"]])
    assert (await c.next("welcome"))["runs"] == {
        op["run_id"]: {"frames_next": 0, "log_next": 0}
    }
    j = w.sv.sim_store.by_id[s].job
    assert j.status == job.RUNNING and j.wait is None
    assert a.run_ids == (op["run_id"],)
    # the grace timer is off: still running after it would have fired
    await asyncio.sleep(0.3)
    assert j.status == job.RUNNING


async def test_hello_without_the_run_ends_it(world):
    w = world
    s = await w.sim(secs=1)
    a, c, _op = await w.running(s)
    w.sv.agents.closed(a, c)
    await w.connect(a, runs=[])
    j = w.sv.sim_store.by_id[s].job
    assert j.status == job.ERROR and "restarted without this run" in j.error


async def test_agent_killed_cancels_its_runs(world):
    w = world
    s = await w.sim(secs=1)
    a, _c, _op = await w.running(s)
    w.sv.agents.kill(a)
    j = w.sv.sim_store.by_id[s].job
    assert j.status == job.CANCELED and j.error == "agent killed by an admin"
    assert a.state == agent_state.STOPPED and w.driver.target.used == 0


async def test_waits_say_why(world):
    w = world
    w.sv.users.plan_of("alice").max_running = 1
    s1 = await w.sim(secs=1)
    s2 = await w.sim(secs=1)
    _a, _c, _op = await w.running(s1)
    await w.run(s2)
    j = await w.push.until(lambda j: j["wait"] not in (None, {"reason": "queued"}))
    assert j["wait"] == {"reason": "user_limit", "max_running": 1}
    assert "running jobs" in j["situation"]


async def test_sign_in_wait(tmp_path):
    w = await World(tmp_path, driver_args={"needs_login": True}).start()
    try:
        s = await w.sim(secs=1)
        await w.run(s)
        j = await w.push.until(lambda j: j["wait"] not in (None, {"reason": "queued"}))
        assert j["wait"] == {"reason": "sign_in", "host": HOST}
        assert j["status"] == "queued" and w.sv.agents.all() == []
    finally:
        await w.stop()


async def test_restart_lost_then_grace(tmp_path):
    """After a restart a running run is lost; with its driver gone, still graced."""
    cfg = dict(lost_grace_secs=0.2, agent_start_timeout_secs=0.3)
    w = await World(tmp_path, **cfg).start()
    s = await w.sim(secs=1)
    await w.running(s)
    await w.stop()
    w = World(tmp_path, **cfg)
    w.sv.drivers.pop("local")
    w.user = w.sv.users.get("alice")
    w.push = Push(w.sv.hub, w.user)
    w.sv.agents.load()
    w.sv.runs.recover(w.sv.sim_store.load())
    try:
        j = w.sv.sim_store.by_id[s].job
        assert j.status == job.LOST
        assert j.wait == {"reason": "agent_lost", "host": HOST}
        assert "supervisor restarted" in j.situation
        e = await w.push.until(lambda j: j["status"] == "error")
        assert "did not return within 0.2 s" in e["error"]
    finally:
        await w.stop()


def test_restarts_count_only_within_their_window(monkeypatch):
    from supervisor import agents

    now = 10_000.0
    monkeypatch.setattr(agents.time, "monotonic", lambda: now)
    w = agents.RESTART_WINDOW_SECS
    times = [now - w - 1, now - w / 2, now - 1]
    # the crash of long ago no longer counts against the budget
    assert agents._recent(times) == 2 and times == [now - w / 2, now - 1]
