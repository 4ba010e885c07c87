"""Sweeps on the sbatch driver against the test HPC site: one Slurm job array.

The members of a sweep handed over together are one ``sbatch --array``
(`agent.slurm_array`), each a task ``ARRAYID_TASK`` in its own run
directory; the agent follows them with one squeue and one sacct a round,
and cancels many with one scancel. The Slurm commands the agent ran are in
its log on the login node (``submitted_array``, ``scancel`` lines).
"""

import subprocess

import pytest

from agent import slurm_text
from tests.conftest import wait_for

pytestmark = pytest.mark.slurm

#: members of the sweeps here, and a plan that runs them all at once
MEMBERS = 20


def _as_site_user(site, *argv):
    return subprocess.run(
        ["runuser", "-u", site.user, "--", *argv],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout


def _squeue(site):
    """{job id: state} of the site user's jobs and array tasks (``-r``)."""
    o = _as_site_user(site, "squeue", "--me", "-h", "-t", "all", "-r", "-o", "%i|%T")
    return dict(l.split("|") for l in o.split())


def _active(site):
    a = ("PENDING", "RUNNING", "COMPLETING", "CONFIGURING")
    return [i for i, t in _squeue(site).items() if t in a]


def _sacct(site, job_id):
    """{task id: state} of an array in sacct (tasks that never ran: one record)."""
    o = _as_site_user(
        site, "sacct", "-n", "-P", "-X", "-j", job_id, "-o", slurm_text.SACCT_FORMAT
    )
    return {i: s[0] for i, s in slurm_text.parse_sacct(o).items()}


def _agent_log(sb, event):
    """The agent's log lines of `event`."""
    p = sb.site.home / sb.work_dir / "agent" / "agent.log"
    return [l for l in p.read_text().splitlines() if l.split()[1:2] == [event]]


def _sweep(sb, user, n, secs, **body):
    w = sb.server.api(
        "POST",
        "/sweeps",
        user,
        json=dict(code="sleep", axes={"secs": [secs] * n}, driver="sbatch", **body),
        expect=202,
    ).json()
    return w, [m["simulation"] for m in _detail(sb, user, w["id"])["members"]]


def _detail(sb, user, sweep_id):
    return sb.server.api("GET", f"/sweeps/{sweep_id}", user, expect=200).json()


def _job_ids(sb, user, sims):
    """The members' Slurm job ids, once each has one."""

    def _ids():
        b = [sb.server.job(user, s).get("batch") or {} for s in sims]
        return all(x.get("job_id") for x in b) and [x["job_id"] for x in b]

    return wait_for(_ids, 30, what="every member submitted")


def _one_array(job_ids):
    """The array's job id, checking the members are its tasks 0..n-1 in order."""
    a = {i.split("_")[0] for i in job_ids}
    assert len(a) == 1, job_ids
    (a,) = a
    assert job_ids == [f"{a}_{t}" for t in range(len(job_ids))]
    return a


def _array_dirs(sb):
    d = sb.site.home / sb.work_dir / "run" / slurm_text.ARRAYS_DIR
    return sorted(p.name for p in d.iterdir()) if d.exists() else []


def test_a_sweep_is_one_array_and_its_cancel_one_scancel(sbatch_factory, hpc_site):
    sb = sbatch_factory(
        "prompt", host={"cores": 2 * MEMBERS}, basic_max_running=MEMBERS
    )
    sb.server.add_user("ann")
    sb.sign_in("ann")
    w, sims = _sweep(sb, "ann", MEMBERS, 1)
    a = _one_array(_job_ids(sb, "ann", sims))
    # Slurm's view: one array job of 20 tasks (2 run at once on the 2 cores)
    q = {i: t for i, t in _squeue(hpc_site).items() if i.startswith(f"{a}_")}
    assert sorted(q) == sorted(f"{a}_{t}" for t in range(MEMBERS)), q
    (s,) = _agent_log(sb, "submitted_array")
    assert f"job_id={a}" in s and f"tasks={MEMBERS}" in s
    wait_for(
        lambda: _detail(sb, "ann", w["id"])["counts"].get("completed", 0) >= 3,
        60,
        what="3 members completed",
    )
    assert len(_agent_log(sb, "scancel")) == 0
    d = sb.server.api(
        "POST", f"/sweeps/{w['id']}/cancel", "ann", json={}, expect=200
    ).json()
    c = d["counts"]
    assert set(c) <= {"completed", "canceled"} and sum(c.values()) == MEMBERS, c
    assert c["completed"] >= 3 and c["canceled"] >= 1, c
    # every member terminal, no Slurm job of the test left, one scancel
    assert not _active(hpc_site)
    assert len(_agent_log(sb, "scancel")) == 1
    d = _detail(sb, "ann", w["id"])
    done = {m["simulation"] for m in d["members"] if m["status"] == "completed"}
    run = hpc_site.home / sb.work_dir / "run"
    for i, sid in enumerate(sims):
        j = sb.server.job("ann", sid)
        assert j["batch"]["job_id"] == f"{a}_{i}"
        if sid in done:
            # it ran in its member's own run directory
            assert "#simvisor " in (run / sid / "run.out").read_text()
        else:
            assert j["status"] == "canceled", j
            assert j["error"] == "its sweep was canceled", j
    # Slurm's accounting says the same of every task (those that never ran
    # are one record; the records of the last ones to end come a little later)
    want = {
        f"{a}_{i}": "COMPLETED" if sid in done else "CANCELLED"
        for i, sid in enumerate(sims)
    }
    wait_for(lambda: _sacct(hpc_site, a) == want, 30, what=f"sacct says {want}")
    # the array's directory went with its last task
    wait_for(lambda: not _array_dirs(sb), 10, what="array directory removed")


def test_tasks_that_slurm_ends_end_each_their_way(sbatch_factory, hpc_site):
    sb = sbatch_factory("prompt", host={"cores": 8}, basic_max_running=4)
    sb.server.add_user("ben")
    sb.sign_in("ben")
    w, sims = _sweep(sb, "ben", 4, 30, max_parallel=1)
    ids = _job_ids(sb, "ben", sims)
    a = _one_array(ids)
    # max_parallel is the array's %LIMIT: Slurm runs one task at a time
    o = _as_site_user(hpc_site, "scontrol", "show", "job", a)
    assert "ArrayTaskThrottle=1" in o, o
    wait_for(
        lambda: sb.server.job("ben", sims[0])["batch"]["state"] == "RUNNING",
        30,
        what="task 0 running",
    )
    j = sb.server.job("ben", sims[2])
    assert j["batch"]["state"] == "PENDING", j
    assert j["batch"]["reason"] == "JobArrayTaskLimit", j
    # canceled in Slurm, not here: a running task, and a pending one (which
    # leaves no record in Slurm at all)
    _as_site_user(hpc_site, "scancel", ids[0], ids[2])
    for s in (sims[0], sims[2]):
        j = sb.server.wait_status("ben", s, {"canceled", "error", "completed"}, 30)
        assert j["status"] == "canceled", j
        assert "canceled in Slurm" in j["error"], j
    # one member canceled here: scancel of its task only, the others go on
    wait_for(
        lambda: sb.server.job("ben", sims[1])["batch"]["state"] == "RUNNING",
        30,
        what="task 1 running",
    )
    r = sb.server.api("POST", f"/simulations/{sims[3]}/cancel", "ben", expect=200)
    assert r.json()["status"] == "canceled" and r.json()["error"] is None
    (c,) = _agent_log(sb, "scancel")
    assert f"argv={ids[3]}" in c, c
    assert sb.server.job("ben", sims[1])["status"] == "running"
    assert _squeue(hpc_site)[ids[1]] == "RUNNING"
    sb.server.api("POST", f"/sweeps/{w['id']}/cancel", "ben", json={}, expect=200)
    assert not _active(hpc_site)


def test_an_agent_started_again_reattaches_the_tasks(sbatch_factory, hpc_site):
    sb = sbatch_factory("prompt", host={"cores": 8}, basic_max_running=4)
    sb.server.add_user("cy")
    sb.sign_in("cy")
    w, sims = _sweep(sb, "cy", 4, 2, max_parallel=2)
    ids = _job_ids(sb, "cy", sims)
    _one_array(ids)
    wait_for(
        lambda: sb.server.job("cy", sims[0])["batch"]["state"] == "RUNNING",
        30,
        what="task 0 running",
    )
    old = sb.kill_agent()
    assert old
    wait_for(
        lambda: all(sb.server.job("cy", s)["status"] == "lost" for s in sims),
        20,
        what="members lost",
    )
    assert _array_dirs(sb)
    sb.sign_in("cy")
    assert sb.agent_pid() != old
    wait_for(
        lambda: _detail(sb, "cy", w["id"])["status"] == "done", 60, what="sweep done"
    )
    for s, i in zip(sims, ids):
        j = sb.server.job("cy", s)
        assert j["status"] == "completed" and j["batch"]["job_id"] == i, j
        assert j["result"] == {"secs": 2.0}, j
    assert not _active(hpc_site)
    wait_for(lambda: not _array_dirs(sb), 10, what="array directory removed")
