"""Review of issue 13 (sweeps, the store's journal, corked pushes, executors): defects.

Each test reproduces one defect against a real supervisor (`conftest.Server`)
and fails until it is fixed. Every test cancels what it started before the
fixture's cleanup.
"""

import json
import os
import signal
import socket
import time

import pytest
import requests

from conftest import wait_for
from supervisor import client, journal
from tests.events_test import RawEvents


def _sweep(server, user, expect=202, **body):
    return server.api("POST", "/sweeps", user, json=body, expect=expect).json()


def _metric(server, name):
    for line in requests.get(server.url + "/metrics", timeout=10).text.splitlines():
        k, _, v = line.partition(" ")
        if k in (name, name + "_total"):
            return float(v)
    raise AssertionError(f"no metric {name}")


def _journaled_keys(db):
    """Keys of the records the journal files hold (what may be unsynced)."""
    keys = set()
    for p in sorted(db.glob(journal.NAME + ".*")):
        for k, _ in journal.records(p.read_bytes()):
            keys.add(k)
    return keys


# --- 1. durability --------------------------------------------------------------


def test_a_replay_that_fails_on_a_full_disk_keeps_the_journal(server_factory, tmp_path):
    """journal.Journal.replay logs a record it could not write and then removes
    every journal file anyway: after a power cut (documents written since the
    last checkpoint empty) and a start on a full disk, the acknowledged user
    and sweep are gone for good, even once the disk has room again."""
    import small_disk

    d = tmp_path / "data"
    with small_disk.mounted(d / "db", "2m") as db:
        s = server_factory(data_dir=d)
        w = None
        try:
            s.add_user("alice")
            w = _sweep(s, "alice", code="sleep", axes={"secs": [0.2] * 3})
            s.stop(signal.SIGKILL)
            # a power cut: what the journal holds may not have reached the disk
            keys = _journaled_keys(db)
            assert "users.json" in keys or any("sweeps/" in k for k in keys), keys
            for k in keys:
                if (db / k).exists():
                    os.truncate(db / k, 0)
            small_disk.fill(db)
            try:
                # it may start, or fail to: either is fair on a full disk
                s.start()
                s.stop()
            except AssertionError:
                s.proc = None
            small_disk.free(db)
            s.start()
            # acknowledged (201, 202) before the crash: must still be there
            r = s.api("GET", f"/sweeps/{w['id']}", "alice")
            assert r.status_code == 200, r.text
            assert r.json()["size"] == 3
        finally:
            # (the admin may be gone too: no API at the end, only its processes)
            s.stop()
            s.cleanup()


def test_deleting_a_sweep_is_not_one_journal_commit_per_member(server_factory):
    """Sweeps.delete deletes member after member (`SimStore.delete`), and each
    `Store.call` (the rmtree of its run and inputs directories) closes the
    open batch: every member's delete is a journal append and fdatasync of
    its own (10,000 members: tens of seconds on a busy disk, during which a
    SIGTERM waits), where create and cancel of the same sweep take two."""
    s = server_factory()
    s.add_user("alice", plan="premium")
    n = 400
    c0 = _metric(s, "simvisor_store_commits")
    w = _sweep(s, "alice", code="sleep", axes={"secs": [600] * n}, max_parallel=1)
    s.api("POST", f"/sweeps/{w['id']}/cancel", "alice", expect=200)
    made = _metric(s, "simvisor_store_commits") - c0
    c0 = _metric(s, "simvisor_store_commits")
    s.api("DELETE", f"/sweeps/{w['id']}", "alice", expect=200)
    deleted = _metric(s, "simvisor_store_commits") - c0
    assert (
        deleted < n / 10
    ), f"delete: {deleted} commits for {n} members (create+cancel: {made})"


# --- 2. events ------------------------------------------------------------------


def test_a_burst_of_members_keeps_a_stalled_subscriber_in_its_bound(server_factory):
    """Subscriber.push corks every frame of a turn of the loop without
    coalescing or counting it against ``max_event_queue_bytes``; a sweep's
    create publishes one ``simulation`` message per member in one turn, so a
    client that reads nothing gets megabytes put in the server's stream
    buffer (per subscriber), past the bound that should have resynced it."""
    s = server_factory(max_event_queue_bytes=8192)
    s.add_user("alice", plan="premium")
    c = RawEvents(s.url, s.tokens["alice"], rcvbuf=4096)
    c.handshake()
    assert c.read()["type"] == "synced"
    w = _sweep(s, "alice", code="sleep", axes={"secs": [600] * 3000}, max_parallel=1)
    try:
        c.sock.settimeout(5)
        live = 0
        try:
            while (m := c.read()) is not None and m["type"] != "resync":
                live += len(events_bytes(m))
        except socket.timeout:
            pass
    finally:
        c.close()
        s.api("POST", f"/sweeps/{w['id']}/cancel", "alice", expect=200)
    # the bound, the kernel's buffers (both ends) and some slack
    assert live < 512 * 1024, f"{live} bytes of live pushes before any resync"


def events_bytes(msg):
    return json.dumps(msg, separators=(",", ":")).encode()


# --- 3. API -----------------------------------------------------------------------


def test_a_bad_member_of_a_simulation_or_file_parameter_is_named(server_factory):
    """Sweeps.create checks `check_sources` (simulation and library-file
    parameters) after `sweep_axes.expand`, without the member's position:
    "one bad value refuses the whole sweep with its position named"."""
    s = server_factory()
    s.add_user("alice")
    src = s.create("alice", "sleep", secs=0)["id"]
    r = _sweep(s, "alice", 400, code="stats", axes={"source": [src, "nope"]})
    assert r["error"] == "bad_param", r
    assert "member 1" in r["message"], r
    r = _sweep(s, "alice", 400, code="lammps-deck", axes={"potential": ["nope"]})
    assert "member 0" in r["message"], r


def test_a_sweep_name_is_checked_as_a_simulation_name(server_factory):
    """sweeps._name only strips and cuts: a name with control characters
    (a NUL) is taken, and every member, an ordinary simulation, gets a name
    that ``POST /simulations`` refuses (``bad_name``: printable text)."""
    s = server_factory()
    s.add_user("alice")
    r = s.api("POST", "/simulations", "alice", json={"code": "sleep", "name": "x\x00y"})
    assert r.status_code == 400 and r.json()["error"] == "bad_name", r.text
    r = s.api(
        "POST",
        "/sweeps",
        "alice",
        json={"code": "sleep", "axes": {"secs": [0]}, "name": "x\x00y"},
    )
    if r.status_code == 202:
        s.api("POST", f"/sweeps/{r.json()['id']}/cancel", "alice")
    assert r.status_code == 400 and r.json()["error"] == "bad_name", r.text


# --- 4. the executor -------------------------------------------------------------


def test_a_future_whose_member_was_deleted_while_reconnecting_ends(server):
    """The executor's Tracker ends a future on a pushed deletion, but a
    snapshot after a reconnect that lacks the member (deleted meanwhile)
    says nothing to it: the future never ends, and leaving the ``with``
    block hangs."""
    tok = server.add_user("alice")
    r = client.Reconnect(first_delay_secs=6, max_delay_secs=6)
    with client.Client(server.url, tok, reconnect=r) as c:
        ex = c.executor("sleep")
        try:
            # connected: a deletion ends the future
            f = ex.submit(secs=600)
            wait_for(lambda: f.simulation, 30, what="its member")
            server.api("DELETE", f"/sweeps/{f.sweep_id}", "alice", expect=200)
            with pytest.raises(client.Error):
                f.result(20)
            f = ex.submit(secs=600)
            wait_for(
                lambda: f.simulation
                and c.simulation(f.simulation).status() == "running",
                30,
                what="running",
            )
            # the events stream is lost; the deletion happens before it is back
            server.stop()
            server.start()
            server.api("DELETE", f"/sweeps/{f.sweep_id}", "alice", expect=200)
            # (its cancel, then its deletion: RunFailed or ApiError)
            with pytest.raises(client.Error):
                f.result(30)
        finally:
            ex.shutdown(wait=False, cancel_futures=True)


# --- 3b. retry, cancel and a restart ---------------------------------------------


def test_a_member_its_user_canceled_does_not_run_again_after_a_restart(server):
    """A second retry moves ``retry_at`` on while a member of the first is
    still running and stays in ``Sweep.retry``; canceled then by its user
    (``POST /simulations/{id}/cancel``), it is left alone until a restart,
    where `sweeps._due` (queued before the last retry, failed, in retry)
    hands it over again: a run nobody asked for."""
    server.add_user("alice")
    w = _sweep(server, "alice", code="sleep", axes={"secs": [600, 0.1]})["id"]

    def counts():
        return server.api("GET", f"/sweeps/{w}", "alice", expect=200).json()["counts"]

    try:
        wait_for(lambda: counts().get("running") and counts().get("completed"), 60)
        server.api("POST", f"/sweeps/{w}/cancel?members=0", "alice", expect=200)
        server.api("POST", f"/sweeps/{w}/retry", "alice", expect=200)
        sid = server.api("GET", f"/sweeps/{w}", "alice").json()["members"][0]
        sid = sid["simulation"]
        server.wait_status("alice", sid, "running", 60)
        r = server.api("POST", f"/sweeps/{w}/retry", "alice", expect=200).json()
        assert r["retried"] == 0
        server.api("POST", f"/simulations/{sid}/cancel", "alice", expect=200)
        server.wait_status("alice", sid, "canceled")
        assert counts() == {"canceled": 1, "completed": 1}
        server.stop()
        server.start()
        # give the restarted sweep its chance to hand members over
        wait_for(lambda: server.api("GET", "/health", None).ok, 10)
        server.api("GET", f"/sweeps/{w}", "alice", expect=200)
        time.sleep(2)
        assert counts() == {"canceled": 1, "completed": 1}
        assert server.job("alice", sid)["status"] == "canceled"
    finally:
        server.api("POST", f"/sweeps/{w}/cancel", "alice")
