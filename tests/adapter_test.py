"""The code adapter contract of the catalog (`supervisor.adapter`): checked at load."""

import pytest

from supervisor import adapter, catalog

_PARAMS = [
    {"name": "steps", "type": "int", "default": 10, "min": 1, "max": 100},
    {"name": "t", "type": "float", "default": 1.5},
    {"name": "mode", "type": "str", "default": "a", "choices": ["a", "b"]},
    {"name": "note", "type": "str", "default": "x"},
]


def _entry(tmp_path, template=None, **doc):
    d = {"name": "c", "command": ["code", "-in", "{input}", "-n", "{cores}"]}
    if template is not None:
        p = tmp_path / "deck.in"
        p.write_text(template)
        d["deck"] = {"template": str(p), "file": "deck.in"}
    d.update(doc)
    return d


def _adapter(tmp_path, template=None, **doc):
    return adapter.Adapter("c", _entry(tmp_path, template, **doc), _PARAMS)


def test_a_deck_is_the_template_with_the_validated_parameters(tmp_path):
    a = _adapter(tmp_path, "run {steps} at {t} in {mode} {{braces}} }}\n")
    assert a.inputs({"steps": 7, "t": 0.1, "mode": "b"}) == {
        "deck.in": "run 7 at 0.1 in b {braces} }\n"
    }
    assert a.argv(["code", "-in", "{input}", "-n", "{cores}", "{python}"], 3) == [
        "code",
        "-in",
        "deck.in",
        "-n",
        "3",
        "{python}",
    ]


@pytest.mark.parametrize(
    "template, why",
    [
        ("run {nosuch}\n", "{nosuch}, which is not a parameter"),
        ("print {note}\n", "note is free text"),
        ("a lone { here\n", "lone '{'"),
        ("a lone } here\n", "lone '}'"),
    ],
)
def test_a_bad_template_stops_the_catalog_with_its_reason(tmp_path, template, why):
    with pytest.raises(adapter.AdapterError) as e:
        _adapter(tmp_path, template)
    assert why in str(e.value) and "code=c" in str(e.value)


@pytest.mark.parametrize(
    "doc, why",
    [
        ({"launch": "ssh"}, "launch must be"),
        ({"command": ["x", "{nosuch}"]}, "{nosuch} is unknown"),
        ({"follow": [{"file": "../log", "parser": "lammps_log"}]}, "not a plain name"),
        (
            {"follow": [{"file": "log", "parser": "nosuch"}]},
            "parser 'nosuch' is unknown",
        ),
        (
            {"follow": [{"file": "d", "parser": "lammps_dump", "max_atomz": 3}]},
            "options of parser lammps_dump",
        ),
        ({"progress": {"steps": "t"}}, "not an int parameter"),
        ({"plots": [{"kind": "pie", "table": "x"}]}, "a plot is"),
        ({"plots": [{"kind": "lines", "table": "x", "x": {"column": 1}}]}, "a plot is"),
        ({"plots": [{"kind": "scatter3d", "table": "x", "file": "d"}]}, "a plot is"),
    ],
)
def test_a_bad_entry_stops_the_catalog_with_its_reason(tmp_path, doc, why):
    with pytest.raises(adapter.AdapterError) as e:
        _adapter(tmp_path, "run {steps}\n", **doc)
    assert why in str(e.value), str(e.value)


def test_input_needs_a_deck(tmp_path):
    with pytest.raises(adapter.AdapterError) as e:
        _adapter(tmp_path)
    assert "{input} but no deck" in str(e.value)


def test_what_the_run_op_carries(tmp_path):
    a = _adapter(
        tmp_path,
        "run {steps}\n",
        launch="mpi",
        follow=[{"file": "log.x", "parser": "lammps_log"}],
        progress={"steps": "steps"},
    )
    assert a.op_fields({"steps": 40}) == {
        "launch": "mpi",
        "follow": [{"file": "log.x", "parser": "lammps_log"}],
        "steps": 40,
    }
    # a plain code carries nothing more
    p = adapter.Adapter("p", {"name": "p", "command": ["x"]}, _PARAMS)
    assert p.op_fields({}) == {} and p.inputs({}) == {} and p.plots == []


def test_the_shipped_catalog_loads_and_publishes_the_plots():
    c = catalog.Catalog(test_codes=True)
    d = {x["name"]: x for x in c.to_list()}
    assert [p["kind"] for p in d["lammps"]["plots"]] == ["lines", "scatter3d"]
    assert d["heat"]["plots"] == []


def test_a_deck_of_several_files_the_first_is_the_input(tmp_path):
    (tmp_path / "a.mdp").write_text("nsteps = {steps}\n")
    (tmp_path / "b.top").write_text("[ system ]\nwater {{not a field}}\n")
    d = {
        "name": "g",
        "command": ["gmx", "-f", "{input}"],
        "deck": [
            {"template": str(tmp_path / "a.mdp"), "file": "md.mdp"},
            {"template": str(tmp_path / "b.top"), "file": "topol.top"},
        ],
    }
    a = adapter.Adapter("g", d, _PARAMS)
    assert a.argv(d["command"], 1) == ["gmx", "-f", "md.mdp"]
    assert a.inputs({"steps": 5}) == {
        "md.mdp": "nsteps = 5\n",
        "topol.top": "[ system ]\nwater {not a field}\n",
    }
    d["deck"].append(dict(d["deck"][0]))
    with pytest.raises(adapter.AdapterError) as e:
        adapter.Adapter("g", d, _PARAMS)
    assert "md.mdp is twice" in str(e.value)


_RESULT = {"name": "u_max", "label": "final max", "field": "u", "reduce": "max"}


@pytest.mark.parametrize(
    "result, why",
    [
        ({"name": "x"}, "result must be a list"),
        ([dict(_RESULT, name=f"r{i}") for i in range(17)], "more than 16"),
        ([_RESULT, _RESULT], "result u_max is declared twice"),
        ([dict(_RESULT, name="u max")], "is not a plain identifier"),
        ([dict(_RESULT, reduce="median")], "reduce must be one of"),
        ([dict(_RESULT, table="thermo", column="T")], "a field, or a table"),
        ([{"name": "t", "label": "T", "table": "x", "reduce": "mean"}], "a column"),
        ([dict(_RESULT, colour="red")], "unknown keys colour"),
        ([{k: v for k, v in _RESULT.items() if k != "label"}], "has no label"),
        ([dict(_RESULT, unit=3)], "unit is not text"),
    ],
)
def test_a_bad_result_stops_the_catalog_with_its_reason(tmp_path, result, why):
    with pytest.raises(adapter.AdapterError) as e:
        _adapter(tmp_path, "run {steps}\n", result=result)
    assert why in str(e.value) and "code=c" in str(e.value), str(e.value)


def test_a_result_is_in_the_catalog_and_the_run_op(tmp_path):
    t = {"name": "t", "label": "mean T", "unit": "K", "table": "thermo"}
    t.update(column="Temp", reduce="mean")
    a = _adapter(tmp_path, "run {steps}\n", result=[_RESULT, t])
    assert a.result == [
        {"name": "u_max", "label": "final max"},
        {"name": "t", "label": "mean T", "unit": "K"},
    ]
    # the agent needs no labels
    assert a.op_fields({"steps": 1})["result"] == [
        {"name": "u_max", "field": "u", "reduce": "max"},
        {"name": "t", "table": "thermo", "column": "Temp", "reduce": "mean"},
    ]


def test_the_shipped_results_name_what_the_codes_make():
    c = catalog.Catalog(test_codes=True)
    d = {x["name"]: x for x in c.to_list()}
    assert d["heat"]["result"] == [{"name": "u_max", "label": "final maximum of u"}]
    assert [r["name"] for r in d["lammps"]["result"]] == [
        "temp_mean",
        "press_mean",
        "etotal_final",
    ]
    assert "result" not in d["crash"]
    assert "result" not in c.get("crash").adapter.op_fields({})
    for code in c.codes.values():
        # a table result's column is one the code's plots draw of that table
        # (a typo of a column name would be null in every run)
        drawn = {
            (p["table"], a["column"])
            for p in code.adapter.plots
            if "table" in p
            for a in [p["x"], *p["y"]]
        }
        for r in code.adapter.op_fields(code.check_params({})).get("result", []):
            # (spew, a test code, draws nothing)
            if "table" in r and code.adapter.plots:
                assert (r["table"], r["column"]) in drawn, (code.name, r)
