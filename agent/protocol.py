"""The agent wire protocol: one definition of every message.

JSON text frames over the ``/agent`` websocket. Every frame is an object with
the protocol version ``v`` and a ``kind``; the remaining fields are checked
against the schema below. Pure: no I/O, no awaits; both the agent and the
supervisor call `parse` on what they receive and `make` on what they send.
"""

import json
import re

from agent import analyses, parsers, results

#: bumped when a message changes incompatibly
VERSION = 1

#: header that carries the agent's id; the secret travels as a bearer token
AGENT_ID_HEADER = "X-Simvisor-Agent"

#: largest frame either side accepts (Tornado's websocket_max_message_size)
MAX_MESSAGE_BYTES = 16 * 1024 * 1024
#: a library_want asks for at most this (its answer, in base64, fits a message)
MAX_LIBRARY_CHUNK_BYTES = 4 * 1024 * 1024

#: deepest nesting of arrays and objects in a frame, the frame itself being 1:
#: real ones are at most 4 or 5 deep (a stats frame: frame, data, fields,
#: field; a reply to list_files), far below where json's recursion fails
MAX_DEPTH = 32

#: stdout lines of a simulation that start with this carry structured output
REPORT_PREFIX = "#simvisor "

#: statuses a run can end in, as reported by an agent
END_STATUSES = frozenset(("completed", "error", "canceled", "timed_out"))

_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


class ProtocolError(ValueError):
    """A frame that does not match the schema; the message says why."""


def _is_id(v):
    return isinstance(v, str) and bool(_ID_RE.fullmatch(v))


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _is_num(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_str(v):
    return isinstance(v, str)


def _is_dict(v):
    return isinstance(v, dict)


def _is_list(v):
    return isinstance(v, list)


def _is_opt_int(v):
    return v is None or (isinstance(v, int) and not isinstance(v, bool))


def _is_opt_str(v):
    return v is None or isinstance(v, str)


def _is_progress(v):
    return _is_num(v) and 0 <= v <= 1


def _is_end_status(v):
    # a list is not hashable: `in` a frozenset would raise TypeError
    return isinstance(v, str) and v in END_STATUSES


def _is_run_list(v):
    """hello's runs: what the agent still holds, running or finished."""
    if not isinstance(v, list):
        return False
    for r in v:
        if not (
            isinstance(r, dict)
            and _is_id(r.get("run_id"))
            and r.get("state") in ("running", "exited")
            and _is_int(r.get("frames"))
            and _is_int(r.get("log_chars"))
        ):
            return False
    return True


def _is_adopt_map(v):
    """welcome's runs: run_id -> where the supervisor's copy ends."""
    if not isinstance(v, dict):
        return False
    return all(
        _is_id(k)
        and _is_dict(c)
        and _is_int(c.get("frames_next"))
        and _is_int(c.get("log_next"))
        for k, c in v.items()
    )


def _is_batch(v):
    """Batch job options of a run (the sbatch driver): all optional."""
    if not isinstance(v, dict) or set(v) - {
        "partition",
        "account",
        "qos",
        "cores_as",
        "extra",
        "array",
    }:
        return False
    return (
        all(_is_opt_str(v.get(k)) for k in ("partition", "account", "qos"))
        and v.get("cores_as") in (None, "tasks", "cpus")
        and _is_list(v.get("extra", []))
        and all(_is_str(a) for a in v.get("extra", []))
        and ("array" not in v or _is_array(v["array"]))
    )


def _is_array(v):
    """A run of a job array (a sweep's member, `agent.slurm_array`): the
    array's key (runs of one key that come together are one array), the
    tasks it may run at once (``%LIMIT``; None: any) and the run's place
    among them (its member index: tasks go in its order)."""
    return (
        _is_dict(v)
        and set(v) == {"key", "limit", "index"}
        and _is_id(v["key"])
        and (v["limit"] is None or (_is_int(v["limit"]) and v["limit"] >= 1))
        and _is_int(v["index"])
    )


#: a file a code adapter names in its run directory (a deck, a followed output)
FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def _is_sha256(v):
    return _is_str(v) and len(v) == 64 and all(c in "0123456789abcdef" for c in v)


def _is_library(v):
    return _is_list(v) and all(
        _is_dict(x)
        and set(x) == {"name", "sha256", "size"}
        and _is_str(x["name"])
        and _is_sha256(x["sha256"])
        and _is_int(x["size"])
        and x["size"] >= 0
        for x in v
    )


def _is_follow(v):
    """Output files to follow (`agent.outputs`): plain names, known parsers."""
    return _is_list(v) and all(
        _is_dict(x)
        and _is_str(x.get("file"))
        and FILE_NAME.fullmatch(x["file"]) is not None
        and _is_str(x.get("parser"))
        and x["parser"] in parsers.PARSERS
        for x in v
    )


# kind -> {field: check}; every field listed is required (those whose name
# ends in "?" may be left out), others are refused
_RUN_FIELDS = {
    "run_id": _is_id,
    "op_id": _is_int,
    "code": _is_id,
    "argv": lambda v: _is_list(v) and bool(v) and all(_is_str(a) for a in v),
    "params": _is_dict,
    "run_dir": _is_str,
    "cores": lambda v: _is_int(v) and v >= 1,
    "max_run_secs": lambda v: _is_num(v) and v > 0,
    "inputs": lambda v: _is_dict(v) and all(_is_str(x) for x in v.values()),
    # the plan's limits of one local run (its cgroup, `agent.cgroup`); 0: none
    "max_memory_bytes?": lambda v: _is_int(v) and v >= 0,
    "max_pids?": lambda v: _is_int(v) and v >= 0,
    # bytes the run's directory may reach (`agent.space`): local and Docker
    "max_bytes?": lambda v: _is_int(v) and v >= 0,
    # ... of its run root, not only its directory (a Docker volume's)
    "max_bytes_root?": lambda v: isinstance(v, bool),
    # library files to fetch into the agent's cache (sbatch: `agent.staging`)
    "library?": _is_library,
    # library files staged under the run root: name in the run dir -> path
    "links?": lambda v: _is_dict(v) and all(_is_str(x) for x in v.values()),
    # files the site provides where the run goes: name -> absolute path
    "site_files?": lambda v: _is_dict(v)
    and all(_is_str(x) and x.startswith("/") for x in v.values()),
    "batch?": _is_batch,
    # a code adapter's (`supervisor.adapter`): launcher, files, steps
    "launch?": lambda v: v in ("process", "mpi"),
    "follow?": _is_follow,
    "steps?": lambda v: _is_int(v) and v >= 1,
    # an analysis the warm worker serves (`agent.analysis_worker`)
    "worker?": lambda v: _is_str(v) and v in analyses.ANALYSES,
    # what the run reports at its end (`agent.results`)
    "result?": results.is_spec,
}

#: messages the agent sends
TO_SUPERVISOR = {
    "hello": {
        "agent_id": _is_id,
        "version": _is_str,
        "host": _is_str,
        "pid": _is_int,
        "runs": _is_run_list,
    },
    "started": {"run_id": _is_id, "pid": _is_int},
    # a batch job's scheduler state (Slurm: PENDING, RUNNING, ..., or
    # UNKNOWN while the scheduler cannot be asked) and its reason
    "batch_state": {
        "run_id": _is_id,
        "job_id": _is_str,
        "state": _is_str,
        "reason": _is_str,
    },
    "progress": {"run_id": _is_id, "progress": _is_progress},
    # a library file is being fetched for the run (`agent.staging`)
    "staging": {"run_id": _is_id, "file": _is_str, "done": _is_int, "total": _is_int},
    "library_want": {
        "req_id": _is_int,
        "run_id": _is_id,
        "sha256": _is_sha256,
        "offset": lambda v: _is_int(v) and v >= 0,
        "length": lambda v: _is_int(v) and 0 < v <= MAX_LIBRARY_CHUNK_BYTES,
    },
    "frame": {"run_id": _is_id, "seq": _is_int, "data": _is_dict},
    "log": {"run_id": _is_id, "offset": _is_int, "text": _is_str},
    "exited": {
        "run_id": _is_id,
        "status": _is_end_status,
        "exit_code": _is_opt_int,
        "error": _is_opt_str,
        # the code's declared result: name -> finite number or None
        "result?": results.is_values,
    },
    "reply": {
        "op_id": _is_int,
        "ok": lambda v: isinstance(v, bool),
        "result": lambda v: True,
        "error": _is_opt_str,
    },
    "error": {"message": _is_str},
}

#: messages the supervisor sends
TO_AGENT = {
    "welcome": {"runs": _is_adopt_map},
    "run": _RUN_FIELDS,
    "analysis": _RUN_FIELDS,
    "cancel": {"op_id": _is_int, "run_id": _is_id},
    "forget": {"run_id": _is_id},
    "fetch_file": {
        "op_id": _is_int,
        "path": _is_str,
        "max_bytes": _is_int,
        "offset?": _is_int,
    },
    "list_files": {"op_id": _is_int, "path": _is_str},
    "put_file": {"op_id": _is_int, "path": _is_str, "content": _is_str},
    # a deleted simulation's run directory (by its name in the run root)
    "remove_dir": {"op_id": _is_int, "path": _is_str},
    # the answer to a library_want: the bytes (base64), or why not
    "library_data": {"req_id": _is_int, "data?": _is_str, "error?": _is_opt_str},
    "shutdown": {},
    "error": {"message": _is_str},
}


def _check_tables():
    for t in (TO_SUPERVISOR, TO_AGENT):
        for k, f in t.items():
            assert _is_id(k), k
            assert "v" not in f and "kind" not in f, k
            assert all(_is_id(x.rstrip("?")) for x in f), k


_check_tables()


def make(table, kind, **fields):
    """Build a frame, checking it against the schema (a bug if it fails).

    Args:
        table (dict): `TO_SUPERVISOR` or `TO_AGENT`
        kind (str): message kind
    Returns:
        str: JSON text
    """
    m = dict(v=VERSION, kind=kind, **fields)
    _validate(table, m)
    return json.dumps(m, separators=(",", ":"))


def parse(table, text):
    """Decode and validate a frame.

    Args:
        table (dict): `TO_SUPERVISOR` or `TO_AGENT`
        text (str or bytes): what arrived
    Returns:
        dict: the message
    Raises:
        ProtocolError: with the reason
    """
    if isinstance(text, bytes):
        raise ProtocolError("binary frames are not accepted")
    if not isinstance(text, str):
        raise ProtocolError(f"frame of type={type(text).__name__} is not text")
    # surrogatepass: a lone surrogate must not raise here (it counts 3 bytes)
    if (
        len(text) > MAX_MESSAGE_BYTES
        or len(text.encode("utf-8", "surrogatepass")) > MAX_MESSAGE_BYTES
    ):
        raise ProtocolError(f"frame of {len(text)} chars is too large")
    try:
        m = json.loads(text)
    except RecursionError as e:
        raise ProtocolError(f"frame nests deeper than {MAX_DEPTH}") from e
    except ValueError as e:
        # also an integer of too many digits and undecodable text
        raise ProtocolError(f"not JSON: {e}") from e
    # each [ or { opens at most one level: most frames need no walk
    if text.count("[") + text.count("{") > MAX_DEPTH and not within_depth(m):
        raise ProtocolError(f"frame nests deeper than {MAX_DEPTH}")
    _validate(table, m)
    return m


def within_depth(value, max_depth=MAX_DEPTH):
    """Whether `value` nests lists and dicts at most `max_depth` deep.

    Not recursive, so any depth is safe to ask about. The agent can apply it
    to what a code reports (a report line is as deep as the frame it
    becomes) so that it never sends a frame the supervisor refuses.

    Args:
        value: decoded JSON (a scalar is 0 deep, ``{}`` is 1)
        max_depth (int): deepest allowed
    Returns:
        bool: True if within
    """
    # level by level, in comprehensions: cheaper than json.loads of the text
    level = [value] if isinstance(value, (dict, list)) else []
    depth = 0
    while level:
        depth += 1
        if depth > max_depth:
            return False
        level = [
            x
            for v in level
            for x in (v.values() if isinstance(v, dict) else v)
            if isinstance(x, (dict, list))
        ]
    return True


def _validate(table, m):
    if not isinstance(m, dict):
        raise ProtocolError("frame is not an object")
    if m.get("v") != VERSION:
        raise ProtocolError(f"protocol version={m.get('v')!r:.80} expected={VERSION}")
    k = m.get("kind")
    s = table.get(k) if isinstance(k, str) else None
    if s is None:
        raise ProtocolError(f"unknown kind={k!r:.80}")
    for f, check in s.items():
        o = f.endswith("?")
        f = f.rstrip("?")
        if f not in m:
            if o:
                continue
            raise ProtocolError(f"kind={k} missing field={f}")
        if not check(m[f]):
            raise ProtocolError(f"kind={k} bad field={f} value={m[f]!r:.80}")
    x = set(m) - {f.rstrip("?") for f in s} - {"v", "kind"}
    if x:
        raise ProtocolError(f"kind={k} unknown fields={sorted(x)}")
