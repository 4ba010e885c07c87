"""A local agent that dies is followed by one that re-attaches its runs (issue 10).

End to end through a real supervisor: SIGKILLed under a run, the agent is
started again, finds the run in its run table (`agent.runtable`) and the
run completes with all of its log and frames, nothing twice; with no new
agent the run ends `error` with the reason at once and leaves nothing. In
the agent alone: a pool whose process was SIGKILLed is re-attached by a
new pool of the same work directory, and one that ended meanwhile is
reported as it ended.
"""

import asyncio
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from agent import pool
from agent_ops import Events, run_op
from conftest import ROOT, procs_under, wait_for

pytestmark = pytest.mark.timeout(120)

_FORKER = ["{python}", str(ROOT / "agent" / "codes" / "forker.py")]


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _agent(server):
    (a,) = server.api("GET", "/admin/agents", expect=200).json()
    return a


def _log(server, sim_id):
    return server.api("GET", f"/simulations/{sim_id}/log", expect=200).text


def _assert_forker_log(text):
    """The forker's two lines, once each, nothing else."""
    x = text.splitlines()
    assert len(x) == 2, text
    assert x[0].startswith("forker: children ") and x[1] == "forker: children ended"


def _kill_agent_under_children(server, sim_id):
    """SIGKILL the agent once the forker's children run; returns (agent, pids)."""
    d = server.data_dir / "run" / "admin" / sim_id
    c = d / "children.txt"
    wait_for(lambda: c.exists() and len(c.read_text().split()) == 3, what="children")
    wait_for(lambda: "forker: children" in _log(server, sim_id), what="first log line")
    pids = procs_under(d)
    a = _agent(server)
    os.kill(a["pid"], signal.SIGKILL)
    wait_for(lambda: not _alive(a["pid"]), 10, what="agent gone")
    return a, pids, d


def test_agent_sigkilled_under_a_forker_run_is_reattached(server_factory):
    # long graces: the run completing proves the new agent, not a timer
    server = server_factory(lost_grace_secs=300, local_orphan_secs=60)
    # long enough for the new agent to come while the run goes on
    s = server.create("admin", "forker", children=3, secs=12)
    server.run("admin", s["id"])
    server.wait_status("admin", s["id"], "running")
    old, pids, d = _kill_agent_under_children(server, s["id"])
    # the run's processes outlived their agent
    assert len(pids) >= 4 and all(_alive(p) for p in pids)
    new = wait_for(
        lambda: (a := _agent(server))["state"] == "connected"
        and a["pid"] != old["pid"]
        and a,
        30,
        what="a new agent",
    )
    # the same agent, started again: it holds the run
    assert new["id"] == old["id"] and new["runs"], new
    j = server.wait_status("admin", s["id"], ("completed", "error", "canceled"), 60)
    assert j["status"] == "completed", j
    t = _log(server, s["id"])
    # the whole log, each line once: what came before the kill is not sent again
    _assert_forker_log(t)
    assert j["progress"] == 1.0
    a = server.data_dir / "log" / f"agent-{old['id']}.log"
    assert "alive=True" in next(
        x for x in a.read_text().splitlines() if " reattach " in x
    )
    wait_for(lambda: not procs_under(d), 10, what="no process of the run")
    assert not any(_alive(p) for p in pids)


def test_frames_of_a_reattached_run_are_all_there_once(server_factory):
    server = server_factory(lost_grace_secs=300, local_orphan_secs=60)
    steps = 800000
    s = server.create("admin", "heat", steps=steps)
    server.run("admin", s["id"])
    server.wait_status("admin", s["id"], "running")
    wait_for(lambda: server.job("admin", s["id"])["frames"] >= 5, what="some frames")
    old = _agent(server)
    os.kill(old["pid"], signal.SIGKILL)
    j = server.wait_status("admin", s["id"], ("completed", "error", "canceled"), 90)
    assert j["status"] == "completed", j
    assert _agent(server)["pid"] != old["pid"]
    f = server.api("GET", f"/simulations/{s['id']}/frames", expect=200).json()["frames"]
    assert len(f) == j["frames"]
    st = [x["step"] for x in f]
    assert st == sorted(set(st)) and st[0] == 0 and st[-1] == steps


def test_no_new_agent_ends_the_run_at_once_and_leaves_nothing(server_factory):
    # a long orphan window: ending now is the supervisor's word, not the keeper's
    server = server_factory(lost_grace_secs=300, local_orphan_secs=120)
    s = server.create("admin", "forker", children=3, secs=600)
    server.run("admin", s["id"])
    server.wait_status("admin", s["id"], "running")
    a = _agent(server)
    # the new agent cannot start: its log file cannot be opened
    lp = server.data_dir / "log" / f"agent-{a['id']}.log"
    lp.unlink()
    lp.mkdir()
    _, pids, d = _kill_agent_under_children(server, s["id"])
    j = server.wait_status("admin", s["id"], ("error", "completed", "canceled"), 20)
    assert j["status"] == "error", j
    assert "agent exited with code -9" in j["error"], j
    assert "a new agent could not start" in j["error"], j
    wait_for(lambda: not procs_under(d), 10, what="no process of the run")
    assert not any(_alive(p) for p in pids)
    assert server.api("GET", "/admin/agents", expect=200).json() == []
    lp.rmdir()


def test_an_agent_stopped_on_purpose_ends_its_runs(server_factory):
    """SIGTERM is a stop: the runs are canceled, no new agent re-attaches them."""
    server = server_factory(local_orphan_secs=60)
    s = server.create("admin", "forker", children=3, secs=600)
    server.run("admin", s["id"])
    server.wait_status("admin", s["id"], "running")
    d = server.data_dir / "run" / "admin" / s["id"]
    wait_for(lambda: len(procs_under(d)) >= 4, what="the run's processes")
    a = _agent(server)
    os.kill(a["pid"], signal.SIGTERM)
    j = server.wait_status("admin", s["id"], ("error", "completed", "canceled"), 20)
    assert j["status"] == "canceled", j
    wait_for(lambda: not procs_under(d), 10, what="no process of the run")
    wait_for(
        lambda: server.api("GET", "/admin/agents", expect=200).json() == [],
        10,
        what="no agent",
    )


# --- the agent alone -----------------------------------------------------------

#: a pool in a process of its own, SIGKILLed by the test once its run is going
_ABANDONED = """
    import asyncio, sys
    from agent import pool
    from agent_ops import run_op

    async def main():
        runs, work, orphan, secs = sys.argv[1:5]
        p = pool.Pool(
            runs, 0.5, 4, 2, lambda r, k: None,
            work_dir=work, owner="a1", orphan_secs=float(orphan),
        )
        r = p.start(run_op("r1", sys.argv[5:], params={"children": 2, "secs": float(secs)}))
        while "children" not in r.log.text_from(0, 1000)[1]:
            await asyncio.sleep(0.01)
        print("going", flush=True)
        await asyncio.sleep(60)

    asyncio.run(main())
"""


def _abandon(runs, work, orphan_secs, secs):
    """A forker run of a pool in another process, SIGKILLed once the run is going."""
    x = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(_ABANDONED),
            *map(str, (runs, work, orphan_secs, secs)),
            *_FORKER,
        ],
        stdout=subprocess.PIPE,
        env=dict(os.environ, PYTHONPATH=f"{ROOT}:{ROOT / 'tests'}"),
        start_new_session=True,
    )
    try:
        assert x.stdout.readline() == b"going\n"
    finally:
        x.kill()
        x.wait()
        x.stdout.close()


async def test_a_new_pool_reattaches_a_live_run_and_its_output(tmp_path):
    runs, work = tmp_path / "runs", tmp_path / "work"
    _abandon(runs, work, orphan_secs=30, secs=3)
    ev = Events()
    p = pool.Pool(runs, 0.5, 4, 2, ev, work_dir=work, owner="a2", orphan_secs=30)
    try:
        p.reattach()
        r = p.runs["r1"]
        assert r.state == "running" and _alive(r.pid)
        # what the dead pool had is there before anything new comes
        assert r.log.text_from(0, 1000)[1].startswith("forker: children ")
        assert r.progress == 0.5
        await asyncio.wait_for(r.ended, 20)
        assert (r.status, r.exit_code) == ("completed", 0), r.error
        t = r.log.text_from(0, 10000)[1]
        _assert_forker_log(t)
        assert r.progress == 1.0
        assert (runs / "u" / "r1" / "run.log").read_text() == t
        assert not procs_under(runs)
    finally:
        p.destroy()
        await p.join()
    # forgotten: its entry is gone with it
    assert p.forget("r1") and not (work / "runs" / "r1").exists()


async def test_a_run_that_ended_without_its_agent_is_reported_as_it_ended(tmp_path):
    runs, work = tmp_path / "runs", tmp_path / "work"
    a = pool.Pool(runs, 0.5, 4, 2, Events(), work_dir=work, owner="a1")
    code = "import sys; print('out'); print('err', file=sys.stderr); sys.exit(3)"
    r = a.start(run_op("e1", ["{python}", "-c", code]))
    await asyncio.wait_for(r.ended, 20)
    a.destroy()
    await a.join()
    b = pool.Pool(runs, 0.5, 4, 2, Events(), work_dir=work, owner="a2")
    try:
        b.reattach()
        x = b.runs["e1"]
        await asyncio.wait_for(x.ended, 20)
        assert (x.status, x.exit_code) == (r.status, r.exit_code) == ("error", 3)
        assert x.error == r.error == "err"
        assert x.log.text_from(0, 1000) == r.log.text_from(0, 1000)
    finally:
        b.destroy()
        await b.join()


async def test_an_orphaned_run_ends_after_the_window(tmp_path):
    """No new agent: the keeper ends the tree itself, and says so to a late one."""
    runs, work = tmp_path / "runs", tmp_path / "work"
    _abandon(runs, work, orphan_secs=0.5, secs=600)
    wait_for(lambda: not procs_under(runs / "u"), 10, what="the orphaned tree ended")
    p = pool.Pool(runs, 0.5, 4, 2, Events(), work_dir=work, owner="a2")
    try:
        p.reattach()
        r = p.runs["r1"]
        await asyncio.wait_for(r.ended, 20)
        assert r.status == "error" and r.exit_code == -signal.SIGKILL
        assert "no agent re-attached it within 0.5 s" in r.error
        assert "forker: children " in r.log.text_from(0, 1000)[1]
    finally:
        p.destroy()
        await p.join()


def test_a_reattached_run_killed_for_memory_says_so(server_factory):
    """The run's keeper removes its cgroup (its agent is gone): the counts a
    new agent needs for the run's end come in the keeper's status."""
    from agent import cgroup

    x = cgroup.for_agent("auto", name=f"simvisor-test-{os.getpid()}-oom")
    if "memory" not in x.parents:
        pytest.skip(f"no memory limit here: {x.describe()}")
    server = server_factory(
        basic_max_run_memory_bytes=64 * 1024 * 1024,
        lost_grace_secs=300,
        local_orphan_secs=60,
    )
    # takes its memory once the new agent holds the run
    s = server.create("admin", "memhog", mib=256, secs=5, delay=6)
    server.run("admin", s["id"])
    server.wait_status("admin", s["id"], "running")
    wait_for(lambda: "memhog: waiting" in _log(server, s["id"]), what="memhog waits")
    old = _agent(server)
    os.kill(old["pid"], signal.SIGKILL)
    wait_for(
        lambda: (a := _agent(server))["state"] == "connected"
        and a["pid"] != old["pid"]
        and a["runs"],
        30,
        what="a new agent holding the run",
    )
    j = server.wait_status("admin", s["id"], ("completed", "error", "canceled"), 60)
    assert j["status"] == "error", j
    assert j["error"].startswith(
        "out of memory: the run's memory limit of 64 MiB was reached"
    ), j
