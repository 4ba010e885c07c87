"""Rows 14-17: real codes. LAMMPS through simvisor beside ``mpirun`` of the same deck by hand.

(Row 16, a file append to its frame, and row 17, an analysis request to its
result, are below.)

The figure: POST run of the catalog's ``lammps`` code (local driver, sandbox
auto, its cgroup; HTTP connection kept open) until the ``completed`` push:
the deck rendered by the supervisor, ``mpirun -np N`` under the run's
keeper, ``log.lammps`` and the dump followed into frames. The floor: the
same deck (rendered by the same adapter) run by ``mpirun -np N ... lmp`` in
a directory of the bench, with the environment the agent gives an MPI
run, until it exits. Both sides read nothing else; the machine's two cores
bound the speed-up of 2 ranks.
"""

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time

from agent import analyses, follow, launch
from supervisor import catalog
from tests.bench import clients, floors
from tests.bench.report import BenchError, Row, paired, MS

#: a melt of 2,048 atoms for 1,000 steps: about a second on one core
PARAMS = {"box": 8, "steps": 1000, "thermo_every": 100, "dump_every": 500}

#: pairs of (floor, figure) per row, and the seconds they may take
PAIRS = 3
BUDGET_SECS = 40


def unavailable():
    """Why the rows cannot run here, or None."""
    if not (shutil.which("lmp") and shutil.which("mpirun")):
        return "Debian's lammps and openmpi-bin are not installed"
    return None


def rows():
    f = (
        "mpirun -np {n} --oversubscribe --bind-to none lmp -in in.melt -log "
        "log.lammps of the same deck (rendered by the catalog's adapter) in a "
        "directory of the bench, the agent's environment for an MPI run, "
        "from its start until it exits"
    )
    rv = [
        Row(
            f"14 lammps melt ({n} rank{'s' * (n > 1)}): run -> completed",
            MS,
            f.format(n=n),
        )
        for n in (1, 2)
    ]
    for r in rv:
        r.note = (
            f"the catalog's lammps, {PARAMS}, local driver, sandbox auto: POST run "
            "(HTTP connection kept open) until the completed push, with the deck "
            "rendered, mpirun under the run's keeper in its cgroup, log.lammps "
            "and the dump followed into frames"
        )
    rv[1].name = rv[1].name.replace("14 ", "15 ", 1)
    return rv


def _deck_dir(parent, ranks):
    c = catalog.Catalog().get("lammps")
    d = parent / f"lammps-floor-{ranks}"
    d.mkdir(parents=True, exist_ok=True)
    for n, t in c.adapter.inputs(c.check_params(PARAMS)).items():
        (d / n).write_text(t)
    return d, c.adapter.argv(c.command, ranks)


async def _bare(d, argv, ranks):
    for n in ("log.lammps", "dump.melt"):
        (d / n).unlink(missing_ok=True)
    e = floors.environ()
    e.update(launch.environ(ranks, "mpi"))
    m = [
        shutil.which("mpirun"),
        *(x.replace("{cores}", str(ranks)) for x in launch.MPI_LAUNCHER),
    ]
    t = time.perf_counter()
    p = await asyncio.create_subprocess_exec(
        *m,
        *argv,
        cwd=d,
        env=e,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    _, err = await p.communicate()
    t = time.perf_counter() - t
    if p.returncode != 0:
        raise BenchError(f"bare lammps exited {p.returncode}: {err[-500:]!r}")
    return t


async def measure(b, tmp, row, ranks):
    """`row` (of `rows`) with `ranks` ranks, through `b` (a `figures.RealAgentBench`)."""
    d, argv = _deck_dir(tmp, ranks)
    (sid,) = await b.api.create_sims(1, "lammps", PARAMS)

    async def figure():
        s, j = await b.run_to_end(sid, cores=ranks)
        if j["status"] != "completed":
            raise BenchError(f"lammps ended {j['status']}: {j['error']}")
        return s

    # warm-up: the page cache, the agent
    await _bare(d, argv, ranks)
    await figure()
    row.floor, row.figure = await paired(
        lambda: _bare(d, argv, ranks), figure, PAIRS, BUDGET_SECS
    )
    if os.cpu_count() < ranks:
        row.note += f"; only {os.cpu_count()} cores here"


#: row 16: appends timed, one line each, and the pause before each
APPENDS = 30
APPEND_PAUSE_SECS = 0.05


def append_row():
    r = Row(
        "16 file append -> frame on /api/events",
        MS,
        "the same one-line append to a file in a directory of the bench, seen "
        "by a bare inotify watcher in the bench process (agent.follow: watch, "
        "event, read of what was appended)",
    )
    r.note = (
        "a running lammps-deck run (its own deck: `shell sleep 600`, so LAMMPS "
        "is up and writes nothing more): the bench appends one thermo row to "
        "its log.lammps (after a `Step Temp` header) and times until the "
        "frame with that row arrives on the admin /api/events websocket: the "
        "agent's inotify event, its read, the lammps_log parser, the frame "
        "to the supervisor, the push"
    )
    return r


async def _bare_append(path, follower_data):
    follower_data.clear()
    t = time.perf_counter()
    with open(path, "ab") as f:
        f.write(b"x\n")
    while not follower_data:
        await asyncio.sleep(0)
    return time.perf_counter() - t


async def measure_append(b, tmp, row):
    """Row 16 through `b` (a `figures.RealAgentBench`)."""
    ino = follow.Inotify.open()
    got = []
    p = tmp / "append-floor" / "f.log"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(b"")
    fo = follow.Follower(p, got.append, ino)
    fo.start()
    (sid,) = await b.api.create_sims(1, "lammps-deck", {})
    await b.api.upload(f"/simulations/{sid}/files?name=in.lammps", b"shell sleep 600\n")
    try:
        _, j, _, _ = await b.run_and_wait(sid, ("running", *clients.ENDED), "running")
        if j["status"] != "running":
            raise BenchError(f"the sleeping deck went {j['status']}: {j['error']}")
        log = b.server.data_dir / "run" / "admin" / sid / "log.lammps"
        # LAMMPS makes its log (as the sandbox's user): not the bench
        t = time.monotonic() + clients.WAIT_SECS
        while not log.exists():
            if time.monotonic() > t:
                raise BenchError(f"LAMMPS made no {log}")
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)
        with open(log, "ab") as f:
            f.write(b"Step Temp \n")
        n = [0]

        async def figure():
            n[0] += 1
            m0 = b.events.mark()
            await asyncio.sleep(APPEND_PAUSE_SECS)
            t = time.perf_counter()
            with open(log, "ab") as f:
                f.write(f"{n[0]} 1.5 \n".encode())
            t1, _ = await b.events.wait_for(
                lambda m: m.get("type") == "frame"
                and m.get("simulation") == sid
                and any(r[0] == n[0] for r in (m.get("frame") or {}).get("rows", [])),
                m0,
                f"the frame of row {n[0]}",
            )
            return t1 - t

        async def floor():
            await asyncio.sleep(APPEND_PAUSE_SECS)
            return await _bare_append(p, got)

        await figure()
        row.floor, row.figure = await paired(floor, figure, APPENDS, 20)
    finally:
        fo.close()
        ino.close()
        await b.api.call("POST", f"/simulations/{sid}/cancel", expect=200)


#: row 17: rdf requests timed, its parameters, and its source: a small
#: analysis (3 snapshots of 256 atoms), where the cost of the way to it shows
ANALYSES = 10
RDF_PARAMS = {"bins": 100}
RDF_SOURCE = {"box": 4, "steps": 1000, "thermo_every": 100, "dump_every": 500}


def analysis_row():
    r = Row(
        "17 analysis (rdf) request -> result",
        MS,
        "the same g(r) called in the bench process: read of the source's "
        "frames file, its JSON lines decoded, agent.analyses.rdf",
    )
    r.note = (
        f"the catalog's lammps-rdf ({RDF_PARAMS}) of a completed lammps run "
        f"({RDF_SOURCE}: 3 snapshots of 256 atoms): POST run (HTTP connection "
        "kept open) until the completed push: the source's frames as the run's "
        "input, the run op, the agent's warm worker (in the sandbox) reading "
        "them and computing g(r), the result frame, the end"
    )
    return r


async def _fresh_process(d, frames):
    """One request to a new ``python -m agent.analysis_worker``, until it exits."""
    req = {"id": 1, "analysis": "rdf", "params": RDF_PARAMS, "frames": str(frames)}
    t = time.perf_counter()
    p = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "agent.analysis_worker",
        cwd=d,
        env=floors.environ(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = await p.communicate(json.dumps(req).encode() + b"\n")
    t = time.perf_counter() - t
    if p.returncode != 0 or b'"frame"' not in out:
        raise BenchError(f"a fresh worker failed: {out[-300:]!r} {err[-300:]!r}")
    return t


def _in_process(frames):
    t = time.perf_counter()
    with open(frames, encoding="utf-8") as f:
        x = [json.loads(y) for y in f if y.strip()]
    r = analyses.ANALYSES["rdf"](x, **RDF_PARAMS)
    t = time.perf_counter() - t
    if r.get("table") != "rdf" or not r.get("rows"):
        raise BenchError(f"in-process rdf gave {str(r)[:300]}")
    return t


async def measure_analysis(b, tmp, row):
    """Row 17 through `b` (a `figures.RealAgentBench`)."""
    (src,) = await b.api.create_sims(1, "lammps", RDF_SOURCE)
    _, j = await b.run_to_end(src)
    if j["status"] != "completed":
        raise BenchError(f"the source lammps ended {j['status']}: {j['error']}")
    fr = (await b.api.call("GET", f"/simulations/{src}/frames", expect=200))["frames"]
    if not any(f.get("plot") == "snapshot" for f in fr):
        raise BenchError("the source lammps run made no snapshot")
    d = tmp / "analysis-floor"
    d.mkdir(parents=True, exist_ok=True)
    frames = d / "source_frames.jsonl"
    frames.write_text("".join(json.dumps(f) + "\n" for f in fr))
    (sid,) = await b.api.create_sims(1, "lammps-rdf", dict(RDF_PARAMS, source=src))

    async def figure():
        s, j = await b.run_to_end(sid)
        if j["status"] != "completed":
            raise BenchError(f"lammps-rdf ended {j['status']}: {j['error']}")
        return s

    async def floor():
        return _in_process(frames)

    # warm-up: the worker starts with the first request
    await figure()
    row.floor, row.figure = await paired(floor, figure, ANALYSES, 30)
    fresh = sorted([await _fresh_process(d, frames) for _ in range(3)])[1]
    f = sorted(row.figure)[len(row.figure) // 2]
    row.note += (
        f". A fresh Python process per request (python -m agent.analysis_worker, "
        f"one request, bare, no sandbox): {fresh * 1000:.1f} ms, "
        f"so the figure is {f / fresh:.2f}x that"
    )
