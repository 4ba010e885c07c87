"""supervisor sim: create, run, watch and cancel simulations through the API.

A client of a running supervisor like any other (see `supervisor.client`).
Every command takes ``--url`` and ``--token``; without them it reads

- ``SUPERVISOR_PKCLI_SIM_URL``: the supervisor (default http://127.0.0.1:8000)
- ``SUPERVISOR_PKCLI_SIM_TOKEN``: an API token (``supervisor user add`` prints one)

For example::

    supervisor sim submit heat --params '{"steps": 20000}' --watch
    id=$(supervisor sim create lorenz --name demo)
    supervisor sim run $id --cores 1
    supervisor sim watch $id
"""

import contextlib
import json
import sys

import argh
import requests
from pykern import pkcli, pkconfig

from supervisor import client, job

_cfg = pkconfig.init(
    url=("http://127.0.0.1:8000", str, "URL of the supervisor"),
    token=(None, str, "API token (supervisor user add prints one)"),
)

#: characters of the progress bar between its brackets
_BAR_CHARS = 40

# the commands' arguments with their help for ``-h`` (argh reads no Args: of
# docstrings; it shows each default after the help, ``-`` for None)
_URL = argh.arg(
    "--url",
    help="supervisor URL; if not given, $SUPERVISOR_PKCLI_SIM_URL"
    " or http://127.0.0.1:8000",
)
_TOKEN = argh.arg(
    "--token", help="API token; if not given, $SUPERVISOR_PKCLI_SIM_TOKEN"
)
_SIM_ID = argh.arg("sim_id", help="the simulation's id")
_CODE = argh.arg("code", help="a code of the catalog (supervisor sim codes)")
_NAME = argh.arg("--name", help="its name; if not given, the code's title")
_PARAMS = argh.arg(
    "--params", help="parameters as a JSON object, e.g. '{\"steps\": 1000}'"
)
_CORES = argh.arg("--cores", help="cores for the run")


@_CODE
@_NAME
@_PARAMS
@_URL
@_TOKEN
def create(code, name=None, params=None, url=None, token=None):
    """Create a simulation of `code`; prints its id."""
    with _client(url, token) as c:
        return c.create(code, _params(params), name)["id"]


@_SIM_ID
@_CORES
@_URL
@_TOKEN
def run(sim_id, cores=1, url=None, token=None):
    """Start a run of `sim_id` (replacing a current one); prints its run id."""
    with _client(url, token) as c:
        return c.run(sim_id, cores=int(cores)).run_id


@_CODE
@_PARAMS
@_CORES
@_NAME
@argh.arg("--watch", help="follow the run to its end and print its final status")
@_URL
@_TOKEN
def submit(code, params=None, cores=1, name=None, watch=False, url=None, token=None):
    """Create a simulation and run it; prints its id, or with --watch its progress."""
    with _client(url, token) as c:
        h = c.submit(code, _params(params), cores=int(cores), name=name)
        if watch:
            return _watch(h)
        return h.id


@_SIM_ID
@_URL
@_TOKEN
def cancel(sim_id, url=None, token=None):
    """Cancel the current run of `sim_id`; prints the job's status."""
    with _client(url, token) as c:
        return c.cancel(sim_id)["status"]


@_SIM_ID
@_URL
@_TOKEN
def status(sim_id, url=None, token=None):
    """Print the status of `sim_id`'s job (and its progress or error)."""
    with _client(url, token) as c:
        return _describe(c.simulation(sim_id).job())


@_SIM_ID
@_URL
@_TOKEN
def watch(sim_id, url=None, token=None):
    """Follow the current (or next) run of `sim_id` to its end.

    Prints each status as it changes and a progress bar while it runs, from
    pushed events; returns the final status.
    """
    with _client(url, token) as c:
        h = c.simulation(sim_id)
        if h.run_id is None:
            sys.stdout.write("never run: waiting for a run\n")
        return _watch(h)


@_URL
@_TOKEN
def list(url=None, token=None):
    """List your simulations: id, code, status, name."""
    with _client(url, token) as c:
        return "\n".join(
            f"{s['id']}\t{s['code']}\t{s['job']['status']}\t{s['name']}"
            for s in c.simulations()
        )


@_URL
@_TOKEN
def codes(url=None, token=None):
    """List the catalog: name, kind, title."""
    with _client(url, token) as c:
        return "\n".join(f"{x['name']}\t{x['kind']}\t{x['title']}" for x in c.codes())


@contextlib.contextmanager
def _client(url, token):
    t = token or _cfg.token
    if not t:
        pkcli.command_error(
            "no API token: give --token or set SUPERVISOR_PKCLI_SIM_TOKEN"
        )
    u = url or _cfg.url
    c = client.Client(u, t)
    try:
        yield c
    except client.ApiError as e:
        pkcli.command_error("{}", e)
    except (requests.ConnectionError, ConnectionError) as e:
        pkcli.command_error("cannot reach the supervisor at {}: {}", u, e)
    finally:
        c.close()


def _params(text):
    if text is None:
        return None
    try:
        p = json.loads(text)
    except ValueError as e:
        pkcli.command_error("--params is not JSON: {}", e)
    if not isinstance(p, dict):
        pkcli.command_error("--params must be a JSON object")
    return p


def _describe(job_):
    s = job_["status"]
    if s == job.RUNNING:
        return f"{s} {_percent(job_)}"
    if job_.get("error") and s in job.ENDED:
        return f"{s}: {job_['error']}"
    return s


def _percent(job_):
    return f"{int(100 * (job_.get('progress') or 0)):3d}%"


def _watch(handle):
    """Print status changes and a progress bar redrawn in place; returns the final status."""
    out = sys.stdout
    status_ = None
    bar = None
    j = None
    try:
        with contextlib.closing(handle.watch()) as w:
            for j in w:
                s = j["status"]
                if s != status_ and s not in job.ENDED:
                    if bar is not None:
                        out.write("\n")
                        bar = None
                    out.write(f"{s}\n")
                status_ = s
                if s == job.RUNNING or (s == job.COMPLETED and bar is not None):
                    b = _bar(j)
                    if b != bar:
                        out.write("\r" + b)
                        bar = b
                out.flush()
    except KeyboardInterrupt:
        pass
    finally:
        if bar is not None:
            out.write("\n")
        out.flush()
    if j is None:
        return None
    if j["status"] in job.ENDED and j.get("error"):
        pkcli.command_info("{}: {}\n", j["status"], j["error"])
    return j["status"]


def _bar(job_):
    n = int(_BAR_CHARS * min(1.0, max(0.0, job_.get("progress") or 0)))
    return f"[{'#' * n}{'.' * (_BAR_CHARS - n)}] {_percent(job_)}"
