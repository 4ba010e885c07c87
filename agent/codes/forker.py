"""Test code: starts ``children`` processes that each sleep ``secs``, then sleeps.

The children stay in this process's group (no setsid) and inherit its stdout
and stderr, like the ranks of an MPI launcher: killing only the leader would
orphan them and keep the agent's pipe open, so cancel must kill the group.
Their pids go to ``children.txt`` and stdout. All sleep until the same
deadline, ``secs`` after the start; then the code reaps them (killing any
still alive) so it neither outlives ``secs`` nor leaves children behind.
"""

import subprocess
import sys
import time

from agent.codes import report

DEFAULTS = {"children": 3, "secs": 3600.0}

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
    end = time.monotonic() + secs
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


if __name__ == "__main__":
    main()
