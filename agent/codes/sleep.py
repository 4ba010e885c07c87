"""Test code: sleeps ``secs`` seconds, reporting progress as it goes.

Its one frame, at the end, is ``{"secs": secs}``: its catalog ``result``
(what a sweep of it shows) is that number.
"""

import time

from agent.codes import report

DEFAULTS = {"secs": 1.0}

#: shortest pause between progress reports, so short runs do not flood
MIN_REPORT_SECS = 0.05


def main():
    secs = max(0.0, report.params(DEFAULTS)["secs"])
    print(f"sleep: sleeping {secs} s", flush=True)
    interval = max(secs / report.MAX_REPORTS, MIN_REPORT_SECS)
    start = time.monotonic()
    end = start + secs
    while True:
        now = time.monotonic()
        if now >= end:
            break
        report.progress((now - start) / secs)
        time.sleep(min(interval, end - now))
    print("sleep: done", flush=True)
    report.frame({"secs": secs})
    report.progress(1.0)


if __name__ == "__main__":
    main()
