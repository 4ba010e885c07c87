"""Tests of the simulation codes in agent/codes and their catalog etc/codes.json.

Every code runs as a real subprocess, the way the agent starts it: ``python -m
agent.codes.<name>`` in a run directory holding ``params.json``. Each is the
leader of its own process group, so a test can check that nothing was left
behind and kill whatever was.
"""

import importlib
import json
import math
import os
import pathlib
import resource
import signal
import socket
import statistics
import subprocess
import sys
import time

import pytest

from agent.protocol import REPORT_PREFIX

_ROOT = pathlib.Path(__file__).resolve().parent.parent

_CATALOG = _ROOT / "etc" / "codes.json"

_TEST_CODES = frozenset(
    (
        "sleep",
        "burn",
        "crash",
        "forker",
        "forever",
        "fill",
        "memhog",
        "spawner",
        "probe",
        "checksum",
        "spew",
    )
)

_ALL_CODES = _TEST_CODES | {"heat", "lorenz", "stats"}

#: report.MAX_REPORTS plus the step 0 frame and a little slack
_MAX_REPORTS = 102

#: the contract's limit on one frame
_MAX_FRAME_BYTES = 20000


class _Result:
    """What a finished code did."""

    def __init__(self, proc, stdout, stderr, secs, leftover, cpu_secs):
        self.returncode = proc.returncode
        self.stdout = stdout
        self.stderr = stderr
        self.secs = secs
        self.cpu_secs = cpu_secs
        #: True if processes of its group were still alive after it exited
        self.leftover = leftover
        self.progress, self.frames, self.log = _parse(stdout)


def _parse(stdout):
    progress, frames, log = [], [], []
    for line in stdout.splitlines():
        if not line.startswith(REPORT_PREFIX):
            log.append(line)
            continue
        assert len(line.encode()) < _MAX_FRAME_BYTES, f"report of {len(line)} chars"
        m = json.loads(line[len(REPORT_PREFIX) :])
        assert isinstance(m, dict) and len(m) == 1, line[:200]
        if "progress" in m:
            f = m["progress"]
            assert isinstance(f, (int, float)) and 0 <= f <= 1, line
            progress.append(f)
        else:
            assert isinstance(m["frame"], dict), line[:200]
            frames.append(m["frame"])
    return progress, frames, log


def _env():
    # the codes must import agent from this tree, whatever cwd is
    e = dict(os.environ)
    e["PYTHONPATH"] = os.pathsep.join(
        [str(_ROOT)] + ([e["PYTHONPATH"]] if e.get("PYTHONPATH") else [])
    )
    return e


def _popen(code, params, run_dir, **kwargs):
    (run_dir / "params.json").write_text(json.dumps(params))
    return subprocess.Popen(
        [sys.executable, "-m", f"agent.codes.{code}"],
        cwd=run_dir,
        env=_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # its own group: the tests kill the group, never pytest's
        start_new_session=True,
        **kwargs,
    )


def _kill_group(proc):
    """SIGKILL what is left of `proc`'s group and reap `proc`.

    Returns:
        bool: whether any process of the group was still there
    """
    try:
        os.killpg(proc.pid, signal.SIGKILL)
        rv = True
    except ProcessLookupError:
        rv = False
    proc.wait()
    return rv


def _run(code, params, run_dir, timeout=60):
    """Run `code` to its end, then clean up its process group."""
    c = resource.getrusage(resource.RUSAGE_CHILDREN)
    p = _popen(code, params, run_dir)
    t = time.monotonic()
    try:
        out, err = p.communicate(timeout=timeout)
        secs = time.monotonic() - t
        # CPU time of the code: unlike wall time, not skewed by other load
        d = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu_secs = d.ru_utime + d.ru_stime - c.ru_utime - c.ru_stime
    finally:
        leftover = _kill_group(p)
        p.stdout.close()
        p.stderr.close()
    return _Result(p, out, err, secs, leftover, cpu_secs)


def _ok(code, params, run_dir, **kwargs):
    r = _run(code, params, run_dir, **kwargs)
    assert r.returncode == 0, r.stderr
    assert not r.leftover, f"{code} left processes behind"
    _assert_progress(r.progress)
    return r


def _assert_progress(progress, final=True):
    assert progress, "no progress reported"
    assert progress == sorted(progress), progress
    assert len(progress) <= _MAX_REPORTS
    if final:
        assert progress[-1] == 1.0
        assert 1.0 not in progress[:-1], "1.0 before the end"


def _assert_frames(frames, plot, fields):
    assert 0 < len(frames) <= _MAX_REPORTS
    prev = -1
    for f in frames:
        assert f["plot"] == plot
        assert isinstance(f["step"], int) and f["step"] > prev
        prev = f["step"]
        assert isinstance(f["time"], float) and math.isfinite(f["time"])
        n = len(f[fields[0]])
        for k in fields:
            assert len(f[k]) == n
            assert all(isinstance(v, float) and math.isfinite(v) for v in f[k])


def _gone_or_zombie(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            s = f.read()
    except FileNotFoundError:
        return True
    # the state follows the parenthesised command name
    return s[s.rindex(")") + 2] == "Z"


def _stat_fields(pid):
    """(state, ppid, pgid) from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as f:
        s = f.read()
    x = s[s.rindex(")") + 2 :].split()
    return x[0], int(x[1]), int(x[2])


def _wait_for(predicate, secs, what):
    end = time.monotonic() + secs
    while not predicate():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.02)


def test_catalog():
    # simvisor's own codes (agent/codes); the real ones (LAMMPS...) have
    # their own tests
    c = [
        x
        for x in json.loads(_CATALOG.read_text())["codes"]
        if x["command"][:2] == ["{python}", "-m"]
        and x["command"][2].startswith("agent.codes.")
    ]
    names = [x["name"] for x in c]
    assert sorted(names) == sorted(_ALL_CODES)
    on_disk = {p.stem for p in (_ROOT / "agent" / "codes").glob("*.py")} - {
        "__init__",
        "report",
    }
    assert on_disk == _ALL_CODES
    for x in c:
        n = x["name"]
        assert x["title"]
        assert x["kind"] == ("analysis" if n == "stats" else "run")
        assert x["command"] == ["{python}", "-m", f"agent.codes.{n}"]
        # burn has workers; heat's cores are Slurm tasks under the sbatch driver
        assert x["max_cores"] == (4 if n in ("burn", "heat") else 1)
        assert x["test"] is (n in _TEST_CODES)
        assert x["frames"] is (n in ("heat", "lorenz", "stats", "checksum", "spew"))
        defaults = {}
        for p in x["params"]:
            t = p["type"]
            assert t in ("int", "float", "str", "simulation", "file"), p
            assert p["label"]
            d = p["default"]
            if t in ("int", "float"):
                assert type(d) is {"int": int, "float": float}[t], p
                assert p["min"] <= d <= p["max"], p
            else:
                assert p.get("min") is None and p.get("max") is None, p
            if t == "str":
                assert isinstance(d, str)
            if "choices" in p:
                assert t == "str" and d in p["choices"], p
            defaults[p["name"]] = d
        # the code's own defaults (used when run by hand) match the catalog
        m = importlib.import_module(f"agent.codes.{n}")
        assert m.DEFAULTS == defaults, n


def test_codes_import_stdlib_only():
    mods = " ".join(f"agent.codes.{n}" for n in sorted(_ALL_CODES))
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            f"import sys, {mods.replace(' ', ', ')}; print(*sys.modules)",
        ],
        env=_env(),
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    for heavy in ("numpy", "tornado", "supervisor", "pykern", "requests"):
        assert heavy not in out


@pytest.mark.parametrize("initial", ["pulse", "step", "sine"])
def test_heat(tmp_path, initial):
    nx = 51
    steps = 3000
    r = _ok("heat", dict(steps=steps, nx=nx, alpha=1.0, initial=initial), tmp_path)
    _assert_frames(r.frames, "replace", ["x", "u"])
    assert r.frames[0]["step"] == 0 and r.frames[-1]["step"] == steps
    peak = math.inf
    for f in r.frames:
        u = f["u"]
        assert len(u) == nx
        assert f["x"][0] == 0.0 and f["x"][-1] == 1.0
        assert u[0] == 0.0 and u[-1] == 0.0
        assert min(u) >= 0.0
        # the maximum principle: a stable explicit scheme cannot create a peak
        assert max(u) <= peak + 1e-12
        peak = max(u)
    assert max(r.frames[-1]["u"]) < max(r.frames[0]["u"])
    res = json.loads((tmp_path / "result.json").read_text())
    assert res["step"] == steps and len(res["u"]) == nx
    assert res["u"] == pytest.approx(r.frames[-1]["u"], rel=1e-5, abs=1e-9)


def test_heat_sine_matches_exact_solution(tmp_path):
    # sin(pi x) decays as exp(-pi^2 alpha t); the error is O(dx^2) ~ 1e-4
    _ok("heat", dict(steps=5000, nx=101, alpha=1.0, initial="sine"), tmp_path)
    res = json.loads((tmp_path / "result.json").read_text())
    t = res["time"]
    assert t > 0.01
    u = res["u"]
    for i in (25, 50, 75):
        exact = math.exp(-math.pi**2 * t) * math.sin(math.pi * res["x"][i])
        assert u[i] == pytest.approx(exact, rel=1e-3)


def test_heat_frames_small_at_max_nx(tmp_path):
    # _parse checks the size of every report line
    r = _ok("heat", dict(steps=50, nx=500, alpha=10.0, initial="step"), tmp_path)
    assert len(r.frames[-1]["u"]) == 500


def test_lorenz(tmp_path):
    steps = 20000
    dt = 0.001
    r = _ok("lorenz", dict(steps=steps, dt=dt), tmp_path)
    _assert_frames(r.frames, "append", ["x", "y", "z"])
    assert r.frames[-1]["step"] == steps
    points = 0
    for f in r.frames:
        assert f["time"] == pytest.approx(f["step"] * dt)
        points += len(f["x"])
        # the classic attractor stays in a bounded box
        assert all(abs(v) < 100 for k in "xyz" for v in f[k])
    # few enough steps that every one is plotted, from the initial point
    assert points == steps + 1
    assert (r.frames[0]["x"][0], r.frames[0]["y"][0], r.frames[0]["z"][0]) == (1, 1, 1)
    rows = (tmp_path / "trajectory.csv").read_text().splitlines()
    assert rows[0] == "step,time,x,y,z"
    assert len(rows) == steps + 2
    last = [float(v) for v in rows[-1].split(",")]
    assert last[0] == steps
    assert last[2:] == pytest.approx(
        [r.frames[-1][k][-1] for k in "xyz"], rel=1e-5, abs=1e-6
    )


def test_lorenz_converges_below_chaos(tmp_path):
    # for rho < 24.74 trajectories spiral into C+ = (s, s, rho - 1),
    # s = sqrt(beta (rho - 1)); (1, 1, 1) lies in its basin
    rho, beta = 10.0, 8.0 / 3.0
    r = _ok("lorenz", dict(steps=20000, dt=0.005, rho=rho, beta=beta), tmp_path)
    s = math.sqrt(beta * (rho - 1))
    f = r.frames[-1]
    assert [f[k][-1] for k in "xyz"] == pytest.approx([s, s, rho - 1], abs=1e-3)


def test_lorenz_diverging_is_an_error(tmp_path):
    r = _run("lorenz", dict(steps=2000, dt=1.0), tmp_path)
    assert r.returncode != 0
    assert "diverged" in r.stderr


@pytest.mark.parametrize(
    "code,params,small,large",
    [
        ("heat", dict(nx=101), 25000, 100000),
        ("lorenz", {}, 250000, 1000000),
    ],
)
def test_run_time_grows_with_steps(tmp_path, code, params, small, large):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = _ok(code, dict(params, steps=small), tmp_path / "a")
    b = _ok(code, dict(params, steps=large), tmp_path / "b")
    # 4x the steps; interpreter startup (and, on a loaded machine, cache
    # misses of the small run) keep the ratio well below 4: a code that
    # ignored its steps would stay near 1
    assert b.cpu_secs > 1.3 * a.cpu_secs, (a.cpu_secs, b.cpu_secs)
    # however many steps, about 100 frames and progress reports
    assert len(b.frames) <= _MAX_REPORTS and len(b.progress) <= _MAX_REPORTS
    if code == "lorenz":
        points = sum(len(f["x"]) for f in b.frames)
        assert 20000 < points < 40000


def _frames_file(run_dir, frames):
    with open(run_dir / "source_frames.jsonl", "w") as f:
        for x in frames:
            f.write((x if isinstance(x, str) else json.dumps(x)) + "\n")


def test_stats_hand_made(tmp_path):
    _frames_file(
        tmp_path,
        [
            dict(step=0, time=0.0, plot="replace", x=[0.0, 0.5, 1.0], u=[1, 2, 3]),
            "",
            "not json",
            dict(
                step=10, time=0.5, x=[0.0, 0.5], u=[4.0, 5.0], note="a", f=[True, "b"]
            ),
            # a frame wrapped the way the agent sends it
            dict(seq=2, data=dict(step=20, time=1.5, u=[6])),
        ],
    )
    r = _ok("stats", dict(source="sim-1"), tmp_path)
    assert "not JSON" in r.stderr
    assert len(r.frames) == 1
    f = r.frames[0]
    assert f["plot"] == "table"
    assert (f["step"], f["time"], f["frames"]) == (20, 1.5, 3)
    assert set(f["fields"]) == {"x", "u"}
    u = f["fields"]["u"]
    assert (u["count"], u["min"], u["max"]) == (6, 1, 6)
    assert u["mean"] == pytest.approx(3.5)
    assert u["std"] == pytest.approx(math.sqrt(35 / 12))
    x = f["fields"]["x"]
    assert (x["count"], x["min"], x["max"]) == (5, 0.0, 1.0)
    assert x["mean"] == pytest.approx(0.4)
    assert json.loads((tmp_path / "stats.json").read_text()) == f


def test_stats_of_heat_run(tmp_path):
    (tmp_path / "heat").mkdir()
    (tmp_path / "stats").mkdir()
    h = _ok("heat", dict(steps=2000, nx=101, alpha=1.0), tmp_path / "heat")
    _frames_file(tmp_path / "stats", h.frames)
    r = _ok("stats", dict(source="heat-1"), tmp_path / "stats")
    assert r.secs < 10  # generous: wall time under load
    u = [v for f in h.frames for v in f["u"]]
    s = r.frames[0]["fields"]["u"]
    assert s["count"] == len(u)
    assert (s["min"], s["max"]) == (min(u), max(u))
    assert s["mean"] == pytest.approx(statistics.fmean(u))
    assert s["std"] == pytest.approx(statistics.pstdev(u))
    assert r.frames[0]["step"] == 2000


@pytest.mark.parametrize("content", [None, "", "\n\n"])
def test_stats_no_input(tmp_path, content):
    if content is not None:
        (tmp_path / "source_frames.jsonl").write_text(content)
    r = _run("stats", dict(source="x"), tmp_path)
    assert r.returncode == 2
    assert "source_frames.jsonl" in r.stderr
    assert not r.frames


def test_crash(tmp_path):
    r = _run("crash", dict(message="boom: disk on fire"), tmp_path)
    assert r.returncode == 3
    assert "boom: disk on fire" in r.stderr
    assert "boom" not in r.stdout
    assert any(x.startswith("crash:") for x in r.log)
    assert r.progress == [0.5]


def test_sleep(tmp_path):
    r = _ok("sleep", dict(secs=0.4), tmp_path)
    assert 0.4 <= r.secs < 10
    assert len(r.progress) > 2


def test_burn(tmp_path):
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_utime
    r = _ok("burn", dict(secs=0.5), tmp_path)
    cpu = resource.getrusage(resource.RUSAGE_CHILDREN).ru_utime - before
    assert 0.5 <= r.secs < 10
    # busy, not asleep (generous: the host may be loaded)
    assert cpu > 0.25
    assert len(r.progress) > 2


@pytest.mark.parametrize("n", [0, 3 * 1024 * 1024 + 17])
def test_fill(tmp_path, n):
    _ok("fill", {"bytes": n}, tmp_path)
    p = tmp_path / "fill.dat"
    assert p.stat().st_size == n
    if n:
        with open(p, "rb") as f:
            assert f.read(256) == bytes(range(256))


def test_memhog(tmp_path):
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    r = _ok("memhog", dict(mib=48, secs=0.1), tmp_path)
    assert "memhog: done" in r.log
    # the pages were touched, not just reserved (maxrss is in KiB)
    assert resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss >= max(
        before, 40 * 1024
    )


def test_spawner(tmp_path):
    r = _ok("spawner", dict(procs=5, secs=0.2), tmp_path)
    assert "spawner: started=5 refused=None" in r.log
    assert not r.leftover


def test_probe(tmp_path):
    (tmp_path / "x.txt").write_text("hello")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        p = s.getsockname()[1]
        r = _ok(
            "probe",
            {"path": f"x.txt,{tmp_path}/none", "connect": f"127.0.0.1:{p},x:y"},
            tmp_path,
        )
    assert r.log[0] == "probe: read x.txt -> ok 5 bytes"
    assert r.log[1].startswith(f"probe: read {tmp_path}/none -> refused FileNotFound")
    assert r.log[2] == f"probe: connect 127.0.0.1:{p} -> ok connected"
    assert r.log[3].startswith("probe: connect x:y -> refused ValueError")


def test_forker_children_die_with_the_group(tmp_path):
    p = _popen("forker", dict(children=3, secs=60), tmp_path)
    pids = []
    try:

        def _pids():
            # the file is written in one go; wait until it is complete
            try:
                pids[:] = [
                    int(x) for x in (tmp_path / "children.txt").read_text().split()
                ]
            except FileNotFoundError:
                return False
            return len(pids) == 3

        _wait_for(_pids, 20, "children.txt")
        for c in pids:
            _, ppid, pgid = _stat_fields(c)
            assert ppid == p.pid
            # in forker's group (forker leads it), so killpg reaches them
            assert pgid == p.pid
        assert p.poll() is None
        os.killpg(p.pid, signal.SIGKILL)
        assert p.wait() == -signal.SIGKILL
        # orphans now, reaped by init, which may leave them as zombies a while
        for c in pids:
            _wait_for(lambda c=c: _gone_or_zombie(c), 10, f"child {c} to end")
        out = p.stdout.read()
        assert " ".join(map(str, pids)) in out
    finally:
        _kill_group(p)
        p.stdout.close()
        p.stderr.close()


def test_forker_detached_children_escape_the_group(tmp_path):
    """``detach=session``: what agent.keeper must catch (keeper_test)."""
    p = _popen("forker", dict(children=2, secs=60, detach="session"), tmp_path)
    pids = []
    try:
        f = tmp_path / "children.txt"
        _wait_for(lambda: f.exists() and len(f.read_text().split()) == 2, 20, "pids")
        pids[:] = [int(x) for x in f.read_text().split()]
        for c in pids:
            _, ppid, pgid = _stat_fields(c)
            # double-forked: not forker's child, not in its group
            assert ppid != p.pid and pgid != p.pid
        os.killpg(p.pid, signal.SIGKILL)
        assert p.wait() == -signal.SIGKILL
        # the group kill missed them
        assert not any(_gone_or_zombie(c) for c in pids)
    finally:
        for c in pids:
            try:
                os.kill(c, signal.SIGKILL)
            except ProcessLookupError:
                pass
        _kill_group(p)
        p.stdout.close()
        p.stderr.close()


def test_forker_detached_ends_after_secs(tmp_path):
    r = _ok("forker", dict(children=2, secs=0.5, detach="session"), tmp_path)
    pids = [int(x) for x in (tmp_path / "children.txt").read_text().split()]
    # not its own to reap: they end by themselves at the same deadline
    for c in pids:
        _wait_for(lambda c=c: _gone_or_zombie(c), 10, f"child {c} to end")
    assert "(detached)" in r.stdout


def test_forker_ends_after_secs(tmp_path):
    r = _ok("forker", dict(children=2, secs=0.5), tmp_path)
    assert 0.5 <= r.secs < 15
    pids = [int(x) for x in (tmp_path / "children.txt").read_text().split()]
    assert len(pids) == 2
    # reaped by forker itself, so gone, not zombies
    for c in pids:
        assert not os.path.exists(f"/proc/{c}")


def test_forever(tmp_path):
    p = _popen("forever", {}, tmp_path)
    try:
        time.sleep(1.5)
        assert p.poll() is None
    finally:
        assert _kill_group(p)
        out = p.stdout.read()
        p.stdout.close()
        p.stderr.close()
    assert p.returncode == -signal.SIGKILL
    r = _parse(out)
    assert "forever: heartbeat 1" in r[2]
    _assert_progress(r[0], final=False)
    assert r[0][-1] < 1


def test_params_by_hand(tmp_path):
    # no params.json: a code run by hand uses its defaults
    p = subprocess.run(
        [sys.executable, "-m", "agent.codes.crash"],
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert p.returncode == 3
    assert "simulated failure" in p.stderr
    # unknown parameters are logged, not fatal
    r = _run("crash", dict(message="m", bogus=1), tmp_path)
    assert r.returncode == 3 and "bogus" in r.stderr
