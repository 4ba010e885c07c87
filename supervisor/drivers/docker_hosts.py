"""Docker hosts: the engines the docker driver starts containers on.

Each configured host (``docker_hosts``: a unix socket, or TCP with TLS) has a
core budget (a `resources.Target` named after it), a Docker SDK client and
one watcher thread that follows the engine's container events (die, oom)
for this supervisor's containers and hands them to the event loop. The
Docker SDK blocks, so every call goes through `Host.call` (a thread); the
watcher has a thread of its own so a long wait never holds a worker.
"""

import asyncio
import pathlib
import threading

import docker
import docker.errors
from pykern.pkdebug import pkdexc, pkdlog

from supervisor import resources

#: agents in containers talk to the supervisor over a mounted unix socket;
#: "host" is for a remote host whose agents dial the supervisor's TCP port
NETWORKS = ("none", "host")

#: where a host keeps run directories: "shared", this host's data directory
#: at the same path (bind mounts); "volume", a Docker volume per user there,
#: its files and library inputs going through the agent
STORAGES = ("shared", "volume")

#: seconds between attempts to reach an engine whose event stream broke
_RECONNECT_SECS = (0.5, 10.0)

_API_TIMEOUT_SECS = 60

#: the Docker API version we speak (Docker 20.10 and later)
API_VERSION = "1.41"


def parse(docs):
    """`Host` s from the ``docker_hosts`` configuration (a list of dicts)."""
    res = []
    for d in docs:
        if not isinstance(d, dict):
            raise ValueError(f"docker host must be an object: {d!r}")
        x = set(d) - {"name", "url", "cores", "tls_dir", "network", "storage"}
        if x:
            raise ValueError(f"docker host {d.get('name')}: unknown keys {sorted(x)}")
        n = d.get("name")
        if (
            not isinstance(n, str)
            or not n
            or any(not (c.isalnum() or c in "_.:-") for c in n)
        ):
            raise ValueError(f"docker host name={n!r} must be [A-Za-z0-9_.:-]+")
        u = d.get("url")
        if not isinstance(u, str) or not u.startswith(("unix://", "tcp://")):
            raise ValueError(f"docker host {n}: url={u!r} must be unix:// or tcp://")
        c = d.get("cores")
        if not isinstance(c, int) or isinstance(c, bool) or c < 1:
            raise ValueError(f"docker host {n}: cores={c!r} must be a positive integer")
        w = d.get("network", "none")
        if w not in NETWORKS:
            raise ValueError(
                f"docker host {n}: network={w!r} must be one of {NETWORKS}"
            )
        if u.startswith("tcp://") and not d.get("tls_dir"):
            raise ValueError(f"docker host {n}: tcp needs tls_dir (ca, cert, key .pem)")
        # an engine on a unix socket is on this machine: it sees our paths
        s = d.get("storage", "shared" if u.startswith("unix://") else "volume")
        if s not in STORAGES:
            raise ValueError(
                f"docker host {n}: storage={s!r} must be one of {STORAGES}"
            )
        res.append(Host(n, u, c, d.get("tls_dir"), w, s))
    if len({h.name for h in res}) != len(res):
        raise ValueError("docker host names must be unique")
    return res


class Host:
    """One Docker engine."""

    def __init__(self, name, url, cores, tls_dir, network, storage="shared"):
        self.name = name
        self.url = url
        self.tls_dir = tls_dir
        self.network = network
        self.storage = storage
        self.target = resources.Target(name, cores)
        self._client = None
        self._lock = threading.Lock()
        self._events = None
        self._stopped = threading.Event()
        self._thread = None

    def client(self):
        """The SDK client (blocking: call from a thread)."""
        with self._lock:
            if self._client is None:
                t = None
                if self.tls_dir:
                    d = pathlib.Path(self.tls_dir)
                    t = docker.tls.TLSConfig(
                        client_cert=(str(d / "cert.pem"), str(d / "key.pem")),
                        ca_cert=str(d / "ca.pem"),
                        verify=True,
                    )
                self._client = client(self.url, t)
            return self._client

    async def call(self, func, *args, **kwargs):
        """``func(client, *args, **kwargs)`` in a thread."""
        return await asyncio.to_thread(lambda: func(self.client(), *args, **kwargs))

    def watch(self, project, on_event, on_subscribed):
        """Follow die and oom events of `project` 's containers in a thread.

        Args:
            on_event (callable): (host, event dict), called on the loop
            on_subscribed (callable): (host), on the loop, each time the
                stream (re)opens: what happened while it was closed is missed
        """
        loop = asyncio.get_running_loop()
        self._thread = threading.Thread(
            target=self._watch,
            args=(loop, project, on_event, on_subscribed),
            name=f"docker-events-{self.name}",
            daemon=True,
        )
        self._thread.start()

    def _watch(self, loop, project, on_event, on_subscribed):
        delay = _RECONNECT_SECS[0]
        while not self._stopped.is_set():
            try:
                s = self.client().events(
                    decode=True,
                    filters={
                        "type": "container",
                        "event": ["die", "oom"],
                        "label": [f"simvisor.project={project}"],
                    },
                )
                self._events = s
                if self._stopped.is_set():
                    break
                loop.call_soon_threadsafe(on_subscribed, self)
                delay = _RECONNECT_SECS[0]
                for e in s:
                    loop.call_soon_threadsafe(on_event, self, e)
            except Exception as e:
                if self._stopped.is_set():
                    break
                pkdlog(
                    "docker host={} events error={} stack={}", self.name, e, pkdexc()
                )
            finally:
                self._events = None
            if self._stopped.wait(delay):
                break
            delay = min(delay * 2, _RECONNECT_SECS[1])

    def destroy(self):
        """Stop the watcher (it may take a moment to notice); idempotent."""
        self._stopped.set()
        s = self._events
        if s is not None:
            try:
                s.close()
            except Exception as e:
                pkdlog("docker host={} close events error={}", self.name, e)

    def pkdebug_str(self):
        return f"DockerHost({self.name} {self.url})"


def client(url, tls=None):
    """A Docker SDK client that trusts only `tls` (blocking).

    The API version is fixed (Docker 20.10's; later engines accept it), so
    the client can be set up before its first request: requests would let a
    CA bundle of the environment (REQUESTS_CA_BUNDLE) replace our CA, and
    would send the engine's traffic to a proxy of the environment.
    """
    c = docker.DockerClient(
        base_url=url, tls=tls, version=API_VERSION, timeout=_API_TIMEOUT_SECS
    )
    c.api.trust_env = False
    return c


def stats(container):
    """CPU (in cores) and memory use of a running container (blocking, ~1 s)."""
    try:
        s = container.stats(stream=False)
    except docker.errors.APIError as e:
        return {"error": str(e)}
    c, p = s.get("cpu_stats") or {}, s.get("precpu_stats") or {}
    cores = None
    try:
        d = c["cpu_usage"]["total_usage"] - p["cpu_usage"]["total_usage"]
        t = c["system_cpu_usage"] - p["system_cpu_usage"]
        n = c.get("online_cpus") or len(c["cpu_usage"].get("percpu_usage") or [1])
        cores = round(d / t * n, 3) if t > 0 else 0.0
    except (KeyError, TypeError):
        pass
    m = s.get("memory_stats") or {}
    u = m.get("usage")
    if u is not None:
        # the page cache is not the simulation's memory
        x = m.get("stats") or {}
        u -= x.get("total_inactive_file", x.get("inactive_file", 0))
    return {"cpu_cores": cores, "mem_bytes": u, "mem_limit_bytes": m.get("limit")}
