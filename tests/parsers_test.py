"""The output parsers (`agent.parsers`) on real output of LAMMPS and GROMACS.

The samples in tests/data/lammps and tests/data/gromacs were written by the
codes themselves (their READMEs say how); the numbers asserted here are read
off those files. Pure and fast: no code is run.
"""

import json
import math
import pathlib
import tracemalloc

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.parsers import PARSERS
from agent.parsers.base import MAX_LINE_BYTES
from supervisor import catalog

pytestmark = pytest.mark.timeout(60)

ROOT = pathlib.Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"
LAMMPS = DATA / "lammps"
GROMACS = DATA / "gromacs"

THERMO = ["Step", "Temp", "E_pair", "E_mol", "TotEng", "Press"]
ENERGIES = [
    "Step",
    "Time",
    "LJ (SR)",
    "Coulomb (SR)",
    "Coul. recip.",
    "Potential",
    "Kinetic En.",
    "Total Energy",
    "Conserved En.",
    "Temperature",
    "Pressure (bar)",
]
#: the lattice cell of fcc at reduced density 0.8442 is 1.6795962 (the logs
#: say so): its atoms sit on multiples of half of it
HALF_CELL = 1.6795961913825074 / 2


def sample(path):
    return path.read_bytes()


def parse(name, data, pieces=None, **options):
    """All records of data fed at once (or in the given pieces), then finish."""
    p = PARSERS[name](**options)
    rv = []
    for x in pieces if pieces is not None else [data]:
        rv += p.feed(x)
    return rv + p.finish()


def of(records, kind):
    return [r for r in records if r["kind"] == kind]


def tables(records):
    """{run: (columns, rows)} of the rows records."""
    rv = {}
    for r in of(records, "rows"):
        c, rows = rv.setdefault(r["run"], (r["columns"], []))
        assert r["columns"] == c
        rows.extend(r["rows"])
    return rv


def normalized(records):
    """What must not depend on where the bytes were cut: the records with
    the rows of one table joined, and the last step."""
    rv = []
    step = None
    for r in records:
        if r["kind"] == "step":
            step = r["step"]
            continue
        o = rv[-1] if rv else None
        if r["kind"] == "rows" and o and o["kind"] == "rows" and o["run"] == r["run"]:
            assert (o["table"], o["columns"]) == (r["table"], r["columns"])
            o["rows"] = o["rows"] + r["rows"]
        else:
            rv.append(dict(r))
    return rv, step


def cut(data, points):
    points = sorted({p % (len(data) + 1) for p in points})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)])]


# --- LAMMPS log ----------------------------------------------------------------


def test_template_renders_the_sample_deck():
    # the catalog's adapter renders the deck the samples were made with
    c = catalog.Catalog().get("lammps")
    p = dict(temperature=3.0, density=0.8442, box=10, steps=500)
    deck = c.adapter.inputs(c.check_params(dict(p, thermo_every=50, dump_every=100)))

    def commands(text):
        return [x for x in text.splitlines() if x and not x.startswith("#")]

    assert commands(deck["in.melt"]) == commands((LAMMPS / "melt.in").read_text())


@pytest.mark.parametrize("log", ["melt.log", "melt_2ranks.log"])
def test_thermo_table_of_the_melt(log):
    r = parse("lammps_log", sample(LAMMPS / log))
    assert list(tables(r)) == [1]
    columns, rows = tables(r)[1]
    assert columns == THERMO
    # 500 steps, thermo every 50: steps 0, 50, ..., 500
    assert [x[0] for x in rows] == list(range(0, 501, 50))
    # velocities were drawn at the asked temperature
    assert rows[0][1] == 3.0
    assert rows[0] == [0, 3, -6.7733681, 0, -2.2744931, -3.7033504]
    assert rows[-1] == [500, 1.6537895, -4.7631505, 0, -2.2830864, 5.775773]
    assert of(r, "step")[-1] == {"kind": "step", "step": 500}
    assert of(r, "error") == of(r, "warning") == of(r, "note") == []


def test_one_and_two_ranks_give_the_same_thermo():
    # "velocity ... loop geom" makes the run independent of the rank count
    a = tables(parse("lammps_log", sample(LAMMPS / "melt.log")))
    b = tables(parse("lammps_log", sample(LAMMPS / "melt_2ranks.log")))
    assert a == b


def test_two_runs_give_two_tables():
    r = parse("lammps_log", sample(LAMMPS / "two_runs.log"))
    t = tables(r)
    assert list(t) == [1, 2]
    assert t[1][0] == THERMO
    assert t[2][0] == [
        "Step",
        "Time",
        "Temp",
        "PotEng",
        "KinEng",
        "TotEng",
        "Press",
        "Volume",
    ]
    assert [x[0] for x in t[1][1]] == [0, 20, 40, 60, 80, 100]
    # the second run starts where the first ended: its first row is step 100 again
    assert [x[0] for x in t[2][1]] == [100, 125, 150, 175, 200, 225, 250]
    assert t[2][1][0][:3] == [100, 0.5, 1.0982258]
    assert t[1][1][-1][1] == t[2][1][0][2]
    # the warning of the new thermo_style sits between the tables
    kinds = [x["kind"] for x in r if x["kind"] != "step"]
    assert kinds == ["rows", "warning", "rows"]
    assert of(r, "warning")[0]["message"] == (
        "WARNING: New thermo_style command, previous thermo_modify settings"
        " will be lost (src/output.cpp:689)"
    )
    assert of(r, "step")[-1]["step"] == 250


def test_multi_style_blocks_are_rows():
    r = parse("lammps_log", sample(LAMMPS / "triclinic.log"))
    columns, rows = tables(r)[1]
    assert columns[:5] == ["Step", "CPU", "TotEng", "KinEng", "Temp"]
    assert columns[-1] == "Press" and len(columns) == 14
    assert [x[0] for x in rows] == [0, 50, 100]
    assert rows[0][:5] == [0, 0.0, -5.2873, 1.4861, 1.0]
    assert rows[2][-1] == -1.6807


@pytest.mark.parametrize(
    "log, message",
    [
        (
            "unknown_command.log",
            "ERROR: Unknown command: frobnicate      all 1.0 (src/input.cpp:274)",
        ),
        ("bad_value.log", "ERROR: Illegal thermo command (src/output.cpp:669)"),
        (
            "missing_file.log",
            "ERROR: Cannot open file no-such.data: No such file or directory"
            " (src/read_data.cpp:312)",
        ),
        (
            "missing_include_2ranks.log",
            "ERROR on proc 0: Cannot open input script no-such.in: No such file or directory"
            " (src/input.cpp:974)",
        ),
    ],
)
def test_error_lines_as_written(log, message):
    r = parse("lammps_log", sample(LAMMPS / log))
    assert r == [{"kind": "error", "message": message}]


def test_lost_atoms_error_ends_the_table():
    r = parse("lammps_log", sample(LAMMPS / "lost_atoms.log"))
    assert [x["kind"] for x in r] == ["rows", "error", "step"]
    assert r[0]["rows"] == [[0, 30, -5.0312353, 0, 39.792983, 20.710639]]
    assert (
        r[1]["message"]
        == "ERROR: Lost atoms: original 256 current 189 (src/thermo.cpp:439)"
    )


def test_warning_among_rows():
    r = parse("lammps_log", sample(LAMMPS / "lost_warn.log"))
    assert [x["kind"] for x in r] == ["rows", "warning", "rows", "step"]
    assert (
        r[1]["message"]
        == "WARNING: Lost atoms: original 256 current 189 (src/thermo.cpp:445)"
    )
    _, rows = tables(r)[1]
    assert [x[0] for x in rows] == [0, 10, 20, 30, 40, 50, 60]


def test_a_row_cut_short_waits_and_finish_takes_it_only_whole():
    data = sample(LAMMPS / "melt.log")
    row = (
        b"     250    1.6645597   -4.7774327            0   -2.2812174    5.7526089 \n"
    )
    i = data.index(row)
    # cut inside the last number: a number cut short is no row
    p = PARSERS["lammps_log"]()
    r = p.feed(data[: i + len(row) - 4])
    assert tables(r)[1][1][-1][0] == 200
    assert r[-1] == {"kind": "step", "step": 200}
    assert p.finish() == []
    # cut before the newline only: the row is whole, given at finish
    p = PARSERS["lammps_log"]()
    assert tables(p.feed(data[: i + len(row) - 1]))[1][1][-1][0] == 200
    r = p.finish()
    assert tables(r)[1][1] == [[250, 1.6645597, -4.7774327, 0, -2.2812174, 5.7526089]]
    assert r[-1] == {"kind": "step", "step": 250}
    # fed the rest, it would have come with its newline
    p = PARSERS["lammps_log"]()
    p.feed(data[: i + len(row) - 4])
    assert tables(p.feed(data[i + len(row) - 4 : i + len(row)]))[1][1] == [
        [250, 1.6645597, -4.7774327, 0, -2.2812174, 5.7526089]
    ]


def test_garbled_rows_are_skipped():
    data = sample(LAMMPS / "melt.log")
    data = data.replace(b"  1.6712577 ", b"  1.67\xff2577 ").replace(
        b"     150    1.6444751   -4.7471034            0   -2.2810074    5.8614211 ",
        b"     150    1.6444751   -4.7471034            0   -2.2810074 ",
    )
    r = parse("lammps_log", data)
    assert [x[0] for x in tables(r)[1][1]] == [0, 50, 200, 250, 300, 350, 400, 450, 500]


def test_reset_starts_over():
    p = PARSERS["lammps_log"]()
    melt = sample(LAMMPS / "melt.log")
    p.feed(melt[: len(melt) // 2])
    p.reset()
    two = sample(LAMMPS / "two_runs.log")
    r = p.feed(two) + p.finish()
    assert r == parse("lammps_log", two)
    assert list(tables(r)) == [1, 2]


def test_an_overlong_line_is_dropped_with_one_note():
    data = sample(LAMMPS / "melt.log")
    i = data.index(b"     100 ")
    long = b"7 " * (MAX_LINE_BYTES // 2 + 10)
    data = data[:i] + long + b"\n" + data[i:]
    n = data[:i].count(b"\n") + 1
    assert n == 51
    for pieces in (
        [data],
        [data[: i + 100], data[i + 100 : i + 70000], data[i + 70000 :]],
    ):
        r = parse("lammps_log", data, pieces)
        assert of(r, "note") == [
            {
                "kind": "note",
                "message": f"line {n} is longer than {MAX_LINE_BYTES} bytes: dropped",
            }
        ]
        assert len(tables(r)[1][1]) == 11
    # an overlong last line, never ended
    p = PARSERS["lammps_log"]()
    assert of(p.feed(long), "note") != []
    assert p.feed(long) == []
    assert p.finish() == []


# --- LAMMPS dump ---------------------------------------------------------------


def test_dump_snapshots_with_scaled_coordinates_in_the_box():
    r = parse("lammps_dump", sample(LAMMPS / "melt_small.dump"))
    assert [x["step"] for x in r] == [0, 100, 200, 300, 400, 500]
    s = r[0]
    edge = 6.7183847655300291
    assert b"Lattice spacing in x,y,z = 1.6795962 " in sample(LAMMPS / "melt_small.log")
    assert math.isclose(edge, 8 * HALF_CELL)
    assert s["natoms"] == 256
    assert s["box"] == [[0.0, edge]] * 3
    assert s["tilt"] is None
    assert s["boundary"] == ["pp", "pp", "pp"]
    assert s["columns"] == ["id", "type", "x", "y", "z"]
    assert [a[0] for a in s["atoms"]] == list(range(1, 257))
    # "2 1 0.125 0.125 0": an eighth of the box edge
    assert b"\n2 1 0.125 0.125 0\n" in sample(LAMMPS / "melt_small.dump")
    assert s["atoms"][1] == [2, 1, 0.125 * edge, 0.125 * edge, 0.0]
    # the crystal at step 0: every coordinate on a half lattice cell
    for a in s["atoms"]:
        for x in a[2:]:
            assert 0 <= x < edge
            assert abs(x / HALF_CELL - round(x / HALF_CELL)) < 1e-4


def test_scaled_dump_agrees_with_the_unscaled_one():
    # the same run dumped twice: atom style (scaled, every atom, 1 rank) and
    # custom (x y z vx vy vz, even ids, 2 ranks)
    scaled = {
        x["step"]: x for x in parse("lammps_dump", sample(LAMMPS / "melt_small.dump"))
    }
    custom = parse("lammps_dump", sample(LAMMPS / "melt_small_2ranks.custom"))
    assert [x["step"] for x in custom] == [0, 250, 500]
    assert custom[0]["columns"] == ["id", "type", "x", "y", "z", "vx", "vy", "vz"]
    assert custom[0]["natoms"] == 128
    assert custom[2]["atoms"][0] == [
        2,
        1,
        0.751358,
        0.908813,
        6.30379,
        -1.00279,
        1.19652,
        0.343885,
    ]
    for step in (0, 500):
        atoms = {a[0]: a for a in scaled[step]["atoms"]}
        assert len(custom[step // 250]["atoms"]) == 128
        for a in custom[step // 250]["atoms"]:
            assert a[0] % 2 == 0
            for x, y in zip(a[2:5], atoms[a[0]][2:5]):
                # both written with 6 significant digits
                assert x == pytest.approx(y, abs=2e-5)


def test_one_and_two_ranks_give_the_same_snapshots():
    # rank 1 writes its atoms after rank 0's: the kept atoms come by id
    a = parse("lammps_dump", sample(LAMMPS / "melt_small.dump"), max_atoms=40)
    b = parse("lammps_dump", sample(LAMMPS / "melt_small_2ranks.dump"), max_atoms=40)
    assert sample(LAMMPS / "melt_small.dump") != sample(
        LAMMPS / "melt_small_2ranks.dump"
    )
    assert a == b


def test_subsampling_keeps_the_same_atoms_in_every_snapshot():
    r = parse("lammps_dump", sample(LAMMPS / "melt_small_2ranks.dump"), max_atoms=50)
    ids = [[a[0] for a in x["atoms"]] for x in r]
    assert len(ids) == 6
    assert all(x == ids[0] for x in ids)
    assert len(ids[0]) == 50 and ids[0] == sorted(ids[0])
    # spread over the whole range of ids, not the first 50
    assert ids[0][0] < 20 and ids[0][-1] > 230
    assert all(x["natoms"] == 256 for x in r)
    # max_atoms=0: the header alone
    r = parse("lammps_dump", sample(LAMMPS / "melt_small.dump"), max_atoms=0)
    assert [len(x["atoms"]) for x in r] == [0] * 6


def test_tilted_box():
    r = parse("lammps_dump", sample(LAMMPS / "triclinic.dump"))
    assert [x["step"] for x in r] == [0, 50, 100]
    s = r[0]
    # the box of "region box prism 0 3 0 3 0 3 1.0 0.5 -0.5" in lattice cells
    assert s["tilt"] == pytest.approx([2 * HALF_CELL, HALF_CELL, -HALF_CELL])
    assert [x for lohi in s["box"] for x in lohi] == pytest.approx(
        [0, 6 * HALF_CELL] * 3
    )
    assert s["natoms"] == 108 and len(s["atoms"]) == 108
    # the fcc crystal of the lattice: every converted coordinate is on it
    # (the bounding box written in the dump would shift x off it)
    for a in s["atoms"]:
        for x in a[2:]:
            assert abs(x / HALF_CELL - round(x / HALF_CELL)) < 1e-4, a


def test_an_incomplete_snapshot_is_a_note():
    data = sample(LAMMPS / "melt_small.dump")
    i = data.index(b"ITEM: TIMESTEP\n500\n")
    j = data.index(b"ITEM: ATOMS", i)
    for _ in range(47):
        j = data.index(b"\n", j + 1)
    r = parse("lammps_dump", data[: j + 1])
    assert [x["step"] for x in of(r, "snapshot")] == [0, 100, 200, 300, 400]
    assert of(r, "note") == [
        {
            "kind": "note",
            "message": "step 500: the snapshot ended after 46 of 256 atoms",
        }
    ]
    # the same cut in the middle of the file: the next block goes on
    r = parse("lammps_dump", data[: j + 1] + data[i:])
    assert [x["step"] for x in of(r, "snapshot")] == [0, 100, 200, 300, 400, 500]
    assert len(of(r, "note")) == 1
    # the last atom line without its newline may be cut short: not taken
    r = parse("lammps_dump", data[:-1])
    assert [x["step"] for x in of(r, "snapshot")] == [0, 100, 200, 300, 400]


def test_dump_memory_stays_bounded():
    # a long dump of real blocks fed in pieces holds one block's kept atoms
    block = sample(LAMMPS / "melt_small.dump")
    i = block.index(b"ITEM: TIMESTEP\n100\n")
    block = block[i : block.index(b"ITEM: TIMESTEP", i + 10)]
    data = block * 150
    piece = 64 * 1024
    p = PARSERS["lammps_dump"](max_atoms=20)
    n = 0
    tracemalloc.start()
    try:
        for i in range(0, len(data), piece):
            n += len(p.feed(data[i : i + piece]))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert n == 150
    # what is held is a few pieces' worth, however long the dump
    assert len(data) > 16 * piece
    assert peak < 8 * piece


# --- GROMACS -------------------------------------------------------------------


@pytest.mark.parametrize("log", ["md.log", "md_2ranks.log"])
def test_gromacs_energies(log):
    r = parse("gromacs_log", sample(GROMACS / log))
    assert list(tables(r)) == [1]
    columns, rows = tables(r)[1]
    assert columns == ENERGIES
    assert [x[0] for x in rows] == list(range(0, 501, 50))
    assert [x[1] for x in rows] == pytest.approx([0.1 * i for i in range(11)])
    # the initial temperature of the thermostat's 300 K, the same on 1 and 2 ranks
    assert rows[0][9] == 307.991 and rows[0][10] == 4813.8
    assert all(r["table"] == "energies" for r in of(r, "rows"))
    assert of(r, "step")[-1]["step"] == 500
    assert of(r, "error") == []


def test_gromacs_first_and_last_block_exactly():
    _, rows = tables(parse("gromacs_log", sample(GROMACS / "md.log")))[1]
    assert rows[0] == [
        0,
        0.0,
        2825.3,
        -15675.7,
        447.484,
        -12402.9,
        2669.61,
        -9733.31,
        -9733.31,
        307.991,
        4813.8,
    ]
    assert rows[-1][:2] == [500, 1.0] and rows[-1][-2:] == [307.01, 284.238]


def test_gromacs_minimisation_log():
    columns, rows = tables(parse("gromacs_log", sample(GROMACS / "em.log")))[1]
    assert columns == ["Step", "Time", "LJ (SR)", "Coulomb (SR)", "Coul. recip.", "Potential",
                       "Pressure (bar)"]  # fmt: skip
    assert [x[0] for x in rows] == [0, 1, 2, 3, 4, 5]
    # the potential falls at each step of steepest descent
    assert all(rows[i][5] > rows[i + 1][5] for i in range(len(rows) - 1))
    # the log's "Potential Energy  = -1.2404001e+04" is the last step's
    assert rows[-1][5] == pytest.approx(-1.2404001e04, rel=1e-5)


def test_gromacs_fatal_error_in_the_log_and_on_stderr():
    message = (
        "The size of the domain decomposition grid (3) does not match the number of PP\n"
        "ranks (2). The total number of ranks is 2"
    )
    for f in ("dd_error.log", "dd_error.stderr"):
        r = parse("gromacs_log", sample(GROMACS / f))
        assert of(r, "error") == [{"kind": "error", "message": message}]


def test_gromacs_grompp_errors():
    r = parse("gromacs_log", sample(GROMACS / "bad_integrator.stderr"))
    assert r == [
        {
            "kind": "error",
            "message": "ERROR 1 [file bad_integrator.mdp, line 19]:\n"
            "  Invalid enum 'mdx' for variable integrator, using 'md'\n"
            "  Next time, use one of: 'md' 'steep' 'cg' 'bd' 'sd2 - removed' 'nm' 'l-bfgs'\n"
            "  'tpi' 'tpic' 'sd' 'md-vv' 'md-vv-avek' 'mimic'",
        },
        {"kind": "error", "message": "There was 1 error in input file(s)"},
    ]


def test_gromacs_too_many_warnings_says_which():
    # grompp -maxwarn 0 of an mdp with the Berendsen thermostat
    r = parse("gromacs_log", sample(GROMACS / "warn.stderr"))
    w = (
        "WARNING 1 [file warn.mdp]:\n"
        "  The Berendsen thermostat does not generate the correct kinetic energy\n"
        "  distribution, and should not be used for new production simulations (in\n"
        "  our opinion). We would recommend the V-rescale thermostat."
    )
    assert of(r, "warning") == [{"kind": "warning", "message": w}]
    assert of(r, "error") == [
        {
            "kind": "error",
            "message": "Too many warnings (1).\n"
            "If you are sure all warnings are harmless, use the -maxwarn option.\n" + w,
        }
    ]


def test_gromacs_blowup_gives_gaps_and_a_warning():
    # mdrun of Debian's 2022.5 crashed (SIGSEGV) after writing -nan energies
    r = parse("gromacs_log", sample(GROMACS / "blowup.log"))
    assert of(r, "warning") == [
        {
            "kind": "warning",
            "message": "step 0: One or more water molecules can not be settled.",
        }
    ]
    _, rows = tables(r)[1]
    assert rows == [
        [0, 0.0, 2825.3, -15675.7, 447.484, -12402.9, None, None, None, None, None]
    ]
    json.dumps(r, allow_nan=False)


def test_gromacs_block_cut_short():
    data = sample(GROMACS / "md.log")
    i = data.index(b"            250        0.50000\n")
    j = data.index(b"   Total Energy", i)
    # cut after the names of the block's second line: the block is not given
    r = parse("gromacs_log", data[:j])
    assert [x[0] for x in tables(r)[1][1]] == [0, 50, 100, 150, 200]
    # cut just before the blank line that closes it: finish gives it
    k = data.index(b"\n\n", j)
    r = parse("gromacs_log", data[: k + 1])
    assert [x[0] for x in tables(r)[1][1]] == [0, 50, 100, 150, 200, 250]


# --- any bytes, any cuts -------------------------------------------------------

SAMPLES = {
    "lammps_log": [LAMMPS / f for f in ("melt.log", "two_runs.log", "triclinic.log",
                                        "lost_warn.log", "lost_atoms.log")],
    "lammps_dump": [LAMMPS / f for f in ("triclinic.dump", "melt_small_2ranks.custom")],
    "gromacs_log": [GROMACS / f for f in ("md_2ranks.log", "em.log", "dd_error.log",
                                          "bad_integrator.stderr", "warn.stderr")],
}  # fmt: skip
_CACHE = {}


def _sample(path):
    if path not in _CACHE:
        _CACHE[path] = path.read_bytes()
    return _CACHE[path]


#: pieces of the formats' own lines, to make garbage that gets deep into them
FRAGMENTS = [
    b"\n", b" ", b"\r\n", b"\x00", b"\xff\xfe", b"-nan", b"1e999", b"12", b"0.5", b"-3.25e+01",
    b"Step Temp E_pair\n", b"Step\n", b"Loop time of 1.0\n", b"ERROR: x\n", b"WARNING: y\n",
    b"Per MPI rank memory allocation (min/avg/max) = 1 | 1 | 1 Mbytes\n",
    b"---------------- Step        0 ----- CPU =      0.0000 (sec) ----------------\n",
    b"TotEng   =        -5.2873 KinEng   =         1.4861\n",
    b"ITEM: TIMESTEP\n", b"ITEM: NUMBER OF ATOMS\n", b"ITEM: BOX BOUNDS pp pp pp\n",
    b"ITEM: BOX BOUNDS xy xz yz pp pp pp\n", b"ITEM: ATOMS id type xs ys zs\n",
    b"ITEM: ATOMS x y z element\n", b"ITEM: TIME\n", b"0 1 0.5\n", b"3 1 0.1 0.2 0.3\n",
    b"           Step           Time\n", b"   Energies (kJ/mol)\n",
    b"        LJ (SR)   Coulomb (SR)\n", b"    1.14924e+04   -1.49794e+04\n",
    b"Fatal error:\n", b"ERROR 1 [file a.mdp, line 1]:\n", b"step 3: bad\n",
]  # fmt: skip


@st.composite
def garbage(draw):
    parts = draw(st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.binary(max_size=12)),
                          max_size=60))  # fmt: skip
    return b"".join(parts)


@st.composite
def corrupted(draw, name):
    """A real sample with garbage put in at a few places."""
    data = _sample(draw(st.sampled_from(SAMPLES[name])))
    for _ in range(draw(st.integers(0, 3))):
        i = draw(st.integers(0, len(data)))
        data = data[:i] + draw(garbage()) + data[i + draw(st.integers(0, 40)) :]
    return data


def _check(records):
    json.dumps(records, allow_nan=False)
    for r in records:
        assert r["kind"] in {"rows", "step", "error", "warning", "note", "snapshot"}, r
        if r["kind"] == "rows":
            assert r["rows"] and all(len(x) == len(r["columns"]) for x in r["rows"])
        if r["kind"] == "snapshot":
            assert len(r["atoms"]) <= 7
            assert all(len(a) == len(r["columns"]) for a in r["atoms"])


_SETTINGS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@pytest.mark.parametrize("name", sorted(PARSERS))
@_SETTINGS
@given(data=st.data())
def test_any_cuts_give_the_same_records(name, data):
    b = data.draw(st.one_of(corrupted(name), garbage()))
    points = data.draw(st.lists(st.integers(0, len(b)), max_size=12))
    options = {"max_atoms": 7} if name == "lammps_dump" else {}
    whole = parse(name, b, **options)
    p = PARSERS[name](**options)
    parts = []
    for x in cut(b, points):
        got = p.feed(x)
        parts += got
        # a step record follows the rows of its feed, with their last step
        rows = [r for r in got if r["kind"] == "rows"]
        steps = [x[r["columns"].index("Step")] for r in rows for x in r["rows"]]
        steps = [x for x in steps if x is not None]
        if steps:
            assert got[-1] == {"kind": "step", "step": steps[-1]}
    parts += p.finish()
    _check(whole)
    assert normalized(parts) == normalized(whole)


@pytest.mark.parametrize("name", sorted(PARSERS))
@_SETTINGS
@given(
    b=st.one_of(st.binary(max_size=400), garbage()),
    points=st.lists(st.integers(0, 400)),
)
def test_any_bytes_never_raise(name, b, points):
    options = {"max_atoms": 7} if name == "lammps_dump" else {}
    p = PARSERS[name](max_line_bytes=40, **options)
    rv = []
    for x in cut(b, points):
        rv += p.feed(x)
    rv += p.finish()
    _check(rv)
    # after a reset, fed at once: the same records
    p.reset()
    assert normalized(p.feed(b) + p.finish()) == normalized(rv)


def test_registry():
    assert sorted(PARSERS) == ["gromacs_log", "lammps_dump", "lammps_log"]
    for name, c in PARSERS.items():
        assert c.name == name
        p = c()
        assert p.feed(b"") == [] and p.finish() == []
    with pytest.raises(TypeError):
        PARSERS["lammps_log"](max_atoms=3)
