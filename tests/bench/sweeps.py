"""Rows 20 and 21: sweeps (issue 13).

Row 20: a sweep of thousands of members through the fake agent.
One ``POST /api/sweeps`` of `MEMBERS` members of ``sleep`` (secs 0); the
fake agent (`clients.FakeAgent`) answers each run op at once with started
and exited. The figure is members per second from the POST to the last
member's ``completed`` push on the admin's ``/api/events``, and the
supervisor's CPU per member until every end is durable; the floor is as
many bare authenticated requests (``POST /api/logout``), all submitted at
once, to the same supervisor.

Row 21: a sweep of `LOCAL_MEMBERS` members of ``sleep`` (secs 0) through the
real local agent (`figures.RealAgentBench`: 8 local cores, the admin's 8
running slots), from the POST to the last ``completed`` push; the floor is
as many bare ``sleep`` subprocesses, 8 at a time, from the bench process.
"""

import time

from tests.bench import clients, figures, floors, report
from tests.bench.report import PER_SEC, BenchError, Row

#: members of the sweep
MEMBERS = 2000

#: running slots of the plan: the sweep has twice this in flight
_RUNNING = 64

#: row 21: members through the real local agent, and runs at once
LOCAL_MEMBERS = 200
LOCAL_CORES = 8


def row():
    r = Row(
        f"20 sweep of {MEMBERS} members -> all completed, fake agent",
        PER_SEC,
        f"{MEMBERS} POST /api/logout (bearer auth, same handler base, no state) "
        "to the same supervisor, same client, all submitted at once",
    )
    r.note = (
        f"one POST /api/sweeps of `sleep` secs=0 x {MEMBERS} (zip of one axis); "
        f"local_cores and the plan's running slots {_RUNNING} (so {2 * _RUNNING} "
        "members in flight); the fake agent answers each run op at once with "
        "started and exited; time from the POST to the last member's `completed` "
        "push. Goal: at least 2,000 members/s and 0.5 ms of supervisor CPU per member"
    )
    return r


async def measure(conftest, tmp, r, leftovers):
    b = figures.FakeAgentBench(
        conftest, tmp / "sweep", _RUNNING, premium_max_running=_RUNNING
    )
    try:
        await b.start()
        b.agent.auto_complete = True
        await b.logout_posts(20)
        await _sweep(b, 50)
        fl, fi = await report.paired(
            lambda: b.logout_posts(MEMBERS), lambda: _sweep(b, MEMBERS), 5, 60, 2
        )
        r.floor = [x[0] for x in fl]
        r.figure = [x[0] for x in fi]
        cf = report.median([x[1] for x in fl]) * 1000
        c = report.median([x[1] for x in fi]) * 1000
        w = report.median([x[2] for x in fi])
        r.note += (
            f". Supervisor CPU: {c:.3f} ms per member (floor: {cf:.3f} ms per "
            f"request); {w:.2f} durable store writes per member"
        )
    finally:
        leftovers += await b.cleanup()


async def _sweep(b, n):
    """(members per second, supervisor CPU seconds per member, writes per member)."""
    a = b.agent
    f = a.forgets
    w = await b.store_writes()
    c = clients.cpu_secs(b.server.proc.pid)
    m0 = b.events.mark()
    t0 = time.perf_counter()
    s = await b.api.call(
        "POST",
        "/sweeps",
        {"code": "sleep", "axes": {"secs": [0] * n}, "max_parallel": None},
        expect=202,
    )
    d = await b.api.call("GET", f"/sweeps/{s['id']}", expect=200)
    ids = [m["simulation"] for m in d["members"]]
    t, jobs = await b.events.wait_ended(ids, m0, f"{n} members", timeout=120)
    bad = [j for j in jobs.values() if j["status"] != "completed"]
    if bad:
        raise BenchError(f"{len(bad)} members did not complete: {bad[0]['error']}")
    await a.wait_forgets(f + n)
    c = clients.cpu_secs(b.server.proc.pid) - c
    w = (await b.store_writes() - w) / n
    # the next sample starts from nothing
    await b.api.call("DELETE", f"/sweeps/{s['id']}", expect=200)
    return n / (t - t0), c / n, w


def local_row():
    r = Row(
        f"21 sweep of {LOCAL_MEMBERS} sleep-0 members -> all completed, local agent",
        PER_SEC,
        f"{LOCAL_MEMBERS} bare subprocesses of the same code, {LOCAL_CORES} at a "
        "time, from the bench process",
    )
    r.note = (
        f"one POST /api/sweeps of `sleep` secs=0 x {LOCAL_MEMBERS} (local driver, "
        f"sandbox auto; local_cores {LOCAL_CORES}, the admin's {LOCAL_CORES} running "
        "slots); time from the POST to the last member's `completed` push. Goal: "
        "at least 0.9 of the floor"
    )
    return r


async def measure_local(b, tmp, r):
    """Row 21 on `b` (a started `figures.RealAgentBench`)."""
    d = floors.run_dir(tmp / "floor", "sleep", {"secs": 0})
    await _local_sweep(b, 8)
    r.floor, r.figure = await report.paired(
        lambda: floors.sleep_throughput(d, LOCAL_MEMBERS, LOCAL_CORES),
        lambda: _local_sweep(b, LOCAL_MEMBERS),
        3,
        90,
        2,
    )


async def _local_sweep(b, n):
    """Members per second of a sweep of `n` `sleep` secs=0, to the last end."""
    m0 = b.events.mark()
    t0 = time.perf_counter()
    s = await b.api.call(
        "POST", "/sweeps", {"code": "sleep", "axes": {"secs": [0] * n}}, expect=202
    )
    d = await b.api.call("GET", f"/sweeps/{s['id']}", expect=200)
    ids = [m["simulation"] for m in d["members"]]
    t, jobs = await b.events.wait_ended(ids, m0, f"{n} members", timeout=300)
    bad = [j for j in jobs.values() if j["status"] != "completed"]
    if bad:
        raise BenchError(f"{len(bad)} members did not complete: {bad[0]['error']}")
    await b.api.call("DELETE", f"/sweeps/{s['id']}", expect=200)
    return n / (t - t0)
