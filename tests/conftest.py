"""Fixtures: real supervisors as real processes on ephemeral loopback ports.

Everything a test starts lives under its own temporary data directory, so
teardown finds what is left by that directory (an agent's command line names
it; a simulation's working directory is inside it), kills exactly those
processes, and fails the test if any were left behind.
"""

import json
import os
import pathlib
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest
import requests

ROOT = pathlib.Path(__file__).resolve().parents[1]

#: settings that keep integration tests quick; each test may override
FAST = {
    "lost_grace_secs": 6,
    "agent_start_timeout_secs": 20,
    "agent_idle_secs": 60,
    "cancel_timeout_secs": 10,
    "kill_grace_secs": 1.0,
    "max_run_slack_secs": 2,
}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout_secs=20, interval_secs=0.02, what="condition"):
    """Poll `predicate` until truthy (tests only: the outside world)."""
    end = time.monotonic() + timeout_secs
    while True:
        v = predicate()
        if v:
            return v
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout_secs}s waiting for {what}")
        time.sleep(interval_secs)


def procs_under(path, exclude=()):
    """Pids whose command line or working directory is under `path`."""
    p = str(path)
    res = []
    for d in pathlib.Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) in (os.getpid(), *exclude):
            continue
        try:
            if (d / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                continue
            c = (
                (d / "cmdline")
                .read_bytes()
                .replace(b"\0", b" ")
                .decode(errors="replace")
            )
            w = os.readlink(d / "cwd")
        except OSError:
            continue
        if p in c or w.startswith(p):
            res.append(int(d.name))
    return res


def procs_named(path, comm):
    """{pid: (uid, threads)} of the processes called `comm` working under `path`."""
    rv = {}
    for p in procs_under(path):
        d = pathlib.Path(f"/proc/{p}")
        try:
            if (d / "comm").read_text().strip() == comm:
                rv[p] = (d.stat().st_uid, len(list((d / "task").iterdir())))
        except OSError:
            pass
    return rv


class Server:
    """A supervisor process and a requests session per user."""

    def __init__(self, data_dir, test_codes=True, nofile=None, **cfg):
        """
        Args:
            nofile (tuple): (soft, hard) open-file limit of the supervisor
        """
        self.data_dir = pathlib.Path(data_dir)
        self.test_codes = test_codes
        self.nofile = nofile
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.cfg = dict(FAST, **cfg)
        self.proc = None
        self.tokens = {}
        self.log_path = self.data_dir / "supervisor.log"

    def start(self):
        self.data_dir.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        for k, v in self.cfg.items():
            env[f"SUPERVISOR_CONFIG_{k.upper()}"] = str(v)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    *(
                        ["-m", "cProfile", "-o", os.environ["SIMVISOR_PROFILE"]]
                        if os.environ.get("SIMVISOR_PROFILE")
                        else []
                    ),
                    "-m",
                    "supervisor.cli",
                    "service",
                    "--port",
                    str(self.port),
                    "--data-dir",
                    str(self.data_dir),
                    *(["--test-codes"] if self.test_codes else []),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=ROOT,
                preexec_fn=self._limits if self.nofile else None,
            )
        wait_for(self._healthy, 30, what="supervisor health")
        self.tokens["admin"] = (self.data_dir / "admin-token").read_text().strip()
        return self

    def _limits(self):
        resource.setrlimit(resource.RLIMIT_NOFILE, self.nofile)

    def _healthy(self):
        if self.proc.poll() is not None:
            raise AssertionError(
                f"supervisor exited: {self.log_path.read_text()[-3000:]}"
            )
        try:
            return requests.get(self.url + "/api/health", timeout=1).status_code == 200
        except requests.ConnectionError:
            return False

    def stop(self, sig=signal.SIGTERM):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(15)
        self.proc = None

    def api(self, method, path, user="admin", expect=None, **kwargs):
        h = kwargs.pop("headers", {})
        if user:
            h["Authorization"] = "Bearer " + self.tokens[user]
        r = requests.request(
            method, self.url + "/api" + path, headers=h, timeout=30, **kwargs
        )
        if expect is not None:
            assert r.status_code == expect, f"{method} {path}: {r.status_code} {r.text}"
        return r

    def add_user(self, name, plan="basic", role="user"):
        r = self.api(
            "POST",
            "/admin/users",
            json={"name": name, "plan": plan, "role": role},
            expect=201,
        )
        self.tokens[name] = r.json()["token"]
        return self.tokens[name]

    def create(self, user, code, **params):
        return self.api(
            "POST",
            "/simulations",
            user,
            json={"code": code, "name": code, "params": params},
            expect=201,
        ).json()

    def run(self, user, sim_id, **body):
        return self.api(
            "POST", f"/simulations/{sim_id}/run", user, json=body, expect=202
        ).json()

    def frames(self, user, sim_id):
        return self.api(
            "GET", f"/simulations/{sim_id}/frames", user, expect=200
        ).json()["frames"]

    def job(self, user, sim_id):
        return self.api("GET", f"/simulations/{sim_id}/job", user, expect=200).json()

    def wait_status(self, user, sim_id, statuses, timeout_secs=30):
        s = {statuses} if isinstance(statuses, str) else set(statuses)
        return wait_for(
            lambda: (j := self.job(user, sim_id))["status"] in s and j,
            timeout_secs,
            what=f"{sim_id} status in {s}",
        )

    def cleanup(self):
        """Stop everything started under the data directory; return leftovers."""
        if self.proc and self.proc.poll() is None:
            try:
                for a in self.api("GET", "/admin/agents").json():
                    self.api("POST", f"/admin/agents/{a['id']}/kill")
                wait_for(
                    lambda: not self.api("GET", "/admin/agents").json(),
                    15,
                    what="agents gone",
                )
                wait_for(
                    lambda: not procs_under(self.data_dir, (self.proc.pid,)),
                    15,
                    what="processes gone",
                )
            except (AssertionError, KeyError, requests.RequestException):
                pass
        self.stop()
        left = procs_under(self.data_dir)
        for p in left:
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return left


@pytest.fixture
def server_factory(tmp_path):
    """server_factory(**cfg) -> a started `Server`; all are cleaned up."""
    servers = []

    def _make(data_dir=None, **cfg):
        s = Server(data_dir or tmp_path / f"data{len(servers)}", **cfg)
        servers.append(s)
        return s.start()

    yield _make
    left = []
    for s in servers:
        left += s.cleanup()
    assert not left, f"processes left behind: {left}"


@pytest.fixture
def server(server_factory):
    return server_factory()


# --- the sbatch driver against the test HPC site (tests/hpc_site.py) ---------

#: the session fixture ``hpc_site`` (Slurm, sshd with one-time codes)
pytest_plugins = ["tests.hpc_site"]


class Sbatch:
    """A supervisor with one login node "hpc" of the test site, and helpers."""

    def __init__(self, site, server, shape, work_dir):
        self.site = site
        self.server = server
        self.shape = shape
        self.work_dir = work_dir

    def sign_in(self, user, password=None, otp=None, expect=200):
        if otp is None and self.shape != "none":
            otp = self.site.otp()
        r = self.server.api(
            "POST",
            "/sbatch/login",
            user,
            json={
                "host": "hpc",
                "user": self.site.user,
                "password": self.site.password if password is None else password,
                "otp": otp,
            },
        )
        assert r.status_code == expect, r.text
        return r.json()

    def agent_pid(self):
        """The pid in the agent's lock file on the login node (or None)."""
        try:
            t = (self.site.home / self.work_dir / "agent" / "agent.lock").read_text()
            return int(t.strip() or 0) or None
        except (OSError, ValueError):
            return None

    def kill_agent(self, sig=signal.SIGKILL):
        """Kill the login node's agent (we started it, through sshd)."""
        p = self.agent_pid()
        if p and _cmdline_has(p, self.work_dir):
            try:
                os.kill(p, sig)
            except ProcessLookupError:
                return p
            wait_for(lambda: not _cmdline_has(p, self.work_dir), 15, what="agent gone")
        return p

    def slurm_job(self, user, sim_id):
        b = self.server.job(user, sim_id).get("batch")
        return b and b["job_id"]


def _cmdline_has(pid, text):
    try:
        c = pathlib.Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return text.encode() in c


@pytest.fixture
def sbatch_factory(server_factory, hpc_site, tmp_path):
    """sbatch_factory(shape="prompt", **host_or_cfg) -> `Sbatch` (started).

    Each test has its own work directory in the test user's home; at the end
    its agents are killed, its Slurm jobs canceled, and the directory removed.
    """
    cmd = hpc_site.install_agent(ROOT / "agent")
    made = []

    def _make(shape="prompt", host=None, **cfg):
        w = f"sv-{tmp_path.name}-{len(made)}"
        s = hpc_site.sshd["append" if shape == "none" else shape]
        h = dict(
            name="hpc",
            address="127.0.0.1",
            port=s.port,
            known_hosts=s.known_hosts_line(),
            otp=shape,
            cores=2,
            agent_command=cmd,
            work_dir=w,
        )
        h.update(host or {})
        x = Sbatch(hpc_site, None, shape, w)
        made.append(x)
        x.server = server_factory(sbatch_hosts=json.dumps([h]), **cfg)
        return x

    yield _make
    for x in made:
        x.kill_agent()
    hpc_site.cancel_all()
    for x in made:
        shutil.rmtree(hpc_site.home / x.work_dir, ignore_errors=True)
