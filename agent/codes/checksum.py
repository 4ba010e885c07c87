"""Test code: the SHA-256 and size of its input ``data.bin`` (a library file).

It also tries to write to it and to remove it from its directory: a library
file is read-only to the code, and what it does in its own directory never
reaches the library.
"""

import hashlib
import os
import time

from agent.codes import report

DEFAULTS = {"data": None, "secs": 0.0}

IN_FILE = "data.bin"


def main():
    p = report.params(DEFAULTS)
    h = hashlib.sha256()
    n = 0
    with open(IN_FILE, "rb") as f:
        while b := f.read(1 << 20):
            h.update(b)
            n += len(b)
    try:
        with open(IN_FILE, "r+b") as f:
            f.write(b"x")
        writable = True
    except OSError:
        writable = False
    try:
        os.chmod(IN_FILE, 0o666)
        chmod = True
    except OSError:
        chmod = False
    print(f"checksum: {n} bytes sha256={h.hexdigest()}", flush=True)
    report.frame(
        {"sha256": h.hexdigest(), "size": n, "writable": writable, "chmod": chmod}
    )
    # holding the file a while (a run that uses it)
    time.sleep(max(0.0, p["secs"]))
    report.progress(1.0)


if __name__ == "__main__":
    main()
