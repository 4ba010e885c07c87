"""What the agent's pool tests share: run ops as the pools get them (parsed,
valid protocol messages) and a recorder of the pools' events."""

import asyncio

from agent import protocol


def run_op(run_id, argv, kind="run", code="test", **fields):
    """A ``run`` (or ``analysis``) op of `argv` in run directory ``u/<run_id>``."""
    m = {
        "run_id": run_id,
        "op_id": 1,
        "code": code,
        "argv": argv,
        "params": {},
        "run_dir": f"u/{run_id}",
        "cores": 1,
        "max_run_secs": 60,
        "inputs": {},
        **fields,
    }
    # what the client hands a pool is a parsed, valid message
    return protocol.parse(
        protocol.TO_AGENT, protocol.make(protocol.TO_AGENT, kind, **m)
    )


class Events:
    """Records the pool's events and lets a test wait for a condition on them."""

    def __init__(self):
        self.events = []
        self._changed = asyncio.Event()

    def __call__(self, run, kind):
        v = {
            "started": lambda: run.pid,
            "progress": lambda: run.progress,
            "frame": lambda: run.frames[-1],
            "log": lambda: run.log.end,
            "exited": lambda: run.status,
        }[kind]()
        self.events.append((run.run_id, kind, v))
        self._changed.set()

    def of(self, run_id, kind=None):
        return [(k, v) for i, k, v in self.events if i == run_id and kind in (None, k)]

    async def until(self, predicate, timeout_secs=10):
        async with asyncio.timeout(timeout_secs):
            while not predicate():
                self._changed.clear()
                await self._changed.wait()
