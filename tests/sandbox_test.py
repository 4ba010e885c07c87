"""The sandbox of local runs (agent/sandbox.py): its command line, and real runs under bwrap.

bubblewrap is installed by etc/setup-test-host.sh; these tests need it and
fail without it (no skip: a local run that is not sandboxed is a hole).
"""

import asyncio
import os
import signal
import subprocess
import time
import uuid

import pytest

from agent import pool, reap, sandbox
from conftest import ROOT
from agent_ops import run_op

GRACE_SECS = 1.0

_ENDED = ("completed", "error", "canceled", "timed_out")


def _pairs(argv, option):
    """The (src, dest) of every `option` in a bwrap command line."""
    return [(argv[i + 1], argv[i + 2]) for i, a in enumerate(argv) if a == option]


def test_argv_as_root(monkeypatch, tmp_path):
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    d = tmp_path / "data" / "run" / "bob" / "s1"
    d.mkdir(parents=True)
    a = sandbox.Sandbox(uid=4242).argv(d, ["/usr/bin/python3", "-c", "pass"])
    assert a[:3] == ["/usr/bin/env", "--ignore-signal=TERM", a[2]]
    assert a[2].endswith("bwrap")
    b = a[: a.index("--")]
    for o in (
        "--unshare-net",
        "--unshare-pid",
        "--unshare-ipc",
        "--unshare-uts",
        "--die-with-parent",
    ):
        assert o in b
    # no user namespace as root (setpriv switches uid); no --new-session (the
    # pool's process group must hold the code)
    assert not {"--unshare-user", "--unshare-all", "--new-session"} & set(b)
    # the one writable bind is the run directory, at its own path
    assert _pairs(b, "--bind") == [(str(d), str(d))]
    assert b[b.index("--chdir") + 1] == str(d)
    # /tmp is a fresh tmpfs, before the run dir (which may be under /tmp)
    assert b.index("/tmp") < b.index("--bind")
    ro = [s for s, t in _pairs(b, "--ro-bind")]
    assert all(s == t for s, t in _pairs(b, "--ro-bind"))
    for x in ro:
        assert not str(tmp_path).startswith(x) and not x.startswith(str(tmp_path))
        assert x not in ("/", "/root", "/home", "/tmp", "/etc", str(ROOT))
    assert os.path.realpath(os.path.dirname(sandbox.agent.__file__)) in ro
    assert "/etc/shadow" not in ro and "/etc/passwd" in ro
    # every parent made for a mount point can be passed by the code's uid
    for i, x in enumerate(b):
        if x == "--dir":
            assert b[i - 2 : i] == ["--perms", "0755"], b[i - 2 : i + 2]
    r = a[a.index("--") + 1 :]
    assert r[0] == "/usr/bin/setpriv" and "--reuid=4242" in r and "--regid=4242" in r
    assert "--no-new-privs" in r and "--clear-groups" in r
    assert r[-6:] == [
        "/usr/bin/env",
        "--default-signal=TERM",
        "--",
        "/usr/bin/python3",
        "-c",
        "pass",
    ]


def test_argv_as_a_user_and_the_rest(monkeypatch, tmp_path):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    s = sandbox.Sandbox()
    a = s.argv(tmp_path, ["/bin/true"])
    b = a[: a.index("--")]
    assert {"--unshare-all", "--unshare-user", "--disable-userns"} <= set(b)
    assert "setpriv" not in " ".join(a)
    assert a[a.index("--") + 1 :] == [
        "/usr/bin/env",
        "--default-signal=TERM",
        "--",
        "/bin/true",
    ]
    e = s.environ({"PATH": "/usr/bin", "HOME": "/root", "SIMVISOR_CORES": "2"})
    assert e["HOME"] == "/tmp" and e["TMPDIR"] == "/tmp" and e["SIMVISOR_CORES"] == "2"
    assert [s.exit_code(x) for x in (0, 3, 128, 137, 143, None)] == [
        0,
        3,
        128,
        -9,
        -15,
        None,
    ]
    assert sandbox.Bare().exit_code(137) == 137
    assert "not installed" in sandbox.Sandbox(bwrap="no-such-bwrap-x").check()
    assert isinstance(sandbox.for_agent(False), sandbox.Bare)


def test_a_program_under_a_system_link_runs(tmp_path):
    # /bin is a link on merged-/usr Debian: made once, not twice
    d = tmp_path / "run"
    d.mkdir()
    b = sandbox.Sandbox()
    if b.is_root:
        os.chown(d, b.uid, b.uid)
    r = subprocess.run(
        b.argv(d, ["/bin/sh", "-c", "echo from-bin-sh"]),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 0 and r.stdout == "from-bin-sh\n", r.stderr


def test_bwrap_works_here():
    # CI runs as root: bwrap needs no user namespace then
    assert sandbox.Sandbox().check() is None


# --- the pool with the sandbox ------------------------------------------------


@pytest.fixture
async def sandboxed_pool(tmp_path):
    events = []
    p = pool.Pool(
        run_root=tmp_path / "runs",
        kill_grace_secs=GRACE_SECS,
        max_procs=4,
        max_analyses=2,
        on_event=lambda r, k: events.append((r.run_id, k)),
        sandbox=sandbox.for_agent(True),
    )
    assert isinstance(p.sandbox, sandbox.Sandbox), getattr(p.sandbox, "reason", "")
    yield p
    left = [r.run_id for r in p.runs.values() if r.pid and reap.group_pids(r.pid)]
    p.destroy()
    await p.join()
    assert not left, f"processes left behind by runs={left}"


_op = run_op


def _py(text):
    return ["{python}", "-c", text]


async def _until(predicate, timeout_secs=10):
    async with asyncio.timeout(timeout_secs):
        while not predicate():
            await asyncio.sleep(0.02)


async def test_exit_codes_and_stderr(sandboxed_pool):
    p = sandboxed_pool
    a = p.start(
        _op("c1", ["{python}", "-m", "agent.codes.crash"], params={"message": "boom"})
    )
    b = p.start(_op("k1", _py("import os; os.kill(os.getpid(), 9)")))
    c = p.start(_op("z1", _py("import sys; sys.exit(5)")))
    await asyncio.gather(a.ended, b.ended, c.ended)
    assert (a.status, a.exit_code, a.error) == ("error", 3, "boom")
    assert (b.status, b.exit_code, b.error) == ("error", -9, "killed by signal 9")
    assert (c.status, c.exit_code, c.error) == ("error", 5, "exit code 5")


async def test_cancel_gives_the_code_its_grace(sandboxed_pool):
    p = sandboxed_pool
    r = p.start(
        _op(
            "t1",
            _py(
                "import signal, sys, time\n"
                "signal.signal(signal.SIGTERM, lambda *a: sys.exit(7))\n"
                "print('ready', flush=True)\n"
                "time.sleep(60)\n"
            ),
        )
    )
    await _until(lambda: "ready" in r.log.text_from(0, 10**6)[1])
    await p.cancel("t1")
    # the code saw SIGTERM itself (bwrap did not die of it first)
    assert r.status == "canceled" and r.exit_code == 7
    assert not reap.group_pids(r.pid)


async def test_cancel_kills_children_and_one_ignoring_sigterm(sandboxed_pool):
    p = sandboxed_pool
    r = p.start(
        _op(
            "i1",
            _py(
                "import subprocess, sys, time\n"
                "c = subprocess.Popen([sys.executable, '-c', 'import signal, time;"
                " signal.signal(signal.SIGTERM, signal.SIG_IGN);"
                ' print("child ready", flush=True); time.sleep(60)\'])\n'
                "time.sleep(60)\n"
            ),
        )
    )
    await _until(lambda: "child ready" in r.log.text_from(0, 10**6)[1])
    t = time.monotonic()
    await p.cancel("i1")
    # the leader dies of SIGTERM, and its pid namespace with it: the child
    # that ignores SIGTERM does not get the grace it gets outside the sandbox
    assert time.monotonic() - t < GRACE_SECS + 2
    assert r.status == "canceled" and r.exit_code == -signal.SIGTERM
    assert not reap.group_pids(r.pid)


async def test_timeout_and_the_forker(sandboxed_pool):
    p = sandboxed_pool
    a = p.start(_op("m1", ["{python}", "-m", "agent.codes.forever"], max_run_secs=0.5))
    b = p.start(
        _op(
            "f1",
            ["{python}", "-m", "agent.codes.forker"],
            params={"children": 3, "secs": 3600},
        )
    )
    await _until(lambda: "forker: children" in b.log.text_from(0, 10**6)[1])
    await p.cancel("f1")
    await a.ended
    assert a.status == "timed_out" and "max run time" in a.error
    assert b.status == "canceled"
    assert not reap.group_pids(a.pid) and not reap.group_pids(b.pid)


async def test_broken_sandbox_refuses_runs(tmp_path):
    p = pool.Pool(
        run_root=tmp_path / "runs",
        kill_grace_secs=GRACE_SECS,
        max_procs=1,
        max_analyses=1,
        on_event=lambda r, k: None,
        sandbox=sandbox.Broken("bwrap is not installed"),
    )
    r = p.start(_op("b1", ["{python}", "-m", "agent.codes.sleep"]))
    await r.ended
    assert r.status == "error"
    assert "the sandbox is on and does not work: bwrap is not installed" in r.error
    p.destroy()
    await p.join()


# --- a real supervisor --------------------------------------------------------


def _run_to_end(server, user, code, **params):
    s = server.create(user, code, **params)
    server.run(user, s["id"])
    return s, server.wait_status(user, s["id"], _ENDED, 60)


def _probe(server, user, **params):
    s, j = _run_to_end(server, user, "probe", **params)
    assert j["status"] == "completed", j
    t = server.api("GET", f"/simulations/{s['id']}/log", user, expect=200).text
    return s, {
        x.split(" -> ")[0].removeprefix("probe: "): x.split(" -> ")[1]
        for x in t.splitlines()
        if x.startswith("probe: ")
    }


def test_sandboxed_run_sees_only_its_run_dir(server_factory):
    s = server_factory(local_sandbox="on")
    s.add_user("alice")
    s.add_user("bob")
    x, j = _run_to_end(s, "alice", "fill", bytes=1000)
    assert j["status"] == "completed", j
    d = s.data_dir.resolve()
    alices = d / "run" / "alice" / x["id"] / "fill.dat"
    assert alices.stat().st_size == 1000
    secrets = [
        d / "admin-token",
        d / "db" / "cookie-secret",
        d / "db" / "users" / "admin.json",
    ]
    for p in secrets:
        assert p.exists(), p
    others = [ROOT / "setup.py", ROOT / "supervisor" / "config.py", "/root/.bashrc"]
    reads = [*secrets, alices, *others, "/proc/{ppid}/environ", "/etc/shadow"]
    tmp = f"/tmp/simvisor-probe-{uuid.uuid4().hex}"
    y, out = _probe(
        s,
        "bob",
        path=",".join(map(str, reads)),
        write=f"mine.txt,{tmp}",
        connect=f"127.0.0.1:{s.port}",
    )
    reads = [str(p).replace("{ppid}", "1") for p in reads]
    assert len(out) == len(reads) + 3, out
    for p in reads:
        assert out[f"read {p}"].startswith("refused"), (p, out)
    assert out[f"connect 127.0.0.1:{s.port}"].startswith("refused"), out
    assert out["write mine.txt"] == "ok written", out
    assert out[f"write {tmp}"] == "ok written", out
    # its own run dir is the host's; its /tmp is not
    m = d / "run" / "bob" / y["id"] / "mine.txt"
    assert m.read_text() == "probe\n"
    if os.geteuid() == 0:
        assert m.stat().st_uid == sandbox.DEFAULT_UID
    assert not os.path.exists(tmp)
    # the agent's library: the codes still import it (the probe ran)
    assert "local_sandbox=on" in s.log_path.read_text()


def test_without_the_sandbox_the_probe_reads_the_token(server_factory):
    s = server_factory(local_sandbox="off")
    t = s.data_dir.resolve() / "admin-token"
    _, out = _probe(s, "admin", path=str(t), connect=f"127.0.0.1:{s.port}")
    assert out[f"read {t}"].startswith("ok"), out
    assert out[f"connect 127.0.0.1:{s.port}"] == "ok connected", out


def test_auto_is_on_where_bwrap_works(server_factory):
    s = server_factory()
    _, j = _run_to_end(s, "admin", "heat", steps=2000)
    assert j["status"] == "completed", j
    assert "local_sandbox=auto: local runs are sandboxed" in s.log_path.read_text()
    t = s.data_dir.resolve() / "admin-token"
    _, out = _probe(s, "admin", path=str(t))
    assert out[f"read {t}"].startswith("refused"), out


async def test_leader_ignoring_sigterm_is_killed_after_the_grace(sandboxed_pool):
    p = sandboxed_pool
    r = p.start(
        _op(
            "g1",
            _py(
                "import signal, time\n"
                "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
                "print('ready', flush=True)\n"
                "time.sleep(60)\n"
            ),
        )
    )
    await _until(lambda: "ready" in r.log.text_from(0, 10**6)[1])
    t = time.monotonic()
    await p.cancel("g1")
    assert GRACE_SECS * 0.9 <= time.monotonic() - t < GRACE_SECS + 2
    assert r.status == "canceled" and r.exit_code == -signal.SIGKILL
    assert not reap.group_pids(r.pid)
