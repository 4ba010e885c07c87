"""Runs whose processes never escape: `agent.keeper` alone, under the pool, end to end.

A code whose children double-fork into a session of their own (forker with
``detach=session``) leaves nothing after a cancel, a time out or its own end;
an agent SIGKILLed under a run takes the run's whole tree with it, and the
supervisor ends the run `error` at once.
"""

import os
import pathlib
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from agent import cgroup, keeper, pool
from conftest import ROOT, procs_under, wait_for
from agent_ops import Events, run_op

pytestmark = pytest.mark.timeout(60)

GRACE_SECS = 0.5

#: the tree's forker by path: a run's environment has no PYTHONPATH, so
#: ``-m agent.codes.forker`` would be the installed copy, not this tree's
_FORKER = ["{python}", str(ROOT / "agent" / "codes" / "forker.py")]

_DETACHED = {"children": 3, "secs": 600, "detach": "session"}


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            s = f.read()
    except FileNotFoundError:
        return False
    return s[s.rfind(b")") + 2 :].split()[0] != b"Z"


def _stat(pid):
    with open(f"/proc/{pid}/stat", "rb") as f:
        s = f.read()
    x = s[s.rfind(b")") + 2 :].split()
    # ppid, pgid, session
    return int(x[1]), int(x[2]), int(x[3])


# --- the walk, in-process ----------------------------------------------------


def test_descendants_of_a_table():
    t = {10: 1, 11: 10, 12: 11, 13: 10, 20: 1, 21: 20, 14: 13}
    d = keeper.descendants(10, t)
    assert sorted(d) == [11, 12, 13, 14]
    # parents before children
    assert d.index(11) < d.index(12) and d.index(13) < d.index(14)
    assert keeper.descendants(20, t) == [21]
    assert keeper.descendants(12, t) == []
    assert keeper.descendants(99, t) == []
    # a table read as processes come and go may hold a loop: it ends
    assert sorted(keeper.descendants(30, {31: 30, 32: 31, 30: 32})) == [31, 32]


_TREE = """
    import os, sys, time
    # a child in its own session, and its child: outside our group and session
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            time.sleep(60)
            os._exit(0)
        time.sleep(60)
        os._exit(0)
    print("ready", flush=True)
    time.sleep(60)
"""


def test_walk_and_signal_a_real_tree_across_sessions():
    p = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(_TREE)],
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        assert p.stdout.readline() == b"ready\n"
        wait_for(
            lambda: len(keeper.descendants(p.pid, keeper.proc_table())) == 2,
            what="two descendants",
        )
        ds = keeper.descendants(p.pid, keeper.proc_table())
        assert {_stat(d)[2] for d in ds} != {p.pid}, "not in a session of its own"
        # (the suite's process may have other children too)
        assert p.pid in keeper.descendants(os.getpid(), keeper.proc_table())
        assert keeper.signal_tree(p.pid, signal.SIGKILL) == 2
        # the child is p's to reap; the grandchild, orphaned, init's
        wait_for(lambda: not any(_alive(d) for d in ds), what="the tree killed")
        assert p.poll() is None
        assert keeper.signal_tree(p.pid, signal.SIGKILL) == 0
    finally:
        p.kill()
        p.wait()
        p.stdout.close()


# --- the keeper as a process ------------------------------------------------


def _keeper(command, grace_secs=GRACE_SECS, **kwargs):
    return subprocess.Popen(
        keeper.argv(command, grace_secs),
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        **kwargs,
    )


def _script(tmp_path, text):
    p = tmp_path / "code.py"
    p.write_text(textwrap.dedent(text))
    return [sys.executable, str(p)]


@pytest.mark.parametrize(
    "text,rc",
    [
        ("import sys; sys.exit(5)", 5),
        ("pass", 0),
        ("import os; os.kill(os.getpid(), 9)", -9),
        ("import os; os.kill(os.getpid(), 15)", -15),
        ("import os; os.abort()", -6),
    ],
)
def test_exits_as_the_code_did(tmp_path, text, rc):
    k = _keeper(_script(tmp_path, text))
    assert k.wait(10) == rc


def test_cannot_start_is_said_on_stderr(tmp_path):
    k = _keeper(["/nonexistent/code"], stderr=subprocess.PIPE)
    _, e = k.communicate(timeout=10)
    assert k.returncode == keeper.CANNOT_START
    assert e.decode().startswith("cannot start /nonexistent/code: ")


_DOUBLE_FORK = """
    import os, sys, time
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            open("g.tmp", "w").write(str(os.getpid()))
            os.rename("g.tmp", "grandchild.pid")
            time.sleep(60)
        os._exit(0)
    os.wait()
    while not os.path.exists("grandchild.pid"):
        time.sleep(0.01)
    print("ready", flush=True)
    time.sleep(float(sys.argv[1]))
"""


@pytest.mark.parametrize(
    "how,rc",
    [("code_ends", 0), (keeper.STOP_SIGNAL, -15), (keeper.KILL_SIGNAL, -9)],
)
def test_a_double_forked_grandchild_never_outlives_the_keeper(tmp_path, how, rc):
    k = _keeper(
        [*_script(tmp_path, _DOUBLE_FORK), "0.5" if how == "code_ends" else "60"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
    )
    try:
        assert k.stdout.readline() == b"ready\n"
        g = int((tmp_path / "grandchild.pid").read_text())
        ppid, _, sid = _stat(g)
        # the subreaper holds it: in another session, the keeper's child
        assert ppid == k.pid and sid != k.pid
        t = time.monotonic()
        if how != "code_ends":
            k.send_signal(how)
        assert k.wait(10) == rc
        # the grandchild ignores no signal: no grace needed for it
        assert time.monotonic() - t < 1.5
        assert not _alive(g)
        assert not procs_under(tmp_path)
    finally:
        k.kill()
        k.wait()
        k.stdout.close()


_IGNORES_TERM = """
    import os, signal, sys, time
    if os.fork() == 0:
        os.setsid()
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print("ready", flush=True)
        time.sleep(60)
        os._exit(0)
    time.sleep(60)
"""


def test_sigterm_then_sigkill_after_the_grace(tmp_path):
    k = _keeper(_script(tmp_path, _IGNORES_TERM), cwd=tmp_path, stdout=subprocess.PIPE)
    try:
        assert k.stdout.readline() == b"ready\n"
        t = time.monotonic()
        k.send_signal(keeper.STOP_SIGNAL)
        # the code heeded SIGTERM, its child did not: SIGKILLed at the grace
        assert k.wait(10) == -signal.SIGTERM
        assert GRACE_SECS * 0.9 <= time.monotonic() - t < GRACE_SECS + 2
        assert not procs_under(tmp_path)
    finally:
        k.kill()
        k.wait()
        k.stdout.close()


# --- under the pool -----------------------------------------------------------


@pytest.fixture(params=["off", "auto"])
async def pool_of(tmp_path, request):
    """A pool, with run cgroups or without (the /proc walk); afterwards no
    process of it is left, nor a cgroup (or the test fails)."""
    ev = Events()
    n = f"simvisor-test-{os.getpid()}-{tmp_path.name}"
    cg = cgroup.for_agent(request.param, name=n)
    if request.param != "off" and cg.mode == "none":
        pytest.skip(f"no writable cgroup here: {cg.reason}")
    p = pool.Pool(tmp_path / "runs", GRACE_SECS, 4, 2, ev, cgroups=cg)
    yield p, ev
    left = procs_under(p.run_root)
    p.destroy()
    await p.join()
    for x in procs_under(p.run_root):
        os.kill(x, signal.SIGKILL)
    cg.remove()
    assert not left, f"processes left behind={left}"
    made = [x for x in (cg.unified, *(d for _, d in cg.parents.values())) if x]
    assert not any(os.path.exists(x) for x in made), "cgroups left behind"


def _op(run_id, argv, **kwargs):
    return run_op(run_id, argv, code="forker", **kwargs)


async def _detached_children(run, events):
    await events.until(lambda: "forker: children" in run.log.text_from(0, 10**6)[1], 20)
    kids = [int(x) for x in (run.dir / "children.txt").read_text().split()]
    assert len(kids) == 3 and all(_alive(k) for k in kids)
    for k in kids:
        ppid, pgid, sid = _stat(k)
        # outside the run's group and session; the keeper is their parent
        assert pgid != run.pid and sid != run.pid and ppid == run.pid
    return kids


async def test_cancel_of_a_double_forked_tree_leaves_nothing(pool_of):
    p, events = pool_of
    r = p.start(_op("c1", _FORKER, params=_DETACHED))
    kids = await _detached_children(r, events)
    t = time.monotonic()
    await p.cancel("c1")
    assert time.monotonic() - t < GRACE_SECS + 1
    assert r.status == "canceled" and r.exit_code == -signal.SIGTERM
    assert not any(_alive(k) for k in kids)
    assert not procs_under(r.dir)


async def test_time_out_of_a_double_forked_tree_leaves_nothing(pool_of):
    p, events = pool_of
    r = p.start(_op("t1", _FORKER, params=_DETACHED, max_run_secs=1.5))
    kids = await _detached_children(r, events)
    await r.ended
    assert r.status == "timed_out" and "max run time" in r.error
    assert not any(_alive(k) for k in kids)
    assert not procs_under(r.dir)


async def test_a_code_that_dies_takes_its_detached_children(pool_of):
    p, events = pool_of
    r = p.start(_op("e1", _FORKER, params=_DETACHED))
    kids = await _detached_children(r, events)
    # the code dies; its detached children would sleep on for 600 s
    os.kill(_code_pid(r), signal.SIGKILL)
    await r.ended
    # the code's status, not the keeper's
    assert (r.status, r.exit_code) == ("error", -9)
    assert not any(_alive(k) for k in kids)
    assert not procs_under(r.dir)


async def test_a_keeper_killed_leaves_its_cgroup_to_the_pool(pool_of):
    p, events = pool_of
    if p.cgroups is None:
        pytest.skip("without a cgroup, a SIGKILLed keeper's detached children escape")
    r = p.start(_op("k1", _FORKER, params=_DETACHED))
    kids = await _detached_children(r, events)
    # as the OOM killer would: the keeper cannot end the tree
    os.kill(r.pid, signal.SIGKILL)
    await r.ended
    assert r.status == "error"
    # the pool killed what was left in the run's cgroup
    assert not any(_alive(k) for k in kids)
    assert not procs_under(r.dir)


def _code_pid(run):
    """The code: the keeper's child that is not a detached forker child."""
    kids = {int(x) for x in (run.dir / "children.txt").read_text().split()}
    t = keeper.proc_table()
    return next(x for x, pp in t.items() if pp == run.pid and x not in kids)


# --- end to end -------------------------------------------------------------


def test_agent_sigkilled_under_a_forker_run_ends_it_at_once(server_factory):
    # a long grace: ending quickly proves the driver's word, not the grace;
    # no restart: the keepers end their trees when their agent dies
    server = server_factory(lost_grace_secs=300, local_agent_restarts=0)
    s = server.create("admin", "forker", children=3, secs=600)
    server.run("admin", s["id"])
    server.wait_status("admin", s["id"], "running")
    d = server.data_dir / "run" / "admin" / s["id"]
    c = d / "children.txt"
    wait_for(lambda: c.exists() and len(c.read_text().split()) == 3, what="children")
    a = server.api("GET", "/admin/agents", expect=200).json()[0]
    t = time.monotonic()
    os.kill(a["pid"], signal.SIGKILL)
    j = server.wait_status("admin", s["id"], ("error", "completed", "canceled"), 30)
    assert time.monotonic() - t < 5
    assert j["status"] == "error" and "agent exited with code -9" in j["error"], j
    # found by their working directory: in the sandbox, the pids in
    # children.txt are the sandbox's own, not the host's
    wait_for(lambda: not procs_under(d), 5, what="no process of the run")


def test_the_code_gets_the_oom_score_not_the_keeper(tmp_path):
    text = """
        import os
        a = open("/proc/self/oom_score_adj").read().split()[0]
        b = open(f"/proc/{os.getppid()}/oom_score_adj").read().split()[0]
        print(a, b, flush=True)
    """
    k = subprocess.Popen(
        keeper.argv(_script(tmp_path, text), GRACE_SECS, oom_score_adj=900),
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    out, _ = k.communicate(timeout=10)
    mine = pathlib.Path("/proc/self/oom_score_adj").read_text().split()[0]
    assert k.returncode == 0 and out.decode().split() == ["900", mine]
