"""Library files of sbatch runs (issue 12): fetched by the login node's agent, once.

The test site's login node does not see the supervisor's data directory:
the agent fetches a run's library file over its websocket into its cache
on the shared filesystem (the site user's home), checks its SHA-256, and
links it into the run directory; a second run needing the same bytes
fetches nothing (the supervisor's `simvisor_library_staged_bytes`).
"""

import hashlib
import os
import pathlib
import re

import pytest
import requests

pytestmark = pytest.mark.slurm

_MIB = 1024 * 1024


def _staged_bytes(server):
    t = requests.get(server.url + "/metrics", timeout=10).text
    return float(
        re.search(r"^simvisor_library_staged_bytes_total (\S+)$", t, re.M).group(1)
    )


def test_a_library_file_is_fetched_once_and_checked(sbatch_factory, hpc_site):
    sb = sbatch_factory("prompt")
    sv = sb.server
    sv.add_user("lib")
    data = os.urandom(20 * _MIB + 123)
    sha = hashlib.sha256(data).hexdigest()
    r = requests.put(
        sv.url + "/api/library/in.bin",
        data=data,
        headers={"Authorization": "Bearer " + sv.tokens["lib"]},
        timeout=60,
    )
    assert r.status_code == 201, r.text
    sb.sign_in("lib")
    assert _staged_bytes(sv) == 0
    frames = []
    for n in range(2):
        s = sv.create("lib", "checksum", data="in.bin")
        sv.run("lib", s["id"], driver="sbatch")
        j = sv.wait_status("lib", s["id"], ("completed", "error"), 120)
        assert j["status"] == "completed", j
        frames += sv.frames("lib", s["id"])
        # the first run fetched it all, the second nothing
        assert _staged_bytes(sv) == len(data), n
    assert [(f["sha256"], f["size"], f["writable"]) for f in frames] == [
        (sha, len(data), False)
    ] * 2
    # in the agent's cache on the shared filesystem, once
    (c,) = [p for p in (hpc_site.home / sb.work_dir).rglob(sha)]
    assert c.stat().st_size == len(data)
    assert not list((hpc_site.home / sb.work_dir).rglob("*.part"))
    # an output of the sbatch run, copied into the library through the agent
    r = requests.post(
        sv.url + "/api/library",
        json={"name": "log.txt", "simulation": s["id"], "path": "run.log"},
        headers={"Authorization": "Bearer " + sv.tokens["lib"]},
        timeout=60,
    )
    assert r.status_code == 201, r.text
    want = sv.api("GET", f"/simulations/{s['id']}/files/run.log", "lib", expect=200)
    got = requests.get(
        sv.url + "/api/library/log.txt",
        headers={"Authorization": "Bearer " + sv.tokens["lib"]},
        timeout=10,
    )
    assert got.content == want.content and b"checksum:" in got.content
    # a file the site provides (the catalog's "site"): on the login node, not sent
    s = sv.create("lib", "checksum", data="site/release.dat")
    sv.run("lib", s["id"], driver="sbatch")
    j = sv.wait_status("lib", s["id"], ("completed", "error"), 120)
    assert j["status"] == "completed", j
    b = pathlib.Path("/usr/lib/os-release").read_bytes()
    assert [f["sha256"] for f in sv.frames("lib", s["id"])] == [
        hashlib.sha256(b).hexdigest()
    ]
    assert _staged_bytes(sv) == len(data)
