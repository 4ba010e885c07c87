"""One run's cgroup, as the pool and the run's keeper use it (`RunCgroup`).

`agent.cgroup` makes it (and says which mode the host offers); the keeper
(`agent.keeper`) loads this file by path, so it is stdlib only and imports
nothing of the `agent` package. The keeper moves the code in before it
execs (`RunCgroup.enter`), signals it, kills it (v2 ``cgroup.kill``; v1:
freezer, SIGKILL, thaw) and waits until it is empty: on v2 for the
``populated 0`` of ``cgroup.events``, a poll(POLLPRI) of that file along
with a signalfd of the keeper's signals (`RunCgroup.wait`); on v1 by reading ``cgroup.procs`` again
(a poll: v1 has no event for a cgroup becoming empty). The pool reads the
OOM kills and removes it.
"""

import ctypes
import math
import os
import select
import signal
import time

#: v1 freezer: how long a freeze may take before the kill goes on without it
_FREEZE_SECS = 1.0


def parse_keys(text):
    """A flat keyed file (``cgroup.events``, ``memory.events``) as {key: int}."""
    rv = {}
    for line in text.splitlines():
        k, _, v = line.partition(" ")
        try:
            rv[k] = int(v)
        except ValueError:
            pass
    return rv


class RunCgroup:
    """One run's cgroup: a directory per hierarchy (one only, on pure v2).

    The pool makes it (`Layout.create`) and passes `dirs` to the keeper,
    which rebuilds it with `RunCgroup(dirs)`: each directory's role shows in
    its files (``cgroup.kill``: v2, ``freezer.state``: v1 freezer).

    Args:
        dirs (list): absolute directories
        memory_limit_bytes (int): for the OOM message (None: unknown)
        pids_limit (int): for the message of refused process starts
    """

    def __init__(self, dirs, memory_limit_bytes=None, pids_limit=None):
        self.dirs = list(dirs)
        self.memory_limit_bytes = memory_limit_bytes
        self.pids_limit = pids_limit
        self.unified = next(
            (d for d in self.dirs if os.path.exists(os.path.join(d, "cgroup.kill"))),
            None,
        )
        self.freezer = next(
            (d for d in self.dirs if os.path.exists(os.path.join(d, "freezer.state"))),
            None,
        )
        #: where membership is read: the v2 directory, else the freezer's
        self.members = self.unified or self.freezer or (self.dirs[0] if dirs else None)
        #: True: `left` must be polled (v1); False: `wait` wakes on the end
        self.poll = self.unified is None
        self._events = None
        self._sigfd = None

    def enter(self):
        """Move the calling process in (the keeper's child, before it execs)."""
        for d in self.dirs:
            write(os.path.join(d, "cgroup.procs"), "0")

    def watch(self):
        """Keep ``cgroup.events`` open (v2), for `wait` and `left`.

        Not inotify: closing an inotify instance waits for an RCU grace
        period (10-20 ms, at the keeper's exit), and its events go through a
        work queue; a poll(POLLPRI) of the file is woken at once.

        Returns:
            bool: False if there is nothing to watch (`left` is polled instead)
        """
        if self.unified is None:
            return False
        try:
            self._events = os.open(
                os.path.join(self.unified, "cgroup.events"), os.O_RDONLY | os.O_CLOEXEC
            )
        except OSError:
            self.poll = True
            return False
        return True

    def wait(self, signals, timeout_secs):
        """`signal.sigtimedwait` of blocked `signals` that also ends when
        ``cgroup.events`` changes (once watched; else the plain wait).

        The signals stay blocked: a signalfd only says one is pending, and
        sigtimedwait takes it.

        Returns:
            signal.struct_siginfo: or None (timed out, or the cgroup changed)
        """
        if self._events is not None and self._sigfd is None:
            self._sigfd = _signalfd(signals)
        if self._events is None or self._sigfd is None:
            return signal.sigtimedwait(signals, timeout_secs)
        i = signal.sigtimedwait(signals, 0)
        if i is not None:
            return i
        p = select.poll()
        p.register(self._events, select.POLLPRI)
        p.register(self._sigfd, select.POLLIN)
        p.poll(math.ceil(timeout_secs * 1000))
        return signal.sigtimedwait(signals, 0)

    def pids(self):
        """Pids in the cgroup (its own ``cgroup.procs``; runs make no sub-cgroups)."""
        try:
            with open(os.path.join(self.members, "cgroup.procs")) as f:
                return [int(x) for x in f.read().split()]
        except (OSError, ValueError):
            return []

    def left(self):
        """How many processes are left: v2 ``populated`` (0 or 1), else the count."""
        if self.unified is not None:
            try:
                if self._events is None:
                    with open(os.path.join(self.unified, "cgroup.events")) as f:
                        return parse_keys(f.read()).get("populated", 0)
                # read from the start: that also re-arms its POLLPRI
                os.lseek(self._events, 0, os.SEEK_SET)
                t = os.read(self._events, 4096).decode()
                return parse_keys(t).get("populated", 0)
            except OSError:
                return 0
        return len(self.pids())

    def signal(self, sig):
        """Send `sig` to every process in the cgroup (a stop's SIGTERM).

        A pid is signaled through a pidfd opened before the membership is
        read again, so a pid reused meanwhile by a stranger is never hit.

        Returns:
            int: how many were signaled
        """
        fds = {}
        for p in self.pids():
            try:
                fds[p] = os.pidfd_open(p)
            except OSError:
                pass
        try:
            n = 0
            for p in set(self.pids()) & set(fds):
                try:
                    signal.pidfd_send_signal(fds[p], sig)
                    n += 1
                except OSError:
                    pass
            return n
        finally:
            for fd in fds.values():
                os.close(fd)

    def kill(self):
        """SIGKILL everything in the cgroup (again each call: a fork since is hit too).

        v2: ``cgroup.kill``, which also stops forks while it runs. v1: freeze
        (polled until frozen, at most `_FREEZE_SECS`), SIGKILL each task, thaw.

        Returns:
            int: as `left`, just after
        """
        if self.unified is not None:
            write(os.path.join(self.unified, "cgroup.kill"), "1")
            return self.left()
        f = self.freezer and os.path.join(self.freezer, "freezer.state")
        if f:
            _freeze(f)
        try:
            for p in self.pids():
                # frozen: a pid can neither exit nor be reused before the kill
                try:
                    os.kill(p, signal.SIGKILL)
                except OSError:
                    pass
        finally:
            if f:
                write(f, "THAWED", missing_ok=True)
        return self.left()

    def oom_kills(self):
        """The OOM killer's kills in the run's memory cgroup, or None if unknown."""
        for d in self.dirs:
            for n in ("memory.events", "memory.oom_control"):
                try:
                    with open(os.path.join(d, n)) as f:
                        return parse_keys(f.read()).get("oom_kill")
                except OSError:
                    continue
        return None

    def end_counts(self):
        """What the run's end is told by (read before the cgroup goes).

        Returns:
            dict: oom_kills, pids_refused, memory_limit_bytes, pids_limit
            (each an int or None), read from the cgroup's files
        """
        return {
            "oom_kills": self.oom_kills(),
            "pids_refused": self.pids_refused(),
            "memory_limit_bytes": self.memory_limit_bytes
            or self._limit(("memory.max", "memory.limit_in_bytes")),
            "pids_limit": self.pids_limit or self._limit(("pids.max",)),
        }

    def _limit(self, names):
        for d in self.dirs:
            for n in names:
                try:
                    with open(os.path.join(d, n)) as f:
                        v = f.read().strip()
                except OSError:
                    continue
                # v1's "no limit" is a huge number
                return int(v) if v.isdigit() and int(v) < 2**62 else None
        return None

    def pids_refused(self):
        """Process starts refused at the pids limit (``pids.events`` max), or None."""
        for d in self.dirs:
            try:
                with open(os.path.join(d, "pids.events")) as f:
                    return parse_keys(f.read()).get("max")
            except OSError:
                continue
        return None

    def remove(self, parents=False):
        """rmdir every directory; an empty cgroup only.

        Args:
            parents (bool): the per-agent parents too, if empty (the
                keeper of a run whose agent is gone)
        Returns:
            list: the directories left (still busy)
        """
        for fd in (self._events, self._sigfd):
            if fd is not None:
                os.close(fd)
        self._events = self._sigfd = None
        rv = []
        for d in self.dirs:
            try:
                os.rmdir(d)
            except FileNotFoundError:
                pass
            except OSError:
                rv.append(d)
        if parents and not rv:
            for d in {os.path.dirname(x) for x in self.dirs}:
                if os.path.basename(d).startswith("simvisor-"):
                    try:
                        os.rmdir(d)
                    except OSError:
                        pass
        return rv


def _freeze(state_file):
    try:
        write(state_file, "FROZEN")
    except OSError:
        return
    end = time.monotonic() + _FREEZE_SECS
    d = 0.0005
    while time.monotonic() < end:
        try:
            with open(state_file) as f:
                if f.read().strip() == "FROZEN":
                    return
        except OSError:
            return
        time.sleep(d)
        d = min(d * 2, 0.02)


def _signalfd(signals):
    """A signalfd of `signals` (non-blocking), or None where there is none."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        m = (ctypes.c_ulong * (1024 // (8 * ctypes.sizeof(ctypes.c_ulong))))()
        libc.sigemptyset(ctypes.byref(m))
        for x in signals:
            libc.sigaddset(ctypes.byref(m), int(x))
        fd = libc.signalfd(-1, ctypes.byref(m), os.O_NONBLOCK | os.O_CLOEXEC)
    except (OSError, AttributeError):
        return None
    return fd if fd >= 0 else None


def write(path, value, missing_ok=False):
    """Write a cgroup file (one value: one write)."""
    try:
        with open(path, "w") as f:
            f.write(value)
    except FileNotFoundError:
        if not missing_ok:
            raise
