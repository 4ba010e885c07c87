"""Test code: keeps one core busy for ``secs`` seconds, reporting progress.

Cores are an allocation, not a requirement, so one busy core is enough even
when the run was given more.
"""

import time

from agent.codes import report

DEFAULTS = {"secs": 2.0}

#: shortest interval between progress reports
MIN_REPORT_SECS = 0.05

#: arithmetic between clock reads; small enough to overshoot `secs` by < 1 ms
_BATCH = 10000


def main():
    secs = max(0.0, report.params(DEFAULTS)["secs"])
    print(f"burn: burning one core for {secs} s", flush=True)
    interval = max(secs / report.MAX_REPORTS, MIN_REPORT_SECS)
    start = time.monotonic()
    end = start + secs
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
    print(f"burn: done loops={loops} x={x}", flush=True)
    report.progress(1.0)


if __name__ == "__main__":
    main()
