"""The client's shared core, pure: request building, error bodies, the run
watch and the one reconnect policy both front ends follow.
"""

import json

import pytest

from supervisor.client import _base


class _Handle:
    def __init__(self, run_id=None):
        self.id = "s1"
        self.run_id = run_id


def _sim(job_, **kwargs):
    return {"type": "simulation", "simulation": {"id": "s1", "job": job_, **kwargs}}


def test_build_request():
    c = _base.BaseClient("http://h:1/", "tok")
    r = c._build_request("GET", "/simulations", query={"user": None, "a": "b c"})
    assert r.url == "http://h:1/api/simulations?a=b+c"
    assert r.headers["Authorization"] == "Bearer tok"
    assert r.body is None
    r = c._build_request("POST", _base.sim_path("a/b", "/cancel"))
    assert r.url == "http://h:1/api/simulations/a%2Fb/cancel"
    assert json.loads(r.body) == {}
    assert c._events_request("s 1").url == "ws://h:1/api/events?simulation=s%201"
    assert _base.BaseClient("https://h", "t")._events_request(None).url == (
        "wss://h/api/events"
    )


def test_api_error():
    e = _base.api_error(400, b'{"error": "bad", "message": "no"}')
    assert (e.status, e.code, e.message) == (400, "bad", "no")
    e = _base.api_error(502, b"<html>gateway</html>", "Bad Gateway")
    assert (e.code, e.message) == ("http_error", "<html>gateway</html>")
    assert _base.api_error(500, b"", "Oops").message == "Oops"
    assert _base.checked(200, b"x") == b"x"
    with pytest.raises(_base.ApiError):
        _base.checked(404, b"{}")


def test_outcome():
    j = {"run_id": "r", "status": _base.COMPLETED}
    assert _base.outcome(j) is j
    with pytest.raises(_base.RunFailed) as e:
        _base.outcome({"run_id": "r", "status": _base.ERROR, "error": "boom"})
    assert "boom" in str(e.value)


def test_watch_next_run_and_end():
    h = _Handle()
    w = _base._Watch(h, _base.Reconnect(), None)
    assert w.message(_sim({"run_id": None, "status": "missing"})) is None
    assert w.message({"type": "synced"}) is None
    j = {"run_id": "r1", "status": "running"}
    assert w.message({"type": "job", "simulation": "s1", "job": j}) == j
    assert h.run_id == "r1"
    assert not w.ended()
    assert w.message({"type": "job", "simulation": "other", "job": j}) is None
    j = {"run_id": "r1", "status": _base.COMPLETED}
    w.message({"type": "job", "simulation": "s1", "job": j})
    assert w.ended()


def test_watch_replaced_and_deleted():
    w = _base._Watch(_Handle("r1"), _base.Reconnect(), None)
    j = w.message(_sim({"run_id": "r2", "status": "queued", "history": []}))
    assert j["status"] == _base.CANCELED
    assert w.ended()
    w = _base._Watch(_Handle("r1"), _base.Reconnect(), None)
    with pytest.raises(_base.ApiError) as e:
        w.message(_sim({"run_id": "r1", "status": "running"}, deleted=True))
    assert e.value.code == "deleted"
    w = _base._Watch(_Handle("r1"), _base.Reconnect(), None)
    with pytest.raises(_base.ApiError) as e:
        w.message({"type": "synced"})
    assert e.value.status == 404


def test_backoff_doubles_to_its_limit_and_resets_when_synced():
    w = _base._Watch(_Handle("r1"), _base.Reconnect(0.1, 0.3, 60), None)
    assert [w.backoff() for _ in range(4)] == [0.1, 0.2, 0.3, 0.3]
    w.message(_sim({"run_id": "r1", "status": "running"}))
    w.message({"type": "synced"})
    assert w.backoff() == 0.1


def test_gives_up_and_times_out():
    w = _base._Watch(_Handle("r1"), _base.Reconnect(give_up_secs=-1), None)
    e = OSError("refused")
    w.lost(e)
    with pytest.raises(ConnectionError) as x:
        w.lost(e)
    assert x.value.__cause__ is e
    w = _base._Watch(_Handle("r1"), _base.Reconnect(first_delay_secs=5), 1)
    assert 0 < w.remaining() <= 1
    with pytest.raises(TimeoutError, match="within 1 s"):
        w.backoff()
