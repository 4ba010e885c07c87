"""A real one-machine "HPC site" for the tests of the sbatch driver.

Slurm for one node (this machine): munged, slurmdbd on a MariaDB of our own,
slurmctld and slurmd; and a "login node": two OpenSSH servers on loopback
ports where the test user logs in with a password plus a one-time code
(TOTP checked by pam_oath):

- ``append``: password authentication, the 6-digit code appended to the
  password (pam_oath strips it, pam_unix checks the rest);
- ``prompt``: keyboard-interactive, a ``Password:`` prompt, then (only if
  the password was right) a ``One-time password (OATH) ...`` prompt.

The configuration is installed by etc/setup-test-host.sh from etc/hpc/
(/etc/slurm/*.conf, /etc/pam.d/simvisor-sshd-*, /etc/simvisor-hpc/
users.oath, the /usr/local/sbin/simvisor-sshd-* symlinks to sshd: sshd
names its PAM service after its program name). Nothing is started by the
system: `Site.start` starts every daemon, with state, logs and pid files
under /var/lib/simvisor-hpc and /run/simvisor-hpc, and `Site.stop` cancels
the test user's jobs and stops (by pid) what it started. The `hpc_site`
fixture does both once per test session; load this module as the plugin
``tests.hpc_site`` (``pytest_plugins = ["tests.hpc_site"]``, once per
session whatever declares it) and take a parameter named ``hpc_site``.

Tests that use it carry ``@pytest.mark.slurm``; `need` skips them outside
CI and fails them in CI (``CI=true``) when the host lacks something.
"""

import hashlib
import hmac
import os
import pathlib
import pwd
import secrets
import shlex
import shutil
import signal
import socket
import struct
import subprocess
import time

import pytest

# skip outside CI, fail in CI (CI=true) when the site cannot run
from tests.docker_engine import need

ROOT = pathlib.Path(__file__).resolve().parents[1]
TEMPLATES = ROOT / "etc" / "hpc"

#: private state (MariaDB data, Slurm state and spool, logs, ssh host keys)
STATE = pathlib.Path("/var/lib/simvisor-hpc")
#: private runtime files (pid files, MariaDB socket)
RUN = pathlib.Path("/run/simvisor-hpc")
#: where `Site.install_agent` puts the agent package
OPT = pathlib.Path("/opt/simvisor-hpc")

USERS_OATH = pathlib.Path("/etc/simvisor-hpc/users.oath")
MUNGE_SOCKET = pathlib.Path("/run/munge/munge.socket.2")
SHAPES = ("append", "prompt")

_DB = {"name": "slurm_acct_db", "user": "slurm", "password": "simvisor-db-pass"}
_SLURMDBD_PORT = 6819
_SLURMCTLD_PORT = 6817
_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_START_SECS = 30
_STOP_SECS = 15
_TOTP_STEP = 30
#: pam_oath's window (etc/hpc/pam-*) is 50 steps: codes stay this far
#: ahead of the clock
_TOTP_AHEAD = 40


def check_host():
    """Why the HPC site cannot run here, or None."""
    if os.getuid() != 0:
        return "the HPC site needs root"
    for c in (
        "munged",
        "mariadbd",
        "mariadb-install-db",
        "slurmdbd",
        "slurmctld",
        "slurmd",
        "sbatch",
        "sacctmgr",
        "oathtool",
        "ssh-keygen",
    ):
        if not shutil.which(c, path=_PATH):
            return f"no {c} (run etc/setup-test-host.sh)"
    needed = [
        pathlib.Path("/etc/slurm/slurm.conf"),
        pathlib.Path("/etc/slurm/slurmdbd.conf"),
        pathlib.Path("/etc/munge/munge.key"),
        USERS_OATH,
    ]
    for shape in SHAPES:
        needed.append(pathlib.Path(f"/etc/pam.d/simvisor-sshd-{shape}"))
        needed.append(pathlib.Path(f"/usr/local/sbin/simvisor-sshd-{shape}"))
    for p in needed:
        if not p.exists():
            return f"no {p} (run etc/setup-test-host.sh)"
    try:
        pwd.getpwnam(Site.user)
    except KeyError:
        return f"no user {Site.user} (run etc/setup-test-host.sh)"
    return None


def _env(**extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env["PATH"] = _PATH
    env.update(extra)
    return env


def _run(args, timeout=30, check=True, **kw):
    r = subprocess.run(
        args,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=kw.pop("env", None) or _env(),
        **kw,
    )
    if check and r.returncode != 0:
        raise RuntimeError(
            f"{shlex.join(map(str, args))} exited {r.returncode}: "
            f"{r.stdout.strip()} {r.stderr.strip()}"
        )
    return r


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(path, lines=30):
    try:
        text = pathlib.Path(path).read_text(errors="replace")
    except OSError as e:
        return f"(no log {path}: {e})"
    return f"--- {path} (tail) ---\n" + "\n".join(text.splitlines()[-lines:])


def _alive(pid):
    try:
        stat = pathlib.Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _cmdline(pid):
    try:
        raw = pathlib.Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    return raw.replace(b"\0", b" ").decode(errors="replace")


def _port_open(port, host="127.0.0.1"):
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def totp(secret_hex, step, digits=6):
    """The RFC 6238 code (HMAC-SHA1) of time step `step`."""
    mac = hmac.new(
        bytes.fromhex(secret_hex), struct.pack(">Q", step), hashlib.sha1
    ).digest()
    off = mac[-1] & 0x0F
    n = struct.unpack(">I", mac[off : off + 4])[0] & 0x7FFFFFFF
    return str(n % 10**digits).zfill(digits)


class _Daemon:
    """A daemon of ours, known by its pid file (and `proc` if our child)."""

    def __init__(self, name, pid_file, log, match):
        self.name = name
        self.pid_file = pathlib.Path(pid_file)
        self.log = pathlib.Path(log)
        # a live pid from the pid file is ours only if its command line
        # contains this (a stale pid may have been reused)
        self.match = match
        self.proc = None
        self.pid = None

    def read_pid(self):
        try:
            pid = int(self.pid_file.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        if _alive(pid) and self.match in _cmdline(pid):
            return pid
        return None

    def kill_stale(self):
        """Stop a leftover of an earlier (crashed) session."""
        pid = self.read_pid()
        if pid:
            self._kill(pid)

    def _kill(self, pid, secs=_STOP_SECS):
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + secs
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.pid == pid:
                if self.proc.poll() is not None:
                    return
            elif not _alive(pid):
                return
            time.sleep(0.05)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        if self.proc is not None and self.proc.pid == pid:
            self.proc.wait(timeout=5)

    def wait_pid(self, deadline):
        while time.monotonic() < deadline:
            pid = self.read_pid()
            if pid:
                self.pid = pid
                return pid
            if self.proc is not None and self.proc.poll() is not None:
                break
            time.sleep(0.02)
        self.fail("wrote no pid file / exited")

    def fail(self, what):
        raise RuntimeError(f"{self.name}: {what}\n{_tail(self.log)}")

    def stop(self):
        pid = self.pid or self.read_pid()
        if pid:
            self._kill(pid)
        elif self.proc is not None and self.proc.poll() is None:
            self._kill(self.proc.pid)
        self.pid = None
        self.proc = None

    def running(self):
        return bool(self.pid) and _alive(self.pid)


class Sshd:
    """One sshd of the login node.

    `port`: its loopback port (on `Site.host`); `shape`: "append" or
    "prompt"; `host_key_pub`: its host key, "ssh-ed25519 AAAA...";
    `known_hosts_line()`: the known_hosts line for it; `log`: its log file.
    """

    def __init__(self, shape):
        self.shape = shape
        self.port = None
        self.dir = STATE / "ssh"
        self.key = self.dir / f"host_ed25519_{shape}"
        self.config = self.dir / f"sshd_config_{shape}"
        self.host_key_pub = None
        self.daemon = _Daemon(
            f"sshd-{shape}",
            RUN / f"sshd-{shape}.pid",
            self.dir / f"sshd-{shape}.log",
            f"simvisor-sshd-{shape}",
        )
        self.log = self.daemon.log

    def known_hosts_line(self):
        """``[127.0.0.1]:PORT ssh-ed25519 AAAA...``"""
        return f"[{Site.host}]:{self.port} {self.host_key_pub}"

    def start(self, deadline):
        self.daemon.kill_stale()
        if not self.key.exists():
            _run(
                [
                    "ssh-keygen",
                    "-q",
                    "-t",
                    "ed25519",
                    "-N",
                    "",
                    "-C",
                    "",
                    "-f",
                    self.key,
                ]
            )
        self.host_key_pub = " ".join(
            pathlib.Path(f"{self.key}.pub").read_text().split()[:2]
        )
        self.port = _free_port()
        password, kbdint, method = {
            "append": ("yes", "no", "password"),
            "prompt": ("no", "yes", "keyboard-interactive"),
        }[self.shape]
        text = (TEMPLATES / "sshd_config").read_text()
        for k, v in {
            "PORT": self.port,
            "HOST_KEY": self.key,
            "PID_FILE": self.daemon.pid_file,
            "PASSWORD": password,
            "KBDINT": kbdint,
            "METHOD": method,
            "SHAPE": self.shape,
        }.items():
            text = text.replace(f"@{k}@", str(v))
        self.config.write_text(text)
        self.daemon.log.unlink(missing_ok=True)
        # sshd re-executes itself: by absolute path, and the symlink's name
        # is the PAM service name
        _run(
            [
                f"/usr/local/sbin/simvisor-sshd-{self.shape}",
                "-f",
                self.config,
                "-E",
                self.daemon.log,
            ]
        )
        self.daemon.wait_pid(deadline)
        while time.monotonic() < deadline:
            try:
                with socket.create_connection((Site.host, self.port), 1) as s:
                    if s.recv(64).startswith(b"SSH-2.0"):
                        return
            except OSError:
                pass
            time.sleep(0.02)
        self.daemon.fail(f"no SSH banner on port {self.port}")

    def stop(self):
        self.daemon.stop()


class Site:
    """The one-machine HPC site (see the module's docstring).

    Attributes (class-level constants, also on instances):

    - `user`, `password`: the test user ("simhpc") and its Unix password;
    - `home`: its home directory (pathlib), the site's "shared filesystem";
    - `host`: "127.0.0.1", where the sshds listen;
    - `python`: "/usr/bin/python3", the login node's Python (with tornado);
    - `partitions`: the Slurm partitions ("debug" is the default);
    - `wide_partition`: "wide", a partition made at run time (``scontrol
      create``) that lets 50 jobs share each of the node's 2 cores, for as
      many tasks at once as the bench's 100-task job array (row 22); no
      test runs in it, so the others keep the node's 2 cores;
    - `sshd`: {"append": Sshd, "prompt": Sshd} (after `start`).
    """

    user = "simhpc"
    password = "simhpc-pass-1"
    home = pathlib.Path("/home/simhpc")
    host = "127.0.0.1"
    python = "/usr/bin/python3"
    partitions = ("debug", "long")
    wide_partition = "wide"

    def __init__(self):
        self.node = socket.gethostname().split(".")[0]
        self.sshd = {shape: Sshd(shape) for shape in SHAPES}
        self.secret = self._read_secret()
        self._step = 0
        self.own_munged = False
        log = STATE / "log"
        self.munged = _Daemon(
            "munged",
            RUN / "munge" / "munged.pid",
            STATE / "munge" / "munged.log",
            "munged",
        )
        self.mariadbd = _Daemon(
            "mariadbd",
            RUN / "mysqld" / "mysqld.pid",
            STATE / "mysql.log",
            "mariadbd",
        )
        self.slurmdbd = _Daemon(
            "slurmdbd", RUN / "slurmdbd.pid", log / "slurmdbd.log", "slurmdbd"
        )
        self.slurmctld = _Daemon(
            "slurmctld", RUN / "slurmctld.pid", log / "slurmctld.log", "slurmctld"
        )
        self.slurmd = _Daemon(
            "slurmd", RUN / "slurmd.pid", log / "slurmd.log", "slurmd"
        )
        self.db_socket = RUN / "mysqld" / "mysqld.sock"
        self.agent_command = None
        self.timings = {}

    # ---- start / stop ----

    def start(self):
        """Start every daemon (stopping leftovers of a crashed session)."""
        t0 = time.monotonic()
        deadline = t0 + _START_SECS
        for d in (self.slurmd, self.slurmctld, self.slurmdbd, self.mariadbd):
            d.kill_stale()
        for s in self.sshd.values():
            s.daemon.kill_stale()
        self._dirs()
        # codes used in an earlier session must not count as replays
        shutil.copyfile(TEMPLATES / "users.oath", USERS_OATH)
        os.chmod(USERS_OATH, 0o600)
        self._start_munged(deadline)
        self.timings["munged"] = time.monotonic() - t0
        self._start_mariadb(deadline)
        self.timings["mariadb"] = time.monotonic() - t0
        self._start_slurmdbd(deadline)
        self.timings["slurmdbd"] = time.monotonic() - t0
        self._associations()
        self.start_slurmctld(deadline)
        self.timings["slurmctld"] = time.monotonic() - t0
        self._start_slurmd(deadline)
        self.timings["slurmd"] = time.monotonic() - t0
        self.cancel_all()
        for s in self.sshd.values():
            s.start(deadline)
        self.timings["total"] = time.monotonic() - t0

    def stop(self):
        """Cancel the test user's jobs, then stop every daemon we started."""
        errors = []
        if self.slurmctld.running():
            try:
                self.cancel_all(wait_secs=10)
            except Exception as e:
                errors.append(e)
        for s in self.sshd.values():
            s.stop()
        for d in (self.slurmd, self.slurmctld, self.slurmdbd, self.mariadbd):
            d.stop()
        if self.own_munged:
            self.munged.stop()
        if errors:
            raise errors[0]

    def _dirs(self):
        def mk(path, owner="root", mode=0o755):
            path.mkdir(parents=True, exist_ok=True)
            shutil.chown(path, owner, owner)
            path.chmod(mode)

        mk(STATE)
        mk(RUN)
        mk(STATE / "log", "slurm")
        mk(STATE / "slurmctld", "slurm", 0o700)
        mk(STATE / "slurmd")
        mk(STATE / "munge", "munge", 0o700)
        mk(RUN / "munge", "munge")
        mk(pathlib.Path("/run/munge"), "munge")
        mk(STATE / "ssh", mode=0o700)
        # sshd's privilege separation directory
        mk(pathlib.Path("/run/sshd"))
        mk(RUN / "mysqld", "mysql")

    def _start_munged(self, deadline):
        self.munged.kill_stale()
        ok = subprocess.run(["munge", "-n"], capture_output=True, timeout=10).returncode
        if ok == 0 and MUNGE_SOCKET.exists():
            # someone's munged (the system's?) already serves the default
            # socket with the same key, we hope; use it, do not stop it
            self.own_munged = False
            return
        self.own_munged = True
        _run(
            [
                "runuser",
                "-u",
                "munge",
                "--",
                "munged",
                f"--pid-file={self.munged.pid_file}",
                f"--log-file={self.munged.log}",
                f"--seed-file={STATE / 'munge' / 'munged.seed'}",
            ]
        )
        self.munged.wait_pid(deadline)
        while time.monotonic() < deadline:
            if subprocess.run(["munge", "-n"], capture_output=True).returncode == 0:
                return
            time.sleep(0.02)
        self.munged.fail("munge -n fails")

    def _mysql(self, sql):
        return _run(
            ["mariadb", "--no-defaults", f"--socket={self.db_socket}", "-e", sql]
        )

    def _start_mariadb(self, deadline):
        data = STATE / "mysql"
        if not (data / "mysql").is_dir():
            shutil.rmtree(data, ignore_errors=True)
            data.mkdir(mode=0o700)
            shutil.chown(data, "mysql", "mysql")
            _run(
                [
                    "mariadb-install-db",
                    "--no-defaults",
                    "--user=mysql",
                    f"--datadir={data}",
                    "--skip-test-db",
                    "--auth-root-authentication-method=socket",
                ],
                timeout=60,
            )
        log = self.mariadbd.log
        log.unlink(missing_ok=True)
        with open(log, "ab") as out:
            self.mariadbd.proc = subprocess.Popen(
                [
                    "mariadbd",
                    "--no-defaults",
                    "--user=mysql",
                    f"--datadir={data}",
                    f"--socket={self.db_socket}",
                    f"--pid-file={self.mariadbd.pid_file}",
                    "--skip-networking",
                    f"--log-error={log}",
                    "--skip-log-bin",
                    "--innodb-buffer-pool-size=128M",
                    "--innodb-log-file-size=64M",
                    "--innodb-lock-wait-timeout=900",
                    "--innodb-flush-log-at-trx-commit=2",
                ],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                start_new_session=True,
                env=_env(),
            )
        self.mariadbd.wait_pid(deadline)
        while time.monotonic() < deadline:
            r = subprocess.run(
                [
                    "mariadb",
                    "--no-defaults",
                    f"--socket={self.db_socket}",
                    "-e",
                    "select 1",
                ],
                capture_output=True,
            )
            if r.returncode == 0:
                break
            if self.mariadbd.proc.poll() is not None:
                self.mariadbd.fail("exited")
            time.sleep(0.05)
        else:
            self.mariadbd.fail("no answer on its socket")
        self._mysql(
            f"CREATE DATABASE IF NOT EXISTS {_DB['name']};"
            f"CREATE USER IF NOT EXISTS '{_DB['user']}'@'localhost'"
            f" IDENTIFIED BY '{_DB['password']}';"
            f"GRANT ALL ON {_DB['name']}.* TO '{_DB['user']}'@'localhost';"
        )

    def _start_slurmdbd(self, deadline):
        # the mysql plugin connects to "localhost": libmariadb takes the
        # socket path from MYSQL_UNIX_PORT
        _run(["slurmdbd"], env=_env(MYSQL_UNIX_PORT=str(self.db_socket)))
        self.slurmdbd.wait_pid(deadline)
        while time.monotonic() < deadline:
            if _port_open(_SLURMDBD_PORT):
                return
            if not _alive(self.slurmdbd.pid):
                break
            time.sleep(0.05)
        self.slurmdbd.fail(f"not listening on {_SLURMDBD_PORT}")

    def _associations(self):
        """The cluster, an account and the test user in the database."""
        have = _run(
            ["sacctmgr", "-n", "-P", "show", "assoc", "format=cluster,account,user"]
        ).stdout.split()
        if not any(x.startswith("simvisor|") for x in have):
            _run(["sacctmgr", "-i", "add", "cluster", "simvisor"])
        if "simvisor|simvisor|" not in have:
            _run(
                [
                    "sacctmgr",
                    "-i",
                    "add",
                    "account",
                    "simvisor",
                    "Cluster=simvisor",
                    "Description=tests",
                    "Organization=simvisor",
                ]
            )
        if f"simvisor|simvisor|{self.user}" not in have:
            _run(
                [
                    "sacctmgr",
                    "-i",
                    "add",
                    "user",
                    self.user,
                    "Account=simvisor",
                    "Cluster=simvisor",
                ]
            )

    def stop_slurmctld(self):
        """Stop the controller (slurmd and the jobs keep running)."""
        self.slurmctld.stop()

    def start_slurmctld(self, deadline=None):
        """(Re)start the controller from its saved state; wait until it
        answers. Running jobs survive a stop/start, and their end is known
        after it."""
        deadline = deadline or time.monotonic() + _START_SECS
        self.slurmctld.kill_stale()
        _run(["slurmctld"])
        self.slurmctld.wait_pid(deadline)
        while time.monotonic() < deadline:
            r = subprocess.run(
                ["scontrol", "ping"], capture_output=True, text=True, env=_env()
            )
            if r.returncode == 0 and "UP" in r.stdout:
                self._wide_partition()
                return
            if not _alive(self.slurmctld.pid):
                break
            time.sleep(0.05)
        self.slurmctld.fail("scontrol ping fails")

    def _wide_partition(self):
        """`wide_partition` (again: a restart may not keep a partition that
        is not in slurm.conf)."""
        p = [
            f"PartitionName={self.wide_partition}",
            f"Nodes={self.node}",
            "OverSubscribe=FORCE:50",
            "MaxTime=INFINITE",
            "State=UP",
        ]
        if _run(["scontrol", "create", *p], check=False).returncode != 0:
            _run(["scontrol", "update", *p])

    def _start_slurmd(self, deadline):
        _run(["slurmd", "-N", self.node])
        self.slurmd.wait_pid(deadline)
        state = None
        while time.monotonic() < deadline:
            r = subprocess.run(
                ["sinfo", "-h", "-N", "-n", self.node, "-o", "%T"],
                capture_output=True,
                text=True,
                env=_env(),
            )
            state = (r.stdout.split() or [None])[0]  # a line per partition
            if state in ("idle", "mixed", "allocated"):
                return
            if not _alive(self.slurmd.pid):
                break
            time.sleep(0.1)
        self.slurmd.fail(f"node {self.node} not ready (state {state!r})")

    # ---- jobs ----

    def as_user(self, args, check=True, timeout=30, **kw):
        """Run `args` as the test user in its home (runuser); a
        CompletedProcess with text stdout/stderr."""
        return _run(
            ["runuser", "-u", self.user, "--", *map(str, args)],
            check=check,
            timeout=timeout,
            cwd=kw.pop("cwd", self.home),
            env=_env(HOME=str(self.home), USER=self.user, LOGNAME=self.user),
            **kw,
        )

    def jobs(self):
        """The test user's job ids (strings) in squeue (pending, running,
        completing...)."""
        r = _run(["squeue", "-u", self.user, "-h", "-o", "%i"])
        return r.stdout.split()

    def cancel_all(self, wait_secs=0):
        """scancel every job of the test user; wait up to `wait_secs` for
        them to leave squeue."""
        _run(["scancel", "-u", self.user])
        deadline = time.monotonic() + wait_secs
        while time.monotonic() < deadline and self.jobs():
            time.sleep(0.2)

    # ---- one-time codes ----

    @staticmethod
    def _read_secret():
        for line in (TEMPLATES / "users.oath").read_text().splitlines():
            f = line.split()
            if len(f) >= 4 and not f[0].startswith("#") and f[1] == Site.user:
                return f[3]
        raise RuntimeError("no secret for simhpc in etc/hpc/users.oath")

    def otp(self):
        """A fresh valid one-time code (6 digits, a string).

        pam_oath refuses a code of a time step not later than the last one
        used, so each call hands out a code of a later 30 s step than the
        one before (ahead of the clock, within pam_oath's window of 50
        steps; when 40 steps ahead, waits for the clock). Codes made
        elsewhere for the current step would then be refused. Made by
        ``oathtool``, as a user's token would."""
        now = int(time.time()) // _TOTP_STEP
        step = max(now, self._step + 1)
        if step > now + _TOTP_AHEAD:
            time.sleep((step - _TOTP_AHEAD) * _TOTP_STEP - time.time() + 0.1)
        self._step = step
        return _run(
            ["oathtool", "--totp", "-N", f"@{step * _TOTP_STEP}", self.secret]
        ).stdout.strip()

    def bad_otp(self):
        """A valid-looking (6 digits) but wrong one-time code."""
        now = int(time.time()) // _TOTP_STEP
        valid = {totp(self.secret, s) for s in range(now - 60, now + 80)}
        while True:
            code = f"{secrets.randbelow(10**6):06d}"
            if code not in valid:
                return code

    # ---- the agent on the login node ----

    def install_agent(self, src_dir):
        """Copy the Python package directory `src_dir` (the project's
        agent/) to /opt/simvisor-hpc/<name> (root-owned, world-readable,
        replacing an older copy). Returns the command (a list) that runs it
        as ``python -m <name>``; `agent_command` is the same as a
        shell-quoted string."""
        src = pathlib.Path(src_dir)
        dest = OPT / src.name
        OPT.mkdir(parents=True, exist_ok=True)
        OPT.chmod(0o755)
        shutil.rmtree(dest, ignore_errors=True)
        shutil.copytree(
            src, dest, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
        )
        for dirpath, _dirnames, filenames in os.walk(dest):
            os.chmod(dirpath, 0o755)
            for f in filenames:
                os.chmod(os.path.join(dirpath, f), 0o644)
        cmd = ["env", f"PYTHONPATH={OPT}", self.python, "-m", src.name]
        self.agent_command = shlex.join(cmd)
        return cmd


@pytest.fixture(scope="session", name="hpc_site")
def hpc_site_fixture():
    """The `Site`, started on first use, stopped at the end of the session."""
    reason = check_host()
    need(reason is None, reason)
    site = Site()
    try:
        site.start()
    except BaseException:
        site.stop()
        raise
    yield site
    site.stop()
