"""Test code: logs a little, then fails with ``message`` on stderr and exit 3."""

import sys

from agent.codes import report

DEFAULTS = {"message": "simulated failure"}

#: distinct from 1 (a Python traceback) and 2 (bad usage or input)
EXIT_CODE = 3


def main():
    p = report.params(DEFAULTS)
    print("crash: starting", flush=True)
    report.progress(0.5)
    print("crash: about to fail", flush=True)
    sys.stderr.write(p["message"] + "\n")
    sys.stderr.flush()
    sys.exit(EXIT_CODE)


if __name__ == "__main__":
    main()
