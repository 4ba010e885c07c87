"""Ending a local run's processes: signals, and waits until they are gone.

A run's processes are gone when its cgroup is empty (`wait_cgroup_gone`:
its ``populated`` state, or its pids on v1), or, without a cgroup, when its
process group has no live member (`wait_group_gone`: the kernel has no event
for that, so ``/proc`` is polled with a backing-off delay).
"""

import asyncio
import os


def group_pids(pgid):
    """Pids of live (not zombie) processes in process group `pgid`."""
    rv = []
    try:
        names = os.listdir("/proc")
    except OSError:
        return rv
    for n in names:
        if not n.isdigit():
            continue
        try:
            with open(f"/proc/{n}/stat", "rb") as f:
                s = f.read()
        except OSError:
            continue
        # comm (in parens) may hold anything; the fields after it are fixed
        x = s[s.rfind(b")") + 2 :].split()
        if len(x) > 2 and x[0] != b"Z" and int(x[2]) == pgid:
            rv.append(int(n))
    return rv


def kill(pid, sig):
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def killpg(pgid, sig):
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


async def wait_cgroup_gone(cg, deadline):
    """Until the run's cgroup is empty (SIGKILLed again each round), or `deadline`.

    Normally it is at once: the keeper exits only once it is. Else a poll.

    Returns:
        bool: False if it was not empty by `deadline` (loop time)
    """
    loop = asyncio.get_running_loop()
    delay = 0.005
    while cg.left():
        r = deadline - loop.time()
        if r <= 0:
            return False
        cg.kill()
        await asyncio.sleep(min(delay, r))
        delay = min(delay * 2, 0.1)
    return True


async def wait_group_gone(pgid, deadline):
    """Poll /proc until group `pgid` is empty: the kernel gives no event for it.

    Returns:
        bool: False if it was not empty by `deadline` (loop time)
    """
    loop = asyncio.get_running_loop()
    delay = 0.005
    while group_pids(pgid):
        r = deadline - loop.time()
        if r <= 0:
            return False
        await asyncio.sleep(min(delay, r))
        delay = min(delay * 2, 0.1)
    return True
