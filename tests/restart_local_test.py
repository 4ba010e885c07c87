"""The supervisor and a local agent both killed under a run (issue 10).

A real supervisor, SIGKILLed with its user's agent, restarted on the same
data directory: the agent's process is gone, so it is started again at
once (`supervisor.restart`) and re-attaches what its run table holds; the
run does not sit `lost` for its grace period (300 s here). One still going
is re-adopted (and completes, or is canceled, leaving nothing); one whose
keeper is gone, or that ended while nobody watched, ends with its real
status or `error` with why, within seconds; if no agent can start, the run
ends `error` with the reason at once.
"""

import json
import os
import signal
import time

import pytest

from conftest import procs_under, wait_for
from reattach_test import _agent, _alive

pytestmark = pytest.mark.timeout(120)

#: the grace a lost run would wait without the restart: never reached here
_GRACE = dict(lost_grace_secs=300, local_orphan_secs=60)

#: what "promptly" is: an agent's start and hello, not a grace period
_PROMPT_SECS = 20

_ENDED = ("completed", "error", "canceled", "timed_out")


def _entry(server, user, run_id):
    """The run's entry in its agent's run table (`agent.runtable`)."""
    p = server.data_dir / "agent" / user / "runs" / run_id / "run.json"
    return json.loads(p.read_text())


def _start_run(server, code, **params):
    s = server.create("admin", code, **params)
    server.run("admin", s["id"])
    j = server.wait_status("admin", s["id"], "running")
    d = server.data_dir / "run" / "admin" / s["id"]
    wait_for(lambda: procs_under(d), what="the run's processes")
    # what a restart reads: the store's document, written after the push
    p = server.data_dir / "db" / "jobs" / "admin" / f"{s['id']}.json"
    wait_for(
        lambda: json.loads(p.read_text())["job"]["status"] == "running",
        what="the run durable",
    )
    return s["id"], j, d


def _kill_both(server):
    """SIGKILL the supervisor, then the agent; returns the agent as it was."""
    a = _agent(server)
    server.stop(signal.SIGKILL)
    os.kill(a["pid"], signal.SIGKILL)
    wait_for(lambda: not _alive(a["pid"]), 10, what="agent gone")
    return a


def _restarted_agent(server, old):
    return wait_for(
        lambda: (a := _agent(server))["state"] == "connected"
        and a["pid"] != old["pid"]
        and a,
        _PROMPT_SECS,
        what="the agent started again",
    )


def test_a_running_run_is_readopted_and_can_be_canceled(server_factory):
    server = server_factory(**_GRACE)
    i, j, d = _start_run(server, "forever")
    pids = procs_under(d)
    old = _kill_both(server)
    # the run's tree outlived both
    assert all(_alive(p) for p in pids)
    t = time.monotonic()
    server.start()
    new = _restarted_agent(server, old)
    # the same agent, started again under its id: it holds the run
    assert new["id"] == old["id"] and new["runs"] == [j["run_id"]], new
    j2 = server.wait_status("admin", i, "running", _PROMPT_SECS)
    assert time.monotonic() - t < _PROMPT_SECS
    assert j2["run_id"] == j["run_id"] and j2["wait"] is None, j2
    a = server.data_dir / "log" / f"agent-{old['id']}.log"
    assert "alive=True" in next(
        x for x in reversed(a.read_text().splitlines()) if " reattach " in x
    )
    # the re-adopted run is the agent's again: a cancel reaches its tree
    server.api("POST", f"/simulations/{i}/cancel", expect=200)
    j3 = server.wait_status("admin", i, _ENDED, 20)
    assert j3["status"] == "canceled", j3
    wait_for(lambda: not procs_under(d), 10, what="no process of the run")
    assert not any(_alive(p) for p in pids)


def test_a_readopted_run_completes(server_factory):
    server = server_factory(**_GRACE)
    i, j, _ = _start_run(server, "sleep", secs=6)
    old = _kill_both(server)
    server.start()
    _restarted_agent(server, old)
    j2 = server.wait_status("admin", i, _ENDED, 30)
    assert j2["status"] == "completed" and j2["exit_code"] == 0, j2
    assert j2["run_id"] == j["run_id"]


def test_a_run_that_ended_while_nobody_watched_ends_as_it_ended(server_factory):
    server = server_factory(**_GRACE)
    i, j, d = _start_run(server, "sleep", secs=2)
    e = _entry(server, "admin", j["run_id"])
    _kill_both(server)
    # the keeper ends with its code and writes how
    wait_for(lambda: not _alive(e["keeper_pid"]), 10, what="the run's end")
    t = time.monotonic()
    server.start()
    j2 = server.wait_status("admin", i, _ENDED, _PROMPT_SECS)
    assert time.monotonic() - t < _PROMPT_SECS
    assert j2["status"] == "completed" and j2["exit_code"] == 0, j2
    assert not procs_under(d)


def test_a_run_whose_keeper_was_killed_ends_in_error_at_once(server_factory):
    server = server_factory(**_GRACE)
    i, j, d = _start_run(server, "forever")
    e = _entry(server, "admin", j["run_id"])
    _kill_both(server)
    # the keeper too: its code dies with it (its parent-death signal)
    os.kill(e["keeper_pid"], signal.SIGKILL)
    wait_for(lambda: not procs_under(d), 10, what="the run's tree gone")
    t = time.monotonic()
    server.start()
    j2 = server.wait_status("admin", i, _ENDED, _PROMPT_SECS)
    assert time.monotonic() - t < _PROMPT_SECS
    assert j2["status"] == "error", j2
    assert "its keeper ended without a status" in j2["error"], j2


def test_no_agent_can_start_ends_the_run_in_error_at_once(server_factory):
    server = server_factory(**_GRACE)
    i, _, d = _start_run(server, "forever")
    old = _kill_both(server)
    # the new agent cannot start: its log file cannot be opened
    lp = server.data_dir / "log" / f"agent-{old['id']}.log"
    lp.unlink()
    lp.mkdir()
    t = time.monotonic()
    server.start()
    j2 = server.wait_status("admin", i, _ENDED, _PROMPT_SECS)
    assert time.monotonic() - t < _PROMPT_SECS
    assert j2["status"] == "error", j2
    assert "was gone when the supervisor restarted" in j2["error"], j2
    assert "a new agent could not start" in j2["error"], j2
    # the agent is gone for good: what it left is ended
    wait_for(lambda: not procs_under(d), 10, what="no process of the run")
    assert server.api("GET", "/admin/agents", expect=200).json() == []
    lp.rmdir()


def test_an_agent_that_reconnected_and_then_dies_is_started_again(server_factory):
    """The agent outlived the supervisor and reconnected: not the new
    supervisor's child, it is watched all the same, and its death is a crash."""
    server = server_factory(**_GRACE)
    i, j, d = _start_run(server, "forever")
    old = _agent(server)
    server.stop(signal.SIGKILL)
    server.start()
    wait_for(
        lambda: (a := _agent(server))["state"] == "connected"
        and a["pid"] == old["pid"]
        and server.job("admin", i)["status"] == "running",
        _PROMPT_SECS,
        what="the agent back",
    )
    os.kill(old["pid"], signal.SIGKILL)
    new = _restarted_agent(server, old)
    assert new["id"] == old["id"] and new["runs"] == [j["run_id"]], new
    j2 = server.wait_status("admin", i, ("running", *_ENDED), _PROMPT_SECS)
    assert j2["status"] == "running" and j2["run_id"] == j["run_id"], j2
    server.api("POST", f"/simulations/{i}/cancel", expect=200)
    assert server.wait_status("admin", i, _ENDED, 20)["status"] == "canceled"
    wait_for(lambda: not procs_under(d), 10, what="no process of the run")


def test_without_agent_restarts_the_run_ends_in_error_at_once(server_factory):
    """local_agent_restarts 0: the keepers ended their trees with the agent."""
    server = server_factory(lost_grace_secs=300, local_agent_restarts=0)
    i, _, d = _start_run(server, "forever")
    _kill_both(server)
    t = time.monotonic()
    server.start()
    j = server.wait_status("admin", i, _ENDED, _PROMPT_SECS)
    assert time.monotonic() - t < _PROMPT_SECS
    assert j["status"] == "error", j
    assert "was gone when the supervisor restarted" in j["error"], j
    wait_for(lambda: not procs_under(d), 10, what="no process of the run")
    assert server.api("GET", "/admin/agents", expect=200).json() == []
