"""Tests of supervisor/dispatch.py with supervisor/resources.py.

The handler here is the realistic one (see `Runs._start`): check the request
is still wanted, check resources, check the agent, commit, then one edge
await. The task body owns what the handler holds and destroys it in
``finally``, so cancel or error never leak cores, slots or waiters.
"""

import asyncio

import pytest

from supervisor import resources
from supervisor.dispatch import Awaited, dispatch

_PLAN = resources.Plan(
    "basic", max_running=1, max_run_secs=60, max_cores=4, max_analyses=2
)

_BIG = resources.Plan(
    "big", max_running=100, max_run_secs=60, max_cores=64, max_analyses=9
)

#: more calls than any test needs: a dispatcher that spins fails, not hangs
_MAX_CALLS = 50


class AgentStartFailed(Exception):
    pass


class _Agent:
    """A user's agent: its `ready` future is shared by every job of the user."""

    def __init__(self):
        self.connected = False
        self.ready = asyncio.get_running_loop().create_future()

    def check_ready(self):
        if not self.connected:
            raise Awaited(self.ready, "starting agent")

    def connect(self):
        self.connected = True
        self.ready.set_result(None)

    def restart(self):
        """The start was abandoned (its owner cancels the future); try again."""
        self.ready.cancel()
        self.ready = asyncio.get_running_loop().create_future()


class _Owner:
    """One job's run: owns its request, then its grant."""

    def __init__(self, res, agent, key, user, cores=1, lane=resources.RUN, plan=_PLAN):
        self.res = res
        self.agent = agent
        self.request = resources.Request(key, user, plan, cores, ["h"], lane)
        res.add(self.request)
        self.grant = None
        self.destroyed = False
        self.calls = 0
        self.situations = []
        self._waits = asyncio.Queue()
        loop = asyncio.get_running_loop()
        # set by the handler just before its edge await; the edge's reply
        self.at_edge = loop.create_future()
        self.reply = loop.create_future()
        self.task = None

    def destroy(self):
        if self.destroyed:
            return
        self.destroyed = True
        self.res.remove(self.request)
        if self.grant is not None:
            self.grant.destroy()

    def on_wait(self, owner, awaited):
        assert owner is self
        situation = awaited.situation
        self.situations.append(situation)
        self._waits.put_nowait(situation)

    async def next_wait(self):
        """The situation of the next wait, once the task is in it."""
        return await self._waits.get()

    def start(self):
        self.task = asyncio.create_task(_task(self))
        return self

    def assert_released(self):
        assert self.destroyed
        assert not self.request.registered
        assert self.request.waiter is None
        assert self.grant is None or self.grant.destroyed


async def _handler(owner):
    owner.calls += 1
    assert owner.calls <= _MAX_CALLS, "dispatch is spinning"
    # 1. prerequisites, in order
    if owner.destroyed:
        return None
    t = owner.res.check(owner.request)
    owner.agent.check_ready()
    # 2. commit, synchronously
    owner.grant = owner.res.commit(owner.request, t)
    # 3. the one edge await
    owner.at_edge.set_result(None)
    return await owner.reply


async def _task(owner):
    """The job's task: dispatch, and release whatever is held at the end."""
    try:
        return await dispatch(_handler, owner, owner.on_wait)
    finally:
        owner.destroy()


class _World:
    def __init__(self, cores):
        self.target = resources.Target("h", cores)
        self.res = resources.Resources([self.target])
        self.agents = {}

    def agent(self, user):
        a = self.agents.get(user)
        if a is None:
            a = self.agents[user] = _Agent()
        return a

    def owner(self, key, user, **kwargs):
        return _Owner(self.res, self.agent(user), key, user, **kwargs)

    def hold(self, key, user, cores):
        """Another user's running job."""
        r = resources.Request(key, user, _BIG, cores, ["h"])
        self.res.add(r)
        return self.res.commit(r, self.res.check(r))

    def assert_idle(self):
        assert self.target.used == 0
        assert self.res.queue_lengths() == {}
        assert self.res.positions() == {}
        for u in self.agents:
            assert self.res.running(u) == 0


async def test_happy_path_never_awaits_before_the_commit():
    w = _World(1)
    w.agent("a").connect()
    o = w.owner("a1", "a")
    c = dispatch(_handler, o, o.on_wait)
    # run the coroutine by hand up to its first suspension
    y = c.send(None)
    assert y is o.reply, "the first await is the edge await"
    assert o.grant is not None and w.target.used == 1
    assert o.calls == 1
    assert o.situations == []
    c.close()
    o.destroy()
    w.assert_idle()


async def test_returns_what_the_handler_returns():
    w = _World(1)
    w.agent("a").connect()
    o = w.owner("a1", "a").start()
    await o.at_edge
    o.reply.set_result("done")
    assert await o.task == "done"
    assert o.calls == 1
    o.assert_released()
    w.assert_idle()


async def test_restarts_after_every_kind_of_wait():
    w = _World(3)
    gb = w.hold("b1", "b", 2)
    a1 = w.owner("a1", "a")
    a2 = w.owner("a2", "a", cores=2).start()
    # user queue turn
    assert await a2.next_wait() == "queue position 2 of your runs"
    assert a2.calls == 1
    g1 = w.res.commit(a1.request, w.res.check(a1.request))
    # user limit
    assert await a2.next_wait() == "waiting for one of your 1 running jobs to end"
    assert a2.calls == 2
    g1.destroy()
    # cores
    assert await a2.next_wait() == "waiting for 2 cores"
    assert a2.calls == 3
    gb.destroy()
    # an external future
    assert await a2.next_wait() == "starting agent"
    assert a2.calls == 4
    w.agent("a").connect()
    await a2.at_edge
    assert a2.calls == 5
    assert a2.grant is not None and w.target.used == 2
    a2.reply.set_result("ok")
    assert await a2.task == "ok"
    assert a2.situations == [
        "queue position 2 of your runs",
        "waiting for one of your 1 running jobs to end",
        "waiting for 2 cores",
        "starting agent",
    ]
    a2.assert_released()
    w.assert_idle()


async def test_everything_is_checked_again_after_a_wait():
    w = _World(1)
    o = w.owner("a1", "a").start()
    assert await o.next_wait() == "starting agent"
    # while it waited for its agent, its host began draining
    w.res.drain("h")
    w.agent("a").connect()
    assert await o.next_wait() == "waiting: every host is draining"
    assert o.grant is None
    w.res.drain("h", False)
    await o.at_edge
    assert o.calls == 3
    o.reply.set_result(None)
    await o.task
    w.assert_idle()


async def _wait_until(stage):
    """Bring a fresh world to `stage`: the owner's task waits there.

    Returns:
        tuple: world, owner, what others hold (to destroy)
    """
    w = _World(2)
    held = []
    if stage == "cores":
        held.append(w.hold("b1", "b", 2))
    if stage in ("queue", "limit"):
        first = w.owner("a0", "a")
        held.append(first)
    o = w.owner("a1", "a").start()
    if stage == "limit":
        first.grant = w.res.commit(first.request, w.res.check(first.request))
    if stage == "edge":
        w.agent("a").connect()
        await o.at_edge
        return w, o, held
    while True:
        s = await o.next_wait()
        if s.startswith(_SITUATION[stage]):
            return w, o, held


_SITUATION = {
    "queue": "queue position",
    "limit": "waiting for one of your",
    "cores": "waiting for 1 cores",
    "agent": "starting agent",
}


@pytest.mark.parametrize("stage", ["queue", "limit", "cores", "agent", "edge"])
async def test_cancel_releases_everything(stage):
    w, o, held = await _wait_until(stage)
    ready = w.agent("a").ready
    o.task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await o.task
    o.assert_released()
    assert not ready.cancelled(), "the agent's future is not the task's to cancel"
    for h in held:
        h.destroy()
    w.assert_idle()


async def test_waitable_canceled_by_its_owner_restarts():
    w = _World(1)
    o = w.owner("a1", "a").start()
    assert await o.next_wait() == "starting agent"
    w.agent("a").restart()
    assert await o.next_wait() == "starting agent"
    assert o.calls == 2
    w.agent("a").connect()
    await o.at_edge
    o.reply.set_result("ok")
    assert await o.task == "ok"
    w.assert_idle()


async def test_request_destroyed_by_its_owner_while_waiting():
    # e.g. superseded by a newer run: remove cancels the waiter, the task
    # restarts, sees it is no longer wanted, and ends quietly
    w = _World(1)
    gb = w.hold("b1", "b", 1)
    o = w.owner("a1", "a").start()
    assert await o.next_wait() == "waiting for 1 cores"
    waiter = o.request.waiter
    o.destroy()
    assert waiter.cancelled()
    assert await o.task is None
    assert o.calls == 2
    o.assert_released()
    gb.destroy()
    w.assert_idle()


async def test_waitable_error_propagates():
    w = _World(1)
    o = w.owner("a1", "a").start()
    assert await o.next_wait() == "starting agent"
    w.agent("a").ready.set_exception(AgentStartFailed("no agent for you"))
    with pytest.raises(AgentStartFailed, match="no agent for you"):
        await o.task
    assert o.calls == 1
    o.assert_released()
    w.assert_idle()


async def test_handler_error_propagates():
    w = _World(1)
    w.agent("a").connect()
    o = w.owner("a1", "a").start()
    await o.at_edge
    o.reply.set_exception(ValueError("bad reply"))
    with pytest.raises(ValueError, match="bad reply"):
        await o.task
    o.assert_released()
    w.assert_idle()


async def test_shared_future_survives_one_waiter_canceled():
    # a run and an analysis of one user both wait for the user's agent
    w = _World(1)
    run = w.owner("a1", "a").start()
    analysis = w.owner("a2", "a", lane=resources.ANALYSIS).start()
    assert await run.next_wait() == "starting agent"
    assert await analysis.next_wait() == "starting agent"
    ready = w.agent("a").ready
    run.task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run.task
    assert not ready.cancelled(), "canceling one task canceled the agent's future"
    w.agent("a").connect()
    await analysis.at_edge
    assert analysis.calls == 2
    analysis.reply.set_result("plot")
    assert await analysis.task == "plot"
    run.assert_released()
    analysis.assert_released()
    w.assert_idle()


async def test_shared_future_two_runs_two_users():
    # the same with two runs of different users that wait on one future
    w = _World(2)
    w.agents["b"] = w.agent("a")
    shared = w.agent("a").ready
    a = w.owner("a1", "a").start()
    b = w.owner("b1", "b").start()
    await a.next_wait()
    await b.next_wait()
    b.task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await b.task
    assert not shared.cancelled()
    assert not a.task.done()
    w.agents["a"].connect()
    await a.at_edge
    a.reply.set_result(1)
    assert await a.task == 1
    w.assert_idle()


async def test_cancel_while_woken_and_not_yet_restarted():
    w = _World(1)
    gb = w.hold("b1", "b", 1)
    o = w.owner("a1", "a").start()
    await o.next_wait()
    # the core frees and the task is canceled in the same loop turn
    gb.destroy()
    o.task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await o.task
    o.assert_released()
    w.assert_idle()


async def test_on_wait_is_optional():
    loop = asyncio.get_running_loop()
    entered = loop.create_future()
    gate = loop.create_future()
    calls = []

    async def handler(request):
        calls.append(request)
        if len(calls) == 1:
            entered.set_result(None)
            raise Awaited(gate, "at the gate")
        return "x"

    t = asyncio.create_task(dispatch(handler, "req"))
    await entered
    gate.set_result(None)
    assert await t == "x"
    assert calls == ["req", "req"]
