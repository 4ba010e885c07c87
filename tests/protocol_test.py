"""Tests of agent/protocol.py: every message kind, every way a frame is bad.

A valid example of every kind in both tables is built with `make` and read
back with `parse`; the bad frames are a table of (frame, words the error must
name).
"""

import json

import pytest

from agent import protocol

_RUN = {
    "run_id": "18f3a2b4c5d6e-000001",
    "op_id": 0,
    "code": "heat",
    "argv": ["python", "-m", "agent.codes.heat"],
    "params": {"n": 10, "alpha": 0.5},
    "run_dir": "sim-1",
    "cores": 2,
    "max_run_secs": 3600,
    "inputs": {"source_frames.jsonl": '{"t":0}\n'},
    "max_memory_bytes": 4 * 1024**3,
    "max_pids": 1024,
    "max_bytes": 10 * 1024**3,
    "max_bytes_root": True,
    "site_files": {"Cu_u3.eam": "/usr/share/lammps/potentials/Cu_u3.eam"},
    "links": {"data.bin": ".library/" + "ab" * 32},
    "library": [{"name": "data.bin", "sha256": "ab" * 32, "size": 10}],
    "batch": {
        "partition": "debug",
        "array": {"key": "5f1e2d3c4b5a", "limit": 4, "index": 3},
    },
    "launch": "mpi",
    "follow": [{"file": "log.lammps", "parser": "lammps_log"}],
    "steps": 1000,
    "worker": "rdf",
    "result": [
        {"name": "temp_mean", "table": "thermo", "column": "Temp", "reduce": "mean"},
        {"name": "u_max", "field": "u", "reduce": "max"},
    ],
}

#: a valid example of every kind, by table
_EXAMPLES = {
    "TO_SUPERVISOR": {
        "hello": {
            "agent_id": "alice-local-0a1b2c3d",
            "version": "0.1.0",
            "host": "login01.example",
            "pid": 1234,
            "runs": [
                {
                    "run_id": "r-000001",
                    "state": "running",
                    "frames": 3,
                    "log_chars": 10,
                },
                {"run_id": "r-000002", "state": "exited", "frames": 0, "log_chars": 0},
            ],
        },
        "started": {"run_id": "r-000001", "pid": 4321},
        "batch_state": {
            "run_id": "r-000001",
            "job_id": "17",
            "state": "PENDING",
            "reason": "Resources",
        },
        "progress": {"run_id": "r-000001", "progress": 0.5},
        "staging": {"run_id": "r-000001", "file": "in.bin", "done": 5, "total": 10},
        "library_want": {
            "req_id": 1,
            "run_id": "r-000001",
            "sha256": "ab" * 32,
            "offset": 0,
            "length": 1024,
        },
        "frame": {"run_id": "r-000001", "seq": 0, "data": {"x": [1, 2], "t": 0.1}},
        "log": {"run_id": "r-000001", "offset": 0, "text": "step 1\n"},
        "exited": {
            "run_id": "r-000001",
            "status": "completed",
            "exit_code": 0,
            "error": None,
            "result": {"temp_mean": 1.5, "steps": 3, "u_max": None},
        },
        "reply": {"op_id": 7, "ok": True, "result": {"content": "abc"}, "error": None},
        "error": {"message": "bad frame: unknown kind"},
    },
    "TO_AGENT": {
        "welcome": {"runs": {"r-000001": {"frames_next": 3, "log_next": 10}}},
        "run": _RUN,
        "analysis": dict(_RUN, code="stats"),
        "cancel": {"op_id": 3, "run_id": "r-000001"},
        "forget": {"run_id": "r-000001"},
        "fetch_file": {
            "op_id": 4,
            "path": "out/result.json",
            "max_bytes": 1 << 20,
            "offset": 0,
        },
        "list_files": {"op_id": 6, "path": "sim-1"},
        "put_file": {"op_id": 5, "path": "inputs/a.txt", "content": "hello"},
        "remove_dir": {"op_id": 6, "path": "0123abcd"},
        "library_data": {"req_id": 1, "data": "aGVsbG8=", "error": None},
        "shutdown": {},
        "error": {"message": "unknown agent"},
    },
}

_TABLES = {"TO_SUPERVISOR": protocol.TO_SUPERVISOR, "TO_AGENT": protocol.TO_AGENT}

_KINDS = [
    pytest.param(t, k, id=f"{t}.{k}") for t, kinds in _EXAMPLES.items() for k in kinds
]


def test_every_kind_has_an_example():
    for t, table in _TABLES.items():
        assert set(_EXAMPLES[t]) == set(table), t
        for k, fields in table.items():
            assert set(_EXAMPLES[t][k]) == {f.rstrip("?") for f in fields}, f"{t}.{k}"


@pytest.mark.parametrize("table,kind", _KINDS)
def test_make_parse_round_trip(table, kind):
    fields = _EXAMPLES[table][kind]
    text = protocol.make(_TABLES[table], kind, **fields)
    assert isinstance(text, str)
    m = protocol.parse(_TABLES[table], text)
    assert m == dict(v=protocol.VERSION, kind=kind, **fields)
    # a frame is compact JSON text
    assert json.loads(text) == m
    assert "\n" not in text


@pytest.mark.parametrize("table,kind", _KINDS)
def test_make_checks_the_schema(table, kind):
    fields = dict(_EXAMPLES[table][kind], surprise=1)
    with pytest.raises(protocol.ProtocolError, match="surprise"):
        protocol.make(_TABLES[table], kind, **fields)


@pytest.mark.parametrize("table,kind", _KINDS)
def test_every_field_is_required(table, kind):
    assert _EXAMPLES[table][kind] or kind == "shutdown"
    for f in _EXAMPLES[table][kind]:
        m = dict(_EXAMPLES[table][kind])
        del m[f]
        if f + "?" in _TABLES[table][kind]:
            # optional: still valid without it
            _parse(_TABLES[table], kind, m)
            continue
        with pytest.raises(protocol.ProtocolError) as e:
            _parse(_TABLES[table], kind, m)
        assert f"missing field={f}" in str(e.value)


@pytest.mark.parametrize(
    "batch,ok",
    [
        ({}, True),
        ({"partition": "debug", "account": "m1", "qos": None}, True),
        ({"cores_as": "cpus", "extra": ["--constraint=cpu"]}, True),
        ({"cores_as": "nodes"}, False),
        ({"partition": 3}, False),
        ({"extra": "--exclusive"}, False),
        ({"reservation": "x"}, False),
        # a sweep's member: one job array of the runs of its key
        ({"array": {"key": "5f1e2d3c4b5a", "limit": 4, "index": 0}}, True),
        (
            {"partition": "debug", "array": {"key": "s-1", "limit": None, "index": 7}},
            True,
        ),
        ({"array": {"key": "s-1", "index": 0}}, False),
        ({"array": {"key": "s-1", "limit": None}}, False),
        ({"array": {"key": "../x", "limit": None, "index": 0}}, False),
        ({"array": {"key": "s-1", "limit": 0, "index": 0}}, False),
        ({"array": {"key": "s-1", "limit": True, "index": 0}}, False),
        ({"array": {"key": "s-1", "limit": None, "index": -1}}, False),
        ({"array": {"key": "s-1", "limit": None, "index": 0, "size": 3}}, False),
        ({"array": "s-1"}, False),
    ],
)
def test_run_batch_options(batch, ok):
    m = dict(_RUN, batch=batch)
    if ok:
        assert _parse(protocol.TO_AGENT, "run", m)["batch"] == batch
    else:
        with pytest.raises(protocol.ProtocolError, match="field=batch"):
            _parse(protocol.TO_AGENT, "run", m)


def test_kinds_are_directional():
    # what the supervisor sends is not accepted from an agent, and back
    with pytest.raises(protocol.ProtocolError, match="unknown kind='run'"):
        _parse(protocol.TO_SUPERVISOR, "run", _RUN)
    with pytest.raises(protocol.ProtocolError, match="unknown kind='started'"):
        _parse(protocol.TO_AGENT, "started", _EXAMPLES["TO_SUPERVISOR"]["started"])


def _parse(table, kind, fields, **top):
    return protocol.parse(
        table, json.dumps(dict(dict(v=protocol.VERSION, kind=kind), **top, **fields))
    )


def _bad(kind, name, value, table="TO_SUPERVISOR"):
    """A frame of `kind` whose field `name` is `value`; the error names it."""
    return pytest.param(
        table,
        kind,
        {name: value},
        f"bad field={name}",
        id=f"{kind}.{name}={value!r:.30}",
    )


_BAD_FIELDS = [
    _bad("frame", "seq", -1),
    _bad("frame", "seq", 1.0),
    _bad("frame", "seq", True),
    _bad("frame", "seq", "1"),
    _bad("frame", "data", [1, 2]),
    _bad("progress", "progress", 1.5),
    _bad("progress", "progress", -0.1),
    _bad("progress", "progress", "0.5"),
    _bad("progress", "progress", None),
    _bad("progress", "progress", False),
    _bad("started", "run_id", "r/../x"),
    _bad("started", "run_id", "a/b"),
    _bad("started", "run_id", ""),
    _bad("started", "run_id", ".hidden"),
    _bad("started", "run_id", "-x"),
    _bad("started", "run_id", "x" * 129),
    _bad("started", "run_id", "with space"),
    _bad("started", "run_id", 12),
    _bad("started", "run_id", None),
    _bad("started", "pid", -1),
    _bad("exited", "status", "done"),
    _bad("exited", "status", "running"),
    _bad("exited", "status", None),
    _bad("exited", "exit_code", "0"),
    _bad("exited", "exit_code", 0.5),
    _bad("exited", "error", 3),
    _bad("log", "offset", -5),
    _bad("log", "text", 5),
    _bad("reply", "ok", 1),
    _bad("reply", "error", ["x"]),
    _bad("hello", "runs", {}),
    _bad(
        "hello",
        "runs",
        [{"run_id": "r1", "state": "done", "frames": 0, "log_chars": 0}],
    ),
    _bad(
        "hello",
        "runs",
        [{"run_id": "a/b", "state": "running", "frames": 0, "log_chars": 0}],
    ),
    _bad(
        "hello",
        "runs",
        [{"run_id": "r1", "state": "running", "frames": -1, "log_chars": 0}],
    ),
    _bad("hello", "runs", [{"run_id": "r1", "state": "running", "frames": 0}]),
    _bad("hello", "runs", ["r1"]),
    _bad("hello", "pid", "1"),
    _bad("hello", "agent_id", "alice/../bob"),
    _bad("error", "message", None),
    _bad("welcome", "runs", [], table="TO_AGENT"),
    _bad(
        "welcome", "runs", {"a/b": {"frames_next": 0, "log_next": 0}}, table="TO_AGENT"
    ),
    _bad(
        "welcome", "runs", {"r1": {"frames_next": -1, "log_next": 0}}, table="TO_AGENT"
    ),
    _bad("welcome", "runs", {"r1": {"frames_next": 0}}, table="TO_AGENT"),
    _bad("run", "cores", 0, table="TO_AGENT"),
    _bad("run", "cores", 1.0, table="TO_AGENT"),
    _bad("run", "argv", [], table="TO_AGENT"),
    _bad("run", "argv", ["python", 3], table="TO_AGENT"),
    _bad("run", "argv", "python -m x", table="TO_AGENT"),
    _bad("run", "max_run_secs", 0, table="TO_AGENT"),
    _bad("run", "max_run_secs", -1, table="TO_AGENT"),
    _bad("run", "max_memory_bytes", -1, table="TO_AGENT"),
    _bad("run", "max_bytes", -1, table="TO_AGENT"),
    _bad("run", "max_pids", 1.5, table="TO_AGENT"),
    _bad("run", "launch", "ssh", table="TO_AGENT"),
    _bad("run", "follow", [{"file": "../x", "parser": "lammps_log"}], table="TO_AGENT"),
    _bad("run", "follow", [{"file": "x", "parser": "nosuch"}], table="TO_AGENT"),
    _bad("run", "steps", 0, table="TO_AGENT"),
    _bad("run", "worker", "nosuch", table="TO_AGENT"),
    _bad("run", "code", "../evil", table="TO_AGENT"),
    _bad("run", "inputs", {"a": 1}, table="TO_AGENT"),
    _bad("run", "params", [], table="TO_AGENT"),
    _bad("analysis", "run_id", "a/b", table="TO_AGENT"),
    _bad("cancel", "op_id", -1, table="TO_AGENT"),
    _bad("fetch_file", "max_bytes", None, table="TO_AGENT"),
    _bad("put_file", "content", None, table="TO_AGENT"),
    _bad("library_want", "sha256", "AB" * 32),
    _bad("library_want", "length", 0),
    _bad("library_want", "length", protocol.MAX_LIBRARY_CHUNK_BYTES + 1),
    _bad("run", "library", [{"name": "x", "sha256": "ab" * 32}], table="TO_AGENT"),
    _bad("run", "result", {"name": "x"}, table="TO_AGENT"),
    _bad(
        "run", "result", [{"name": "x", "reduce": "median", "field": "u"}], "TO_AGENT"
    ),
    _bad("run", "result", [{"name": "x-y", "reduce": "max", "field": "u"}], "TO_AGENT"),
    _bad("run", "result", [{"name": "x", "reduce": "max", "table": "t"}], "TO_AGENT"),
    _bad(
        "run",
        "result",
        [{"name": "x", "reduce": "max", "field": "u", "table": "t", "column": "c"}],
        "TO_AGENT",
    ),
    _bad(
        "run",
        "result",
        [{"name": "x", "reduce": "max", "field": "u"}] * 2,
        "TO_AGENT",
    ),
    _bad(
        "run",
        "result",
        [{"name": f"x{i}", "reduce": "max", "field": "u"} for i in range(17)],
        "TO_AGENT",
    ),
    _bad("exited", "result", {"x": float("nan")}),
    _bad("exited", "result", {"x": float("inf")}),
    _bad("exited", "result", {"x": "1"}),
    _bad("exited", "result", {"x": True}),
    _bad("exited", "result", {"a b": 1}),
    _bad("exited", "result", [1]),
]


@pytest.mark.parametrize("table,kind,change,words", _BAD_FIELDS)
def test_bad_field(table, kind, change, words):
    fields = dict(_EXAMPLES[table][kind], **change)
    with pytest.raises(protocol.ProtocolError) as e:
        _parse(_TABLES[table], kind, fields)
    assert words in str(e.value)
    assert f"kind={kind}" in str(e.value)


def _frame(text, words, table="TO_SUPERVISOR", id=None):
    return pytest.param(table, text, words, id=id)


_BAD_FRAMES = [
    _frame("", "not JSON", id="empty"),
    _frame("{", "not JSON", id="truncated"),
    _frame("hello", "not JSON", id="text"),
    _frame("\x00\xff", "not JSON", id="control-chars"),
    _frame("[1, 2]", "not an object", id="list"),
    _frame("null", "not an object", id="null"),
    _frame('"started"', "not an object", id="string"),
    _frame("3", "not an object", id="number"),
    _frame('{"kind": "started", "run_id": "r1", "pid": 1}', "version=None", id="no-v"),
    _frame(
        '{"v": 2, "kind": "started", "run_id": "r1", "pid": 1}', "version=2", id="v2"
    ),
    _frame(
        '{"v": 0, "kind": "started", "run_id": "r1", "pid": 1}', "version=0", id="v0"
    ),
    _frame(
        '{"v": "1", "kind": "started", "run_id": "r1", "pid": 1}',
        "version='1'",
        id="v-str",
    ),
    _frame('{"v": 1}', "unknown kind=None", id="no-kind"),
    _frame('{"v": 1, "kind": "nonsense"}', "unknown kind='nonsense'", id="kind"),
    _frame('{"v": 1, "kind": ["started"]}', "unknown kind=", id="kind-list"),
    _frame('{"v": 1, "kind": 3}', "unknown kind=3", id="kind-int"),
    _frame(
        '{"v": 1, "kind": "started", "pid": 1}', "missing field=run_id", id="missing"
    ),
    _frame(
        '{"v": 1, "kind": "started", "run_id": "r1", "pid": 1, "secret": "x"}',
        "unknown fields=['secret']",
        id="extra",
    ),
    _frame(
        '{"v": 1, "kind": "shutdown", "now": true, "why": "x"}',
        "unknown fields=['now', 'why']",
        table="TO_AGENT",
        id="extras",
    ),
]


@pytest.mark.parametrize("table,text,words", _BAD_FRAMES)
def test_bad_frame(table, text, words):
    with pytest.raises(protocol.ProtocolError) as e:
        protocol.parse(_TABLES[table], text)
    assert words in str(e.value)


def test_binary_frame():
    t = protocol.make(protocol.TO_SUPERVISOR, "started", run_id="r1", pid=1)
    with pytest.raises(protocol.ProtocolError, match="binary"):
        protocol.parse(protocol.TO_SUPERVISOR, t.encode())


def test_oversize_frame():
    ok = protocol.make(protocol.TO_SUPERVISOR, "log", run_id="r1", offset=0, text="")
    pad = protocol.MAX_MESSAGE_BYTES - len(ok)
    big = protocol.make(
        protocol.TO_SUPERVISOR, "log", run_id="r1", offset=0, text="x" * pad
    )
    assert len(big) == protocol.MAX_MESSAGE_BYTES
    assert protocol.parse(protocol.TO_SUPERVISOR, big)["text"] == "x" * pad
    too_big = big[:-1] + " }"
    with pytest.raises(protocol.ProtocolError, match="too large"):
        protocol.parse(protocol.TO_SUPERVISOR, too_big)


def test_oversize_frame_in_bytes():
    n = protocol.MAX_MESSAGE_BYTES // 2 + 1
    text = '{"v":1,"kind":"log","run_id":"r1","offset":0,"text":"%s"}' % ("\u00e9" * n)
    assert len(text.encode()) > protocol.MAX_MESSAGE_BYTES
    with pytest.raises(protocol.ProtocolError, match="too large"):
        protocol.parse(protocol.TO_SUPERVISOR, text)


@pytest.mark.parametrize(
    "kind,field",
    [("started", "run_id"), ("hello", "agent_id")],
)
def test_id_with_a_trailing_newline(kind, field):
    fields = dict(_EXAMPLES["TO_SUPERVISOR"][kind], **{field: "r1\n"})
    with pytest.raises(protocol.ProtocolError, match=f"bad field={field}"):
        _parse(protocol.TO_SUPERVISOR, kind, fields)


def test_ids_at_the_limits():
    for i in ("a", "A", "0", "a" * 128, "a.b-c_d", "r-0001.x"):
        m = _parse(protocol.TO_SUPERVISOR, "started", {"run_id": i, "pid": 0})
        assert m["run_id"] == i


def test_optional_and_any_fields():
    m = _parse(
        protocol.TO_SUPERVISOR,
        "exited",
        {"run_id": "r1", "status": "error", "exit_code": -9, "error": "killed"},
    )
    assert m["exit_code"] == -9
    for status in sorted(protocol.END_STATUSES):
        _parse(
            protocol.TO_SUPERVISOR,
            "exited",
            {"run_id": "r1", "status": status, "exit_code": None, "error": None},
        )
    for result in (None, 1, "s", [1], {"a": 1}):
        m = _parse(
            protocol.TO_SUPERVISOR,
            "reply",
            {"op_id": 0, "ok": False, "result": result, "error": "no"},
        )
        assert m["result"] == result
    for p in (0, 1, 0.0, 1.0, 0.25):
        _parse(protocol.TO_SUPERVISOR, "progress", {"run_id": "r1", "progress": p})
    _parse(
        protocol.TO_SUPERVISOR,
        "hello",
        dict(_EXAMPLES["TO_SUPERVISOR"]["hello"], runs=[]),
    )
    _parse(protocol.TO_AGENT, "welcome", {"runs": {}})
