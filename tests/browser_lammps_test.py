"""LAMMPS in the browser: the thermo plot grows while it runs, the atoms in 3-D.

A real supervisor and local agent (tests/conftest.py) run Debian's ``lmp``
on 2 MPI ranks; the page draws the catalog entry's ``plots`` (etc/codes.json)
from the frames the agent makes of ``log.lammps`` and the dump file, with no
JavaScript of its own for LAMMPS. A MutationObserver records what the page
showed as it changed; the test never reloads it. Screenshots go to
tests/artifacts/.
"""

import re
import shutil

import pytest

from conftest import ROOT
from tests import browser_test as bt

try:
    from playwright.sync_api import expect
except ImportError:  # the browser fixture says what is missing
    expect = None

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not (shutil.which("lmp") and shutil.which("mpirun")),
        reason="Debian's lammps and openmpi-bin are not installed (etc/setup-test-host.sh)",
    ),
]

# the browser fixtures of tests/browser_test.py
browser = bt.browser
pages = bt.pages

#: about 2 s on 2 ranks: 8x8x8 fcc cells (2,048 atoms), 41 thermo rows, 9 snapshots
BOX = 8
STEPS = 4000
THERMO_EVERY = 100
DUMP_EVERY = 500
THERMO_ROWS = STEPS // THERMO_EVERY + 1
#: the catalog's max_atoms of the dump: what the 3-D view is sent
ATOMS_SHOWN = 2000

# records, as the page changes, the status and what each plot shows
_RECORD = """() => {
    window.__seen = [];
    const q = (s) => document.querySelector(s);
    const rec = () => {
        const lines = q('[data-kind=lines]');
        const atoms = q('[data-kind=scatter3d]');
        const e = {
            s: q('#status').dataset.status,
            rows: Number(lines ? lines.dataset.rows : -1),
            step: atoms ? atoms.dataset.step : null,
        };
        const l = window.__seen[window.__seen.length - 1];
        if (!l || l.s !== e.s || l.rows !== e.rows || l.step !== e.step) {
            window.__seen.push(e);
        }
    };
    rec();
    new MutationObserver(rec).observe(q('main'), {
        subtree: true,
        attributes: true,
        attributeFilter: ['data-status', 'data-rows', 'data-step'],
    });
}"""

# what plotly drew in the 3-D figure: its traces, and whether a gl3d scene is there
_SCENE = """() => {
    const gd = document.querySelector('[data-kind=scatter3d] .js-plotly-plot');
    if (!gd) {
        return null;
    }
    return {
        traces: gd._fullData.map((t) => ({type: t.type, mode: t.mode, n: (t.x || []).length})),
        scene: Boolean(gd._fullLayout.scene && gd._fullLayout.scene._scene),
        canvas: Boolean(gd.querySelector('.gl-container canvas')),
        range: gd._fullLayout.scene.xaxis.range,
    };
}"""

# the lines plot's traces: name, panel (y axis) and number of points
_LINES = """() => {
    const gd = document.querySelector('[data-kind=lines] .js-plotly-plot');
    return gd._fullData.map((t) => ({name: t.name, yaxis: t.yaxis, n: t.x.length}));
}"""


#: two runs of LAMMPS, each seconds on an idle machine, far more on a busy one
@pytest.mark.timeout(300)
def test_lammps_thermo_grows_and_atoms_in_3d(server, pages):
    server.add_user("lena")
    page = pages.new()
    bt.sign_in(page, server, "lena")
    page.get_by_role("link", name="New simulation").first.click()
    page.get_by_role("radio", name=re.compile("^LAMMPS: Lennard-Jones")).check()
    page.get_by_label("Name").fill("lj melt")
    for name, v in (
        ("box", BOX),
        ("steps", STEPS),
        ("thermo_every", THERMO_EVERY),
        ("dump_every", DUMP_EVERY),
    ):
        page.locator(f"[data-param={name}] input").fill(str(v))
    page.get_by_role("button", name="Create simulation").click()
    expect(page.get_by_role("heading", name="lj melt")).to_be_visible()
    sim = server.api("GET", "/simulations", "lena", expect=200).json()[0]
    assert sim["params"]["box"] == BOX and sim["params"]["steps"] == STEPS

    # one figure per entry of the catalog's plots, empty before the run
    lines = page.locator("#plot [data-kind=lines]")
    atoms = page.locator("#plot [data-kind=scatter3d]")
    expect(lines.locator("h3")).to_have_text("Thermodynamics")
    expect(atoms.locator("h3")).to_have_text("Atoms")
    expect(lines).to_have_attribute("data-rows", "0")
    expect(atoms).to_have_attribute("data-atoms", "0")

    page.evaluate(_RECORD)
    page.get_by_label("Cores").fill("2")
    page.get_by_role("button", name="Run", exact=True).click()
    expect(bt.status(page)).to_have_attribute("data-status", "running")
    expect(page.locator("#situation")).to_contain_text("with 2 cores")
    expect(bt.status(page)).to_have_attribute("data-status", "completed", timeout=90000)
    # every row and the last snapshot drawn
    expect(lines).to_have_attribute("data-rows", str(THERMO_ROWS), timeout=15000)
    expect(atoms).to_have_attribute("data-step", str(STEPS), timeout=15000)
    expect(atoms).to_have_attribute("data-atoms", str(ATOMS_SHOWN))
    expect(atoms).to_have_attribute("data-natoms", str(4 * BOX**3))
    expect(atoms.locator("figcaption")).to_have_text(
        f"step {STEPS:,} · {ATOMS_SHOWN:,} of {4 * BOX**3:,} atoms"
    )

    seen = page.evaluate("window.__seen")
    rows = [e["rows"] for e in seen]
    assert rows == sorted(rows), seen
    # the thermo plot grew while LAMMPS ran: rows drawn before the last ones
    # came, and some of them while the page said it was running
    growing = sorted({r for r in rows if 0 < r < THERMO_ROWS})
    assert growing, f"the thermo plot did not grow, it appeared whole: {seen}"
    assert any(0 < e["rows"] for e in seen if e["s"] == "running"), seen
    # snapshots replaced one another: more than the last one was shown
    steps = [int(e["step"]) for e in seen if e["step"]]
    assert steps == sorted(steps) and steps[-1] == STEPS, seen

    # the lines: one per declared y column; temperature and pressure in
    # panels of their own, the two energies (same unit) sharing one
    t = {x["name"]: x for x in page.evaluate(_LINES)}
    assert set(t) == {
        "temperature (ε/k_B)",
        "pair energy (ε)",
        "total energy (ε)",
        "pressure (ε/σ³)",
    }, t
    assert all(x["n"] == THERMO_ROWS for x in t.values()), t
    assert t["pair energy (ε)"]["yaxis"] == t["total energy (ε)"]["yaxis"]
    assert len({x["yaxis"] for x in t.values()}) == 3, t
    expect(lines.locator("figcaption")).to_contain_text(f"{THERMO_ROWS} rows")

    # a plotly 3-D scatter of the atoms, in a gl3d scene, the box drawn
    s = page.evaluate(_SCENE)
    assert s and s["scene"] and s["canvas"], s
    markers = [
        x for x in s["traces"] if x["type"] == "scatter3d" and x["mode"] == "markers"
    ]
    assert sum(x["n"] for x in markers) == ATOMS_SHOWN, s
    assert any(
        x["type"] == "scatter3d" and x["mode"] == "lines" for x in s["traces"]
    ), s
    # x ranges over the box: BOX cells of the fcc lattice at the density
    side = BOX * (4 / sim["params"]["density"]) ** (1 / 3)
    assert s["range"][0] == pytest.approx(0, abs=1e-6), s
    assert s["range"][1] == pytest.approx(side, rel=1e-3), s
    expect(page.locator("#plot")).to_have_attribute(
        "data-frames", str(server.job("lena", sim["id"])["frames"])
    )
    bt.shot(page, "sim-lammps-completed", narrow=True)

    # a page opened after the run draws the same from the frames it fetches
    other = pages.new()
    bt.sign_in(other, server, "lena", f"/sim/{sim['id']}")
    expect(other.locator("[data-kind=lines]")).to_have_attribute(
        "data-rows", str(THERMO_ROWS)
    )
    expect(other.locator("[data-kind=scatter3d]")).to_have_attribute(
        "data-step", str(STEPS)
    )
    expect(other.locator("[data-kind=scatter3d]")).to_have_attribute(
        "data-atoms", str(ATOMS_SHOWN)
    )
    assert [x["n"] for x in other.evaluate(_LINES)] == [THERMO_ROWS] * 4

    # a new run starts the plots over, then fills them again
    page.evaluate(_RECORD)
    page.get_by_role("button", name="Run again").click()
    # the first run in the history: this one has ended (the status said
    # "completed" before it began, too)
    expect(page.locator("#history tbody tr")).to_have_count(2, timeout=90000)
    expect(bt.status(page)).to_have_attribute("data-status", "completed")
    expect(lines).to_have_attribute("data-rows", str(THERMO_ROWS), timeout=15000)
    expect(atoms).to_have_attribute("data-step", str(STEPS), timeout=15000)
    seen = page.evaluate("window.__seen")
    assert min(e["rows"] for e in seen) < THERMO_ROWS, seen
    assert [x["n"] for x in page.evaluate(_LINES)] == [THERMO_ROWS] * 4


# the box's edges as plotly drew them: x, y, z of the lines trace
_BOX = """() => {
    const gd = document.querySelector('[data-kind=scatter3d] .js-plotly-plot');
    const t = gd && gd._fullData.find((t) => t.type === 'scatter3d' && t.mode === 'lines');
    return t ? {x: t.x, y: t.y, z: t.z} : null;
}"""


@pytest.mark.timeout(180)
def test_own_deck_with_a_tilted_box_draws_the_box_tilted(server, pages):
    server.add_user("lena")
    deck = (ROOT / "tests" / "data" / "lammps" / "triclinic.in").read_text()
    deck = deck.replace("dump.tri", "dump.atoms")
    s = server.create("lena", "lammps-deck")
    server.api(
        "POST",
        f"/simulations/{s['id']}/files?name=in.lammps",
        user="lena",
        data=deck.encode(),
        expect=201,
    )
    server.run("lena", s["id"])
    j = server.wait_status("lena", s["id"], ("completed", "error", "canceled"), 120)
    assert j["status"] == "completed", j
    page = pages.new()
    bt.sign_in(page, server, "lena", f"/sim/{s['id']}")
    expect(page.locator("[data-kind=scatter3d]")).to_have_attribute("data-step", "100")
    b = page.evaluate(_BOX)
    assert b, "no box drawn"
    # 12 edges of 2 points and a gap each
    assert len(b["x"]) == 36
    pts = {
        (round(x, 3), round(y, 3), round(z, 3))
        for x, y, z in zip(b["x"], b["y"], b["z"])
        if x is not None
    }
    # fcc at 0.8442: a = (4 / 0.8442)^(1/3); prism 3 cells, tilts 1, 0.5, -0.5
    a = (4 / 0.8442) ** (1 / 3)
    lx, xy, xz, yz = 3 * a, 1.0 * a, 0.5 * a, -0.5 * a
    want = {
        (
            round(i * lx + j * xy + k * xz, 3),
            round(j * lx + k * yz, 3),
            round(k * lx, 3),
        )
        for i in (0, 1)
        for j in (0, 1)
        for k in (0, 1)
    }
    assert pts == want, (sorted(pts), sorted(want))
