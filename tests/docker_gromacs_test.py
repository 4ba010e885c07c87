"""GROMACS on the docker driver: Debian's ``gmx`` (grompp, then mdrun) inside the agent's container.

The agent image holds the site's codes (etc/docker/codes.list: gromacs
beside lammps), so the catalog's ``gromacs`` entry runs there as it does on
the local driver: the agent in the container runs grompp, then one mdrun
of ``{cores}`` OpenMP threads, and follows ``md.log`` into frames. The
container's processes are processes of this host too: ``gmx`` is found in
/proc by its name and its cgroup, which is the container's, and it runs as
the container's user.

The engine and the supervisor factory are docker_test.py's (a private
dockerd of this module; every container a test made is gone after it).
"""

import pathlib

import pytest

import docker_lammps_test
import docker_test
from conftest import procs_named, wait_for

pytestmark = pytest.mark.docker

#: docker_test.py's: a supervisor whose default driver is docker, on `engine`
docker_server = docker_test.docker_server


@pytest.fixture(scope="module")
def engine():
    """A private dockerd with the agent image, for this module only."""
    yield from docker_test._engine("dg", tls=False)


def _gmx(cid):
    """{pid: (uid, threads)} of the ``gmx`` processes in container `cid`."""
    rv = {}
    for d in pathlib.Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            if (d / "comm").read_text().strip() != "gmx":
                continue
            s = (d / "status").read_text()
            if "\nState:\tZ" in s or not docker_lammps_test._in_container(d.name, cid):
                continue
            u = int(s.split("\nUid:\t", 1)[1].split()[0])
            rv[int(d.name)] = (u, int(s.split("\nThreads:\t", 1)[1].split()[0]))
        except OSError:
            # ended meanwhile
            continue
    return rv


def test_two_threads_in_the_container_complete_with_live_energies(
    docker_server, engine
):
    s = docker_server()
    s.add_user("alice")
    x = s.create("alice", "gromacs", nsteps=1000, temperature=320.0, log_every=50)
    s.run("alice", x["id"], cores=2)
    seen = {"gmx": {}, "outside": set(), "frames_while_running": [], "cid": None}

    def watch():
        j = s.job("alice", x["id"])
        if j["status"] == "running":
            c = seen["cid"] = seen["cid"] or docker_lammps_test._container_id(
                s, "alice"
            )
            inside = _gmx(c)
            seen["gmx"].update(inside)
            # a gmx working in the run's directory as the host sees it
            seen["outside"].update(procs_named(s.data_dir, "gmx"))
            if j["frames"] and inside:
                seen["frames_while_running"].append(j["frames"])
        return j["status"] not in ("queued", "starting", "running") and j

    j = wait_for(watch, 120, 0.05, "gromacs ended")
    assert j["status"] == "completed", j["error"]
    assert j["driver"] == "docker" and j["host"] == "d1", j
    assert j["progress"] == 1.0 and j["exit_code"] == 0
    (c,) = docker_test._containers(engine, s.project)
    assert c.id == seen["cid"]
    # grompp, then one mdrun of two threads: in the container's cgroup, as
    # its user (not root), and no gmx of this run outside it
    assert seen["gmx"] and {u for u, _ in seen["gmx"].values()} == {10001}, seen
    assert max(t for _, t in seen["gmx"].values()) == 2, seen
    assert not seen["outside"], seen
    assert min(seen["frames_while_running"], default=j["frames"]) < j["frames"], seen
    rows = [y for y in s.frames("alice", x["id"]) if y["plot"] == "rows"]
    assert rows and {(y["file"], y["table"]) for y in rows} == {("md.log", "energies")}
    k = rows[0]["columns"]
    assert [r[k.index("Step")] for y in rows for r in y["rows"]] == list(
        range(0, 1001, 50)
    )
    first = dict(zip(k, rows[0]["rows"][0]))
    # drawn at the temperature asked for (1044 atoms: within a few percent)
    assert first["Time"] == 0.0 and abs(first["Temperature"] - 320.0) < 16.0, first
    # the run's files are in the user's run directory on the host
    d = s.data_dir / "run" / "alice" / x["id"]
    assert "Finished mdrun" in (d / "md.log").read_text()
    assert (d / "md.tpr").stat().st_size > 0
    assert not _gmx(c.id)


def test_cancel_leaves_no_gmx(docker_server, engine):
    s = docker_server()
    x = s.create("admin", "gromacs", nsteps=100000)
    s.run("admin", x["id"], cores=1)
    # mdrun is writing energies
    wait_for(lambda: s.job("admin", x["id"])["frames"], 90, what="a frame")
    c = docker_lammps_test._container_id(s, "admin")
    assert _gmx(c)
    j = s.api("POST", f"/simulations/{x['id']}/cancel", expect=200).json()
    assert j["status"] == "canceled" and j["progress"] < 1.0, j
    # confirmed gone when the reply comes; the container stays for the next run
    assert not _gmx(c) and not procs_named(s.data_dir, "gmx")
    assert [y.id for y in docker_test._containers(engine, s.project)] == [c]
