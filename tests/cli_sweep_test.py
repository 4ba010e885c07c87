"""``supervisor sweep``: its axis specs, then every command against a real supervisor."""

import json
import pty
import os
import pathlib
import subprocess
import sys

import pytest
from conftest import procs_under, wait_for
from pykern import pkcli

from supervisor import client
from supervisor.pkcli import sweep

_ROOT = pathlib.Path(__file__).resolve().parents[1]

#: seconds one command may take
_SECS = 60


def test_axis_specs():
    assert sweep.axis_spec("10,20,30") == [10, 20, 30]
    assert sweep.axis_spec("0.1:1.0:5:log") == {
        "start": 0.1,
        "stop": 1.0,
        "num": 5,
        "scale": "log",
    }
    assert sweep.axis_spec("-1:1:3") == {"start": -1, "stop": 1, "num": 3}
    # text where it is not JSON; JSON strings stay strings
    assert sweep.axis_spec('pulse,step,"10",true') == ["pulse", "step", "10", True]
    assert sweep.axis_spec("a:b:3") == ["a:b:3"]
    assert sweep.axis_spec("[1, 2]") == [1, 2]
    assert sweep.axis_spec('{"start": 1, "stop": 2, "num": 2}')["num"] == 2
    a = sweep.parse_axes(["steps=10,20", "alpha = 0.1:0.2:2"], '{"nx": [5]}')
    assert list(a) == ["nx", "steps", "alpha"]
    for args, js in (
        ([], None),
        (["steps"], None),
        (["=1,2"], None),
        (["steps="], None),
        (["steps=1", "steps=2"], None),
        (["steps=[1,"], None),
        ([], "[1]"),
        ([], "{"),
    ):
        with pytest.raises(pkcli.CommandError):
            sweep.parse_axes(args, js)


def _cli(server, token, *args, timeout=_SECS):
    e = dict(
        os.environ,
        SUPERVISOR_PKCLI_SIM_URL=server.url,
        SUPERVISOR_PKCLI_SIM_TOKEN=token,
    )
    return subprocess.run(
        [sys.executable, "-m", "supervisor.cli", "sweep", *args],
        env=e,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=_ROOT,
    )


def _ok(p):
    assert p.returncode == 0, (p.stdout, p.stderr)
    return p.stdout.strip()


@pytest.fixture
def alice(server):
    return server.add_user("alice")


def test_create_status_watch_list(server, alice):
    i = _ok(
        _cli(
            server,
            alice,
            "create",
            "sleep",
            "--axis",
            "secs=0.0:0.04:3",
            "--name",
            "naps",
        )
    )
    p = _cli(server, alice, "watch", i)
    out = _ok(p)
    lines = out.splitlines()
    # not a terminal: a line per change, the bar at the end full
    assert lines[-2].startswith("[" + "#" * 40 + "] done 3/3 100% completed=3"), lines
    assert lines[-1] == "done 3/3 100% completed=3"
    assert _ok(_cli(server, alice, "status", i)) == "done 3/3 100% completed=3"
    s = _ok(_cli(server, alice, "status", i, "--members")).splitlines()
    assert len(s) == 4
    idx, sim, st, params, result, _ = s[1].split("\t")
    with client.Client(server.url, alice) as c:
        assert sim == c.sweep(i)["members"][0]["simulation"]
    assert (idx, st, json.loads(params)) == ("0", "completed", {"secs": 0.0})
    assert json.loads(result) == {"secs": 0.0}
    (row,) = _ok(_cli(server, alice, "list")).splitlines()
    assert row.split("\t") == [i, "sleep", "done", "3/3", "naps"]
    # a grid of two axes over base params, zipped, and --watch
    p = _cli(
        server,
        alice,
        "create",
        "heat",
        "--axes",
        '{"steps": [100, 200]}',
        "--axis",
        "alpha=0.01,0.02",
        "--zip",
        "--params",
        '{"nx": 21}',
        "--cores",
        "1",
        "--watch",
    )
    out = _ok(p).splitlines()
    assert out[-1] == "done 2/2 100% completed=2", out
    with client.Client(server.url, alice) as c:
        d = c.sweep(out[0])
    assert d["combine"] == "zip" and d["params"]["nx"] == 21
    assert [m["params"] for m in d["members"]] == [
        {"steps": 100, "alpha": 0.01},
        {"steps": 200, "alpha": 0.02},
    ]


def test_watch_fails_when_members_fail(server, alice):
    p = _cli(server, alice, "create", "crash", "--axis", "message=a,b", "--watch")
    assert p.returncode == 1, p.stdout
    assert "2 of 2 members did not complete (done 2/2 100% error=2)" in p.stderr
    i = p.stdout.splitlines()[0]
    r = _ok(_cli(server, alice, "retry", i)).splitlines()
    assert r[0] == "retried 2"
    p = _cli(server, alice, "watch", i)
    assert p.returncode == 1 and "error=2" in p.stderr


def test_cancel_and_delete(server, alice):
    i = _ok(
        _cli(
            server,
            alice,
            "create",
            "sleep",
            "--axis",
            f"secs={_SECS},{_SECS},{_SECS},{_SECS}",
            "--max-parallel",
            "2",
        )
    )
    with client.Client(server.url, alice) as c:
        wait_for(lambda: c.sweep(i)["counts"].get("running") == 2, 30)
        w = subprocess.Popen(
            [sys.executable, "-m", "supervisor.cli", "sweep", "watch", i],
            env=dict(
                os.environ,
                SUPERVISOR_PKCLI_SIM_URL=server.url,
                SUPERVISOR_PKCLI_SIM_TOKEN=alice,
            ),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=_ROOT,
        )
        try:
            # the watch draws the running sweep before it is canceled
            assert "running 0/4 0%" in w.stdout.readline()
            # a member not started yet: it never runs, the others go on
            assert _ok(_cli(server, alice, "cancel", i, "--members", "3")) == (
                "running 1/4 25% canceled=1 pending=1 running=2"
            )
            assert _ok(_cli(server, alice, "cancel", i)) == (
                "canceled 4/4 100% canceled=4"
            )
            out, err = w.communicate(timeout=_SECS)
        finally:
            if w.poll() is None:
                w.kill()
                w.wait()
        assert w.returncode == 1, (out, err)
        assert "4 of 4 members did not complete" in err
        for m in c.sweep(i)["members"]:
            assert not procs_under(server.data_dir / "run" / "alice" / m["simulation"])
    assert _ok(_cli(server, alice, "delete", i)) == f"deleted {i} and 4 simulations"
    for args, code in (
        (("status", i), "404"),
        (("watch", i), "404"),
        (("cancel", i, "--members", "x"), "indices"),
        (("create", "sleep", "--axis", "secs=-1,1"), "member 0 (secs=-1)"),
        (("create", "sleep", "--axis", "nope"), "NAME="),
        (("create", "sleep", "--axis", "secs=1", "--cores", "x"), "whole number"),
    ):
        p = _cli(server, alice, *args)
        assert p.returncode == 1 and code in p.stderr, (args, p.stderr)
    p = _cli(server, "not-a-token", "list")
    assert p.returncode == 1 and "401" in p.stderr


def test_watch_on_a_terminal_redraws_one_line(server, alice):
    i = _ok(_cli(server, alice, "create", "sleep", "--axis", "secs=0.2,0.3"))
    m, s = pty.openpty()
    try:
        p = subprocess.Popen(
            [sys.executable, "-m", "supervisor.cli", "sweep", "watch", i],
            env=dict(
                os.environ,
                SUPERVISOR_PKCLI_SIM_URL=server.url,
                SUPERVISOR_PKCLI_SIM_TOKEN=alice,
            ),
            stdout=s,
            stderr=subprocess.PIPE,
            cwd=_ROOT,
        )
        os.close(s)
        s = None
        out = b""
        while True:
            try:
                b = os.read(m, 4096)
            except OSError:
                # the other end closed (EIO)
                break
            if not b:
                break
            out += b
        assert p.wait(_SECS) == 0, p.stderr.read()
        p.stderr.close()
    finally:
        os.close(m)
        if s is not None:
            os.close(s)
    t = out.decode()
    # the bar is redrawn in place: one line, then the final status
    assert t.startswith("\r[") and t.count("\r[") >= 2, t
    assert t.rstrip().splitlines()[-1] == "done 2/2 100% completed=2", t
