"""The sbatch driver: agents on HPC login nodes, simulations as Slurm jobs.

No agent starts without its user: `login` takes the user's login-node
credentials (a password and, where the site asks for one, a one-time code,
appended to the password or answered at a prompt of its own), logs in with
asyncssh checking the host key against the configured known hosts, starts
the agent there (``--slurm --daemon``; its secret on stdin) and waits for it
to call back while the SSH connection is still open, so that a failure can
be explained from the agent's log. The credentials are used for that one
connection and never stored or logged.

The agent reaches the supervisor's ``/agent`` websocket itself (compute nodes
never need to); it survives the SSH session, keeps its job table in its work
directory and re-attaches its jobs when it is started again. Without
credentials the supervisor cannot kill an agent: it tells a connected one to
shut down, and an agent that cannot reach the supervisor gives up by itself.
"""

import re
import shlex

import asyncssh
from pykern.pkdebug import pkdlog

from supervisor import errors, resources
from supervisor.drivers import base

#: how the site asks for the one-time code
OTP_NONE = "none"
OTP_APPEND = "append"
OTP_PROMPT = "prompt"

_OTP_PROMPT_RE = re.compile(
    r"one.?time|\botp\b|oath|token|passcode|verification|\bcode\b", re.IGNORECASE
)

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_USER_RE = re.compile(r"^[a-z_][a-z0-9_.-]{0,31}$")

#: what the agent prints once it runs detached
_STARTED_RE = re.compile(r"^started pid=(\d+)$", re.MULTILINE)


class LoginFailed(errors.Error):
    """A sign-in that did not start an agent; `code` says which step failed.

    Refused credentials are the user's to fix (400); the rest is the login
    node's or the site's doing (502, or 504 for an agent that never called).
    """

    def __init__(self, code, message):
        super().__init__(code, message)
        self.status = _STATUS.get(code, 502)


_STATUS = {
    "bad_password": 400,
    "bad_code": 400,
    "bad_credentials": 400,
    "login_required": 409,
    "agent_no_callback": 504,
}


class Host:
    """One login node (an element of ``sbatch_hosts``)."""

    def __init__(self, doc):
        d = dict(doc)
        self.name = d.pop("name")
        if not isinstance(self.name, str) or not _NAME_RE.match(self.name):
            raise ValueError(f"sbatch host name={self.name!r} is not a name")
        self.address = d.pop("address", "127.0.0.1")
        self.port = int(d.pop("port", 22))
        kh = d.pop("known_hosts", None)
        if not kh:
            # never blind trust: the host key must be configured
            raise ValueError(f"sbatch host {self.name}: known_hosts is required")
        self.known_hosts = asyncssh.import_known_hosts(
            "\n".join(kh) if isinstance(kh, list) else kh
        )
        self.otp = d.pop("otp", OTP_NONE)
        if self.otp not in (OTP_NONE, OTP_APPEND, OTP_PROMPT):
            raise ValueError(f"sbatch host {self.name}: otp={self.otp!r}")
        self.cores = int(d.pop("cores"))
        c = d.pop("agent_command", ["python3", "-m", "agent"])
        self.agent_command = shlex.split(c) if isinstance(c, str) else list(c)
        self.work_dir = d.pop("work_dir", "simvisor")
        self.supervisor_url = d.pop("supervisor_url", None)
        #: sbatch options of every run here (partition, account, qos, cores_as)
        self.batch = {
            k: d.pop(k) for k in ("partition", "account", "qos", "cores_as") if k in d
        }
        self.connect_timeout_secs = float(d.pop("connect_timeout_secs", 15))
        if d:
            raise ValueError(f"sbatch host {self.name}: unknown keys {sorted(d)}")
        self.target = resources.Target(self.name, self.cores)

    def to_dict(self):
        return {"name": self.name, "address": self.address, "otp": self.otp}


def parse_hosts(docs):
    rv = {}
    for d in docs:
        h = Host(d)
        if h.name in rv:
            raise ValueError(f"duplicate sbatch host {h.name}")
        rv[h.name] = h
    return rv


class _Auth(asyncssh.SSHClient):
    """Answers the login node's questions once each; records what it asked.

    Only one attempt per method: a retry after a refusal could lock the
    account, and a one-time code cannot be used twice anyway.
    """

    def __init__(self, password, otp, shape):
        self._password = password
        self._otp = otp or ""
        self._shape = shape
        self.password_sent = False
        self.kbdint_rounds = 0
        self.otp_asked = False

    def forget(self):
        """Drop the credentials (the login is over, whatever its end)."""
        self._password = self._otp = None

    def password_auth_requested(self):
        if self.password_sent:
            return None
        self.password_sent = True
        if self._shape == OTP_APPEND:
            return self._password + self._otp
        return self._password

    def kbdint_auth_requested(self):
        return ""

    def kbdint_challenge_received(self, name, instructions, lang, prompts):
        if not prompts:
            return []
        self.kbdint_rounds += 1
        if self.kbdint_rounds > 3:
            return None
        rv = []
        for p, _ in prompts:
            if _OTP_PROMPT_RE.search(p):
                if self.otp_asked:
                    # asked again: the first one was refused
                    return None
                self.otp_asked = True
                rv.append(self._otp)
            else:
                if self.password_sent:
                    return None
                self.password_sent = True
                rv.append(
                    self._password + self._otp
                    if self._shape == OTP_APPEND
                    else self._password
                )
        return rv


class SbatchDriver(base.Driver):
    name = "sbatch"
    needs_login = True
    remote_files = True
    # the files are on the login node, not in this host's stored bytes
    checks_room = False
    batch = True

    def __init__(self, cfg, supervisor_url):
        super().__init__(cfg, supervisor_url)
        self.hosts = parse_hosts(cfg.sbatch_hosts)
        self._plan_options = cfg.sbatch_plan_options
        self.lost_grace_secs = cfg.sbatch_lost_grace_secs
        self.idle_secs = cfg.sbatch_agent_idle_secs

    def targets(self):
        return [h.target for h in self.hosts.values()]

    def login_hosts(self):
        return {n: h.to_dict() for n, h in self.hosts.items()}

    def batch_options(self, host, code, plan):
        """sbatch options of a run: the site's, then the plan's, then the code's.

        A sweep member's op adds its job array (``array``: `runs.Runs`, from
        `sweeps.Sweeps`), so the members handed over together are one
        ``sbatch --array`` (`agent.slurm_array`).
        """
        h = self.hosts.get(host)
        return {
            **(h.batch if h else {}),
            **self._plan_options.get(plan.name, {}),
            **(code.batch or {}),
        }

    async def start(self, agent, secret, on_exit):
        # `Agents.check_ready` waits for a sign-in instead of calling this
        raise LoginFailed("login_required", f"sign in to {agent.host} first")

    async def login(self, agent, secret, creds, wait_ready):
        """Log in, start the agent, wait for its hello; raise `LoginFailed`.

        Args:
            creds (dict): user, password, otp (forgotten when this returns)
            wait_ready (callable): awaitable of the agent's hello (raises
                TimeoutError)
        """
        h = self.hosts[agent.host]
        a = _Auth(creds["password"], creds.get("otp"), h.otp)
        try:
            async with asyncssh.connect(
                h.address,
                h.port,
                username=creds["user"],
                known_hosts=h.known_hosts,
                client_factory=lambda: a,
                client_keys=None,
                agent_path=None,
                config=[],
                preferred_auth=(
                    ("keyboard-interactive", "password")
                    if h.otp == OTP_PROMPT
                    else ("password", "keyboard-interactive")
                ),
                connect_timeout=h.connect_timeout_secs,
                login_timeout=h.connect_timeout_secs,
            ) as conn:
                await self._start_agent(conn, h, agent, secret, wait_ready)
        except asyncssh.HostKeyNotVerifiable as e:
            raise LoginFailed(
                "host_key_mismatch",
                f"the host key of {h.name} is not the one configured: {e.reason}",
            ) from None
        except asyncssh.PermissionDenied:
            raise _refused(h, a) from None
        except (OSError, TimeoutError, asyncssh.ConnectionLost) as e:
            raise LoginFailed(
                "host_unreachable",
                f"cannot reach {h.name} ({h.address}:{h.port}): {_brief(e)}",
            ) from None
        except asyncssh.Error as e:
            raise LoginFailed("login_failed", f"{h.name}: {_brief(e)}") from None
        finally:
            a.forget()

    async def _start_agent(self, conn, host, agent, secret, wait_ready):
        w = host.work_dir.rstrip("/")
        log = f"{w}/agent/agent.log"
        c = self.agent_argv(
            host.agent_command,
            agent,
            f"{w}/run",
            host.supervisor_url,
            ("--work-dir", f"{w}/agent", "--slurm", "--daemon", "--log-file", log),
        )
        r = await conn.run(
            shlex.join(c), input=secret + "\n", timeout=host.connect_timeout_secs * 2
        )
        out = (r.stdout or "").strip()
        err = (r.stderr or "").strip()
        if r.exit_status == 127:
            raise LoginFailed(
                "agent_command_missing",
                f"the agent command {host.agent_command[0]!r} is not installed on"
                f" {host.name}: {err[-300:] or 'command not found'}",
            )
        m = _STARTED_RE.search(out)
        if r.exit_status != 0 or not m:
            raise LoginFailed(
                "agent_start_failed",
                f"the agent did not start on {host.name} (exit"
                f" {r.exit_status}): {(out + ' ' + err).strip()[-500:]}",
            )
        agent.info["pid"] = int(m.group(1))
        agent.info["log"] = log
        pkdlog("{} started on host={} pid={}", agent, host.name, m.group(1))
        try:
            await wait_ready()
        except TimeoutError:
            t = await conn.run(f"tail -c 1500 {shlex.quote(log)}", timeout=10)
            raise LoginFailed(
                "agent_no_callback",
                f"the agent started on {host.name} but did not call back within"
                f" {self._cfg.agent_start_timeout_secs} s; its log ends:"
                f" {(t.stdout or '').strip()[-1000:]}",
            ) from None

    async def kill(self, agent):
        # without credentials there is no way in: a connected agent was told
        # to shut down (`Agents._stop`); one that cannot connect gives up
        pkdlog("{} left to stop itself on host={}", agent, agent.host)


def _refused(host, auth):
    if host.otp == OTP_PROMPT:
        if auth.otp_asked:
            return LoginFailed(
                "bad_code",
                f"the login node {host.name} refused the one-time code (wrong, already used or expired)",
            )
        return LoginFailed(
            "bad_password", f"the login node {host.name} refused the password"
        )
    if host.otp == OTP_APPEND:
        # the site checks both at once and says only no
        return LoginFailed(
            "bad_credentials",
            f"the login node {host.name} refused the password or the one-time code",
        )
    return LoginFailed(
        "bad_password", f"the login node {host.name} refused the password"
    )


def _brief(e):
    return (str(e) or type(e).__name__)[:300]
