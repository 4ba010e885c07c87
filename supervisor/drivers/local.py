"""The local driver: each agent is a subprocess of the supervisor's host.

The agent runs in its own session, so a supervisor that stops (or is killed)
leaves it and its simulations running; it reconnects to the next supervisor.
Its secret is written to its stdin; its output goes to a log file.

With ``local_sandbox`` (`agent.sandbox`) the agent runs each code under
bubblewrap: ``on`` always (runs fail if it does not work), ``auto`` if a
check at the first start says it works here.

An agent that dies holding runs does not take them with it: each run's
keeper (`agent.keeper`) waits ``local_orphan_secs`` for a new agent, which
`Agents` starts again under the same id (up to ``local_agent_restarts``
times) and which re-attaches the runs from its run table in
``DATA_DIR/agent/<user>`` (`agent.runtable`). If no new agent comes, its
runs end `error` at once with the exit code and the log's tail, and `kill`
ends their trees. With ``local_agent_restarts`` 0 the keepers end their
trees as soon as their agent dies.

After a supervisor restart, the agents it had started are not its children:
`recover` watches each that is still running through a pidfd, so one that
dies later is restarted like a child, and `process_gone` tells `Agents` of
one that died with (or while there was no) supervisor: it is started again
at once to re-attach its runs, which need not wait for a grace period.
"""

import asyncio
import os
import pathlib
import signal
import sys

from pykern.pkdebug import pkdlog

from agent import runtable, sandbox
from supervisor import resources
from supervisor.drivers import base

HOST = "localhost"


class LocalDriver(base.Driver):
    name = "local"

    def __init__(self, cfg, supervisor_url):
        super().__init__(cfg, supervisor_url)
        self._data_dir = pathlib.Path(cfg.data_dir).resolve()
        #: agents dial the unix socket: a client holding every connection
        #: slot of 127.0.0.1 cannot keep them out
        self.agent_socket = base.agent_socket(cfg)
        self._target = resources.Target(HOST, cfg.local_cores)
        # agent id -> asyncio.subprocess.Process (only agents we started)
        self._procs = {}
        # agent id -> pidfd of an agent a supervisor before us started
        self._watched = {}
        self._waits = set()
        #: the agent's sandbox options, once decided (`_sandbox_argv`)
        self._sandbox = None
        self.agent_restarts = max(0, cfg.local_agent_restarts)
        # no restart: the runs need not wait for one
        self._orphan_secs = cfg.local_orphan_secs if self.agent_restarts else 0.0

    def targets(self):
        return [self._target]

    def log_path(self, agent):
        return self._data_dir / "log" / f"agent-{agent.id}.log"

    def _work_dir(self, agent):
        """The agents of a user share it (one at a time): the next finds the runs."""
        return self._data_dir / "agent" / agent.user

    async def start(self, agent, secret, on_exit):
        self._unwatch(agent.id)
        r = self._data_dir / "run" / agent.user
        r.mkdir(parents=True, exist_ok=True)
        lp = self.log_path(agent)
        lp.parent.mkdir(parents=True, exist_ok=True)
        x = [
            *await self._sandbox_argv(),
            "--work-dir",
            str(self._work_dir(agent)),
            "--orphan-secs",
            str(self._orphan_secs),
            "--unix-socket",
            str(self.agent_socket),
        ]
        with open(lp, "ab") as log:
            p = await asyncio.create_subprocess_exec(
                *self.agent_argv(
                    [sys.executable, "-m", "agent"],
                    agent,
                    r,
                    url="ws://localhost/agent",
                    extra=x,
                ),
                stdin=asyncio.subprocess.PIPE,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
            )
        p.stdin.write(secret.encode() + b"\n")
        await p.stdin.drain()
        p.stdin.close()
        agent.info["pid"] = p.pid
        agent.info["log"] = str(lp)
        self._procs[agent.id] = p
        t = asyncio.get_running_loop().create_task(self._wait(agent, p, on_exit))
        self._waits.add(t)
        t.add_done_callback(self._waits.discard)
        pkdlog("{} started pid={}", agent, p.pid)

    async def _sandbox_argv(self):
        """The agent's sandbox options; ``auto`` checks bwrap once (off the loop)."""
        if self._sandbox is not None:
            return self._sandbox
        m = self._cfg.local_sandbox
        rv = []
        if m != "off":
            rv = ["--sandbox", "--sandbox-uid", str(self._cfg.local_sandbox_uid)]
        if m == "auto":
            e = await asyncio.to_thread(
                sandbox.Sandbox(uid=self._cfg.local_sandbox_uid).check
            )
            if e:
                pkdlog("local_sandbox=auto: local runs are NOT sandboxed: {}", e)
                rv = []
            else:
                pkdlog("local_sandbox=auto: local runs are sandboxed (bwrap)")
        elif m == "on":
            pkdlog("local_sandbox=on: local runs are sandboxed (bwrap)")
        else:
            pkdlog("local_sandbox=off: local runs are NOT sandboxed")
        if self._sandbox is None:
            self._sandbox = rv
        return self._sandbox

    async def _wait(self, agent, proc, on_exit):
        rc = await proc.wait()
        if self._procs.get(agent.id) is proc:
            del self._procs[agent.id]
        pkdlog("{} exited returncode={}", agent, rc)
        # its runs end with it, unless it is started again
        on_exit(
            agent,
            f"agent exited with code {rc}: {self._log_tail(agent)}",
            dead=True,
            # 0: it stopped on purpose (a stop, a shutdown, nothing to do)
            crashed=rc != 0,
        )

    def _log_tail(self, agent):
        try:
            with open(self.log_path(agent), "rb") as f:
                f.seek(max(0, f.seek(0, os.SEEK_END) - 500))
                return f.read().decode(errors="replace").strip()
        except OSError:
            return ""

    def recover(self, agents, on_exit):
        for a in agents:
            self._watch(a, a.info.get("pid"), on_exit)

    def _watch(self, agent, pid, on_exit):
        """``on_exit`` when `agent`'s process `pid` (not our child) ends."""
        try:
            fd = os.pidfd_open(pid) if pid else None
        except OSError:
            fd = None
        if fd is None:
            return
        # checked once pinned: a pid reused since is not the agent
        if not _is_agent(pid, agent.id):
            os.close(fd)
            return

        def _exited():
            self._unwatch(agent.id)
            pkdlog("{} exited pid={} (not our child)", agent, pid)
            # its exit code is its parent's to know: count it as a crash
            on_exit(
                agent,
                f"agent exited (pid {pid}): {self._log_tail(agent)}",
                dead=True,
                crashed=True,
            )

        asyncio.get_running_loop().add_reader(fd, _exited)
        self._watched[agent.id] = fd

    def _unwatch(self, agent_id):
        fd = self._watched.pop(agent_id, None)
        if fd is not None:
            asyncio.get_running_loop().remove_reader(fd)
            os.close(fd)

    def process_gone(self, agent):
        pid = agent.info.get("pid")
        # no pid: not started by a driver (or not recorded): it cannot tell
        if not pid or agent.id in self._procs or agent.id in self._watched:
            return None
        if _is_agent(pid, agent.id):
            return None
        return f"its agent (pid {pid}) was gone when the supervisor restarted"

    async def kill(self, agent):
        self._unwatch(agent.id)
        p = self._procs.pop(agent.id, None)
        pid = p.pid if p else agent.info.get("pid")
        if pid and _is_agent(pid, agent.id):
            await self._stop_pid(pid)
        # gone for good: what it left waiting for a new agent ends now
        e = await asyncio.to_thread(
            runtable.end_keepers, self._work_dir(agent), agent.id
        )
        if e:
            pkdlog("{} its runs ended: {}", agent, e)

    async def _stop_pid(self, pid):
        # SIGTERM (like "shutdown") makes the agent cancel its runs and exit;
        # give it a moment to, then make sure
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        if await _wait_pid(pid, self._cfg.kill_grace_secs + 3):
            return
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    async def destroy(self):
        for i in list(self._watched):
            self._unwatch(i)
        for t in list(self._waits):
            t.cancel()
        await asyncio.gather(*self._waits, return_exceptions=True)


async def _wait_pid(pid, timeout_secs):
    """True if `pid` exits within the timeout (an event, not a poll: pidfd)."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    loop = asyncio.get_running_loop()
    f = loop.create_future()
    loop.add_reader(fd, lambda: f.done() or f.set_result(None))
    try:
        await asyncio.wait_for(f, timeout_secs)
        return True
    except asyncio.TimeoutError:
        return False
    finally:
        loop.remove_reader(fd)
        os.close(fd)


def _is_agent(pid, agent_id):
    """Is `pid` still our agent (and not a reused pid)?"""
    try:
        c = pathlib.Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return agent_id.encode() in c
