"""Floors: the bare mechanisms under each figure, measured in the bench process.

The same interpreter (`sys.executable`, the project's venv), the same code
modules and the same environment the agent gives a simulation, but no agent,
no supervisor: what a figure could at best be on this machine.
"""

import asyncio
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import tornado.httpclient
import tornado.websocket

from supervisor import store
from tests.bench import clients
from tests.bench.report import BenchError

#: the variables the agent passes to a simulation (agent.launch.environ)
_ENV_PASSED = ("PATH", "HOME", "LANG", "TMPDIR")


def environ():
    e = {k: os.environ[k] for k in _ENV_PASSED if k in os.environ}
    e.setdefault("PATH", os.defpath)
    e.setdefault("LANG", "C.UTF-8")
    e["SIMVISOR_CORES"] = e["OMP_NUM_THREADS"] = "1"
    return e


def run_dir(parent, name, params):
    """A directory with params.json, as the agent prepares one."""
    d = pathlib.Path(parent) / name
    d.mkdir(parents=True, exist_ok=True)
    (d / "params.json").write_text(json.dumps(params) + "\n")
    return d


async def _spawn(code, cwd):
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        f"agent.codes.{code}",
        cwd=cwd,
        env=environ(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )


async def _kill(proc):
    """SIGKILL a process group we started, and reap it."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        await asyncio.wait_for(proc.communicate(), clients.WAIT_SECS)
    except asyncio.TimeoutError:
        pass


async def sleep_spawn_and_exit(cwd):
    """A ``sleep`` (secs=0) run: (secs until spawned, secs until exited).

    Spawned: `asyncio.create_subprocess_exec` returned (the process exists and
    exec succeeded). Exited: its pipes are drained and it is reaped.
    """
    t0 = time.perf_counter()
    p = await _spawn("sleep", cwd)
    t1 = time.perf_counter()
    try:
        _, err = await asyncio.wait_for(p.communicate(), clients.WAIT_SECS)
    except asyncio.TimeoutError:
        await _kill(p)
        raise BenchError("bare sleep did not exit in time") from None
    t2 = time.perf_counter()
    if p.returncode != 0:
        raise BenchError(f"bare sleep exited {p.returncode}: {err[-300:]!r}")
    return t1 - t0, t2 - t0


async def forever_kill(cwd):
    """Spawn ``forever`` in its own group, wait for its first heartbeat, then
    time ``os.killpg(SIGTERM)`` until it is reaped; checks the group is gone."""
    p = await _spawn("forever", cwd)
    try:
        while True:
            line = await asyncio.wait_for(p.stdout.readline(), clients.WAIT_SECS)
            if not line:
                raise BenchError("bare forever ended before its heartbeat")
            if b"heartbeat" in line:
                break
        t0 = time.perf_counter()
        os.killpg(p.pid, signal.SIGTERM)
        await asyncio.wait_for(p.wait(), clients.WAIT_SECS)
        t1 = time.perf_counter()
    except BaseException:
        await _kill(p)
        raise
    await asyncio.wait_for(p.communicate(), clients.WAIT_SECS)
    left = clients.group_members(p.pid)
    if left:
        raise BenchError(f"bare forever: group {p.pid} still has {left}")
    return t1 - t0


async def sleep_throughput(cwd, count, concurrency):
    """`count` bare ``sleep`` runs, `concurrency` at a time; runs per second."""
    s = asyncio.Semaphore(concurrency)

    async def one():
        async with s:
            await sleep_spawn_and_exit(cwd)

    t0 = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(count)))
    return count / (time.perf_counter() - t0)


class Relay:
    """`tests.bench.relay` in a subprocess: text sent to /in comes out of /out."""

    def __init__(self):
        self._proc = None
        self._in = None
        self._out = None

    async def start(self):
        self._proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.bench.relay",
            cwd=clients.ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        line = await asyncio.wait_for(self._proc.stdout.readline(), clients.WAIT_SECS)
        if not line.strip().isdigit():
            raise BenchError(f"relay did not start: {line!r}")
        u = f"ws://127.0.0.1:{int(line)}"
        self._out = await self._connect(u + "/out")
        self._in = await self._connect(u + "/in")
        return self

    async def _connect(self, url):
        return await asyncio.wait_for(
            tornado.websocket.websocket_connect(
                tornado.httpclient.HTTPRequest(
                    url,
                    connect_timeout=clients.WAIT_SECS,
                    request_timeout=clients.WAIT_SECS,
                )
            ),
            clients.WAIT_SECS,
        )

    async def one_way(self, text):
        """Seconds from sending `text` on /in until it is read from /out."""
        t0 = time.perf_counter()
        self._in.write_message(text)
        m = await asyncio.wait_for(self._out.read_message(), clients.WAIT_SECS)
        t1 = time.perf_counter()
        if m != text:
            raise BenchError(f"relay returned {m!r:.100}")
        return t1 - t0

    async def stop(self):
        for w in (self._in, self._out):
            if w is not None:
                w.close()
        if self._proc is None or self._proc.returncode is not None:
            return
        # the relay exits when its stdin closes
        self._proc.stdin.close()
        try:
            await asyncio.wait_for(self._proc.wait(), 10)
        except asyncio.TimeoutError:
            self._proc.kill()
            await self._proc.wait()


async def http_posts(api, count, path="/logout"):
    """`count` POSTs of `path`, all submitted at once; requests per second."""
    t0 = time.perf_counter()
    await asyncio.gather(*(api.call("POST", path, expect=200) for _ in range(count)))
    return count / (time.perf_counter() - t0)


def job_document():
    """A typical ``db/jobs/<user>/<id>.json``: a sleep simulation run a few times."""
    now = time.time()
    h = [
        {
            "run_id": f"{int(now * 1e6):x}-{i:012x}",
            "status": "completed",
            "queued_at": now - 100 * i,
            "started_at": now - 100 * i + 0.01,
            "ended_at": now - 100 * i + 1.02,
            "cores": 1,
            "driver": "local",
            "host": "localhost",
            "exit_code": 0,
            "error": None,
        }
        for i in range(1, 6)
    ]
    d = {
        "id": "0123456789ab",
        "user": "admin",
        "code": "heat",
        "name": "heat: pulse, 101 points",
        "params": {"steps": 300000, "nx": 101, "alpha": 0.02, "initial": "pulse"},
        "created": now - 1000,
        "updated": now - 1000,
        "agent_id": "admin-local-0123abcd",
        "job": {
            "status": "running",
            "run_id": h[0]["run_id"],
            "situation": "",
            "queue_position": None,
            "progress": 0.42,
            "cores": 1,
            "driver": "local",
            "host": "localhost",
            "kind": "run",
            "queued_at": now,
            "started_at": now + 0.01,
            "ended_at": None,
            "exit_code": None,
            "error": None,
            "frames": 42,
            "history": h,
        },
    }
    # as supervisor.store.Store.save encodes it
    return json.dumps(d, indent=1, sort_keys=True).encode()


def store_writes(directory, data, count, budget_secs):
    """Wall times of `store.write_atomic` and of plain open/write/close.

    Alternated, one document each, in `directory` (a file system like the
    supervisor's data directory).

    Returns:
        tuple: (atomic seconds list, plain seconds list)
    """
    d = pathlib.Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    a = d / "atomic.json"
    p = d / "plain.json"
    atomic = []
    plain = []
    end = time.monotonic() + budget_secs
    for i in range(count):
        if i >= 5 and time.monotonic() > end:
            break
        t0 = time.perf_counter()
        store.write_atomic(a, data)
        t1 = time.perf_counter()
        with open(p, "wb") as f:
            f.write(data)
        t2 = time.perf_counter()
        atomic.append(t1 - t0)
        plain.append(t2 - t1)
    if a.read_bytes() != data or p.read_bytes() != data:
        raise BenchError("store write check failed")
    return atomic, plain
