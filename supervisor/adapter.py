"""A code adapter: how the catalog runs a code that knows nothing of simvisor.

An existing code (LAMMPS, GROMACS, a site's own Fortran or C++) reads an
input deck and writes its results into files as it goes. Its catalog entry
says how to run it and what to show, with no supervisor code (the README has
the whole contract):

- ``deck``: ``{"template": T, "file": F}``, or a list of them (the first is
  ``{input}``): the template ``T`` (a path under ``etc/codes/``, or absolute)
  is rendered from the run's validated parameters into the file ``F`` of
  the run directory (one without fields is copied as it is). A template names a
  parameter as ``{name}``; ``{{`` and ``}}`` are literal braces. Only numbers
  and parameters with ``choices`` may appear in a deck: free text never
  does (a LAMMPS deck can run shell commands).
  Or ``{"upload": F}``: the deck is the user's own upload named ``F``,
  executed as it is (the untrusted case: only the driver's isolation holds
  it); a run without that upload is refused.
- ``command``: the argv, where ``{cores}`` is the run's cores, ``{input}`` the
  deck's file name and ``{python}`` the agent's interpreter.
- ``launch``: ``"mpi"``: the agent starts ``{cores}`` ranks of the command
  (``mpirun -np``; inside the allocation under sbatch); ``"process"``
  (the default): the command as it is.
- ``follow``: ``[{"file": F, "parser": P, ...options}]``: files the agent
  follows as they grow, each through its parser (`agent.parsers.PARSERS`),
  whose records become the run's frames, progress and error.
- ``progress``: ``{"steps": NAME}``: progress is the last step a parser saw
  over the value of parameter NAME.
- ``plots``: what the GUI draws from those frames (`check_plots`).
- ``worker``: (an analysis) the name of an analysis of `agent.analyses` that
  the agent's warm worker serves, instead of a process per request.
- ``result``: what a run reports at its end (`check_result`, `agent.results`).

Everything is checked when the catalog is loaded: a template naming a
parameter that does not exist, or one with free text, stops the supervisor
with the code and the name in the message.
"""

import pathlib
import re

from agent import analyses, parsers, protocol, results

_CODES_DIR = pathlib.Path(__file__).resolve().parents[1] / "etc" / "codes"

LAUNCHES = ("process", "mpi")

PLOT_KINDS = ("lines", "scatter3d")

#: {name}, or an escaped brace
_FIELD = re.compile(r"\{\{|\}\}|\{([A-Za-z_][A-Za-z0-9_]*)\}|[{}]")

#: argv placeholders the supervisor fills (``{python}`` is the agent's)
_ARGV_FIELDS = ("cores", "input")

#: a deck or followed file's name: plain (what the agent accepts)
_FILE_NAME = protocol.FILE_NAME


class AdapterError(ValueError):
    """The catalog entry is wrong (raised when the catalog is loaded)."""


class Adapter:
    """The adapter part of one catalog entry (see the module's doc).

    Args:
        code (str): the code's name (for messages)
        doc (dict): the catalog entry
        params (list): the entry's parameters (checked by `supervisor.catalog`)
    """

    def __init__(self, code, doc, params):
        self.code = code
        byname = {p["name"]: p for p in params}
        self.launch = doc.get("launch", "process")
        self._need(self.launch in LAUNCHES, f"launch must be one of {LAUNCHES}")
        #: file name -> template pieces; the first file is ``{input}``
        self._deck = {}
        #: the deck is the user's own upload of this name (run as it is)
        self.upload = None
        d = doc.get("deck")
        if isinstance(d, dict) and set(d) == {"upload"}:
            self._need(
                _FILE_NAME.fullmatch(str(d["upload"])) is not None,
                f"deck upload {d['upload']!r} is not a plain name",
            )
            self.upload = d["upload"]
        elif d is not None:
            for x in d if isinstance(d, list) else [d]:
                self._deck_file(x, byname)
        self.deck_file = self.upload or next(iter(self._deck), None)
        for a in doc["command"]:
            for n in _names(a):
                self._need(
                    n in _ARGV_FIELDS or n == "python",
                    f"command field {{{n}}} is unknown",
                )
                self._need(
                    n != "input" or self.deck_file, "command has {input} but no deck"
                )
        self.follow = [self._follow(x) for x in doc.get("follow", [])]
        pr = doc.get("progress")
        self.steps_param = None
        if pr is not None:
            self._need(
                isinstance(pr, dict) and set(pr) == {"steps"},
                "progress must be {steps: PARAM}",
            )
            s = byname.get(pr["steps"])
            self._need(
                s is not None and s["type"] == "int",
                f"progress steps {pr['steps']!r} is not an int parameter",
            )
            self.steps_param = pr["steps"]
        self.plots = check_plots(code, doc.get("plots", []))
        #: the declared result, as the catalog shows it and as the op carries it
        self.result, self._result_op = check_result(code, doc.get("result", []))
        #: an analysis the agent's warm worker serves (`agent.analyses`)
        self.worker = doc.get("worker")
        if self.worker is not None:
            self._need(doc.get("kind") == "analysis", "only an analysis has a worker")
            self._need(
                self.worker in analyses.ANALYSES,
                f"worker analysis {self.worker!r} is unknown (known: "
                f"{', '.join(sorted(analyses.ANALYSES))})",
            )

    def argv(self, command, cores):
        """`command` with ``{cores}`` and ``{input}`` filled in."""
        v = {"cores": str(cores), "input": self.deck_file or ""}
        return [_FIELD.sub(lambda m: _argv_field(m, v), a) for a in command]

    def inputs(self, params):
        """The run directory's files made from `params` (the deck), by name."""
        return {
            n: "".join(x if isinstance(x, str) else _text(params[x[0]]) for x in t)
            for n, t in self._deck.items()
        }

    def _deck_file(self, d, params):
        self._need(
            isinstance(d, dict) and set(d) == {"template", "file"},
            "deck must be {template, file} or a list of them",
        )
        self._need(
            _FILE_NAME.fullmatch(str(d["file"])) is not None,
            f"deck file {d['file']!r} is not a plain name",
        )
        self._need(d["file"] not in self._deck, f"deck file {d['file']} is twice")
        p = pathlib.Path(d["template"])
        p = p if p.is_absolute() else _CODES_DIR / p
        try:
            t = p.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise AdapterError(
                f"code={self.code}: cannot read deck template {p}: {e}"
            ) from e
        self._deck[d["file"]] = _parse(self.code, t, params)

    def op_fields(self, params):
        """What the run op carries for the agent (none for a plain code)."""
        rv = {}
        if self.launch != "process":
            rv["launch"] = self.launch
        if self.follow:
            rv["follow"] = self.follow
        if self.steps_param is not None:
            rv["steps"] = int(params[self.steps_param])
        if self.worker is not None:
            rv["worker"] = self.worker
        if self._result_op:
            rv["result"] = self._result_op
        return rv

    def _follow(self, x):
        self._need(
            isinstance(x, dict) and {"file", "parser"} <= set(x),
            "follow entries are {file, parser, ...}",
        )
        self._need(
            _FILE_NAME.fullmatch(str(x["file"])) is not None,
            f"followed file {x['file']!r} is not a plain name",
        )
        self._need(
            x["parser"] in parsers.PARSERS,
            f"parser {x['parser']!r} is unknown (known: {', '.join(sorted(parsers.PARSERS))})",
        )
        o = {k: v for k, v in x.items() if k not in ("file", "parser")}
        try:
            parsers.PARSERS[x["parser"]](**o)
        except (TypeError, ValueError) as e:
            raise AdapterError(
                f"code={self.code}: options of parser {x['parser']}: {e}"
            ) from e
        return dict(x)

    def _need(self, ok, what):
        if not ok:
            raise AdapterError(f"code={self.code}: {what}")


def check_plots(code, plots):
    """The ``plots`` of a catalog entry, checked (the GUI draws them as they are)."""
    if not isinstance(plots, list):
        raise AdapterError(f"code={code}: plots must be a list")
    for p in plots:
        ok = (
            isinstance(p, dict)
            and p.get("kind") in PLOT_KINDS
            and isinstance(p.get("title", ""), str)
            and (("table" in p) != ("file" in p))
        )
        if ok and p["kind"] == "lines":
            ok = (
                _axis(p.get("x"))
                and isinstance(p.get("y"), list)
                and p["y"]
                and all(map(_axis, p["y"]))
            )
        if not ok:
            raise AdapterError(
                f"code={code}: a plot is {{kind: lines, table, x: AXIS, y: [AXIS]}} or {{kind: scatter3d, file}}, an AXIS {{column, label?, unit?}}: {p!r}"
            )
    return plots


def check_result(code, spec):
    """The ``result`` of a catalog entry, checked (`agent.results`).

    Each entry is ``{name, label, unit?, reduce, field}`` or ``{name, label,
    unit?, reduce, table, column}``.

    Returns:
        tuple: ([{name, label, unit?}] for the catalog, [entry] for the run op)
    """
    try:
        results.check(spec, extra=("label", "unit"))
    except ValueError as e:
        raise AdapterError(f"code={code}: {e}") from e
    for e in spec:
        if not isinstance(e.get("label"), str) or not e["label"]:
            raise AdapterError(f"code={code}: result {e['name']} has no label")
        if not isinstance(e.get("unit", ""), str):
            raise AdapterError(f"code={code}: result {e['name']} unit is not text")
    return (
        [{k: e[k] for k in ("name", "label", "unit") if k in e} for e in spec],
        [{k: v for k, v in e.items() if k not in ("label", "unit")} for e in spec],
    )


def _axis(a):
    return (
        isinstance(a, dict)
        and isinstance(a.get("column"), str)
        and set(a) <= {"column", "label", "unit"}
        and all(isinstance(v, str) for v in a.values())
    )


def _argv_field(m, values):
    n = m.group(1)
    if n is None:
        return m.group(0)[0] if m.group(0) in ("{{", "}}") else m.group(0)
    return values.get(n, m.group(0))


def _names(text):
    return [m.group(1) for m in _FIELD.finditer(text) if m.group(1)]


def _parse(code, text, params):
    """The template as pieces: text, or (parameter name,)."""
    rv = []
    i = 0
    for m in _FIELD.finditer(text):
        rv.append(text[i : m.start()])
        i = m.end()
        g = m.group(0)
        if g in ("{{", "}}"):
            rv.append(g[0])
            continue
        n = m.group(1)
        if n is None:
            raise AdapterError(
                f"code={code}: deck template has a lone {g!r} at offset {m.start()} (write {g}{g})"
            )
        p = params.get(n)
        if p is None:
            raise AdapterError(
                f"code={code}: deck template names {{{n}}}, which is not a parameter"
            )
        if p["type"] not in ("int", "float") and "choices" not in p:
            raise AdapterError(
                f"code={code}: parameter {n} is free text: only numbers and choices may go into a deck"
            )
        rv.append((n,))
    rv.append(text[i:])
    return [x for x in rv if x != ""]


def _text(v):
    # repr of a float is exact and never has a space; ints stay ints
    return repr(v) if isinstance(v, float) else str(v)
