"""The front door: connection caps, header timeouts, the accept loop (issue 10)."""

import asyncio
import errno
import json
import os
import re
import socket
import time

import pytest
import requests

from conftest import wait_for

import raw_http
from supervisor import gate


def test_gate_counts_in_all_and_per_address():
    g = gate.Gate(3, 2)
    assert g.admit("a") and g.admit("a")
    assert not g.admit("a"), "per address"
    assert g.admit("b")
    assert not g.admit("c"), "in all"
    assert g.refused == 2
    g.release("a")
    assert g.admit("c")
    for a in ("a", "b", "c"):
        g.release(a)
    assert g.total == 0 and g.admit("a")


class _FullTable:
    """A listening socket whose accept fails as with a full descriptor table."""

    def __init__(self):
        self.r, self.w = socket.socketpair()
        self.w.send(b"x")
        self.accepts = 0

    def fileno(self):
        return self.r.fileno()

    def accept(self):
        self.accepts += 1
        raise OSError(errno.EMFILE, "Too many open files")

    def close(self):
        self.r.close()
        self.w.close()


async def test_accept_pauses_when_descriptors_run_out():
    s = _FullTable()
    a = gate._Acceptor(s, lambda c, addr: None)
    try:
        await asyncio.sleep(0.2)
        # once, not once per loop turn: the readable socket is not spun on
        assert s.accepts == 1
        await asyncio.sleep(gate._PAUSE_SECS + 0.2)
        assert s.accepts == 2, "accepting resumes after the pause"
    finally:
        a.stop()
        s.close()


def _cpu_secs(pid):
    with open(f"/proc/{pid}/stat") as f:
        x = f.read().rsplit(")", 1)[1].split()
    return (int(x[11]) + int(x[12])) / os.sysconf("SC_CLK_TCK")


def _closed_unanswered(sock):
    """The server closed `sock` without a byte of answer (unread data: a reset)."""
    try:
        return sock.recv(100) == b""
    except ConnectionResetError:
        return True


def test_half_headers_cannot_stop_the_service(server_factory):
    """Slowloris at a low open-file limit: refused or dropped; health answers."""
    # a hard limit of 128 descriptors: the cap becomes 128 - FD_RESERVE
    server = server_factory(nofile=(64, 128), header_timeout_secs=1)
    cap = 128 - gate.FD_RESERVE
    socks = []
    try:
        for _ in range(cap * 3):
            c = socket.create_connection(("127.0.0.1", server.port), 5)
            c.sendall(b"GET /api/health HTTP/1.1\r\nHost: x\r\n")
            socks.append(c)
        t = time.monotonic()
        c0 = _cpu_secs(server.proc.pid)
        # the excess is closed at once, the rest when their header time ends
        for c in socks:
            c.settimeout(10)
            assert _closed_unanswered(c), "a half header got an answer"
        assert time.monotonic() - t < 8
        wait_for(
            lambda: _healthy(server),
            10,
            what="health after the attack",
        )
        server.api("GET", "/admin/users", expect=200)
        # no busy loop, no log flood
        assert _cpu_secs(server.proc.pid) - c0 < 2.0
        assert server.log_path.stat().st_size < 200_000
    finally:
        for c in socks:
            c.close()


@pytest.mark.parametrize("n", [5])
def test_per_address_cap(server_factory, n):
    server = server_factory(max_connections_per_address=n, header_timeout_secs=30)
    socks = [socket.create_connection(("127.0.0.1", server.port), 5) for _ in range(n)]
    try:
        extra = socket.create_connection(("127.0.0.1", server.port), 5)
        extra.settimeout(5)
        # refused at once: closed without reading a request
        assert _closed_unanswered(extra)
        extra.close()
    finally:
        for c in socks:
            c.close()
    # the server sees the closes a moment later: until then one more is refused
    wait_for(lambda: _healthy(server), 10, what="health once the idle ones closed")


def test_caps_fit_the_open_file_limit():
    assert gate.caps(8192, 1024, 1 << 20) == (8192, 1024)
    # a lowered limit lowers the total, and one address gets half of it
    assert gate.caps(8192, 1024, 128) == (128 - gate.FD_RESERVE, 32)
    assert gate.caps(8192, 5, 128) == (64, 5)
    assert gate.caps(8192, 1024, 10) == (16, 8)


def test_one_address_cannot_take_every_slot(server_factory):
    """At a low open-file limit one address holds half the slots, not all."""
    server = server_factory(nofile=(64, 128), header_timeout_secs=30)
    t, a = gate.caps(8192, 1024, 128)
    socks = []
    try:
        for _ in range(t):
            # another loopback address: the attacker's
            c = socket.create_connection(
                ("127.0.0.1", server.port), 5, source_address=("127.0.0.2", 0)
            )
            c.sendall(b"GET /api/health HTTP/1.1\r\nHost: x\r\n")
            socks.append(c)
        refused = 0
        for c in socks:
            c.settimeout(0.5)
            try:
                refused += c.recv(1) == b""
            except (TimeoutError, socket.timeout):
                pass
            except ConnectionResetError:
                refused += 1
        assert refused == t - a, f"{refused} of {t} refused"
        # the rest of the slots are there for everyone else
        assert _healthy(server)
        server.api("GET", "/admin/users", expect=200)
    finally:
        for c in socks:
            c.close()


def test_a_full_address_does_not_keep_local_agents_out(server_factory):
    """Agents dial the unix socket: 127.0.0.1 holding all its slots stops no run."""
    import http.client

    server = server_factory(nofile=(64, 128), header_timeout_secs=30)
    _, a = gate.caps(8192, 1024, 128)
    socks = []

    def api(method, path, body=None):
        c = http.client.HTTPConnection(
            "127.0.0.1", server.port, timeout=10, source_address=("127.0.0.2", 0)
        )
        h = {"Authorization": "Bearer " + server.tokens["admin"]}
        c.request(method, "/api" + path, body=body and json.dumps(body), headers=h)
        r = c.getresponse()
        b = json.loads(r.read() or b"null")
        c.close()
        return r.status, b

    try:
        for _ in range(a):
            c = socket.create_connection(("127.0.0.1", server.port), 5)
            c.sendall(b"GET /api/health HTTP/1.1\r\nHost: x\r\n")
            socks.append(c)
        st, s = api("POST", "/simulations", {"code": "sleep", "params": {"secs": 0.1}})
        assert st == 201, s
        st, j = api("POST", f"/simulations/{s['id']}/run", {})
        assert st == 202, j

        def ended():
            _, j = api("GET", f"/simulations/{s['id']}/job")
            return j["status"] in ("completed", "error") and j

        j = wait_for(ended, 60, what="the run's end")
        assert j["status"] == "completed", j
    finally:
        for c in socks:
            c.close()


def _healthy(server):
    try:
        return requests.get(server.url + "/api/health", timeout=2).ok
    except requests.ConnectionError:
        return False


def _rss_bytes(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def _post_unread(port, path, length, headers=""):
    """Send headers announcing `length` bytes and a little of them; the reply."""
    return raw_http.reply(
        port,
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {length}\r\n{headers}\r\n".encode() + b"x" * 65536,
    )


def test_no_memory_before_auth_and_json_413(server):
    """Bodies are refused from their headers: a JSON 413 or 401, nothing read."""
    rss = _rss_bytes(server.proc.pid)
    big = 31 * 1024 * 1024
    for _ in range(32):
        r = _post_unread(server.port, "/api/login", big)
        assert r.startswith(b"HTTP/1.1 413") and b'"body_too_large"' in r, r[:300]
    r = _post_unread(server.port, "/api/simulations", big)
    assert r.startswith(b"HTTP/1.1 401") and b'"unauthorized"' in r, r[:300]
    t = server.tokens["admin"]
    r = _post_unread(
        server.port, "/api/simulations", 10**12, f"Authorization: Bearer {t}\r\n"
    )
    assert r.startswith(b"HTTP/1.1 413") and b'"body_too_large"' in r, r[:300]
    # nothing of those bodies was kept (before: +1.3 GB)
    assert _rss_bytes(server.proc.pid) - rss < 64 * 1024 * 1024
    assert requests.get(server.url + "/api/health", timeout=5).ok


def test_bodies_where_none_is_taken_are_not_read(server):
    """Health, undeclared methods and static files: no memory for a body."""
    rss = _rss_bytes(server.proc.pid)
    big = 16 * 1024 * 1024
    for _ in range(10):
        r = _post_unread(server.port, "/api/logout", big)
        assert r.startswith(b"HTTP/1.1 413"), r[:200]
        # a method /api/whoami does not take: refused before the body
        r = _post_unread(server.port, "/api/whoami", big)
        assert r.startswith(b"HTTP/1.1 405"), r[:200]
        # not an API handler: Tornado's own limit refuses it unread
        r = _post_unread(server.port, "/", big)
        assert r.startswith(b"HTTP/1.1 4"), r[:200]
    assert _rss_bytes(server.proc.pid) - rss < 64 * 1024 * 1024


async def test_websockets_count_against_the_cap(server_factory):
    """Event streams hold a slot: they cannot exhaust the descriptors."""
    from tornado import httpclient, websocket

    server = server_factory(nofile=(64, 128), basic_max_event_sockets=1000)
    cap = 128 - gate.FD_RESERVE
    req = httpclient.HTTPRequest(
        f"ws://127.0.0.1:{server.port}/api/events",
        headers={"Authorization": "Bearer " + server.tokens["admin"]},
    )
    open_ = []
    refused = 0
    try:
        for _ in range(cap + 10):
            try:
                open_.append(await websocket.websocket_connect(req))
            except (httpclient.HTTPClientError, ConnectionError, OSError):
                refused += 1
        assert refused >= 10 and len(open_) <= cap
    finally:
        for c in open_:
            c.close()
    # the slots come back, and the store still writes
    wait_for(
        lambda: _healthy(server),
        10,
        what="health",
    )
    s = server.create("admin", "sleep", secs=0.01)
    server.run("admin", s["id"])
    server.wait_status("admin", s["id"], "completed")


@pytest.mark.parametrize("header_bytes", [100_000, 1_000_000])
def test_huge_headers_get_a_json_431(server, header_bytes):
    """A header block over 64 KiB: a JSON 431 and the connection closed."""
    t = server.tokens["admin"]
    r = raw_http.reply(
        server.port,
        f"GET /api/whoami HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {t}\r\n"
        f"X-Big: {'a' * header_bytes}\r\n\r\n".encode(),
    )
    assert r.startswith(b"HTTP/1.1 431 "), r[:300]
    h, _, b = r.partition(b"\r\n\r\n")
    assert b"application/json" in h
    assert json.loads(b) == {
        "error": "headers_too_large",
        "message": "request headers are over the limit of 65536 bytes",
    }
    # below the limit all is as before
    r = requests.get(
        server.url + "/api/whoami",
        headers={"Authorization": f"Bearer {t}", "X-Big": "a" * 60_000},
        timeout=10,
    )
    assert r.status_code == 200, r.text
    assert requests.get(server.url + "/api/health", timeout=5).ok


def _http_reply(sock):
    """One HTTP reply read from `sock`: (status line and headers, body)."""
    d = b""
    while b"\r\n\r\n" not in d:
        x = sock.recv(65536)
        assert x, d
        d += x
    h, _, b = d.partition(b"\r\n\r\n")
    n = int(
        next(
            line.split(b":")[1]
            for line in h.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
    )
    while len(b) < n:
        x = sock.recv(65536)
        assert x, b
        b += x
    return h, b


@pytest.mark.parametrize(
    "path,headers,status",
    [
        ("/api/simulations", "", b"401"),
        ("/api/whoami", "Authorization: Bearer {t}\r\n", b"405"),
        ("/api/simulations", "Cookie: bogus\r\nAuthorization: Bearer x\r\n", b"401"),
    ],
)
def test_a_refusal_is_not_lost_to_a_reset(server, path, headers, status):
    """A small body sent after its headers: the refusal arrives, the
    connection stays open (before: closed with the body unread, so the
    kernel reset it and the client lost the reply)."""
    t = server.tokens["admin"]
    body = json.dumps({"code": "heat", "pad": "x" * 3000}).encode()
    c = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    try:
        c.sendall(
            f"POST {path} HTTP/1.1\r\nHost: x\r\n{headers.format(t=t)}"
            f"Content-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n".encode()
        )
        # the body comes once the server has had the headers
        time.sleep(0.3)
        c.sendall(body)
        time.sleep(0.3)
        h, b = _http_reply(c)
        assert h.split(b" ")[1] == status, h
        assert "error" in json.loads(b)
        # the same connection answers the next request
        c.sendall(b"GET /api/health HTTP/1.1\r\nHost: x\r\n\r\n")
        h, b = _http_reply(c)
        assert h.startswith(b"HTTP/1.1 200"), h
    finally:
        c.close()


@pytest.mark.parametrize(
    "head",
    [
        "Content-Length: -1",
        "Content-Length: +5",
        "Content-Length: 1e3",
        "Transfer-Encoding: chunked",
    ],
)
def test_malformed_requests_get_a_json_400(server, head):
    """What Tornado cannot parse (its bare 400): a JSON 400, nothing changed."""
    t = server.tokens["admin"]
    sid = server.create("admin", "sleep", secs=0)["id"]
    body = b"zz\r\nhello\r\n0\r\n\r\n" if "chunked" in head else b"hello"
    r = raw_http.reply(
        server.port,
        f"POST /api/simulations/{sid}/files?name=m.txt HTTP/1.1\r\nHost: x\r\n"
        f"Authorization: Bearer {t}\r\n{head}\r\n\r\n".encode() + body,
    )
    assert r.startswith(b"HTTP/1.1 400 "), r[:300]
    h, _, b = r.partition(b"\r\n\r\n")
    assert b"application/json" in h
    assert json.loads(b)["error"] == "malformed_request"
    f = server.api("GET", f"/simulations/{sid}/files", expect=200).json()
    assert "m.txt" not in json.dumps(f)


def _kept_alive_exchange(port, requests_):
    """Send each request on one connection; the replies' status lines and heads."""
    c = socket.create_connection(("127.0.0.1", port), 5)
    c.settimeout(10)
    out = []
    try:
        for r in requests_:
            c.sendall(r)
            b = b""
            while b"\r\n\r\n" not in b:
                d = c.recv(65536)
                if not d:
                    out.append(None)
                    return out
                b += d
            head, _, rest = b.partition(b"\r\n\r\n")
            n = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
            while len(rest) < n:
                rest += c.recv(65536)
            out.append(head.decode())
    finally:
        c.close()
    return out


def test_a_refusal_without_a_body_keeps_the_connection(server):
    bad = b"GET /api/simulations HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer nope\r\n\r\n"
    none = b"GET /api/nonexistent HTTP/1.1\r\nHost: x\r\n\r\n"
    ok = b"GET /api/health HTTP/1.1\r\nHost: x\r\n\r\n"
    h = _kept_alive_exchange(server.port, [bad, none, ok])
    assert h[0].startswith("HTTP/1.1 401") and h[1].startswith("HTTP/1.1 404")
    # the same connection still answers
    assert h[2] is not None and h[2].startswith("HTTP/1.1 200"), h


def test_a_chunked_body_over_the_limit_is_refused_before_its_end(server_factory):
    server = server_factory(max_body_bytes=64 * 1024)
    c = socket.create_connection(("127.0.0.1", server.port), 5)
    c.settimeout(10)
    try:
        c.sendall(
            b"POST /api/simulations HTTP/1.1\r\nHost: x\r\n"
            b"Authorization: Bearer " + server.tokens["admin"].encode() + b"\r\n"
            b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        piece = b"%x\r\n%s\r\n" % (16 * 1024, b"x" * 16 * 1024)
        r = b""
        # twice the limit, and no last chunk: the reply must not wait for it
        for _ in range(8):
            try:
                c.sendall(piece)
            except (BrokenPipeError, ConnectionResetError):
                break
        while b"}" not in r:
            d = c.recv(65536)
            if not d:
                break
            r += d
    finally:
        c.close()
    assert r.startswith(b"HTTP/1.1 413"), r[:200]
    assert b"connection: close" in r.lower() and b'"body_too_large"' in r


def test_one_users_bodies_on_their_way_in_are_bounded(server_factory):
    server = server_factory(max_user_body_bytes=350 * 1024)
    s = server.create("admin", "sleep", secs=0)
    t = server.tokens["admin"].encode()

    def start(name, n):
        c = socket.create_connection(("127.0.0.1", server.port), 5)
        c.settimeout(10)
        c.sendall(
            b"POST /api/simulations/%s/files?name=%s HTTP/1.1\r\nHost: x\r\n"
            b"Authorization: Bearer %s\r\nContent-Length: %d\r\n\r\n"
            % (s["id"].encode(), name, t, n)
        )
        return c

    def reply(c):
        r = b""
        while b"}" not in r:
            d = c.recv(65536)
            if not d:
                break
            r += d
        return r

    a = start(b"a.txt", 300 * 1024)
    b = start(b"b.txt", 300 * 1024)
    try:
        a.sendall(b"x" * 200 * 1024)
        time.sleep(0.3)
        try:
            b.sendall(b"y" * 200 * 1024)
        except (BrokenPipeError, ConnectionResetError):
            pass
        r = reply(b)
        assert r.startswith(b"HTTP/1.1 429") and b"too_many_uploads" in r, r[:300]
        assert b"retry-after" in r.lower()
        # the first goes on, and its bytes are given back when it is done
        a.sendall(b"x" * 100 * 1024)
        assert reply(a).startswith(b"HTTP/1.1 201")
    finally:
        a.close()
        b.close()
    server.api(
        "POST",
        f"/simulations/{s['id']}/files?name=c.txt",
        data=b"z" * 200 * 1024,
        expect=201,
    )


def test_an_events_filter_that_is_not_utf8_gets_a_json_400(server):
    r = raw_http.reply(
        server.port,
        b"GET /api/events?simulation=%ff HTTP/1.1\r\nHost: x\r\n"
        b"Authorization: Bearer " + server.tokens["admin"].encode() + b"\r\n"
        b"Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    assert r.startswith(b"HTTP/1.1 400"), r[:200]
    assert json.loads(r.split(b"\r\n\r\n", 1)[1])["error"] == "bad_argument"
