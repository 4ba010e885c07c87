"""The test HPC site itself (tests/hpc_site.py): Slurm jobs with accounting,
and logins to both sshd shapes with a password plus a one-time code."""

import subprocess
import time

import asyncssh
import pytest

from tests import hpc_site as site_module

# the session fixture hpc_site (also registered by tests/conftest.py: the
# same plugin is loaded once)
pytest_plugins = ["tests.hpc_site"]

pytestmark = pytest.mark.slurm

_TERMINAL = {
    "COMPLETED",
    "FAILED",
    "CANCELLED",
    "TIMEOUT",
    "NODE_FAIL",
    "OUT_OF_MEMORY",
    "PREEMPTED",
    "BOOT_FAIL",
    "DEADLINE",
}


def _sbatch(site, *args):
    r = site.as_user(["sbatch", "--parsable", "--output=/dev/null", *args])
    return r.stdout.strip().split(";")[0]


def _sacct_state(job_id):
    r = subprocess.run(
        ["sacct", "-j", job_id, "-X", "-n", "-P", "-o", "State,ExitCode"],
        capture_output=True,
        text=True,
        check=True,
    )
    lines = r.stdout.splitlines()
    if not lines:
        return None, None
    state, code = lines[0].split("|")
    return state.split()[0], code


def _squeue_state(job_id):
    r = subprocess.run(
        ["squeue", "-h", "-j", job_id, "-t", "all", "-o", "%T"],
        capture_output=True,
        text=True,
    )
    return r.stdout.strip()


def _wait_end(job_id, secs=30):
    seen = set()
    deadline = time.monotonic() + secs
    while time.monotonic() < deadline:
        seen.add(_squeue_state(job_id))
        state, code = _sacct_state(job_id)
        if state in _TERMINAL:
            return state, code, seen
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not end in {secs}s (seen {seen})")


def test_batch_job_is_accounted(hpc_site):
    site = hpc_site
    job = _sbatch(site, "-n", "2", "--wrap", "srun sleep 1")
    assert job.isdigit()
    assert _squeue_state(job) in {"PENDING", "RUNNING", "CONFIGURING", "COMPLETING"}
    state, code, seen = _wait_end(job)
    assert (state, code) == ("COMPLETED", "0:0"), seen
    assert seen & {"PENDING", "RUNNING", "CONFIGURING", "COMPLETING"}


def test_two_one_cpu_jobs_run_at_once(hpc_site):
    site = hpc_site
    jobs = [_sbatch(site, "-n", "1", "--wrap", "sleep 30") for _ in range(2)]
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if all(_squeue_state(j) == "RUNNING" for j in jobs):
                break
            time.sleep(0.1)
        else:
            raise AssertionError([_squeue_state(j) for j in jobs])
        assert set(jobs) <= set(site.jobs())
    finally:
        site.as_user(["scancel", *jobs])
    for j in jobs:
        state, _, _ = _wait_end(j)
        assert state == "CANCELLED"


def test_scancel_removes_job_from_squeue(hpc_site):
    site = hpc_site
    job = _sbatch(site, "--wrap", "sleep 300")
    assert job in site.jobs()
    site.as_user(["scancel", job])
    deadline = time.monotonic() + 15
    while job in site.jobs():
        assert time.monotonic() < deadline, _squeue_state(job)
        time.sleep(0.1)
    state, _, _ = _wait_end(job)
    assert state == "CANCELLED"


def test_controller_restart_keeps_running_job(hpc_site):
    site = hpc_site
    job = _sbatch(site, "--wrap", "sleep 4; exit 3")
    deadline = time.monotonic() + 10
    while _squeue_state(job) != "RUNNING":
        assert time.monotonic() < deadline, _squeue_state(job)
        time.sleep(0.1)
    site.stop_slurmctld()
    time.sleep(5)  # the job ends while the controller is down
    site.start_slurmctld()
    state, code, _ = _wait_end(job, secs=60)
    assert (state, code) == ("FAILED", "3:0")


def test_otp_codes():
    site = site_module.Site()
    codes = [site.otp() for _ in range(3)]
    assert all(len(c) == 6 and c.isdigit() for c in codes)
    assert site._step >= int(time.time()) // 30 + 2
    # oathtool's code is RFC 6238's (HMAC-SHA1 of the step, the secret in hex)
    assert site_module.totp(site.secret, site._step) == codes[-1]
    assert site.bad_otp() not in codes


def test_install_agent(hpc_site, tmp_path):
    site = hpc_site
    pkg = tmp_path / "probe"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "__main__.py").write_text(
        "import sys, tornado\nprint('agent', sys.executable, tornado.version)\n"
    )
    cmd = site.install_agent(pkg)
    r = site.as_user(cmd)
    assert r.stdout.startswith(f"agent {site.python} ")
    r = site.as_user(["sh", "-c", site.agent_command])
    assert r.stdout.startswith("agent ")


# ---- the login node ----


def _known_hosts(sshd):
    return asyncssh.import_known_hosts(sshd.known_hosts_line() + "\n")


def _connect(site, shape, **kw):
    sshd = site.sshd[shape]
    kw.setdefault("known_hosts", _known_hosts(sshd))
    return asyncssh.connect(
        site.host,
        sshd.port,
        username=site.user,
        client_keys=None,
        agent_path=None,
        connect_timeout=20,
        **kw,
    )


class _Kbdint(asyncssh.SSHClient):
    """Answers the "prompt" shape: password, then code; records prompts."""

    def __init__(self, password, code):
        self.answers = {"password": password, "code": code}
        self.prompts = []
        self.tries = 0

    def kbdint_auth_requested(self):
        # one try: else asyncssh tries until sshd gives up
        self.tries += 1
        return "" if self.tries == 1 else None

    def kbdint_challenge_received(self, name, instructions, lang, prompts):
        out = []
        for text, _echo in prompts:
            self.prompts.append(text)
            key = "password" if text.lower().startswith("password") else "code"
            out.append(self.answers[key])
        return out


async def _kbdint_login(site, password, code):
    client = _Kbdint(password, code)
    try:
        conn = await _connect(
            site,
            "prompt",
            client_factory=lambda: client,
            preferred_auth="keyboard-interactive",
        )
    except asyncssh.PermissionDenied:
        return None, client.prompts
    return conn, client.prompts


async def test_append_shape_login(hpc_site):
    site = hpc_site
    async with _connect(
        site,
        "append",
        password=site.password + site.otp(),
        preferred_auth="password",
    ) as conn:
        r = await conn.run("id -un && sbatch --version", check=True)
    lines = r.stdout.split("\n")
    assert lines[0] == site.user
    assert lines[1].startswith("slurm")


async def test_append_shape_refuses_bad_password_and_bad_code(hpc_site):
    site = hpc_site
    for password in (
        "wrong-pass" + site.otp(),
        site.password + site.bad_otp(),
        site.password,
    ):
        with pytest.raises(asyncssh.PermissionDenied):
            async with _connect(
                site, "append", password=password, preferred_auth="password"
            ):
                pass


async def test_prompt_shape_login(hpc_site):
    site = hpc_site
    conn, prompts = await _kbdint_login(site, site.password, site.otp())
    assert conn is not None, prompts
    async with conn:
        r = await conn.run(f"id -un && {site.python} -c 'import tornado'", check=True)
    assert r.stdout.strip() == site.user
    assert [p.split()[0] for p in prompts] == ["Password:", "One-time"]


async def test_prompt_shape_bad_password_gets_no_code_prompt(hpc_site):
    site = hpc_site
    conn, prompts = await _kbdint_login(site, "wrong-pass", site.otp())
    assert conn is None
    assert prompts and all(p.startswith("Password") for p in prompts)


async def test_prompt_shape_bad_code(hpc_site):
    site = hpc_site
    conn, prompts = await _kbdint_login(site, site.password, site.bad_otp())
    assert conn is None
    assert any(p.startswith("One-time") for p in prompts)


async def test_unknown_host_key_is_refused(hpc_site):
    site = hpc_site
    other = asyncssh.generate_private_key("ssh-ed25519")
    line = f"[{site.host}]:{site.sshd['append'].port} "
    line += other.export_public_key().decode().strip()
    with pytest.raises(asyncssh.HostKeyNotVerifiable):
        async with _connect(
            site,
            "append",
            known_hosts=asyncssh.import_known_hosts(line + "\n"),
            password=site.password + site.otp(),
            preferred_auth="password",
        ):
            pass


def test_ssh_site_shapes_differ(hpc_site):
    site = hpc_site
    a, p = site.sshd["append"], site.sshd["prompt"]
    assert a.port != p.port
    assert a.host_key_pub.startswith("ssh-ed25519 AAAA")
    assert a.known_hosts_line() == f"[127.0.0.1]:{a.port} {a.host_key_pub}"
