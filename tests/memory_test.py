"""The trim of memory after a burst of closed connections (`supervisor.memory`)."""

import asyncio

from supervisor import memory


async def test_one_trim_per_burst_of_closes_after_a_quiet_moment():
    t = memory.Trimmer(delay_secs=0.05, after_closes=3)
    try:
        t.closed()
        t.closed()
        await asyncio.sleep(0.15)
        # too few closes to be worth the pause
        assert t.trims == 0
        for _ in range(20):
            t.closed()
            await asyncio.sleep(0.01)
        # the burst is still going: no trim in the middle of it
        assert t.trims == 0
        await asyncio.sleep(0.15)
        assert t.trims == 1
        await asyncio.sleep(0.15)
        assert t.trims == 1
    finally:
        t.destroy()


async def test_destroy_cancels_a_pending_trim():
    t = memory.Trimmer(delay_secs=0.05, after_closes=1)
    t.closed()
    t.destroy()
    await asyncio.sleep(0.15)
    assert t.trims == 0


def test_glibc_gives_its_free_pages_back():
    # Debian's C library is glibc: the trim is more than a collection
    f = memory._malloc_trim()
    assert f is not None and f(0) in (0, 1)
