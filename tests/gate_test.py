"""The front door: connection caps, header timeouts, the accept loop (issue 10)."""

import asyncio
import errno
import os
import socket
import time

import pytest
import requests

from conftest import wait_for
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
            lambda: requests.get(server.url + "/api/health", timeout=2).ok,
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
    wait_for(
        lambda: requests.get(server.url + "/api/health", timeout=2).ok,
        10,
        what="health once the idle connections closed",
    )
