"""Test code: never ends; logs a line and a progress heartbeat every second.

For timeouts and cancel. The progress creeps towards 0.99 and never reaches
1, so the run never looks done.
"""

import time

from agent.codes import report

DEFAULTS = {}

HEARTBEAT_SECS = 1.0

#: seconds until the heartbeat progress is half of its ceiling
_HALF_SECS = 60


def main():
    report.params(DEFAULTS)
    n = 0
    while True:
        print(f"forever: heartbeat {n}", flush=True)
        report.progress(0.99 * n / (n + _HALF_SECS))
        n += 1
        time.sleep(HEARTBEAT_SECS)


if __name__ == "__main__":
    main()
