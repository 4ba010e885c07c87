"""Configuration: every setting with a default, a parser and a line of doc.

Set through the environment as ``SUPERVISOR_CONFIG_<NAME>``; the command line
(`supervisor service --port ...`) overrides a few. `load` returns a copy so a
test can start several supervisors with different settings.
"""

import json
import os

from pykern import pkconfig
from pykern.pkcollections import PKDict

import agent


def _cores():
    return os.cpu_count() or 1


def _json_list(value):
    """A JSON list (e.g. of Docker hosts); a list is taken as is."""
    v = json.loads(value) if isinstance(value, str) else value
    if not isinstance(v, list):
        raise ValueError(f"expected a JSON list, got {value!r}")
    return v


def _json_dict(value):
    """A JSON object; a dict is taken as is."""
    v = json.loads(value) if isinstance(value, str) else value
    if not isinstance(v, dict):
        raise ValueError(f"expected a JSON object, got {value!r}")
    return v


def _sandbox_mode(value):
    v = str(value).lower()
    if v not in SANDBOX_MODES:
        raise ValueError(f"expected one of {SANDBOX_MODES}, got {value!r}")
    return v


#: values of local_sandbox
SANDBOX_MODES = ("auto", "on", "off")


_cfg = pkconfig.init(
    host=("127.0.0.1", str, "address to listen on (loopback only by default)"),
    port=(8000, pkconfig.parse_positive_int, "port to listen on"),
    data_dir=("var", str, "data directory: db/ (json-store) and run/ (run dirs)"),
    test_codes=(False, pkconfig.parse_bool, "add the test codes to the catalog"),
    catalog=(None, str, "catalog file (default: etc/codes.json of the project)"),
    default_driver=("local", str, "driver for runs that do not name one"),
    local_cores=(
        _cores(),
        pkconfig.parse_positive_int,
        "core budget of the local host",
    ),
    local_sandbox=(
        "auto",
        _sandbox_mode,
        "local runs under bubblewrap: auto (if bwrap works here), on (runs fail without it), off",
    ),
    local_sandbox_uid=(
        10001,
        int,
        "uid and gid of sandboxed local runs (if the agent runs as root)",
    ),
    local_agent_restarts=(
        3,
        int,
        "a local agent that dies holding runs is started again up to this often; the new one re-attaches them (0: its runs end with it)",
    ),
    local_orphan_secs=(
        30.0,
        float,
        "how long the runs of a local agent that died wait for the new one before their trees are ended",
    ),
    agent_socket=(
        "",
        str,
        "unix socket for agents in network-less containers (default: DATA_DIR/sock/agent.sock)",
    ),
    docker_hosts=(
        [],
        _json_list,
        'Docker hosts, JSON: [{"name", "url" (unix:// or tcp://), "cores", "tls_dir"?, "network"?}]',
    ),
    sbatch_hosts=(
        [],
        _json_list,
        'HPC login nodes, JSON: [{"name", "address", "port", "known_hosts", "otp" (none, append, prompt), "cores", "agent_command", "work_dir", "supervisor_url", "partition", "account", "qos"}] (etc/sbatch.env.example)',
    ),
    sbatch_plan_options=(
        {},
        _json_dict,
        'sbatch options by plan, JSON: {"premium": {"qos": "premium"}} (site < plan < code)',
    ),
    sbatch_lost_grace_secs=(
        7 * 86400.0,
        float,
        "a Slurm run whose agent is gone stays lost this long (until its user signs in again)",
    ),
    sbatch_agent_idle_secs=(
        86400.0,
        float,
        "an sbatch agent with no work for this long is shut down (its user must sign in again)",
    ),
    max_fetch_bytes=(
        0,
        int,
        "largest output file downloaded through an agent (sbatch); 0: any size (it is streamed a MiB at a time)",
    ),
    docker_image=(
        f"simvisor-agent:{agent.VERSION}",
        str,
        "agent image (etc/docker/build-agent-image.sh)",
    ),
    docker_uid=(10001, int, "uid of agents in containers (if we are root)"),
    docker_pids_limit=(512, int, "processes (and threads) per container"),
    docker_tmp_bytes=(64 * 1024 * 1024, int, "size of a container's tmpfs /tmp"),
    docker_project=(
        "",
        str,
        "label of this supervisor's containers (default: from the data dir)",
    ),
    basic_mem_bytes=(2 * 1024**3, int, "memory of a user's container, basic plan"),
    premium_mem_bytes=(16 * 1024**3, int, "memory of a user's container, premium plan"),
    basic_max_running=(2, int, "running jobs per user on the basic plan"),
    basic_max_run_memory_bytes=(
        4 * 1024**3,
        int,
        "memory of one local run on the basic plan (its cgroup, if the host allows); 0: none",
    ),
    premium_max_run_memory_bytes=(
        32 * 1024**3,
        int,
        "memory of one local run on the premium plan; 0: none",
    ),
    basic_max_run_pids=(
        1024,
        int,
        "processes and threads of one local run, basic plan",
    ),
    premium_max_run_pids=(
        8192,
        int,
        "processes and threads of one local run, premium plan",
    ),
    basic_max_run_secs=(3600.0, float, "max run time on the basic plan"),
    basic_max_cores=(2, int, "max cores of one run on the basic plan"),
    premium_max_running=(8, int, "running jobs per user on the premium plan"),
    sweep_max_members=(10000, int, "members one sweep may have at most"),
    basic_max_simulations=(1000, int, "simulations a basic user may keep"),
    premium_max_simulations=(10000, int, "simulations a premium user may keep"),
    basic_max_event_sockets=(20, int, "open /api/events of a basic user"),
    premium_max_event_sockets=(100, int, "open /api/events of a premium user"),
    basic_max_stored_bytes=(
        10 * 1024**3,
        int,
        "inputs, frames, logs and run outputs on this host a basic user may keep",
    ),
    premium_max_stored_bytes=(
        200 * 1024**3,
        int,
        "inputs, frames, logs and run outputs on this host a premium user may keep",
    ),
    basic_max_library_bytes=(
        20 * 1024**3,
        int,
        "bytes of the files in a basic user's library",
    ),
    premium_max_library_bytes=(
        1024**4,
        int,
        "bytes of the files in a premium user's library",
    ),
    basic_max_library_file_bytes=(
        4 * 1024**3,
        int,
        "bytes of one file in a basic user's library",
    ),
    premium_max_library_file_bytes=(
        64 * 1024**3,
        int,
        "bytes of one file in a premium user's library",
    ),
    rate_per_sec=(
        100.0,
        float,
        "requests per second of one user (or one address without credentials); 0: off",
    ),
    rate_burst=(500, int, "requests in a burst above rate_per_sec"),
    bad_credentials_per_sec=(
        0.2,
        float,
        "wrong tokens or logins per second from one address, once the burst is used",
    ),
    bad_credentials_burst=(
        10,
        int,
        "wrong tokens or logins in a row before slowing down",
    ),
    premium_max_run_secs=(86400.0, float, "max run time on the premium plan"),
    premium_max_cores=(64, int, "max cores of one run on the premium plan"),
    max_analyses=(4, int, "concurrent analysis runs per user (their own lane)"),
    max_run_slack_secs=(
        5.0,
        float,
        "supervisor ends a run this long after the agent should have",
    ),
    lost_grace_secs=(
        300.0,
        float,
        "a lost run becomes error after this long without its agent",
    ),
    agent_start_timeout_secs=(
        30.0,
        float,
        "an agent that does not call back by then is killed",
    ),
    agent_idle_secs=(300.0, float, "an agent with no work for this long is shut down"),
    cancel_timeout_secs=(
        10.0,
        float,
        "how long a cancel waits for the agent to confirm",
    ),
    kill_grace_secs=(2.0, float, "agent: SIGTERM, then SIGKILL after this long"),
    max_body_bytes=(16 * 1024 * 1024, int, "largest HTTP request body"),
    max_user_body_bytes=(
        64 * 1024 * 1024,
        int,
        "request body bytes one user may have on their way in at once (429 past it)",
    ),
    trusted_proxies=(
        [],
        _json_list,
        "addresses of reverse proxies whose X-Forwarded-For/-Proto are believed",
    ),
    max_connections=(
        8192,
        int,
        "open HTTP connections at most (kept below the open-file limit)",
    ),
    max_connections_per_address=(
        1024,
        int,
        "open HTTP connections from one client address at most",
    ),
    header_timeout_secs=(
        20.0,
        float,
        "a request's headers must arrive within this (also keep-alive idle)",
    ),
    body_timeout_secs=(
        60.0,
        float,
        "a request's body must arrive within this (a library upload: no pause in it this long)",
    ),
    max_inputs_chars=(
        12 * 1024 * 1024,
        int,
        "all inputs of one run, uploads and analysis sources",
    ),
    max_upload_bytes=(8 * 1024 * 1024, int, "largest uploaded input file"),
    max_frames=(10000, int, "frames kept per run"),
    max_event_queue_bytes=(
        1024 * 1024,
        int,
        "queued for one /api/events client (coalesced); beyond, it is resynced",
    ),
    log_tail_chars=(1024 * 1024, int, "log text kept per run"),
)


def load(**overrides):
    """A copy of the configuration with `overrides` (None values ignored)."""
    c = PKDict(_cfg)
    for k, v in overrides.items():
        if k not in c:
            raise KeyError(f"unknown config key={k}")
        if v is not None:
            c[k] = v
    return c
