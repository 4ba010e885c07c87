"""LAMMPS on the sbatch driver: Debian's ``lmp`` as a Slurm job of the test site.

The catalog's ``lammps`` entry asks for an ``mpi`` launch: the job gets one
Slurm task per core, its script starts the ranks with ``mpirun`` inside the
allocation, and the agent on the login node reads LAMMPS's log and dump on
the "shared filesystem" (the site user's home) as they grow, without
inotify, into frames. The ranks run as the site's user, on its one node
(this machine, so ``lmp`` is the same program as for the local driver).
"""

import pwd
import shutil

import pytest

from tests.conftest import procs_named, procs_under, wait_for
from tests.hpc_site import Site
from tests.lammps_test import _assert_result

pytestmark = [
    pytest.mark.slurm,
    pytest.mark.skipif(
        not (shutil.which("lmp") and shutil.which("mpirun")),
        reason="Debian's lammps and openmpi-bin are not installed (etc/setup-test-host.sh)",
    ),
]


def _lmp_ranks(run_dir):
    """{pid: uid} of the ``lmp`` processes working in `run_dir`."""
    return {p: u for p, (u, _) in procs_named(run_dir, "lmp").items()}


def _run_dir(sb, sim_id):
    return sb.site.home / sb.work_dir / "run" / sim_id


def _active_jobs(site):
    o = site.as_user(["squeue", "--me", "-h", "-t", "all", "-o", "%i|%T"]).stdout
    return [
        i
        for i, _, t in (l.partition("|") for l in o.split())
        if t in ("PENDING", "RUNNING", "COMPLETING", "CONFIGURING", "SUSPENDED")
    ]


def _sacct(site, job_id, fields):
    return site.as_user(
        ["sacct", "-n", "-P", "-X", "-j", job_id, "-o", fields]
    ).stdout.splitlines()


def _thermo_steps(frames):
    return [
        r[x["columns"].index("Step")]
        for x in frames
        if x["plot"] == "rows"
        for r in x["rows"]
    ]


def _watch(sb, user, sim_id, seen):
    """Until the run ends: the most lmp ranks seen at once, their users, and
    the frame counts while it ran."""
    d = _run_dir(sb, sim_id)

    def _poll():
        j = sb.server.job(user, sim_id)
        if j["status"] == "running":
            r = _lmp_ranks(d)
            seen["ranks"] = max(seen["ranks"], len(r))
            seen["uids"].update(r.values())
            if j["frames"] and r:
                seen["frames_while_running"].append(j["frames"])
        return j["status"] not in ("queued", "starting", "running", "lost") and j

    return wait_for(_poll, 120, 0.05, "lammps ended")


def test_two_ranks_in_the_allocation_complete_with_live_frames(
    sbatch_factory, hpc_site
):
    sb = sbatch_factory("prompt")
    sb.server.add_user("lena")
    sb.sign_in("lena")
    s = sb.server.create(
        "lena",
        "lammps",
        temperature=2.5,
        box=10,
        steps=4000,
        thermo_every=100,
        dump_every=1000,
    )
    sb.server.run("lena", s["id"], driver="sbatch", cores=2)
    seen = {"ranks": 0, "uids": set(), "frames_while_running": []}
    j = _watch(sb, "lena", s["id"], seen)
    assert j["status"] == "completed", j["error"]
    assert j["progress"] == 1.0 and j["exit_code"] == 0
    # two ranks of the site's user, and frames while they ran
    assert seen["ranks"] == 2, seen
    assert seen["uids"] == {pwd.getpwnam(Site.user).pw_uid}, seen
    assert min(seen["frames_while_running"], default=j["frames"]) < j["frames"], seen
    # one MPI world of 2 ranks in a job of 2 tasks
    jid = j["batch"]["job_id"]
    a = _sacct(hpc_site, jid, "State,NTasks,AllocCPUS")
    assert a[0].startswith("COMPLETED|") and a[0].split("|")[2] == "2", a
    d = _run_dir(sb, s["id"])
    assert "Loop time of " in (out := (d / "run.out").read_text())
    assert " on 2 procs for 4000 steps with 4000 atoms" in out
    script = (d / "job.sh").read_text()
    assert "exec mpirun -np 2 lmp -in in.melt -log log.lammps\n" in script
    f = sb.server.frames("lena", s["id"])
    assert len(f) == j["frames"]
    rows = [x for x in f if x["plot"] == "rows"]
    c = rows[0]["columns"]
    first = rows[0]["rows"][0]
    # the temperature asked for is the first thermo row's
    assert first[c.index("Step")] == 0 and first[c.index("Temp")] == 2.5
    assert _thermo_steps(f) == list(range(0, 4001, 100))
    snaps = [x for x in f if x["plot"] == "snapshot"]
    assert [x["step"] for x in snaps] == [0, 1000, 2000, 3000, 4000]
    assert all(x["natoms"] == 4000 and len(x["atoms"]) == 2000 for x in snaps)
    assert not _lmp_ranks(d)


def test_cancel_leaves_no_rank_and_no_job(sbatch_factory, hpc_site):
    sb = sbatch_factory("prompt")
    sb.server.add_user("mara")
    sb.sign_in("mara")
    s = sb.server.create("mara", "lammps", box=20, steps=10000, thermo_every=100)
    sb.server.run("mara", s["id"], driver="sbatch", cores=2)
    d = _run_dir(sb, s["id"])
    wait_for(lambda: len(_lmp_ranks(d)) == 2, 60, what="two lmp ranks")
    jid = sb.slurm_job("mara", s["id"])
    assert jid in _active_jobs(hpc_site)
    r = sb.server.api("POST", f"/simulations/{s['id']}/cancel", "mara", expect=200)
    assert r.json()["status"] == "canceled"
    # Slurm said the job ended before the reply: no rank, no mpirun, no job
    assert not procs_under(d)
    assert jid not in _active_jobs(hpc_site)
    assert _sacct(hpc_site, jid, "State")[0].startswith("CANCELLED")


def test_an_agent_killed_mid_run_is_followed_again_with_no_frame_lost_or_twice(
    sbatch_factory, hpc_site
):
    sb = sbatch_factory("prompt")
    sb.server.add_user("nils")
    sb.sign_in("nils")
    s = sb.server.create(
        "nils",
        "lammps",
        temperature=1.5,
        box=10,
        steps=8000,
        thermo_every=100,
        dump_every=1000,
    )
    sb.server.run("nils", s["id"], driver="sbatch", cores=2)
    wait_for(
        lambda: sb.server.job("nils", s["id"])["frames"] >= 5,
        60,
        what="some frames",
    )
    jid = sb.slurm_job("nils", s["id"])
    old = sb.kill_agent()
    assert old
    sb.server.wait_status("nils", s["id"], "lost", 20)
    # the new agent has more to read than the old one sent: LAMMPS goes on
    log = _run_dir(sb, s["id"]) / "log.lammps"
    n = log.stat().st_size
    wait_for(lambda: log.stat().st_size > n, 30, what="log.lammps grown")
    sb.sign_in("nils")
    assert sb.agent_pid() != old
    j = sb.server.wait_status("nils", s["id"], {"completed", "error"}, 120)
    assert j["status"] == "completed", j
    assert j["batch"]["job_id"] == jid
    f = sb.server.frames("nils", s["id"])
    assert len(f) == j["frames"]
    # each thermo row and each snapshot once, in order: the new agent made
    # the frames the supervisor had the same way (the journal of reads)
    assert _thermo_steps(f) == list(range(0, 8001, 100))
    snaps = [x["step"] for x in f if x["plot"] == "snapshot"]
    assert snaps == list(range(0, 8001, 1000))
    rows = [x for x in f if x["plot"] == "rows"]
    c = rows[0]["columns"]
    assert rows[0]["rows"][0][c.index("Temp")] == 1.5
    # and the result of every row once
    _assert_result(j, f)
    # the log too: the old agent's text and the new one's joined at their
    # offsets are the text the new agent has (its run.log, written whole)
    d = _run_dir(sb, s["id"])
    t = sb.server.api("GET", f"/simulations/{s['id']}/log", "nils", expect=200).text
    assert t == (d / "run.log").read_text()
    assert t.count("[simvisor agent: submitted as Slurm job") == 1
    assert " on 2 procs for 8000 steps" in t
    assert not _lmp_ranks(d)


def test_an_analysis_is_served_by_the_login_nodes_warm_worker(sbatch_factory):
    """lammps-rdf on the sbatch driver: no Slurm job, the agent's worker."""
    sb = sbatch_factory("prompt")
    sb.server.add_user("olga")
    sb.sign_in("olga")
    src = sb.server.create(
        "olga", "lammps", box=4, steps=500, thermo_every=100, dump_every=500
    )
    sb.server.run("olga", src["id"], driver="sbatch", cores=1)
    j = sb.server.wait_status("olga", src["id"], ("completed", "error"), 120)
    assert j["status"] == "completed", j
    a = sb.server.create("olga", "lammps-rdf", source=src["id"], bins=50)
    for _ in range(2):
        # the second request: the same worker, warm
        sb.server.run("olga", a["id"], driver="sbatch")
        j = sb.server.wait_status("olga", a["id"], ("completed", "error"), 60)
        assert j["status"] == "completed", j["error"]
        assert j.get("batch") is None, j
        (f,) = sb.server.frames("olga", a["id"])
        assert f["table"] == "rdf" and f["columns"] == ["r", "g"]
        assert len(f["rows"]) == 50 and max(g for _, g in f["rows"]) > 2
