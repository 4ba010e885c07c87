"""Test code: floods ``log.spew`` with LAMMPS-style thermo rows, as fast as it can.

For the agent's following of a code's own files (`agent.outputs`) under
load: the catalog follows ``log.spew`` with the ``lammps_log`` parser. The
file looks like LAMMPS's log: the memory line, a header ``Step Temp
E_pair``, ``lines`` rows (steps 1 to ``lines``) (fewer if ``secs`` runs out first; 0: no time
limit), then ``Loop time of ...``. ``mode`` makes it misbehave instead:

- ``garbage``: between good rows, random bytes, invalid UTF-8, and a
  line of ``garbage_bytes`` without a newline (then the rest of the file);
- ``nothing``: the followed file is never written (only stdout);
- ``truncate``, ``rotate``: ``rate`` rows a second; once a file
  ``change-now`` appears in the run directory, the log is truncated and
  written anew (``rotate``: moved to ``log.spew.1`` and a new one begun),
  its rows from step 100001 on.
"""

import os

import random
import sys
import time

from agent.codes import report

DEFAULTS = {
    "lines": 1000,
    "secs": 0.0,
    "mode": "thermo",
    "garbage_bytes": 0,
    "rate": 100.0,
}

#: the rows written after a change are numbered from here
CHANGED_FROM = 100001

OUT_FILE = "log.spew"

#: rows per write: big writes, so the writing is what the test measures
_BATCH = 50_000

_MEMORY = b"Per MPI rank memory allocation (min/avg/max) = 1.0 | 1.0 | 1.0 Mbytes\n"
_HEADER = b"Step Temp E_pair\n"


def _rows(start, end):
    return b"".join(
        b"%d %d.5 -6.%03d\n" % (i, i % 7, i % 1000) for i in range(start, end)
    )


def _thermo(f, lines, secs):
    """Rows of steps 1 to ``lines`` (or until ``secs``); returns how many."""
    end = time.monotonic() + secs if secs > 0 else None
    n = 0
    while n < lines and (end is None or time.monotonic() < end):
        m = min(lines, n + _BATCH)
        f.write(_rows(n + 1, m + 1))
        f.flush()
        n = m
    return n


def _garbage(f, garbage_bytes):
    """Good rows of steps 1-100, garbage, good rows 101-200; returns the good rows."""
    r = random.Random(11)
    f.write(_rows(1, 101))
    # random bytes, newlines among them: lines of every shape
    f.write(bytes(r.getrandbits(8) for _ in range(256 * 1024)))
    # invalid UTF-8, alone on its lines and inside a row
    f.write(b"\n\xff\xfe\xc3\x28 \xed\xa0\x80\n12 \xff 3.5\n")
    if garbage_bytes:
        # one enormous line, written in pieces, its newline far away
        piece = b"x" * (1024 * 1024)
        left = garbage_bytes
        while left > 0:
            f.write(piece[: min(left, len(piece))])
            f.flush()
            left -= len(piece)
    f.write(b"\n")
    f.write(_HEADER)
    f.write(_rows(101, 201))
    return 200


def _changing(lines, rate, rotate):
    """`lines` rows at `rate` a second; the file changes at ``change-now``."""
    f = open(OUT_FILE, "wb")
    f.write(b"LAMMPS (spew)\n" + _MEMORY + _HEADER)
    step, changed = 1, False
    for _ in range(lines):
        if not changed and os.path.exists("change-now"):
            changed = True
            f.close()
            if rotate:
                os.rename(OUT_FILE, OUT_FILE + ".1")
            f = open(OUT_FILE, "wb")
            f.write(b"LAMMPS (spew)\n" + _MEMORY + _HEADER)
            step = CHANGED_FROM
        f.write(_rows(step, step + 1))
        f.flush()
        step += 1
        time.sleep(1 / max(rate, 1e-3))
    f.write(b"Loop time of 1.0 on 1 procs for %d steps\n" % lines)
    f.close()
    print(f"spew: wrote {lines} rows, changed={changed}", flush=True)


def main():
    p = report.params(DEFAULTS)
    mode = p["mode"]
    if mode in ("truncate", "rotate"):
        _changing(max(0, p["lines"]), p["rate"], mode == "rotate")
        return
    if mode not in ("thermo", "garbage", "nothing"):
        sys.exit(f"spew: mode={mode!r} is not thermo, garbage or nothing")
    t0 = time.monotonic()
    if mode == "nothing":
        print(f"spew: {OUT_FILE} is not written", flush=True)
        report.progress(1.0)
        return
    with open(OUT_FILE, "wb") as f:
        f.write(b"LAMMPS (spew)\n" + _MEMORY + _HEADER)
        if mode == "garbage":
            n = _garbage(f, max(0, p["garbage_bytes"]))
        else:
            n = _thermo(f, max(0, p["lines"]), p["secs"])
        f.write(
            b"Loop time of %.3f on 1 procs for %d steps\n" % (time.monotonic() - t0, n)
        )
        s = f.tell()
    dt = time.monotonic() - t0
    # what the test reads back: how fast this machine wrote it
    print(
        f"spew: wrote {n} rows, {s} bytes in {dt:.3f} s"
        f" ({n / max(dt, 1e-9):.0f} lines/s)",
        flush=True,
    )


if __name__ == "__main__":
    main()
