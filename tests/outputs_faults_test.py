"""A code's followed files misbehaving, end to end: a real supervisor, a real local agent.

A flood of thermo rows, a dump of GBs, a file that never appears, garbage:
each gives a clear log line or a bounded, degraded plot, never a stuck run
nor an agent out of memory (the agent's RSS is read from /proc).
"""

import pathlib
import re
import shutil
import statistics
import threading
import time

import pytest
import requests

from conftest import procs_under, wait_for

_ENDED = ("completed", "error", "canceled", "timed_out")

#: the agent's resident memory must stay under this through any fault
_MAX_AGENT_RSS_MB = 250


def _run_dir(server, sim_id):
    return server.data_dir / "run" / "admin" / sim_id


def _log(server, sim_id):
    return server.api("GET", f"/simulations/{sim_id}/log", expect=200).text


def _agent_pid(server):
    a = server.api("GET", "/admin/agents", expect=200).json()
    return a[0]["pid"] if a else None


def _rss_mb(pid):
    try:
        t = pathlib.Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0
    return int(re.search(r"VmRSS:\s+(\d+) kB", t).group(1)) / 1024


class _Watch:
    """In a thread while a run goes on: the agent's peak RSS, the slowest health reply."""

    def __init__(self, server):
        self._server = server
        self.max_rss_mb = 0.0
        self.max_health_secs = 0.0
        self.health_fails = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *_):
        self._stop.set()
        self._thread.join(10)

    def _loop(self):
        while not self._stop.is_set():
            p = _agent_pid(self._server)
            if p:
                self.max_rss_mb = max(self.max_rss_mb, _rss_mb(p))
            t = time.monotonic()
            try:
                r = requests.get(self._server.url + "/api/health", timeout=5)
                if r.status_code != 200:
                    self.health_fails += 1
            except requests.RequestException:
                self.health_fails += 1
            self.max_health_secs = max(self.max_health_secs, time.monotonic() - t)
            self._stop.wait(0.1)


def _rows(frames):
    """The thermo rows of the rows frames, in order."""
    rv = []
    for f in frames:
        if f["plot"] == "rows":
            assert f["columns"] == ["Step", "Temp", "E_pair"], f["columns"]
            rv.extend(f["rows"])
    return rv


def test_a_flood_of_thermo_rows_is_thinned_and_ends(server):
    """spew writes as fast as it can for 8 s (millions of rows): the agent
    keeps fewer rows as they go on, its memory stays bounded, the run ends."""
    s = server.create("admin", "spew", lines=1_000_000_000, secs=8.0)
    server.run("admin", s["id"])
    with _Watch(server) as w:
        j = server.wait_status("admin", s["id"], _ENDED, 60)
    assert j["status"] == "completed", (j["error"], j["situation"])
    log = _log(server, s["id"])
    m = re.search(r"spew: wrote (\d+) rows, (\d+) bytes .* \((\d+) lines/s\)", log)
    assert m, log[-2000:]
    written, size, rate = (int(x) for x in m.groups())
    print(
        f"flood: {written} rows, {size} bytes, {rate} lines/s; agent rss"
        f" max {w.max_rss_mb:.0f} MB; health max {w.max_health_secs:.3f} s"
    )
    assert written >= 1_000_000, m.group(0)
    assert w.max_rss_mb < _MAX_AGENT_RSS_MB, w.max_rss_mb
    assert w.health_fails == 0 and w.max_health_secs < 2, vars(w)
    # the rows kept thin out as the flood goes on, and the end was skipped to
    assert "rows: from here on" in log, log[-2000:]
    rows = _rows(server.frames("admin", s["id"]))
    steps = [r[0] for r in rows]
    assert steps == sorted(set(steps)) and steps[:3] == [1, 2, 3], steps[:5]
    assert len(rows) < 400_000, len(rows)
    # the last row written is in the plot: the end of the file was read
    assert steps[-1] == written, (steps[-1], written)
    assert not procs_under(_run_dir(server, s["id"]))
    # the agent is still there, and answers
    assert _agent_pid(server)


def test_the_result_counts_every_row_the_thinning_drops(server):
    s = server.create("admin", "spew", lines=50_000)
    server.run("admin", s["id"])
    j = server.wait_status("admin", s["id"], _ENDED, 60)
    assert j["status"] == "completed", j
    rows = _rows(server.frames("admin", s["id"]))
    assert "rows: from here on" in _log(server, s["id"]) and len(rows) < 40_000
    # spew's Temp of step i is i % 7 + 0.5
    mean = statistics.fmean(i % 7 + 0.5 for i in range(1, 50_001))
    assert j["result"] == {
        "rows": 50_000,
        "step_last": 50_000,
        "temp_mean": pytest.approx(mean, rel=1e-12),
    }


def test_a_flood_is_canceled_promptly(server):
    s = server.create("admin", "spew", lines=1_000_000_000, secs=60.0)
    server.run("admin", s["id"])
    d = _run_dir(server, s["id"])
    wait_for(
        lambda: (d / "log.spew").exists() and (d / "log.spew").stat().st_size > 100e6,
        30,
        what="a 100 MB flood",
    )
    with _Watch(server) as w:
        t = time.monotonic()
        j = server.api("POST", f"/simulations/{s['id']}/cancel", expect=200).json()
        secs = time.monotonic() - t
    print(f"cancel of a flood: {secs:.2f} s, agent rss max {w.max_rss_mb:.0f} MB")
    assert j["status"] == "canceled" and secs < 5, (j, secs)
    assert not procs_under(d)
    assert w.max_rss_mb < _MAX_AGENT_RSS_MB
    assert "were not read (the run was stopped)" in _log(server, s["id"])


def test_a_file_never_written_is_said_so(server):
    s = server.create("admin", "spew", mode="nothing")
    server.run("admin", s["id"])
    j = server.wait_status("admin", s["id"], _ENDED, 30)
    assert j["status"] == "completed" and j["frames"] == 0, j
    assert "[simvisor agent: log.spew was not written]\n" in _log(server, s["id"])
    assert not procs_under(_run_dir(server, s["id"]))


def test_garbage_in_a_followed_file_is_skipped(server):
    """Random bytes, invalid UTF-8, a 10 MB line without its newline."""
    s = server.create("admin", "spew", mode="garbage", garbage_bytes=10 * 1024 * 1024)
    server.run("admin", s["id"])
    with _Watch(server) as w:
        j = server.wait_status("admin", s["id"], _ENDED, 30)
    assert j["status"] == "completed", (j["error"], j["situation"])
    assert w.max_rss_mb < _MAX_AGENT_RSS_MB
    log = _log(server, s["id"])
    assert re.search(r"log\.spew: line \d+ is longer than 65536 bytes: dropped", log)
    f = server.frames("admin", s["id"])
    # the good rows, every one, and nothing of the garbage
    assert [r[0] for r in _rows(f)] == list(range(1, 201))
    assert {x["run"] for x in f} == {1, 2}
    assert _agent_pid(server)


_DECK = """units lj
atom_style atomic
lattice fcc 0.8442
region box block 0 {cells} 0 {cells} 0 {cells}
create_box 1 box
create_atoms 1 box
mass 1 1.0
# no forces, atoms at rest: each step costs the dump only
pair_style zero 1.0
pair_coeff * *
neigh_modify delay 0 every 1000 check yes
fix 1 all nve
thermo 10
dump 1 all atom 1 dump.atoms
# the steps for the size wanted, or fewer if the machine is slow
timer timeout {secs} every 5
run {steps}
"""

#: 40^3 fcc cells: 256,000 atoms, ~6.9 MB a snapshot
_CELLS = 40
_SNAPSHOT_BYTES = 6_880_000

#: lmp's wall time at most (LAMMPS's ``timer timeout``)
_DUMP_SECS = 40


@pytest.mark.skipif(not shutil.which("lmp"), reason="Debian's lammps is not installed")
def test_a_dump_of_gigabytes_is_subsampled_and_ends(server):
    """lmp writes a dump of 2 GiB, or what it can in `_DUMP_SECS` (beside
    the agent on 2 shared cores it wrote 18 to 30 MB/s); the agent parses
    ~14 MB/s, so it falls behind, and at the end reads the last snapshot
    after a gap it says in the log."""
    want = 2 * 1024**3
    free = shutil.disk_usage(server.data_dir).free
    if free < 2 * want:
        pytest.skip(f"{free} bytes free: a {want} byte dump needs twice that")
    steps = want // _SNAPSHOT_BYTES
    s = server.create("admin", "lammps-deck")
    server.api(
        "POST",
        f"/simulations/{s['id']}/files?name=in.lammps",
        data=_DECK.format(cells=_CELLS, steps=steps, secs=_DUMP_SECS).encode(),
        expect=201,
    )
    t = time.monotonic()
    server.run("admin", s["id"], cores=1)
    d = _run_dir(server, s["id"])
    try:
        with _Watch(server) as w:
            j = server.wait_status("admin", s["id"], _ENDED, 120)
        secs = time.monotonic() - t
        size = (d / "dump.atoms").stat().st_size
        log = _log(server, s["id"])
        gap = re.search(r"dump\.atoms: (\d+) bytes were not read", log)
        print(
            f"dump: {size} bytes in {secs:.1f} s ({size / secs / 1e6:.0f} MB/s);"
            f" agent rss max {w.max_rss_mb:.0f} MB;"
            f" not read {gap and gap.group(1)};"
            f" {re.findall(r'Total wall time: .*', log)}"
        )
        assert j["status"] == "completed", (j["error"], j["situation"])
        assert size >= want or "Wall time limit reached" in log, size
        assert size >= 512 * 1024**2, size
        assert w.max_rss_mb < _MAX_AGENT_RSS_MB
        f = server.frames("admin", s["id"])
        snaps = [x for x in f if x["plot"] == "snapshot"]
        assert snaps and all(
            x["natoms"] == 256_000 and len(x["atoms"]) == 2000 for x in snaps
        )
        # the first snapshots as they came, and the very last one
        with open(d / "dump.atoms", "rb") as x:
            x.seek(size - 2 * _SNAPSHOT_BYTES)
            last = int(re.findall(rb"ITEM: TIMESTEP\n(\d+)\n", x.read())[-1])
        assert snaps[0]["step"] == 0 and snaps[-1]["step"] == last
        steps_seen = [x["step"] for x in snaps]
        assert steps_seen == sorted(set(steps_seen))
        assert gap, log[-3000:]
        assert not procs_under(d)
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _run_record(run_dir, frames):
    from agent import run

    r = run.Run(
        dict(
            run_id="r-1",
            op_id=0,
            kind="run",
            code="spew",
            argv=["true"],
            params={},
            inputs={},
            run_dir=str(run_dir),
            cores=1,
            max_run_secs=60,
            follow=[{"file": "log.spew", "parser": "lammps_log"}],
            steps=None,
        ),
        lambda r, kind: frames.append(r.frames[-1]) if kind == "frame" else None,
    )
    r.dir = run_dir
    return r


async def test_a_skipped_backlog_is_replayed_as_it_was_read(tmp_path, monkeypatch):
    """The end's skip is journaled: an agent that re-attaches the run makes
    the same frames (thinned the same way) from the same pieces."""
    from agent import outputs, reads

    monkeypatch.setattr(outputs, "END_READ_SECS", 0.0)
    monkeypatch.setattr(outputs, "END_TAIL_BYTES", 100_000)
    monkeypatch.setattr(outputs, "ROWS_PER_STRIDE", 1000)
    rows = b"".join(b"%d 1.5 -6.25\n" % i for i in range(1, 400_001))
    (tmp_path / "log.spew").write_bytes(b"Step Temp E_pair\n" + rows)
    first = []
    r = _run_record(tmp_path, first)
    o = outputs.Outputs(r, None, reads.Journal(tmp_path / "reads"))
    o._journal.create()
    o.end()
    o.close()
    steps = [x[0] for f in first for x in f["rows"]]
    # thinned from row 1000 on, a gap, then the tail to the last row
    assert steps[:3] == [1, 2, 3] and steps[-1] == 400_000
    assert steps == sorted(set(steps)) and len(steps) < 20_000
    log = r.log.text_from(0, 10**6)[1]
    assert re.search(r"log\.spew: \d+ bytes were not read", log), log
    again = []
    r2 = _run_record(tmp_path, again)
    o2 = outputs.Outputs(r2, None, reads.Journal(tmp_path / "reads"))
    assert o2.replay() > 0
    o2.close()
    assert again == first
