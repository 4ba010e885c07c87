"""Private Docker engines for the docker tests, and the agent image in them.

`Engine` runs a ``dockerd`` of our own: its own data root, exec root, pid
file and unix socket under a temporary directory (never the system's paths,
never systemd), no bridge and no iptables, so containers get no network
unless a test asks for the host's. With ``tls=True`` it also listens on
127.0.0.1 over TCP with certificates made here (a CA, a server and a client
certificate). `Engine.stop` removes every container of the engine and stops
the daemon by its pid.

`need` skips a test outside CI and fails it in CI (``CI=true``).
"""

import os
import pathlib
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import docker
import pytest

from supervisor.drivers import docker_hosts

ROOT = pathlib.Path(__file__).resolve().parents[1]

BUILD_SCRIPT = ROOT / "etc" / "docker" / "build-agent-image.sh"

_START_SECS = 60
_STOP_SECS = 30


def need(ok, reason):
    """Skip (outside CI) or fail (CI=true) unless `ok`."""
    if ok:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI needs: {reason}")
    pytest.skip(reason)


def check_host():
    """Why Docker tests cannot run here, or None."""
    if not shutil.which("dockerd") or not shutil.which("docker"):
        return "no dockerd (etc/setup-test-host.sh installs docker.io)"
    if os.getuid() != 0:
        return "dockerd needs root"
    return None


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Engine:
    """A dockerd of our own."""

    def __init__(self, name, tls=False):
        self.name = name
        # short: unix socket paths are limited to 108 bytes
        self.root = pathlib.Path(tempfile.mkdtemp(prefix=f"svd-{name}-", dir="/tmp"))
        self.sock = self.root / "docker.sock"
        self.unix_url = f"unix://{self.sock}"
        self.tls_dir = None
        self.tcp_url = None
        self.url = self.unix_url
        self.proc = None
        self.log_path = self.root / "dockerd.log"
        self.tls = tls

    def start(self):
        a = [
            "dockerd",
            "--config-file",
            str(self._write("daemon.json", "{}\n")),
            "--data-root",
            str(self.root / "data"),
            "--exec-root",
            str(self.root / "exec"),
            "--pidfile",
            str(self.root / "dockerd.pid"),
            "--host",
            self.unix_url,
            "--bridge=none",
            "--iptables=false",
            "--ip6tables=false",
            "--ip-masq=false",
            "--userland-proxy=false",
            "--log-level=warn",
        ]
        if self.tls:
            self.tls_dir = self.root / "client"
            s = _certs(self.root / "certs", self.tls_dir)
            self.tcp_url = f"tcp://127.0.0.1:{_free_port()}"
            self.url = self.tcp_url
            a += [
                "--host",
                self.tcp_url,
                "--tlsverify",
                "--tlscacert",
                str(s / "ca.pem"),
                "--tlscert",
                str(s / "cert.pem"),
                "--tlskey",
                str(s / "key.pem"),
            ]
        with open(self.log_path, "ab") as log:
            # its own session: a ^C of pytest must not reach it before we stop it
            self.proc = subprocess.Popen(
                a, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        end = time.monotonic() + _START_SECS
        while self.docker("info", check=False).returncode != 0:
            if self.proc.poll() is not None or time.monotonic() > end:
                x = self.log_path.read_text()[-3000:]
                self.stop()
                raise AssertionError(f"dockerd {self.name} did not start: {x}")
            time.sleep(0.1)
        return self

    def _write(self, name, text):
        p = self.root / name
        p.write_text(text)
        return p

    def docker_args(self):
        """Arguments of the docker CLI for this engine (TLS if it has it)."""
        if not self.tls_dir:
            return ["-H", self.unix_url]
        d = self.tls_dir
        return [
            "-H",
            self.tcp_url,
            "--tlsverify",
            "--tlscacert",
            str(d / "ca.pem"),
            "--tlscert",
            str(d / "cert.pem"),
            "--tlskey",
            str(d / "key.pem"),
        ]

    def docker(self, *args, check=True):
        return subprocess.run(
            ["docker", *self.docker_args(), *args],
            capture_output=True,
            text=True,
            check=check,
            timeout=60,
        )

    def client(self):
        t = None
        if self.tls_dir:
            t = docker.tls.TLSConfig(
                client_cert=(
                    str(self.tls_dir / "cert.pem"),
                    str(self.tls_dir / "key.pem"),
                ),
                ca_cert=str(self.tls_dir / "ca.pem"),
                verify=True,
            )
        return docker_hosts.client(self.url, t)

    def host_config(self, name, cores):
        """An entry of the supervisor's ``docker_hosts`` for this engine."""
        d = {"name": name, "url": self.url, "cores": cores}
        if self.tls_dir:
            d["tls_dir"] = str(self.tls_dir)
        return d

    def build_image(self):
        """The agent image in this engine (etc/docker/build-agent-image.sh)."""
        a = ["--docker-host", self.url]
        if self.tls_dir:
            a += ["--tlsdir", str(self.tls_dir)]
        r = subprocess.run(
            [str(BUILD_SCRIPT), *a], capture_output=True, text=True, timeout=600
        )
        if r.returncode != 0:
            return None, r.stderr[-2000:]
        return r.stdout.split()[-1], r.stderr

    def stop(self):
        """Remove every container of this engine, stop it by its pid, remove its files."""
        if self.proc is not None and self.proc.poll() is None:
            ids = self.docker("ps", "-aq", check=False).stdout.split()
            if ids:
                self.docker("rm", "-f", *ids, check=False)
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(_STOP_SECS)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self.proc = None
        # dockerd unmounts its layers when it stops; a crashed one may not have
        for m in _mounts_under(self.root):
            subprocess.run(["umount", "-l", m], capture_output=True)
        shutil.rmtree(self.root, ignore_errors=True)


def _mounts_under(root):
    """Mount points under `root`, deepest first."""
    r = str(root) + "/"
    with open("/proc/self/mounts") as f:
        m = [x.split()[1] for x in f]
    return sorted((x for x in m if x.startswith(r)), key=len, reverse=True)


def _certs(server_dir, client_dir):
    """A CA, a server certificate for 127.0.0.1 and a client certificate (openssl).

    Returns:
        pathlib.Path: `server_dir`, with ca.pem, cert.pem and key.pem, as is
        `client_dir` (the client's certificate and key)
    """
    s, c = server_dir, client_dir
    s.mkdir(mode=0o700)
    c.mkdir(mode=0o700)

    def _ssl(*args):
        subprocess.run(["openssl", *args], cwd=s, check=True, capture_output=True)

    k = ["-newkey", "rsa:2048", "-nodes"]
    _ssl(
        "req",
        "-x509",
        *k,
        "-days",
        "2",
        "-subj",
        "/CN=simvisor test CA",
        "-keyout",
        "ca-key.pem",
        "-out",
        "ca.pem",
    )
    for d, cn, ext in (
        (s, "127.0.0.1", "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n"),
        (c, "simvisor test client", "extendedKeyUsage=clientAuth\n"),
    ):
        (s / "x.ext").write_text(ext)
        _ssl(
            "req",
            *k,
            "-subj",
            f"/CN={cn}",
            "-keyout",
            str(d / "key.pem"),
            "-out",
            "x.csr",
        )
        _ssl(
            "x509",
            "-req",
            "-in",
            "x.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca-key.pem",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "x.ext",
            "-out",
            str(d / "cert.pem"),
        )
    shutil.copy(s / "ca.pem", c / "ca.pem")
    return s
