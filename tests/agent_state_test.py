"""The agent connection table and `Agents`, in process: no sockets, milliseconds."""

import asyncio
import itertools

import pytest

from inproc import World
from supervisor import agent_state, agents
from supervisor.dispatch import Awaited

_DOC = {"id": "a-local-1", "user": "alice", "driver": "local", "host": "h1"}


@pytest.mark.parametrize(
    "src,dst", list(itertools.product(sorted(agent_state.STATES), repeat=2))
)
def test_every_transition(src, dst):
    a = agent_state.Agent(dict(_DOC, secret_hash="x"), src)
    if dst in agent_state.TRANSITIONS[src]:
        a.transition(dst)
        assert a.state == dst
    else:
        with pytest.raises(agent_state.IllegalTransition):
            a.transition(dst)
        assert a.state == src


def test_table_is_closed():
    assert set(agent_state.TRANSITIONS) == agent_state.STATES
    for v in agent_state.TRANSITIONS.values():
        assert v <= agent_state.STATES
    # stopped is final; every other state can be stopped
    assert agent_state.TRANSITIONS[agent_state.STOPPED] == set()
    for s in agent_state.STATES - {agent_state.STOPPED}:
        assert agent_state.STOPPED in agent_state.TRANSITIONS[s]


def test_unknown_state_refused():
    with pytest.raises(ValueError):
        agent_state.Agent(dict(_DOC, secret_hash="x"), "zombie")


@pytest.fixture
async def world(tmp_path):
    w = await World(tmp_path, agent_start_timeout_secs=0.2, agent_idle_secs=0.1).start()
    yield w
    await w.stop()


def _check(w, host="h1"):
    try:
        return w.sv.agents.check_ready("alice", "local", host)
    except Awaited as e:
        return e


async def test_start_hello_idle(world):
    w = world
    e = _check(w)
    assert e.wait == {"reason": "agent_start", "host": "h1"}
    (a,) = w.sv.agents.all()
    assert a.state == agent_state.STARTING
    # the same agent while it starts: no second start
    assert _check(w).waitable is a.ready
    a2, secret, _ = await asyncio.wait_for(w.driver.starts.get(), 1)
    assert a2 is a and w.sv.agents.authenticate(a.id, secret) is a
    assert w.sv.agents.authenticate(a.id, secret + "x") is None
    c = await w.connect(a)
    assert a.state == agent_state.CONNECTED and a.ready.done()
    assert (await c.next("welcome"))["runs"] == {}
    assert _check(w) is a
    # no runs: reaped after the idle time, told to shut down
    await c.next("shutdown", timeout_secs=2)
    assert a.state == agent_state.STOPPED and c.closed
    assert w.sv.agents.all() == []
    await asyncio.sleep(0)
    assert a.id in w.driver.killed


async def test_load_keeps_agent_alive(world):
    w = world
    _check(w)
    a, c = await w.started_agent()
    w.sv.agents.load_changed(a, ["r1"], 2)
    assert w.driver.sizes[a.id] == 2 and a.timer is None
    assert a.to_dict()["runs"] == ["r1"]
    w.sv.agents.load_changed(a, [], 0)
    assert a.timer is not None
    await c.next("shutdown", timeout_secs=2)


async def test_start_deadline(world):
    w = world
    e = _check(w)
    (a,) = w.sv.agents.all()
    with pytest.raises(agents.AgentStartFailed, match="did not call back"):
        await asyncio.wait_for(asyncio.shield(e.waitable), 2)
    assert a.state == agent_state.STOPPED


async def test_disconnect_reconnect_and_expiry(world):
    w = world
    _check(w)
    a, c = await w.started_agent()
    w.sv.agents.load_changed(a, ["r1"], 1)
    _i, f = w.sv.agents.new_op(a)
    w.sv.agents.closed(a, c)
    assert a.state == agent_state.DISCONNECTED and not a.ready.done()
    with pytest.raises(agents.AgentGone):
        await f
    assert _check(w).wait == {"reason": "agent_reconnect", "host": "h1"}
    # a stale close of an older connection changes nothing
    c2 = await w.connect(a)
    w.sv.agents.closed(a, c)
    assert a.state == agent_state.CONNECTED and a.conn is c2
    w.sv.agents.closed(a, c2)
    # gone for longer than a start may take: forgotten
    await asyncio.wait_for(asyncio.shield(a.ready), 2)
    assert a.state == agent_state.STOPPED and w.sv.agents.all() == []


async def test_replaced_connection_is_closed(world):
    w = world
    _check(w)
    a, c = await w.started_agent()
    c2 = await w.connect(a)
    assert c.closed and a.conn is c2 and a.state == agent_state.CONNECTED


async def test_ops_reply_ok_and_failed(world):
    w = world
    _check(w)
    a, c = await w.started_agent()
    t = asyncio.create_task(w.sv.agents.call(a, "list_files", 1, path="x"))
    m = await c.next("list_files")
    w.send(a, "reply", op_id=m["op_id"], ok=True, result={"files": []}, error=None)
    assert await t == {"files": []}
    t = asyncio.create_task(w.sv.agents.call(a, "list_files", 1, path="y"))
    m = await c.next("list_files")
    w.send(a, "reply", op_id=m["op_id"], ok=False, result=None, error="no file y")
    with pytest.raises(agents.OpFailed, match="no file y"):
        await t
    assert a.ops == {}


async def test_kill_tells_watchers(world):
    w = world
    seen = []

    class _W(agents.Watcher):
        def agent_stopped(self, agent, reason, dead):
            seen.append((agent.id, reason, dead))

    w.sv.agents.watch(_W())
    _check(w)
    a, _c = await w.started_agent()
    w.sv.agents.kill(a)
    assert seen == [(a.id, agents.KILLED_BY_ADMIN, True)]
    # idempotent
    w.sv.agents.kill(a)
    assert len(seen) == 1


async def test_exit_while_starting_fails_the_start(world):
    w = world
    e = _check(w)
    a, _, on_exit = await asyncio.wait_for(w.driver.starts.get(), 1)
    on_exit(a, "agent exited with code 2: boom")
    with pytest.raises(agents.AgentStartFailed, match="boom"):
        await asyncio.wait_for(asyncio.shield(e.waitable), 1)


async def test_hello_of_stopped_agent_is_refused(world):
    w = world
    _check(w)
    a, _c = await w.started_agent()
    w.sv.agents.kill(a)
    c2 = await w.connect(a)
    assert c2.closed and a.state == agent_state.STOPPED
