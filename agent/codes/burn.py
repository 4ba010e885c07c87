"""Test code: keeps ``workers`` cores busy for ``secs`` seconds, reporting progress.

Cores are an allocation, not a requirement, so one busy core is enough even
when the run was given more; more workers than cores test a CPU limit.
"""

import os
import time

from agent.codes import report

DEFAULTS = {"secs": 2.0, "workers": 1}

#: shortest interval between progress reports
MIN_REPORT_SECS = 0.05

#: arithmetic between clock reads; small enough to overshoot `secs` by < 1 ms
_BATCH = 10000


def main():
    p = report.params(DEFAULTS)
    secs = max(0.0, p["secs"])
    workers = max(1, p["workers"])
    print(f"burn: burning {workers} cores for {secs} s", flush=True)
    interval = max(secs / report.MAX_REPORTS, MIN_REPORT_SECS)
    start = time.monotonic()
    end = start + secs
    pids = []
    for _ in range(workers - 1):
        pid = os.fork()
        if pid == 0:
            _burn(end)
            os._exit(0)
        pids.append(pid)
    next_report = start
    x = 0
    loops = 0
    while True:
        now = time.monotonic()
        if now >= end:
            break
        if now >= next_report:
            report.progress((now - start) / secs)
            next_report = now + interval
        for i in range(_BATCH):
            # integer work the interpreter cannot skip
            x = (x * 31 + i) % 1000003
        loops += 1
    for pid in pids:
        os.waitpid(pid, 0)
    print(f"burn: done loops={loops} x={x}", flush=True)
    report.progress(1.0)


def _burn(end):
    x = 0
    while time.monotonic() < end:
        for i in range(_BATCH):
            x = (x * 31 + i) % 1000003


if __name__ == "__main__":
    main()
