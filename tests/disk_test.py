"""A full disk under a real supervisor: 507s, nothing partial, degraded, recovered.

The store (``db/``) and the uploads (``inputs/``) are small tmpfs mounts
(`small_disk`), filled and then freed while the service runs.
"""

import json

import pytest
import requests

import small_disk
from conftest import wait_for


@pytest.fixture
def full_disk_server(server_factory, tmp_path):
    d = tmp_path / "data"
    with (
        small_disk.mounted(d / "db", "2m") as db,
        small_disk.mounted(d / "inputs", "2m") as inputs,
    ):
        s = server_factory(data_dir=d)
        try:
            yield s, (db, inputs)
        finally:
            # before the unmount: nothing of ours holds the mounts then
            s.cleanup()


def _health(server):
    return requests.get(server.url + "/api/health", timeout=5).json()


def _metric(server, name):
    t = requests.get(server.url + "/metrics", timeout=5).text
    for line in t.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"no {name} in {t}")


def test_full_disk_is_a_507_and_the_writes_land_later(full_disk_server):
    server, disks = full_disk_server
    sid = server.create("admin", "sleep", secs=0.01)["id"]
    server.api("POST", f"/simulations/{sid}/files?name=a.txt", data=b"a", expect=201)
    assert "degraded" not in _health(server)
    for d in disks:
        small_disk.fill(d)
    # an edit is kept, and written once there is room
    r = server.api("PATCH", f"/simulations/{sid}", json={"name": "later"}, expect=507)
    assert r.json()["error"] == "insufficient_storage", r.text
    r = server.api(
        "POST", "/simulations", json={"code": "sleep", "params": {}}, expect=507
    )
    assert r.json()["error"] == "insufficient_storage", r.text
    # refused: not kept, so a retry makes no second one
    assert [s["id"] for s in server.api("GET", "/simulations").json()] == [sid]
    r = server.api(
        "POST", f"/simulations/{sid}/files?name=b.txt", data=b"b" * 10_000, expect=507
    )
    assert r.json()["error"] == "insufficient_storage", r.text
    # nothing partial: no half upload, no temp file
    i = server.data_dir / "inputs" / "admin" / sid
    assert sorted(p.name for p in i.iterdir()) == ["a.txt"]
    assert not list((server.data_dir / "db").rglob("*.tmp"))
    # said, while it lasts: health, metrics, one log line
    h = _health(server)
    assert h["ok"] and "store" in h["degraded"], h
    assert _metric(server, "simvisor_store_write_failures_total") >= 1
    assert _metric(server, "simvisor_store_dirty_documents") >= 1
    assert server.log_path.read_text().count("store write failed") == 1
    for d in disks:
        small_disk.free(d)
    wait_for(lambda: "degraded" not in _health(server), 30, what="writes landed")
    assert _metric(server, "simvisor_store_dirty_documents") == 0
    # the edit made while the disk was full is on disk now
    p = server.data_dir / "db" / "jobs" / "admin" / f"{sid}.json"
    assert json.loads(p.read_bytes())["name"] == "later"
    server.api("POST", f"/simulations/{sid}/files?name=b.txt", data=b"b", expect=201)


async def test_frames_and_log_catch_up_after_a_full_disk(tmp_path, capfd):
    """A run's frames and log: no torn line, held while full, then written."""
    from supervisor import config, sim_store, store, users

    with small_disk.mounted(tmp_path / "data") as d:
        cfg = config.load(data_dir=str(d))
        st = store.Store(d)
        ss = sim_store.SimStore(cfg, st)
        try:
            u = users.User({"name": "alice"})
            sim = ss.create(u, "heat", "h", {})
            ss.new_run(sim)
            sim.job.queue("r-000001", 1, "local", "run", 0.0)
            ss.add_frame(sim, 0, {"i": 0})
            ss.add_log(sim, 0, "line 0\n")
            small_disk.fill(d)
            # a frame bigger than a page: the disk takes part of it, or none
            ss.add_frame(sim, 1, {"i": 1, "pad": "x" * 20_000})
            ss.add_frame(sim, 2, {"i": 2})
            # more than the slack in the file's last page
            line1 = "l" * 5000 + "\n"
            ss.add_log(sim, 7, line1)
            assert st.dirty() == 2 and st.health() is not None
            frames = d / "db" / "jobs" / "alice" / f"{sim.id}.r-000001.frames.jsonl"
            assert frames.read_bytes() == b'{"i":0}\n', "no torn line"
            small_disk.free(d)
            ss.add_frame(sim, 3, {"i": 3})
            ss.add_log(sim, 7 + len(line1), "line 2\n")
            assert st.dirty() == 0 and st.health() is None
            ss.end_run(sim)
            await ss.save(sim)
            # a restart reads them all back
            ss2 = sim_store.SimStore(cfg, st)
            again = ss2.load()
            text = ss2.frames_text(again[0])
            assert [json.loads(x)["i"] for x in text.splitlines()] == [0, 1, 2, 3]
            assert again[0].log_tail == "line 0\n" + line1 + "line 2\n"
            err = capfd.readouterr().err
            assert err.count("store write failed") == 1, err
            assert err.count("store writes recovered") == 1, err
        finally:
            ss.destroy()
            st.destroy()
