"""The interface every driver implements, with a default for each optional part.

A driver starts and kills agents for (user, host) and reports its targets'
core budgets. Like JupyterHub's `Spawner`, this base class declares the whole
interface, so callers never probe a driver with ``getattr``/``hasattr``:

- ``targets()``: the `resources.Target` s its runs may use; a target's name
  is the agent's host (required)
- ``async start(agent, secret, on_exit)``: start the agent process, giving it
  `secret` without putting it on a command line or in a log; record what is
  needed to find it again in ``agent.info``; call ``on_exit(agent, message,
  dead=..., crashed=...)`` if the process ends (``dead``: its runs end with
  it unless it is restarted; ``crashed``: it did not exit on purpose, see
  ``agent_restarts``)
- ``async kill(agent)``: stop the agent process for good; idempotent
- the rest have defaults: see each attribute and method below.
"""

import hashlib
import os
import pathlib
import tempfile

#: the longest path of a unix socket (sun_path, less its NUL, with room)
_MAX_SOCKET_PATH_BYTES = 100

#: the agent's options every driver passes, in this order (see agent/__main__.py)
_AGENT_OPTIONS = ("--url", "--agent-id", "--run-root", "--kill-grace-secs")


def agent_socket(cfg):
    """The unix socket agents dial: local ones, and those in network-less
    containers (it serves only ``/agent``; no per-address cap counts them).

    A unix socket's path has at most 107 bytes: a data directory deep in the
    tree gets one under the temporary directory instead, named by its path.
    """
    if cfg.agent_socket:
        return pathlib.Path(cfg.agent_socket).resolve()
    d = pathlib.Path(cfg.data_dir).resolve()
    p = d / "sock" / "agent.sock"
    if len(os.fsencode(p)) <= _MAX_SOCKET_PATH_BYTES:
        return p
    h = hashlib.sha256(os.fsencode(d)).hexdigest()[:16]
    return pathlib.Path(tempfile.gettempdir()) / f"simvisor-{h}" / "agent.sock"


class Driver:
    #: the driver's name in the API (a run's ``driver``)
    name = None
    #: agents start only when their user signs in (`login`), never by `start`
    needs_login = False
    #: run directories are not on this host: files go through the agent
    #: (`files_remote` says it per host)
    remote_files = False
    #: the agent holds each run's directory to the room its user's plan has
    #: left (the op's ``max_bytes``, `agent.space`)
    checks_room = True
    #: runs wait in a scheduler's queue: the max run time counts from when the
    #: scheduler says RUNNING, not from the agent's `started`
    batch = False
    #: the unix socket agents of this driver dial, if any (`pathlib.Path`)
    agent_socket = None

    def __init__(self, cfg, supervisor_url):
        """
        Args:
            cfg (PKDict): the supervisor's configuration
            supervisor_url (callable): the agent websocket's URL (known once
                the supervisor listens)
        """
        self._cfg = cfg
        self._url = supervisor_url
        #: how long a run whose agent went silent stays `lost`
        self.lost_grace_secs = cfg.lost_grace_secs
        #: how long a connected agent with no runs lives
        self.idle_secs = cfg.agent_idle_secs
        #: how often an agent that died holding runs is started again, its
        #: runs left going for the new one to re-attach (0: they end with it)
        self.agent_restarts = 0

    def agent_argv(self, command, agent, run_root, url=None, extra=()):
        """The agent's command line: `command`, the common options, `extra`.

        Built here once for every driver; the secret is never on it.

        Args:
            command (list): how to start the agent (e.g. ``python3 -m agent``)
            run_root (str): where its run directories are, as the agent sees it
            url (str): the supervisor's agent websocket (default: ours)
            extra (iterable): driver-specific options after the common ones
        """
        v = (
            url or self._url(),
            agent.id,
            str(run_root),
            str(self._cfg.kill_grace_secs),
        )
        res = list(command)
        for o, x in zip(_AGENT_OPTIONS, v):
            res += [o, x]
        return res + list(extra)

    def targets(self):
        raise NotImplementedError

    async def start(self, agent, secret, on_exit):
        raise NotImplementedError

    async def kill(self, agent):
        raise NotImplementedError

    async def login(self, agent, secret, creds, wait_ready):
        """Start the agent with a user's credentials (`needs_login` drivers).

        Args:
            creds (dict): user, password, otp; forgotten when this returns
            wait_ready (callable): awaitable of the agent's hello (raises
                TimeoutError)
        """
        raise NotImplementedError(f"driver {self.name} has no sign-in")

    def login_hosts(self):
        """The hosts a user signs in to: name -> {name, address, otp}."""
        return {}

    def files_remote(self, host):
        """Are run directories on `host` out of this host's sight? (Then
        files and library inputs go through the agent.)"""
        return self.remote_files

    def recover(self, agents, on_exit):
        """At start: the agents known before a restart (they may reconnect).

        A driver that can watch their processes calls ``on_exit`` when one
        ends, as for an agent it started (never from within this call).
        """

    def process_gone(self, agent):
        """After a restart: why `agent`'s process is known to be gone, or None.

        None: it may still be running (it may reconnect), or the driver
        cannot tell (default).
        """
        return None

    def resize(self, agent, cores):
        """The cores of the runs `agent` holds changed (default: not enforced)."""

    def batch_options(self, host, code, plan):
        """Scheduler options of a run on `host` (the `run` op's ``batch``), or None."""
        return None

    async def containers(self):
        """The driver's containers for the admin page (default: none)."""
        return []

    async def remove_container(self, container_id):
        """Remove a container no agent owns; False if it is not this driver's."""
        return False

    async def destroy(self):
        """Shutdown: agents keep running."""

    def pkdebug_str(self):
        return f"{type(self).__name__}({self.name})"
