"""Stored bytes per user: what each keeps on this host, for the plan's cap.

A user's stored bytes are the sum of entries, one per part of a simulation:
each uploaded input (``input:<name>``), the current run's frames and log in
the store (``frames``, ``log``) and its run directory on this host (``run``:
the outputs of local and Docker runs; an sbatch run's are on the login
node, not here). Simulation documents are not counted: they are small and
their number is capped (``max_simulations``).

Entries change as the data does (an upload, a frame, a log line, a run's
end, a deletion), so a user's total is a dict lookup; the whole is measured
once, at start (`sim_store.SimStore.load`). `Usage` does no I/O;
`dir_bytes` (`agent.space`'s) is the one walk, of a directory, blocking
(use a thread).
"""

import collections
import os
import stat

from agent.space import dir_bytes  # noqa: F401 (the one walk, shared with the agent)

#: the parts of a simulation that count (inputs are ``input:<name>``)
FRAMES = "frames"
LOG = "log"
RUN = "run"


def input_part(name):
    return f"input:{name}"


class Usage:
    """Stored bytes per user, by simulation and part."""

    def __init__(self):
        # user -> sim id -> part -> bytes
        self._parts = collections.defaultdict(dict)
        self._totals = collections.Counter()

    def bytes_of(self, user):
        """All that `user` (a name) stores."""
        return self._totals.get(user, 0)

    def get(self, user, sim_id, part):
        return self._parts.get(user, {}).get(sim_id, {}).get(part, 0)

    def set(self, user, sim_id, part, n):
        """`part` of `sim_id` is now `n` bytes (0 removes it)."""
        if not n and part not in self._parts.get(user, {}).get(sim_id, {}):
            return
        s = self._parts[user].setdefault(sim_id, {})
        self._totals[user] += n - s.get(part, 0)
        if n:
            s[part] = n
        else:
            s.pop(part, None)

    def add(self, user, sim_id, part, n):
        """`part` of `sim_id` grew by `n` bytes."""
        self.set(user, sim_id, part, self.get(user, sim_id, part) + n)

    def forget(self, user, sim_id):
        """The simulation is gone, with all its parts."""
        s = self._parts.get(user, {}).pop(sim_id, None)
        if s:
            self._totals[user] -= sum(s.values())


def file_bytes(path):
    """Size of a regular file, 0 if there is none; blocking."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return 0
    return st.st_size if stat.S_ISREG(st.st_mode) else 0
