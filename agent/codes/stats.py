"""Statistics of another simulation's frames (an analysis code).

Reads ``source_frames.jsonl`` from cwd, one frame per line as the source code
emitted it (the supervisor writes the file; a line may also be a wrapper
object whose ``data`` is the frame). For every field holding a list of
numbers it computes count, min, max, mean and (population) std over all
frames, and sends them as one frame (``plot: "table"``) and to ``stats.json``.
The ``source`` parameter only tells the supervisor which simulation to read.
"""

import json
import math
import sys

from agent.codes import report

DEFAULTS = {
    # id of the simulation whose frames to analyse; resolved by the supervisor
    "source": None,
}

SOURCE_FILE = "source_frames.jsonl"

RESULT_FILE = "stats.json"

#: exit code when there is nothing to analyse
NO_INPUT_EXIT = 2


class _Field:
    """Running statistics of one field (Welford: one pass, stable)."""

    def __init__(self):
        self.count = 0
        self.mean = 0.0
        self.m2 = 0.0
        self.min = math.inf
        self.max = -math.inf

    def add(self, values):
        for v in values:
            # non-numbers and NaN/inf would poison every statistic
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                continue
            if not math.isfinite(v):
                continue
            self.count += 1
            d = v - self.mean
            self.mean += d / self.count
            self.m2 += d * (v - self.mean)
            if v < self.min:
                self.min = v
            if v > self.max:
                self.max = v

    def result(self):
        return {
            "count": self.count,
            "min": self.min,
            "max": self.max,
            "mean": self.mean,
            "std": math.sqrt(self.m2 / self.count),
        }


def _frames(path):
    """Frames in `path`; malformed lines are logged and skipped."""
    with open(path) as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                o = json.loads(line)
            except ValueError as e:
                print(f"stats: {path}:{n}: skipping, not JSON: {e}", file=sys.stderr)
                continue
            if isinstance(o, dict) and isinstance(o.get("data"), dict):
                o = o["data"]
            if not isinstance(o, dict):
                print(f"stats: {path}:{n}: skipping, not an object", file=sys.stderr)
                continue
            yield o


def _no_input(why):
    print(
        f"stats: nothing to analyse: {why} (the supervisor writes {SOURCE_FILE}"
        " from the source simulation's frames; has it sent any?)",
        file=sys.stderr,
    )
    sys.exit(NO_INPUT_EXIT)


def main():
    p = report.params(DEFAULTS)
    print(f"stats: source={p['source']}", flush=True)
    fields = {}
    count = 0
    last = {}
    try:
        for frame in _frames(SOURCE_FILE):
            count += 1
            last = frame
            for k, v in frame.items():
                if isinstance(v, list):
                    fields.setdefault(k, _Field()).add(v)
    except FileNotFoundError:
        _no_input(f"{SOURCE_FILE} not found")
    if count == 0:
        _no_input(f"{SOURCE_FILE} holds no frames")
    r = {k: f.result() for k, f in sorted(fields.items()) if f.count}
    if not r:
        print("stats: no field holds a list of numbers", file=sys.stderr)
    step = last.get("step")
    t = last.get("time")
    out = {
        # the statistics cover the source up to its last frame
        "step": step if isinstance(step, int) and not isinstance(step, bool) else 0,
        "time": float(t) if isinstance(t, (int, float)) and math.isfinite(t) else 0.0,
        "plot": "table",
        "frames": count,
        "fields": r,
    }
    with open(RESULT_FILE, "w") as f:
        json.dump(out, f, indent=1)
    report.frame(out)
    for k, s in r.items():
        print(
            f"stats: {k}: count={s['count']} min={s['min']:.6g} max={s['max']:.6g}"
            f" mean={s['mean']:.6g} std={s['std']:.6g}",
            flush=True,
        )
    report.progress(1.0)


if __name__ == "__main__":
    main()
