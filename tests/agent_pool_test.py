"""The agent's process pool, in-process, with real processes.

Every test ends with no process of any of its runs left (the fixture
SIGKILLs what remains and fails the test if it had to).
"""

import asyncio
import json
import os
import signal
import sys
import textwrap
import time

import pytest

from agent import connection, pool, protocol, reap, records, run, rundir
from agent_ops import Events, run_op

pytestmark = pytest.mark.timeout(30)

GRACE_SECS = 0.5


@pytest.fixture
def events():
    return Events()


@pytest.fixture
async def make_pool(tmp_path, events):
    """Pools with small limits; afterwards, every process of theirs is gone."""
    made = []

    def make(**kwargs):
        p = pool.Pool(
            **{
                "run_root": tmp_path / "runs",
                "kill_grace_secs": GRACE_SECS,
                "max_procs": 4,
                "max_analyses": 2,
                "on_event": events,
                **kwargs,
            }
        )
        made.append(p)
        return p

    yield make
    left = []
    try:
        for p in made:
            for r in p.runs.values():
                if r.pid is not None and reap.group_pids(r.pid):
                    left.append(r.run_id)
                    os.killpg(r.pid, signal.SIGKILL)
            p.destroy()
            await p.join()
    finally:
        for p in made:
            for r in p.runs.values():
                if r.pid is not None:
                    try:
                        os.killpg(r.pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
    assert not left, f"processes left behind by runs={left}"


def _op(run_id, argv, kind="run", **kwargs):
    return run_op(run_id, argv, kind, **kwargs)


def _code(name):
    return ["{python}", "-m", f"agent.codes.{name}"]


def _script(tmp_path, name, text):
    p = tmp_path / f"{name}.py"
    p.write_text(textwrap.dedent(text))
    return ["{python}", str(p)]


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            s = f.read()
    except FileNotFoundError:
        return False
    return s[s.rfind(b")") + 2 :].split()[0] != b"Z"


async def test_heat_completes_with_events_in_order(make_pool, events):
    p = make_pool()
    r = p.start(_op("h1", _code("heat"), params={"steps": 2000, "nx": 21}))
    await r.ended
    kinds = [k for k, _ in events.of("h1")]
    assert kinds[0] == "started" and kinds[-1] == "exited"
    assert kinds.count("exited") == 1
    assert r.status == "completed" and r.exit_code == 0 and r.error is None
    prog = [v for _, v in events.of("h1", "progress")]
    assert prog == sorted(prog) and prog[-1] == 1.0
    steps = [f["step"] for f in r.frames]
    assert len(steps) > 10 and steps == sorted(steps)
    assert len(events.of("h1", "frame")) == len(r.frames)
    t = r.log.text_from(0, 10**6)[1]
    assert "heat: nx=21" in t and "heat: wrote" in t
    assert protocol.REPORT_PREFIX not in t
    assert (r.dir / run.LOG_FILE).read_text() == t
    assert json.loads((r.dir / rundir.PARAMS_FILE).read_text()) == {
        "steps": 2000,
        "nx": 21,
    }
    assert p.forget("h1") and "h1" not in p.runs


async def test_the_run_table_holds_a_run_until_it_is_forgotten(make_pool, tmp_path):
    p = make_pool(work_dir=tmp_path / "work", owner="a1")
    code = "import sys; print('out', flush=True); print('err', file=sys.stderr)"
    r = p.start(_op("t1", [sys.executable, "-c", code]))
    await r.ended
    assert r.status == "completed" and r.log.text_from(0, 100)[1] == "out\nerr\n"
    d = tmp_path / "work" / "runs" / "t1"
    e = json.loads((d / "run.json").read_text())
    assert (e["op"]["run_id"], e["keeper_pid"], e["owner"]) == ("t1", r.pid, "a1")
    # outside the run root: neither the code nor a user's file ops see it
    assert not d.is_relative_to(p.run_root)
    assert p.forget("t1") and not d.exists()


async def test_without_a_work_dir_the_table_is_temporary(make_pool):
    p = make_pool()
    d = p.table.dir
    r = p.start(_op("t2", _code("sleep"), params={"secs": 0}))
    await r.ended
    assert (d / "t2" / "run.json").exists()
    p.destroy()
    await p.join()
    assert not d.exists()


async def test_crash_is_an_error_with_the_stderr_tail(make_pool):
    p = make_pool()
    r = p.start(_op("c1", _code("crash"), params={"message": "boom at step 7"}))
    await r.ended
    assert (r.status, r.exit_code, r.error) == ("error", 3, "boom at step 7")
    assert "crash: about to fail" in r.log.text_from(0, 10**6)[1]


async def test_exit_without_stderr_says_code_or_signal(make_pool, tmp_path):
    p = make_pool()
    a = p.start(_op("x1", _script(tmp_path, "x1", "import sys; sys.exit(5)")))
    b = p.start(
        _op("x2", _script(tmp_path, "x2", "import os; os.kill(os.getpid(), 9)"))
    )
    await asyncio.gather(a.ended, b.ended)
    assert (a.status, a.exit_code, a.error) == ("error", 5, "exit code 5")
    assert (b.status, b.exit_code, b.error) == ("error", -9, "killed by signal 9")


async def test_cancel_kills_the_whole_group(make_pool, events):
    p = make_pool()
    r = p.start(_op("f1", _code("forker"), params={"children": 3, "secs": 3600}))
    await events.until(lambda: "forker: children" in r.log.text_from(0, 10**6)[1])
    kids = [int(x) for x in (r.dir / "children.txt").read_text().split()]
    assert len(kids) == 3 and all(_alive(k) for k in kids)
    t = time.monotonic()
    await p.cancel("f1")
    assert time.monotonic() - t < GRACE_SECS + 1
    assert r.status == "canceled"
    assert events.of("f1")[-1] == ("exited", "canceled")
    assert not reap.group_pids(r.pid)
    assert not any(_alive(k) for k in [*kids, r.pid])
    # a second cancel, or of an unknown run, is fine
    await p.cancel("f1")
    await p.cancel("nope")
    assert len(events.of("f1", "exited")) == 1


_IGNORES_TERM = """
    import os, subprocess, sys, time
    c = subprocess.Popen([sys.executable, "-c", ";".join((
        "import signal, time",
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)",
        "print('child ready', flush=True)",
        "time.sleep(60)",
    ))])
    print(f"leader pid={os.getpid()} child={c.pid}", flush=True)
    time.sleep(60)
"""


async def test_child_ignoring_sigterm_is_killed_after_the_grace(
    make_pool, events, tmp_path
):
    p = make_pool()
    r = p.start(_op("t1", _script(tmp_path, "t1", _IGNORES_TERM)))
    await events.until(lambda: "child ready" in r.log.text_from(0, 10**6)[1])
    t = time.monotonic()
    await p.cancel("t1")
    d = time.monotonic() - t
    assert GRACE_SECS * 0.9 <= d < GRACE_SECS + 2
    assert r.status == "canceled" and r.exit_code == -signal.SIGTERM
    assert not reap.group_pids(r.pid)


async def test_max_run_secs_times_out(make_pool):
    p = make_pool()
    t = time.monotonic()
    r = p.start(_op("m1", _code("forever"), max_run_secs=0.5))
    await r.ended
    assert 0.5 <= time.monotonic() - t < 0.5 + GRACE_SECS + 2
    assert r.status == "timed_out" and "max run time" in r.error
    assert not reap.group_pids(r.pid)


async def test_orphaned_child_of_a_completed_run_is_killed(make_pool, tmp_path):
    p = make_pool()
    s = _script(
        tmp_path,
        "o1",
        """
        import subprocess, sys
        c = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        print(f"child={c.pid}", flush=True)
        """,
    )
    r = p.start(_op("o1", s))
    await r.ended
    assert r.status == "completed"
    k = int(r.log.text_from(0, 10**6)[1].split("child=")[1].split()[0])
    assert not _alive(k)


async def test_environment_is_clean(make_pool, tmp_path, monkeypatch):
    monkeypatch.setenv("SIMVISOR_AGENT_SECRET", "s3cret-value")
    monkeypatch.setenv("PYTHONPATH", "/should/not/leak")
    p = make_pool()
    s = _script(
        tmp_path,
        "env",
        """
        import json, os
        json.dump(dict(os.environ), open("env.json", "w"))
        """,
    )
    r = p.start(_op("e1", s, cores=3))
    await r.ended
    assert r.status == "completed", r.error
    x = json.loads((r.dir / "env.json").read_text())
    assert set(x) <= {
        "PATH",
        "HOME",
        "LANG",
        "TMPDIR",
        "SIMVISOR_CORES",
        "OMP_NUM_THREADS",
        # hwloc's complaint that the sandbox has no /sys, silenced
        "HWLOC_HIDE_ERRORS",
    }
    assert x["SIMVISOR_CORES"] == "3" and x["OMP_NUM_THREADS"] == "3"
    assert not any("s3cret" in v for v in x.values())


async def test_run_dir_outside_run_root_is_refused(make_pool, events, tmp_path):
    p = make_pool()
    (tmp_path / "outside").mkdir()
    (p.run_root / "u").mkdir()
    (p.run_root / "u" / "link").symlink_to(tmp_path / "outside")
    bad = ["../escape", "/etc", ".", "u/..", "u/link/x", "u/link"]
    runs = [p.start(_op(f"d{i}", _code("sleep"), run_dir=d)) for i, d in enumerate(bad)]
    await asyncio.gather(*(r.ended for r in runs))
    for r in runs:
        assert r.status == "error" and "not inside run_root" in r.error, r.run_dir
        assert [k for k, _ in events.of(r.run_id)] == ["exited"]
    assert list((tmp_path / "outside").iterdir()) == []


async def test_inputs_and_a_fresh_run_dir(make_pool, tmp_path):
    p = make_pool()
    s = _script(
        tmp_path,
        "ls",
        """
        import os
        print(sorted(os.listdir(".")), open("in.txt").read(), flush=True)
        """,
    )
    d = p.run_root / "u" / "same"
    d.mkdir(parents=True)
    (d / "stale.dat").write_text("from a previous run")
    r = p.start(_op("i1", s, run_dir="u/same", inputs={"in.txt": "hello"}))
    await r.ended
    assert r.status == "completed", r.error
    assert "['in.txt', 'params.json', 'run.log'] hello" in r.log.text_from(0, 999)[1]
    for n in ("../x", "a/b", "", ".", rundir.PARAMS_FILE):
        b = p.start(_op(f"bad{len(p.runs)}", s, inputs={n: "x"}))
        await b.ended
        assert b.status == "error" and "plain file name" in b.error


async def test_spawn_failure_is_an_error(make_pool):
    p = make_pool()
    r = p.start(_op("n1", ["/nonexistent/simulation"]))
    await r.ended
    assert r.status == "error" and "cannot start" in r.error
    with pytest.raises(records.PoolError):
        p.start(_op("n1", ["/nonexistent/simulation"]))


async def test_malformed_reports_go_to_the_log(make_pool, tmp_path):
    p = make_pool()
    s = _script(
        tmp_path,
        "rep",
        f"""
        P = {protocol.REPORT_PREFIX!r}
        print(P + '{{"progress": 0.5}}')
        print(P + '{{"progress": NaN}}')
        print(P + '{{"progress": 7}}')
        print(P + 'not json')
        print(P + '{{"frame": {{"step": 1}}}}')
        print(P + '{{"frame": [1]}}')
        print("plain\\r")
        # too long to be a report, even where a piece starts like one
        print("x" * {run.MAX_LINE_BYTES} + P + '{{"progress": 0.9}}')
        import sys; sys.stdout.write("no newline at the end")
        """,
    )
    r = p.start(_op("r1", s))
    await r.ended
    assert r.status == "completed", r.error
    assert r.progress == 0.5 and r.frames == [{"step": 1}]
    t = r.log.text_from(0, 10**7)[1]
    for x in ("NaN", '"progress": 7', "not json", '"frame": [1]', '"progress": 0.9'):
        assert x in t
    assert "plain\n" in t and t.endswith("no newline at the end")


async def test_analysis_lane_is_not_blocked_by_runs(make_pool, events):
    p = make_pool(max_procs=1, max_analyses=1)
    f = p.start(_op("l1", _code("forever")))
    q = p.start(_op("l2", _code("sleep"), params={"secs": 0}))
    a = p.start(_op("a1", _code("sleep"), kind="analysis", params={"secs": 0}))
    await a.ended
    assert a.status == "completed" and a.kind == "analysis"
    assert q.state == "queued" and not events.of("l2")
    # a queued run that is canceled never starts
    await p.cancel("l2")
    assert q.status == "canceled" and [k for k, _ in events.of("l2")] == ["exited"]
    assert q.pid is None
    await p.cancel("l1")
    assert f.status == "canceled"


async def test_destroy_kills_everything(make_pool, events):
    p = make_pool()
    r = p.start(_op("k1", _code("forker"), params={"children": 2, "secs": 3600}))
    await events.until(lambda: "forker: children" in r.log.text_from(0, 10**6)[1])
    kids = [int(x) for x in (r.dir / "children.txt").read_text().split()]
    p.destroy()
    await p.join()
    assert not reap.group_pids(r.pid) and not any(_alive(k) for k in kids)
    with pytest.raises(records.PoolError):
        p.start(_op("k2", _code("sleep")))


def test_log_text_keeps_the_tail_with_offsets():
    t = run.LogText(max_chars=10)
    t.append("abcdef")
    assert t.text_from(0, 100) == (0, "abcdef")
    assert t.text_from(2, 3) == (2, "cde")
    t.append("ghijklmn")
    assert (t.start, t.end, t.trimmed) == (4, 14, True)
    assert t.text_from(0, 100) == (4, "efghijklmn")
    assert t.text_from(12, 100) == (12, "mn")
    assert t.text_from(14, 100) == (14, "")
    big = run.LogText(max_chars=10**6)
    for i in range(5000):
        big.append(f"{i:05d}\n")
    assert big.text_from(6 * 4321, 12) == (6 * 4321, "04321\n04322\n")


def test_backoff_is_exponential_with_full_jitter():
    def caps(n):
        return [connection.backoff_secs(a, 0.1, 10, rand=lambda: 1.0) for a in range(n)]

    assert caps(9) == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 10, 10])
    assert connection.backoff_secs(3, 0.1, 10, rand=lambda: 0.0) == 0
    assert connection.backoff_secs(10**6, 0.1, 10, rand=lambda: 0.5) == 5
    assert 0 <= connection.backoff_secs(2, 0.1, 10) < 0.4


def test_agent_imports_no_pykern():
    import subprocess

    r = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, agent.client, agent.__main__;"
            " print(any(m.startswith(('pykern', 'supervisor')) for m in sys.modules))",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert r.stdout.strip() == "False"
