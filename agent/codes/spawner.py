"""Test code: tries to start ``procs`` processes at once, as a fork bomb would.

Bounded in count (the catalog's maximum) and in time: every child sleeps
until ``secs`` after the start, then the code reaps them all. It stops at the
first fork the kernel refuses (a pids limit), says how many it got, and
exits 0: the point is what the limit allowed, not a failure.
"""

import os
import time

from agent.codes import report

DEFAULTS = {"procs": 100, "secs": 3.0}


def main():
    p = report.params(DEFAULTS)
    want = max(0, p["procs"])
    deadline = time.monotonic() + max(0.0, p["secs"])
    print(f"spawner: starting {want} processes", flush=True)
    pids = []
    refused = None
    for _ in range(want):
        try:
            pid = os.fork()
        except OSError as e:
            refused = e
            break
        if pid == 0:
            # the child: no Python cleanup, no flushing of the parent's buffers
            time.sleep(max(0.0, deadline - time.monotonic()))
            os._exit(0)
        pids.append(pid)
    print(
        f"spawner: started={len(pids)} refused={refused.strerror if refused else None}",
        flush=True,
    )
    report.progress(0.5)
    for pid in pids:
        os.waitpid(pid, 0)
    print("spawner: done", flush=True)
    report.progress(1.0)


if __name__ == "__main__":
    main()
