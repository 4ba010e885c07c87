"""``python -m agent``: start an agent.

The secret is one line on stdin (never argv or the environment, so ``ps``
and ``/proc/<pid>/environ`` do not show it); stdin is then closed.

With ``--slurm`` the agent runs simulations as Slurm jobs (`agent.slurm`).
With a ``--work-dir`` (always with ``--slurm``) it holds a lock there: a new
agent there stops the old one (SIGTERM: a Slurm agent leaves its jobs
running) and re-attaches the runs its table holds (Slurm jobs, or local
runs whose agent died: see `agent.runtable`). With
``--daemon`` (how the sbatch driver starts it over SSH) it detaches into its
own session once it holds the lock, prints ``started pid=N`` and the parent
exits, so the SSH session can end.
"""

import argparse
import asyncio
import ctypes
import fcntl
import os
import pathlib
import signal
import sys
import time

import agent
from agent import cgroup, client, protocol, sandbox
from agent.log import log

_PR_SET_DUMPABLE = 4


def parse_args(argv=None):
    """The command line (see the module doc); also for tests that call `client.main`.

    Args:
        argv (list): arguments without the program name; None: sys.argv
    Returns:
        argparse.Namespace: what `client.Client` expects
    """
    p = argparse.ArgumentParser(prog="python -m agent", description=__doc__)
    p.add_argument("--url", required=True, help="ws://host:port/agent")
    p.add_argument(
        "--unix-socket",
        help="reach the supervisor through this unix socket (the url names only the path)",
    )
    p.add_argument("--agent-id", required=True)
    p.add_argument("--run-root", required=True, help="every run directory is inside it")
    p.add_argument(
        "--kill-grace-secs", type=float, default=2.0, help="SIGTERM to SIGKILL"
    )
    p.add_argument("--max-procs", type=int, default=64, help="runs at once")
    p.add_argument(
        "--sim-oom-score-adj",
        type=int,
        default=None,
        help="simulations' oom_score_adj (e.g. 1000: under a memory limit the kernel kills a simulation, not the agent)",
    )
    p.add_argument("--max-analyses", type=int, default=8, help="analyses at once")
    p.add_argument(
        "--sandbox",
        action="store_true",
        help="run each code under bubblewrap (agent/sandbox.py); if it does not work, runs fail",
    )
    p.add_argument(
        "--sandbox-uid",
        type=int,
        default=sandbox.DEFAULT_UID,
        help="--sandbox as root: the codes' uid and gid",
    )
    p.add_argument(
        "--cgroups",
        choices=cgroup.MODES,
        default="auto",
        help="a cgroup per local run (agent/cgroup.py): auto (if the host allows it), "
        "v1 (ignore the v2 tree), off (the keeper walks /proc)",
    )
    p.add_argument(
        "--cgroup-parent",
        help="put the runs' cgroups in this cgroup (a path from the hierarchy's root, "
        "e.g. a delegated, empty one), not in the agent's own",
    )
    p.add_argument(
        "--max-backoff-secs", type=float, default=10.0, help="reconnect delay cap"
    )
    p.add_argument(
        "--give-up-secs",
        type=float,
        default=3600.0,
        help="exit after this long without a connection and with no run running",
    )
    p.add_argument(
        "--slurm",
        action="store_true",
        help="run simulations as Slurm jobs (sbatch, squeue, sacct, scancel)",
    )
    p.add_argument(
        "--work-dir",
        help="the run (or job) table and lock, outside the run root (--slurm: default run root)",
    )
    p.add_argument(
        "--orphan-secs",
        type=float,
        default=0.0,
        help="with --work-dir: how long a local run whose agent died waits for a new agent",
    )
    p.add_argument(
        "--library-cache",
        help="fetch runs' library files from the supervisor into this directory "
        "(a host that cannot see its disk: agent/staging.py)",
    )
    p.add_argument(
        "--daemon",
        action="store_true",
        help="detach once started; log to --log-file",
    )
    p.add_argument("--log-file", help="--daemon: where the agent's log goes")
    a = p.parse_args(argv)
    if a.daemon and not a.log_file:
        p.error("--daemon needs --log-file")
    if a.slurm and not a.work_dir:
        a.work_dir = a.run_root
    if a.max_procs < 1 or a.max_analyses < 1:
        p.error("--max-procs and --max-analyses must be at least 1")
    try:
        # the id must make a valid hello; better to fail here than at each connect
        protocol.make(
            protocol.TO_SUPERVISOR,
            "hello",
            agent_id=a.agent_id,
            version=agent.VERSION,
            host="",
            pid=0,
            runs=[],
        )
    except protocol.ProtocolError:
        p.error(f"--agent-id={a.agent_id!r} is not a valid id")
    return a


def read_secret():
    """One line from stdin; then stdin is /dev/null so no later read can block."""
    s = sys.stdin.readline().strip()
    sys.stdin.close()
    # fd 0 is free now: keep it taken so no socket or file ever lands on it
    os.open(os.devnull, os.O_RDONLY)
    return s


def _not_dumpable():
    """A simulation of the same uid must not read the secret from our memory."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0)
    except (OSError, AttributeError):
        pass


async def _main(args, secret, box, cgroups):
    loop = asyncio.get_running_loop()
    _watch_children_by_pidfd(loop)
    c = client.Client(args, secret, sandbox=box, cgroups=cgroups)
    for s in (signal.SIGTERM, signal.SIGINT):
        # Slurm jobs do not need the agent: a stop leaves them to the next one
        loop.add_signal_handler(s, c.stop, not args.slurm)
    return await c.run()


def _watch_children_by_pidfd(loop):
    """Learn of a child's exit from its pidfd, in the loop, where the kernel has them.

    Before 3.12, asyncio waits for each child in a thread of its own
    (``ThreadedChildWatcher``): a run's end then waits for that thread to get
    the GIL back from the loop, a millisecond or more on the path of every
    cancel. From 3.12 on, the pidfd watcher is asyncio's own default; before
    3.9 (old login nodes) there is none.
    """
    if not (3, 9) <= sys.version_info[:2] < (3, 12):
        return
    try:
        os.close(os.pidfd_open(os.getpid()))
    except OSError:
        # a kernel before 5.3, or a seccomp filter that refuses pidfd_open
        return
    w = asyncio.PidfdChildWatcher()
    w.attach_loop(loop)
    asyncio.set_child_watcher(w)


#: how long a new agent waits for the old one of its work dir to go
TAKEOVER_SECS = 20.0


def _lock(work_dir):
    """Hold ``<work_dir>/agent.lock``, stopping the agent that holds it.

    Returns:
        int: the lock's fd (kept open for the agent's life)
    """
    d = pathlib.Path(work_dir)
    d.mkdir(parents=True, exist_ok=True)
    fd = os.open(d / "agent.lock", os.O_RDWR | os.O_CREAT, 0o600)
    end = time.monotonic() + TAKEOVER_SECS
    signaled = False
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            pass
        if not signaled:
            signaled = True
            try:
                old = int(os.pread(fd, 32, 0).decode().strip() or 0)
            except ValueError:
                old = 0
            log("takeover", old_pid=old)
            if old > 0:
                try:
                    os.kill(old, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        if time.monotonic() > end:
            raise RuntimeError(
                f"another agent holds {d / 'agent.lock'} and did not stop"
            )
        time.sleep(0.05)
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def _daemon(log_file):
    """Detach: the parent prints the child's pid (or its error) and exits.

    Returns:
        callable: the child calls it with None once started, or an error text
    """
    r, w = os.pipe()
    if os.fork() > 0:
        os.close(w)
        m = b""
        while c := os.read(r, 4096):
            m += c
        t = m.decode(errors="replace").strip() or "agent exited before it started"
        print(t, flush=True)
        os._exit(0 if t.startswith("started ") else 1)
    os.close(r)
    os.setsid()
    os.makedirs(os.path.dirname(log_file), exist_ok=True)
    f = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(f, 1)
    os.dup2(f, 2)
    os.close(f)

    def done(error):
        os.write(
            w, (f"error: {error}" if error else f"started pid={os.getpid()}").encode()
        )
        os.close(w)

    return done


def main():
    a = parse_args()
    secret = read_secret()
    if not secret:
        log("no_secret", error="expected the secret as one line on stdin")
        return 2
    _not_dumpable()
    for n in ("run_root", "work_dir", "log_file"):
        if getattr(a, n):
            # a daemon keeps its cwd, but relative paths are fixed now
            setattr(a, n, os.path.abspath(os.path.expanduser(getattr(a, n))))
    done = _daemon(a.log_file) if a.daemon else None
    if a.work_dir:
        try:
            lock = _lock(a.work_dir)
        except (OSError, RuntimeError) as e:
            log("lock_failed", error=str(e))
            if done:
                done(str(e))
            return 1
        os.set_inheritable(lock, False)
    if done:
        done(None)
    # blocking (it runs bwrap once): before the event loop
    box = sandbox.for_agent(a.sandbox and not a.slurm, a.sandbox_uid)
    cg = cgroup.for_agent("off" if a.slurm else a.cgroups, parent=a.cgroup_parent)
    log(
        "agent_start",
        agent_id=a.agent_id,
        pid=os.getpid(),
        url=a.url,
        unix_socket=a.unix_socket or "",
        run_root=a.run_root,
        sandbox=type(box).__name__.lower(),
        cgroups=cg.mode,
    )
    log("cgroups", mode=cg.mode, detail=cg.describe())
    if isinstance(box, sandbox.Broken):
        log("sandbox_broken", error=box.reason)
    try:
        rv = asyncio.run(_main(a, secret, box, cg))
    finally:
        cg.remove()
    log("agent_exit", code=rv)
    return rv


if __name__ == "__main__":
    sys.exit(main())
