"""LAMMPS on the docker driver: Debian's ``lmp`` under ``mpirun`` inside the agent's container.

The agent image holds the site's codes (etc/docker/codes.list: lammps and
openmpi-bin), so the catalog's ``lammps`` entry runs there as it does on the
local driver: the agent in the container starts ``mpirun -np {cores}`` and
follows ``log.lammps`` and the dump file into frames. The container's
processes are processes of this host too: the ranks are found in /proc by
their name and their cgroup, which is the container's (its CPU quota and
memory limit), and they run as the container's user.

The analysis lammps-rdf answers there too: the agent's warm worker in the
container, with the image's numpy (python3-numpy in codes.list).

The engine and the supervisor factory are docker_test.py's (a private
dockerd of this module; every container a test made is gone after it).
"""

import pathlib
import re

import pytest

import docker_test
from conftest import wait_for
from lammps_test import _assert_result

pytestmark = pytest.mark.docker

#: docker_test.py's: a supervisor whose default driver is docker, on `engine`
docker_server = docker_test.docker_server

#: how Open MPI's processes prefix what they print: [host:pid]
_OMPI_MESSAGE = re.compile(r"\[[^\]\s]+:\d+\] ")


@pytest.fixture(scope="module")
def engine():
    """A private dockerd with the agent image, for this module only."""
    yield from docker_test._engine("dl", tls=False)


def _cgroups(pid):
    """controller -> cgroup path of `pid` ("" is cgroup v2's unified hierarchy)."""
    rv = {}
    for line in pathlib.Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, names, path = line.split(":", 2)
        for n in names.split(",") if names else [""]:
            rv[n] = path
    return rv


def _in_container(pid, cid):
    """Whether `pid` is held by the CPU and memory limits of container `cid`."""
    c = _cgroups(pid)
    k = [x for x in ("cpu", "memory") if x in c] or [""]
    return all(cid in c[x] for x in k)


def _lmp_ranks(cid):
    """{pid: uid} of the ``lmp`` processes in container `cid`."""
    rv = {}
    for d in pathlib.Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            if (d / "comm").read_text().strip() != "lmp" or not _in_container(
                d.name, cid
            ):
                continue
            s = (d / "status").read_text()
        except OSError:
            # ended meanwhile
            continue
        if "\nState:\tZ" in s:
            continue
        rv[int(d.name)] = int(s.split("\nUid:\t", 1)[1].split()[0])
    return rv


def _shm_segments(pid):
    """Open MPI's shared memory segments in the /dev/shm of `pid`'s container."""
    try:
        return [
            p.name
            for p in pathlib.Path(f"/proc/{pid}/root/dev/shm").iterdir()
            if p.name.startswith("vader_segment.")
        ]
    except OSError:
        return []


def _container_id(server, user):
    (a,) = [x for x in server.api("GET", "/admin/agents").json() if x["user"] == user]
    return a["container_id"]


def test_two_ranks_in_the_container(docker_server, engine):
    s = docker_server()
    s.add_user("alice")
    x = s.create(
        "alice",
        "lammps",
        temperature=2.5,
        box=8,
        steps=4000,
        thermo_every=100,
        dump_every=1000,
    )
    s.run("alice", x["id"], cores=2)
    seen = {"ranks": {}, "frames_while_running": [], "shm": set(), "cid": None}

    def watch():
        j = s.job("alice", x["id"])
        if j["status"] == "running":
            c = seen["cid"] = seen["cid"] or _container_id(s, "alice")
            r = _lmp_ranks(c)
            if len(r) > len(seen["ranks"]):
                seen["ranks"] = r
            for p in r:
                seen["shm"].update(_shm_segments(p))
            if j["frames"]:
                seen["frames_while_running"].append(j["frames"])
        return j["status"] not in ("queued", "starting", "running") and j

    j = wait_for(watch, 90, 0.05, "lammps ended")
    assert j["status"] == "completed", j["error"]
    assert j["driver"] == "docker" and j["host"] == "d1", j
    assert j["progress"] == 1.0 and j["exit_code"] == 0
    # two ranks, in the container's cgroup, as the container's user (not root)
    (c,) = docker_test._containers(engine, s.project)
    assert c.id == seen["cid"]
    assert len(seen["ranks"]) == 2, seen
    assert set(seen["ranks"].values()) == {10001}, seen
    assert c.attrs["HostConfig"]["NetworkMode"] == "none"
    # they talked through shared memory, a segment each in the container's /dev/shm
    assert len(seen["shm"]) == 2, seen
    # frames came while it ran, not all at the end
    assert min(seen["frames_while_running"], default=0) < j["frames"], seen
    f = s.api("GET", f"/simulations/{x['id']}/frames", "alice", expect=200).json()
    rows = [y for y in f["frames"] if y["plot"] == "rows"]
    snaps = [y for y in f["frames"] if y["plot"] == "snapshot"]
    assert rows and rows[0]["table"] == "thermo" and rows[0]["file"] == "log.lammps"
    k = rows[0]["columns"]
    first = rows[0]["rows"][0]
    # the temperature asked for is the first thermo row's
    assert first[k.index("Step")] == 0 and first[k.index("Temp")] == 2.5
    steps = [r[k.index("Step")] for y in rows for r in y["rows"]]
    assert steps == list(range(0, 4001, 100))
    assert [y["step"] for y in snaps] == [0, 1000, 2000, 3000, 4000]
    assert all(y["natoms"] == 2048 for y in snaps)
    # the result the agent in the container made of every thermo row
    _assert_result(j, f["frames"])
    assert not _lmp_ranks(c.id)
    # Open MPI said nothing: not one message of a rank or of mpirun (one
    # that cannot copy between ranks says "Read -1, ..., errno = 1" at each)
    log = s.api("GET", f"/simulations/{x['id']}/log", "alice", expect=200).text
    said = [y for y in log.splitlines() if _OMPI_MESSAGE.match(y)]
    assert not said, said[:5]
    assert "Loop time of" in log
    # the run's files are in the user's run directory on the host
    d = s.data_dir / "run" / "alice" / x["id"]
    assert "Loop time of" in (d / "log.lammps").read_text()


def test_cancel_leaves_no_rank(docker_server, engine):
    s = docker_server()
    x = s.create("admin", "lammps", box=20, steps=10000, thermo_every=100)
    s.run("admin", x["id"], cores=2)
    s.wait_status("admin", x["id"], "running", 120)
    c = _container_id(s, "admin")
    wait_for(lambda: len(_lmp_ranks(c)) == 2, 60, what="two lmp ranks")
    j = s.api("POST", f"/simulations/{x['id']}/cancel", expect=200).json()
    assert j["status"] == "canceled", j
    # confirmed gone when the reply comes; the container stays for the next run
    assert not _lmp_ranks(c)
    assert [y.id for y in docker_test._containers(engine, s.project)] == [c]


def test_an_analysis_answers_in_the_container(docker_server, engine):
    """lammps-rdf on the docker driver: the warm worker in the container (numpy)."""
    s = docker_server()
    src = s.create(
        "admin", "lammps", box=4, steps=500, thermo_every=100, dump_every=500
    )
    s.run("admin", src["id"], cores=1)
    j = s.wait_status("admin", src["id"], ("completed", "error"), 90)
    assert j["status"] == "completed", j["error"]
    a = s.create("admin", "lammps-rdf", source=src["id"], bins=50)
    s.run("admin", a["id"])
    j = s.wait_status("admin", a["id"], ("completed", "error"), 60)
    assert j["status"] == "completed", j["error"]
    assert j["driver"] == "docker", j
    (f,) = s.frames("admin", a["id"])
    assert f["table"] == "rdf" and f["columns"] == ["r", "g"]
    # a liquid's first shell: g(r) well above 1
    assert len(f["rows"]) == 50 and max(g for _, g in f["rows"]) > 2
    # the one container of the user, where its lammps ran
    assert len(docker_test._containers(engine, s.project)) == 1
