"""agent.tasks: the agent's task owner keeps, logs, cancels and joins its tasks."""

import asyncio

import pytest

from agent import tasks

pytestmark = pytest.mark.timeout(10)


async def test_spawn_keeps_the_task_until_it_ends_and_logs_what_it_raised(capfd):
    t = tasks.Tasks("test-owner")

    async def fail():
        raise ValueError("boom-value")

    async def ok():
        return 1

    a = t.spawn(fail())
    b = t.spawn(ok())
    await t.join()
    assert a.done() and b.done() and b.result() == 1
    e = capfd.readouterr().err
    assert "task_error" in e and "owner=test-owner" in e and "boom-value" in e


async def test_join_waits_for_tasks_spawned_meanwhile():
    t = tasks.Tasks("o")
    done = []

    async def second():
        await asyncio.sleep(0)
        done.append(2)

    async def first():
        await asyncio.sleep(0)
        t.spawn(second())
        done.append(1)

    t.spawn(first())
    await t.join()
    assert done == [1, 2]


async def test_cancel_then_join_and_destroy_leave_no_task(capfd):
    t = tasks.Tasks("o")
    started = asyncio.Event()

    async def forever():
        started.set()
        await asyncio.Event().wait()

    a = t.spawn(forever())
    await started.wait()
    t.cancel()
    await t.join()
    assert a.cancelled()

    respawned = []

    async def respawns():
        try:
            await asyncio.Event().wait()
        finally:
            # a task that spawns while it is canceled: destroy cancels that too
            respawned.append(t.spawn(forever()))

    t.spawn(respawns())
    await asyncio.sleep(0)
    await t.destroy()
    assert respawned and respawned[0].cancelled()
    # a cancel is not an error
    assert "task_error" not in capfd.readouterr().err
