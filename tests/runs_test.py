"""Runs end to end: a real supervisor, real local agents, real processes."""

import json
import os
import pathlib
import signal
import time

from tornado import websocket, httpclient

from conftest import procs_under, wait_for

SMALL_HEAT = {"steps": 20000}


def _alive(pid):
    try:
        s = pathlib.Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return s.rsplit(")", 1)[1].split()[0] != "Z"


def _run_dir(server, user, sim_id):
    return server.data_dir / "run" / user / sim_id


def test_heat_completes_with_frames_and_progress(server):
    s = server.create("admin", "heat", **SMALL_HEAT)
    j = server.run("admin", s["id"])
    assert j["status"] == "queued" and j["run_id"]
    j = server.wait_status("admin", s["id"], "completed")
    assert j["progress"] == 1.0
    assert j["frames"] > 2
    assert j["exit_code"] == 0
    f = server.api("GET", f"/simulations/{s['id']}/frames?since=1", expect=200).json()
    assert f["next"] == j["frames"] and len(f["frames"]) == j["frames"] - 1
    assert {"step", "time", "x", "u"} <= set(f["frames"][0])
    n = [
        x["path"]
        for x in server.api("GET", f"/simulations/{s['id']}/files", expect=200).json()[
            "files"
        ]
    ]
    assert "result.json" in n
    r = server.api("GET", f"/simulations/{s['id']}/files/result.json", expect=200)
    assert json.loads(r.content)
    assert j["history"][0]["status"] == "completed"
    assert j["history"][0]["run_id"] == j["run_id"]


def test_crash_gives_error_with_stderr(server):
    s = server.create("admin", "crash", message="boom at step 7")
    server.run("admin", s["id"])
    j = server.wait_status("admin", s["id"], ("error", "completed"))
    assert j["status"] == "error"
    assert j["exit_code"] == 3
    assert "boom at step 7" in j["error"]
    assert (
        "boom at step 7"
        in server.api("GET", f"/simulations/{s['id']}/log", expect=200).text
    )


def test_cancel_running_kills_whole_group(server):
    s = server.create("admin", "forker", children=3, secs=600)
    server.run("admin", s["id"])
    server.wait_status("admin", s["id"], "running")
    c = _run_dir(server, "admin", s["id"]) / "children.txt"
    wait_for(
        lambda: c.exists() and len(c.read_text().split()) == 3, what="children.txt"
    )
    # host pids: in the sandbox the code's own (children.txt) are its pid
    # namespace's, and bwrap is in the group too
    pids = procs_under(_run_dir(server, "admin", s["id"]))
    assert len(pids) >= 4 and all(_alive(p) for p in pids)
    t = time.monotonic()
    j = server.api("POST", f"/simulations/{s['id']}/cancel", expect=200).json()
    assert j["status"] == "canceled"
    # the reply comes once the agent confirmed the group is gone
    assert not [p for p in pids if _alive(p)]
    assert time.monotonic() - t < 5
    # idempotent
    assert (
        server.api("POST", f"/simulations/{s['id']}/cancel", expect=200).json()[
            "status"
        ]
        == "canceled"
    )


def test_cancel_queued_and_fifo(server_factory):
    server = server_factory(local_cores=1)
    a = server.create("admin", "forever")
    b = server.create("admin", "sleep", secs=0.1)
    server.run("admin", a["id"])
    server.wait_status("admin", a["id"], "running")
    server.run("admin", b["id"])
    j = server.wait_status("admin", b["id"], "queued")
    wait_for(
        lambda: "cores" in server.job("admin", b["id"])["situation"], what="situation"
    )
    j = server.api("POST", f"/simulations/{b['id']}/cancel", expect=200).json()
    assert j["status"] == "canceled"
    assert j["history"][0]["started_at"] is None
    server.api("POST", f"/simulations/{a['id']}/cancel", expect=200)
    assert server.job("admin", a["id"])["status"] == "canceled"
    # the core came back: a new run starts
    server.run("admin", b["id"])
    server.wait_status("admin", b["id"], "completed")


async def test_cancel_while_starting(server):
    """Cancel the moment the push says starting: ends canceled, nothing left."""
    s = server.create("admin", "forker", children=2, secs=600)
    # warm the agent so starting is the only wait
    w = server.create("admin", "sleep", secs=0.01)
    server.run("admin", w["id"])
    server.wait_status("admin", w["id"], "completed")
    ws = await _events(server, "admin", s["id"])
    try:
        server.run("admin", s["id"])
        while True:
            m = json.loads(await ws.read_message())
            if m["type"] == "job" and m["job"]["status"] == "starting":
                break
        j = server.api("POST", f"/simulations/{s['id']}/cancel", expect=200).json()
    finally:
        await _close(ws)
    assert j["status"] == "canceled"
    wait_for(
        lambda: not procs_under(_run_dir(server, "admin", s["id"])),
        5,
        what="no processes",
    )


def test_cancel_while_starting_agent(server):
    """A new user's first run waits for its agent; cancel it then."""
    server.add_user("carol")
    s = server.create("carol", "sleep", secs=60)
    server.run("carol", s["id"])
    j = server.api("POST", f"/simulations/{s['id']}/cancel", "carol", expect=200).json()
    assert j["status"] == "canceled"
    # the agent still starts and serves the next run
    server.run("carol", s["id"])
    server.wait_status("carol", s["id"], "running")
    server.api("POST", f"/simulations/{s['id']}/cancel", "carol", expect=200)


def test_max_run_time_gives_timed_out(server_factory):
    server = server_factory(basic_max_run_secs=1)
    server.add_user("dave")
    s = server.create("dave", "sleep", secs=600)
    server.run("dave", s["id"])
    j = server.wait_status("dave", s["id"], ("timed_out", "error", "completed"), 30)
    assert j["status"] == "timed_out"
    assert not procs_under(_run_dir(server, "dave", s["id"]))


def test_fair_between_users(server_factory):
    server = server_factory(local_cores=1)
    for u in ("ann", "ben"):
        server.add_user(u, plan="premium")
    sims = {
        u: [server.create(u, "sleep", secs=0.2)["id"] for _ in range(3)]
        for u in ("ann", "ben")
    }
    # warm both agents so agent start-up does not skew the order
    for u in ("ann", "ben"):
        server.run(u, sims[u][0])
        server.wait_status(u, sims[u][0], "completed")
    blocker = server.create("admin", "forever")["id"]
    server.run("admin", blocker)
    server.wait_status("admin", blocker, "running")
    # all of ann's first, then all of ben's: fairness interleaves them
    for u in ("ann", "ben"):
        for x in sims[u]:
            server.run(u, x)
    p = {x: server.job(u, x)["queue_position"] for u in sims for x in sims[u]}
    wait_for(
        lambda: sorted(
            (server.job(u, x)["queue_position"] or 0) for u in sims for x in sims[u]
        )
        == [1, 2, 3, 4, 5, 6],
        what="queue positions",
    )
    server.api("POST", f"/simulations/{blocker}/cancel", expect=200)
    done = {}
    for u in sims:
        for x in sims[u]:
            done[x] = (server.wait_status(u, x, "completed")["started_at"], u)
    order = [u for _, u in sorted(done.values())]
    assert order == ["ann", "ben", "ann", "ben", "ann", "ben"], (order, p)


def test_users_cannot_touch_each_other(server):
    server.add_user("eve")
    s = server.create("admin", "sleep", secs=0.1)
    for m, p in (
        ("GET", ""),
        ("PATCH", ""),
        ("DELETE", ""),
        ("POST", "/run"),
        ("POST", "/cancel"),
        ("GET", "/job"),
        ("GET", "/frames"),
        ("GET", "/log"),
        ("GET", "/files"),
        ("GET", "/files/params.json"),
    ):
        r = server.api(m, f"/simulations/{s['id']}{p}", "eve", json={})
        assert r.status_code == 404, (m, p, r.text)
        assert r.json()["error"] == "unknown_simulation"
    assert server.api("GET", "/simulations", "eve", expect=200).json() == []
    assert server.api("GET", "/simulations?user=admin", "eve").status_code == 403
    assert server.api("GET", "/admin/jobs", "eve").status_code == 403
    # and it is all still there, untouched
    assert (
        server.api("GET", f"/simulations/{s['id']}", expect=200).json()["job"]["status"]
        == "missing"
    )


async def test_events_push_every_status_in_order(server):
    s = server.create("admin", "heat", **SMALL_HEAT)
    ws = await _events(server, "admin", s["id"])
    seen = []
    frames = 0
    try:
        m = json.loads(await ws.read_message())
        assert m["type"] == "simulation" and m["simulation"]["id"] == s["id"]
        assert json.loads(await ws.read_message())["type"] == "synced"
        server.run("admin", s["id"])
        while not seen or seen[-1] != "completed":
            m = json.loads(await ws.read_message())
            if m["type"] == "job" and (not seen or seen[-1] != m["job"]["status"]):
                seen.append(m["job"]["status"])
            elif m["type"] == "frame":
                assert m["seq"] == frames
                frames += 1
    finally:
        await _close(ws)
    assert seen == ["queued", "starting", "running", "completed"]
    assert frames == server.job("admin", s["id"])["frames"]


def test_supervisor_killed_and_restarted_readopts(server):
    s = server.create("admin", "heat", steps=400000)
    server.run("admin", s["id"])
    server.wait_status("admin", s["id"], "running")
    wait_for(lambda: server.job("admin", s["id"])["frames"] >= 2, what="some frames")
    agent_pid = server.api("GET", "/admin/agents", expect=200).json()[0]["pid"]
    server.stop(signal.SIGKILL)
    assert _alive(agent_pid)
    server.start()
    j = server.job("admin", s["id"])
    assert j["status"] in ("lost", "running", "completed")
    j = server.wait_status("admin", s["id"], ("completed", "error"), 60)
    assert j["status"] == "completed", j
    f = server.api("GET", f"/simulations/{s['id']}/frames", expect=200).json()["frames"]
    assert len(f) == j["frames"]
    assert [x["step"] for x in f] == sorted(x["step"] for x in f)
    # all of them: the code emits a last frame at the final step
    assert f[-1]["step"] == 400000


def test_agent_killed_is_started_again_and_keeps_its_runs(server_factory):
    """The local driver sees its agent exit: a new one re-attaches the run (reattach_test)."""
    server = server_factory(lost_grace_secs=300, agent_start_timeout_secs=60)
    s = server.create("admin", "sleep", secs=600)
    server.run("admin", s["id"])
    server.wait_status("admin", s["id"], "running")
    a = server.api("GET", "/admin/agents", expect=200).json()[0]
    os.kill(a["pid"], signal.SIGKILL)
    b = wait_for(
        lambda: (x := server.api("GET", "/admin/agents", expect=200).json())
        and x[0]["pid"] != a["pid"]
        and x[0]["state"] == "connected"
        and x[0],
        30,
        what="the agent started again",
    )
    assert b["runs"] and server.job("admin", s["id"])["status"] == "running"
    j = server.api("POST", f"/simulations/{s['id']}/cancel", expect=200).json()
    assert j["status"] == "canceled"
    wait_for(
        lambda: not procs_under(_run_dir(server, "admin", s["id"])),
        5,
        what="no process of the run",
    )


def test_agent_killed_without_restarts_ends_its_runs_at_once(server_factory):
    """No new agent comes: no grace (keeper_test: no process left)."""
    server = server_factory(
        lost_grace_secs=300, agent_start_timeout_secs=60, local_agent_restarts=0
    )
    s = server.create("admin", "sleep", secs=600)
    server.run("admin", s["id"])
    server.wait_status("admin", s["id"], "running")
    a = server.api("GET", "/admin/agents", expect=200).json()[0]
    os.kill(a["pid"], signal.SIGKILL)
    j = server.wait_status("admin", s["id"], "error", 10)
    assert "agent exited with code -9" in j["error"], j
    wait_for(
        lambda: not procs_under(_run_dir(server, "admin", s["id"])),
        5,
        what="no process of the run",
    )


def test_agent_gone_unseen_is_started_again_and_readopts(server_factory):
    """An agent that died while no supervisor watched it is not waited for.

    Started again at once, it re-adopts the run, which does not end at the
    grace (issue 10; more in restart_local_test).
    """
    server = server_factory(lost_grace_secs=2, agent_start_timeout_secs=60)
    s = server.create("admin", "sleep", secs=600)
    server.run("admin", s["id"])
    j = server.wait_status("admin", s["id"], "running")
    p = server.data_dir / "db" / "jobs" / "admin" / f"{s['id']}.json"
    wait_for(lambda: json.loads(p.read_text())["job"]["status"] == "running")
    a = server.api("GET", "/admin/agents", expect=200).json()[0]
    server.stop(signal.SIGKILL)
    os.kill(a["pid"], signal.SIGKILL)
    server.start()
    j2 = server.wait_status("admin", s["id"], ("running", "error"), 30)
    assert j2["status"] == "running" and j2["run_id"] == j["run_id"], j2


def test_analysis_of_a_finished_run(server_factory):
    server = server_factory(local_cores=1)
    h = server.create("admin", "heat", **SMALL_HEAT)
    server.run("admin", h["id"])
    server.wait_status("admin", h["id"], "completed")
    # the analysis lane does not wait behind a run holding every core
    f = server.create("admin", "forever")
    server.run("admin", f["id"])
    server.wait_status("admin", f["id"], "running")
    a = server.create("admin", "stats", source=h["id"])
    server.run("admin", a["id"])
    j = server.wait_status("admin", a["id"], ("completed", "error"))
    assert j["status"] == "completed", j
    assert server.api("GET", f"/simulations/{a['id']}/frames", expect=200).json()[
        "frames"
    ]
    server.api("POST", f"/simulations/{f['id']}/cancel", expect=200)


async def _events(server, user, sim_id=None):
    q = f"?simulation={sim_id}" if sim_id else ""
    return await websocket.websocket_connect(
        httpclient.HTTPRequest(
            server.url.replace("http", "ws") + "/api/events" + q,
            headers={"Authorization": "Bearer " + server.tokens[user]},
        )
    )


async def _close(ws):
    """Close and wait until the connection is really gone (no socket leak)."""
    ws.close()
    while await ws.read_message() is not None:
        pass


def test_sigterm_stops_quickly_and_runs_survive(server):
    s = server.create("admin", "heat", steps=300000)
    server.run("admin", s["id"])
    server.wait_status("admin", s["id"], "running")
    t = time.monotonic()
    server.stop(signal.SIGTERM)
    assert time.monotonic() - t < 5
    assert procs_under(
        _run_dir(server, "admin", s["id"])
    ), "the simulation kept running"
    server.start()
    j = server.wait_status("admin", s["id"], ("completed", "error"), 60)
    assert j["status"] == "completed", j
    assert j["frames"] == len(
        server.api("GET", f"/simulations/{s['id']}/frames", expect=200).json()["frames"]
    )


def test_idle_agent_exits_with_the_supervisor(server):
    """An agent with no run does not outlive a stopped supervisor (issue 10)."""
    s = server.create("admin", "sleep", secs=0.01)
    server.run("admin", s["id"])
    server.wait_status("admin", s["id"], "completed")
    (a,) = server.api("GET", "/admin/agents", expect=200).json()
    assert _alive(a["pid"])
    server.stop(signal.SIGTERM)
    wait_for(lambda: not _alive(a["pid"]), 10, what="idle agent exits")
    # and the next start does not wait for it
    server.start()
    assert server.api("GET", "/admin/agents", expect=200).json() == []


def test_agent_start_timeout_tells_waiting_jobs(server_factory):
    # no agent can call back within 10 ms: the job is told why
    server = server_factory(agent_start_timeout_secs=0.01)
    s = server.create("admin", "sleep", secs=1)
    server.run("admin", s["id"])
    j = server.wait_status("admin", s["id"], ("error", "completed"))
    assert j["status"] == "error"
    assert "did not call back" in j["error"]


def test_idle_agent_is_reaped_and_restarted(server_factory):
    server = server_factory(agent_idle_secs=1)
    s = server.create("admin", "sleep", secs=0.01)
    server.run("admin", s["id"])
    server.wait_status("admin", s["id"], "completed")
    a = server.api("GET", "/admin/agents", expect=200).json()
    assert len(a) == 1
    wait_for(
        lambda: not server.api("GET", "/admin/agents").json(), 10, what="agent reaped"
    )
    wait_for(lambda: not _alive(a[0]["pid"]), 10, what="agent process gone")
    server.run("admin", s["id"])
    server.wait_status("admin", s["id"], "completed")


def test_new_run_supersedes_the_running_one(server):
    s = server.create("admin", "forever")
    j1 = server.run("admin", s["id"])
    server.wait_status("admin", s["id"], "running")
    d = _run_dir(server, "admin", s["id"])
    old = wait_for(lambda: procs_under(d), what="the first run's processes")
    j2 = server.run("admin", s["id"])
    assert j2["run_id"] > j1["run_id"]
    j = server.wait_status("admin", s["id"], "running")
    assert j["run_id"] == j2["run_id"]
    assert j["history"][0]["status"] == "canceled"
    assert "superseded" in j["history"][0]["error"]
    # the first run's processes (bwrap's too, in the sandbox) are gone, the
    # second's are there
    wait_for(
        lambda: not [p for p in old if _alive(p)] and procs_under(d),
        10,
        what="only the second run's processes",
    )
    server.api("POST", f"/simulations/{s['id']}/cancel", expect=200)


def test_admin_sees_and_cancels_anyones_run(server):
    server.add_user("fay")
    s = server.create("fay", "forever")
    server.run("fay", s["id"])
    server.wait_status("fay", s["id"], "running")
    jobs = server.api("GET", "/admin/jobs", expect=200).json()
    assert [(x["user"], x["simulation"], x["status"]) for x in jobs] == [
        ("fay", s["id"], "running")
    ]
    h = server.api("GET", "/admin/hosts", expect=200).json()
    assert h[0]["cores_used"] == 1
    assert (
        server.api("GET", "/simulations?user=fay", expect=200).json()[0]["id"]
        == s["id"]
    )
    j = server.api("POST", f"/admin/jobs/{s['id']}/cancel", expect=200).json()
    assert j["status"] == "canceled" and "admin" in j["error"]
    assert server.api("GET", "/admin/hosts", expect=200).json()[0]["cores_used"] == 0


def test_admin_kills_agent_runs_end_canceled(server):
    s = server.create("admin", "forever")
    server.run("admin", s["id"])
    server.wait_status("admin", s["id"], "running")
    a = server.api("GET", "/admin/agents", expect=200).json()[0]
    assert a["state"] == "connected" and a["runs"]
    server.api("POST", f"/admin/agents/{a['id']}/kill", expect=200)
    j = server.wait_status("admin", s["id"], "canceled")
    assert "killed" in j["error"]
    wait_for(
        lambda: not procs_under(_run_dir(server, "admin", s["id"])),
        10,
        what="no processes",
    )


def test_drained_host_takes_no_new_work(server):
    server.api("POST", "/admin/hosts/localhost/drain", json={"drain": True}, expect=200)
    s = server.create("admin", "sleep", secs=0.01)
    server.run("admin", s["id"])
    wait_for(
        lambda: "draining" in server.job("admin", s["id"])["situation"],
        what="draining situation",
    )
    server.api(
        "POST", "/admin/hosts/localhost/drain", json={"drain": False}, expect=200
    )
    server.wait_status("admin", s["id"], "completed")


def test_restart_survives_a_job_it_cannot_recover(server):
    server.cfg["basic_max_running"] = 1
    server.stop()
    server.start()
    a = server.create("admin", "sleep", secs=600)["id"]
    b = server.create("admin", "forever")["id"]
    server.run("admin", a)
    server.wait_status("admin", a, "running")
    server.run("admin", b)
    wait_for(
        lambda: "running jobs" in server.job("admin", b)["situation"], what="b waits"
    )
    server.stop()
    # the test codes are gone from the catalog: b cannot be requeued
    server.test_codes = False
    server.start()
    j = server.job("admin", b)
    assert j["status"] == "error" and "forever" in j["error"]
    # the run that was going is re-adopted all the same
    server.wait_status("admin", a, "running")
    server.api("POST", f"/simulations/{a}/cancel", expect=200)
    assert server.job("admin", a)["status"] == "canceled"
