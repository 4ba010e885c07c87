"""A Docker host that does not see the supervisor's disk (``storage: volume``).

The engine here is reached over TCP with TLS, as a remote host would be,
and its containers use the host's network (``network: host``: a remote
host cannot mount the supervisor's socket), so nothing of this machine's
filesystem is mounted: run directories live in a Docker volume per user on
that host, library files come through the agent's websocket into its cache
in the volume (once), and outputs are listed and read through the agent.

The supervisor factory is docker_test.py's (every container and volume a
test made is gone after it).
"""

import hashlib
import io
import os
import re
import tarfile

import pytest
import requests

import docker_test

pytestmark = pytest.mark.docker

docker_server = docker_test.docker_server

_MIB = 1024 * 1024


@pytest.fixture(scope="module")
def engine():
    """A private dockerd over TCP with TLS, with the agent image, for this module."""
    yield from docker_test._engine("dv", tls=True)


def _staged_bytes(server):
    t = requests.get(server.url + "/metrics", timeout=10).text
    return float(
        re.search(r"^simvisor_library_staged_bytes_total (\S+)$", t, re.M).group(1)
    )


def _bearer(server, user):
    return {"Authorization": "Bearer " + server.tokens[user]}


def _volume_file(engine, volume, path):
    """A file's bytes in `volume`, read with a container of our own image."""
    return _image_file(engine, f"/v/{path}", {volume: {"bind": "/v", "mode": "ro"}})


def _volume_names(engine, volume):
    """The names at the top of `volume`."""
    t = _archive(engine, "/v", {volume: {"bind": "/v", "mode": "ro"}})
    return {m.name.split("/")[1] for m in t.getmembers() if m.name.count("/")}


def _image_file(engine, path, volumes=None):
    """A file's bytes in a container of our own image (with `volumes`)."""
    t = _archive(engine, path, volumes)
    return t.extractfile(t.getmembers()[0]).read()


def _archive(engine, path, volumes=None):
    """`path` of a container of our own image (with `volumes`), as a tar."""
    c = engine.client().containers.create(
        engine.image, command=["true"], network_mode="none", volumes=volumes or {}
    )
    try:
        s, _ = c.get_archive(path)
        return tarfile.open(fileobj=io.BytesIO(b"".join(s)))
    finally:
        c.remove(force=True)


def test_runs_inputs_and_outputs_without_the_shared_path(docker_server, engine):
    s = docker_server(hosts=[dict(engine.host_config("dv", 2), network="host")])
    s.add_user("alice")
    data = os.urandom(5 * _MIB + 7)
    sha = hashlib.sha256(data).hexdigest()
    r = requests.put(
        s.url + "/api/library/in.bin",
        data=data,
        headers=_bearer(s, "alice"),
        timeout=30,
    )
    assert r.status_code == 201, r.text
    frames = []
    for n in range(2):
        x, j = docker_test._run_to_end(s, "alice", "checksum", data="in.bin")
        assert j["status"] == "completed", j
        assert j["driver"] == "docker" and j["host"] == "dv", j
        frames += s.frames("alice", x["id"])
        # the first run fetched it all through the agent, the second nothing
        assert _staged_bytes(s) == len(data), n
    assert [(f["sha256"], f["size"], f["writable"]) for f in frames] == [
        (sha, len(data), False)
    ] * 2
    (c,) = docker_test._containers(engine, s.project)
    # nothing of this machine's disk: the user's volume only
    assert [(m["Type"], m["Destination"]) for m in c.attrs["Mounts"]] == [
        ("volume", "/simvisor/run")
    ]
    v = c.attrs["Mounts"][0]["Name"]
    assert engine.client().volumes.get(v).attrs["Labels"] == {
        "simvisor.project": s.project,
        "simvisor.user": "alice",
        "simvisor.host": "dv",
    }
    assert not (s.data_dir / "run" / "alice" / x["id"]).exists()
    # in the volume: the run directory and the agent's cache, once
    assert _volume_file(engine, v, f"{x['id']}/data.bin") == data
    assert _volume_file(engine, v, f".library/{sha}") == data
    # outputs through the agent: listed, read, and copied into the library
    f = s.api("GET", f"/simulations/{x['id']}/files", "alice", expect=200).json()
    assert {"data.bin", "run.log"} <= {e["path"] for e in f["files"]}, f
    log = s.api("GET", f"/simulations/{x['id']}/files/run.log", "alice", expect=200)
    assert b"checksum:" in log.content
    got = s.api("GET", f"/simulations/{x['id']}/files/data.bin", "alice", expect=200)
    assert got.content == data
    r = requests.post(
        s.url + "/api/library",
        json={"name": "copy.bin", "simulation": x["id"], "path": "data.bin"},
        headers=_bearer(s, "alice"),
        timeout=60,
    )
    assert r.status_code == 201, r.text
    assert r.json()["sha256"] == sha
    # a file the site provides (the catalog's "site"): the image's own
    x, j = docker_test._run_to_end(s, "alice", "checksum", data="site/release.dat")
    assert j["status"] == "completed", j
    b = _image_file(engine, "/usr/lib/os-release")
    assert [f["sha256"] for f in s.frames("alice", x["id"])] == [
        hashlib.sha256(b).hexdigest()
    ]
    assert _staged_bytes(s) == len(data)
    # another user sees none of it
    s.add_user("bob")
    s.api("GET", f"/simulations/{x['id']}/files", "bob", expect=404)
    s.api("GET", f"/simulations/{x['id']}/files/data.bin", "bob", expect=404)
    # a deleted simulation's run directory goes from the volume too
    assert x["id"] in _volume_names(engine, v)
    s.api("DELETE", f"/simulations/{x['id']}", "alice", expect=200)
    assert x["id"] not in _volume_names(engine, v)


def test_a_run_past_its_room_ends_error(docker_server, engine):
    # the room is held in the volume as on this host's disk
    s = docker_server(
        hosts=[dict(engine.host_config("dv", 2), network="host")],
        basic_max_stored_bytes=4 * _MIB,
    )
    s.add_user("carol")
    data = os.urandom(6 * _MIB)
    r = requests.put(
        s.url + "/api/library/big.bin",
        data=data,
        headers=_bearer(s, "carol"),
        timeout=30,
    )
    assert r.status_code == 201, r.text
    # a library file linked in is the library's, not the run directory's
    _, j = docker_test._run_to_end(s, "carol", "checksum", data="big.bin")
    assert j["status"] == "completed", j
    _, j = docker_test._run_to_end(s, "carol", "fill", bytes=16 * _MIB)
    assert j["status"] == "error" and "passed the room" in j["error"], j
