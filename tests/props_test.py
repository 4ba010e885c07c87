"""Property tests of the pure cores: the protocol parser and the job state machine.

agent/protocol.py: whatever arrives, `parse` returns a message or raises
`ProtocolError`, so the websocket layers always answer with an error frame
(never drop the connection on an unexpected exception); every valid message
`make` builds reads back the same. supervisor/job.py: random sequences of
transitions, queues and ends follow `job.TRANSITIONS` and the docstrings.
Examples are bounded for CI by the "bounded" profile.
"""

import copy
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent import analyses, parsers, protocol, results
from supervisor import job

settings.register_profile("bounded", max_examples=200, deadline=None, database=None)
_BOUNDED = settings.get_profile("bounded")

_TABLES = {"TO_SUPERVISOR": protocol.TO_SUPERVISOR, "TO_AGENT": protocol.TO_AGENT}

_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(st.characters(exclude_categories=())),
)
_JSON = st.recursive(
    _SCALARS,
    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(), c, max_size=4),
    max_leaves=30,
)

# ---- protocol: strategies for valid messages

_ID = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}", fullmatch=True)
_INT = st.integers(0, 2**63)
_SHA256 = st.from_regex(r"[0-9a-f]{64}", fullmatch=True)
_STR = st.text(st.characters(exclude_categories=()))
_OPT_STR = st.none() | _STR
# NaN is valid on the wire (json allows it) but not equal to itself
_FINITE = st.floats(allow_nan=False, allow_infinity=False)
# shallow enough that a frame holding it stays within MAX_DEPTH
_VALUE = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63) | _FINITE | _STR,
    lambda c: st.lists(c, max_size=4) | st.dictionaries(_STR, c, max_size=4),
    max_leaves=20,
).filter(lambda v: protocol.within_depth(v, protocol.MAX_DEPTH - 2))
_OBJECT = st.dictionaries(_STR, _VALUE, max_size=5)
_BATCH = st.fixed_dictionaries(
    {},
    optional={
        "partition": _OPT_STR,
        "account": _OPT_STR,
        "qos": _OPT_STR,
        "cores_as": st.sampled_from([None, "tasks", "cpus"]),
        "extra": st.lists(_STR, max_size=3),
        "array": st.fixed_dictionaries(
            {"key": _ID, "limit": st.none() | st.integers(1, 2**31), "index": _INT}
        ),
    },
)

_RESULT_NAME = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,20}", fullmatch=True)
_KEY = st.text(min_size=1, max_size=20)
_RESULT_SPEC = st.lists(
    st.fixed_dictionaries(
        {"name": _RESULT_NAME, "reduce": st.sampled_from(results.REDUCES)}
    ).flatmap(
        lambda e: st.one_of(
            st.fixed_dictionaries({"field": _KEY}),
            st.fixed_dictionaries({"table": _KEY, "column": _KEY}),
        ).map(lambda x: dict(e, **x))
    ),
    max_size=4,
    unique_by=lambda e: e["name"],
)
_RESULT_VALUES = st.dictionaries(
    _RESULT_NAME, st.none() | st.integers(-(2**63), 2**63) | _FINITE, max_size=4
)

#: a strategy for each field of every kind: (kind, field) first, then field
_FIELDS = {
    ("run", "result"): _RESULT_SPEC,
    ("analysis", "result"): _RESULT_SPEC,
    ("exited", "result"): _RESULT_VALUES,
    ("hello", "runs"): st.lists(
        st.fixed_dictionaries(
            {
                "run_id": _ID,
                "state": st.sampled_from(["running", "exited"]),
                "frames": _INT,
                "log_chars": _INT,
            }
        ),
        max_size=3,
    ),
    ("welcome", "runs"): st.dictionaries(
        _ID,
        st.fixed_dictionaries({"frames_next": _INT, "log_next": _INT}),
        max_size=3,
    ),
    ("batch_state", "state"): _STR,
    ("exited", "status"): st.sampled_from(sorted(protocol.END_STATUSES)),
    "run_id": _ID,
    "agent_id": _ID,
    "code": _ID,
    "op_id": _INT,
    "pid": _INT,
    "seq": _INT,
    "offset": _INT,
    "max_bytes": _INT,
    "max_bytes_root": st.booleans(),
    "version": _STR,
    "host": _STR,
    "job_id": _STR,
    "reason": _STR,
    "text": _STR,
    "message": _STR,
    "path": _STR,
    "content": _STR,
    "run_dir": _STR,
    "progress": st.floats(0, 1),
    "data": _OBJECT,
    "params": _OBJECT,
    "exit_code": st.none() | st.integers(-(2**31), 2**31),
    "error": _OPT_STR,
    "ok": st.booleans(),
    "result": _VALUE,
    "argv": st.lists(_STR, min_size=1, max_size=4),
    "cores": st.integers(1, 1024),
    "max_run_secs": st.integers(1, 10**6) | st.floats(0.001, 1e6),
    "inputs": st.dictionaries(_STR, _STR, max_size=3),
    "max_memory_bytes": st.integers(0, 2**62),
    "max_pids": st.integers(0, 2**31),
    "links": st.dictionaries(_STR, _STR, max_size=3),
    "site_files": st.dictionaries(_STR, _STR.map(lambda x: "/" + x), max_size=3),
    "library": st.lists(
        st.fixed_dictionaries({"name": _STR, "sha256": _SHA256, "size": _INT}),
        max_size=2,
    ),
    "req_id": _INT,
    "sha256": _SHA256,
    "length": st.integers(1, protocol.MAX_LIBRARY_CHUNK_BYTES),
    "file": _STR,
    "done": _INT,
    "total": _INT,
    ("library_data", "data"): _STR,
    "batch": _BATCH,
    "launch": st.sampled_from(["process", "mpi"]),
    "follow": st.lists(
        st.fixed_dictionaries(
            {
                "file": st.from_regex(
                    r"[A-Za-z0-9][A-Za-z0-9._-]{0,20}", fullmatch=True
                ),
                "parser": st.sampled_from(sorted(parsers.PARSERS)),
            }
        ),
        max_size=3,
    ),
    "steps": st.integers(1, 2**31),
    "worker": st.sampled_from(sorted(analyses.ANALYSES)),
}


def _field_strategy(kind, field):
    return _FIELDS.get((kind, field), _FIELDS.get(field))


@st.composite
def _message(draw, table):
    """(kind, fields) of a valid message of `table`."""
    k = draw(st.sampled_from(sorted(table)))
    rv = {}
    for f in table[k]:
        n = f.rstrip("?")
        if f.endswith("?") and not draw(st.booleans()):
            continue
        rv[n] = draw(_field_strategy(k, n))
    return k, rv


_WRONG = st.one_of(
    _JSON,
    st.lists(_JSON, max_size=2),
    st.dictionaries(st.text(max_size=3), _JSON, max_size=2),
)


@st.composite
def _near_miss(draw, table):
    """A frame of a known kind: valid but for one field, left out or wrong.

    Fields are checked in order, so the others must be valid for a bad one
    late in the schema to be reached.
    """
    k = draw(st.sampled_from(sorted(table)))
    v = protocol.VERSION
    if not draw(st.integers(0, 19)):
        v = draw(st.sampled_from([0, True, 1.0, "1", None, []]))
    m = {"v": v, "kind": k}
    fields = [f.rstrip("?") for f in table[k]]
    bad = draw(st.sampled_from([*fields, None]))
    for f in fields:
        if f != bad:
            m[f] = draw(_field_strategy(k, f))
        elif draw(st.integers(0, 4)):
            m[f] = draw(_WRONG)
    if not draw(st.integers(0, 4)):
        m[draw(st.text(max_size=5))] = draw(_JSON)
    return m


def _parses_or_refuses(table, text):
    try:
        m = protocol.parse(table, text)
    except protocol.ProtocolError as e:
        assert str(e)
        return None
    assert isinstance(m, dict)
    assert m["v"] == protocol.VERSION and m["kind"] in table
    return m


def _nested(depth, leaf="0"):
    return '{"a":' * depth + leaf + "}" * depth


def test_every_field_has_a_strategy():
    for table in _TABLES.values():
        for k, s in table.items():
            for f in s:
                assert _field_strategy(k, f.rstrip("?")) is not None, (k, f)


@pytest.mark.parametrize("name", sorted(_TABLES))
@_BOUNDED
@given(data=st.data())
def test_valid_messages_round_trip(name, data):
    table = _TABLES[name]
    k, fields = data.draw(_message(table))
    t = protocol.make(table, k, **fields)
    t.encode("ascii")
    assert protocol.parse(table, t) == dict(v=protocol.VERSION, kind=k, **fields)


@pytest.mark.parametrize("name", sorted(_TABLES))
@_BOUNDED
@given(v=_JSON)
def test_any_json_value(name, v):
    _parses_or_refuses(_TABLES[name], json.dumps(v))


@pytest.mark.parametrize("name", sorted(_TABLES))
@_BOUNDED
@given(data=st.data())
def test_frames_with_arbitrary_fields(name, data):
    table = _TABLES[name]
    _parses_or_refuses(table, json.dumps(data.draw(_near_miss(table))))


@pytest.mark.parametrize("name", sorted(_TABLES))
@_BOUNDED
@given(t=st.text(st.characters(exclude_categories=())))
def test_any_text(name, t):
    _parses_or_refuses(_TABLES[name], t)


@_BOUNDED
@given(t=st.text(alphabet='[]{}":,0 ab\\', max_size=200))
def test_json_punctuation(t):
    _parses_or_refuses(protocol.TO_SUPERVISOR, t)


@_BOUNDED
@given(b=st.binary())
def test_bytes_are_refused(b):
    with pytest.raises(protocol.ProtocolError):
        protocol.parse(protocol.TO_SUPERVISOR, b)


@pytest.mark.parametrize("v", [None, 1, ["x"], bytearray(b"{}")])
def test_not_text_is_refused(v):
    with pytest.raises(protocol.ProtocolError):
        protocol.parse(protocol.TO_AGENT, v)


@_BOUNDED
@given(depth=st.integers(1, 5000))
def test_nesting_deeper_than_the_limit_is_refused(depth):
    # the frame itself is level 1, so data holds depth levels more
    t = (
        '{"v":1,"kind":"frame","run_id":"r-1","seq":0,"data":'
        + _nested(depth, "{}")
        + "}"
    )
    m = _parses_or_refuses(protocol.TO_SUPERVISOR, t)
    assert (m is not None) == (depth + 2 <= protocol.MAX_DEPTH)


@pytest.mark.parametrize("depth", [1100, 10_000, 100_000])
@pytest.mark.parametrize("open_,close", [("[", "]"), ('{"a":', "}")])
def test_deep_nesting_is_a_protocol_error(depth, open_, close):
    # issue 10: 1,100 deep dropped the agent's connection (RecursionError)
    with pytest.raises(protocol.ProtocolError, match="deeper"):
        protocol.parse(protocol.TO_SUPERVISOR, open_ * depth + "0" + close * depth)
    with pytest.raises(protocol.ProtocolError):
        # not even closed: still no RecursionError
        protocol.parse(protocol.TO_AGENT, open_ * depth)


def test_real_frames_are_within_the_depth():
    # a stats frame: frame, data, fields, one field's statistics
    d = {"plot": "table", "fields": {"u": {"count": 1, "min": 0, "max": 1}}}
    m = protocol.parse(
        protocol.TO_SUPERVISOR,
        protocol.make(protocol.TO_SUPERVISOR, "frame", run_id="r-1", seq=0, data=d),
    )
    assert m["data"] == d
    assert protocol.within_depth(m, 4) and not protocol.within_depth(m, 3)


def test_within_depth():
    assert protocol.within_depth(0, 0)
    assert not protocol.within_depth({}, 0)
    assert protocol.within_depth([[], {}], 2)
    assert not protocol.within_depth([[], {"a": [1]}], 2)
    v = []
    for _ in range(100_000):
        v = [v]
    assert not protocol.within_depth(v)


def test_huge_frames():
    n = protocol.MAX_MESSAGE_BYTES
    t = protocol.make(protocol.TO_SUPERVISOR, "log", run_id="r-1", offset=0, text="")
    big = t.replace('"text":""', '"text":"' + "x" * (n - len(t)) + '"')
    assert len(big) == n
    assert protocol.parse(protocol.TO_SUPERVISOR, big)["text"] == "x" * (n - len(t))
    with pytest.raises(protocol.ProtocolError, match="too large"):
        protocol.parse(protocol.TO_SUPERVISOR, big[:-2] + 'x"}')
    # fewer characters than the limit, more bytes
    with pytest.raises(protocol.ProtocolError, match="too large"):
        protocol.parse(protocol.TO_SUPERVISOR, "\u20ac" * (n // 3 + 1))
    with pytest.raises(protocol.ProtocolError, match="too large"):
        protocol.parse(protocol.TO_SUPERVISOR, "\ud800" * (n // 3 + 1))
    # many brackets, shallow: walked once, accepted
    d = {"x": [[0, 1]] * 200_000}
    m = protocol.make(protocol.TO_SUPERVISOR, "frame", run_id="r-1", seq=0, data=d)
    assert protocol.parse(protocol.TO_SUPERVISOR, m)["data"] == d


@pytest.mark.parametrize(
    "text",
    [
        # an unhashable end status raised TypeError
        '{"v":1,"kind":"exited","run_id":"r","status":[],"exit_code":0,"error":null}',
        '{"v":1,"kind":"exited","run_id":"r","status":{},"exit_code":0,"error":null}',
        # more digits than int() converts (ValueError, not JSONDecodeError)
        '{"v":1,"kind":"started","run_id":"r","pid":' + "9" * 5000 + "}",
        '"\\ud800"',
        "\ud800",
        '{"v":' + "[" * 30 + "]" * 30 + "}",
    ],
)
def test_odd_frames_are_protocol_errors(text):
    with pytest.raises(protocol.ProtocolError):
        protocol.parse(protocol.TO_SUPERVISOR, text)


# ---- job: the state machine

_STATUS = st.sampled_from(sorted(job.STATUSES))


def _history(n):
    return [{"run_id": f"old-{i}", "status": job.COMPLETED} for i in range(n)]


@_BOUNDED
@given(start=_STATUS, steps=st.lists(_STATUS, max_size=50))
def test_transitions_follow_the_table(start, steps):
    j = job.Job(dict(status=start, run_id="r-1"))
    for t in steps:
        before = j.to_dict()
        if t in job.TRANSITIONS[j.status]:
            j.transition(t)
            assert j.status == t
        else:
            with pytest.raises(job.IllegalTransition):
                j.transition(t)
            assert j.to_dict() == before, "a refused transition changes nothing"


_OPS = st.one_of(
    st.tuples(st.just("queue")),
    st.tuples(st.just("transition"), _STATUS),
    st.tuples(st.just("end"), st.sampled_from(sorted(job.ENDED))),
    st.tuples(
        st.just("waiting"),
        st.text(max_size=5),
        st.none() | st.fixed_dictionaries({"reason": st.text(max_size=5)}),
    ),
    st.tuples(st.just("cancel")),
)


def _apply(j, op, i):
    """Apply `op` (the i-th) to `j`, checking what its docstring says."""
    # deep: end() changes the history list in place
    before = copy.deepcopy(j.to_dict())
    k = op[0]
    if k == "cancel":
        j.canceling = True
        return
    if k == "waiting":
        changed = (op[1], op[2]) != (j.situation, j.wait)
        assert j.waiting(op[1], op[2]) == changed
        assert (j.situation, j.wait) == (op[1], op[2])
        return
    to = job.QUEUED if k == "queue" else op[1]
    if to not in job.TRANSITIONS[j.status]:
        with pytest.raises(job.IllegalTransition):
            if k == "queue":
                j.queue(f"r-{i}", cores=2, driver="local", kind="run", now=i)
            elif k == "end":
                j.end(to, now=i, exit_code=1, error="e")
            else:
                j.transition(to)
        assert j.to_dict() == before
        return
    if k == "transition":
        j.transition(to)
        assert j.to_dict() == {**before, "status": to}
    elif k == "queue":
        j.queue(f"r-{i}", cores=2, driver="local", kind="analysis", now=i)
        assert j.to_dict() == {
            **before,
            "status": job.QUEUED,
            "run_id": f"r-{i}",
            "situation": "queued",
            "wait": {"reason": "queued"},
            "canceling": False,
            "queue_position": None,
            "batch": None,
            "progress": 0.0,
            "cores": 2,
            "driver": "local",
            "host": None,
            "kind": "analysis",
            "queued_at": i,
            "started_at": None,
            "ended_at": None,
            "exit_code": None,
            "error": None,
            "result": None,
            "frames": 0,
        }
    else:
        j.end(to, now=i, exit_code=3, error="e", result={"r": i})
        h = before["history"]
        assert j.history[1:] == h[: job.MAX_HISTORY - 1]
        assert j.history[0] == {
            "run_id": before["run_id"],
            "status": to,
            "queued_at": before["queued_at"],
            "started_at": before["started_at"],
            "ended_at": i,
            "cores": before["cores"],
            "driver": before["driver"],
            "host": before["host"],
            "exit_code": 3,
            "error": "e",
            "result": {"r": i},
        }
        assert j.to_dict() == {
            **before,
            "status": to,
            "situation": "",
            "wait": None,
            "canceling": False,
            "queue_position": None,
            "progress": 1.0 if to == job.COMPLETED else before["progress"],
            "ended_at": i,
            "exit_code": 3,
            "error": "e",
            "result": {"r": i},
            "history": j.history,
        }


@settings(_BOUNDED, suppress_health_check=[HealthCheck.too_slow])
@given(
    start=_STATUS,
    history=st.integers(0, job.MAX_HISTORY),
    ops=st.lists(_OPS, max_size=60),
)
def test_queue_and_end_keep_the_job_consistent(start, history, ops):
    j = job.Job(dict(status=start, run_id="r-0", history=_history(history)))
    for i, op in enumerate(ops, 1):
        _apply(j, op, i)
        assert len(j.history) <= job.MAX_HISTORY
        # what a store writes reads back, but a cancel never survives it
        d = json.loads(json.dumps(j.to_dict()))
        assert job.Job(d).to_dict() == {**j.to_dict(), "canceling": False}


def test_end_trims_a_long_loaded_history():
    j = job.Job(
        dict(status=job.RUNNING, run_id="r-1", history=_history(job.MAX_HISTORY + 5))
    )
    j.end(job.CANCELED, now=1)
    assert len(j.history) == job.MAX_HISTORY
    assert j.history[0]["run_id"] == "r-1"
    assert j.history[1]["run_id"] == "old-0"
