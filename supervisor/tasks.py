"""Task ownership: every task has an owner that keeps it and cancels it.

STYLE.md: no untracked tasks. An owner (runs, agents, a driver) holds one
`Tasks`; `spawn` keeps a reference until the task ends and logs what it
raised; `destroy` cancels what is left at shutdown and waits for it.
"""

import asyncio

from pykern.pkdebug import pkdlog


class Tasks:
    def __init__(self, owner):
        """
        Args:
            owner (str): names the owner in logs
        """
        self._owner = owner
        self._tasks = set()

    def spawn(self, coro):
        t = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(t)
        t.add_done_callback(self._done)
        return t

    def _done(self, task):
        self._tasks.discard(task)
        if not task.cancelled() and task.exception():
            pkdlog("{} task error={}", self._owner, task.exception())

    async def destroy(self):
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
