"""Test code: starts ``children`` processes that each sleep ``secs``, then sleeps.

By default (``detach`` ``no``) the children stay in this process's group (no
setsid) and inherit its stdout and stderr, like the ranks of an MPI
launcher: killing only the leader would orphan them and keep the agent's
pipe open, so cancel must kill the group. With ``detach`` ``session`` each
child double-forks into a session of its own, as a daemon does: neither a
kill of the group nor the death of this process reaches it, and its parent
is not this process (only a subreaper keeps it in view; see agent.keeper).
Their pids go to ``children.txt`` and stdout. All sleep until the same
deadline, ``secs`` after the start; then the code reaps them (killing any
still alive) so it neither outlives ``secs`` nor leaves children behind;
detached ones, not its own to reap, end by themselves at the deadline.
"""

import os
import signal
import subprocess
import sys
import time

from agent.codes import report

DEFAULTS = {"children": 3, "secs": 3600.0, "detach": "no"}

DETACH = ("no", "session")

PIDS_FILE = "children.txt"

#: how long past the deadline a child may take to end on its own before a kill
_GRACE_SECS = 1.0

#: a child sleeps until our deadline (CLOCK_MONOTONIC is system-wide), so
#: its interpreter's startup does not make it outlast us
_CHILD = "import sys, time; time.sleep(max(0.0, float(sys.argv[1]) - time.monotonic()))"


def main():
    p = report.params(DEFAULTS)
    n = max(0, p["children"])
    secs = max(0.0, p["secs"])
    if p["detach"] not in DETACH:
        sys.exit(f"forker: detach={p['detach']!r} is not one of {DETACH}")
    end = time.monotonic() + secs
    if p["detach"] == "session":
        _detached(n, end)
        return
    kids = []
    try:
        for _ in range(n):
            kids.append(
                subprocess.Popen(
                    [sys.executable, "-c", _CHILD, repr(end)],
                    stdin=subprocess.DEVNULL,
                    start_new_session=False,
                )
            )
        with open(PIDS_FILE, "w") as f:
            f.write("".join(f"{k.pid}\n" for k in kids))
        print(f"forker: children {' '.join(str(k.pid) for k in kids)}", flush=True)
        report.progress(0.5)
        time.sleep(max(0.0, end - time.monotonic()))
        for k in kids:
            try:
                k.wait(timeout=max(0.0, end + _GRACE_SECS - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
    finally:
        # also on an exception (e.g. Popen failing midway), so nothing leaks
        for k in kids:
            if k.poll() is None:
                k.kill()
                k.wait()
    print("forker: children ended", flush=True)
    report.progress(1.0)


def _detached(n, end):
    pids = []
    try:
        for _ in range(n):
            pids.append(_double_fork(end))
        with open(PIDS_FILE, "w") as f:
            f.write("".join(f"{k}\n" for k in pids))
        print(f"forker: children {' '.join(map(str, pids))} (detached)", flush=True)
        report.progress(0.5)
        time.sleep(max(0.0, end - time.monotonic()))
    except BaseException:
        # e.g. a fork refused midway: nothing leaks (at the deadline they
        # end by themselves; pids are not ours to wait for)
        for k in pids:
            try:
                os.kill(k, signal.SIGKILL)
            except ProcessLookupError:
                pass
        raise
    print("forker: children ended", flush=True)
    report.progress(1.0)


def _double_fork(end):
    """A grandchild in a new session that sleeps until `end`; returns its pid."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        # the child: a new session, a grandchild, gone; no Python cleanup
        try:
            os.close(r)
            os.setsid()
            g = os.fork()
            if g == 0:
                os.close(w)
                time.sleep(max(0.0, end - time.monotonic()))
            else:
                os.write(w, f"{g}\n".encode())
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r) as f:
        g = f.read().strip()
    os.waitpid(pid, 0)
    if not g:
        raise RuntimeError("forker: the detached child did not start")
    return int(g)


if __name__ == "__main__":
    main()
