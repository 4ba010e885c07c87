"""GROMACS end to end on the local driver: Debian's ``gmx`` (grompp, then mdrun), for real.

The catalog's ``gromacs`` entry (etc/codes.json, etc/codes/gromacs/) is a
box of 348 SPC waters; its frames come from the agent following ``md.log``
as mdrun writes it, and grompp's refusals from ``grompp.log``.
"""

import shutil
import statistics

import pytest

from conftest import procs_named, procs_under, wait_for

pytestmark = pytest.mark.skipif(
    not shutil.which("gmx"),
    reason="Debian's gromacs is not installed (etc/setup-test-host.sh)",
)


def _gmx(run_dir):
    """{pid: threads} of the ``gmx`` processes working in `run_dir`."""
    return {p: t for p, (_, t) in procs_named(run_dir, "gmx").items()}


def _run_dir(server, sim_id):
    return server.data_dir / "run" / "admin" / sim_id


def _first_block(md_log):
    """{name: text of its value} of the first energies block of an ``md.log``.

    Its names are right-aligned in 15-character fields, each line of names
    followed by the line of their values.
    """
    lines = md_log.splitlines()
    i = next(n for n, x in enumerate(lines) if x.strip() == "Energies (kJ/mol)")
    rv = {}
    for names, values in zip(lines[i + 1 : i + 5 : 2], lines[i + 2 : i + 5 : 2]):
        for k in range(0, len(names), 15):
            rv[names[k : k + 15].strip()] = values[k : k + 15].strip()
    return rv


def test_two_threads_complete_with_live_energies(server):
    s = server.create("admin", "gromacs", nsteps=1000, temperature=320.0, log_every=50)
    server.run("admin", s["id"], cores=2)
    d = _run_dir(server, s["id"])
    seen = {"threads": 0, "frames_while_running": []}

    def watch():
        j = server.job("admin", s["id"])
        if j["status"] == "running":
            seen["threads"] = max([seen["threads"], *_gmx(d).values()])
            if j["frames"]:
                seen["frames_while_running"].append(j["frames"])
        return j["status"] not in ("queued", "starting", "running") and j

    j = wait_for(watch, 120, 0.05, "gromacs ended")
    assert j["status"] == "completed", j["error"]
    assert j["progress"] == 1.0 and j["exit_code"] == 0
    # one mdrun of the run's two cores as OpenMP threads, no more
    assert seen["threads"] == 2, seen
    assert min(seen["frames_while_running"], default=j["frames"]) < j["frames"], seen
    rows = [x for x in server.frames("admin", s["id"]) if x["plot"] == "rows"]
    assert rows and {(x["file"], x["table"]) for x in rows} == {("md.log", "energies")}
    c = rows[0]["columns"]
    steps = [r[c.index("Step")] for x in rows for r in x["rows"]]
    assert steps == list(range(0, 1001, 50))
    # the first row is what md.log says
    first = dict(zip(c, rows[0]["rows"][0]))
    log = _first_block((d / "md.log").read_text())
    assert first["Step"] == 0 and first["Time"] == 0.0
    for k in ("Potential", "Kinetic En.", "Temperature", "Pressure (bar)"):
        assert first[k] == float(log[k]), (k, first[k], log[k])
    # drawn at the temperature asked for (1044 atoms: within a few percent)
    assert abs(first["Temperature"] - 320.0) < 16.0, first
    # the result: of every row of energies
    col = {k: [r[c.index(k)] for x in rows for r in x["rows"]] for k in c}
    assert j["result"] == {
        "temp_mean": pytest.approx(statistics.fmean(col["Temperature"]), rel=1e-12),
        "press_mean": pytest.approx(statistics.fmean(col["Pressure (bar)"]), rel=1e-12),
        "etotal_final": col["Total Energy"][-1],
    }
    # the catalog's plots name columns the frames have
    code = next(
        x
        for x in server.api("GET", "/codes", expect=200).json()
        if x["name"] == "gromacs"
    )
    for p in code["plots"]:
        assert {a["column"] for a in [p["x"], *p["y"]]} <= set(c), p
    assert not _gmx(d)
    # the deck the run used is in its directory, rendered from the parameters
    mdp = (d / "md.mdp").read_text()
    assert "ref-t           = 320.0\n" in mdp and "nsteps          = 1000\n" in mdp


def test_cancel_mid_run_leaves_no_process(server):
    s = server.create("admin", "gromacs", nsteps=100000)
    server.run("admin", s["id"], cores=1)
    d = _run_dir(server, s["id"])
    # mdrun is writing energies
    wait_for(lambda: server.job("admin", s["id"])["frames"], 60, what="a frame")
    assert _gmx(d)
    j = server.api("POST", f"/simulations/{s['id']}/cancel", expect=200).json()
    assert j["status"] == "canceled" and j["progress"] < 1.0
    assert not procs_under(d)


def test_a_refused_combination_is_gromacs_own_error(server):
    # a Nose-Hoover thermostat needs tau-t of 20 coupling intervals (0.4 ps
    # here): grompp warns, and with no warning allowed it stops
    s = server.create("admin", "gromacs", thermostat="nose-hoover", tau_t=0.1)
    server.run("admin", s["id"], cores=1)
    j = server.wait_status("admin", s["id"], ("completed", "error"), 60)
    assert j["status"] == "error" and j["exit_code"] == 1, j
    # grompp's own words (from grompp.log, through the gromacs_log parser)
    assert j["error"] == (
        "Too many warnings (1).\n"
        "If you are sure all warnings are harmless, use the -maxwarn option.\n"
        "WARNING 1 [file md.mdp]:\n"
        "  For proper integration of the Nose-Hoover thermostat, tau-t (0.1) should\n"
        "  be at least 20 times larger than nsttcouple*dt (0.02)"
    )
    log = server.api("GET", f"/simulations/{s['id']}/log", expect=200).text
    assert "For proper integration of the Nose-Hoover thermostat" in log
    d = _run_dir(server, s["id"])
    assert not (d / "md.log").exists() and not procs_under(d)
    assert not server.frames("admin", s["id"])
