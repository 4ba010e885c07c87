"""Following growing files (`agent.follow`) and the keeper's records (`agent.keeper_io`).

Real files, real inotify (and the poll where there is none): only what was
appended is read, partial lines wait for their newline, a late file, a
truncation and a rotation are followed. The keeper's lifeline as a process:
orphaned, it ends the tree; adopted by a new connection, it goes on.
"""

import asyncio
import os
import signal
import subprocess
import sys

import pytest

from agent import follow, keeper, keeper_io, keeping, runtable
from conftest import procs_under

pytestmark = pytest.mark.timeout(30)


# --- lines and records (pure) -------------------------------------------------


def test_lines_wait_for_the_newline_and_cut_long_ones():
    x = follow.Lines(8)
    assert x.feed(b"ab") == []
    assert x.feed(b"c\nde") == [(b"abc\n", True)]
    assert x.feed(b"f\n\n") == [(b"def\n", True), (b"\n", True)]
    # a long line: pieces, and what ends it is not whole either
    assert x.feed(b"0123456789") == [(b"01234567", False)]
    assert x.feed(b"x\ny") == [(b"89x\n", False)]
    assert x.flush() == [(b"y", False)]
    assert x.flush() == []
    assert x.feed(b"z\n") == [(b"z\n", True)]


def test_records_in_any_split():
    b = (
        keeper_io.encode(1, b"out\n")
        + keeper_io.encode(2, b"err")
        + keeper_io.encode(1, b"")
    )
    for n in range(1, len(b) + 1):
        d = keeper_io.Decoder()
        got = []
        for i in range(0, len(b), n):
            got += d.feed(b[i : i + n])
        assert got == [(1, b"out\n"), (2, b"err"), (1, b"")], n
    d = keeper_io.Decoder()
    assert d.feed(b"\x07\0\0\0\1x") == [] and d.broken


# --- the follower -------------------------------------------------------------


class _Got:
    def __init__(self):
        self.data = b""
        self.truncated = 0
        self._changed = asyncio.Event()

    def __call__(self, b):
        self.data += b
        self._changed.set()

    def on_truncated(self):
        self.truncated += 1
        self.data = b""

    async def until(self, data):
        async with asyncio.timeout(10):
            while self.data != data:
                self._changed.clear()
                await self._changed.wait()


@pytest.fixture(params=["inotify", "poll"])
async def follower(request, tmp_path):
    """follower(path) -> (Follower started, _Got); closed afterwards."""
    i = follow.Inotify.open() if request.param == "inotify" else None
    if request.param == "inotify":
        assert i is not None, "no inotify here"
    made = []

    def make(path, read_bytes=follow.READ_BYTES):
        g = _Got()
        f = follow.Follower(
            path, g, i, on_truncated=g.on_truncated, read_bytes=read_bytes
        )
        made.append(f)
        f.start()
        return f, g

    yield make
    for f in made:
        f.close()
    if i is not None:
        i.close()


def _append(path, data):
    with open(path, "ab") as f:
        f.write(data)


async def test_only_what_is_appended_is_read(follower, tmp_path):
    p = tmp_path / "out"
    p.write_bytes(b"before\n")
    f, g = follower(p)
    assert g.data == b"before\n"
    _append(p, b"a partial")
    await g.until(b"before\na partial")
    _append(p, b" line\n")
    await g.until(b"before\na partial line\n")
    assert f.offset == len(g.data)


async def test_a_file_that_appears_late(follower, tmp_path):
    p = tmp_path / "late"
    _, g = follower(p)
    await asyncio.sleep(0.05)
    assert g.data == b""
    _append(p, b"here\n")
    await g.until(b"here\n")
    _append(p, b"more\n")
    await g.until(b"here\nmore\n")


async def test_truncation_reads_again_from_the_start(follower, tmp_path):
    p = tmp_path / "t"
    p.write_bytes(b"0123456789\n")
    _, g = follower(p)
    with open(p, "r+b") as x:
        x.truncate(0)
    _append(p, b"new\n")
    await g.until(b"new\n")
    assert g.truncated == 1


async def test_rotation_reads_the_old_file_to_its_end_then_the_new(follower, tmp_path):
    p = tmp_path / "log"
    p.write_bytes(b"one\n")
    _, g = follower(p)
    # a writer that rotates: the last lines go to the old file, then a new one
    with open(p, "ab") as w:
        w.write(b"two\n")
        os.rename(p, tmp_path / "log.1")
    await g.until(b"one\ntwo\n")
    _append(p, b"three\n")
    await g.until(b"one\ntwo\nthree\n")


async def test_a_big_file_comes_in_bounded_steps(follower, tmp_path):
    p = tmp_path / "big"
    b = os.urandom(100_000)
    p.write_bytes(b)
    seen = []
    _, g = follower(p, read_bytes=4096)
    # the first step only; the rest follows from the loop
    seen.append(len(g.data))
    await g.until(b)
    assert seen == [4096]


async def test_release_gives_back_what_was_read(tmp_path):
    i = follow.Inotify.open()
    p = tmp_path / "out"
    g = _Got()
    f = follow.Follower(p, g, i, release=True)
    try:
        f.start()
        b = os.urandom(3 * follow.RELEASE_BYTES + 100)
        for n in range(0, len(b), 256 * 1024):
            _append(p, b[n : n + 256 * 1024])
        await g.until(b)
        st = p.stat()
        # the size and offsets stay; the space of what was read is free
        assert st.st_size == len(b) and f.offset == len(b)
        assert st.st_blocks * 512 <= follow.RELEASE_BYTES + 64 * 1024
        _append(p, b"more\n")
        await g.until(b + b"more\n")
    finally:
        f.close()
        i.close()


# --- the keeper's lifeline ------------------------------------------------------

_SLEEPER = [
    sys.executable,
    "-c",
    "import time; print('up', flush=True); time.sleep(60)",
]

#: an agent that only starts a keeper (its pid for ``{agent_pid}``) and
#: waits until it is killed
_AGENT = """
import os, subprocess, sys
a = [x.replace("{agent_pid}", str(os.getpid())) for x in sys.argv[1:]]
print(subprocess.Popen(a, start_new_session=True).pid, flush=True)
sys.stdin.read()
"""


def _keeper_of_an_agent(tmp_path, orphan_secs):
    """A keeper with files, started by an agent of its own; (agent, keeper pid, files)."""
    f = runtable.RunTable(tmp_path / "work").create("k1")
    files = dict(
        output=f.output,
        status=f.status,
        adopt=f.adopt,
        agent_pid="{agent_pid}",
        orphan_secs=orphan_secs,
    )
    a = subprocess.Popen(
        [sys.executable, "-c", _AGENT, *keeper.argv(_SLEEPER, 0.5, files=files)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        cwd=tmp_path,
    )
    return a, int(a.stdout.readline()), f


async def _output(f, text):
    async with asyncio.timeout(10):
        while True:
            d = keeper_io.Decoder().feed(f.output.read_bytes())
            if b"".join(b for _, b in d) == text:
                return
            await asyncio.sleep(0.02)


async def _gone(pid):
    async with asyncio.timeout(10):
        while _alive(pid):
            await asyncio.sleep(0.02)


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as x:
            return x.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _kill(agent):
    agent.kill()
    agent.wait()
    agent.stdin.close()
    agent.stdout.close()


async def test_a_keeper_whose_agent_is_gone_ends_its_tree_after_the_window(tmp_path):
    a, k, f = _keeper_of_an_agent(tmp_path, orphan_secs=0.3)
    try:
        await _output(f, b"up\n")
        _kill(a)
        await _gone(k)
        assert keeping.read_status(f.status) == {"returncode": -9, "orphaned": True}
        assert not procs_under(tmp_path)
        # too late to adopt it
        assert not runtable.adopt(f.adopt)
    finally:
        _kill(a)
        if _alive(k):
            os.kill(k, signal.SIGKILL)


async def test_a_keeper_adopted_by_a_new_agent_goes_on(tmp_path):
    a, k, f = _keeper_of_an_agent(tmp_path, orphan_secs=0.5)
    try:
        await _output(f, b"up\n")
        _kill(a)
        # this process is its agent now
        assert runtable.adopt(f.adopt)
        # well past the window: adopted, it is still going
        await asyncio.sleep(1.5)
        assert _alive(k) and keeping.read_status(f.status) is None
        # a stop is still the pool's to give
        os.kill(k, keeper.STOP_SIGNAL)
        await _gone(k)
        assert keeping.read_status(f.status) == {"returncode": -15, "orphaned": False}
        assert not procs_under(tmp_path)
    finally:
        _kill(a)
        if _alive(k):
            os.kill(k, signal.SIGKILL)


def test_a_reused_pid_is_not_the_keeper(tmp_path):
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        t = runtable.start_ticks(p.pid)
        fd = runtable.open_keeper(p.pid, t)
        assert fd is not None
        os.close(fd)
        # another start time: the pid is someone else's now
        assert runtable.open_keeper(p.pid, t + 1) is None
    finally:
        p.kill()
        p.wait()
    assert runtable.open_keeper(p.pid, t) is None


def test_the_status_carries_the_run_cgroups_counts(tmp_path):
    """JSON written without json (the keeper's hot path), read back whole."""
    from agent import limits

    p = tmp_path / "status"
    c = {"oom_kills": 2, "pids_refused": None, "memory_limit_bytes": 64 << 20}
    keeper_io.write_status(str(p), -9, False, c)
    s = keeping.read_status(p)
    assert s == {"returncode": -9, "orphaned": False, "cgroup": c}
    e = limits.EndCounts(s["cgroup"])
    assert limits.out_of_memory_error(None, e) == (
        "out of memory: the run's memory limit of 64 MiB was reached"
    )
    assert limits.pids_note(e) is None


def test_a_torn_reads_journal_line_is_cut_and_appending_goes_on(tmp_path):
    from agent import reads

    p = tmp_path / "reads"
    p.write_bytes(b"0 10 77\n1 0\n0 2")
    j = reads.Journal(p)
    assert j.entries() == [(0, 10, 77), (1, 0, None)]
    j.add(0, 20, 5)
    j.close()
    assert p.read_bytes() == b"0 10 77\n1 0\n0 20 5\n"
    # a line that does not parse ends what is used
    p.write_bytes(b"0 10\nx y\n0 30\n")
    assert reads.Journal(p).entries() == [(0, 10, None)]
