"""Task ownership for the agent: every task has an owner that keeps and cancels it.

The pools and the client each hold one `Tasks`: `spawn` keeps a reference
until the task ends and logs what it raised; `cancel` cancels what is left
(e.g. in a synchronous ``destroy``), `join` waits until nothing is left, and
`destroy` does both. The agent never imports `supervisor` (it is installed
alone), so this is the agent's own small copy of `supervisor.tasks`.
"""

import asyncio

from agent.log import log, stack


class Tasks:
    """The tasks of one owner.

    Args:
        owner (str): names the owner in logs
    """

    def __init__(self, owner):
        self.owner = owner
        self._tasks = set()

    def spawn(self, coro):
        """Start `coro` as a task and keep it until it ends.

        Returns:
            asyncio.Task: the task (the owner may cancel it)
        """
        t = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(t)
        t.add_done_callback(self._done)
        return t

    def cancel(self):
        """Cancel every task held now."""
        for t in list(self._tasks):
            t.cancel()

    async def join(self):
        """Wait until no task is held (including tasks spawned meanwhile)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def destroy(self):
        """Cancel every task (also those spawned while they end) and wait for them."""
        while self._tasks:
            self.cancel()
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def _done(self, task):
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log("task_error", owner=self.owner, error=stack(task.exception()))
