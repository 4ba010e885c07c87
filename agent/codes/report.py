"""Structured output of a simulation code: parameters in, progress and frames out.

Each report is one stdout line, `agent.protocol.REPORT_PREFIX` followed by
JSON, flushed at once so the agent sees it while the code runs.
"""

import json
import math
import sys

from agent.protocol import REPORT_PREFIX

#: written into the run directory by the agent before the code starts
PARAMS_FILE = "params.json"

#: about how many progress reports and frames a run sends, whatever its size
MAX_REPORTS = 100


def params(defaults=None):
    """Read ``./params.json``, filled in and coerced by `defaults`.

    Without the file (a code run by hand), `defaults` are used. Unknown names
    are logged and dropped rather than fatal: the agent already validated them.

    Args:
        defaults (dict): name -> default value; its type (int, float, str) is
            the type each value is converted to. None: return the file as is.
    Returns:
        dict: parameters
    """
    try:
        with open(PARAMS_FILE) as f:
            given = json.load(f)
    except FileNotFoundError:
        if defaults is None:
            raise
        _log(f"{PARAMS_FILE} not found; using the defaults")
        given = {}
    except ValueError as e:
        sys.exit(f"{PARAMS_FILE}: not JSON: {e}")
    if not isinstance(given, dict):
        sys.exit(f"{PARAMS_FILE}: expected a JSON object, got {type(given).__name__}")
    if defaults is None:
        return given
    rv = dict(defaults)
    for k, v in given.items():
        if k not in defaults:
            _log(f"{PARAMS_FILE}: ignoring unknown parameter {k}={v!r}")
            continue
        rv[k] = _coerce(k, v, defaults[k])
    return rv


def progress(fraction):
    """Report how far the run is, clamped to 0..1.

    Args:
        fraction (float): 0 at the start, 1.0 when done
    """
    f = float(fraction)
    _emit({"progress": min(1.0, max(0.0, f)) if math.isfinite(f) else 0.0})


def frame(data):
    """Report a frame of output for the GUI to plot.

    Args:
        data (dict): with ``step``, ``time`` and ``plot`` (see `agent.codes`);
            finite numbers only, since browsers reject NaN in JSON
    """
    _emit({"frame": data})


def every(total, count=MAX_REPORTS):
    """Interval between reports so about `count` of them cover `total` steps.

    Args:
        total (int): steps in the run
        count (int): reports wanted
    Returns:
        int: at least 1
    """
    return max(1, -(-int(total) // int(count)))


def rounded(values, digits=6):
    """Values rounded to `digits` significant digits to keep frames small.

    Args:
        values (iterable): floats
        digits (int): significant digits
    Returns:
        list: floats
    """
    f = f"{{:.{digits}g}}"
    return [float(f.format(v)) for v in values]


def _coerce(name, value, default):
    # bool is an int in Python, so check it first; no code has bool params
    if isinstance(value, bool):
        sys.exit(f"{PARAMS_FILE}: parameter {name}={value!r} is not a number")
    try:
        if isinstance(default, int) and not isinstance(default, bool):
            return int(value)
        if isinstance(default, float):
            return float(value)
        if isinstance(default, str):
            return str(value)
    except (TypeError, ValueError) as e:
        sys.exit(f"{PARAMS_FILE}: parameter {name}={value!r}: {e}")
    return value


def _emit(obj):
    # allow_nan=False: NaN is not JSON and would break the GUI far from here
    sys.stdout.write(
        REPORT_PREFIX + json.dumps(obj, separators=(",", ":"), allow_nan=False) + "\n"
    )
    sys.stdout.flush()


def _log(msg):
    sys.stderr.write(msg + "\n")
    sys.stderr.flush()
