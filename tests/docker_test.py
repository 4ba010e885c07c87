"""The docker driver against real Docker engines (dockerd started by the tests).

Each test's supervisor labels its containers with a project of its own;
teardown checks that none is left and removes the engine's containers.
Outside CI, a machine without Docker skips these tests (with the reason); in
CI (``CI=true``) that fails them.
"""

import hashlib
import json
import os
import secrets
import shutil
import subprocess
import tempfile
import time

import pytest
import requests

import docker_engine
from conftest import wait_for

pytestmark = pytest.mark.docker

_MIB = 1024 * 1024


@pytest.fixture(scope="session")
def engine():
    """The first Docker host: a private dockerd on a unix socket, with the image."""
    yield from _engine("d1", tls=False)


@pytest.fixture(scope="session")
def engine2(engine):
    """The second Docker host: another dockerd, over TCP with TLS on 127.0.0.1."""
    yield from _engine("d2", tls=True)


def _engine(name, tls):
    r = docker_engine.check_host()
    docker_engine.need(r is None, r)
    e = docker_engine.Engine(name, tls=tls)
    try:
        e.start()
    except AssertionError as x:
        docker_engine.need(False, f"dockerd does not start here: {x}")
    try:
        t0 = time.monotonic()
        e.image, err = e.build_image()
        e.image_secs = time.monotonic() - t0
        docker_engine.need(e.image, f"agent image not built: {err}")
        yield e
    finally:
        e.stop()


@pytest.fixture
def docker_server(engine, server_factory, tmp_path):
    """docker_server(hosts=None, project=None, **cfg) -> a `conftest.Server`
    whose default driver is docker; every container it made is gone after."""
    made = []
    engines = [engine]

    def _make(hosts=None, project=None, sock_dir=None, data_dir=None, **cfg):
        p = project or f"t{secrets.token_hex(4)}"
        d = sock_dir or tempfile.mkdtemp(prefix="svs-", dir="/tmp")
        c = dict(
            docker_hosts=json.dumps(hosts or [engine.host_config("d1", 2)]),
            docker_image=engine.image,
            docker_project=p,
            agent_socket=f"{d}/agent.sock",
            default_driver="docker",
        )
        c.update(cfg)
        s = server_factory(data_dir=data_dir, **c)
        s.project = p
        s.sock_dir = d
        s.engines = engines
        made.append(s)
        return s

    _make.engines = engines
    yield _make
    left = []
    try:
        # the latest first: an earlier one of the same data dir would kill it
        for s in reversed(made):
            s.cleanup()
        for p in {s.project for s in made}:
            for e in engines:
                try:
                    wait_for(lambda e=e, p=p: not _containers(e, p), 20, 0.1)
                except AssertionError:
                    for c in _containers(e, p):
                        left.append(c.name)
                        c.remove(force=True)
                # a user's volume of run directories (storage: volume)
                for v in e.client().volumes.list(
                    filters={"label": f"simvisor.project={p}"}
                ):
                    v.remove(force=True)
    finally:
        for s in made:
            shutil.rmtree(s.sock_dir, ignore_errors=True)
    assert not left, f"containers left behind: {left}"


def _containers(engine, project):
    return engine.client().containers.list(
        all=True,
        filters={"label": f"simvisor.project={project}"},
        # one may be removed while it is listed
        ignore_removed=True,
    )


def _agent(server, user):
    (a,) = [x for x in server.api("GET", "/admin/agents").json() if x["user"] == user]
    return a


def _log(server, user, sim_id):
    return server.api("GET", f"/simulations/{sim_id}/log", user, expect=200).text


def _run_to_end(server, user, code, timeout_secs=60, run=None, **params):
    s = server.create(user, code, **params)
    server.run(user, s["id"], **(run or {}))
    j = server.wait_status(
        user, s["id"], ("completed", "error", "canceled", "timed_out"), timeout_secs
    )
    return s, j


def test_heat_in_a_container_and_reuse(docker_server, engine):
    s = docker_server()
    s.add_user("alice")
    x, j = _run_to_end(s, "alice", "heat", steps=20000)
    assert j["status"] == "completed", j
    assert j["driver"] == "docker" and j["host"] == "d1"
    f = s.api("GET", f"/simulations/{x['id']}/frames", "alice", expect=200).json()
    assert len(f["frames"]) > 10
    a = _agent(s, "alice")
    (c,) = _containers(engine, s.project)
    assert c.id == a["container_id"]
    assert c.labels == {
        "simvisor.project": s.project,
        "simvisor.user": "alice",
        "simvisor.agent": a["id"],
        "simvisor.host": "d1",
        # the image's
        "simvisor.image": engine.image.rsplit("-", 1)[1],
    }
    h = c.attrs["HostConfig"]
    assert h["NetworkMode"] == "none"
    assert h["ReadonlyRootfs"] is True
    assert h["CapDrop"] == ["ALL"]
    assert h["SecurityOpt"] == ["no-new-privileges"]
    assert h["PidsLimit"] == 512
    assert h["Memory"] == h["MemorySwap"] == 2 * 1024 * _MIB
    assert h["CpuQuota"] > 0 and h["CpuPeriod"] == 100000
    assert "/tmp" in h["Tmpfs"]
    assert c.attrs["Config"]["User"] == "10001:10001"
    m = {x["Destination"]: x for x in c.attrs["Mounts"]}
    assert set(m) == {"/simvisor/run", "/simvisor/run/.library", "/simvisor/sock"}
    assert m["/simvisor/run"]["Source"] == str(s.data_dir.resolve() / "run" / "alice")
    assert m["/simvisor/run"]["RW"] and not m["/simvisor/sock"]["RW"]
    # the user's staged library files: read-only
    assert not m["/simvisor/run/.library"]["RW"]
    # the secret is nowhere in the container's definition
    d = json.dumps(c.attrs)
    assert "Bearer" not in d and a["id"] in d
    for e in c.attrs["Config"]["Env"] or []:
        assert "SECRET" not in e.upper()
    # a second run reuses the container
    _, j = _run_to_end(s, "alice", "sleep", secs=0.1)
    assert j["status"] == "completed", j
    assert [x.id for x in _containers(engine, s.project)] == [c.id]
    assert _agent(s, "alice")["id"] == a["id"]


def test_a_library_file_is_linked_into_the_container_read_only(docker_server):
    s = docker_server()
    s.add_user("alice")
    data = os.urandom(3 * 1024 * 1024)
    r = requests.put(
        s.url + "/api/library/in.bin",
        data=data,
        headers={"Authorization": "Bearer " + s.tokens["alice"]},
        timeout=30,
    )
    assert r.status_code == 201, r.text
    x, j = _run_to_end(s, "alice", "checksum", data="in.bin")
    assert j["status"] == "completed" and j["driver"] == "docker", j["error"]
    (f,) = s.frames("alice", x["id"])
    # the container's user reads it and can change neither it nor its mode
    assert f == {
        "sha256": hashlib.sha256(data).hexdigest(),
        "size": len(data),
        "writable": False,
        "chmod": False,
    }
    # a link to the read-only mount of the user's staged files
    d = s.data_dir.resolve() / "run" / "alice" / x["id"] / "data.bin"
    t = os.readlink(d)
    assert t == f"/simvisor/run/.library/{f['sha256']}", t
    staged = s.data_dir.resolve() / "run" / "alice" / ".library" / f["sha256"]
    assert staged.read_bytes() == data and not staged.stat().st_mode & 0o222


def test_cancel_within_a_second(docker_server):
    s = docker_server()
    x = s.create("admin", "forever")
    s.run("admin", x["id"])
    s.wait_status("admin", x["id"], "running", 60)
    t = time.monotonic()
    j = s.api("POST", f"/simulations/{x['id']}/cancel", expect=200).json()
    secs = time.monotonic() - t
    assert j["status"] == "canceled", j
    assert secs < 1.0, f"cancel took {secs:.3f} s"


def test_cpu_limit_follows_cores(docker_server, engine):
    s = docker_server()
    x = s.create("admin", "burn", secs=3.0, workers=2)
    s.run("admin", x["id"], cores=1)
    s.wait_status("admin", x["id"], "running", 60)
    (c,) = _containers(engine, s.project)
    # the quota follows the run's cores (1 here): two busy processes share one core
    wait_for(lambda: _quota(c) == 100000, 10, 0.05, "1 core")
    u0 = _cpu_ns(c)
    t0 = time.monotonic()
    j = s.wait_status("admin", x["id"], ("completed", "error"), 60)
    cores = (_cpu_ns(c) - u0) / 1e9 / (time.monotonic() - t0)
    assert j["status"] == "completed", j
    assert cores < 1.25, f"used {cores:.2f} cores"
    # given 2 cores, the container gets 2; once the run ends, 1 again
    s.run("admin", x["id"], cores=2)
    s.wait_status("admin", x["id"], "running", 60)
    wait_for(lambda: _quota(c) == 200000, 10, 0.05, "2 cores")
    s.api("POST", f"/simulations/{x['id']}/cancel", expect=200)
    wait_for(lambda: _quota(c) == 100000, 10, 0.05, "1 core")


def _quota(container):
    container.reload()
    return container.attrs["HostConfig"]["CpuQuota"]


def _cpu_ns(container):
    s = container.stats(stream=False, one_shot=True)
    return s["cpu_stats"]["cpu_usage"]["total_usage"]


def test_memory_hog_is_out_of_memory(docker_server):
    s = docker_server(basic_mem_bytes=128 * _MIB)
    s.add_user("alice")
    _, j = _run_to_end(s, "alice", "memhog", mib=400, secs=5)
    assert j["status"] == "error", j
    assert "out of memory" in j["error"], j
    # the simulation died, not its agent: the container serves the next run
    a = _agent(s, "alice")
    _, j = _run_to_end(s, "alice", "sleep", secs=0.1)
    assert j["status"] == "completed", j
    assert _agent(s, "alice")["id"] == a["id"]


def test_pids_limit_holds_a_fork_bomb(docker_server):
    s = docker_server(docker_pids_limit=64)
    x, j = _run_to_end(s, "admin", "spawner", procs=2000, secs=2)
    assert j["status"] == "completed", j
    line = next(x for x in _log(s, "admin", x["id"]).splitlines() if "started=" in x)
    n = int(line.split("started=")[1].split()[0])
    assert 0 < n < 64, line
    assert "refused=None" not in line
    # the host is unaffected
    assert subprocess.run(["true"], check=True).returncode == 0
    s.api("GET", "/health", None, expect=200)


def test_isolation(docker_server, engine2):
    s = docker_server()
    s.add_user("alice")
    s.add_user("bob")
    x, j = _run_to_end(s, "alice", "fill", bytes=1000)
    assert j["status"] == "completed", j
    mine = s.data_dir.resolve() / "run" / "alice" / x["id"] / "fill.dat"
    assert mine.stat().st_size == 1000
    paths = [
        str(mine),
        f"/simvisor/run/../alice/{x['id']}/fill.dat",
        f"/simvisor/{x['id']}/fill.dat",
        "/proc/{ppid}/environ",
        "/proc/{ppid}/mem",
    ]
    connects = [f"127.0.0.1:{s.port}", engine2.tcp_url.removeprefix("tcp://")]
    y, j = _run_to_end(
        s, "bob", "probe", path=",".join(paths), connect=",".join(connects)
    )
    assert j["status"] == "completed", j
    out = [x for x in _log(s, "bob", y["id"]).splitlines() if x.startswith("probe:")]
    assert len(out) == len(paths) + len(connects), out
    # neither alice's files, nor the agent's secret, nor the host's loopback
    for line in out:
        assert "-> refused" in line, line


def test_idle_container_is_reaped(docker_server, engine):
    s = docker_server(agent_idle_secs=1)
    _, j = _run_to_end(s, "admin", "sleep", secs=0.1)
    assert j["status"] == "completed", j
    wait_for(lambda: not _containers(engine, s.project), 20, 0.1, "container reaped")
    assert not s.api("GET", "/admin/agents").json()


def test_killed_container_ends_its_run(docker_server, engine):
    s = docker_server()
    x = s.create("admin", "forever")
    s.run("admin", x["id"])
    s.wait_status("admin", x["id"], "running", 60)
    (c,) = _containers(engine, s.project)
    c.kill()
    j = s.wait_status("admin", x["id"], ("error",), 30)
    assert "exited with code 137" in j["error"], j
    wait_for(lambda: not _containers(engine, s.project), 20, 0.1, "container removed")


def test_missing_image_is_told(docker_server):
    s = docker_server(docker_image="simvisor-agent:no-such-tag")
    _, j = _run_to_end(s, "admin", "sleep", secs=0.1)
    assert j["status"] == "error", j
    assert "agent failed to start" in j["error"] and "no-such-tag" in j["error"], j


def test_restart_readopts_and_removes_strays(docker_server, engine):
    s = docker_server()
    x = s.create("admin", "sleep", secs=6)
    s.run("admin", x["id"])
    s.wait_status("admin", x["id"], "running", 60)
    (c,) = _containers(engine, s.project)
    s.stop()
    # a container of ours whose agent nobody knows
    stray = engine.client().containers.run(
        engine.image,
        ["sleep", "60"],
        detach=True,
        network_mode="none",
        labels={
            "simvisor.project": s.project,
            "simvisor.agent": "nobody-docker-00000000",
            "simvisor.host": "d1",
        },
    )
    s2 = docker_server(project=s.project, sock_dir=s.sock_dir, data_dir=s.data_dir)
    j = s2.wait_status("admin", x["id"], ("running", "completed"), 30)
    wait_for(
        lambda: [y.id for y in _containers(engine, s.project)] == [c.id],
        20,
        0.1,
        "stray removed",
    )
    j = s2.wait_status("admin", x["id"], ("completed", "error"), 30)
    assert j["status"] == "completed", j
    assert _agent(s2, "admin")["container_id"] == c.id
    assert stray.id not in [y.id for y in _containers(engine, s.project)]


def test_two_hosts_share_and_drain(docker_server, engine, engine2):
    s = docker_server(
        hosts=[engine.host_config("d1", 1), engine2.host_config("d2", 1)],
    )
    docker_server.engines.append(engine2)
    for u in ("alice", "bob", "carol"):
        s.add_user(u)
    xs = {}
    for u in ("alice", "bob"):
        xs[u] = s.create(u, "sleep", secs=3)
        s.run(u, xs[u]["id"])
    js = {u: s.wait_status(u, xs[u]["id"], "running", 60) for u in xs}
    assert {j["host"] for j in js.values()} == {"d1", "d2"}
    assert len(_containers(engine, s.project)) == 1
    assert len(_containers(engine2, s.project)) == 1
    h = {x["name"]: x for x in s.api("GET", "/admin/hosts").json()}
    assert h["d1"]["cores_used"] == h["d2"]["cores_used"] == 1
    assert h["d1"]["cores_free"] == 0
    for u in xs:
        s.wait_status(u, xs[u]["id"], "completed", 30)
    # a user's next run goes where their container is, though d1 comes first
    b = next(u for u in xs if js[u]["host"] == "d2")
    s.run(b, xs[b]["id"])
    j = s.wait_status(b, xs[b]["id"], "completed", 30)
    assert j["host"] == "d2", j
    assert len(_containers(engine, s.project)) == 1
    s.api("POST", "/admin/hosts/d2/drain", json={"drain": True}, expect=200)
    _, j = _run_to_end(s, "carol", "sleep", secs=0.1)
    assert j["status"] == "completed" and j["host"] == "d1", j
    assert not [
        c
        for c in _containers(engine2, s.project)
        if c.labels["simvisor.user"] == "carol"
    ]


def test_admin_containers(docker_server, engine):
    s = docker_server()
    s.add_user("alice")
    x = s.create("alice", "burn", secs=30)
    s.run("alice", x["id"])
    s.wait_status("alice", x["id"], "running", 60)
    s.api("GET", "/admin/containers", "alice", expect=403)
    (c,) = s.api("GET", "/admin/containers", expect=200).json()
    assert c["host"] == "d1" and c["user"] == "alice" and c["state"] == "running"
    assert c["cpu_cores"] > 0.3, c
    assert 0 < c["mem_bytes"] < c["mem_limit_bytes"], c
    s.api("POST", f"/admin/containers/{c['id']}/kill", expect=200)
    j = s.wait_status("alice", x["id"], "canceled", 30)
    assert "admin" in j["error"], j
    wait_for(lambda: not _containers(engine, s.project), 20, 0.1, "container removed")
    s.api("POST", f"/admin/containers/{c['id']}/kill", expect=404)


def test_agent_that_never_calls_back_is_removed(docker_server, engine):
    # an image whose entry point ignores the agent's command: it only sleeps
    c = engine.client().containers.create(engine.image, ["true"])
    try:
        c.commit(
            repository="simvisor-agent",
            tag="silent",
            changes=['ENTRYPOINT ["/bin/sh", "-c", "exec sleep 600", "sh"]'],
        )
    finally:
        c.remove()
    s = docker_server(docker_image="simvisor-agent:silent", agent_start_timeout_secs=2)
    _, j = _run_to_end(s, "admin", "sleep", secs=0.1)
    assert j["status"] == "error", j
    assert "did not call back within 2" in j["error"], j
    wait_for(lambda: not _containers(engine, s.project), 20, 0.1, "container removed")
    assert not s.api("GET", "/admin/agents").json()


def test_container_died_while_supervisor_was_down(docker_server, engine):
    s = docker_server()
    x = s.create("admin", "forever")
    s.run("admin", x["id"])
    s.wait_status("admin", x["id"], "running", 60)
    (c,) = _containers(engine, s.project)
    s.stop()
    c.kill()
    s2 = docker_server(project=s.project, sock_dir=s.sock_dir, data_dir=s.data_dir)
    # not lost for the grace period: the container's end is known
    j = s2.wait_status("admin", x["id"], "error", 20)
    assert "exited with code 137" in j["error"], j
    wait_for(lambda: not _containers(engine, s.project), 20, 0.1, "container removed")
    assert not s2.api("GET", "/admin/agents").json()


def test_host_network_host(docker_server, engine):
    # for a host that cannot mount the socket: the agent dials our TCP port
    s = docker_server(hosts=[dict(engine.host_config("d1", 2), network="host")])
    _, j = _run_to_end(s, "admin", "sleep", secs=0.1)
    assert j["status"] == "completed", j
    (c,) = _containers(engine, s.project)
    assert c.attrs["HostConfig"]["NetworkMode"] == "host"
    assert sorted(m["Destination"] for m in c.attrs["Mounts"]) == [
        "/simvisor/run",
        "/simvisor/run/.library",
    ]
