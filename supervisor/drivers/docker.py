"""The docker driver: each user's agent in a container of its own, per Docker host.

A container runs the agent image (etc/docker/build-agent-image.sh) as a
non-root uid with a read-only root, a tmpfs /tmp, no capabilities,
no-new-privileges, a pids limit, a memory limit from the user's plan and a CPU
quota that follows the cores of the runs it holds. Only the user's own run
directory is mounted: on a host of ``storage: shared`` (an engine on this
machine) the user's directory of this data directory, bind-mounted, with
their staged library files read-only beside it; on a host of ``storage:
volume`` (one that does not see this disk) a Docker volume of the user's on
that host, whose library files the agent fetches into its cache there
(`agent.staging`) and whose outputs are read through the agent
(`files_remote`). With ``network: none`` (the default) the container has
no network at all: the agent reaches the supervisor through a unix socket
whose directory is mounted read-only, so simulation code reaches nothing.

The agent's secret goes to its stdin through the attach stream, never to
argv, the environment or a file. Containers carry labels (project, user,
agent, host), so after a restart the supervisor finds its own: those of
known agents are re-adopted (the agents reconnect), the rest are removed.
The engine's die events end the runs of a container that died, with the
real reason (exit code, out of memory).
"""

import asyncio
import hashlib
import math
import os
import pathlib

import docker.errors
import docker.types
from pykern.pkdebug import pkdlog

from supervisor import library, tasks
from supervisor.drivers import base, docker_hosts

#: where the user's run directory and the supervisor's socket are in a container
RUN_ROOT = "/simvisor/run"
SOCK_DIR = "/simvisor/sock"

_CPU_PERIOD_USECS = 100_000

#: the exit code of a container whose init was SIGKILLed (the OOM killer, a kill)
_SIGKILL_EXIT = 137

_LOG_TAIL_LINES = 5


agent_socket = base.agent_socket


class DockerDriver(base.Driver):
    name = "docker"

    def __init__(self, cfg, supervisor_url, plan_of):
        """
        Args:
            supervisor_url (callable): the agent websocket's URL (``network: host``)
            plan_of (callable): user name -> `resources.Plan` (memory limit)
        """
        super().__init__(cfg, supervisor_url)
        self._plan_of = plan_of
        self._data_dir = pathlib.Path(cfg.data_dir).resolve()
        self.agent_socket = agent_socket(cfg)
        self.project = (
            cfg.docker_project
            or "sv-" + hashlib.sha256(str(self._data_dir).encode()).hexdigest()[:12]
        )
        self.hosts = {h.name: h for h in docker_hosts.parse(cfg.docker_hosts)}
        # agent id -> (agent, on_exit): the agents whose containers are ours;
        # registered before a container is created, so no stray-removal takes it
        self._agents = {}
        # container ids the engine reported an oom for
        self._oom = set()
        # agent id -> cores its container should have
        self._cores = {}
        self._resizing = set()
        # container id -> the task removing it
        self._removals = {}
        self._tasks = tasks.Tasks("docker driver")
        self._watching = False

    def targets(self):
        return [h.target for h in self.hosts.values()]

    def files_remote(self, host):
        h = self.hosts.get(host)
        return h is not None and h.storage == "volume"

    def pkdebug_str(self):
        return f"DockerDriver(project={self.project} hosts={sorted(self.hosts)})"

    def _uid(self):
        # as root we can hand the run directory to the image's user; otherwise
        # the container runs as us, so the files stay ours
        return self._cfg.docker_uid if os.getuid() == 0 else os.getuid()

    # --- start and stop ----------------------------------------------------

    def recover(self, agents, on_exit):
        """At start: agents known before a restart keep their containers."""
        for a in agents:
            if a.driver == self.name and a.host in self.hosts:
                self._agents[a.id] = (a, on_exit)
        self._watch()

    def _watch(self):
        if not self._watching:
            self._watching = True
            for h in self.hosts.values():
                h.watch(self.project, self._on_event, self._on_subscribed)

    async def start(self, agent, secret, on_exit):
        self._watch()
        h = self.hosts[agent.host]
        self._agents[agent.id] = (agent, on_exit)
        try:
            if h.storage == "volume":
                r = await h.call(
                    _volume, self._volume_name(agent.user), self._labels(h, agent)
                )
            else:
                r = self._data_dir / "run" / agent.user
                await asyncio.to_thread(_user_dir, r, self._uid())
                await asyncio.to_thread(_staged_dir, r / library.STAGED)
            if h.network == "none":
                await asyncio.to_thread(_socket_dir, self.agent_socket.parent)
            cid, name = await h.call(_create, self._spec(h, agent, r), secret)
        except BaseException:
            self._agents.pop(agent.id, None)
            raise
        agent.info["container_id"] = cid
        agent.info["container"] = name
        agent.info["cores"] = 1
        pkdlog("{} started container={} host={}", agent, name, h.name)

    def _volume_name(self, user):
        return f"{self.project}-run-{user}"

    def _labels(self, host, agent):
        return {
            "simvisor.project": self.project,
            "simvisor.user": agent.user,
            "simvisor.agent": agent.id,
            "simvisor.host": host.name,
        }

    def _spec(self, host, agent, run_dir):
        """What the container is made of; `run_dir` is the user's run
        directory here (``storage: shared``) or their volume's name there."""
        m = self._plan_of(agent.user).mem_bytes
        # under the memory limit the simulation dies, not the agent
        x = ["--sim-oom-score-adj", "1000"]
        url = None
        if host.storage == "volume":
            # the image's user owns the volume (its empty mount point's
            # owner is copied in); library files come through the agent
            u = self._cfg.docker_uid
            mounts = [docker.types.Mount(RUN_ROOT, run_dir, type="volume")]
            x += ["--library-cache", f"{RUN_ROOT}/{library.STAGED}"]
        else:
            u = self._uid()
            mounts = [
                docker.types.Mount(RUN_ROOT, str(run_dir), type="bind"),
                # the user's library files, staged for its runs: read-only in
                # there (the agent symlinks them into run directories)
                docker.types.Mount(
                    f"{RUN_ROOT}/{library.STAGED}",
                    str(run_dir / library.STAGED),
                    type="bind",
                    read_only=True,
                ),
            ]
        if host.network == "none":
            url = "ws://localhost/agent"
            x += ["--unix-socket", f"{SOCK_DIR}/{self.agent_socket.name}"]
            # the directory, not the file: a restarted supervisor's new
            # socket shows up in running containers
            mounts.append(
                docker.types.Mount(
                    SOCK_DIR, str(self.agent_socket.parent), type="bind", read_only=True
                )
            )
        a = self.agent_argv(["python3", "-m", "agent"], agent, RUN_ROOT, url, x)
        return dict(
            image=self._cfg.docker_image,
            command=a,
            name=f"simvisor-{agent.id}",
            labels=self._labels(host, agent),
            user=f"{u}:{u}",
            network_mode=host.network,
            read_only=True,
            tmpfs={
                "/tmp": f"rw,nosuid,nodev,size={self._cfg.docker_tmp_bytes},mode=1777"
            },
            cap_drop=["ALL"],
            security_opt=["no-new-privileges"],
            pids_limit=self._cfg.docker_pids_limit,
            cpu_period=_CPU_PERIOD_USECS,
            cpu_quota=_CPU_PERIOD_USECS,
            mem_limit=m,
            # no swap: the limit is the limit
            memswap_limit=m,
            mounts=mounts,
            working_dir=RUN_ROOT,
            stdin_open=True,
            log_config=docker.types.LogConfig(
                type="json-file", config={"max-size": "10m", "max-file": "2"}
            ),
        )

    async def kill(self, agent):
        self._agents.pop(agent.id, None)
        self._cores.pop(agent.id, None)
        c = agent.info.get("container_id")
        h = self.hosts.get(agent.host)
        if not (c and h):
            return
        t = self._removals.get(c)
        if t is None:
            # its own task, which shutdown waits for: a killed agent's
            # container is never left behind
            t = asyncio.get_running_loop().create_task(self._remove(h, agent, c))
            self._removals[c] = t
            t.add_done_callback(lambda _: self._removals.pop(c, None))
        await asyncio.shield(t)

    async def _remove(self, host, agent, cid):
        try:
            await host.call(_remove, cid, self._cfg.kill_grace_secs + 2)
        except Exception as e:
            pkdlog("{} container remove id={} error={}", agent, cid[:12], e)
            raise
        self._oom.discard(cid)
        pkdlog("{} container removed id={}", agent, cid[:12])

    def resize(self, agent, cores):
        """The container's CPU quota follows the cores of the runs it holds."""
        n = max(1, cores)
        if agent.id not in self._agents or self._cores.get(agent.id) == n:
            return
        self._cores[agent.id] = n
        if agent.id not in self._resizing:
            self._resizing.add(agent.id)
            self._tasks.spawn(self._resize(agent))

    async def _resize(self, agent):
        # one task per agent applies the latest wish, in order
        try:
            while (n := self._cores.get(agent.id)) and n != agent.info.get("cores"):
                await self.hosts[agent.host].call(
                    _update, agent.info["container_id"], n * _CPU_PERIOD_USECS
                )
                agent.info["cores"] = n
        finally:
            self._resizing.discard(agent.id)

    async def destroy(self):
        for h in self.hosts.values():
            h.destroy()
        if self._removals:
            await asyncio.wait(
                list(self._removals.values()), timeout=self._cfg.kill_grace_secs + 10
            )
        await self._tasks.destroy()

    # --- what the engines report ---------------------------------------------

    def _on_event(self, host, event):
        c = event.get("id") or event.get("Actor", {}).get("ID")
        a = event.get("Actor", {}).get("Attributes", {})
        k = event.get("Action") or event.get("status")
        if k == "oom":
            self._oom.add(c)
        elif k == "die":
            w = self._agents.get(a.get("simvisor.agent"))
            if w is not None and w[0].info.get("container_id") == c:
                self._tasks.spawn(self._died(host, w, c, int(a.get("exitCode", -1))))

    async def _died(self, host, watched, cid, exit_code, oom=False):
        agent, on_exit = watched
        if self._agents.get(agent.id) is not watched:
            return
        del self._agents[agent.id]
        oom = oom or (cid in self._oom and exit_code == _SIGKILL_EXIT)
        self._oom.discard(cid)
        try:
            t = await host.call(_log_tail, cid)
        except Exception as e:
            t = f"(no log: {e})"
        m = f"container {agent.info.get('container')} exited with code {exit_code}"
        if oom:
            m += " (out of memory)"
        pkdlog("{} container died exit_code={} oom={}", agent, exit_code, oom)
        # the agent is stopped, and so killed: its container is removed
        on_exit(agent, f"{m}: {t}" if t else m, dead=True)

    def _on_subscribed(self, host):
        self._tasks.spawn(self._reconcile(host))

    async def _reconcile(self, host):
        """What happened while nobody watched: strays, deaths, vanished containers."""
        known = {
            i: w
            for i, w in self._agents.items()
            if w[0].host == host.name and w[0].info.get("container_id")
        }
        seen = set()
        for cid, labels, status, exit_code, oom in await host.call(_list, self.project):
            i = labels.get("simvisor.agent")
            w = self._agents.get(i)
            c = w[0].info.get("container_id") if w else None
            if w is not None and c is None:
                # being started
                continue
            if c != cid or labels.get("simvisor.host") != host.name:
                pkdlog("removing container id={} of unknown agent={}", cid[:12], i)
                await host.call(_remove, cid, 0)
                continue
            seen.add(i)
            if status != "running":
                await self._died(host, w, cid, exit_code, oom)
        for i, w in known.items():
            if i not in seen and self._agents.get(i) is w:
                del self._agents[i]
                w[1](w[0], f"container {w[0].info.get('container')} is gone", dead=True)

    # --- admin ---------------------------------------------------------------

    async def containers(self):
        """This supervisor's containers on every host, with their CPU and memory use."""
        res = []
        for h in self.hosts.values():
            try:
                cs = await h.call(_list, self.project)
            except Exception as e:
                res.append({"host": h.name, "error": str(e)})
                continue
            s = await asyncio.gather(
                *(h.call(_stats, c[0]) for c in cs if c[2] == "running"),
                return_exceptions=True,
            )
            s = iter(s)
            for cid, labels, status, exit_code, _ in cs:
                x = next(s) if status == "running" else {}
                res.append(
                    dict(
                        x if isinstance(x, dict) else {"error": str(x)},
                        host=h.name,
                        id=cid,
                        user=labels.get("simvisor.user"),
                        agent=labels.get("simvisor.agent"),
                        state=status,
                        exit_code=exit_code if status != "running" else None,
                    )
                )
        return res

    async def remove_container(self, cid):
        """Remove one of our containers that no agent owns; False if not ours."""
        for h in self.hosts.values():
            for c, *_ in await h.call(_list, self.project):
                if c == cid:
                    await h.call(_remove, c, self._cfg.kill_grace_secs + 2)
                    return True
        return False


# --- blocking helpers (run in threads) ------------------------------------------


def _user_dir(path, uid):
    path.mkdir(parents=True, exist_ok=True)
    if os.getuid() == 0 and path.stat().st_uid != uid:
        os.chown(path, uid, uid)
    path.chmod(0o700)


def _staged_dir(path):
    path.mkdir(mode=0o755, exist_ok=True)


def _volume(client, name, labels):
    """The user's volume of run directories on this host (made once)."""
    try:
        client.volumes.get(name)
    except docker.errors.NotFound:
        # the agent's labels but the agent: the volume outlives it
        client.volumes.create(
            name, labels={k: v for k, v in labels.items() if k != "simvisor.agent"}
        )
    return name


def _socket_dir(path):
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o755)


def _create(client, spec, secret):
    c = client.containers.create(**spec)
    try:
        # attached before the start, so the first line the agent reads is the secret
        s = c.attach_socket(params={"stdin": 1, "stream": 1})
        try:
            c.start()
            getattr(s, "_sock", s).sendall(secret.encode() + b"\n")
        finally:
            s.close()
    except BaseException:
        c.remove(force=True)
        raise
    return c.id, c.name


def _remove(client, cid, grace_secs):
    try:
        c = client.containers.get(cid)
        if grace_secs and c.status == "running":
            try:
                # SIGTERM: the agent cancels its runs; SIGKILL after the grace
                c.stop(timeout=math.ceil(grace_secs))
            except docker.errors.APIError as e:
                pkdlog("container stop id={} error={}", cid[:12], e)
        c.remove(force=True)
    except docker.errors.NotFound:
        pass
    except docker.errors.APIError as e:
        # another remove of it is under way
        if e.status_code != 409:
            raise


def _update(client, cid, cpu_quota):
    client.api.update_container(cid, cpu_period=_CPU_PERIOD_USECS, cpu_quota=cpu_quota)


def _list(client, project):
    """Our containers: (id, labels, state, exit code, killed by the OOM killer)."""
    res = []
    for c in client.api.containers(
        all=True, filters={"label": f"simvisor.project={project}"}
    ):
        s = {}
        if c["State"] != "running":
            try:
                s = client.api.inspect_container(c["Id"])["State"]
            except docker.errors.NotFound:
                continue
        res.append(
            (c["Id"], c["Labels"], c["State"], s.get("ExitCode"), s.get("OOMKilled"))
        )
    return res


def _log_tail(client, cid):
    b = client.api.logs(cid, stdout=True, stderr=True, tail=_LOG_TAIL_LINES)
    return b.decode(errors="replace").strip()[-1000:]


def _stats(client, cid):
    return docker_hosts.stats(client.containers.get(cid))
