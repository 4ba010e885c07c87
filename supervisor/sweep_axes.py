"""A sweep's axes: the parameter sets of its members, all checked before any is made.

A sweep (`POST /api/sweeps`) runs one code over ``axes``: a JSON object that
maps a parameter name to its values, either a list (``[1, 2, 3]``) or a range
``{"start": A, "stop": B, "num": N, "scale": "linear" | "log"}`` (``linear``
by default). The rules, each refused with `errors.BadInput`:

- ``axes`` names at least one parameter, each one of the code's
  (``unknown_param``); its values are a non-empty list, or a range whose
  ``start`` and ``stop`` are finite numbers (not booleans) and whose ``num``
  is a whole number of at least 1. A range gives ``num`` floats evenly
  spaced (on a log scale: by ratio) from ``start`` to ``stop``, both ends
  exactly (``num: 1`` gives ``[start]``). A log range needs ``start`` and
  ``stop`` above zero. A range is only for an ``int`` or ``float``
  parameter. A list's values go to the catalog as they are (a NaN or an
  infinity is refused). A badly shaped axis is ``bad_axes``.
- A range of an ``int`` parameter is rounded to whole numbers (the nearest,
  halves to even as Python's `round`); one that would give the same value
  twice is refused (``bad_axes``), since it asks for more distinct values
  than there are between its ends. A list may repeat a value (replicas).
- ``combine`` is ``grid`` (the default: the cartesian product, the first axis
  varying slowest, in the order the axes are given) or ``zip`` (member i
  takes the i-th value of every axis, which all must have one length).
- The number of members is counted from the axes' lengths before any value
  is made, and refused over ``max_members`` (``too_many_members``): ten axes
  of a hundred values cost no more than one.
- The base ``params`` are checked by the catalog first (they must be valid
  on their own, even where an axis replaces them); an axis overrides its parameter's base value. Then every
  member's complete parameters are checked by the catalog
  (`supervisor.catalog.Code.check_params`); the first bad one refuses the
  whole sweep with its position: ``member 17 (steps=-1, seed=3): ...``
  (members are numbered from 0, like the tasks of a Slurm job array).

Pure: no I/O, nothing stored.
"""

import itertools
import json
import math

from supervisor import errors

#: members a sweep may have unless the caller says otherwise
DEFAULT_MAX_MEMBERS = 10_000

COMBINES = ("grid", "zip")
SCALES = ("linear", "log")

_RANGE_REQUIRED = ("start", "stop", "num")
_RANGE_KEYS = frozenset((*_RANGE_REQUIRED, "scale"))
_NUMBER_TYPES = ("int", "float")

#: an axis value shown in a message is cut to this many characters
_MAX_SHOWN_CHARS = 40


def expand(code, params, axes, combine="grid", max_members=DEFAULT_MAX_MEMBERS):
    """The complete parameters of every member of a sweep, in order.

    Args:
        code (supervisor.catalog.Code): what the members run
        params (dict): base parameters (None: the defaults)
        axes (dict): parameter name -> list of values or range object
        combine (str): ``grid`` or ``zip``
        max_members (int): the most members the sweep may have
    Returns:
        list: one dict of parameters per member (as `Code.check_params` gives)
    Raises:
        errors.BadInput: ``bad_params``, ``unknown_param``, ``bad_param``,
            ``bad_axes`` or ``too_many_members``, saying what and where
    """
    base = code.check_params({} if params is None else params)
    names, specs = _code_specs(code, axes)
    _check_count(names, [_length(s) for s in specs], combine, max_members)
    known = _params_by_name(code)
    values = [_values(n, s, known[n]["type"] == "int") for n, s in zip(names, specs)]
    res = []
    rows = zip(*values) if combine == "zip" else itertools.product(*values)
    for i, row in enumerate(rows):
        over = dict(zip(names, row))
        try:
            res.append(code.check_params(over, base))
        except errors.BadInput as e:
            raise errors.BadInput(
                e.code, f"member {i} ({_show(over)}): {e.message}"
            ) from e
    return res


def axis_values(spec, integer=False, name=None, max_values=DEFAULT_MAX_MEMBERS):
    """The values of one axis: a list as it is, or a range's values.

    Args:
        spec (list or dict): a list of values or ``{start, stop, num, scale?}``
        integer (bool): the parameter is an ``int`` (a range is rounded)
        name (str): the axis's name, for messages
        max_values (int): the most values it may give (counted first)
    Returns:
        list: its values, in order
    Raises:
        errors.BadInput: ``bad_axes``; ``too_many_members`` past `max_values`
    """
    s = _spec(name, spec)
    n = _length(s)
    if n > max_values:
        raise errors.BadInput(
            "too_many_members",
            f"{_where(name)}: {n} values, more than the limit of {max_values}",
        )
    return _values(name, s, integer)


def describe(axes, code=None, max_members=DEFAULT_MAX_MEMBERS):
    """The axes as a sweep's document shows them: names in order, with values.

    Args:
        axes (dict): as `expand` takes them
        code (supervisor.catalog.Code): if given, axes must name its
            parameters and an int parameter's range is rounded as `expand`
            rounds it (list values are as given, before the catalog)
        max_members (int): the most values one axis may give
    Returns:
        list: ``[{"name": parameter, "values": [...]}]`` in the axes' order
    Raises:
        errors.BadInput: as `axis_values` (and ``unknown_param`` with `code`)
    """
    if code is None:
        names, specs = _specs(axes)
        ints = [False] * len(names)
    else:
        names, specs = _code_specs(code, axes)
        known = _params_by_name(code)
        ints = [known[n]["type"] == "int" for n in names]
    res = []
    for n, s, i in zip(names, specs, ints):
        res.append(
            {"name": n, "values": axis_values(s, i, name=n, max_values=max_members)}
        )
    return res


def _check_combine(combine):
    if combine not in COMBINES:
        raise errors.BadInput(
            "bad_axes", f"combine must be one of {', '.join(COMBINES)}"
        )


def _check_count(names, lengths, combine, max_members):
    _check_combine(combine)
    if combine == "zip":
        _check_zip(names, lengths)
        n = lengths[0]
    else:
        # big integers: exact, and cheap for the few axes a code can have
        n = math.prod(lengths)
    if n > max_members:
        raise errors.BadInput(
            "too_many_members",
            f"the sweep would have {n} members, more than the limit of {max_members}",
        )


def _check_zip(names, lengths):
    if len(set(lengths)) > 1:
        raise errors.BadInput(
            "bad_axes",
            "zip needs axes of one length: "
            + ", ".join(f"{n} has {k}" for n, k in zip(names, lengths)),
        )


def _code_specs(code, axes):
    """`_specs`, each name one of `code`'s parameters, ranges only of numbers."""
    names, specs = _specs(axes)
    known = _params_by_name(code)
    x = [n for n in names if n not in known]
    if x:
        raise errors.BadInput(
            "unknown_param",
            f"code {code.name} has no parameter {', '.join(x)} (axes)",
        )
    for n, s in zip(names, specs):
        t = known[n]["type"]
        if isinstance(s, dict) and t not in _NUMBER_TYPES:
            raise errors.BadInput(
                "bad_axes",
                f"axis {n}: a range is only for a number parameter ({n} is {t}):"
                " give a list of values",
            )
    return names, specs


def _length(spec):
    return spec["num"] if isinstance(spec, dict) else len(spec)


def _number(name, key, v):
    """`v` as a finite float (an int past the floats' range is refused)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise errors.BadInput("bad_axes", f"{_where(name)}: {key} must be a number")
    try:
        f = float(v)
    except OverflowError:
        f = math.inf
    if not math.isfinite(f):
        raise errors.BadInput(
            "bad_axes", f"{_where(name)}: {key} must be a finite number"
        )
    return f


def _params_by_name(code):
    return {p["name"]: p for p in code.params}


def _range(name, spec):
    """The range `spec` checked: ``{start, stop, num (int), scale}``."""
    x = sorted(k for k in spec if k not in _RANGE_KEYS)
    if x:
        raise errors.BadInput(
            "bad_axes",
            f"{_where(name)}: a range has no field {', '.join(map(str, x))}"
            " (it has start, stop, num and scale)",
        )
    x = [k for k in _RANGE_REQUIRED if k not in spec]
    if x:
        raise errors.BadInput(
            "bad_axes", f"{_where(name)}: a range needs {', '.join(x)}"
        )
    start = _number(name, "start", spec["start"])
    stop = _number(name, "stop", spec["stop"])
    num = spec["num"]
    if isinstance(num, float) and num.is_integer():
        num = int(num)
    if isinstance(num, bool) or not isinstance(num, int) or num < 1:
        raise errors.BadInput(
            "bad_axes", f"{_where(name)}: num must be a whole number of at least 1"
        )
    scale = spec.get("scale", "linear")
    if scale not in SCALES:
        raise errors.BadInput(
            "bad_axes", f"{_where(name)}: scale must be one of {', '.join(SCALES)}"
        )
    if scale == "log" and not (start > 0 and stop > 0):
        raise errors.BadInput(
            "bad_axes", f"{_where(name)}: a log range needs start and stop above 0"
        )
    return {"start": start, "stop": stop, "num": num, "scale": scale}


def _range_values(r):
    start, stop, n = r["start"], r["stop"], r["num"] - 1
    if n == 0:
        return [start]
    if r["scale"] == "log":
        a, b = math.log10(start), math.log10(stop)
        res = [10 ** (a + (b - a) * i / n) for i in range(1, n)]
    elif math.isfinite(stop - start):
        res = [start + (stop - start) * i / n for i in range(1, n)]
    else:
        # ends near the largest floats: a weighted mean does not overflow
        res = [start * ((n - i) / n) + stop * (i / n) for i in range(1, n)]
    # both ends exactly as given, and nothing past them by a rounding
    lo, hi = min(start, stop), max(start, stop)
    return [start, *(min(max(v, lo), hi) for v in res), stop]


def _show(over):
    """``steps=-1, seed=3``: a member's axis values, for a message."""

    def one(v):
        try:
            s = json.dumps(v, allow_nan=True)
        except (TypeError, ValueError):
            s = repr(v)
        return s if len(s) <= _MAX_SHOWN_CHARS else s[: _MAX_SHOWN_CHARS - 3] + "..."

    return ", ".join(f"{n}={one(v)}" for n, v in over.items())


def _spec(name, spec):
    """One axis checked for shape: a non-empty list, or a range (`_range`)."""
    if isinstance(spec, (list, tuple)):
        if not spec:
            raise errors.BadInput("bad_axes", f"{_where(name)}: no values")
        return spec
    if isinstance(spec, dict):
        return _range(name, spec)
    raise errors.BadInput(
        "bad_axes",
        f"{_where(name)}: must be a list of values or {{start, stop, num, scale}}",
    )


def _specs(axes):
    """The axes' names and checked specs, in the order given."""
    if not isinstance(axes, dict):
        raise errors.BadInput(
            "bad_axes", "axes must be an object: parameter name -> values"
        )
    if not axes:
        raise errors.BadInput("bad_axes", "axes must name at least one parameter")
    names, specs = [], []
    for n, s in axes.items():
        if not isinstance(n, str):
            raise errors.BadInput(
                "bad_axes", f"an axis is named by a parameter, not {n!r}"
            )
        names.append(n)
        specs.append(_spec(n, s))
    return names, specs


def _values(name, spec, integer):
    """The values of a checked spec (a range of an int parameter rounded)."""
    if not isinstance(spec, dict):
        for i, v in enumerate(spec):
            if isinstance(v, float) and not math.isfinite(v):
                raise errors.BadInput(
                    "bad_axes", f"{_where(name)}: value {i} is not a finite number"
                )
        return list(spec)
    res = _range_values(spec)
    if not integer:
        return res
    res = [round(v) for v in res]
    seen = set()
    for v in res:
        if v in seen:
            raise errors.BadInput(
                "bad_axes",
                f"{_where(name)}: an integer range of {len(res)} values from"
                f" {spec['start']} to {spec['stop']} repeats {v}: ask for fewer",
            )
        seen.add(v)
    return res


def _where(name):
    return "axis" if name is None else f"axis {name}"


#: a member's name at most (as a simulation's)
_MAX_NAME_CHARS = 200


def member_name(v):
    """A member's name (its sweep's, checked, and its values), cut to fit."""
    v = " ".join(v.split())
    return v if len(v) <= _MAX_NAME_CHARS else v[: _MAX_NAME_CHARS - 1] + "…"
