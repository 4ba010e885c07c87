"""LAMMPS end to end on the local driver: Debian's ``lmp`` under ``mpirun``, for real.

The catalog's ``lammps`` entry (etc/codes.json, etc/codes/lammps/melt.in)
knows nothing of simvisor's report lines: its frames come from the agent
following ``log.lammps`` and the dump file as LAMMPS writes them.
"""

import os
import pathlib
import shutil
import statistics

import pytest

from conftest import procs_named, procs_under, wait_for

pytestmark = pytest.mark.skipif(
    not (shutil.which("lmp") and shutil.which("mpirun")),
    reason="Debian's lammps and openmpi-bin are not installed (etc/setup-test-host.sh)",
)


def _run_dir(server, sim_id):
    return server.data_dir / "run" / "admin" / sim_id


def test_two_ranks_complete_with_live_thermo_and_atoms(server):
    s = server.create(
        "admin",
        "lammps",
        temperature=2.5,
        box=8,
        steps=4000,
        thermo_every=100,
        dump_every=1000,
    )
    server.run("admin", s["id"], cores=2)
    d = _run_dir(server, s["id"])
    seen = {"ranks": 0, "frames_while_running": []}

    def watch():
        j = server.job("admin", s["id"])
        if j["status"] == "running":
            seen["ranks"] = max(seen["ranks"], len(procs_named(d, "lmp")))
            if j["frames"]:
                seen["frames_while_running"].append(j["frames"])
        return j["status"] not in ("queued", "starting", "running") and j

    j = wait_for(watch, 120, 0.05, "lammps ended")
    assert j["status"] == "completed", j["error"]
    assert j["progress"] == 1.0 and j["exit_code"] == 0
    # two MPI ranks ran, and frames came while it ran, not all at the end
    assert seen["ranks"] == 2, seen
    assert min(seen["frames_while_running"], default=0) < j["frames"], seen
    f = server.frames("admin", s["id"])
    rows = [x for x in f if x["plot"] == "rows"]
    snaps = [x for x in f if x["plot"] == "snapshot"]
    assert rows and rows[0]["table"] == "thermo" and rows[0]["file"] == "log.lammps"
    c = rows[0]["columns"]
    first = rows[0]["rows"][0]
    # the temperature asked for is the first thermo row's
    assert first[c.index("Step")] == 0 and first[c.index("Temp")] == 2.5
    steps = [r[c.index("Step")] for x in rows for r in x["rows"]]
    assert steps == list(range(0, 4001, 100))
    # 8x8x8 fcc cells, subsampled to the catalog's 2,000 for the browser
    assert [x["step"] for x in snaps] == [0, 1000, 2000, 3000, 4000]
    assert all(x["natoms"] == 2048 and len(x["atoms"]) == 2000 for x in snaps)
    assert not procs_named(d, "lmp")
    # the deck the run used is in its directory, rendered from the parameters
    deck = (d / "in.melt").read_text()
    assert "velocity        all create 2.5 " in deck and "run             4000" in deck


def _thermo(frames, column):
    rows = [x for x in frames if x["plot"] == "rows" and x["table"] == "thermo"]
    return [r[x["columns"].index(column)] for x in rows for r in x["rows"]]


def _assert_result(job, frames):
    """The job's result is that of every thermo row its frames hold."""
    temp, press = _thermo(frames, "Temp"), _thermo(frames, "Press")
    r = job["result"]
    assert set(r) == {"temp_mean", "press_mean", "etotal_final"}, r
    assert r["temp_mean"] == pytest.approx(statistics.fmean(temp), rel=1e-12)
    assert r["press_mean"] == pytest.approx(statistics.fmean(press), rel=1e-12)
    assert r["etotal_final"] == _thermo(frames, "TotEng")[-1]


def test_a_run_reports_the_mean_temperature_and_pressure_of_its_thermo(server):
    s = server.create("admin", "lammps", box=4, steps=200, thermo_every=10)
    server.run("admin", s["id"], cores=1)
    j = server.wait_status("admin", s["id"], ("completed", "error", "canceled"), 120)
    assert j["status"] == "completed", j
    f = server.frames("admin", s["id"])
    # every row is in the frames (no thinning of so few)
    assert _thermo(f, "Step") == list(range(0, 201, 10))
    _assert_result(j, f)
    assert j["result"]["temp_mean"] != _thermo(f, "Temp")[-1]
    assert j["history"][0]["result"] == j["result"]


def test_cancel_stops_every_rank(server):
    s = server.create("admin", "lammps", box=20, steps=10000, thermo_every=100)
    server.run("admin", s["id"], cores=2)
    d = _run_dir(server, s["id"])
    wait_for(lambda: len(procs_named(d, "lmp")) == 2, 60, what="two lmp ranks")
    j = server.api("POST", f"/simulations/{s['id']}/cancel", expect=200).json()
    assert j["status"] == "canceled"
    # confirmed gone when the reply comes: no rank, no mpirun
    assert not procs_under(d)


def test_a_run_past_its_time_ends_timed_out(server_factory):
    sv = server_factory(basic_max_run_secs=2)
    sv.add_user("dave")
    s = sv.create("dave", "lammps", box=20, steps=10000)
    sv.run("dave", s["id"], cores=1)
    j = sv.wait_status("dave", s["id"], ("timed_out", "completed", "error"), 60)
    assert j["status"] == "timed_out", j
    assert not procs_under(sv.data_dir / "run" / "dave" / s["id"])


def test_a_deck_upload_of_the_same_name_is_refused(server):
    s = server.create("admin", "lammps", steps=100)
    server.api(
        "POST",
        f"/simulations/{s['id']}/files?name=in.melt",
        data=b"shell rm -rf /\n",
        expect=201,
    )
    r = server.api("POST", f"/simulations/{s['id']}/run", json={}, expect=409)
    assert r.json()["error"] == "input_conflict"
    assert server.job("admin", s["id"])["status"] == "missing"
    assert os.path.exists(server.data_dir)


_DATA = pathlib.Path(__file__).parent / "data" / "lammps"


def _upload_deck(server, sim_id, text, user="admin"):
    server.api(
        "POST",
        f"/simulations/{sim_id}/files?name=in.lammps",
        user,
        data=text.encode(),
        expect=201,
    )


def test_your_own_deck_fails_with_lammps_own_words(server):
    s = server.create("admin", "lammps-deck")
    # no deck yet: refused, nothing queued
    r = server.api("POST", f"/simulations/{s['id']}/run", json={}, expect=409)
    assert r.json()["error"] == "input_missing"
    _upload_deck(server, s["id"], (_DATA / "unknown_command.in").read_text())
    server.run("admin", s["id"], cores=2)
    j = server.wait_status("admin", s["id"], ("completed", "error", "canceled"), 60)
    assert j["status"] == "error"
    # the code's own message from log.lammps, not mpirun's abort text
    assert (
        j["error"]
        == "ERROR: Unknown command: frobnicate      all 1.0 (src/input.cpp:274)"
    )
    assert not procs_under(_run_dir(server, s["id"]))


def test_a_potential_the_site_provides_is_linked_never_sent(server):
    # a file of the catalog's "site": LAMMPS's own potentials, where runs go
    r = server.api(
        "POST",
        "/simulations",
        json={"code": "lammps-deck", "params": {"potential": "site/Cu_u4.eam"}},
        expect=400,
    )
    assert "names no file the site provides" in r.json()["message"]
    s = server.create("admin", "lammps-deck", potential="site/Cu_u3.eam")
    _upload_deck(server, s["id"], (_DATA / "cu_eam.in").read_text())
    server.run("admin", s["id"])
    j = server.wait_status("admin", s["id"], ("completed", "error", "canceled"), 60)
    assert j["status"] == "completed", j
    d = _run_dir(server, s["id"])
    assert os.readlink(d / "Cu_u3.eam") == "/usr/share/lammps/potentials/Cu_u3.eam"
    rows = [
        r for f in server.frames("admin", s["id"]) if f.get("table") for r in f["rows"]
    ]
    # 300 K of fcc copper, steps 0 to 100 every 10
    assert [r[0] for r in rows] == list(range(0, 101, 10)), rows
    # the library holds nothing, and the run directory counts only the link
    assert server.api("GET", "/whoami").json()["limits"]["library_bytes"] == 0


def test_your_own_deck_cannot_read_the_data_dir(server_factory):
    sv = server_factory()
    sv.add_user("eve")
    s = sv.create("eve", "lammps-deck")
    secret = sv.data_dir / "admin-token"
    # a LAMMPS deck runs shell commands: the sandbox must hold them
    _upload_deck(
        sv,
        s["id"],
        f"shell cat {secret}\nshell ls {sv.data_dir}/db\nprint done-with-shell\n",
        "eve",
    )
    sv.run("eve", s["id"], cores=1)
    j = sv.wait_status("eve", s["id"], ("completed", "error", "canceled"), 60)
    log = sv.api("GET", f"/simulations/{s['id']}/log", "eve", expect=200).text
    assert "done-with-shell" in log, (j, log)
    assert sv.tokens["admin"] not in log and "users" not in log, log


def test_a_reattached_run_follows_its_files_on_without_repeats_or_gaps(server_factory):
    """The agent is SIGKILLed mid-run: the new one reads log.lammps and the
    dump again, and the supervisor gets each thermo row and snapshot once."""
    import signal

    server = server_factory(lost_grace_secs=300, local_orphan_secs=60)
    s = server.create(
        "admin", "lammps", box=10, steps=3000, thermo_every=100, dump_every=1000
    )
    server.run("admin", s["id"], cores=1)
    wait_for(lambda: server.job("admin", s["id"])["frames"] >= 3, 60, what="frames")
    (old,) = server.api("GET", "/admin/agents", expect=200).json()
    os.kill(old["pid"], signal.SIGKILL)
    j = server.wait_status("admin", s["id"], ("completed", "error", "canceled"), 120)
    assert j["status"] == "completed", j
    (new,) = server.api("GET", "/admin/agents", expect=200).json()
    assert new["pid"] != old["pid"]
    f = server.frames("admin", s["id"])
    assert len(f) == j["frames"]
    rows = [x for x in f if x["plot"] == "rows"]
    c = rows[0]["columns"]
    steps = [r[c.index("Step")] for x in rows for r in x["rows"]]
    assert steps == list(range(0, 3001, 100))
    assert [x["step"] for x in f if x["plot"] == "snapshot"] == [0, 1000, 2000, 3000]
    # the rows the new agent read again count once
    _assert_result(j, f)
    assert not procs_under(_run_dir(server, s["id"]))
