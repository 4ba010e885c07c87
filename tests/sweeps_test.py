"""Sweeps end to end on the local driver: many ordinary runs, one request, one object."""

import csv
import io
import time

from conftest import procs_under, wait_for


def _create(server, user, expect=202, **body):
    return server.api("POST", "/sweeps", user, json=body, expect=expect).json()


def _get(server, user, sweep_id):
    return server.api("GET", f"/sweeps/{sweep_id}", user, expect=200).json()


def _wait_done(server, user, sweep_id, timeout_secs=120):
    return wait_for(
        lambda: (d := _get(server, user, sweep_id))["status"] != "running" and d,
        timeout_secs,
        interval_secs=0.1,
        what=f"sweep {sweep_id} done",
    )


def test_every_member_runs_and_another_user_gets_its_turn(server_factory):
    s = server_factory(local_cores=2)
    s.add_user("alice")
    s.add_user("bob")
    w = _create(
        s,
        "alice",
        code="sleep",
        axes={"secs": {"start": 0.0, "stop": 0.05, "num": 200}},
        name="naps",
    )
    assert w["members"] == 200 and w["status"] == "running"
    assert w["axes"][0]["name"] == "secs" and len(w["axes"][0]["values"]) == 200
    # while the sweep holds both cores, bob's single run starts at its turn
    wait_for(lambda: _get(s, "alice", w["id"])["counts"].get("running"), 30)
    b = s.create("bob", "sleep", secs=0.01)
    t = time.time()
    s.run("bob", b["id"])
    j = s.wait_status("bob", b["id"], "completed", 30)
    d = _wait_done(s, "alice", w["id"])
    assert d["counts"] == {"completed": 200}, d["counts"]
    assert d["done"] == 200 and d["progress"] == 1.0 and d["status"] == "done"
    ends = []
    for i, m in enumerate(d["members"]):
        assert m["index"] == i and m["status"] == "completed"
        assert m["params"] == {"secs": d["axes"][0]["values"][i]}
        # an ordinary simulation of alice's
        x = s.api("GET", f"/simulations/{m['simulation']}", "alice", expect=200).json()
        assert x["sweep"] == {"id": w["id"], "index": i}
        assert x["params"]["secs"] == m["params"]["secs"]
        ends.append(x["job"]["ended_at"])
    assert j["started_at"] < max(ends), "bob waited for the whole sweep"
    assert j["started_at"] - t < 10
    # members in order: the first ones first
    assert d["members"][0]["simulation"] != d["members"][1]["simulation"]
    # nobody else sees it
    s.api("GET", f"/sweeps/{w['id']}", "bob", expect=404)
    assert s.api("GET", "/sweeps", "bob", expect=200).json() == []
    (x,) = s.api("GET", "/sweeps", "alice", expect=200).json()
    assert x["id"] == w["id"] and x["members"] == 200
    # the list of simulations with or without the members
    assert len(s.api("GET", "/simulations", "alice", expect=200).json()) == 200
    assert s.api("GET", "/simulations?members=0", "alice", expect=200).json() == []
    s.api("GET", "/simulations?members=2", "alice", expect=400)
    # the table as CSV
    r = s.api("GET", f"/sweeps/{w['id']}/results.csv", "alice", expect=200)
    rows = list(csv.reader(io.StringIO(r.text)))
    assert rows[0][:4] == ["index", "simulation", "status", "secs"]
    assert len(rows) == 201 and rows[1][2] == "completed"


def test_one_bad_member_refuses_the_whole_sweep(server_factory):
    s = server_factory()
    s.add_user("alice")
    n = len(s.api("GET", "/simulations", "alice", expect=200).json())
    r = _create(s, "alice", 400, code="sleep", axes={"secs": [0.1, 0.2, -1]})
    assert r["error"] == "bad_param" and "member 2 (secs=-1)" in r["message"], r
    r = _create(s, "alice", 400, code="sleep", axes={"nope": [1]})
    assert r["error"] == "unknown_param", r
    r = _create(s, "alice", 400, code="nope", axes={"secs": [1]})
    assert r["error"] == "unknown_code", r
    r = _create(s, "alice", 400, code="sleep", axes={"secs": [1]}, driver="nope")
    assert r["error"] == "unknown_driver", r
    r = _create(s, "alice", 400, code="sleep", axes={"secs": [1]}, extra=1)
    assert r["error"] == "unknown_field", r
    r = _create(s, "alice", 400, code="sleep", axes={"secs": [1]}, max_parallel=0)
    assert r["error"] == "bad_max_parallel", r
    # past what the plan keeps: nothing is made
    r = _create(
        s,
        "alice",
        409,
        code="sleep",
        axes={"secs": {"start": 0, "stop": 1, "num": 1001}},
    )
    assert r["error"] == "too_many_simulations", r
    assert len(s.api("GET", "/simulations", "alice", expect=200).json()) == n
    assert s.api("GET", "/sweeps", "alice", expect=200).json() == []


def test_cancel_in_the_middle_stops_every_member(server_factory):
    s = server_factory()
    s.add_user("alice")
    w = _create(s, "alice", code="sleep", axes={"secs": [60] * 20}, max_parallel=2)
    wait_for(lambda: _get(s, "alice", w["id"])["counts"].get("running") == 2, 30)
    d = _get(s, "alice", w["id"])
    # the limit holds: 2 in flight, the rest not handed over yet
    assert d["counts"] == {"running": 2, "pending": 18}, d["counts"]
    t = time.monotonic()
    c = s.api("POST", f"/sweeps/{w['id']}/cancel", "alice", json={}, expect=200).json()
    assert time.monotonic() - t < 10
    assert c["status"] == "canceled" and c["counts"] == {"canceled": 20}, c
    # each change is later than the last (a client keeps the newest summary)
    assert w["updated"] < d["updated"] < c["updated"]
    d = _get(s, "alice", w["id"])
    assert {m["status"] for m in d["members"]} == {"canceled"}
    assert sum("before it ran" in (m["error"] or "") for m in d["members"]) == 18
    for m in d["members"]:
        assert not procs_under(s.data_dir / "run" / "alice" / m["simulation"])
    # nothing starts afterwards
    time.sleep(0.5)
    assert _get(s, "alice", w["id"])["counts"] == {"canceled": 20}


def test_retry_runs_the_failed_members_again(server_factory):
    s = server_factory()
    s.add_user("alice")
    w = _create(s, "alice", code="crash", axes={"message": ["a", "b", "c"]})
    d = _wait_done(s, "alice", w["id"])
    assert d["counts"] == {"error": 3}, d["counts"]
    r = s.api("POST", f"/sweeps/{w['id']}/retry", "alice", json={}, expect=200).json()
    assert r["retried"] == 3
    d = _wait_done(s, "alice", w["id"])
    assert d["counts"] == {"error": 3}
    for m in d["members"]:
        j = s.job("alice", m["simulation"])
        assert [h["status"] for h in j["history"]] == ["error", "error"], j
    # a canceled sweep goes on where it stopped
    w = _create(s, "alice", code="sleep", axes={"secs": [0.5] * 6}, max_parallel=1)
    wait_for(lambda: _get(s, "alice", w["id"])["counts"].get("running"), 30)
    s.api("POST", f"/sweeps/{w['id']}/cancel", "alice", json={}, expect=200)
    r = s.api("POST", f"/sweeps/{w['id']}/retry", "alice", json={}, expect=200).json()
    assert r["retried"] == 6 and r["status"] == "running"
    d = _wait_done(s, "alice", w["id"], 60)
    assert d["counts"] == {"completed": 6}, d["counts"]


def test_a_sweep_goes_on_after_a_restart_and_is_deleted_whole(server_factory):
    s = server_factory()
    s.add_user("alice")
    w = _create(s, "alice", code="sleep", axes={"secs": [0.3] * 6}, max_parallel=1)
    wait_for(lambda: _get(s, "alice", w["id"])["counts"].get("completed"), 30)
    s.stop()
    s.start()
    d = _wait_done(s, "alice", w["id"], 60)
    assert d["counts"] == {"completed": 6}, d["counts"]
    ids = [m["simulation"] for m in d["members"]]
    r = s.api("DELETE", f"/sweeps/{w['id']}", "alice", expect=200).json()
    assert r == {"deleted": w["id"], "simulations": 6}
    s.api("GET", f"/sweeps/{w['id']}", "alice", expect=404)
    for i in ids:
        s.api("GET", f"/simulations/{i}", "alice", expect=404)
