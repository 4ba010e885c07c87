"""Talking to an agent: frames out, ops with op ids, their replies as futures.

`Agents` holds one `Ops` and hands out its methods; each agent's pending
ops are in its record (``agent.ops``: op id -> future). No state of its own
but the op id counter.
"""

import asyncio

from agent import protocol
from supervisor import events


class AgentGone(Exception):
    """The agent went away while an op waited for its reply."""


class OpFailed(Exception):
    """The agent answered an op with a failure; the message is the agent's."""


class Ops:
    def __init__(self):
        self._ids = iter(range(1, 2**62))
        # connection -> frames sent to it in this turn of the loop
        self._corks = {}

    def send(self, agent, kind, **fields):
        """Queue a frame to `agent`; False if it is not connected.

        The frames of one turn of the loop go out in one write at its end
        (a sweep's run ops, the forgets of many ends), in order; `flush`
        writes them at once (before a close).
        """
        c = agent.conn
        if c is None or not c.is_open():
            return False
        m = protocol.make(protocol.TO_AGENT, kind, **fields).encode()
        q = self._corks.get(c)
        if q is None:
            q = self._corks[c] = []
            asyncio.get_running_loop().call_soon(self._uncork, c)
        q.append(events.frame(m))
        return True

    def flush(self, agent):
        """Write what was sent to `agent` this turn now (it is to be closed)."""
        if agent.conn is not None:
            self._uncork(agent.conn)

    def _uncork(self, conn):
        q = self._corks.pop(conn, None)
        if q:
            # closed meanwhile: dropped (its ops fail as the close says)
            conn.write_frames(q[0] if len(q) == 1 else b"".join(q))

    def new_op(self, agent):
        """An op id and the future its reply resolves (or `AgentGone` fails)."""
        i = next(self._ids)
        f = asyncio.get_running_loop().create_future()
        agent.ops[i] = f
        return i, f

    def reply(self, agent, msg):
        f = agent.ops.pop(msg["op_id"], None)
        if f is None or f.done():
            return
        if msg["ok"]:
            f.set_result(msg["result"])
        else:
            f.set_exception(OpFailed(msg["error"] or "agent op failed"))

    async def call(self, agent, kind, timeout_secs, **fields):
        """Send op `kind` and await its reply's result.

        Raises:
            AgentGone: not connected, or it went away before replying
            OpFailed: it replied that the op failed
            TimeoutError: no reply in time
        """
        i, f = self.new_op(agent)
        if not self.send(agent, kind, op_id=i, **fields):
            agent.ops.pop(i, None)
            raise AgentGone(f"agent {agent.id} is not connected")
        try:
            return await asyncio.wait_for(asyncio.shield(f), timeout_secs)
        finally:
            agent.ops.pop(i, None)

    def fail(self, agent, message):
        """Every op waiting for `agent`'s reply fails with `AgentGone`."""
        for f in agent.ops.values():
            if not f.done():
                f.set_exception(AgentGone(message))
                # retrieved by whoever awaits it; none may be waiting
                f.exception()
        agent.ops.clear()
