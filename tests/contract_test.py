"""Corners of the typed API: bodies of actions, query integers, references.

Each case was accepted (or undocumented) before: a body on a cancel was
ignored whatever it held, ``?since=٣`` was read as 3, a `stats` simulation
could name another user's simulation as its source until its run.
"""

import pytest

from api_test import _state
from supervisor import http, openapi


@pytest.mark.parametrize(
    "data,code",
    [
        (b'{"force": true}', "unknown_field"),
        (b"[]", "bad_json"),
        (b'"x"', "bad_json"),
        (b"{not json", "bad_json"),
    ],
)
def test_an_action_takes_an_empty_body_only(server, data, code):
    sid = server.create("admin", "sleep", secs=30)["id"]
    for method, path in (
        ("POST", f"/simulations/{sid}/cancel"),
        ("POST", f"/admin/jobs/{sid}/cancel"),
        ("DELETE", f"/simulations/{sid}"),
        ("POST", "/admin/agents/nobody/kill"),
        ("POST", "/logout"),
    ):
        before = _state(server)
        r = server.api(method, path, data=data, expect=400)
        assert r.json()["error"] == code, (method, path, r.text)
        assert _state(server) == before
    # empty, or {}: as before
    server.api("POST", f"/simulations/{sid}/cancel", expect=200)
    server.api("POST", f"/simulations/{sid}/cancel", json={}, expect=200)
    server.api("DELETE", f"/simulations/{sid}", data=b"{}", expect=200)
    server.api("GET", f"/simulations/{sid}", expect=404)


def test_an_unknown_object_is_a_404_before_a_bad_body(server):
    r = server.api("POST", "/simulations/abcdef/cancel", data=b"[]", expect=404)
    assert r.json()["error"] == "unknown_simulation"


@pytest.mark.parametrize("value", ["٣", "1_0", "+1", " 1", "1 ", "-0", "1e3", "9" * 19])
def test_query_integers_are_ascii_digits(server, value):
    sid = server.create("admin", "heat")["id"]
    for arg in ("frames?since", "log?tail"):
        path = f"/simulations/{sid}/{arg}={value}"
        r = server.api("GET", path, expect=400)
        assert r.json()["error"] == "bad_argument", (path, r.text)
    assert server.api("GET", f"/simulations/{sid}/frames?since=0", expect=200).json()


def test_a_source_is_one_of_the_callers_simulations(server):
    server.add_user("ann")
    server.add_user("bob")
    theirs = server.create("bob", "heat")["id"]
    own = server.create("ann", "heat")["id"]
    before = _state(server)
    r = server.api(
        "POST",
        "/simulations",
        user="ann",
        json={"code": "stats", "params": {"source": theirs}},
        expect=400,
    )
    assert r.json()["error"] == "bad_param" and theirs in r.json()["message"]
    # the same words as for one that does not exist: nothing is told of bob's
    r2 = server.api(
        "POST",
        "/simulations",
        user="ann",
        json={"code": "stats", "params": {"source": "abcdef"}},
        expect=400,
    )
    assert r2.json()["message"] == r.json()["message"].replace(theirs, "abcdef")
    assert _state(server) == before
    s = server.create("ann", "stats", source=own)
    r = server.api(
        "PATCH",
        f"/simulations/{s['id']}",
        user="ann",
        json={"params": {"source": theirs}},
        expect=400,
    )
    assert r.json()["error"] == "bad_param"
    assert server.api("GET", f"/simulations/{s['id']}", user="ann").json()[
        "params"
    ] == {"source": own}
    # an admin may analyse anyone's
    server.create("admin", "stats", source=theirs)


def test_the_document_names_every_refusal():
    d = openapi.document(http.ROUTES)
    for t, by_method in d["paths"].items():
        for m, op in by_method.items():
            r = op["responses"]
            assert "431" in r and "429" in r and "413" in r, (t, m)
            # whatever writes can meet a full disk
            assert ("507" in r) == (m != "get"), (t, m)
    # a download's path is checked (bad_path)
    assert "400" in d["paths"]["/api/simulations/{id}/files/{path}"]["get"]["responses"]
    # an action's body is the empty object, refused otherwise
    c = d["paths"]["/api/simulations/{id}/cancel"]["post"]
    ref = c["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    assert ref.endswith("/NoBody") and "400" in c["responses"]
    assert d["components"]["schemas"]["NoBody"]["additionalProperties"] is False


def test_a_session_without_its_xsrf_header_is_a_json_403(server):
    import requests

    r = requests.post(server.url + "/api/login", json={"token": server.tokens["admin"]})
    assert r.status_code == 200
    s = server.create("admin", "heat")
    for m in ("POST", "DELETE", "PATCH"):
        path = f"/api/simulations/{s['id']}" + ("/cancel" if m == "POST" else "")
        x = requests.request(m, server.url + path, cookies=r.cookies, json={})
        assert x.status_code == 403 and x.json()["error"] == "bad_xsrf", (m, x.text)
    assert server.api("GET", f"/simulations/{s['id']}").status_code == 200


def test_a_repeated_query_integer_is_refused(server):
    sid = server.create("admin", "heat")["id"]
    r = server.api("GET", f"/simulations/{sid}/frames?since=x&since=1", expect=400)
    assert r.json()["error"] == "bad_argument"
