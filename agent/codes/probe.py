"""Test code: tries to read and write files and to open a TCP connection; says what happened.

For isolation tests: in a container or the local sandbox a simulation must
not read another user's files nor reach the network, and can write its run
directory and /tmp. Each attempt prints one line
``probe: <what> <target> -> <outcome>``; it always exits 0. In a path,
``{ppid}`` stands for the parent's pid (the agent's: its secret must be out
of reach).
"""

import os
import socket

from agent.codes import report

DEFAULTS = {"path": "", "write": "", "connect": ""}

CONNECT_TIMEOUT_SECS = 2.0


def _read(path):
    try:
        with open(path, "rb") as f:
            return f"ok {len(f.read(4096))} bytes"
    except OSError as e:
        return f"refused {type(e).__name__}: {e.strerror}"


def _write(path):
    try:
        with open(path, "w") as f:
            f.write("probe\n")
        return "ok written"
    except OSError as e:
        return f"refused {type(e).__name__}: {e.strerror}"


def _connect(target):
    h, _, p = target.rpartition(":")
    try:
        with socket.create_connection((h, int(p)), CONNECT_TIMEOUT_SECS):
            return "ok connected"
    except (OSError, ValueError) as e:
        return f"refused {type(e).__name__}: {e}"


def main():
    p = report.params(DEFAULTS)
    for path in filter(None, p["path"].split(",")):
        path = path.replace("{ppid}", str(os.getppid()))
        print(f"probe: read {path} -> {_read(path)}", flush=True)
    for path in filter(None, p["write"].split(",")):
        print(f"probe: write {path} -> {_write(path)}", flush=True)
    for t in filter(None, p["connect"].split(",")):
        print(f"probe: connect {t} -> {_connect(t)}", flush=True)
    report.progress(1.0)


if __name__ == "__main__":
    main()
