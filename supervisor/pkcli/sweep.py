"""supervisor sweep: create, list, follow, cancel, retry and delete sweeps.

A client of a running supervisor like ``supervisor sim``, with the same
``--url`` and ``--token`` (``SUPERVISOR_PKCLI_SIM_URL``,
``SUPERVISOR_PKCLI_SIM_TOKEN``). For example::

    id=$(supervisor sweep create heat --axis steps=1000,2000,4000 \\
        --axis alpha=0.01:0.1:4:log --params '{"nx": 51}')
    supervisor sweep watch $id
    supervisor sweep create sleep --axes '{"secs": [0.1, 0.2]}' --watch
    supervisor sweep status $id --members
    supervisor sweep cancel $id

``--axis NAME=SPEC`` (repeat it for more axes; the first varies slowest in
a grid, or ``--zip`` pairs them) where SPEC is one of

- ``START:STOP:NUM`` or ``START:STOP:NUM:log``: NUM values from START to
  STOP, evenly spaced (``log``: by ratio);
- ``V1,V2,...``: these values, each read as JSON where it is JSON
  (``10``, ``0.5``, ``true``, ``"10"``) and as text otherwise;
- a JSON list or range object (``'steps=[10, 20]'``,
  ``'alpha={"start": 0.1, "stop": 1, "num": 5}'``).

``--axes`` gives all axes as one JSON object instead (or besides).
``watch`` draws the members' aggregate progress from pushed events (on a
terminal a bar redrawn in place, otherwise a line per change) and exits
when the sweep is done: 0 if every member completed, 1 otherwise.
"""

import builtins
import contextlib
import json
import math
import re
import sys

import argh
from pykern import pkcli

from supervisor.pkcli import sim

#: characters of the progress bar between its brackets
_BAR_CHARS = 40

#: member statuses that count as failed
_FAILED = ("error", "timed_out", "canceled", "deleted")

_RANGE_RE = re.compile(r"([^:,]+):([^:,]+):([0-9]+)(?::(linear|log))?")
_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

_SWEEP_ID = argh.arg("sweep_id", help="the sweep's id")
_URL = sim._URL
_TOKEN = sim._TOKEN


@argh.arg("code", help="a code of the catalog (supervisor sim codes)")
@argh.arg(
    "--axis",
    action="append",
    help="NAME=START:STOP:NUM[:log], NAME=V1,V2,... or NAME=<JSON>; repeat for more",
)
@argh.arg("--axes", help="axes as a JSON object: name -> list or range")
@argh.arg("--params", help="base parameters as a JSON object")
@argh.arg("--zip", help="pair the axes' values (all of one length), not a grid")
@argh.arg("--name", help="its name; if not given, the code's title and 'sweep'")
@argh.arg("--cores", help="cores of each member's run")
@argh.arg("--driver", help="where the members run; if not given, the service default")
@argh.arg("--max-parallel", help="members running at once at most")
@argh.arg("--watch", help="follow it to its end (see watch)")
@_URL
@_TOKEN
def create(
    code,
    axis=None,
    axes=None,
    params=None,
    zip=False,
    name=None,
    cores=None,
    driver=None,
    max_parallel=None,
    watch=False,
    url=None,
    token=None,
):
    """Create a sweep of `code`: one run per member of the axes; prints its id."""
    a = parse_axes(axis or (), axes)
    p = sim._params(params)
    if _not_finite(p):
        pkcli.command_error("--params {!r} has a number that is not finite", params)
    with sim._client(url, token) as c:
        w = c.create_sweep(
            code,
            a,
            params=p,
            combine="zip" if zip else None,
            name=name,
            cores=_int("--cores", cores),
            driver=driver,
            max_parallel=_int("--max-parallel", max_parallel),
        )
        if not watch:
            return w["id"]
        sys.stdout.write(f"{w['id']}\n")
        return _watch(c, w["id"])


@_URL
@_TOKEN
def list(url=None, token=None):
    """List your sweeps: id, code, status, done/members, name."""
    with sim._client(url, token) as c:
        return "\n".join(
            f"{w['id']}\t{w['code']}\t{w['status']}\t{w['done']}/{w['size']}"
            f"\t{w['name']}"
            for w in c.sweeps()
        )


@_SWEEP_ID
@argh.arg("--members", help="also each member: index, simulation, status, values")
@_URL
@_TOKEN
def status(sweep_id, members=False, url=None, token=None):
    """Print a sweep's status, done out of its members, and counts by status."""
    with sim._client(url, token) as c:
        d = c.sweep(sweep_id)
        res = [describe(d)]
        if members:
            for m in d["members"]:
                res.append(
                    "\t".join(
                        (
                            str(m["index"]),
                            m["simulation"],
                            m["status"],
                            json.dumps(m["params"]),
                            json.dumps(m["result"]) if m["result"] else "",
                            m["error"] or "",
                        )
                    )
                )
        return "\n".join(res)


@_SWEEP_ID
@_URL
@_TOKEN
def watch(sweep_id, url=None, token=None):
    """Follow a sweep to its end with a progress bar; exits 1 if a member failed."""
    with sim._client(url, token) as c:
        return _watch(c, sweep_id)


@_SWEEP_ID
@argh.arg("--members", help="only these members, e.g. 0,3,7")
@_URL
@_TOKEN
def cancel(sweep_id, members=None, url=None, token=None):
    """Cancel every member (or those given); prints the status once they ended."""
    m = None
    if members is not None:
        try:
            m = [int(x) for x in members.split(",")]
        except ValueError:
            pkcli.command_error("--members must be indices, e.g. 0,3,7")
    with sim._client(url, token) as c:
        return describe(c.cancel_sweep(sweep_id, m))


@_SWEEP_ID
@_URL
@_TOKEN
def retry(sweep_id, url=None, token=None):
    """Run the failed members again; prints how many and the status."""
    with sim._client(url, token) as c:
        r = c.retry_sweep(sweep_id)
        return f"retried {r['retried']}\n{describe(r)}"


@_SWEEP_ID
@_URL
@_TOKEN
def delete(sweep_id, url=None, token=None):
    """Cancel the sweep, then delete it and its members' simulations."""
    with sim._client(url, token) as c:
        r = c.delete_sweep(sweep_id)
        return f"deleted {r['deleted']} and {r['simulations']} simulations"


def parse_axes(axis_args, axes_json):
    """The ``axes`` of a create from ``--axis`` arguments and ``--axes`` JSON.

    Raises:
        argh.CommandError (through `pkcli.command_error`): a bad spec
    """
    res = {}
    if axes_json is not None:
        try:
            res = json.loads(axes_json)
        except ValueError as e:
            pkcli.command_error("--axes is not JSON: {}", e)
        if not isinstance(res, dict):
            pkcli.command_error("--axes must be a JSON object: name -> values")
    for a in axis_args:
        n, sep, spec = a.partition("=")
        n = n.strip()
        if not sep or not _NAME_RE.fullmatch(n) or not spec.strip():
            pkcli.command_error(
                "--axis {!r}: give NAME=START:STOP:NUM[:log], NAME=V1,V2 or NAME=<JSON>",
                a,
            )
        if n in res:
            pkcli.command_error("axis {} is given twice", n)
        res[n] = axis_spec(spec.strip())
        if _not_finite(res[n]):
            pkcli.command_error(
                "axis {}: {!r} has a number that is not finite", n, spec
            )
    if not res:
        pkcli.command_error("give at least one --axis (or --axes)")
    return res


def axis_spec(spec):
    """One ``--axis`` SPEC as the API takes it: a list, or a range object."""
    if spec[0] in "[{":
        try:
            return json.loads(spec)
        except ValueError as e:
            pkcli.command_error("axis {!r} is not JSON: {}", spec, e)
    m = _RANGE_RE.fullmatch(spec)
    if m:
        start, stop = _json_or_text(m.group(1)), _json_or_text(m.group(2))
        if all(isinstance(v, (int, float)) for v in (start, stop)):
            r = {"start": start, "stop": stop, "num": int(m.group(3))}
            if m.group(4):
                r["scale"] = m.group(4)
            return r
    return [_json_or_text(v) for v in spec.split(",")]


def describe(summary):
    """``running 12/200 6% completed=10 running=2 pending=188``"""
    c = " ".join(f"{k}={v}" for k, v in sorted(summary["counts"].items()))
    return (
        f"{summary['status']} {summary['done']}/{summary['size']}"
        f" {_percent(summary)} {c}"
    ).rstrip()


def _bar(summary):
    n = int(_BAR_CHARS * min(1.0, max(0.0, summary["progress"])))
    return f"[{'#' * n}{'.' * (_BAR_CHARS - n)}] {describe(summary)}"


def _failed(summary):
    return sum(v for k, v in summary["counts"].items() if k in _FAILED)


def _int(option, value):
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        pkcli.command_error("{} must be a whole number, not {!r}", option, value)


def _json_or_text(text):
    t = text.strip()
    try:
        return json.loads(t)
    except ValueError:
        return t


def _not_finite(v):
    """Is there a NaN or an infinity in `v` (``NaN``, ``Infinity``, ``1e400``)?
    JSON has no such numbers: the server would refuse the whole body."""
    if isinstance(v, float):
        return not math.isfinite(v)
    if isinstance(v, dict):
        return any(_not_finite(x) for x in v.values())
    if isinstance(v, builtins.list):
        # (`list` here is the command)
        return any(_not_finite(x) for x in v)
    return False


def _percent(summary):
    return f"{int(100 * summary['progress'])}%"


def _watch(c, sweep_id):
    """Draw the progress from pushes until the sweep is done; its last line.

    Exits 1 (`pkcli.command_error`) if a member failed or it was canceled.
    """
    out = sys.stdout
    tty = out.isatty()
    shown = None
    s = None
    try:
        with contextlib.closing(c.watch_sweep(sweep_id)) as w:
            for s in w:
                b = _bar(s)
                if b == shown:
                    continue
                if tty:
                    # the previous bar is overwritten (and padded away)
                    out.write("\r" + b.ljust(len(shown or "")))
                else:
                    out.write(b + "\n")
                out.flush()
                shown = b
    except KeyboardInterrupt:
        pass
    finally:
        if tty and shown is not None:
            out.write("\n")
        out.flush()
    if s is None or s["status"] == "running":
        pkcli.command_error("stopped before sweep {} was done", sweep_id)
    n = _failed(s)
    if n or s["status"] == "canceled":
        pkcli.command_error(
            "{} of {} members did not complete ({})", n, s["size"], describe(s)
        )
    return describe(s)
