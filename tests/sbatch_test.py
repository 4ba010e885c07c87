"""The sbatch driver against the test HPC site: a real sshd with one-time
codes through PAM, real Slurm (slurmctld, slurmd, slurmdbd, munge).

Every test signs in through ``POST /api/sbatch/login`` as a user of ours,
which starts the agent on the "login node" (this machine, as the site's
test user) over SSH; runs are Slurm jobs of that user.
"""

import json
import os
import pathlib
import signal
import subprocess
import time

import asyncssh
import pytest

from tests.conftest import wait_for

pytestmark = pytest.mark.slurm


def _as_site_user(site, *argv):
    return subprocess.run(
        ["runuser", "-u", site.user, "--", *argv],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout


def _jobs(site, active_only=False):
    """The site user's job ids in squeue (active: not yet ended)."""
    o = _as_site_user(site, "squeue", "--me", "-h", "-t", "all", "-o", "%i|%T")
    return [
        i
        for i, _, t in (l.partition("|") for l in o.split())
        if not active_only or t in ("PENDING", "RUNNING", "COMPLETING", "CONFIGURING")
    ]


def _sacct(site, job_id, fields):
    o = _as_site_user(site, "sacct", "-n", "-P", "-X", "-j", job_id, "-o", fields)
    return o.splitlines()


def _blocker(site, cpus):
    """A job of the site user that holds `cpus` cores until canceled."""
    return _as_site_user(
        site,
        "sbatch",
        "--parsable",
        f"--ntasks={cpus}",
        "--output=/dev/null",
        "--wrap=sleep 300",
    ).strip()


def _wait_batch(sb, user, sim_id, state):
    """Wait until the supervisor shows the run's Slurm job in `state`."""
    return wait_for(
        lambda: (j := sb.server.job(user, sim_id)).get("batch")
        and j["batch"]["state"] == state
        and j,
        30,
        what=f"Slurm state {state}",
    )


def _forever_running(sb, user):
    """A signed-in `user` with a `forever` run RUNNING in Slurm: (sim, job id)."""
    sb.server.add_user(user)
    sb.sign_in(user)
    s = sb.server.create(user, "forever")
    sb.server.run(user, s["id"], driver="sbatch")
    _wait_batch(sb, user, s["id"], "RUNNING")
    return s, sb.slurm_job(user, s["id"])


def _error(sb, user, expect_code, **kwargs):
    r = sb.sign_in(user, expect=kwargs.pop("status", 400), **kwargs)
    assert r["error"] == expect_code, r
    return r["message"]


def _hosts(sb, user):
    return sb.server.api("GET", "/sbatch/hosts", user, expect=200).json()["hosts"]


def _states(sb, user, sim_id, until, timeout_secs=60):
    """Slurm states the job passes through (as the supervisor shows them)."""
    seen = []

    def _poll():
        j = sb.server.job(user, sim_id)
        s = (j.get("batch") or {}).get("state")
        if s and (not seen or seen[-1] != s):
            seen.append(s)
        return j["status"] in until and j

    j = wait_for(_poll, timeout_secs, interval_secs=0.05, what=f"status in {until}")
    return seen, j


def test_sign_in_errors_each_say_what_failed(sbatch_factory, hpc_site):
    sb = sbatch_factory("prompt")
    sb.server.add_user("alice")
    assert _hosts(sb, "alice") == [
        {
            "name": "hpc",
            "address": "127.0.0.1",
            "otp": "prompt",
            "signed_in": False,
            "waiting": 0,
        }
    ]
    m = _error(sb, "alice", "bad_password", password="wrong-password")
    assert "refused the password" in m
    m = _error(sb, "alice", "bad_code", otp=hpc_site.bad_otp())
    assert "one-time code" in m
    _error(sb, "alice", "bad_code", otp="")
    r = sb.server.api(
        "POST",
        "/sbatch/login",
        "alice",
        json={"host": "nope", "user": "x", "password": "y", "otp": "1"},
        expect=404,
    )
    assert r.json()["error"] == "unknown_host"
    assert not _hosts(sb, "alice")[0]["signed_in"]
    # nothing was started on the login node
    assert sb.agent_pid() is None


def test_unknown_host_key_unreachable_host_and_missing_agent(sbatch_factory, hpc_site):
    k = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode()
    p = hpc_site.sshd["prompt"].port
    sb = sbatch_factory("prompt", host={"known_hosts": f"[127.0.0.1]:{p} {k}".strip()})
    sb.server.add_user("bob")
    m = _error(sb, "bob", "host_key_mismatch", status=502)
    assert "host key" in m
    sb2 = sbatch_factory("prompt", host={"port": _free_port()})
    sb2.server.add_user("bob")
    _error(sb2, "bob", "host_unreachable", status=502)
    sb3 = sbatch_factory(
        "prompt", host={"agent_command": ["/nonexistent/python3", "-m", "agent"]}
    )
    sb3.server.add_user("bob")
    m = _error(sb3, "bob", "agent_command_missing", status=502)
    assert "/nonexistent/python3" in m


def test_agent_that_does_not_call_back(sbatch_factory):
    sb = sbatch_factory(
        "prompt",
        host={"supervisor_url": f"ws://127.0.0.1:{_free_port()}/agent"},
        agent_start_timeout_secs=3,
    )
    sb.server.add_user("carol")
    m = _error(sb, "carol", "agent_no_callback", status=504)
    assert "did not call back" in m and "connect_failed" in m
    assert sb.kill_agent()


def test_append_shape_and_a_good_sign_in_starts_the_agent(sbatch_factory, hpc_site):
    sb = sbatch_factory("append")
    sb.server.add_user("dave")
    m = _error(sb, "dave", "bad_credentials", otp=hpc_site.bad_otp())
    assert "password or the one-time code" in m
    r = sb.sign_in("dave")
    assert r["signed_in"] and r["agent"]["state"] == "connected"
    assert _hosts(sb, "dave")[0]["signed_in"]
    p = sb.agent_pid()
    assert p and r["agent"]["pid"] == p
    # the agent runs as the site's user, in its own session, secret not in argv
    st = os.stat(f"/proc/{p}")
    assert st.st_uid == int(_as_site_user(hpc_site, "id", "-u"))
    assert os.getsid(p) == p
    c = pathlib.Path(f"/proc/{p}/cmdline").read_bytes()
    assert b"--slurm" in c and b"secret" not in c.lower()
    # signed in already: a second sign-in changes nothing
    assert sb.sign_in("dave", password="ignored", otp="000000")["agent"]["id"] == (
        r["agent"]["id"]
    )
    assert sb.agent_pid() == p


def test_heat_with_two_tasks_pending_running_completed(sbatch_factory, hpc_site):
    sb = sbatch_factory("prompt")
    sb.server.add_user("erin")
    s = sb.server.create("erin", "heat", steps=200000, nx=101)
    # the run waits for a sign-in, and says so
    sb.server.run("erin", s["id"], driver="sbatch", cores=2)
    j = sb.server.wait_status("erin", s["id"], "queued")
    wait_for(
        lambda: sb.server.job("erin", s["id"])["situation"].startswith(
            "sign in to hpc"
        ),
        10,
        what="sign-in situation",
    )
    assert _hosts(sb, "erin")[0]["waiting"] == 1
    # both cores of the node are taken: the job must wait in Slurm's queue
    blocker = _blocker(hpc_site, 2)
    sb.sign_in("erin")
    _wait_batch(sb, "erin", s["id"], "PENDING")
    j = sb.server.job("erin", s["id"])
    assert j["status"] == "running" and j["situation"].startswith("Slurm job ")
    _as_site_user(hpc_site, "scancel", blocker)
    seen, j = _states(sb, "erin", s["id"], {"completed", "error"})
    assert j["status"] == "completed", j
    assert seen[0] in ("PENDING", "RUNNING") and seen[-1] == "COMPLETED", seen
    assert "RUNNING" in seen or j["frames"] > 0
    jid = j["batch"]["job_id"]
    # Slurm's own record: 2 tasks, completed
    a = _sacct(hpc_site, jid, "State,NTasks,AllocCPUS")
    assert a[0].startswith("COMPLETED"), a
    assert a[0].split("|")[2] == "2", a
    f = sb.server.api("GET", f"/simulations/{s['id']}/frames", "erin", expect=200)
    assert len(f.json()["frames"]) == j["frames"] > 10
    # files come through the agent, from the login node's run directory
    names = {
        x["path"]
        for x in sb.server.api(
            "GET", f"/simulations/{s['id']}/files", "erin", expect=200
        ).json()["files"]
    }
    assert {"run.out", "job.sh", "params.json", "run.log"} <= names
    out = sb.server.api(
        "GET", f"/simulations/{s['id']}/files/run.out", "erin", expect=200
    )
    assert (
        out.content
        == (hpc_site.home / sb.work_dir / "run" / s["id"])
        .joinpath("run.out")
        .read_bytes()
    )
    assert b"#simvisor " in out.content


def test_cancel_leaves_no_job_in_squeue(sbatch_factory, hpc_site):
    sb = sbatch_factory("prompt")
    s, jid = _forever_running(sb, "fay")
    assert jid in _jobs(hpc_site)
    t = time.monotonic()
    r = sb.server.api("POST", f"/simulations/{s['id']}/cancel", "fay", expect=200)
    assert r.json()["status"] == "canceled"
    assert time.monotonic() - t < 10
    # confirmed gone before the reply: nothing of it left in squeue
    assert jid not in _jobs(hpc_site, active_only=True)
    assert _sacct(hpc_site, jid, "State")[0].startswith("CANCELLED")


def test_run_past_its_time_ends_timed_out(sbatch_factory, hpc_site):
    sb = sbatch_factory("prompt", basic_max_run_secs=3)
    sb.server.add_user("gil")
    sb.sign_in("gil")
    s = sb.server.create("gil", "forever")
    sb.server.run("gil", s["id"], driver="sbatch")
    j = sb.server.wait_status("gil", s["id"], {"timed_out", "error"}, 60)
    assert j["status"] == "timed_out", j
    jid = j["batch"]["job_id"]
    assert jid not in _jobs(hpc_site, active_only=True)


def test_slurmctld_down_is_unknown_then_the_true_end(sbatch_factory, hpc_site):
    sb = sbatch_factory("prompt")
    sb.server.add_user("hal")
    sb.sign_in("hal")
    s = sb.server.create("hal", "sleep", secs=6)
    sb.server.run("hal", s["id"], driver="sbatch")
    _wait_batch(sb, "hal", s["id"], "RUNNING")
    hpc_site.stop_slurmctld()
    try:
        j = wait_for(
            lambda: (j := sb.server.job("hal", s["id"]))["batch"]["state"] == "UNKNOWN"
            and j,
            30,
            what="UNKNOWN",
        )
        # not an error: the job may well be fine
        assert j["status"] == "running"
        assert "failed" in j["batch"]["reason"]
    finally:
        hpc_site.start_slurmctld()
    j = sb.server.wait_status("hal", s["id"], {"completed", "error"}, 60)
    assert j["status"] == "completed", j


def test_agent_killed_and_signed_in_again_reattaches(sbatch_factory, hpc_site):
    sb = sbatch_factory("prompt")
    sb.server.add_user("ivy")
    sb.sign_in("ivy")
    s = sb.server.create("ivy", "heat", steps=600000, nx=101)
    sb.server.run("ivy", s["id"], driver="sbatch")
    wait_for(
        lambda: sb.server.job("ivy", s["id"])["frames"] > 3, 30, what="some frames"
    )
    jid = sb.slurm_job("ivy", s["id"])
    old = sb.kill_agent()
    assert old
    j = sb.server.wait_status("ivy", s["id"], "lost", 20)
    # the job goes on in Slurm without its agent
    assert jid in _jobs(hpc_site, active_only=True) or _sacct(hpc_site, jid, "State")[
        0
    ].startswith("COMPLETED")
    assert not _hosts(sb, "ivy")[0]["signed_in"]
    # lost, not ended, past the (short) grace of other drivers' runs
    time.sleep(sb.server.cfg["lost_grace_secs"] + 1)
    assert sb.server.job("ivy", s["id"])["status"] == "lost"
    sb.sign_in("ivy")
    assert sb.agent_pid() != old
    j = sb.server.wait_status("ivy", s["id"], {"completed", "error"}, 60)
    assert j["status"] == "completed", j
    assert j["batch"]["job_id"] == jid
    f = sb.server.api("GET", f"/simulations/{s['id']}/frames", "ivy", expect=200)
    fr = f.json()["frames"]
    # the frames before and after the agent's restart are one sequence:
    # none lost, none twice
    st = [x["step"] for x in fr]
    assert len(fr) == j["frames"] > 3 and st == sorted(set(st)) and st[0] == 0
    # the new agent's result is the last frame's (its stdout read again)
    assert j["result"] == {"u_max": max(fr[-1]["u"])}


def test_supervisor_killed_and_restarted_readopts(sbatch_factory, hpc_site):
    sb = sbatch_factory("prompt")
    sb.server.add_user("jo")
    sb.sign_in("jo")
    s = sb.server.create("jo", "sleep", secs=5)
    sb.server.run("jo", s["id"], driver="sbatch")
    _wait_batch(sb, "jo", s["id"], "RUNNING")
    p = sb.agent_pid()
    sb.server.stop(signal.SIGKILL)
    sb.server.start()
    j = sb.server.wait_status("jo", s["id"], {"completed", "error"}, 60)
    assert j["status"] == "completed" and j["result"] == {"secs": 5.0}, j
    # the same agent reconnected: no new sign-in was needed
    assert sb.agent_pid() == p


def _free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_refused_submission_shows_sbatchs_own_words(sbatch_factory, hpc_site):
    sb = sbatch_factory("prompt", host={"partition": "nosuch"})
    sb.server.add_user("kim")
    sb.sign_in("kim")
    s = sb.server.create("kim", "sleep", secs=1)
    sb.server.run("kim", s["id"], driver="sbatch")
    j = sb.server.wait_status("kim", s["id"], {"error", "completed"}, 30)
    assert j["status"] == "error"
    assert j["error"].startswith("Slurm refused the job: sbatch: error:"), j
    assert "invalid partition" in j["error"].lower()
    assert not _jobs(hpc_site, active_only=True)


def test_inputs_plan_options_and_files_in_chunks(sbatch_factory, hpc_site):
    sb = sbatch_factory(
        "prompt",
        sbatch_plan_options=json.dumps({"basic": {"partition": "long"}}),
        max_fetch_bytes=3 * 1024 * 1024,
    )
    sb.server.add_user("lea")
    sb.sign_in("lea")
    s = sb.server.create("lea", "fill", bytes=2_500_000)
    sb.server.api(
        "POST",
        f"/simulations/{s['id']}/files?name=notes.txt",
        "lea",
        data="input for the run\n",
        expect=201,
    )
    sb.server.run("lea", s["id"], driver="sbatch")
    j = sb.server.wait_status("lea", s["id"], {"completed", "error"}, 60)
    assert j["status"] == "completed", j
    d = hpc_site.home / sb.work_dir / "run" / s["id"]
    # the input was written into the run directory before the job ran
    assert (d / "notes.txt").read_text() == "input for the run\n"
    # the plan's option reached sbatch
    o = _as_site_user(
        hpc_site, "squeue", "-h", "-t", "all", "-j", j["batch"]["job_id"], "-o", "%P"
    )
    assert o.split() == ["long"]
    f = sb.server.api("GET", f"/simulations/{s['id']}/files", "lea", expect=200).json()
    assert f["inputs"] == ["notes.txt"]
    assert {"path": "fill.dat", "size": 2_500_000} in [
        {k: x[k] for k in ("path", "size")} for x in f["files"]
    ]
    # 2.5 MB through the agent in 1 MiB chunks, byte for byte
    r = sb.server.api("GET", f"/simulations/{s['id']}/files/fill.dat", "lea")
    assert r.status_code == 200
    assert r.content == (d / "fill.dat").read_bytes()
    # beyond the limit: refused, not cut short
    sb.server.api(
        "PATCH",
        f"/simulations/{s['id']}",
        "lea",
        json={"params": {"bytes": 4_000_000}},
        expect=200,
    )
    sb.server.run("lea", s["id"], driver="sbatch")
    j = sb.server.wait_status("lea", s["id"], {"completed", "error"}, 60)
    assert j["status"] == "completed", j
    r = sb.server.api("GET", f"/simulations/{s['id']}/files/fill.dat", "lea")
    assert r.status_code == 413 and r.json()["error"] == "too_large"
    # paths stay inside the run directory on the login node too
    r = sb.server.api(
        "GET", f"/simulations/{s['id']}/files/..%2F..%2Fagent%2Fjobs.json", "lea"
    )
    assert r.status_code == 404


def test_admin_kill_of_the_agent_cancels_its_jobs(sbatch_factory, hpc_site):
    sb = sbatch_factory("prompt")
    s, jid = _forever_running(sb, "max")
    (a,) = sb.server.api("GET", "/admin/agents", expect=200).json()
    p = sb.agent_pid()
    sb.server.api("POST", f"/admin/agents/{a['id']}/kill", expect=200)
    j = sb.server.wait_status("max", s["id"], {"canceled", "error"}, 20)
    assert j["status"] == "canceled", j
    # the agent was told to shut down: it canceled its job and exited
    wait_for(lambda: jid not in _jobs(hpc_site, active_only=True), 30, what="job gone")
    wait_for(lambda: not os.path.exists(f"/proc/{p}"), 30, what="agent exited")
    assert _hosts(sb, "max")[0]["signed_in"] is False
