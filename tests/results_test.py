"""agent/results.py: a run's declared result, reduced from its frames and rows."""

import math
import statistics

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent import results


def _field(name, field, reduce):
    return {"name": name, "field": field, "reduce": reduce}


def _column(name, table, column, reduce):
    return {"name": name, "table": table, "column": column, "reduce": reduce}


@pytest.mark.parametrize(
    "reduce,expect",
    [
        ("last", 2.0),
        ("first", 3),
        ("mean", 1.5),
        ("min", -1),
        ("max", 3),
        ("sum", 6.0),
        ("count", 4),
    ],
)
def test_each_reduce_of_a_list_in_the_last_frame(reduce, expect):
    r = results.Results([_field("v", "u", reduce)])
    r.add_frame({"u": [100, 200]})
    r.add_frame({"u": [3, -1, 2.0, 2.0]})
    # a frame without the field (a rows frame of another file) changes nothing
    r.add_frame({"plot": "rows"})
    v = r.values()["v"]
    assert v == expect and type(v) is type(expect)


@pytest.mark.parametrize("reduce", results.REDUCES)
def test_a_scalar_field_is_its_own_reduction(reduce):
    r = results.Results([_field("v", "secs", reduce)])
    r.add_frame({"secs": 0.25})
    assert r.values() == {"v": 1 if reduce == "count" else 0.25}


@pytest.mark.parametrize(
    "reduce,expect",
    [
        ("last", 5.0),
        ("first", 1.0),
        ("mean", 3.0),
        ("min", 1.0),
        ("max", 5.0),
        ("sum", 15.0),
        ("count", 5),
    ],
)
def test_each_reduce_over_every_row_of_a_table(reduce, expect):
    r = results.Results([_column("t", "thermo", "Temp", reduce)])
    r.add_rows(0, "thermo", ["Step", "Temp"], [[0, 1.0], [10, 2.0]])
    # another table and another column order: only thermo's Temp counts
    r.add_rows(0, "energies", ["Temp"], [[99.0]])
    r.add_rows(0, "thermo", ["Temp", "Step"], [[3.0, 20], [4.0, 30], [5.0, 40]])
    assert r.values() == {"t": expect}


def test_rows_of_files_merge_in_follow_order():
    spec = [_column(f"t_{x}", "thermo", "T", x) for x in results.REDUCES]
    r = results.Results(spec)
    r.add_rows(1, "thermo", ["T"], [[10], [20]])
    r.add_rows(0, "thermo", ["T"], [[1], [2]])
    v = r.values()
    assert v == {
        "t_last": 20,
        "t_first": 1,
        "t_mean": 8.25,
        "t_min": 1,
        "t_max": 20,
        "t_sum": 33,
        "t_count": 4,
    }


def test_restart_forgets_one_files_rows():
    r = results.Results([_column("n", "thermo", "T", "count")])
    r.add_rows(0, "thermo", ["T"], [[1], [2]])
    r.add_rows(1, "thermo", ["T"], [[5]])
    r.restart(0)
    r.add_rows(0, "thermo", ["T"], [[1], [2], [3]])
    assert r.values() == {"n": 4}


def test_no_data_is_none_and_count_zero():
    spec = [_field(f"f_{x}", "u", x) for x in results.REDUCES] + [
        _column(f"t_{x}", "thermo", "Temp", x) for x in results.REDUCES
    ]
    r = results.Results(spec)
    # the table without that column, short rows, a field of text
    r.add_rows(0, "thermo", ["Step"], [[1]])
    r.add_frame({"u": "text"})
    v = r.values()
    assert list(v) == [e["name"] for e in spec]
    assert v == {n: (0 if n.endswith("count") else None) for n in v}


def test_missing_table_and_short_rows():
    r = results.Results([_column("p", "thermo", "Press", "mean")])
    r.add_rows(0, "other", ["Press"], [[1.0]])
    assert r.values() == {"p": None}
    r.add_rows(0, "thermo", ["Step", "Press"], [[1], [2, 4.0]])
    assert r.values() == {"p": 4.0}


def test_nan_inf_none_text_and_booleans_are_passed_over():
    bad = [math.nan, math.inf, -math.inf, None, "3", True, [1]]
    r = results.Results(
        [
            _field("u_mean", "u", "mean"),
            _field("u_n", "u", "count"),
            _column("t_mean", "thermo", "T", "mean"),
            _column("t_max", "thermo", "T", "max"),
        ]
    )
    r.add_frame({"u": [*bad, 2.0, 4.0]})
    r.add_rows(0, "thermo", ["T"], [[x] for x in [*bad, 1.0, 3.0]])
    assert r.values() == {"u_mean": 3.0, "u_n": 2, "t_mean": 2.0, "t_max": 3.0}
    # a NaN field value is no value either
    r.add_frame({"u": math.nan})
    assert r.values()["u_mean"] is None


def test_what_overflows_is_none_and_big_ints_are_floats():
    r = results.Results([_column("s", "t", "x", "sum"), _column("m", "t", "x", "mean")])
    r.add_rows(0, "t", ["x"], [[1.7e308], [1.7e308]])
    assert r.values() == {"s": None, "m": None}
    r = results.Results([_column("s", "t", "x", "sum")])
    r.add_rows(0, "t", ["x"], [[2**62], [2**62]])
    assert r.values() == {"s": float(2**63)}
    r.add_rows(0, "t", ["x"], [[10**400]])
    assert r.values() == {"s": None}
    assert results.is_values(r.values())


def test_an_empty_spec_is_false_and_says_nothing():
    r = results.Results([])
    assert not r
    r.add_frame({"u": [1]})
    r.add_rows(0, "thermo", ["T"], [[1]])
    assert r.values() == {}


@settings(max_examples=200, deadline=None, database=None)
@given(
    chunks=st.lists(
        st.lists(
            st.floats(-1e6, 1e6, allow_nan=False) | st.integers(-1000, 1000),
            max_size=20,
        ),
        max_size=10,
    )
)
def test_running_reductions_match_the_whole_column(chunks):
    spec = [_column(x, "t", "c", x) for x in results.REDUCES]
    r = results.Results(spec)
    for c in chunks:
        r.add_rows(0, "t", ["c"], [[x] for x in c])
    values = [x for c in chunks for x in c]
    v = r.values()
    assert v["count"] == len(values)
    if not values:
        assert {k for k, x in v.items() if x is not None} == {"count"}
        return
    assert v["first"] == values[0] and v["last"] == values[-1]
    assert v["min"] == min(values) and v["max"] == max(values)
    assert v["sum"] == pytest.approx(math.fsum(values), abs=1e-6)
    assert v["mean"] == pytest.approx(statistics.fmean(values), abs=1e-6)
    assert results.is_values(v)


_OK = {"name": "u_max", "field": "u", "reduce": "max"}


@pytest.mark.parametrize(
    "spec,words",
    [
        ({"name": "x"}, "must be a list"),
        ([dict(_OK, name=f"x{i}") for i in range(17)], "more than 16"),
        (["u"], "must be an object"),
        ([dict(_OK, name="u-max")], "not a plain identifier"),
        ([dict(_OK, name="1u")], "not a plain identifier"),
        ([dict(_OK, name="x" * 65)], "not a plain identifier"),
        ([_OK, _OK], "declared twice"),
        ([dict(_OK, reduce="median")], "reduce must be one of"),
        ([dict(_OK, reduce=None)], "reduce must be one of"),
        ([dict(_OK, label="u")], "unknown keys label"),
        ([dict(_OK, table="t", column="c")], "a field, or a table and a column"),
        ([{"name": "x", "reduce": "max", "table": "t"}], "a table and a column"),
        ([{"name": "x", "reduce": "max"}], "a table and a column"),
        ([dict(_OK, field="")], "a table and a column"),
        ([dict(_OK, field=3)], "a table and a column"),
    ],
)
def test_check_refuses_bad_specs(spec, words):
    with pytest.raises(ValueError, match=words):
        results.check(spec)
    assert not results.is_spec(spec)


def test_check_takes_a_good_spec_and_the_catalogs_keys():
    spec = [_OK, _column("t", "thermo", "Temp", "mean")]
    results.check(spec)
    assert results.is_spec(spec)
    results.check([dict(_OK, label="final max", unit="K")], extra=("label", "unit"))
    assert results.is_spec([dict(_OK, name=f"x{i}") for i in range(16)])


# --- agent/outputs.py: rows into the result, on a re-attach too ----------------


def _spew_run(run_dir):
    from agent import run

    r = run.Run(
        dict(
            run_id="r-1",
            op_id=0,
            kind="run",
            code="spew",
            argv=["true"],
            params={},
            inputs={},
            run_dir=str(run_dir),
            cores=1,
            max_run_secs=60,
            follow=[
                {"file": "log.spew", "parser": "lammps_log"},
                {"file": "log.other", "parser": "lammps_log"},
            ],
            result=[
                _column("rows", "thermo", "Step", "count"),
                _column("steps", "thermo", "Step", "sum"),
            ],
        ),
        lambda r, kind: None,
    )
    r.dir = run_dir
    return r


def _read(run_dir, replay=False):
    from agent import outputs, reads

    r = _spew_run(run_dir)
    o = outputs.Outputs(r, None, reads.Journal(run_dir / "reads"))
    if replay:
        assert o.replay() > 0
    else:
        o._journal.create()
    o.end()
    o.close()
    return r


def _thermo_log(steps):
    return b"Step Temp E_pair\n" + b"".join(b"%d 1.5 -6.25\n" % i for i in steps)


async def test_a_replay_counts_the_rows_once(tmp_path, monkeypatch):
    """Re-attached, the reads of the agent before are made again: the rows
    of a file that did not change, and of one that changed past its first
    reads (read anew from its start), count once."""
    from agent import outputs

    # many small reads, so a change falls after some of them
    monkeypatch.setattr(outputs, "READ_BYTES", 256)
    log = tmp_path / "log.spew"
    log.write_bytes(_thermo_log(range(1, 201)))
    # read after log.spew, past its change: makes no frame, still counts
    (tmp_path / "log.other").write_bytes(_thermo_log(range(5000, 5010)))
    whole = {"rows": 210, "steps": sum(range(1, 201)) + 50045}
    r = _read(tmp_path)
    assert r.result() == whole
    assert len(r.frames) > 10
    r = _read(tmp_path, replay=True)
    assert r.result() == whole
    # the same first rows, then others: the replay's later reads differ
    log.write_bytes(_thermo_log([*range(1, 101), *range(1000, 1050)]))
    r = _read(tmp_path, replay=True)
    assert "log.spew changed while no agent" in r.log.text_from(0, 10**6)[1]
    assert r.result() == {"rows": 160, "steps": sum(range(1, 101)) + 51225 + 50045}


# --- end to end: real runs on the local driver ---------------------------------

_ENDED = ("completed", "error", "canceled", "timed_out")


def test_a_heat_run_reports_the_maximum_of_its_last_frame(server):
    codes = {c["name"]: c for c in server.api("GET", "/codes", expect=200).json()}
    assert codes["heat"]["result"] == [{"name": "u_max", "label": "final maximum of u"}]
    s = server.create("admin", "heat", steps=3000, nx=51, initial="pulse")
    server.run("admin", s["id"])
    j = server.wait_status("admin", s["id"], _ENDED, 60)
    assert j["status"] == "completed", j
    f = server.frames("admin", s["id"])
    assert len(f) > 2
    assert j["result"] == {"u_max": max(f[-1]["u"])}
    # the pulse diffuses: its maximum falls below the initial 1
    assert 0 < j["result"]["u_max"] < max(f[0]["u"]) == 1.0
    assert j["history"][0]["result"] == j["result"]


def test_a_sleep_run_reports_its_secs_and_history_keeps_each(server):
    s = server.create("admin", "sleep", secs=0.05)
    server.run("admin", s["id"])
    j = server.wait_status("admin", s["id"], _ENDED)
    assert j["status"] == "completed" and j["result"] == {"secs": 0.05}, j
    server.api(
        "PATCH", f"/simulations/{s['id']}", json={"params": {"secs": 0}}, expect=200
    )
    server.run("admin", s["id"])
    j = server.wait_status("admin", s["id"], _ENDED)
    assert j["result"] == {"secs": 0.0}
    assert [h["result"] for h in j["history"]] == [{"secs": 0.0}, {"secs": 0.05}]


def test_a_code_without_a_result_has_none(server):
    s = server.create("admin", "crash")
    server.run("admin", s["id"])
    j = server.wait_status("admin", s["id"], _ENDED)
    assert j["status"] == "error" and j["result"] is None
    assert j["history"][0]["result"] is None


def test_a_reattached_heat_run_reports_its_last_frame(server_factory):
    """The agent is SIGKILLed mid-run: the new one reads the run's output
    again, and the result is the last frame's, as if nothing happened."""
    import os
    import signal

    from conftest import wait_for

    server = server_factory(lost_grace_secs=300, local_orphan_secs=60)
    s = server.create("admin", "heat", steps=400000, nx=51)
    server.run("admin", s["id"])
    wait_for(lambda: server.job("admin", s["id"])["frames"] >= 5, 60, what="frames")
    (old,) = server.api("GET", "/admin/agents", expect=200).json()
    os.kill(old["pid"], signal.SIGKILL)
    j = server.wait_status("admin", s["id"], _ENDED, 120)
    assert j["status"] == "completed", j
    (new,) = server.api("GET", "/admin/agents", expect=200).json()
    assert new["pid"] != old["pid"]
    f = server.frames("admin", s["id"])
    assert f[-1]["step"] == 400000
    assert j["result"] == {"u_max": max(f[-1]["u"])}
