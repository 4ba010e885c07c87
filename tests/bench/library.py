"""Row 18 of ``./run.sh bench``: the file library's upload throughput (issue 12).

The same file (`UPLOAD_MIB` MiB of random bytes) is sent by the same client
(`requests`, reading it 1 MiB at a time) to ``PUT /api/library/{name}`` of a
real supervisor (credentials, the plan's limits from the headers, the bytes
streamed to a part file and hashed as they come, fsynced, renamed into the
content-addressed store, the entry saved durably) and, for the floor, to a
trivial Tornado ``stream_request_body`` handler that counts and drops them
(tests/bench/sink.py). Samples alternate; each upload has its own name and
is deleted after, so every one is stored anew.
"""

import asyncio
import os
import subprocess
import sys
import time

import requests

from tests.bench import figures
from tests.bench.report import PER_SEC, BenchError, Row, paired

UPLOAD_MIB = 128
_MIB = 1024 * 1024


def upload_row():
    r = Row(
        f"18 library upload, {UPLOAD_MIB} MiB (MiB/s)",
        PER_SEC,
        "the same file from the same client to a bare Tornado "
        "stream_request_body handler that counts and drops the bytes "
        "(tests/bench/sink.py): no credentials, no hash, no disk",
    )
    r.note = (
        f"PUT /api/library/{{name}} of {UPLOAD_MIB} MiB (requests, 1 MiB reads, a "
        "new connection each): the body streamed to a part file with its "
        "SHA-256, fsynced, renamed into the store, the entry saved; each "
        "upload a new name, deleted after"
    )
    return r


def _put(url, path, headers=None):
    """MiB/s of one PUT of the file at `path` to `url`."""
    with open(path, "rb") as f:
        t = time.perf_counter()
        r = requests.put(url, data=f, headers=headers or {}, timeout=300)
        t = time.perf_counter() - t
    if r.status_code not in (200, 201):
        raise BenchError(f"PUT {url}: {r.status_code} {r.text[:300]}")
    return os.path.getsize(path) / _MIB / t


async def measure_upload(conftest, tmp, row, leftovers):
    """Fill `row`; what its supervisor left running goes to `leftovers`."""
    f = tmp / "upload.bin"
    with open(f, "wb") as o:
        for _ in range(UPLOAD_MIB):
            o.write(os.urandom(_MIB))
    b = figures._Bench(conftest, tmp / "library")
    sink = subprocess.Popen(
        [sys.executable, "-m", "tests.bench.sink"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    n = [0]
    try:
        port = int(sink.stdout.readline())
        await b.start()
        s = b.server
        h = {"Authorization": "Bearer " + s.tokens["admin"]}

        async def floor():
            return await asyncio.to_thread(_put, f"http://127.0.0.1:{port}/x", f)

        async def figure():
            n[0] += 1
            u = f"{s.url}/api/library/bench-{n[0]}.bin"
            v = await asyncio.to_thread(_put, u, f, h)
            await asyncio.to_thread(requests.delete, u, headers=h, timeout=30)
            return v

        row.floor, row.figure = await paired(floor, figure, 5, 60, 3)
    finally:
        sink.stdin.close()
        sink.wait(10)
        f.unlink(missing_ok=True)
        leftovers += await b.cleanup()
