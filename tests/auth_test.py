"""Credentials and client addresses, behind trusted proxies or not."""

import requests
from tornado import httputil

from supervisor import auth


def _request(peer, **headers):
    r = httputil.HTTPServerRequest(
        start_line=httputil.RequestStartLine("GET", "/", "HTTP/1.1"),
        headers=httputil.HTTPHeaders(dict(Host="x", **headers)),
    )
    r.remote_ip = peer
    return r


def test_forwarded_for_only_from_trusted_proxies():
    h = {"X-Forwarded-For": "192.0.2.7, 198.51.100.3"}
    # anyone can send the header: only a configured proxy is believed
    assert auth.client_address(_request("127.0.0.1", **h), []) == "127.0.0.1"
    assert auth.client_address(_request("127.0.0.1", **h), ["127.0.0.1"]) == (
        "198.51.100.3"
    )
    # right to left, skipping the proxies themselves
    t = ["127.0.0.1", "198.51.100.3"]
    assert auth.client_address(_request("127.0.0.1", **h), t) == "192.0.2.7"
    assert auth.client_address(_request("127.0.0.1"), ["127.0.0.1"]) == "127.0.0.1"


def test_https_through_a_trusted_proxy():
    h = {"X-Forwarded-Proto": "https"}
    assert not auth.is_https(_request("127.0.0.1", **h), [])
    assert auth.is_https(_request("127.0.0.1", **h), ["127.0.0.1"])
    assert not auth.is_https(_request("127.0.0.1"), ["127.0.0.1"])


def test_bearer():
    assert auth.bearer(_request("x", Authorization="Bearer  t1 ")) == "t1"
    assert auth.bearer(_request("x", Authorization="Basic t1")) is None
    assert auth.bearer(_request("x")) is None


def _anonymous(server, xff):
    return requests.get(
        server.url + "/api/whoami", headers={"X-Forwarded-For": xff}, timeout=5
    ).status_code


def test_rate_per_forwarded_address(server_factory):
    server = server_factory(
        trusted_proxies='["127.0.0.1"]', rate_per_sec=0.01, rate_burst=2
    )
    assert [_anonymous(server, "192.0.2.1") for _ in range(3)] == [401, 401, 429]
    # another client behind the same proxy has its own bucket
    assert _anonymous(server, "192.0.2.2") == 401


def test_forwarded_for_ignored_without_trust(server_factory):
    server = server_factory(rate_per_sec=0.01, rate_burst=2)
    assert [_anonymous(server, f"192.0.2.{i}") for i in range(3)] == [401, 401, 429]
