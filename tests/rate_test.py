"""Rate limits (pure), and the caps and 429s of a real supervisor (issue 10)."""

import pytest
import requests
from tornado import httpclient, websocket

from supervisor import rate


def test_bucket_refills_at_its_rate():
    lim = rate.Limiter(2.0, 3)
    assert [lim.take("u", 0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    # empty: one token back in 0.5 s, said as whole seconds
    assert lim.take("u", 0.0) == 1.0
    assert lim.take("u", 0.5) == 0.0
    assert lim.take("other", 0.5) == 0.0, "buckets are per key"
    assert lim.refused == 1


def test_off_and_forgetting(monkeypatch):
    assert rate.Limiter(0, 1).take("u", 0.0) == 0.0
    monkeypatch.setattr(rate, "_MAX_KEYS", 10)
    lim = rate.Limiter(1.0, 2)
    for i in range(50):
        lim.take(f"k{i}", float(i))
    # full buckets are forgotten first, never more than the bound kept
    assert len(lim) <= 10


def test_requests_over_the_rate_get_429(server_factory):
    server = server_factory(rate_per_sec=1, rate_burst=5)
    server.add_user("ann")
    codes = [server.api("GET", "/whoami", "ann").status_code for _ in range(10)]
    assert codes[:4] == [200] * 4 and 429 in codes[4:]
    r = server.api("GET", "/whoami", "ann")
    assert r.status_code == 429 and r.json()["error"] == "rate_limited"
    assert int(r.headers["Retry-After"]) >= 1
    # health is not limited; another user has a bucket of its own
    assert requests.get(server.url + "/api/health", timeout=5).ok
    server.api("GET", "/whoami", expect=200)


def test_wrong_tokens_slow_down_their_address(server_factory):
    server = server_factory(bad_credentials_burst=3, bad_credentials_per_sec=0.01)
    for _ in range(3):
        r = requests.post(server.url + "/api/login", json={"token": "x"}, timeout=5)
        assert r.status_code == 401
    r = requests.post(server.url + "/api/login", json={"token": "x"}, timeout=5)
    assert r.status_code == 429 and r.json()["error"] == "too_many_failures"
    assert int(r.headers["Retry-After"]) > 1
    h = {"Authorization": "Bearer wrong"}
    r = requests.get(server.url + "/api/whoami", headers=h, timeout=5)
    assert r.status_code == 429
    # a right token still works: the slow-down is for guesses
    server.api("GET", "/whoami", expect=200)


def test_simulations_capped_by_plan(server_factory):
    server = server_factory(basic_max_simulations=2)
    server.add_user("bea")
    for _ in range(2):
        server.create("bea", "heat")
    r = server.api("POST", "/simulations", "bea", json={"code": "heat"}, expect=409)
    assert r.json()["error"] == "too_many_simulations"


async def test_event_sockets_capped_by_plan(server_factory):
    server = server_factory(basic_max_event_sockets=2)
    server.add_user("cy")
    req = httpclient.HTTPRequest(
        f"ws://127.0.0.1:{server.port}/api/events",
        headers={"Authorization": "Bearer " + server.tokens["cy"]},
    )
    open_ = [await websocket.websocket_connect(req) for _ in range(2)]
    try:
        for c in open_:
            # subscribed once the snapshot is through
            while "synced" not in (await c.read_message()):
                pass
        with pytest.raises(httpclient.HTTPClientError) as e:
            await websocket.websocket_connect(req)
        assert e.value.code == 429
        # when to try again, as every 429 says
        assert int(e.value.response.headers["Retry-After"]) > 0
    finally:
        for c in open_:
            c.close()


def test_a_right_login_is_never_locked_out(server_factory):
    server = server_factory(bad_credentials_burst=2, bad_credentials_per_sec=0.01)
    for _ in range(5):
        requests.post(server.url + "/api/login", json={"token": "x"}, timeout=5)
    r = requests.post(
        server.url + "/api/login", json={"token": server.tokens["admin"]}, timeout=5
    )
    assert r.status_code == 200, r.text


async def test_wrong_tokens_on_websockets_slow_down(server_factory):
    server = server_factory(bad_credentials_burst=2, bad_credentials_per_sec=0.01)
    req = httpclient.HTTPRequest(
        f"ws://127.0.0.1:{server.port}/api/events",
        headers={"Authorization": "Bearer wrong"},
    )
    codes = []
    for _ in range(4):
        with pytest.raises(httpclient.HTTPClientError) as e:
            await websocket.websocket_connect(req)
        codes.append(e.value.code)
    assert codes[:2] == [401, 401] and codes[-1] == 429
