"""A run's keeper: the parent of its code, so no process of the run escapes.

`agent.pool` starts every code under a keeper of its own (`argv`): the keeper
makes itself a child subreaper (``PR_SET_CHILD_SUBREAPER``), so every
descendant that is orphaned, even one that started its own session or
process group (a double fork, a daemon), is reparented to it and stays in
view. It forks the code, reaps every child, and ends what is left of the tree
(walking ``/proc`` by parent pid, again until nothing remains):

- when the code exits by itself: SIGKILL at once (no child outlives its run);
- on `STOP_SIGNAL` (SIGTERM, the pool's cancel or time out): SIGTERM to every
  descendant, SIGKILL after ``--grace-secs``;
- on `KILL_SIGNAL` (SIGUSR1): SIGKILL at once (the agent is shutting down).

Where the host allows it (`agent.cgroup`), the pool gives the keeper the
run's cgroup (``--cgroup DIR``, one per hierarchy): the code enters it before
it execs, the stop's SIGTERM goes to every process in it, the SIGKILL is the
cgroup's (v2 ``cgroup.kill``, v1 freezer), and the end is the cgroup's own
``populated 0`` event (a poll(POLLPRI) of ``cgroup.events``): no walk of ``/proc``, no poll
(except on v1-only hosts, see `agent.cgroup`). Without one, the ``/proc``
walk above.

Then the keeper exits as the code did (the same exit code, or the same
signal), so the pool reports the code's own status. It writes nothing to the
run's output except when the code cannot be started (``cannot start ...``,
exit code `CANNOT_START`) or a process would not die.

With ``--output`` (how the pool starts it) the keeper does not depend on its
agent (`agent.keeper_io`): the code's stdout and stderr go through it to the
output file, it watches its agent (``--agent-pid``) and takes a new one
through ``--adopt``, and at the end it writes ``--status``. An agent that dies, even by SIGKILL,
leaves its runs going: a successor re-attaches them from its run table
(`agent.runtable`). If none adopts it within ``--orphan-secs``, the keeper
ends the tree as on `KILL_SIGNAL` and its status says it was orphaned.

Why a keeper per run, not the agent as subreaper: a SIGKILLed agent cannot
clean up, and its orphans would go to init; the keeper outlives its agent
and ends the tree if no agent comes back. The code is the OOM killer's first
choice (``--oom-score-adj``), not the keeper, which keeps the agent's score.

Stdlib only and started by file path (``python -I -S``): a run's environment
has no PYTHONPATH, and the keeper must be this agent's own copy.
"""

import argparse
import ctypes
import importlib.util
import os
import resource
import signal
import subprocess
import sys
import time

#: the pool's "stop with the grace" (cancel, time out)
STOP_SIGNAL = signal.SIGTERM

#: the pool's "kill everything now" (the agent is shutting down)
KILL_SIGNAL = signal.SIGUSR1

#: exit code when the code cannot be executed (as a shell's)
CANNOT_START = 127

#: after SIGKILL, how long a descendant may take to disappear (a process
#: stuck in the kernel) before the keeper exits without it
GONE_SLACK_SECS = 4.0

_STOPS = frozenset((signal.SIGTERM, signal.SIGINT, signal.SIGHUP))
_WAITED = frozenset((signal.SIGCHLD, KILL_SIGNAL, *_STOPS))

_PR_SET_PDEATHSIG = 1
_PR_SET_DUMPABLE = 4
_PR_SET_CHILD_SUBREAPER = 36

#: the poll of /proc while a tree is dying: the kernel gives no event for
#: the end of a process that is not our child
_POLL_FIRST_SECS = 0.005
_POLL_MAX_SECS = 0.1


def argv(
    command, grace_secs, oom_score_adj=None, cgroup_dirs=(), files=None, fsize=None
):
    """The keeper's command line that runs `command` under it.

    Args:
        command (list): the code's argv (absolute interpreter path first)
        grace_secs (float): SIGTERM to SIGKILL on `STOP_SIGNAL`
        oom_score_adj (int): the code's, if not None (the keeper's is unchanged)
        cgroup_dirs (list): the run's cgroup (`agent.cgroup_run.RunCgroup.dirs`)
        files (dict): output, status, adopt (paths: `agent.runtable`),
            agent_pid, orphan_secs; None: the code inherits the keeper's
            stdout and stderr, and the keeper dies with nothing but a signal
        fsize (int): the code's RLIMIT_FSIZE (no file it writes grows past it)
    """
    rv = [sys.executable, "-I", "-S", "-B", os.path.abspath(__file__)]
    rv += ["--grace-secs", repr(float(grace_secs))]
    if oom_score_adj is not None:
        rv += ["--oom-score-adj", str(int(oom_score_adj))]
    for d in cgroup_dirs:
        rv += ["--cgroup", d]
    if fsize is not None:
        rv += ["--fsize", str(int(fsize))]
    if files:
        rv += ["--output", str(files["output"]), "--status", str(files["status"])]
        rv += ["--adopt", str(files["adopt"]), "--agent-pid", str(files["agent_pid"])]
        rv += ["--orphan-secs", repr(float(files["orphan_secs"]))]
    return [*rv, "--", *command]


def descendants(root, table):
    """Pids below `root` in a process table, parents before children.

    Args:
        root (int): a pid (not in the result)
        table (dict): pid -> parent pid (`proc_table`)
    Returns:
        list: pids
    """
    kids = {}
    for p, pp in table.items():
        kids.setdefault(pp, []).append(p)
    rv = []
    todo = [root]
    seen = {root}
    while todo:
        for c in kids.get(todo.pop(), ()):
            if c not in seen:
                seen.add(c)
                rv.append(c)
                todo.append(c)
    return rv


def proc_table():
    """pid -> parent pid of every live (not zombie, not dead) process in /proc."""
    rv = {}
    try:
        names = os.listdir("/proc")
    except OSError:
        return rv
    for n in names:
        if n.isdigit():
            x = _stat(n)
            if x is not None and x[0] not in (b"Z", b"X", b"x"):
                rv[int(n)] = int(x[1])
    return rv


def signal_tree(root, sig):
    """Send `sig` to every live descendant of `root`.

    A pid is signaled through a pidfd opened after the walk, and only if its
    parent is then still in the tree, so a pid reused meanwhile by a
    stranger is never hit.

    Returns:
        int: how many descendants there were
    """
    ds = descendants(root, proc_table())
    tree = {root, *ds}
    # children before their parents: none is orphaned (and moved out of the
    # tree) before it is signaled
    for p in reversed(ds):
        _signal_if_in(p, sig, tree)
    return len(ds)


class ProcTree:
    """The run's processes as the tree below `root` in ``/proc`` (no cgroup).

    The same calls as `agent.cgroup_run.RunCgroup`; `left` must be polled: the
    kernel gives no event for the end of a process that is not our child.
    """

    poll = True

    def __init__(self, root):
        self.root = root

    @staticmethod
    def wait(signals, timeout_secs):
        return signal.sigtimedwait(signals, timeout_secs)

    def kill(self):
        return signal_tree(self.root, signal.SIGKILL)

    def left(self):
        return len(descendants(self.root, proc_table()))

    def signal(self, sig):
        return signal_tree(self.root, sig)


class Keeper:
    """One code's process, the tree below it, and the stop in progress.

    Args:
        code_pid (int): the code, a child of this process
        grace_secs (float): SIGTERM to SIGKILL on a stop
        tree (ProcTree): or the run's `agent.cgroup_run.RunCgroup` (default:
            the tree below this process)
    """

    def __init__(self, code_pid, grace_secs, tree=None):
        self.code_pid = code_pid
        self.grace_secs = grace_secs
        self.tree = tree or ProcTree(os.getpid())
        #: the code's wait status once reaped
        self.code_status = None
        #: monotonic time of the SIGKILL (None: not yet due)
        self.kill_at = None
        self.killed = False
        self.give_up_at = None

    def run(self):
        """Until the code is reaped and no descendant is left.

        Returns:
            int: the code's wait status
        """
        poll = _POLL_FIRST_SECS
        while True:
            self._reap()
            now = time.monotonic()
            if self.code_status is not None and self.kill_at is None:
                # ended by itself: no child outlives its run
                self.kill_at = now
            if self.kill_at is None:
                # nothing is ending: wait for a signal or a child, no poll
                self._on(signal.sigwaitinfo(_WAITED).si_signo)
                continue
            if now >= self.kill_at:
                if not self.killed:
                    self.killed = True
                    self.give_up_at = now + GONE_SLACK_SECS
                # again each round: what forked since is killed too
                n = self.tree.kill()
            else:
                n = self.tree.left()
            if n == 0 and self.code_status is not None:
                self._reap()
                return self.code_status
            if self.killed and now >= self.give_up_at:
                _say(f"{n} process(es) would not die within {GONE_SLACK_SECS} s")
                # as if SIGKILLed, if the code itself is what is stuck
                return signal.SIGKILL if self.code_status is None else self.code_status
            t = max(0.0, (self.give_up_at if self.killed else self.kill_at) - now)
            if self.tree.poll:
                t = min(poll, t)
            # also woken by the end of the run's cgroup, if it has one
            i = self.tree.wait(_WAITED, t)
            if i is None:
                poll = min(poll * 2, _POLL_MAX_SECS)
            else:
                self._on(i.si_signo)

    def _on(self, sig):
        now = time.monotonic()
        if sig == KILL_SIGNAL:
            self.kill_at = now if self.kill_at is None else min(self.kill_at, now)
        elif sig in _STOPS and self.kill_at is None:
            self.tree.signal(signal.SIGTERM)
            self.kill_at = now + self.grace_secs

    def _reap(self):
        while True:
            try:
                p, s = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if p == 0:
                return
            if p == self.code_pid:
                self.code_status = s


def main(args=None):
    a = _parse(args)
    signal.pthread_sigmask(signal.SIG_BLOCK, _WAITED)
    _prctl(_PR_SET_CHILD_SUBREAPER, 1)
    # like the agent: the code (same uid) can neither read nor ptrace its parent
    _prctl(_PR_SET_DUMPABLE, 0)
    agent_pid = os.getppid()
    cg = _run_cgroup(a.cgroup) if a.cgroup else None
    if cg is not None:
        cg.watch()
    out = _Output(a.output) if a.output else None
    try:
        c = subprocess.Popen(
            a.command,
            close_fds=True,
            preexec_fn=_code_preexec(os.getpid(), a.oom_score_adj, cg, a.fsize),
            **(out.popen_args() if out else {}),
        )
    except (OSError, ValueError, subprocess.SubprocessError) as e:
        _say(f"cannot start {a.command[0]}: {e}", prefix=False)
        if out:
            out.files(a).end(CANNOT_START, GONE_SLACK_SECS)
        return CANNOT_START
    # the keeper reaps every child itself: Popen must never wait for this one
    c.returncode = 0
    # after the fork (no thread may hold a lock in the child), and after the
    # code's start, which need not wait for what they import
    io = out.files(a) if out else None
    s = Keeper(c.pid, a.grace_secs, cg).run()
    # for the status: an agent that re-attached the run has no cgroup of it
    counts = cg.end_counts() if cg is not None else None
    if cg is not None and os.getppid() != agent_pid:
        # the agent is gone (or this is a run a successor re-attached): nobody
        # else removes the cgroup (nor its parent, once the last run of that
        # agent has ended)
        cg.remove(parents=True)
    if io:
        io.end(os.waitstatus_to_exitcode(s), GONE_SLACK_SECS, counts)
    return _exit_as(s)


class _Output:
    """The code's stdout and stderr as pipes into the keeper (``--output``).

    Made before the code starts, with nothing but `os`; `files` then hands
    them to `agent.keeper_io` (its threads copy them to the output file).
    The keeper's own fd 2 becomes the stderr pipe too: its messages go with
    the code's stderr.
    """

    def __init__(self, path):
        self.out_fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        self.stdout_r, self._stdout_w = os.pipe()
        self.stderr_r, w = os.pipe()
        os.dup2(w, 2)
        os.close(w)

    def popen_args(self):
        return {"stdin": subprocess.DEVNULL, "stdout": self._stdout_w}

    def files(self, a):
        """The keeper's files and lifeline, started (`keeper_io.KeeperFiles`)."""
        os.close(self._stdout_w)
        rv = _keeper_io().KeeperFiles(
            self.out_fd,
            {self.stdout_r: 1, self.stderr_r: 2},
            a.status,
            a.agent_pid,
            a.adopt,
            a.orphan_secs,
            lambda: os.kill(os.getpid(), KILL_SIGNAL),
        )
        rv.start()
        return rv


def _keeper_io():
    """`agent.keeper_io`, loaded by path (no `agent` on sys.path here)."""
    n = os.path.join(os.path.dirname(os.path.abspath(__file__)), "keeper_io.py")
    spec = importlib.util.spec_from_file_location("simvisor_keeper_io", n)
    m = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(m)
    return m


def _code_preexec(keeper_pid, oom_score_adj, cgroup=None, fsize=None):
    def f():
        # first of all: nothing of the code runs outside its cgroup (an
        # error here is the keeper's "cannot start")
        if cgroup is not None:
            cgroup.enter()
        signal.pthread_sigmask(signal.SIG_SETMASK, ())
        # /proc/self is ours again (exec would do it too, after the write)
        _prctl(_PR_SET_DUMPABLE, 1)
        if oom_score_adj is not None:
            try:
                with open("/proc/self/oom_score_adj", "w") as x:
                    x.write(str(oom_score_adj))
            except OSError:
                pass
        if fsize is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
        # the keeper dies only by SIGKILL (OOM, a stranger): the code with it
        _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != keeper_pid:
            os.kill(os.getpid(), signal.SIGKILL)

    return f


def _exit_as(status):
    """Exit as the code did: its exit code, or killed by its signal."""
    if os.WIFEXITED(status):
        return os.WEXITSTATUS(status)
    s = os.WTERMSIG(status)
    sys.stdout.flush()
    sys.stderr.flush()
    # the signal is the code's: no core dump of the keeper
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    try:
        signal.signal(s, signal.SIG_DFL)
    except (OSError, ValueError):
        pass
    os.kill(os.getpid(), s)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, (s,))
    # not a signal that ends a process by default
    return 128 + s


def _load_prctl():
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_libc_prctl = _load_prctl()


def _parse(args):
    p = argparse.ArgumentParser(prog="agent.keeper", description=__doc__.split("\n")[0])
    p.add_argument("--grace-secs", type=float, default=2.0)
    p.add_argument("--oom-score-adj", type=int, default=None)
    p.add_argument("--cgroup", action="append", default=[])
    p.add_argument("--fsize", type=int, default=None)
    p.add_argument("--output", help="the code's output, as records (agent.keeper_io)")
    p.add_argument("--status", help="with --output: the keeper's last word")
    p.add_argument("--adopt", help="with --output: the adoption FIFO")
    p.add_argument("--agent-pid", type=int, help="with --output: the agent")
    p.add_argument("--orphan-secs", type=float, default=0.0)
    p.add_argument("command", nargs="+")
    return p.parse_args(args)


def _prctl(option, value):
    if _libc_prctl is not None:
        _libc_prctl(option, value, 0, 0, 0)


def _run_cgroup(dirs):
    """`agent.cgroup_run.RunCgroup` of `dirs`: loaded by path (no `agent` on sys.path here)."""
    n = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cgroup_run.py")
    spec = importlib.util.spec_from_file_location("simvisor_cgroup", n)
    m = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(m)
    return m.RunCgroup(dirs)


def _say(text, prefix=True):
    t = f"[simvisor keeper: {text}]" if prefix else text
    try:
        os.write(2, (t + "\n").encode(errors="replace"))
    except OSError:
        pass


def _signal_if_in(pid, sig, tree):
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    except OSError:
        # no pidfds (old kernel, a seccomp filter): the plain kill
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass
        return
    try:
        x = _stat(str(pid))
        if x is not None and int(x[1]) in tree:
            signal.pidfd_send_signal(fd, sig)
    except (ProcessLookupError, PermissionError):
        pass
    finally:
        os.close(fd)


def _stat(pid):
    """(state, ppid) of /proc/<pid>/stat as bytes, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            s = f.read()
    except OSError:
        return None
    # comm (in parens) may hold anything; the fields after it are fixed
    x = s[s.rfind(b")") + 2 :].split()
    return (x[0], x[1]) if len(x) > 1 else None


if __name__ == "__main__":
    rc = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # no interpreter teardown (tens of ms of the run's end on a slow host):
    # nothing of the keeper needs it, its output is written unbuffered
    os._exit(rc)
