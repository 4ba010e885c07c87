"""Review of the volume storage of Docker hosts and of site files (defects).

Each test reproduces one defect against a real supervisor, real agents and
(for the docker ones) a private dockerd over TCP with TLS, as
docker_volume_test.py does.
"""

import asyncio
import hashlib
import json
import os

import pytest
import requests

import docker_test
import docker_volume_test
import staging_test
from agent import staging
from conftest import ROOT, Server, wait_for

docker_server = docker_test.docker_server
engine = docker_volume_test.engine

_MIB = 1024 * 1024


def _catalog(tmp_path, site=None, extra=()):
    """etc/codes.json with checksum's ``site`` replaced (if given) and
    `extra` codes added; the path of the copy."""
    doc = json.loads((ROOT / "etc" / "codes.json").read_text())
    for c in doc["codes"]:
        if c["name"] == "checksum" and site is not None:
            for p in c["params"]:
                if p["name"] == "data":
                    p["site"] = site
                    if not site:
                        del p["site"]
    doc["codes"] += list(extra)
    p = tmp_path / "codes.json"
    p.write_text(json.dumps(doc))
    return p


def _script_code(name, lines, file_param=False):
    """A test code running a brace-free Python script in its run directory."""
    return {
        "name": name,
        "title": name,
        "kind": "run",
        "command": ["{python}", "-c", "\n".join(lines)],
        "max_cores": 1,
        "test": True,
        "frames": False,
        "params": (
            [{"name": "data", "type": "file", "default": None, "as": "data.bin"}]
            if file_param
            else []
        ),
    }


def _end(server, user, sim_id, secs=60):
    return server.wait_status(
        user, sim_id, ("completed", "error", "canceled", "timed_out"), secs
    )


# --- site files ----------------------------------------------------------------


def test_a_site_file_outside_usr_is_seen_by_a_sandboxed_local_run(
    server_factory, tmp_path
):
    # the site's own potentials directory (on an HPC site /global/...,
    # /opt/...): present where the run goes, so the agent links it in
    site = tmp_path / "site-files"
    site.mkdir()
    f = site / "pot.dat"
    f.write_bytes(b"a potential\n" * 100)
    s = server_factory(
        catalog=str(_catalog(tmp_path, site={"pot.dat": str(f)})),
        local_sandbox="on",
    )
    x = s.create("admin", "checksum", data="site/pot.dat")
    s.run("admin", x["id"])
    j = _end(s, "admin", x["id"])
    # the sandbox shows the code /usr only: the link dangles there
    assert j["status"] == "completed", j["error"]
    assert [g["sha256"] for g in s.frames("admin", x["id"])] == [
        hashlib.sha256(f.read_bytes()).hexdigest()
    ]


def test_a_site_value_the_catalog_no_longer_declares_is_refused_cleanly(
    server_factory, tmp_path
):
    d = tmp_path / "data"
    # not the factory's: its teardown would find the next one in `d`
    s = Server(d).start()
    try:
        x = s.create("admin", "checksum", data="site/release.dat")
    finally:
        assert not s.cleanup()
    # the site takes the file out of the catalog (a new codes.json)
    s = server_factory(data_dir=d, catalog=str(_catalog(tmp_path, site={})))
    r = s.api("POST", f"/simulations/{x['id']}/run", json={})
    # a stored value the catalog no longer has: a 4xx saying so (as a
    # library file gone is 409 file_missing), never a 500 or a hung job
    assert r.status_code in (400, 409), r.text
    assert "site" in r.json()["message"], r.text


# --- storage: volume ---------------------------------------------------------


async def _stage(cache, sv, run):
    t = asyncio.ensure_future(cache.stage(run, lambda *a: None))
    while not t.done():
        await sv.answer()
        await asyncio.sleep(0.01)
    await t


async def test_a_cached_file_changed_with_its_mtime_set_back_is_fetched_again(
    tmp_path,
):
    data = os.urandom(1000)
    run, sha = staging_test._run(tmp_path, data)
    sv = staging_test._Supervisor(data)
    sv.requests.up()
    c = staging.Cache(tmp_path / "cache", sv.requests)
    await _stage(c, sv, run)
    # the code (the cache's owner) changes the bytes, keeps size and mtime
    p = tmp_path / "cache" / sha
    st = p.stat()
    os.chmod(p, 0o644)
    with open(p, "r+b") as f:
        f.write(b"EVIL")
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
    (run.dir / "d.bin").unlink()
    await _stage(c, sv, run)
    assert (run.dir / "d.bin").read_bytes() == data and c.fetched_bytes == 2000
    # a new agent, the file unchanged: hashed, not fetched
    (run.dir / "d.bin").unlink()
    c = staging.Cache(tmp_path / "cache", sv.requests)
    await _stage(c, sv, run)
    assert (run.dir / "d.bin").read_bytes() == data and c.fetched_bytes == 0


def _volume_server(docker_server, engine, **cfg):
    s = docker_server(hosts=[dict(engine.host_config("dv", 2), network="host")], **cfg)
    s.add_user("alice")
    return s


def _put(s, user, name, data):
    r = requests.put(
        s.url + f"/api/library/{name}",
        data=data,
        headers={"Authorization": "Bearer " + s.tokens[user]},
        timeout=30,
    )
    assert r.status_code == 201, r.text


@pytest.mark.docker
def test_a_code_cannot_corrupt_the_cache_for_the_next_run(
    docker_server, engine, tmp_path
):
    # a code runs as the agent's uid, which owns the cache: it changes the
    # bytes of its linked file and puts its modification time back
    tamper = _script_code(
        "tamper",
        [
            "import os",
            "p = 'data.bin'",
            "st = os.stat(p)",
            "os.chmod(p, 0o644)",
            "f = open(p, 'r+b')",
            "f.write(b'EVIL')",
            "f.close()",
            "os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))",
            "os.chmod(p, 0o444)",
        ],
        file_param=True,
    )
    s = _volume_server(
        docker_server, engine, catalog=str(_catalog(tmp_path, extra=[tamper]))
    )
    data = os.urandom(2 * _MIB)
    _put(s, "alice", "in.bin", data)
    _, j = docker_test._run_to_end(s, "alice", "tamper", data="in.bin")
    assert j["status"] == "completed", j
    x, j = docker_test._run_to_end(s, "alice", "checksum", data="in.bin")
    assert j["status"] == "completed", j
    # "checked by SHA-256": the next run reads the library's bytes, or fails
    assert [f["sha256"] for f in s.frames("alice", x["id"])] == [
        hashlib.sha256(data).hexdigest()
    ]


@pytest.mark.docker
def test_a_run_writing_beside_its_directory_is_held_to_its_room(
    docker_server, engine, tmp_path
):
    spill = _script_code(
        "spill",
        [
            "import os",
            "for i in range(4):",
            "    f = open('../spill-%d' % i, 'wb')",
            "    f.write(os.urandom(3 * 1024 * 1024))",
            "    f.close()",
        ],
    )
    s = _volume_server(
        docker_server,
        engine,
        catalog=str(_catalog(tmp_path, extra=[spill])),
        basic_max_stored_bytes=4 * _MIB,
    )
    _, j = docker_test._run_to_end(s, "alice", "spill")
    # 12 MiB written into the user's volume by a run given 4 MiB of room
    assert j["status"] == "error" and "room" in (j["error"] or ""), j


@pytest.mark.docker
def test_outputs_stay_reachable_once_the_idle_agent_is_gone(docker_server, engine):
    s = _volume_server(docker_server, engine, agent_idle_secs=1)
    x, j = docker_test._run_to_end(s, "alice", "heat", steps=100)
    assert j["status"] == "completed", j
    wait_for(lambda: not s.api("GET", "/admin/agents").json(), 30, 0.2, "agent reaped")
    # a Docker host has nothing to sign in to: the files are still there
    r = s.api("GET", f"/simulations/{x['id']}/files", "alice")
    assert r.status_code == 200, r.text
    assert "run.log" in {f["path"] for f in r.json()["files"]}
