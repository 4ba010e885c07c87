"""Library files sent to agents that cannot see this disk (`agent.staging`).

An sbatch agent fetches a run's library files into its cache on the login
node, a chunk at a time (``library_want``); each request is checked here:
the run must be active on that agent and the file one of its own
parameters' (an agent can ask for nothing else, whatever hash it names).
The chunk is read in a thread and sent as ``library_data``. While it
fetches, the agent tells its progress (``staging``): the job waits with
``wait: {reason: "staging", file, done, total}``, and each report gives
the start deadline its time again, so a big file is not taken for an
agent that does not start the run.
"""

import asyncio
import base64

from supervisor import job


class Staging:
    def __init__(self, runs, agents, library, catalog, tasks):
        self._runs = runs
        self._agents = agents
        self._library = library
        self._catalog = catalog
        self._tasks = tasks
        #: bytes sent to agents since start (`metrics`)
        self.sent_bytes = 0
        #: kind -> handler(agent, msg)
        self.handlers = dict(library_want=self._want, staging=self._staging)

    def _want(self, agent, msg):
        r = self._runs.current(agent, msg["run_id"])
        x = None
        if r is not None:
            items = self._library.items(r.sim, self._catalog.get(r.sim.code))
            x = next((i for i in items if i["sha256"] == msg["sha256"]), None)
        if x is None:
            self._agents.send(
                agent,
                "library_data",
                req_id=msg["req_id"],
                error="not a library file of an active run of this agent",
            )
            return
        if msg["offset"] + msg["length"] > x["size"]:
            self._agents.send(
                agent,
                "library_data",
                req_id=msg["req_id"],
                error=f"past the end of {x['name']} ({x['size']} bytes)",
            )
            return
        self._tasks.spawn(self._send(agent, msg))

    async def _send(self, agent, msg):
        try:
            b = await asyncio.to_thread(
                self._library.read, msg["sha256"], msg["offset"], msg["length"]
            )
        except OSError as e:
            self._agents.send(
                agent, "library_data", req_id=msg["req_id"], error=f"not read: {e}"
            )
            return
        self.sent_bytes += len(b)
        self._agents.send(
            agent,
            "library_data",
            req_id=msg["req_id"],
            data=base64.b64encode(b).decode(),
        )

    def _staging(self, agent, msg):
        r = self._runs.current(agent, msg["run_id"])
        if r is None or r.sim.job.status != job.STARTING:
            return
        w = {k: msg[k] for k in ("file", "done", "total")}
        self._runs.staging(r, w)
