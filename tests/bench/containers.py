"""Docker rows: a container agent's cold start and a warm run start.

A private dockerd (tests/docker_engine.py) with the agent image, and a
supervisor whose default driver is docker. Cold: the user's container is
removed before each request, so the run waits for a new container and its
agent to connect. Warm: the container is up. Both are timed from the run
request to the ``running`` push (the agent connected and started the code),
beside the floor of a bare ``docker run`` of ``true`` (create, start, wait,
remove through the Docker SDK) measured in the same run.
"""

import asyncio
import json
import secrets
import shutil
import tempfile
import time

from tests import docker_engine
from tests.bench import clients, figures
from tests.bench.report import BenchError, paired

#: rows 8 and 9: container starts (each cold one makes a new container)
COLD_RUNS = 8
WARM_RUNS = 15


def unavailable():
    """Why the docker rows cannot run here, or None."""
    return docker_engine.check_host()


class DockerBench(figures._Bench):
    """A supervisor with one Docker host (a dockerd of the bench's own)."""

    def __init__(self, conftest, data_dir, engine):
        self.engine = engine
        self.docker = engine.client()
        self.project = f"bench{secrets.token_hex(4)}"
        self.sock_dir = tempfile.mkdtemp(prefix="svs-bench-", dir="/tmp")
        super().__init__(
            conftest,
            data_dir,
            docker_hosts=json.dumps([engine.host_config("d1", 2)]),
            docker_image=engine.image,
            docker_project=self.project,
            agent_socket=f"{self.sock_dir}/agent.sock",
            default_driver="docker",
            agent_idle_secs=600,
        )

    @classmethod
    async def make(cls, conftest, data_dir):
        e = docker_engine.Engine("bench")
        await asyncio.to_thread(e.start)
        try:
            e.image, err = await asyncio.to_thread(e.build_image)
            if not e.image:
                raise BenchError(f"agent image not built: {err}")
        except BaseException:
            await asyncio.to_thread(e.stop)
            raise
        return cls(conftest, data_dir, e)

    def _containers(self):
        return self.docker.containers.list(
            all=True,
            filters={"label": f"simvisor.project={self.project}"},
            ignore_removed=True,
        )

    async def _no_container(self):
        """Kill the agents, wait until their containers are gone."""
        for a in await self.api.call("GET", "/admin/agents", expect=200):
            await self.api.call("POST", f"/admin/agents/{a['id']}/kill", expect=200)
        end = time.monotonic() + clients.WAIT_SECS
        while await asyncio.to_thread(self._containers):
            if time.monotonic() > end:
                raise BenchError("containers not removed")
            await asyncio.sleep(0.05)

    async def run_start(self, sim_id, cold):
        """Seconds from the run request to the ``running`` push."""
        if cold:
            await self._no_container()
        s, j, m0, _ = await self.run_and_wait(
            sim_id, ("running", *clients.ENDED), "running"
        )
        if j["status"] != "running":
            raise BenchError(f"sleep run went {j['status']}: {j['error']}")
        rid = j["run_id"]
        _, m = await self.events.wait_for(
            lambda m: clients.is_job(m, sim_id, clients.ENDED)
            and m["job"]["run_id"] == rid,
            m0,
            "sleep completed",
        )
        if m["job"]["status"] != "completed":
            raise BenchError(f"sleep ended {m['job']['status']}: {m['job']['error']}")
        return s

    async def bare_run(self):
        """Seconds of a bare ``docker run --rm --network none <image> true``."""

        def _run():
            t0 = time.perf_counter()
            self.docker.containers.run(
                self.engine.image, ["true"], network_mode="none", remove=True
            )
            return time.perf_counter() - t0

        return await asyncio.to_thread(_run)

    async def cleanup(self):
        try:
            left = await super().cleanup()
            c = await asyncio.to_thread(self._containers)
            if c:
                left += [x.name for x in c]
            return left
        finally:
            await asyncio.to_thread(self.engine.stop)
            shutil.rmtree(self.sock_dir, ignore_errors=True)


async def rows(b, cold, warm):
    """Rows 8 and 9 (`cold`, `warm`) through `b` (a started `DockerBench`)."""
    (sid,) = await b.api.create_sims(1, "sleep", {"secs": 0})
    # warm-up: the image's layers in the page cache
    await b.bare_run()
    await b.run_start(sid, cold=True)
    cold.floor, cold.figure = await paired(
        b.bare_run, lambda: b.run_start(sid, cold=True), COLD_RUNS, 30
    )
    warm.floor, warm.figure = await paired(
        b.bare_run, lambda: b.run_start(sid, cold=False), WARM_RUNS, 20
    )
