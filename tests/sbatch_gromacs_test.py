"""GROMACS on the sbatch driver: Debian's ``gmx`` (grompp, then mdrun) as a Slurm job.

The catalog's ``gromacs`` entry is a ``process`` launch of one mdrun whose
cores are OpenMP threads (``-ntomp {cores}``), and its ``batch`` says
``cores_as: cpus``: the job is one Slurm task of ``{cores}`` CPUs, not
``{cores}`` tasks. The agent on the login node follows ``grompp.log`` and
``md.log`` on the "shared filesystem" (the site user's home) as they grow,
without inotify, into frames; grompp's refusal is the run's error, in
GROMACS's words. mdrun runs as the site's user on its one node (this
machine, so ``gmx`` is the same program as for the local driver).
"""

import pathlib
import pwd
import shutil

import pytest

from tests.conftest import procs_named, procs_under, wait_for
from tests.hpc_site import Site

pytestmark = [
    pytest.mark.slurm,
    pytest.mark.skipif(
        not shutil.which("gmx"),
        reason="Debian's gromacs is not installed (etc/setup-test-host.sh)",
    ),
]


def _run_dir(sb, sim_id):
    return sb.site.home / sb.work_dir / "run" / sim_id


def _gmx(run_dir):
    """{pid: (uid, threads)} of the ``gmx`` processes working in `run_dir`."""
    return procs_named(run_dir, "gmx")


def _slurm_env(pid):
    """The SLURM_* variables of process `pid` (what its job step was given)."""
    try:
        e = pathlib.Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return {}
    return dict(
        x.decode().split("=", 1) for x in e if x.startswith(b"SLURM_") and b"=" in x
    )


def _sacct(site, job_id, fields):
    return site.as_user(
        ["sacct", "-n", "-P", "-X", "-j", job_id, "-o", fields]
    ).stdout.splitlines()


def test_one_task_of_two_cpus_completes_with_live_energies(sbatch_factory, hpc_site):
    sb = sbatch_factory("prompt")
    sb.server.add_user("gina")
    sb.sign_in("gina")
    s = sb.server.create(
        "gina", "gromacs", nsteps=1000, temperature=320.0, log_every=50
    )
    sb.server.run("gina", s["id"], driver="sbatch", cores=2)
    d = _run_dir(sb, s["id"])
    seen = {"threads": 0, "uids": set(), "env": {}, "frames_while_running": []}

    def watch():
        j = sb.server.job("gina", s["id"])
        if j["status"] == "running":
            g = _gmx(d)
            for p, (u, t) in g.items():
                seen["threads"] = max(seen["threads"], t)
                seen["uids"].add(u)
                seen["env"] = seen["env"] or _slurm_env(p)
            if j["frames"] and g:
                seen["frames_while_running"].append(j["frames"])
        return j["status"] not in ("queued", "starting", "running", "lost") and j

    j = wait_for(watch, 120, 0.05, "gromacs ended")
    assert j["status"] == "completed", j["error"]
    assert j["progress"] == 1.0 and j["exit_code"] == 0
    # one mdrun of two OpenMP threads, the site's user's, in one task of two cpus
    assert seen["threads"] == 2, seen
    assert seen["uids"] == {pwd.getpwnam(Site.user).pw_uid}, seen
    e = seen["env"]
    assert e.get("SLURM_NTASKS") == "1" and e.get("SLURM_CPUS_PER_TASK") == "2", e
    assert e["SLURM_JOB_ID"] == j["batch"]["job_id"], e
    a = _sacct(hpc_site, j["batch"]["job_id"], "State,AllocCPUS")
    assert a == ["COMPLETED|2"], a
    assert min(seen["frames_while_running"], default=j["frames"]) < j["frames"], seen
    script = (d / "job.sh").read_text()
    assert "export SIMVISOR_CORES=2 OMP_NUM_THREADS=2\n" in script, script
    assert " -ntmpi 1 -ntomp 2 -pin off" in script, script
    f = sb.server.frames("gina", s["id"])
    assert len(f) == j["frames"]
    rows = [x for x in f if x["plot"] == "rows"]
    assert rows and {(x["file"], x["table"]) for x in rows} == {("md.log", "energies")}
    c = rows[0]["columns"]
    assert [r[c.index("Step")] for x in rows for r in x["rows"]] == list(
        range(0, 1001, 50)
    )
    first = dict(zip(c, rows[0]["rows"][0]))
    # drawn at the temperature asked for (1044 atoms: within a few percent)
    assert first["Time"] == 0.0 and abs(first["Temperature"] - 320.0) < 16.0, first
    assert "Finished mdrun" in (d / "md.log").read_text()
    assert not _gmx(d)


def test_grompps_refusal_is_the_runs_error_in_its_words(sbatch_factory, hpc_site):
    sb = sbatch_factory("prompt")
    sb.server.add_user("hugo")
    sb.sign_in("hugo")
    # a Nose-Hoover thermostat needs tau-t of 20 coupling intervals: grompp
    # warns, and with no warning allowed it stops (exit code 1)
    s = sb.server.create("hugo", "gromacs", thermostat="nose-hoover", tau_t=0.1)
    sb.server.run("hugo", s["id"], driver="sbatch", cores=1)
    j = sb.server.wait_status("hugo", s["id"], ("completed", "error"), 120)
    assert j["status"] == "error" and j["exit_code"] == 1, j
    # Slurm's end, then grompp's own words (grompp.log, the gromacs_log parser)
    assert j["error"] == (
        "exit code 1 (FAILED): "
        "Too many warnings (1).\n"
        "If you are sure all warnings are harmless, use the -maxwarn option.\n"
        "WARNING 1 [file md.mdp]:\n"
        "  For proper integration of the Nose-Hoover thermostat, tau-t (0.1) should\n"
        "  be at least 20 times larger than nsttcouple*dt (0.02)"
    )
    assert _sacct(hpc_site, j["batch"]["job_id"], "State,ExitCode") == ["FAILED|1:0"]
    d = _run_dir(sb, s["id"])
    assert "Too many warnings (1)." in (d / "run.err").read_text()
    assert not (d / "md.log").exists() and not procs_under(d)
    assert not sb.server.frames("hugo", s["id"])
