"""Per-run cgroups: a local run's limits, the kill of its whole tree, its end.

Where the host allows it, every local run gets a cgroup of its own, below a
per-agent parent (``simvisor-agent-<pid>``, created below the agent's own
cgroup in each hierarchy used). The code enters it before it execs (the
keeper's child writes itself into ``cgroup.procs``), so no process of the
run is outside it even for a moment, whatever it forks or however it
detaches. What the host offers decides the mode (`Layout.mode`):

- ``v2``: the unified hierarchy has the cpu, memory and pids controllers
  (delegated or ours): limits, ``cgroup.kill`` and ``cgroup.events`` from it.
- ``hybrid``: a v2 tree is mounted (even one with no controllers, as on a
  host that keeps them in v1) and gives the kill and the events; the limits
  come from the v1 hierarchies of those controllers.
- ``v1``: no usable v2 tree: limits from v1, the kill by the v1 freezer
  (freeze, SIGKILL every task, thaw), the end by reading ``cgroup.procs``
  again (a poll: v1 has no event for a cgroup becoming empty).
- ``none``: nothing writable (no privilege, no delegation, a container):
  the keeper walks ``/proc`` as before (`agent.keeper`), and `Layout.reason`
  says why.

Limits: cores as a CPU quota (``cores`` times the period), memory in bytes
(swap included, where swap is accounted), processes (and threads) as ``pids.max``; 0 or None is no limit. A run killed
by its own memory limit shows in its cgroup's OOM kill count (v2
``memory.events``, v1 ``memory.oom_control``), read by `agent.limits`.

The end is the cgroup's own: v2 ``populated 0`` in ``cgroup.events``,
which wakes the keeper's wait for signals (poll(POLLPRI), see `agent.cgroup_run`).
This module finds the mode and makes each run's cgroup; the run's cgroup
itself (enter, signal, kill, wait, OOM kills, removal) is
`agent.cgroup_run.RunCgroup`, which the keeper loads by path.
"""

import os
import re

from agent.cgroup_run import RunCgroup, write

#: the controllers that give limits
LIMITS = ("cpu", "memory", "pids")

#: values of the agent's ``--cgroups``: v1 ignores the v2 tree (as on a
#: host without one), off is the /proc walk only
MODES = ("auto", "v1", "off")

#: CPU quota period
CPU_PERIOD_US = 100000

_AGENT_PARENT = "simvisor-agent-{}"
_STALE = re.compile(r"^simvisor-agent-(\d+)$")


def parse_mounts(mountinfo):
    """The cgroup mounts of a ``/proc/self/mountinfo`` text.

    Returns:
        tuple: (v2 (mount point, root) or None, {v1 controller: (mount point, root)})
    """
    v2 = None
    v1 = {}
    for line in mountinfo.splitlines():
        left, sep, right = line.partition(" - ")
        a = left.split()
        b = right.split()
        if not sep or len(a) < 5 or len(b) < 3:
            continue
        m = (_unescape(a[4]), a[3])
        if b[0] == "cgroup2" and v2 is None:
            v2 = m
        elif b[0] == "cgroup":
            for c in b[2].split(","):
                v1.setdefault(c, m)
    return v2, v1


def parse_own(proc_cgroup):
    """A ``/proc/self/cgroup`` text as {controller: path}, the v2 path under ``""``."""
    rv = {}
    for line in proc_cgroup.splitlines():
        x = line.split(":", 2)
        if len(x) != 3:
            continue
        for c in x[1].split(",") if x[1] else [""]:
            rv[c] = x[2]
    return rv


def own_dir(mount, path):
    """The directory of cgroup `path` in `mount` (mount point, root), or None."""
    if mount is None or path is None:
        return None
    mp, root = mount
    if root == "/":
        return mp.rstrip("/") + (path if path != "/" else "")
    if path == root or path.startswith(root.rstrip("/") + "/"):
        return mp.rstrip("/") + path[len(root.rstrip("/")) :]
    return None


def limit_writes(version, cores=None, memory_bytes=None, pids=None):
    """(controller, file, value) that set a run's limits; None or 0: no limit."""
    rv = []
    if cores:
        q = str(int(cores * CPU_PERIOD_US))
        if version == 2:
            rv.append(("cpu", "cpu.max", f"{q} {CPU_PERIOD_US}"))
        else:
            rv.append(("cpu", "cpu.cfs_period_us", str(CPU_PERIOD_US)))
            rv.append(("cpu", "cpu.cfs_quota_us", q))
    if memory_bytes:
        f = "memory.max" if version == 2 else "memory.limit_in_bytes"
        rv.append(("memory", f, str(int(memory_bytes))))
    if pids:
        rv.append(("pids", "pids.max", str(int(pids))))
    return rv


class Layout:
    """Where this agent's run cgroups go, and which mode that is.

    Build it with `for_agent`. The per-agent parents exist only while a run
    cgroup is in them (`create` makes them, `RunCgroup.remove` with
    ``parents`` removes them once empty): an agent that dies leaves nothing
    in a cgroup that is not its own. `remove` them when the agent ends.

    Args:
        unified (str): the per-agent parent in the v2 tree, or None
        parents (dict): controller -> (version, per-agent parent directory)
        reason (str): what is missing (no mode, or no limits)
    """

    def __init__(self, unified=None, parents=None, reason=""):
        self.unified = unified
        self.parents = parents or {}
        self.reason = reason
        #: enabled for the run cgroups in a new v2 parent
        self.v2_controllers = sorted(c for c, x in self.parents.items() if x[0] == 2)
        v = {x[0] for x in self.parents.values()}
        if unified:
            self.mode = "hybrid" if 1 in v else "v2"
        elif self.parents:
            self.mode = "v1"
        else:
            self.mode = "none"

    def describe(self):
        """One line for the log and the README's words: mode, limits, why not."""
        if self.mode == "none":
            return f"none ({self.reason})"
        lim = " ".join(
            f"{c}:v{v}" for c, (v, _) in sorted(self.parents.items()) if c in LIMITS
        )
        rv = f"{self.mode} (limits {lim or 'none'}"
        return rv + (f"; {self.reason})" if self.reason else ")")

    def create(self, name, cores=None, memory_bytes=None, pids=None):
        """The run's cgroup, made and limited (nothing is in it yet).

        Args:
            name (str): unique among this agent's runs (a run id)
        Returns:
            RunCgroup: or None in mode ``none``
        Raises:
            OSError: it cannot be made or limited (what was made is removed)
        """
        if self.mode == "none":
            return None
        d = {}
        n = f"run-{name}"
        try:
            self._make_parents()
            if self.unified:
                d[""] = _mkdir(os.path.join(self.unified, n))
            for c, (v, p) in self.parents.items():
                x = os.path.join(p, n)
                # v2 controllers share the unified directory
                d[c] = d[""] if v == 2 else _mkdir(x)
            rv = RunCgroup(
                sorted(set(d.values())),
                memory_limit_bytes=memory_bytes,
                pids_limit=pids if "pids" in self.parents else None,
            )
            for c, f, value in limit_writes(2, cores, memory_bytes, pids):
                if c in self.parents and self.parents[c][0] == 2:
                    write(os.path.join(d[c], f), value)
            for c, f, value in limit_writes(1, cores, memory_bytes, pids):
                if c in self.parents and self.parents[c][0] == 1:
                    write(os.path.join(d[c], f), value)
            if memory_bytes and "memory" in self.parents:
                _no_swap_past(self.parents["memory"][0], d["memory"], memory_bytes)
            return rv
        except OSError:
            RunCgroup(sorted(set(d.values()))).remove()
            raise

    def remove(self):
        """Remove the per-agent parents (only empty cgroups can be removed)."""
        for p in self._parent_dirs():
            _rmtree(p)

    def _make_parents(self):
        for p in self._parent_dirs():
            try:
                os.mkdir(p)
            except FileExistsError:
                continue
            if p == self.unified:
                for c in self.v2_controllers:
                    write(os.path.join(p, "cgroup.subtree_control"), f"+{c}")

    def _parent_dirs(self):
        return sorted({self.unified, *(p for _, p in self.parents.values())} - {None})


def for_agent(mode="auto", name=None, parent=None):
    """Detect what this host offers and make the agent's parents.

    Blocking (a few file operations): call before the event loop starts.

    Args:
        mode (str): one of `MODES`
        name (str): the per-agent parent's name (default from our pid)
        parent (str): the cgroup (a path from each hierarchy's root) the
            per-agent parents go in, instead of the agent's own: an empty,
            delegated one, so that v2 controllers can be enabled in it
    Returns:
        Layout: mode ``none`` with its reason if nothing works
    """
    if mode == "off":
        return Layout(reason="turned off (--cgroups off)")
    try:
        with open("/proc/self/mountinfo") as f:
            v2, v1 = parse_mounts(f.read())
        with open("/proc/self/cgroup") as f:
            own = parse_own(f.read())
    except OSError as e:
        return Layout(reason=f"cannot read /proc/self: {e}")
    if parent:
        own = dict.fromkeys([*own, *v1, ""], parent)
    name = name or _AGENT_PARENT.format(os.getpid())
    why = []
    unified = None
    parents = {}
    if v2 and mode == "auto":
        o = own_dir(v2, own.get(""))
        unified = _agent_parent(o, name, why, "v2")
        if unified and not os.path.exists(os.path.join(unified, "cgroup.kill")):
            why.append("v2: no cgroup.kill (kernel before 5.14)")
            _rmtree(unified)
            unified = None
        if unified:
            for c in _enable(o, unified):
                parents[c] = (2, unified)
    for c in (*LIMITS, "freezer"):
        if c in parents or c not in v1 or (c == "freezer" and unified):
            continue
        p = _agent_parent(own_dir(v1[c], own.get(c)), name, why, f"v1 {c}")
        if p:
            parents[c] = (1, p)
    missing = [c for c in LIMITS if c not in parents]
    if missing:
        why.append(f"no {' '.join(missing)} limit")
    if not unified and "freezer" not in parents and parents:
        why.append("v1 without freezer: the kill is repeated until empty")
    rv = Layout(unified, parents, "; ".join(why))
    # made again by the first run
    rv.remove()
    return rv


def _agent_parent(own, name, why, what):
    """Make (or reuse) the per-agent parent below `own`; None if not writable."""
    if own is None:
        why.append(f"{what}: our cgroup is not below the mount")
        return None
    if not os.access(own, os.W_OK):
        why.append(f"{what}: {own} is not writable")
        return None
    _sweep(own)
    try:
        return _mkdir(os.path.join(own, name), exist_ok=True)
    except OSError as e:
        why.append(f"{what}: {e}")
        return None


def _enable(own, parent):
    """Controllers of `LIMITS` enabled for the run cgroups below `parent` (v2)."""
    try:
        with open(os.path.join(parent, "cgroup.controllers")) as f:
            have = set(f.read().split())
    except OSError:
        return []
    for c in LIMITS:
        if c not in have:
            # only where `own` has no process of its own (or is the root)
            try:
                write(os.path.join(own, "cgroup.subtree_control"), f"+{c}")
                have.add(c)
            except OSError:
                pass
    rv = []
    for c in LIMITS:
        if c in have:
            try:
                write(os.path.join(parent, "cgroup.subtree_control"), f"+{c}")
                rv.append(c)
            except OSError:
                pass
    return rv


def _no_swap_past(version, directory, memory_bytes):
    """The memory limit bounds swap too (else a run over it swaps without end).

    v2: no swap (``memory.swap.max`` 0); v1: memory and swap together at the
    limit (``memory.memsw.limit_in_bytes``, after ``memory.limit_in_bytes``,
    which it may not be below). Only where swap is accounted: the file is
    missing otherwise, and nothing is needed.
    """
    f, v = (
        ("memory.swap.max", "0")
        if version == 2
        else ("memory.memsw.limit_in_bytes", str(int(memory_bytes)))
    )
    write(os.path.join(directory, f), v, missing_ok=True)


def _mkdir(path, exist_ok=False):
    try:
        os.mkdir(path)
    except FileExistsError:
        if not exist_ok:
            # a run of that name left by a dead agent: empty, so it goes
            os.rmdir(path)
            os.mkdir(path)
    return path


def _rmtree(path):
    """rmdir a cgroup and its children, deepest first; busy ones stay."""
    try:
        for d, subs, _ in os.walk(path, topdown=False):
            for s in subs:
                try:
                    os.rmdir(os.path.join(d, s))
                except OSError:
                    pass
        os.rmdir(path)
    except OSError:
        pass


def _sweep(own):
    """Remove empty per-agent parents of agents that are gone."""
    try:
        names = os.listdir(own)
    except OSError:
        return
    for n in names:
        m = _STALE.match(n)
        if m and not _alive(int(m.group(1))):
            _rmtree(os.path.join(own, n))


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def _unescape(path):
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), path)
