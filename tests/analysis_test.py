"""Analyses of the warm worker: g(r) on a known lattice, the worker's faults, end to end."""

import asyncio
import json
import math
import os
import pathlib
import shutil
import sys

import pytest

from agent import analysis_worker, parsers
from agent.analyses import AnalysisError, rdf

_DATA = pathlib.Path(__file__).parent / "data" / "lammps"


def _snapshots(name="melt_small.dump", **options):
    p = parsers.PARSERS["lammps_dump"](**options)
    r = p.feed((_DATA / name).read_bytes()) + p.finish()
    return [
        dict(x, plot="snapshot", kind=None) for x in r if x.get("kind") == "snapshot"
    ]


def test_rdf_of_the_fcc_lattice_has_its_twelve_nearest_neighbours():
    s = _snapshots()[0]
    assert s["step"] == 0 and s["natoms"] == 256
    f = rdf.rdf([s], bins=300)
    r = [x[0] for x in f["rows"]]
    g = [x[1] for x in f["rows"]]
    # a = (4 / 0.8442)^(1/3); the nearest neighbours are at a / sqrt(2)
    nn = (4 / 0.8442) ** (1 / 3) / math.sqrt(2)
    first = next(i for i, v in enumerate(g) if v > 0)
    dr = r[1] - r[0]
    assert abs(r[first] - nn) <= dr
    # the coordination number of the first shell: 12, exactly
    box = s["box"][0][1] - s["box"][0][0]
    # g(r) is normalised by the n - 1 others of each atom
    rho = 255 / box**3
    n = sum(
        g[i] * rho * 4 / 3 * math.pi * ((r[i] + dr / 2) ** 3 - (r[i] - dr / 2) ** 3)
        for i in range(first, first + 3)
    )
    # (to the 6 digits of the r reported)
    assert abs(n - 12) < 1e-3, n
    assert f["columns"] == ["r", "g"] and f["table"] == "rdf" and f["plot"] == "rows"
    # up to half the box, where the minimum image holds
    assert r[-1] < box / 2


def test_rdf_of_a_subsample_is_the_same_up_to_noise():
    full = rdf.rdf(_snapshots()[-1:], bins=30)
    part = rdf.rdf(_snapshots(max_atoms=128)[-1:], bins=30)
    # far from the first shells g(r) is near 1 in both
    tail = [abs(a[1] - b[1]) for a, b in zip(full["rows"][-10:], part["rows"][-10:])]
    assert max(tail) < 0.35, tail


def test_rdf_without_a_snapshot_says_so():
    with pytest.raises(AnalysisError, match="no snapshot"):
        rdf.rdf([{"plot": "rows", "rows": []}])


def _worker(tmp_path):
    return analysis_worker.Worker(
        [sys.executable, "-m", "agent.analysis_worker"],
        dict(os.environ, PYTHONPATH=str(pathlib.Path(__file__).parents[1])),
        tmp_path,
    )


def _frames_file(tmp_path, frames):
    p = tmp_path / "source_frames.jsonl"
    p.write_text("".join(json.dumps(f) + "\n" for f in frames))
    return p


async def test_the_worker_stays_warm_and_survives_its_faults(tmp_path):
    w = _worker(tmp_path)
    try:
        p = _frames_file(tmp_path, _snapshots())
        f = await w.request("rdf", {"bins": 50}, p, 30)
        assert len(f["rows"]) == 50
        pid = w.pid
        # a second request: the same process (nothing imported again)
        await w.request("rdf", {"bins": 20}, p, 30)
        assert w.pid == pid and w.starts == 1
        # the analysis's own error: said, and the worker goes on
        q = _frames_file(tmp_path / "..", [{"plot": "rows"}])
        with pytest.raises(analysis_worker.Failed, match="no snapshot"):
            await w.request("rdf", {}, q, 30)
        with pytest.raises(analysis_worker.Failed, match="TypeError"):
            await w.request("rdf", {"nosuch": 1}, p, 30)
        assert w.pid == pid
        # a hang (its input never comes: a FIFO): killed at the deadline
        fifo = tmp_path / "fifo"
        os.mkfifo(fifo)
        with pytest.raises(asyncio.TimeoutError):
            await w.request("rdf", {}, fifo, 0.5)
        assert w.pid is None
        # a crash (killed from outside): told, and the next request works
        await w.request("rdf", {}, p, 30)
        os.kill(w.pid, 9)
        with pytest.raises(analysis_worker.Failed, match="ended"):
            await w.request("rdf", {}, p, 30)
        assert len((await w.request("rdf", {"bins": 10}, p, 30))["rows"]) == 10
        assert w.starts == 3
    finally:
        await w.kill()


@pytest.mark.skipif(not shutil.which("lmp"), reason="Debian's lammps is not installed")
def test_rdf_of_a_lammps_run_through_the_warm_worker(server):
    s = server.create("admin", "lammps", box=6, steps=200, dump_every=100)
    server.run("admin", s["id"])
    j = server.wait_status("admin", s["id"], ("completed", "error"), 60)
    assert j["status"] == "completed", j["error"]
    for bins in (50, 80):
        a = server.create("admin", "lammps-rdf", source=s["id"], bins=bins)
        server.run("admin", a["id"])
        j = server.wait_status("admin", a["id"], ("completed", "error"), 60)
        assert j["status"] == "completed", j["error"]
        f = server.api("GET", f"/simulations/{a['id']}/frames", expect=200).json()
        (x,) = f["frames"]
        assert x["table"] == "rdf" and len(x["rows"]) == bins and x["step"] == 200
        # 6x6x6 fcc cells, all kept
        assert x["atoms"] == 864
