"""A run's result: a few numbers its code's catalog entry declares, made at its end.

A catalog entry's ``result`` (`supervisor.catalog`) is a list of at most
`MAX_RESULTS` entries; the run op carries each as ``{name, reduce}`` and
either

- ``field``: the value of that field of the last frame that has it (a
  number, or a list of numbers), reduced; or
- ``table`` and ``column``: that column of every row of that table (the
  rows frames of followed files, `agent.outputs`, before any thinning),
  reduced.

``reduce`` is one of `REDUCES`. Only finite numbers count (a parser's None
for nan or inf, text, booleans are passed over); ``count`` is how many
did, and every other reduce of none is None. `Results` keeps a running
count, sum, min, max, first and last per entry, so a row or a frame costs
the same however long the run. Pure: no I/O.
"""

import math
import re

#: what a result entry may make of its values
REDUCES = ("last", "first", "mean", "min", "max", "sum", "count")

#: entries a code may declare
MAX_RESULTS = 16

#: a result's name: a plain identifier (a CSV column, a Python keyword argument)
NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")

#: longest field, table or column name
_MAX_KEY_CHARS = 128

_KEYS = frozenset(("name", "reduce", "field", "table", "column"))

#: ints beyond this are not exact as a float (what a browser makes of them)
_MAX_EXACT_INT = 2**53


def check(spec, extra=()):
    """Raise ValueError (saying what is wrong) unless `spec` is a result spec.

    Args:
        spec (list): the entries, as the run op carries them
        extra (tuple): other keys an entry may have (the catalog's label, unit)
    """
    if not isinstance(spec, list):
        raise ValueError("result must be a list")
    if len(spec) > MAX_RESULTS:
        raise ValueError(f"result has {len(spec)} entries, more than {MAX_RESULTS}")
    seen = set()
    for e in spec:
        if not isinstance(e, dict):
            raise ValueError(f"a result entry must be an object: {e!r:.80}")
        n = e.get("name")
        if not isinstance(n, str) or NAME.fullmatch(n) is None:
            raise ValueError(f"result name {n!r:.80} is not a plain identifier")
        if n in seen:
            raise ValueError(f"result {n} is declared twice")
        seen.add(n)
        x = sorted(set(e) - _KEYS - set(extra))
        if x:
            raise ValueError(f"result {n} has unknown keys {', '.join(x)}")
        r = e.get("reduce")
        if not isinstance(r, str) or r not in REDUCES:
            raise ValueError(f"result {n} reduce must be one of {', '.join(REDUCES)}")
        if "field" in e:
            ok = "table" not in e and "column" not in e and _is_key(e["field"])
        else:
            ok = _is_key(e.get("table")) and _is_key(e.get("column"))
        if not ok:
            raise ValueError(f"result {n} must have a field, or a table and a column")


def is_spec(spec):
    """Whether `spec` is a result spec of a run op (the protocol's check)."""
    try:
        check(spec)
    except ValueError:
        return False
    return True


def is_values(values):
    """Whether `values` is an ``exited`` message's result: name -> finite number or None."""
    return (
        isinstance(values, dict)
        and len(values) <= MAX_RESULTS
        and all(
            isinstance(k, str)
            and NAME.fullmatch(k) is not None
            and (v is None or _is_finite(v))
            for k, v in values.items()
        )
    )


class Results:
    """The running reductions of one run's result entries.

    Args:
        spec (list): the op's ``result`` (checked by `check`), or empty
    """

    def __init__(self, spec):
        self._spec = list(spec)
        #: the fields whose last value is kept
        self._fields = {e["field"] for e in self._spec if "field" in e}
        #: table -> [(entry name, column)]
        self._tables = {}
        for e in self._spec:
            if "table" in e:
                self._tables.setdefault(e["table"], []).append((e["name"], e["column"]))
        #: field -> its value in the last frame that has it
        self._last = {}
        #: source (a followed file's index) -> entry name -> `_Running`
        self._rows = {}

    def __bool__(self):
        return bool(self._spec)

    def add_frame(self, frame):
        """A frame of the run (a report line's, or a followed file's)."""
        for f in self._fields:
            v = frame.get(f)
            if isinstance(v, list) or _is_number(v):
                self._last[f] = v

    def add_rows(self, source, table, columns, rows):
        """Rows of `table` read from followed file `source` (an int).

        Args:
            columns (list): the names of the rows' values
            rows (list): lists of values
        """
        w = self._tables.get(table)
        if not w:
            return
        s = self._rows.setdefault(source, {})
        for n, c in w:
            try:
                i = columns.index(c)
            except ValueError:
                continue
            a = s.get(n)
            if a is None:
                a = s[n] = _Running()
            for r in rows:
                if i < len(r):
                    a.add(r[i])

    def restart(self, source):
        """File `source` is read again from its start: forget its rows."""
        self._rows.pop(source, None)

    def values(self):
        """The result: entry name -> a finite number, or None (no value).

        Returns:
            dict: in the order of the spec
        """
        rv = {}
        for e in self._spec:
            if "field" in e:
                a = _Running()
                v = self._last.get(e["field"])
                for x in v if isinstance(v, list) else [v]:
                    a.add(x)
            else:
                # the files in the order the op follows them
                a = _Running()
                for k in sorted(self._rows):
                    b = self._rows[k].get(e["name"])
                    if b is not None:
                        a.merge(b)
            rv[e["name"]] = _finite(a.value(e["reduce"]))
        return rv


class _Running:
    """Count, sum, min, max, first and last of the finite numbers added."""

    __slots__ = ("count", "first", "last", "max", "min", "sum")

    def __init__(self):
        self.count = 0
        self.sum = 0
        self.min = self.max = self.first = self.last = None

    def add(self, value):
        if not _is_finite(value):
            return
        if self.count:
            if value < self.min:
                self.min = value
            elif value > self.max:
                self.max = value
        else:
            self.first = self.min = self.max = value
        self.last = value
        self.count += 1
        self.sum += value

    def merge(self, other):
        """`other`'s values as if added after these."""
        if not other.count:
            return
        if self.count:
            self.min = min(self.min, other.min)
            self.max = max(self.max, other.max)
        else:
            self.first, self.min, self.max = other.first, other.min, other.max
        self.last = other.last
        self.count += other.count
        self.sum += other.sum

    def value(self, reduce):
        if reduce == "count":
            return self.count
        if not self.count:
            return None
        if reduce == "mean":
            return self.sum / self.count
        return getattr(self, reduce)


def _is_key(v):
    return isinstance(v, str) and 0 < len(v) <= _MAX_KEY_CHARS


def _is_number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_finite(v):
    if isinstance(v, float):
        return math.isfinite(v)
    return isinstance(v, int) and not isinstance(v, bool)


def _finite(v):
    """`v` as the wire carries it: a float's inf (a sum that overflowed) is None."""
    if isinstance(v, int):
        # a sum of huge ints: a float, if it is one
        if abs(v) <= _MAX_EXACT_INT:
            return v
        try:
            v = float(v)
        except OverflowError:
            return None
    return v if v is not None and math.isfinite(v) else None
