"""The file library (issue 12): streamed uploads, resumes, dedup, quotas, runs."""

import hashlib
import os
import socket
import time

import pytest
import requests

from api_test import _state
from conftest import wait_for
from events_test import _rss_bytes

_MIB = 1024 * 1024


def _url(server, name):
    return server.url + "/api/library/" + requests.utils.quote(name, safe="")


def _auth(server, user):
    return {"Authorization": "Bearer " + server.tokens[user]}


def _put(server, user, name, data, expect=201, headers=None):
    r = requests.put(
        _url(server, name),
        data=data,
        headers={**_auth(server, user), **(headers or {})},
        timeout=120,
    )
    assert r.status_code == expect, r.text
    return r


def _get(server, user, name, headers=None):
    return requests.get(
        _url(server, name),
        headers={**_auth(server, user), **(headers or {})},
        timeout=60,
    )


def _random_file(path, n):
    h = hashlib.sha256()
    with open(path, "wb") as f:
        left = n
        while left:
            b = os.urandom(min(left, 4 * _MIB))
            f.write(b)
            h.update(b)
            left -= len(b)
    return h.hexdigest()


def _blobs(server):
    return sorted(
        p for p in (server.data_dir / "library" / "blobs").rglob("*") if p.is_file()
    )


def test_a_big_upload_streams_to_disk_and_comes_back_the_same(server, tmp_path):
    p = tmp_path / "big.bin"
    sha = _random_file(p, 200 * _MIB)
    pid = server.proc.pid
    before = _rss_bytes(pid)
    peak = [before]
    with open(p, "rb") as f:

        class Body:
            # a file to requests (its length known: no chunked encoding)
            def __len__(self):
                return 200 * _MIB

            def read(self, n=-1):
                peak[0] = max(peak[0], _rss_bytes(pid))
                return f.read(n)

        r = _put(server, "admin", "big.bin", Body())
    e = r.json()
    assert e["name"] == "big.bin" and e["size"] == 200 * _MIB and e["sha256"] == sha
    # the body went to disk: the supervisor's memory stayed flat
    assert peak[0] - before < 40 * _MIB, (before, peak[0])
    h = hashlib.sha256()
    with _get(server, "admin", "big.bin") as r:
        assert r.status_code == 200 and r.headers["X-Sha256"] == sha
        for b in r.iter_content(_MIB):
            h.update(b)
    assert h.hexdigest() == sha
    (f,) = requests.get(
        server.url + "/api/library", headers=_auth(server, "admin"), timeout=10
    ).json()
    assert f["name"] == "big.bin" and f["used_by"] == []
    w = server.api("GET", "/whoami", expect=200).json()["limits"]
    assert w["library_bytes"] == 200 * _MIB


def test_an_interrupted_upload_resumes_from_what_arrived(server):
    data = os.urandom(3 * _MIB)
    half = 1 * _MIB + 12345
    c = socket.create_connection(("127.0.0.1", server.port), 5)
    c.sendall(
        b"PUT /api/library/r.bin HTTP/1.1\r\nHost: x\r\n"
        b"Authorization: Bearer " + server.tokens["admin"].encode() + b"\r\n"
        b"Content-Length: %d\r\n\r\n" % len(data) + data[:half]
    )

    def received():
        r = server.api("GET", "/library/r.bin/upload")
        return r.status_code == 200 and r.json()["received"] == half

    # while it is on its way it is not resumable (in progress)
    time.sleep(0.3)
    assert server.api("GET", "/library/r.bin/upload").status_code == 404
    c.close()
    wait_for(received, 10, what="the dropped upload's bytes")
    assert server.api("GET", "/library/r.bin").status_code == 404
    # a wrong offset says where to go on from
    r = _put(server, "admin", "r.bin", data[5:], 409, {"Upload-Offset": "5"})
    assert r.json()["error"] == "upload_offset" and str(half) in r.json()["message"]
    r = _put(server, "admin", "r.bin", data[half:], 201, {"Upload-Offset": str(half)})
    assert r.json()["sha256"] == hashlib.sha256(data).hexdigest()
    assert _get(server, "admin", "r.bin").content == data
    assert server.api("GET", "/library/r.bin/upload").status_code == 404


def test_the_same_bytes_are_stored_once(server):
    server.add_user("bob")
    data = os.urandom(100_000)
    _put(server, "admin", "a.bin", data)
    _put(server, "admin", "b.bin", data)
    _put(server, "bob", "mine.bin", data)
    (b,) = _blobs(server)
    assert b.read_bytes() == data and not b.stat().st_mode & 0o222
    # one name gone: the bytes stay for the others; all gone: so are they
    for u, n in (("admin", "a.bin"), ("admin", "b.bin")):
        requests.delete(_url(server, n), headers=_auth(server, u), timeout=10)
    assert _blobs(server) == [b]
    r = requests.delete(
        _url(server, "mine.bin"), headers=_auth(server, "bob"), timeout=10
    )
    assert r.status_code == 200 and r.json() == {"deleted": "mine.bin"}
    assert _blobs(server) == []


def test_limits_refuse_before_the_body_is_read(server_factory):
    server = server_factory(
        basic_max_library_bytes=1_000_000, basic_max_library_file_bytes=600_000
    )
    server.add_user("bob")
    tok = server.tokens["bob"].encode()
    for n, code in ((700_000, "file_too_large"), (10**12, "file_too_large")):
        c = socket.create_connection(("127.0.0.1", server.port), 5)
        c.settimeout(5)
        # only the headers: the answer comes without the body
        c.sendall(
            b"PUT /api/library/x.bin HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
            + tok
            + b"\r\nContent-Length: %d\r\n\r\n" % n
        )
        r = c.recv(65536)
        c.close()
        assert r.startswith(b"HTTP/1.1 413") and code.encode() in r, r
    _put(server, "bob", "one.bin", b"1" * 500_000)
    r = _put(server, "bob", "two.bin", b"2" * 500_001, 413)
    assert r.json()["error"] == "quota_exceeded"
    # a file replaced gives its room back
    _put(server, "bob", "one.bin", b"3" * 600_000)
    r = requests.put(
        _url(server, "c.bin"),
        data=iter([b"chunked"]),
        headers=_auth(server, "bob"),
        timeout=10,
    )
    assert r.status_code == 411 and r.json()["error"] == "length_required"
    assert [
        f["name"]
        for f in requests.get(
            server.url + "/api/library", headers=_auth(server, "bob"), timeout=5
        ).json()
    ] == ["one.bin"]


@pytest.mark.parametrize(
    "name", ["...", ".hidden", "a\nb", "x" * 101, "é" * 128, "run.log", "a\x00b"]
)
def test_bad_names_are_refused_and_change_nothing(server, name):
    before = _state(server)
    r = _put(server, "admin", name, b"data", 400)
    assert r.json()["error"] in ("bad_name", "reserved_name"), r.text
    assert _state(server) == before and _blobs(server) == []


def test_ranges(server):
    data = bytes(range(256)) * 4
    _put(server, "admin", "r.dat", data)
    for h, status, body in (
        ("bytes=0-9", 206, data[:10]),
        ("bytes=1000-", 206, data[1000:]),
        ("bytes=-5", 206, data[-5:]),
        ("bytes=10-2000", 206, data[10:]),
        ("bytes=0-1,5-6", 200, data),
        ("lines=1-2", 200, data),
    ):
        r = _get(server, "admin", "r.dat", {"Range": h})
        assert r.status_code == status and r.content == body, h
    r = _get(server, "admin", "r.dat", {"Range": "bytes=10-19"})
    assert r.headers["Content-Range"] == "bytes 10-19/1024"
    for h in ("bytes=1024-", "bytes=-0", "bytes=9-3"):
        r = _get(server, "admin", "r.dat", {"Range": h})
        assert r.status_code == 416, h
        assert r.headers["Content-Range"] == "bytes */1024"
        assert r.json()["error"] == "range_not_satisfiable"


def test_another_users_file_is_not_there(server):
    server.add_user("eve")
    _put(server, "admin", "secret.bin", b"s" * 100)
    h = _auth(server, "eve")
    for m in ("GET", "DELETE", "PATCH"):
        r = requests.request(
            m, _url(server, "secret.bin"), headers=h, json={"name": "x.bin"}, timeout=5
        )
        assert r.status_code == 404 and r.json()["error"] == "unknown_file", (m, r.text)
    assert requests.get(server.url + "/api/library", headers=h, timeout=5).json() == []
    # nor as a parameter
    r = server.api(
        "POST",
        "/simulations",
        user="eve",
        json={"code": "checksum", "params": {"data": "secret.bin"}},
        expect=400,
    )
    assert r.json()["error"] == "bad_param" and "library" in r.json()["message"]
    assert _get(server, "admin", "secret.bin").content == b"s" * 100


def test_a_run_reads_a_library_file_it_cannot_change(server):
    data = os.urandom(2 * _MIB)
    sha = _put(server, "admin", "in.bin", data).json()["sha256"]
    r = server.api(
        "POST",
        "/simulations",
        json={"code": "checksum", "params": {"data": "in.txt"}},
        expect=400,
    )
    assert "named like *.bin or *.dat" in r.json()["message"]
    s = server.create("admin", "checksum", data="in.bin", secs=30)
    server.run("admin", s["id"])
    wait_for(lambda: server.job("admin", s["id"])["frames"], 60, what="its checksum")
    (f,) = server.frames("admin", s["id"])
    assert f == {"sha256": sha, "size": len(data), "writable": False, "chmod": False}
    # in use: neither deleted nor renamed, and listed as used
    r = requests.delete(
        _url(server, "in.bin"), headers=_auth(server, "admin"), timeout=5
    )
    assert r.status_code == 409 and r.json()["error"] == "file_in_use"
    assert s["id"] in r.json()["message"]
    # nor replaced
    r = _put(server, "admin", "in.bin", b"other", 409)
    assert r.json()["error"] == "file_in_use"
    r = requests.patch(
        _url(server, "in.bin"),
        headers=_auth(server, "admin"),
        json={"name": "n.bin"},
        timeout=5,
    )
    assert r.status_code == 409
    (e,) = requests.get(
        server.url + "/api/library", headers=_auth(server, "admin"), timeout=5
    ).json()
    assert e["used_by"] == [s["id"]]
    server.api("POST", f"/simulations/{s['id']}/cancel", expect=200)
    # the library's bytes are as they were; the run directory's file is a link
    assert hashlib.sha256(_get(server, "admin", "in.bin").content).hexdigest() == sha
    d = server.data_dir / "run" / "admin" / s["id"] / "data.bin"
    assert d.stat().st_nlink >= 2 and d.stat().st_uid == 0
    # stored once: the run directory's bytes do not count it
    assert server.api("GET", "/whoami").json()["limits"]["stored_bytes"] < _MIB
    # renamed, then deleted: a new run of it says the file is gone
    r = requests.patch(
        _url(server, "in.bin"),
        headers=_auth(server, "admin"),
        json={"name": "n.bin"},
        timeout=5,
    )
    assert r.status_code == 200 and r.json()["name"] == "n.bin"
    r = server.api("POST", f"/simulations/{s['id']}/run", json={}, expect=409)
    assert r.json()["error"] == "file_missing"


def test_an_output_is_saved_into_the_library(server_factory):
    server = server_factory(basic_max_library_bytes=3_000_000)
    server.add_user("ann")
    server.add_user("eve")
    s = server.create("ann", "fill", bytes=2_000_000)
    server.run("ann", s["id"])
    server.wait_status("ann", s["id"], "completed")
    out = server.data_dir / "run" / "ann" / s["id"] / "fill.dat"
    sha = hashlib.sha256(out.read_bytes()).hexdigest()

    def save(user, **b):
        return requests.post(
            server.url + "/api/library", json=b, headers=_auth(server, user), timeout=30
        )

    r = save("ann", name="restart.dat", simulation=s["id"], path="fill.dat")
    assert r.status_code == 201, r.text
    assert r.json()["sha256"] == sha and r.json()["size"] == 2_000_000
    assert _get(server, "ann", "restart.dat").content == out.read_bytes()
    before = _state(server)
    # no room for a second copy: refused, nothing kept
    r = save("ann", name="again.dat", simulation=s["id"], path="fill.dat")
    assert r.status_code == 413 and r.json()["error"] == "quota_exceeded", r.text
    for b, status in (
        (dict(name="x.dat", simulation=s["id"], path="nope.dat"), 404),
        (dict(name="x.dat", simulation=s["id"], path="a\nb"), 400),
        (dict(name="../x", simulation=s["id"], path="fill.dat"), 400),
    ):
        r = save("ann", **b)
        assert r.status_code == status, (b, r.text)
    # another user's simulation is not there
    r = save("eve", name="x.dat", simulation=s["id"], path="fill.dat")
    assert r.status_code == 404 and r.json()["error"] == "unknown_simulation"
    assert _state(server) == before
    assert not [
        p for p in (server.data_dir / "library" / "partial").rglob("*") if p.is_file()
    ]


def _drop_after(server, user, name, total, sent):
    """Start an upload of `total` bytes, send `sent` of them, and drop it."""
    c = socket.create_connection(("127.0.0.1", server.port), 5)
    c.sendall(
        f"PUT /api/library/{name} HTTP/1.1\r\nHost: x\r\n"
        f"Authorization: Bearer {server.tokens[user]}\r\n"
        f"Content-Length: {total}\r\n\r\n".encode() + b"p" * sent
    )
    return c


def test_uploads_on_their_way_and_kept_count_in_the_quota(server_factory):
    server = server_factory(basic_max_library_bytes=10_000_000)
    server.add_user("bob")
    # on its way: 6 MB declared, so 5 MB more do not fit meanwhile
    c = _drop_after(server, "bob", "a.bin", 6_000_000, 1_000_000)
    wait_for(
        lambda: server.api("GET", "/library/a.bin/upload", "bob").status_code == 404
        and _put(server, "bob", "a.bin", b"", 409).json()["error"]
        == "upload_in_progress",
        10,
        what="the upload on its way",
    )
    r = _put(server, "bob", "b.bin", b"b" * 5_000_000, 413)
    assert r.json()["error"] == "quota_exceeded"
    # a second upload of the same name at once is refused, not mixed in
    r = _put(server, "bob", "a.bin", b"x" * 10, 409, {"Upload-Offset": "0"})
    assert r.json()["error"] == "upload_in_progress"
    c.close()
    wait_for(
        lambda: server.api("GET", "/library/a.bin/upload", "bob").status_code == 200,
        10,
        what="the dropped upload kept",
    )
    wait_for(
        lambda: server.api("GET", "/whoami", "bob").json()["limits"]["library_bytes"]
        == 1_000_000,
        10,
        what="the part counted",
    )
    # kept: it still counts (1 MB), so 9 MB fit and 9.5 MB do not
    _put(server, "bob", "b.bin", b"b" * 9_000_000)
    r = _put(server, "bob", "c.bin", b"c" * 500_000, 413)
    assert r.json()["error"] == "quota_exceeded"


def test_interrupted_uploads_are_bounded_in_number(server):
    from supervisor import library

    server.add_user("bob")
    for i in range(library.MAX_PARTS):
        _drop_after(server, "bob", f"p{i}.bin", 1000, 10).close()
    wait_for(
        lambda: all(
            server.api("GET", f"/library/p{i}.bin/upload", "bob").status_code == 200
            for i in range(library.MAX_PARTS)
        ),
        10,
        what="the parts kept",
    )
    r = _put(server, "bob", "one-more.bin", b"x", 409)
    assert r.json()["error"] == "too_many_uploads"
    # a kept one may go on
    _put(server, "bob", "p0.bin", b"p" * 990, 201, {"Upload-Offset": "10"})
    _put(server, "bob", "one-more.bin", b"x")


def test_renames_at_once_leave_one_name(server):
    import concurrent.futures

    for k in range(5):
        _put(server, "admin", f"r{k}.bin", b"r" * 1000 + bytes([k]))

    def rename(k, new):
        return requests.patch(
            _url(server, f"r{k}.bin"),
            json={"name": new},
            headers=_auth(server, "admin"),
            timeout=10,
        ).status_code

    with concurrent.futures.ThreadPoolExecutor(10) as ex:
        codes = list(
            ex.map(
                lambda a: rename(*a),
                [(k, f"{k}-{x}.bin") for k in range(5) for x in "ab"],
            )
        )
    assert sorted(codes) == [200] * 5 + [404] * 5, codes
    names = [
        f["name"]
        for f in requests.get(
            server.url + "/api/library", headers=_auth(server, "admin"), timeout=5
        ).json()
    ]
    assert len(names) == 5 and not any(n.startswith("r") for n in names), names
    assert server.api("GET", "/whoami").json()["limits"]["library_bytes"] == 5 * 1001


def test_a_full_disk_keeps_no_entry(server_factory, tmp_path):
    import small_disk

    d = tmp_path / "data"
    (d / "library").mkdir(parents=True)
    with small_disk.mounted(d / "library", "8m"):
        server = server_factory(data_dir=d)
        before = _state(server)
        r = _put(server, "admin", "big.bin", os.urandom(12 * _MIB), 507)
        assert r.json()["error"] == "insufficient_storage", r.text
        assert _state(server) == before
        assert (
            requests.get(
                server.url + "/api/library", headers=_auth(server, "admin"), timeout=5
            ).json()
            == []
        )
        assert _blobs(server) == []
        # room again: the same name goes in
        for p in (d / "library" / "partial").rglob("*"):
            if p.is_file():
                p.unlink()
        _put(server, "admin", "big.bin", os.urandom(2 * _MIB))
        server.stop()


def test_a_deleted_file_leaves_no_uncounted_bytes_in_run_directories(server):
    data = os.urandom(_MIB)
    _put(server, "admin", "in.bin", data)
    ids = []
    for _ in range(2):
        s = server.create("admin", "checksum", data="in.bin")
        server.run("admin", s["id"])
        server.wait_status("admin", s["id"], "completed")
        ids.append(s["id"])
    r = requests.delete(
        _url(server, "in.bin"), headers=_auth(server, "admin"), timeout=5
    )
    assert r.status_code == 200
    for i in ids:
        d = server.data_dir / "run" / "admin" / i
        assert not (d / "data.bin").exists() and (d / "params.json").exists()
    assert _blobs(server) == []


def test_a_slow_upload_takes_its_time_a_stalled_one_is_dropped(server_factory):
    server = server_factory(body_timeout_secs=2)
    data = os.urandom(3 * _MIB)

    def slow():
        for i in range(0, len(data), 256 * 1024):
            time.sleep(0.25)
            yield data[i : i + 256 * 1024]

    class Body:
        def __len__(self):
            return len(data)

        def __init__(self):
            self._it = slow()
            self._left = b""

        def read(self, n=-1):
            if not self._left:
                self._left = next(self._it, b"")
            b, self._left = self._left[:n], self._left[n:]
            return b

    t = time.monotonic()
    r = _put(server, "admin", "slow.bin", Body())
    # longer than the body timeout in all, never paused that long
    assert time.monotonic() - t > 2 and r.json()["size"] == len(data)
    c = _drop_after(server, "admin", "stall.bin", 2 * _MIB, _MIB + 5)
    c.settimeout(10)
    t = time.monotonic()
    assert c.recv(100) == b""
    assert 1.5 < time.monotonic() - t < 8
    c.close()
    r = server.api("GET", "/library/stall.bin/upload", expect=200)
    assert r.json()["received"] == _MIB + 5
