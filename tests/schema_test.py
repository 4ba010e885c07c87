"""Strict request bodies (`schema.decode`) and the generated API document."""

import json

import pytest

from supervisor import errors, http, openapi, schema


def _bad(body, type_):
    with pytest.raises(errors.BadInput) as e:
        schema.decode(body, type_)
    return e.value


@pytest.mark.parametrize(
    "body,type_,code",
    [
        # truthy strings are not booleans: each of these changed state before
        (b'{"drain": "false"}', schema.Drain, "bad_drain"),
        (b'{"new_token": "false"}', schema.UserPatch, "bad_new_token"),
        (b'{"revoke_tokens": "no"}', schema.UserPatch, "bad_revoke_tokens"),
        (b'{"token": 5}', schema.Login, "bad_token"),
        (b'{"token": ["x"]}', schema.Login, "bad_token"),
        (b"{}", schema.Login, "bad_token"),
        (b'{"cores": "2"}', schema.RunRequest, "bad_cores"),
        (b'{"cores": 2.5}', schema.RunRequest, "bad_cores"),
        (b'{"role": "root"}', schema.UserPatch, "bad_role"),
        (b'{"code": "heat", "params": [1]}', schema.SimCreate, "bad_params"),
        (b"[1, 2]", schema.SimCreate, "bad_json"),
        (b"{not json", schema.SimCreate, "bad_json"),
        (b'"x"', schema.Drain, "bad_json"),
    ],
)
def test_wrong_types_refused(body, type_, code):
    e = _bad(body, type_)
    assert e.code == code and e.message and e.status == 400


def test_unknown_fields_all_named():
    e = _bad(b'{"name": "x", "zz": 1, "aa": 2}', schema.SimPatch)
    assert e.code == "unknown_field" and "aa, zz" in e.message


@pytest.mark.parametrize("depth", [schema.MAX_DEPTH + 1, 1100, 100_000])
def test_deep_nesting_refused(depth):
    b = b'{"code": "heat", "params": {"a": ' + b"[" * depth + b"]" * depth + b"}}"
    assert _bad(b, schema.SimCreate).code == "bad_json"


def test_only_sent_fields_come_back():
    assert schema.decode(b"", schema.Drain) == {}
    assert schema.decode(b'{"drain": false}', schema.Drain) == {"drain": False}
    assert schema.decode(b'{"cores": null}', schema.RunRequest) == {"cores": None}
    assert schema.decode(
        b'{"code": "heat", "params": {"steps": 3}}', schema.SimCreate
    ) == {"code": "heat", "params": {"steps": 3}}


def test_document_covers_every_route():
    d = openapi.document(http.ROUTES)
    assert d["openapi"] == "3.1.0"
    for t, h in http.ROUTES:
        assert set(d["paths"][t]) == set(h.api), t
        for m, op in d["paths"][t].items():
            assert op["summary"] and op["responses"], (t, m)
            # every $ref resolves
            for r in _refs(op):
                assert r.rsplit("/", 1)[1] in d["components"]["schemas"], r
    # every method a handler serves is described
    for t, h in http.ROUTES:
        served = {
            m.lower()
            for m in ("GET", "POST", "PATCH", "DELETE", "PUT")
            if getattr(h, m.lower()) is not getattr(http.Base, m.lower())
        }
        assert served == set(h.api), t


def test_document_for_swagger_ui_has_no_31_nulls():
    d = openapi.for_swagger_ui(openapi.document(http.ROUTES))
    assert d["openapi"].startswith("3.0")
    t = json.dumps(d)
    assert '{"type": "null"}' not in t and '"nullable": true' in t


def test_route_regex():
    assert openapi.route_regex("/api/simulations/{id}/files/{path}") == (
        "/api/simulations/([0-9a-f]{1,32})/files/(.+)"
    )


def _refs(v):
    if isinstance(v, dict):
        for k, x in v.items():
            if k == "$ref":
                yield x
            else:
                yield from _refs(x)
    elif isinstance(v, list):
        for x in v:
            yield from _refs(x)
