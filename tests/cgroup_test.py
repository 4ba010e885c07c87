"""Per-run cgroups (`agent.cgroup`): detection, limits, kill, the end event.

The pure parts on texts of both kinds of host; the rest on this host's real
cgroups, in each mode it offers (``auto``: v2 or hybrid; ``v1``: the v2 tree
ignored, as on a host without one). Every cgroup a test makes is removed,
and checked to be; a host with no writable cgroup skips those tests.
"""

import itertools
import os
import pathlib
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from agent import cgroup, cgroup_run, keeper, pool
from agent.run import LOG_FILE
from conftest import ROOT, procs_under
from agent_ops import Events, run_op

pytestmark = pytest.mark.timeout(60)

_MIB = 1024 * 1024

_HYBRID_MOUNTS = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/cpu\\054cpuacct rw - cgroup cgroup rw,cpu,cpuacct
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""

_HYBRID_OWN = """\
9:name=systemd:/
4:memory:/process_api/68ec
1:cpu,cpuacct:/
0::/
"""

_V2_MOUNTS = """\
25 30 0:23 / /sys rw - sysfs sysfs rw
28 25 0:26 /user.slice /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate
"""

_n = itertools.count()


def test_mounts_and_own_cgroups_of_a_hybrid_host():
    v2, v1 = cgroup.parse_mounts(_HYBRID_MOUNTS)
    assert v2 == ("/sys/fs/cgroup/unified", "/")
    assert v1["memory"] == ("/sys/fs/cgroup/memory", "/")
    # the first mount of a controller; octal escapes undone
    assert v1["cpu"] == ("/sys/fs/cgroup/cpu", "/")
    assert v1["cpuacct"] == ("/sys/fs/cgroup/cpu,cpuacct", "/")
    assert "tmpfs" not in v1 and "rw" in v1
    own = cgroup.parse_own(_HYBRID_OWN)
    assert own[""] == "/" and own["memory"] == "/process_api/68ec"
    assert own["cpu"] == own["cpuacct"] == "/"
    assert cgroup.own_dir(v1["memory"], own["memory"]) == (
        "/sys/fs/cgroup/memory/process_api/68ec"
    )
    assert cgroup.own_dir(v2, own[""]) == "/sys/fs/cgroup/unified"


def test_own_cgroup_of_a_v2_host_mounted_below_its_root():
    v2, v1 = cgroup.parse_mounts(_V2_MOUNTS)
    assert v1 == {} and v2 == ("/sys/fs/cgroup", "/user.slice")
    own = cgroup.parse_own("0::/user.slice/user-1000.slice/agent.scope\n")
    assert cgroup.own_dir(v2, own[""]) == ("/sys/fs/cgroup/user-1000.slice/agent.scope")
    # not below the mount (another namespace's view): unusable
    assert cgroup.own_dir(v2, "/system.slice/x") is None
    assert cgroup.own_dir(None, "/") is None


def test_limit_files_of_both_versions():
    assert cgroup.limit_writes(2, cores=2, memory_bytes=64 * _MIB, pids=50) == [
        ("cpu", "cpu.max", "200000 100000"),
        ("memory", "memory.max", str(64 * _MIB)),
        ("pids", "pids.max", "50"),
    ]
    assert cgroup.limit_writes(1, cores=1, memory_bytes=_MIB, pids=7) == [
        ("cpu", "cpu.cfs_period_us", "100000"),
        ("cpu", "cpu.cfs_quota_us", "100000"),
        ("memory", "memory.limit_in_bytes", str(_MIB)),
        ("pids", "pids.max", "7"),
    ]
    # 0 and None: no limit
    assert cgroup.limit_writes(2, cores=None, memory_bytes=0, pids=0) == []


def test_keyed_files():
    assert cgroup_run.parse_keys("populated 1\nfrozen 0\n") == {
        "populated": 1,
        "frozen": 0,
    }
    k = cgroup_run.parse_keys("oom_kill_disable 0\nunder_oom 0\noom_kill 3\nbad x\n")
    assert k["oom_kill"] == 3 and "bad" not in k


def test_off_is_none_and_says_so():
    x = cgroup.for_agent("off")
    assert x.mode == "none" and "off" in x.describe()
    assert x.create("r1") is None


def test_the_mode_follows_what_was_found():
    u = "/sys/fs/cgroup/simvisor-agent-1"
    v2 = cgroup.Layout(u, {c: (2, u) for c in cgroup.LIMITS})
    assert v2.mode == "v2" and v2.describe() == "v2 (limits cpu:v2 memory:v2 pids:v2)"
    h = cgroup.Layout("/u/p", {"memory": (1, "/m/p")}, "no cpu pids limit")
    assert h.mode == "hybrid"
    assert h.describe() == "hybrid (limits memory:v1; no cpu pids limit)"
    v1 = cgroup.Layout(None, {"pids": (1, "/p/p"), "freezer": (1, "/f/p")})
    assert v1.mode == "v1" and v1.describe() == "v1 (limits pids:v1)"
    # a v2 tree without controllers still kills and tells the end
    assert cgroup.Layout("/u/p", {}, "no cpu memory pids limit").mode == "v2"
    assert cgroup.Layout(None, {}, "x is not writable").describe() == (
        "none (x is not writable)"
    )


def test_a_code_that_cannot_enter_its_cgroup_does_not_start(tmp_path):
    k = subprocess.run(
        keeper.argv(["/bin/true"], 0.5, cgroup_dirs=[str(tmp_path / "no-cgroup")]),
        capture_output=True,
        timeout=10,
    )
    # nothing of it ran outside its cgroup
    assert k.returncode == keeper.CANNOT_START
    assert k.stderr.decode().startswith("cannot start /bin/true: ")


# --- on this host ------------------------------------------------------------


def _made(name):
    """Directories of that name anywhere under /sys/fs/cgroup."""
    rv = []
    for d, subs, _ in os.walk("/sys/fs/cgroup"):
        rv += [os.path.join(d, s) for s in subs if s == name]
        # cgroups are deep only where runs are: keep the walk short
        subs[:] = [s for s in subs if not s.startswith("run-")]
    return rv


@pytest.fixture(params=["auto", "v1"])
def layout(request):
    """This host's layout in one mode; afterwards nothing of it is left."""
    name = f"simvisor-test-{os.getpid()}-{next(_n)}"
    x = cgroup.for_agent(request.param, name=name)
    if x.mode == "none":
        pytest.skip(f"no writable cgroup here: {x.reason}")
    if request.param == "v1" and x.mode != "v1":
        pytest.skip(f"no v1 hierarchies here: {x.describe()}")
    assert not _made(name), "the parents are made by the first run only"
    yield x
    x.remove()
    assert not _made(name), f"cgroups left behind: {_made(name)}"


def test_the_mode_is_what_this_host_offers(layout):
    d = layout.describe()
    assert d.startswith(layout.mode)
    if layout.mode in ("hybrid", "v2"):
        assert layout.unified and os.path.basename(layout.unified).startswith(
            "simvisor-test-"
        )


def test_the_memory_limit_takes_swap_too(layout):
    """A run's memory limit bounds memory and swap together: where swap is
    accounted, a run over it is not swapped out without end."""
    if "memory" not in layout.parents:
        pytest.skip(f"no memory controller: {layout.describe()}")
    cg = layout.create("swap", memory_bytes=64 * _MIB)
    try:
        v, p = layout.parents["memory"]
        d = cg.unified if v == 2 else next(x for x in cg.dirs if x.startswith(p + "/"))
        f = os.path.join(
            d, "memory.swap.max" if v == 2 else "memory.memsw.limit_in_bytes"
        )
        if not os.path.exists(f):
            pytest.skip("swap is not accounted here")
        with open(f) as x:
            assert x.read().strip() == ("0" if v == 2 else str(64 * _MIB))
    finally:
        assert cg.remove(parents=True) == []


_TREE = """
    import os, sys, time
    # a child in its own session, and its child: outside our group and session
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            open("g.tmp", "w").write(str(os.getpid()))
            os.rename("g.tmp", "grandchild.pid")
            time.sleep(60)
        os._exit(0)
    while not os.path.exists("grandchild.pid"):
        time.sleep(0.01)
    print("ready", flush=True)
    time.sleep(60)
"""


def _script(tmp_path, text):
    p = tmp_path / "code.py"
    p.write_text(textwrap.dedent(text))
    return [sys.executable, str(p)]


@pytest.mark.parametrize("how", [keeper.STOP_SIGNAL, keeper.KILL_SIGNAL])
def test_keeper_kills_a_double_forked_tree_through_the_cgroup(tmp_path, layout, how):
    cg = layout.create("k1", cores=1)
    try:
        k = subprocess.Popen(
            keeper.argv(_script(tmp_path, _TREE), 0.5, cgroup_dirs=cg.dirs),
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            start_new_session=True,
        )
        try:
            assert k.stdout.readline() == b"ready\n"
            g = int((tmp_path / "grandchild.pid").read_text())
            # the whole tree is in the run's cgroup, in every hierarchy; the
            # keeper is not
            assert g in cg.pids() and k.pid not in cg.pids()
            for d in cg.dirs:
                assert str(g) in pathlib.Path(d, "cgroup.procs").read_text().split()
            k.send_signal(how)
            assert k.wait(10) == (-15 if how == keeper.STOP_SIGNAL else -9)
            # the keeper exits once the cgroup is empty: nothing to wait for
            assert cg.left() == 0 and cg.pids() == []
            assert not procs_under(tmp_path)
        finally:
            k.kill()
            k.wait()
            k.stdout.close()
    finally:
        assert cg.remove(parents=True) == []
    assert not any(os.path.exists(d) for d in cg.dirs)


def test_the_end_is_the_cgroups_own_event(tmp_path, layout):
    cg = layout.create("e1")
    if cg.unified is None:
        cg.remove(parents=True)
        pytest.skip("v1 only: the end is a poll of cgroup.procs")
    sig = signal.SIGUSR2
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {sig})
    try:
        assert cg.watch()
        p = subprocess.Popen(["sleep", "60"], preexec_fn=cg.enter)
        try:
            assert cg.left() == 1
            # nothing changes: the wait is the whole timeout
            t = time.monotonic()
            assert cg.wait({sig}, 0.3) is None and time.monotonic() - t >= 0.3
            assert cg.left() == 1
            cg.kill()
            # the end wakes the wait, long before its timeout
            t = time.monotonic()
            while cg.left():
                assert cg.wait({sig}, 30) is None
            assert time.monotonic() - t < 10
            assert p.wait(5) == -9
            # a signal still ends it, and is taken
            os.kill(os.getpid(), sig)
            assert cg.wait({sig}, 30).si_signo == sig
        finally:
            p.kill()
            p.wait()
    finally:
        while signal.sigtimedwait({sig}, 0):
            pass
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
        assert cg.remove(parents=True) == []


# --- limits, under the pool ---------------------------------------------------


def _code(name):
    # by path: a run's environment has no PYTHONPATH (see keeper_test)
    return ["{python}", str(ROOT / "agent" / "codes" / f"{name}.py")]


@pytest.fixture
async def pool_in(tmp_path, layout):
    """A pool whose runs get cgroups of `layout`; nothing is left afterwards."""
    ev = Events()
    p = pool.Pool(tmp_path / "runs", 0.5, 4, 2, ev, cgroups=layout)
    yield p, ev
    left = procs_under(p.run_root)
    p.destroy()
    await p.join()
    assert not left, f"processes left behind={left}"
    assert not p._run_cgroups


async def test_a_run_over_its_memory_limit_ends_out_of_memory(pool_in):
    p, _ = pool_in
    if "memory" not in p.cgroups.parents:
        pytest.skip(f"no memory controller: {p.cgroups.describe()}")
    r = p.start(
        run_op(
            "m1",
            _code("memhog"),
            params={"mib": 256, "secs": 5},
            max_memory_bytes=64 * _MIB,
        )
    )
    await r.ended
    assert (r.status, r.exit_code) == ("error", -9), r.error
    assert r.error.startswith(
        "out of memory: the run's memory limit of 64 MiB"
    ), r.error


async def test_a_run_within_its_memory_limit_completes(pool_in):
    p, _ = pool_in
    r = p.start(
        run_op(
            "m2",
            _code("memhog"),
            params={"mib": 16, "secs": 0},
            max_memory_bytes=256 * _MIB,
        )
    )
    await r.ended
    assert r.status == "completed", r.error


async def test_a_fork_bomb_is_bounded_by_its_pids_limit(pool_in):
    p, _ = pool_in
    if "pids" not in p.cgroups.parents:
        pytest.skip(f"no pids controller: {p.cgroups.describe()}")
    r = p.start(
        run_op("f1", _code("spawner"), params={"procs": 500, "secs": 1}, max_pids=30)
    )
    await r.ended
    assert r.status == "completed", r.error
    out = r.log.text_from(0, 10**6)[1]
    n = int(out.split("spawner: started=")[1].split()[0])
    # the code itself and its interpreter count too
    assert 0 < n < 30 and "refused=Resource temporarily unavailable" in out, out
    # and the run's log names the limit (the code coped: it completed)
    assert "process start(s) refused at the run's limit of 30 processes" in out, out


async def test_cores_are_the_cpu_quota_and_the_cgroup_goes_with_the_run(pool_in):
    p, ev = pool_in
    if "cpu" not in p.cgroups.parents:
        pytest.skip(f"no cpu controller: {p.cgroups.describe()}")
    r = p.start(run_op("q1", _code("forever"), cores=2))
    await ev.until(lambda: "heartbeat" in r.log.text_from(0, 10**6)[1], 20)
    cg = p._run_cgroups["q1"]
    v, d = p.cgroups.parents["cpu"]
    d = cg.unified if v == 2 else next(x for x in cg.dirs if x.startswith(d + "/"))
    q = pathlib.Path(d, "cpu.max" if v == 2 else "cpu.cfs_quota_us").read_text()
    assert q.split()[0] == "200000"
    await p.cancel("q1")
    assert r.status == "canceled"
    assert not any(os.path.exists(x) for x in cg.dirs), "the run's cgroup is removed"
    assert "q1" not in p._run_cgroups


async def test_cancel_of_a_detached_tree_is_confirmed_by_the_cgroup(pool_in):
    p, ev = pool_in
    r = p.start(
        run_op(
            "c1",
            _code("forker"),
            code="forker",
            params={"children": 3, "secs": 600, "detach": "session"},
        )
    )
    await ev.until(lambda: "forker: children" in r.log.text_from(0, 10**6)[1], 20)
    cg = p._run_cgroups["c1"]
    kids = [int(x) for x in (r.dir / "children.txt").read_text().split()]
    assert set(kids) <= set(cg.pids())
    await p.cancel("c1")
    assert r.status == "canceled" and r.exit_code == -signal.SIGTERM
    assert not procs_under(r.dir)
    assert not any(os.path.exists(x) for x in cg.dirs)


# --- end to end ---------------------------------------------------------------


def test_the_plans_limits_reach_the_run(server_factory):
    x = cgroup.for_agent("auto", name=f"simvisor-test-{os.getpid()}-{next(_n)}")
    if "memory" not in x.parents or "pids" not in x.parents:
        pytest.skip(f"no memory or pids limit here: {x.describe()}")
    server = server_factory(basic_max_run_memory_bytes=64 * _MIB, basic_max_run_pids=30)
    s = server.create("admin", "memhog", mib=256, secs=5)
    server.run("admin", s["id"])
    j = server.wait_status("admin", s["id"], ("error", "completed", "canceled"))
    assert j["status"] == "error", j
    assert j["error"].startswith("out of memory: the run's memory limit of 64 MiB"), j
    s = server.create("admin", "spawner", procs=500, secs=1)
    server.run("admin", s["id"])
    j = server.wait_status("admin", s["id"], ("error", "completed", "canceled"))
    assert j["status"] == "completed", j
    d = server.data_dir / "run" / "admin" / s["id"]
    out = (d / LOG_FILE).read_text()
    assert "refused=Resource temporarily unavailable" in out, out[-500:]


def test_the_runs_can_go_in_a_given_parent(tmp_path):
    x = cgroup.for_agent("auto")
    if not x.unified:
        pytest.skip(f"no v2 tree here: {x.describe()}")
    p = f"/simvisor-test-parent-{os.getpid()}"
    v2, _ = cgroup.parse_mounts(pathlib.Path("/proc/self/mountinfo").read_text())
    # (a v1 hierarchy without that cgroup is simply not used)
    d = cgroup.own_dir(v2, p)
    os.mkdir(d)
    try:
        y = cgroup.for_agent("auto", name="simvisor-agent-x", parent=p)
        assert y.unified == d + "/simvisor-agent-x"
        cg = y.create("p1")
        try:
            k = subprocess.run(keeper.argv(["/bin/true"], 0.5, cgroup_dirs=cg.dirs))
            assert k.returncode == 0 and cg.left() == 0
        finally:
            assert cg.remove(parents=True) == []
        y.remove()
        assert not [n for n in os.listdir(d) if n.startswith("simvisor-")]
    finally:
        os.rmdir(d)
