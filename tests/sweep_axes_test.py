"""Tests of supervisor/sweep_axes.py: the members a sweep's axes make.

Pure and in-process, over the real catalog (with its test codes). Table
cases for every rule and every refusal; hypothesis properties that a grid
has the product of its axes' lengths of members, each a complete valid
parameter set in the documented order, and that a zip keeps its axes' order.
"""

import itertools
import math
import tracemalloc

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from supervisor import catalog, errors, sweep_axes

_CATALOG = catalog.Catalog(test_codes=True)
_HEAT = _CATALOG.get("heat")
_SLEEP = _CATALOG.get("sleep")

_BOUNDED = settings(max_examples=200, deadline=None, database=None)


def _code(name):
    return _CATALOG.get(name)


def _refused(code, axes, error, params=None, **kwargs):
    with pytest.raises(errors.BadInput) as e:
        sweep_axes.expand(code, {} if params is None else params, axes, **kwargs)
    assert e.value.code == error
    assert e.value.status == 400
    return e.value.message


def _ten_params():
    """A code of ten int parameters (no catalog code has so many)."""
    return catalog.Code(
        {
            "name": "ten",
            "command": ["true"],
            "params": [
                {"name": f"p{i}", "type": "int", "default": 0, "min": 0, "max": 1000}
                for i in range(10)
            ],
        }
    )


def test_list_axis():
    m = sweep_axes.expand(_SLEEP, {}, {"secs": [0, 0.5, 2]})
    assert m == [{"secs": 0.0}, {"secs": 0.5}, {"secs": 2.0}]
    assert all(isinstance(x["secs"], float) for x in m)


def test_list_may_repeat_a_value():
    assert sweep_axes.expand(_SLEEP, None, {"secs": [1, 1]}) == [{"secs": 1.0}] * 2


def test_base_params_and_defaults_fill_each_member():
    m = sweep_axes.expand(_HEAT, {"nx": 50}, {"steps": [10, 20]})
    d = _HEAT.check_params({})
    assert m == [d | {"nx": 50, "steps": 10}, d | {"nx": 50, "steps": 20}]


def test_axis_overrides_base():
    m = sweep_axes.expand(_HEAT, {"steps": 5, "nx": 7}, {"steps": [10]})
    assert [(x["steps"], x["nx"]) for x in m] == [(10, 7)]


@pytest.mark.parametrize(
    ("params", "error"),
    [({"steps": 0}, "bad_param"), ({"bogus": 1}, "unknown_param"), ([], "bad_params")],
)
def test_bad_base_params_refused_before_axes(params, error):
    # the axes are bad too: the base parameters are checked first
    m = _refused(_HEAT, {"nope": []}, error, params=params)
    assert "member" not in m


def test_int_list_value_as_the_catalog_takes_it():
    m = sweep_axes.expand(_HEAT, {}, {"steps": [3.0]})
    assert m[0]["steps"] == 3 and isinstance(m[0]["steps"], int)


def test_linear_range():
    v = sweep_axes.axis_values({"start": 0, "stop": 1, "num": 11})
    assert v == pytest.approx([i / 10 for i in range(11)], abs=1e-15)
    assert (v[0], v[-1]) == (0.0, 1.0)
    assert all(isinstance(x, float) for x in v)
    # the default scale is linear
    assert v == sweep_axes.axis_values(
        {"start": 0, "stop": 1, "num": 11, "scale": "linear"}
    )


def test_log_range():
    v = sweep_axes.axis_values({"start": 1, "stop": 1000, "num": 4, "scale": "log"})
    assert v == pytest.approx([1, 10, 100, 1000], rel=1e-12)
    assert (v[0], v[-1]) == (1.0, 1000.0)
    v = sweep_axes.axis_values({"start": 0.001, "stop": 1, "num": 7, "scale": "log"})
    assert v == pytest.approx([10 ** (-3 + i / 2) for i in range(7)], rel=1e-12)


def test_descending_ranges():
    assert sweep_axes.axis_values({"start": 10, "stop": 0, "num": 3}) == [10, 5, 0]
    v = sweep_axes.axis_values({"start": 1000, "stop": 1, "num": 4, "scale": "log"})
    assert v == pytest.approx([1000, 100, 10, 1], rel=1e-12)


@pytest.mark.parametrize("scale", ["linear", "log"])
def test_range_of_one_is_its_start(scale):
    r = {"start": 2, "stop": 50, "num": 1, "scale": scale}
    assert sweep_axes.axis_values(r) == [2.0]
    assert sweep_axes.axis_values(r | {"num": 1.0}) == [2.0]


def test_range_never_leaves_its_ends():
    # 10 ** log10(x) is a little over x: a log range of one value stays at it
    x = 8.474352625998632
    r = {"start": x, "stop": x, "num": 3, "scale": "log"}
    assert sweep_axes.axis_values(r) == [x, x, x]
    m = sweep_axes.expand(_code("burn"), {}, {"secs": r | {"start": 1.0}})
    assert all(1.0 <= v["secs"] <= x for v in m)


def test_range_near_the_largest_floats():
    v = sweep_axes.axis_values({"start": -1e308, "stop": 1e308, "num": 3})
    assert v == [-1e308, 0.0, 1e308]


def test_range_on_members():
    m = sweep_axes.expand(
        _HEAT, {}, {"alpha": {"start": 0.01, "stop": 1, "num": 3, "scale": "log"}}
    )
    assert [x["alpha"] for x in m] == pytest.approx([0.01, 0.1, 1], rel=1e-12)


def test_int_range_rounded():
    m = sweep_axes.expand(_HEAT, {}, {"steps": {"start": 1, "stop": 10, "num": 4}})
    assert [x["steps"] for x in m] == [1, 4, 7, 10]
    assert all(isinstance(x["steps"], int) for x in m)
    # halves to even, as Python's round
    m = sweep_axes.expand(_HEAT, {}, {"steps": {"start": 1, "stop": 6, "num": 3}})
    assert [x["steps"] for x in m] == [1, 4, 6]
    r = {"start": 1, "stop": 1000, "num": 4, "scale": "log"}
    assert sweep_axes.axis_values(r, integer=True) == [1, 10, 100, 1000]
    # fractional ends are rounded too (and each member checked)
    r = {"start": 4.6, "stop": 7.4, "num": 3}
    assert sweep_axes.axis_values(r, integer=True) == [5, 6, 7]


@pytest.mark.parametrize(
    ("r", "repeated"),
    [
        ({"start": 1, "stop": 2, "num": 4}, "1"),
        ({"start": 5, "stop": 5, "num": 2}, "5"),
        ({"start": 1, "stop": 3, "num": 10, "scale": "log"}, "1"),
    ],
)
def test_int_range_that_repeats_a_value_refused(r, repeated):
    m = _refused(_HEAT, {"steps": r}, "bad_axes")
    assert m.startswith("axis steps:")
    assert f"repeats {repeated}" in m
    # a float parameter takes the same range (no rounding)
    sweep_axes.expand(_SLEEP, {}, {"secs": r})


def test_grid_first_axis_slowest():
    m = sweep_axes.expand(_HEAT, {}, {"steps": [1, 2], "nx": [5, 6, 7]})
    assert [(x["steps"], x["nx"]) for x in m] == [
        (1, 5),
        (1, 6),
        (1, 7),
        (2, 5),
        (2, 6),
        (2, 7),
    ]
    m = sweep_axes.expand(_HEAT, {}, {"nx": [5, 6, 7], "steps": [1, 2]})
    assert [(x["nx"], x["steps"]) for x in m] == list(
        itertools.product([5, 6, 7], [1, 2])
    )
    assert m == sweep_axes.expand(
        _HEAT, {}, {"nx": [5, 6, 7], "steps": [1, 2]}, combine="grid"
    )


def test_zip():
    m = sweep_axes.expand(
        _HEAT,
        {},
        {"steps": [3, 1, 2], "nx": {"start": 5, "stop": 7, "num": 3}},
        combine="zip",
    )
    assert [(x["steps"], x["nx"]) for x in m] == [(3, 5), (1, 6), (2, 7)]


def test_zip_length_mismatch_names_the_lengths():
    m = _refused(
        _HEAT,
        {"steps": [1, 2, 3], "nx": [5, 6], "alpha": {"start": 1, "stop": 2, "num": 3}},
        "bad_axes",
        combine="zip",
    )
    assert "steps has 3" in m and "nx has 2" in m and "alpha has 3" in m
    # the same axes make a grid
    assert len(sweep_axes.expand(_HEAT, {}, {"steps": [1, 2, 3], "nx": [5, 6]})) == 6


@pytest.mark.parametrize("combine", ["product", "", None, 1, "ZIP"])
def test_bad_combine(combine):
    m = _refused(_HEAT, {"steps": [1]}, "bad_axes", combine=combine)
    assert "grid" in m and "zip" in m


def test_too_many_members_refused_before_anything_is_made():
    code = _ten_params()
    axes = {f"p{i}": list(range(100)) for i in range(10)}
    tracemalloc.start()
    try:
        m = _refused(code, axes, "too_many_members")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert str(100**10) in m and str(sweep_axes.DEFAULT_MAX_MEMBERS) in m
    # nothing of 10**20 members (nor of one of them per value) was built
    assert peak < 200_000


def test_too_many_members_of_a_range_never_made():
    tracemalloc.start()
    try:
        m = _refused(
            _SLEEP, {"secs": {"start": 0, "stop": 1, "num": 10**15}}, "too_many_members"
        )
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert str(10**15) in m
    assert peak < 200_000


def test_max_members_is_the_limit():
    axes = {"steps": [1, 2], "nx": [5, 6, 7]}
    assert len(sweep_axes.expand(_HEAT, {}, axes, max_members=6)) == 6
    m = _refused(_HEAT, axes, "too_many_members", max_members=5)
    assert "6 members" in m and "limit of 5" in m
    # a zip has as many members as one axis has values
    z = {"steps": [1, 2, 3], "nx": [5, 6, 7]}
    assert len(sweep_axes.expand(_HEAT, {}, z, combine="zip", max_members=3)) == 3
    _refused(_HEAT, z, "too_many_members", combine="zip", max_members=2)


def test_one_bad_member_refuses_the_sweep_naming_it():
    m = _refused(_HEAT, {"steps": [1, 2, -1], "nx": [5, 6]}, "bad_param")
    assert m == "member 4 (steps=-1, nx=5): Time steps (steps) must be at least 1"
    m = _refused(_HEAT, {"initial": ["pulse", "bogus"]}, "bad_param")
    assert m.startswith('member 1 (initial="bogus"): Initial profile (initial) must')
    m = _refused(_HEAT, {"steps": [1, True]}, "bad_param")
    assert m.startswith("member 1 (steps=true): ")
    m = _refused(_HEAT, {"nx": {"start": 400, "stop": 600, "num": 3}}, "bad_param")
    assert m == "member 2 (nx=600): Grid points (nx) must be at most 500"


def test_bad_member_in_a_zip():
    m = _refused(
        _HEAT, {"steps": [1, 2, 3], "nx": [5, 4, 6]}, "bad_param", combine="zip"
    )
    assert m.startswith("member 1 (steps=2, nx=4): Grid points (nx)")


def test_long_value_cut_in_the_message():
    m = _refused(_code("crash"), {"message": ["ok", "x" * 2000]}, "bad_param")
    head = m.split(": ", 1)[0]
    assert head.startswith('member 1 (message="xxx') and head.endswith("...)")
    assert len(head) < 70


def test_unknown_axis_param():
    m = _refused(_HEAT, {"steps": [1], "bogus": [1], "zz": [2]}, "unknown_param")
    assert "bogus, zz" in m and "heat" in m


@pytest.mark.parametrize(
    ("code", "name"),
    [("heat", "initial"), ("checksum", "data"), ("stats", "source")],
)
def test_range_only_for_numbers(code, name):
    m = _refused(_code(code), {name: {"start": 1, "stop": 2, "num": 2}}, "bad_axes")
    assert m.startswith(f"axis {name}: a range is only for a number parameter")


def test_file_and_simulation_axes_are_lists_the_catalog_checks():
    c = _code("checksum")
    m = sweep_axes.expand(c, {}, {"data": ["a.bin", "b.dat"], "secs": [0]})
    assert [x["data"] for x in m] == ["a.bin", "b.dat"]
    m = _refused(c, {"data": ["a.bin", "a.txt"]}, "bad_param")
    assert m.startswith('member 1 (data="a.txt"): ')
    s = _code("stats")
    m = sweep_axes.expand(s, {}, {"source": ["s1", "s2"]})
    assert [x["source"] for x in m] == ["s1", "s2"]
    _refused(s, {"source": ["s1", 3]}, "bad_param")


@pytest.mark.parametrize(
    ("axes", "says"),
    [
        ([["secs", [1]]], "axes must be an object"),
        (None, "axes must be an object"),
        ("secs", "axes must be an object"),
        (3, "axes must be an object"),
        ({}, "at least one"),
        ({1: [1]}, "named by a parameter"),
        ({"secs": None}, "must be a list of values or"),
        ({"secs": "1"}, "must be a list of values or"),
        ({"secs": 1}, "must be a list of values or"),
        ({"secs": {1, 2}}, "must be a list of values or"),
        ({"secs": []}, "no values"),
        ({"secs": [1, math.nan]}, "value 1 is not a finite number"),
        ({"secs": [math.inf]}, "value 0 is not a finite number"),
        ({"secs": {"start": 0, "stop": 1}}, "needs num"),
        ({"secs": {"num": 2}}, "needs start, stop"),
        ({"secs": {"start": 0, "stop": 1, "num": 2, "step": 1}}, "no field step"),
        ({"secs": {"start": 0, "stop": 1, "num": 2, 7: 1}}, "no field 7"),
        ({"secs": {"start": True, "stop": 1, "num": 2}}, "start must be a number"),
        ({"secs": {"start": 0, "stop": "1", "num": 2}}, "stop must be a number"),
        ({"secs": {"start": 0, "stop": None, "num": 2}}, "stop must be a number"),
        ({"secs": {"start": math.nan, "stop": 1, "num": 2}}, "start must be a finite"),
        ({"secs": {"start": 0, "stop": math.inf, "num": 2}}, "stop must be a finite"),
        ({"secs": {"start": -math.inf, "stop": 1, "num": 2}}, "start must be a finite"),
        ({"secs": {"start": 10**400, "stop": 1, "num": 2}}, "start must be a finite"),
        ({"secs": {"start": 0, "stop": 1, "num": 0}}, "num must be a whole number"),
        ({"secs": {"start": 0, "stop": 1, "num": -3}}, "num must be a whole number"),
        ({"secs": {"start": 0, "stop": 1, "num": 2.5}}, "num must be a whole number"),
        ({"secs": {"start": 0, "stop": 1, "num": True}}, "num must be a whole number"),
        ({"secs": {"start": 0, "stop": 1, "num": "2"}}, "num must be a whole number"),
        ({"secs": {"start": 0, "stop": 1, "num": math.nan}}, "num must be a whole"),
        ({"secs": {"start": 1, "stop": 2, "num": 2, "scale": "ln"}}, "scale must be"),
        ({"secs": {"start": 1, "stop": 2, "num": 2, "scale": None}}, "scale must be"),
        ({"secs": {"start": 0, "stop": 2, "num": 2, "scale": "log"}}, "above 0"),
        ({"secs": {"start": 1, "stop": -2, "num": 2, "scale": "log"}}, "above 0"),
    ],
)
def test_bad_axes_shape(axes, says):
    m = _refused(_SLEEP, axes, "bad_axes")
    assert says in m
    if isinstance(axes, dict) and "secs" in axes:
        assert m.startswith("axis secs: ")
    with pytest.raises(errors.BadInput) as e:
        sweep_axes.describe(axes)
    assert e.value.code == "bad_axes" and says in e.value.message


def test_axis_values_helper():
    assert sweep_axes.axis_values(["a", 1, None]) == ["a", 1, None]
    with pytest.raises(errors.BadInput) as e:
        sweep_axes.axis_values({"start": 0, "stop": 1, "num": 0})
    assert e.value.message.startswith("axis: num")
    with pytest.raises(errors.BadInput) as e:
        sweep_axes.axis_values([], name="secs")
    assert e.value.message == "axis secs: no values"
    with pytest.raises(errors.BadInput) as e:
        sweep_axes.axis_values({"start": 0, "stop": 1, "num": 10**12}, max_values=100)
    assert e.value.code == "too_many_members"
    assert str(10**12) in e.value.message and "100" in e.value.message
    assert len(sweep_axes.axis_values([0] * 100, max_values=100)) == 100


def test_describe():
    axes = {
        "steps": {"start": 1, "stop": 1000, "num": 4, "scale": "log"},
        "initial": ["step", "sine"],
    }
    assert sweep_axes.describe(axes, _HEAT) == [
        {"name": "steps", "values": [1, 10, 100, 1000]},
        {"name": "initial", "values": ["step", "sine"]},
    ]
    d = sweep_axes.describe(axes)
    assert [x["name"] for x in d] == ["steps", "initial"]
    assert d[0]["values"] == pytest.approx([1.0, 10.0, 100.0, 1000.0], rel=1e-12)
    with pytest.raises(errors.BadInput) as e:
        sweep_axes.describe({"bogus": [1]}, _HEAT)
    assert e.value.code == "unknown_param"
    with pytest.raises(errors.BadInput) as e:
        sweep_axes.describe({"steps": {"start": 1, "stop": 2, "num": 3}}, _HEAT)
    assert e.value.code == "bad_axes"
    with pytest.raises(errors.BadInput) as e:
        sweep_axes.describe({"steps": list(range(11))}, max_members=10)
    assert e.value.code == "too_many_members"


# --- properties ----------------------------------------------------------------

#: heat's parameters: valid values of each, and ranges where a range is safe
_HEAT_VALUES = {
    "steps": st.integers(1, 5_000_000),
    "nx": st.integers(5, 500),
    "alpha": st.floats(0.0001, 10.0),
    "initial": st.sampled_from(["pulse", "step", "sine"]),
}


@st.composite
def _heat_axis(draw, name, length=None):
    """A valid axis of heat's `name`: a list, or (alpha) a range."""
    n = length or draw(st.integers(1, 4))
    if name == "alpha" and draw(st.booleans()):
        return {
            "start": draw(_HEAT_VALUES["alpha"]),
            "stop": draw(_HEAT_VALUES["alpha"]),
            "num": n,
            "scale": draw(st.sampled_from(["linear", "log"])),
        }
    return draw(st.lists(_HEAT_VALUES[name], min_size=n, max_size=n))


@st.composite
def _heat_axes(draw, same_length=False):
    names = draw(st.permutations(list(_HEAT_VALUES)))
    names = names[: draw(st.integers(1, len(names)))]
    n = draw(st.integers(1, 5)) if same_length else None
    return {x: draw(_heat_axis(x, n)) for x in names}


def _base():
    return st.fixed_dictionaries({}, optional={k: v for k, v in _HEAT_VALUES.items()})


def _checked(name, v):
    """`v` as the catalog takes it for heat's parameter `name`."""
    return _HEAT.check_params({name: v})[name]


@_BOUNDED
@given(_heat_axes(), _base())
def test_grid_is_the_product_of_valid_complete_members(axes, params):
    m = sweep_axes.expand(_HEAT, params, axes)
    d = sweep_axes.describe(axes, _HEAT)
    assert len(m) == math.prod(len(x["values"]) for x in d)
    base = _HEAT.check_params(params)
    rows = itertools.product(*(x["values"] for x in d))
    for member, row in zip(m, rows):
        assert set(member) == set(base)
        # complete and valid: the catalog takes it back unchanged
        assert _HEAT.check_params(member) == member
        assert member == base | {n: _checked(n, v) for n, v in zip(axes, row)}


@_BOUNDED
@given(_heat_axes(same_length=True))
def test_zip_keeps_each_axis_in_order(axes):
    m = sweep_axes.expand(_HEAT, {}, axes, combine="zip")
    d = sweep_axes.describe(axes, _HEAT)
    assert len(m) == len(d[0]["values"])
    for x in d:
        got = [member[x["name"]] for member in m]
        assert got == [_checked(x["name"], v) for v in x["values"]]
