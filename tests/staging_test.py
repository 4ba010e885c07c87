"""agent/staging.py: a library file fetched in a window of chunks, resumed, checked.

The supervisor's side is played here by answering the agent's requests
from the bytes themselves (the end-to-end test on the real test site is
tests/sbatch_library_test.py); what is tested is the agent's cache: the
order of writes, the resume from the part after a dropped connection, and
the refusal of bytes that do not hash to their name.
"""

import asyncio
import base64
import hashlib
import os
import types

import pytest

from agent import space, staging

_MIB = 1024 * 1024


class _Supervisor:
    """Answers `library_want`s from `data` (optionally spoiled)."""

    def __init__(self, data):
        self.data = data
        self.asked = []
        self.requests = staging.Requests(self._send)

    def _send(self, kind, **f):
        assert kind == "library_want"
        self.asked.append(f)
        return True

    async def answer(self, n=None, spoil=False):
        """Answer the requests asked so far (at most `n`), as they come."""
        done = 0
        while n is None or done < n:
            await asyncio.sleep(0)
            if not self.asked:
                if n is None:
                    return
                continue
            f = self.asked.pop(0)
            b = self.data[f["offset"] : f["offset"] + f["length"]]
            if spoil:
                b = b"x" + b[1:]
            self.requests.data(
                {"req_id": f["req_id"], "data": base64.b64encode(b).decode()}
            )
            done += 1


def _run(tmp_path, data):
    d = tmp_path / "run"
    d.mkdir()
    sha = hashlib.sha256(data).hexdigest()
    return (
        types.SimpleNamespace(
            run_id="r-1",
            op={"library": [{"name": "d.bin", "sha256": sha, "size": len(data)}]},
            dir=d,
            staging=None,
            staged_inodes={},
        ),
        sha,
    )


async def test_a_dropped_connection_goes_on_from_the_part(tmp_path):
    data = os.urandom(5 * _MIB + 7)
    run, sha = _run(tmp_path, data)
    sv = _Supervisor(data)
    sv.requests.up()
    c = staging.Cache(tmp_path / "cache", sv.requests)
    seen = []
    t = asyncio.ensure_future(c.stage(run, lambda n, d, total: seen.append(d)))
    await sv.answer(2)
    # never more than the window in flight
    assert len(sv.asked) <= staging.WINDOW
    await asyncio.sleep(0.05)
    sv.requests.down()
    sv.asked.clear()
    part = tmp_path / "cache" / f"{sha}.part"
    assert part.stat().st_size == 2 * _MIB
    sv.requests.up()
    for _ in range(100):
        await asyncio.sleep(0.01)
        if sv.asked:
            break
    # it asks on from what the part holds
    assert sv.asked[0]["offset"] == 2 * _MIB
    while not t.done():
        await sv.answer()
        await asyncio.sleep(0.01)
    await t
    assert (run.dir / "d.bin").read_bytes() == data
    assert not part.exists() and seen[-1] == len(data)
    assert c.fetched_bytes == len(data)
    # a second stage of the same bytes fetches nothing
    (run.dir / "d.bin").unlink()
    await c.stage(run, lambda *a: None)
    assert c.fetched_bytes == len(data) and not sv.asked
    assert not os.stat(run.dir / "d.bin").st_mode & 0o222
    # its bytes are the library's: the run directory's walk skips them
    if os.getuid() == 0:
        # as in a container: the agent's user owns its cache, not root
        os.chown(run.dir / "d.bin", 10001, 10001)
    st = os.stat(run.dir / "d.bin")
    assert run.staged_inodes == {(st.st_dev, st.st_ino): len(data)}
    assert space.dir_bytes(run.dir) >= len(data)
    assert space.dir_bytes(run.dir, run.staged_inodes) == 0
    assert c.held() == run.staged_inodes


async def test_bytes_that_do_not_hash_to_their_name_are_not_used(tmp_path):
    data = os.urandom(_MIB + 1)
    run, _ = _run(tmp_path, data)
    sv = _Supervisor(data)
    sv.requests.up()
    c = staging.Cache(tmp_path / "cache", sv.requests)
    t = asyncio.ensure_future(c.stage(run, lambda *a: None))
    while not t.done():
        await sv.answer(spoil=True)
        await asyncio.sleep(0.01)
    with pytest.raises(staging.StagingError, match="did not hash"):
        await t
    assert not list((tmp_path / "cache").iterdir())
    assert not (run.dir / "d.bin").exists()


async def test_a_cached_file_changed_since_is_fetched_again(tmp_path):
    data = os.urandom(1000)
    run, sha = _run(tmp_path, data)
    sv = _Supervisor(data)
    sv.requests.up()
    c = staging.Cache(tmp_path / "cache", sv.requests)
    t = asyncio.ensure_future(c.stage(run, lambda *a: None))
    while not t.done():
        await sv.answer()
        await asyncio.sleep(0.01)
    await t
    p = tmp_path / "cache" / sha
    os.chmod(p, 0o644)
    p.write_bytes(b"y" * 1000)
    (run.dir / "d.bin").unlink()
    t = asyncio.ensure_future(c.stage(run, lambda *a: None))
    while not t.done():
        await sv.answer()
        await asyncio.sleep(0.01)
    await t
    assert (run.dir / "d.bin").read_bytes() == data and c.fetched_bytes == 2000
