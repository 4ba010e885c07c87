"""Samples, their medians and p90s, and the printed table.

A `Row` is one figure beside its floor. Latencies are kept in seconds and
printed in ms; rates in per second. The ratio is always figure / floor: for a
latency above 1 means slower than the floor, for a rate below 1 does.
"""

import os
import pathlib
import platform
import statistics
import sys
import time

MS = "ms"
PER_SEC = "/s"


class BenchError(Exception):
    """A measurement failed; the message says what and why."""


def median(samples):
    return statistics.median(samples)


def p90(samples):
    """Nearest-rank 90th percentile."""
    s = sorted(samples)
    return s[max(0, -(-len(s) * 9 // 10) - 1)]


async def repeat(measure, count, budget_secs, min_count=3):
    """Await `measure()` up to `count` times, stopping once `budget_secs` passed.

    At least `min_count` samples are taken, whatever the budget (each wait in a
    measurement has its own timeout, so this still ends).

    Returns:
        list: what each call returned
    """
    end = time.monotonic() + budget_secs
    res = []
    for i in range(count):
        if i >= min_count and time.monotonic() > end:
            break
        res.append(await measure())
    return res


async def paired(floor, figure, count, budget_secs, min_count=3):
    """Alternate `floor()` and `figure()` samples, so both see the same load.

    The machine may be shared: alternating keeps a burst of outside load from
    landing on one side of the ratio only. Bounded like `repeat`.

    Returns:
        tuple: (floor results, figure results)
    """
    end = time.monotonic() + budget_secs
    fl = []
    fi = []
    for i in range(count):
        if i >= min_count and time.monotonic() > end:
            break
        fl.append(await floor())
        fi.append(await figure())
    return fl, fi


class Row:
    """One figure beside its floor.

    Args:
        name (str): what is measured
        unit (str): `MS` (samples are seconds) or `PER_SEC`
        floor_doc (str): what the floor is, for the legend
    """

    def __init__(self, name, unit, floor_doc):
        self.name = name
        self.unit = unit
        self.floor_doc = floor_doc
        self.figure = []
        self.floor = []
        self.error = None
        self.note = ""

    def _value(self, samples, fn):
        v = fn(samples)
        return v * 1000 if self.unit == MS else v

    def cells(self):
        if self.error:
            return [self.name, "FAILED", "", "", "", "", ""]
        if not self.figure or not self.floor:
            return [self.name, "missing", "", "", "", "", ""]
        f = self._value(self.figure, median)
        g = self._value(self.floor, median)
        if self.unit == MS:
            fp = f"{self._value(self.figure, p90):.2f}"
            gp = f"{self._value(self.floor, p90):.2f}"
        else:
            fp = gp = "-"
        return [
            self.name,
            f"{f:.2f} {self.unit}",
            fp,
            f"{g:.2f} {self.unit}",
            gp,
            f"{f / g:.2f}" if g else "inf",
            f"{len(self.figure)}/{len(self.floor)}",
        ]


_HEADER = ["what", "figure", "p90", "floor", "p90", "ratio", "n fig/floor"]


def load_average():
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def machine():
    """One line: cores, interpreter, kernel, where the data directories live."""
    try:
        a = len(os.sched_getaffinity(0))
    except AttributeError:
        a = os.cpu_count()
    v = "" if sys.prefix != sys.base_prefix else " NOT the project's venv:"
    return (
        f"nproc={a} (cpu_count={os.cpu_count()}),{v} "
        f"Python {platform.python_version()} ({sys.executable}), "
        f"{platform.system()} {platform.release()}, "
        f"tmp dirs on {fs_type(pathlib.Path(os.environ.get('TMPDIR', '/tmp')))}"
    )


def fs_type(path):
    """File system type of `path` from /proc/mounts (longest mount prefix)."""
    p = str(path.resolve())
    best = ("", "unknown")
    try:
        with open("/proc/mounts") as f:
            for line in f:
                x = line.split()
                if len(x) > 2 and (p == x[1] or p.startswith(x[1].rstrip("/") + "/")):
                    if len(x[1]) > len(best[0]):
                        best = (x[1], x[2])
    except OSError:
        pass
    return best[1]


def table(rows, title, elapsed_secs, load_before):
    """The printed report: title, machine, one line per row, the legend."""
    cells = [_HEADER] + [r.cells() for r in rows]
    w = [max(len(c[i]) for c in cells) for i in range(len(_HEADER))]
    out = [
        title,
        "=" * len(title),
        machine(),
        f"load average (1, 5, 15 min): before {load_before}, after {load_average()}",
        "",
    ]
    for i, c in enumerate(cells):
        out.append(
            "  ".join(
                (v.ljust(w[j]) if j == 0 else v.rjust(w[j])) for j, v in enumerate(c)
            ).rstrip()
        )
        if i == 0:
            out.append("  ".join("-" * x for x in w))
    out += [
        "",
        "figure and floor are medians; ratio = figure / floor (for a rate, below 1 "
        "means slower than the floor).",
        "",
        "floors:",
    ]
    for r in rows:
        out.append(f"  {r.name}: {r.floor_doc}")
    n = [r for r in rows if r.note]
    if n:
        out += ["", "notes:"]
        out += [f"  {r.name}: {r.note}" for r in n]
    f = [r for r in rows if r.error]
    if f:
        out += ["", "FAILED:"]
        out += [f"  {r.name}: {r.error}" for r in f]
    out += ["", f"bench took {elapsed_secs:.1f} s"]
    return "\n".join(out)
