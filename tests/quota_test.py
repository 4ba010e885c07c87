"""Stored bytes per user by plan (issue 10): uploads, run outputs, a restart."""

import time

import requests

from conftest import procs_under, wait_for

import raw_http
from supervisor import usage

_CAP = 100_000


def test_usage_totals_follow_their_parts():
    u = usage.Usage()
    u.set("a", "s1", usage.input_part("x"), 10)
    u.add("a", "s1", usage.FRAMES, 5)
    u.add("a", "s1", usage.FRAMES, 5)
    u.set("a", "s2", usage.RUN, 100)
    u.set("b", "s3", usage.LOG, 7)
    assert (u.bytes_of("a"), u.bytes_of("b"), u.bytes_of("c")) == (120, 7, 0)
    # replaced, not added
    u.set("a", "s1", usage.input_part("x"), 3)
    assert u.bytes_of("a") == 113 and u.get("a", "s1", usage.FRAMES) == 10
    u.set("a", "s1", usage.FRAMES, 0)
    u.forget("a", "s2")
    assert u.bytes_of("a") == 3
    u.forget("a", "s1")
    u.forget("a", "nothing")
    # nothing is kept of what is gone
    u.set("a", "s9", usage.RUN, 0)
    assert u.bytes_of("a") == 0 and u._parts["a"] == {}


def test_dir_bytes_counts_files_not_links(tmp_path):
    (tmp_path / "d" / "e").mkdir(parents=True)
    (tmp_path / "d" / "a").write_bytes(b"x" * 10)
    (tmp_path / "d" / "e" / "b").write_bytes(b"x" * 5)
    (tmp_path / "d" / "link").symlink_to("/etc/passwd")
    (tmp_path / "d" / "dirlink").symlink_to(tmp_path / "d" / "e")
    # a long target takes a block; many names take the directory's blocks
    (tmp_path / "d" / "long").symlink_to("/".join(["t" * 200] * 15))
    d = tmp_path / "d"
    want = 0
    for p in (d / "a", d / "e" / "b", d / "e", d / "link", d / "dirlink", d / "long"):
        st = p.lstat()
        b = st.st_blocks * 512
        if p.is_file() and not p.is_symlink():
            b = max(b, st.st_size)
        want += max(b, 512)
    assert usage.dir_bytes(d) == want
    # the links' targets are not followed: /etc/passwd is not counted
    assert want < 10 * 4096 + 3000
    assert usage.dir_bytes(tmp_path / "missing") == 0
    assert usage.file_bytes(tmp_path / "d" / "a") == 10
    assert usage.file_bytes(tmp_path / "d" / "link") == 0


def _limits(server, user):
    return server.api("GET", "/whoami", user, expect=200).json()["limits"]


def _upload(server, user, sid, name, data, expect=201):
    return server.api(
        "POST", f"/simulations/{sid}/files?name={name}", user, data=data, expect=expect
    )


def _inputs_on_disk(server, user, sid):
    d = server.data_dir / "inputs" / user / sid
    return sorted(p.name for p in d.iterdir()) if d.exists() else []


def _raw(server, user, sid, name, head, body):
    """Send a request's head and `body` (not necessarily all); the reply."""
    return raw_http.reply(
        server.port,
        f"POST /api/simulations/{sid}/files?name={name} HTTP/1.1\r\nHost: x\r\n"
        f"Authorization: Bearer {server.tokens[user]}\r\n{head}\r\n".encode() + body,
    )


def test_uploads_count_and_are_refused_past_the_cap(server_factory):
    server = server_factory(basic_max_stored_bytes=_CAP)
    server.add_user("bob")
    sid = server.create("bob", "sleep", secs=0.01)["id"]
    assert _limits(server, "bob") == dict(
        _limits(server, "bob"), max_stored_bytes=_CAP, stored_bytes=0
    )
    _upload(server, "bob", sid, "a.txt", b"a" * 60_000)
    assert _limits(server, "bob")["stored_bytes"] == 60_000
    # declared too big: refused from the headers, the body never sent
    r = _raw(server, "bob", sid, "b.txt", "Content-Length: 60000\r\n", b"")
    assert r.startswith(b"HTTP/1.1 413") and b'"quota_exceeded"' in r, r[:300]
    # no length: refused once the streamed bytes pass the room, before the end
    r = _raw(
        server,
        "bob",
        sid,
        "b.txt",
        "Transfer-Encoding: chunked\r\n",
        b"%x\r\n%s\r\n" % (50_000, b"b" * 50_000),
    )
    assert r.startswith(b"HTTP/1.1 413") and b'"quota_exceeded"' in r, r[:300]
    r = _upload(server, "bob", sid, "b.txt", iter([b"b" * 30_000] * 2), expect=413)
    assert r.json()["error"] == "quota_exceeded"
    # nothing of them kept
    assert _inputs_on_disk(server, "bob", sid) == ["a.txt"]
    assert _limits(server, "bob")["stored_bytes"] == 60_000
    # a replaced file gives its room back; what fits goes in
    _upload(server, "bob", sid, "a.txt", b"a" * 90_000)
    _upload(server, "bob", sid, "c.txt", b"c" * 10_000)
    assert _limits(server, "bob")["stored_bytes"] == _CAP
    _upload(server, "bob", sid, "d.txt", b"d", expect=413)
    # another user has room of their own
    server.add_user("carol")
    s2 = server.create("carol", "sleep", secs=0.01)["id"]
    _upload(server, "carol", s2, "a.txt", b"a" * 60_000)
    # a deleted simulation's bytes are free again
    server.api("DELETE", f"/simulations/{sid}", "bob", expect=200)
    assert _limits(server, "bob")["stored_bytes"] == 0


def test_a_run_that_fills_its_room_is_stopped_as_it_goes(server_factory):
    server = server_factory(basic_max_stored_bytes=20_000_000)
    server.add_user("bob")
    # 1 GB over 100 s, 10 MB/s: past the room within 2 s
    s = server.create("bob", "fill", bytes=1_000_000_000, secs=100)["id"]
    t = time.monotonic()
    server.run("bob", s)
    j = server.wait_status("bob", s, ("completed", "error"), 60)
    assert j["status"] == "error" and "passed the room" in j["error"], j
    assert time.monotonic() - t < 30
    d = server.data_dir / "run" / "bob" / s
    # no one file grows past the room (the code's RLIMIT_FSIZE)
    assert 19_000_000 < (d / "fill.dat").stat().st_size <= 20_000_000
    assert not procs_under(d)


def test_a_fast_writer_is_stopped_at_the_room(server_factory):
    server = server_factory(basic_max_stored_bytes=20_000_000)
    server.add_user("bob")
    s = server.create("bob", "fill", bytes=1_000_000_000)["id"]
    server.run("bob", s)
    j = server.wait_status("bob", s, ("completed", "error"), 60)
    assert j["status"] == "error" and "passed the room" in j["error"], j
    d = server.data_dir / "run" / "bob" / s
    assert (d / "fill.dat").stat().st_size <= 20_000_000


def test_run_outputs_count_and_runs_are_refused_over_the_cap(server_factory):
    server = server_factory(basic_max_stored_bytes=3_000_000)
    server.add_user("bob")
    keep = server.create("bob", "sleep", secs=0.01)["id"]
    _upload(server, "bob", keep, "in.txt", b"i" * 1000)
    server.run("bob", keep)
    server.wait_status("bob", keep, "completed")
    wait_for(
        lambda: _limits(server, "bob")["stored_bytes"] > 1000,
        20,
        what="the run's log and params counted",
    )
    kept = _limits(server, "bob")["stored_bytes"]
    # fast: done before the first walk, and over the room at its end
    big = server.create("bob", "fill", bytes=3_500_000)["id"]
    server.run("bob", big)
    j = server.wait_status("bob", big, ("completed", "error"))
    assert j["status"] == "error" and "passed the room" in j["error"], j
    assert f"{3_000_000 - kept} allowed" in j["error"], (kept, j["error"])
    wait_for(
        # no file past the room (RLIMIT_FSIZE): the user is at the cap
        lambda: _limits(server, "bob")["stored_bytes"] >= 3_000_000,
        20,
        what="the run directory measured",
    )
    # over the cap: no new run, no upload, a clear error
    r = server.api("POST", f"/simulations/{keep}/run", "bob", json={}, expect=409)
    assert r.json()["error"] == "quota_exceeded", r.text
    assert "delete simulations" in r.json()["message"]
    assert server.job("bob", keep)["status"] == "completed"
    _upload(server, "bob", keep, "more.txt", b"x", expect=413)
    # a restart measures it all again, to the same figure
    n = _limits(server, "bob")["stored_bytes"]
    server.stop()
    server.start()
    assert _limits(server, "bob")["stored_bytes"] == n
    # room again once the big one is gone
    server.api("DELETE", f"/simulations/{big}", "bob", expect=200)
    assert _limits(server, "bob")["stored_bytes"] == kept
    server.run("bob", keep)
    server.wait_status("bob", keep, "completed")
    assert requests.get(server.url + "/api/health", timeout=5).ok
