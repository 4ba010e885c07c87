"""The HTTP API's contract: bad input is a 4xx JSON error and changes nothing."""

import json

import pytest
import requests
from tornado import httpclient, websocket

from agent import protocol
from conftest import wait_for
from supervisor import users


def _state(server):
    """Everything stored about simulations and users, to compare."""
    db = server.data_dir / "db"
    return {
        str(p.relative_to(db)): p.read_bytes()
        for p in sorted(db.rglob("*"))
        if p.is_file() and "agents" not in p.parts
    }


def test_health_and_codes(server):
    r = requests.get(server.url + "/api/health", timeout=5)
    assert r.json()["ok"] is True and r.json()["version"]
    c = {x["name"]: x for x in server.api("GET", "/codes", expect=200).json()}
    assert {
        "heat",
        "lorenz",
        "stats",
        "sleep",
        "burn",
        "crash",
        "forker",
        "forever",
    } <= set(c)
    s = next(p for p in c["heat"]["params"] if p["name"] == "steps")
    assert s["type"] == "int" and s["min"] >= 1 and s["max"] > s["default"]
    assert c["stats"]["kind"] == "analysis"


def test_first_start_token_file(server):
    p = server.data_dir / "admin-token"
    assert p.stat().st_mode & 0o777 == 0o600
    assert server.tokens["admin"] not in server.log_path.read_text()
    assert server.api("GET", "/admin/users", expect=200).json()[0]["name"] == "admin"


@pytest.mark.parametrize(
    "method,path,body,status,code",
    [
        ("POST", "/simulations", {"code": "nope"}, 400, "unknown_code"),
        (
            "POST",
            "/simulations",
            {"code": "heat", "params": {"steps": "ten"}},
            400,
            "bad_param",
        ),
        (
            "POST",
            "/simulations",
            {"code": "heat", "params": {"steps": 10**12}},
            400,
            "bad_param",
        ),
        (
            "POST",
            "/simulations",
            {"code": "heat", "params": {"steps": True}},
            400,
            "bad_param",
        ),
        (
            "POST",
            "/simulations",
            {"code": "heat", "params": {"zzz": 1}},
            400,
            "unknown_param",
        ),
        (
            "POST",
            "/simulations",
            {"code": "heat", "params": {"initial": "x"}},
            400,
            "bad_param",
        ),
        ("POST", "/simulations", {"code": "heat", "name": ""}, 400, "bad_name"),
        ("POST", "/simulations", [1, 2], 400, "bad_json"),
        ("GET", "/simulations/abcdef", None, 404, "unknown_simulation"),
        ("POST", "/simulations/abcdef/run", {}, 404, "unknown_simulation"),
        ("GET", "/nothing/here", None, 404, "not_found"),
    ],
)
def test_bad_input(server, method, path, body, status, code):
    server.create("admin", "heat")
    before = _state(server)
    r = server.api(method, path, json=body)
    assert r.status_code == status, r.text
    assert r.json()["error"] == code
    assert r.json()["message"]
    assert _state(server) == before


def test_bad_json_and_large_body(server):
    before = _state(server)
    h = {"Authorization": "Bearer " + server.tokens["admin"]}
    r = requests.post(
        server.url + "/api/simulations", data=b"{not json", headers=h, timeout=5
    )
    assert r.status_code == 400 and r.json()["error"] == "bad_json"
    r = requests.post(
        server.url + "/api/simulations",
        data=b"x" * (17 * 1024 * 1024),
        headers=h,
        timeout=30,
    )
    assert r.status_code == 413 and r.json()["error"] == "body_too_large"
    assert _state(server) == before


def test_bad_run_requests(server):
    s = server.create("admin", "heat")
    before = _state(server)
    for body, code in (
        ({"cores": 0}, "bad_cores"),
        ({"cores": 99}, "bad_cores"),
        ({"cores": "2"}, "bad_cores"),
        ({"driver": "nope"}, "unknown_driver"),
    ):
        r = server.api("POST", f"/simulations/{s['id']}/run", json=body)
        assert r.status_code == 400 and r.json()["error"] == code, r.text
    assert _state(server) == before


def test_auth(server):
    r = requests.get(server.url + "/api/simulations", timeout=5)
    assert r.status_code == 401 and r.json()["error"] == "unauthorized"
    r = requests.get(
        server.url + "/api/simulations",
        headers={"Authorization": "Bearer bad"},
        timeout=5,
    )
    assert r.status_code == 401
    server.add_user("zed")
    assert server.api("GET", "/admin/agents", "zed").status_code == 403
    assert (
        server.api("POST", "/admin/users", "zed", json={"name": "x"}).status_code == 403
    )


def test_cookie_login_needs_xsrf(server):
    s = requests.Session()
    r = s.post(server.url + "/api/login", json={"token": "wrong"}, timeout=5)
    assert r.status_code == 401
    r = s.post(
        server.url + "/api/login", json={"token": server.tokens["admin"]}, timeout=5
    )
    assert r.status_code == 200
    x = r.json()["xsrf"]
    assert s.get(server.url + "/api/simulations", timeout=5).status_code == 200
    r = s.post(server.url + "/api/simulations", json={"code": "heat"}, timeout=5)
    assert r.status_code == 403
    r = s.post(
        server.url + "/api/simulations",
        json={"code": "heat"},
        headers={"X-XSRFToken": x},
        timeout=5,
    )
    assert r.status_code == 201


def _on_disk(server, sid, status):
    """Until the simulation's stored document says `status` (writes are async)."""
    p = server.data_dir / "db" / "jobs" / "admin" / f"{sid}.json"

    def _done():
        try:
            return json.loads(p.read_text())["job"]["status"] == status
        except (OSError, ValueError):
            return False

    wait_for(_done, 10, what=f"{sid} stored {status}")


def test_files_traversal_and_upload(server):
    s = server.create("admin", "sleep", secs=0.05)
    sid = s["id"]
    server.run("admin", sid)
    server.wait_status("admin", sid, "completed")
    # the state compared below must not be moving under the comparison
    _on_disk(server, sid, "completed")
    for p in (
        "../../../etc/passwd",
        "..%2F..%2Fdb%2Fusers%2Fadmin.json",
        "/etc/passwd",
    ):
        r = server.api("GET", f"/simulations/{sid}/files/{p}")
        assert r.status_code == 404, (p, r.status_code)
    before = _state(server)
    for n in ("../x", ".hidden", "a/b"):
        r = server.api("POST", f"/simulations/{sid}/files?name={n}", data=b"hi")
        assert r.status_code == 400, (n, r.text)
    r = server.api(
        "POST", f"/simulations/{sid}/files?name=big.txt", data=b"x" * (9 * 1024 * 1024)
    )
    assert r.status_code == 413
    assert _state(server) == before
    server.api(
        "POST", f"/simulations/{sid}/files?name=input.txt", data=b"hello", expect=201
    )
    assert server.api("GET", f"/simulations/{sid}/files", expect=200).json()[
        "inputs"
    ] == ["input.txt"]
    server.run("admin", sid)
    server.wait_status("admin", sid, "completed")
    assert (
        server.api("GET", f"/simulations/{sid}/files/input.txt", expect=200).content
        == b"hello"
    )


def test_patch_and_delete(server):
    s = server.create("admin", "heat")
    r = server.api(
        "PATCH",
        f"/simulations/{s['id']}",
        json={"name": "renamed", "params": {"nx": 50}},
        expect=200,
    )
    assert r.json()["name"] == "renamed" and r.json()["params"]["nx"] == 50
    assert r.json()["params"]["steps"] == s["params"]["steps"]
    assert (
        server.api(
            "PATCH", f"/simulations/{s['id']}", json={"code": "lorenz"}
        ).status_code
        == 400
    )
    server.api("DELETE", f"/simulations/{s['id']}", expect=200)
    assert server.api("GET", f"/simulations/{s['id']}").status_code == 404
    assert not list((server.data_dir / "db" / "jobs").rglob(f"{s['id']}*"))


def test_metrics(server):
    s = server.create("admin", "sleep", secs=0.01)
    server.run("admin", s["id"])
    server.wait_status("admin", s["id"], "completed")
    t = requests.get(server.url + "/metrics", timeout=5).text
    assert 'simvisor_jobs{status="completed"} 1.0' in t
    assert "simvisor_dispatch_restarts_total" in t
    assert "simvisor_http_request_seconds_bucket" in t
    assert 'simvisor_agents{state="connected"} 1.0' in t


def _known_agent(d, secret):
    """An agent record of admin's in data dir `d`, with `secret`."""
    p = d / "db" / "agents" / "admin-local-test.json"
    p.parent.mkdir(parents=True)
    p.write_text(
        json.dumps(
            {
                "id": "admin-local-test",
                "user": "admin",
                "driver": "local",
                "host": "localhost",
                "secret_hash": users.hash_token(secret),
            }
        )
    )


async def test_agent_frames_are_validated(server_factory, tmp_path):
    """An unknown agent is refused; a known one's bad frames get errors."""
    d = tmp_path / "agentdata"
    secret = "s3cret-for-test"
    _known_agent(d, secret)
    server = server_factory(data_dir=d)
    url = server.url.replace("http", "ws") + "/agent"

    def req(agent_id, s):
        return httpclient.HTTPRequest(
            url,
            headers={
                "Authorization": "Bearer " + s,
                protocol.AGENT_ID_HEADER: agent_id,
            },
        )

    for i, s in (("admin-local-test", "wrong"), ("nobody", secret)):
        with pytest.raises(httpclient.HTTPClientError) as e:
            await websocket.websocket_connect(req(i, s))
        assert e.value.code == 401
    ws = await websocket.websocket_connect(req("admin-local-test", secret))
    try:
        for bad in (
            "not json",
            "[]",
            '{"v":1,"kind":"zap"}',
            '{"v":9,"kind":"hello"}',
            json.dumps({"v": 1, "kind": "progress", "run_id": "x", "progress": 7}),
        ):
            ws.write_message(bad)
            m = protocol.parse(protocol.TO_AGENT, await ws.read_message())
            assert m["kind"] == "error" and m["message"]
        ws.write_message(
            protocol.make(
                protocol.TO_SUPERVISOR,
                "hello",
                agent_id="admin-local-test",
                version="0",
                host="h",
                pid=1,
                runs=[],
            )
        )
        m = protocol.parse(protocol.TO_AGENT, await ws.read_message())
        assert m["kind"] == "welcome" and m["runs"] == {}
    finally:
        ws.close()
        while await ws.read_message() is not None:
            pass
    assert requests.get(server.url + "/api/health", timeout=5).status_code == 200


async def test_an_agents_burst_does_not_hold_the_loop(server_factory, tmp_path):
    """Messages of an agent already read are handled in turns: a health check
    sent behind a burst of them is answered long before the burst's end."""
    import asyncio

    d = tmp_path / "agentdata"
    secret = "s3cret-for-test"
    _known_agent(d, secret)
    server = server_factory(data_dir=d)
    ws = await websocket.websocket_connect(
        httpclient.HTTPRequest(
            server.url.replace("http", "ws") + "/agent",
            headers={
                "Authorization": "Bearer " + secret,
                protocol.AGENT_ID_HEADER: "admin-local-test",
            },
        )
    )
    # 8 bytes each on the wire (a masked text frame "[]", mask 0), all in
    # one write, so the supervisor finds them read already; each costs a
    # parse, a log line and an error reply
    n = 30000
    replies = 0

    async def read():
        nonlocal replies
        while replies < n:
            m = await ws.read_message()
            assert m is not None
            replies += 1

    try:
        reader = asyncio.create_task(read())
        loop = asyncio.get_running_loop()
        await ws.protocol.stream.write(b"\x81\x82\0\0\0\0[]" * n)
        t0 = loop.time()
        for _ in range(5):
            h = await httpclient.AsyncHTTPClient().fetch(
                server.url + "/api/health", request_timeout=60
            )
            assert h.code == 200
        health = loop.time() - t0
        await asyncio.wait_for(reader, 120)
        burst = loop.time() - t0
        # two times of the same run, not a speed. Tornado itself yields
        # after 256 such frames (its _YIELD_THRESHOLD): without turns the 5
        # health checks took about 25 % of the burst, with them 1 %
        assert (
            health < burst / 10
        ), f"health took {health:.3f} s, the burst {burst:.3f} s"
    finally:
        ws.close()


def test_cli_user_add_then_service(server_factory, tmp_path):
    import subprocess
    import sys

    d = tmp_path / "clidata"
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "supervisor.cli",
            "user",
            "add",
            "alice",
            "--plan",
            "premium",
            "--data-dir",
            str(d),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    token = r.stdout.strip().splitlines()[-1]
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "supervisor.cli",
            "user",
            "add",
            "Bad!",
            "--data-dir",
            str(d),
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode != 0 and "lower-case" in r.stderr
    server = server_factory(data_dir=d)
    server.tokens["alice"] = token
    assert (
        server.api("GET", "/whoami", "alice", expect=200).json()["user"]["plan"]
        == "premium"
    )
    # the first start still made an admin, even though a user existed
    assert server.api("GET", "/admin/users", expect=200).json()[0]["name"] == "admin"


def test_files_refuse_a_symlinked_run_dir(server):
    s = server.create("admin", "sleep", secs=0.01)
    server.run("admin", s["id"])
    server.wait_status("admin", s["id"], "completed")
    d = server.data_dir / "run" / "admin" / s["id"]
    # what untrusted code sharing the run root could do to another run dir
    import shutil

    shutil.rmtree(d)
    d.symlink_to("/")
    for p in ("etc/hostname", "proc/self/environ"):
        assert server.api("GET", f"/simulations/{s['id']}/files/{p}").status_code == 404
    assert (
        server.api("GET", f"/simulations/{s['id']}/files", expect=200).json()["files"]
        == []
    )


def test_revoking_tokens_ends_sessions(server):
    server.add_user("gus")
    s = requests.Session()
    s.post(server.url + "/api/login", json={"token": server.tokens["gus"]}, timeout=5)
    assert s.get(server.url + "/api/whoami", timeout=5).status_code == 200
    server.api("PATCH", "/admin/users/gus", json={"revoke_tokens": True}, expect=200)
    assert s.get(server.url + "/api/whoami", timeout=5).status_code == 401
    assert server.api("GET", "/whoami", "gus").status_code == 401
    t = server.api(
        "PATCH", "/admin/users/gus", json={"new_token": True}, expect=200
    ).json()["token"]
    server.tokens["gus"] = t
    assert server.api("GET", "/whoami", "gus").status_code == 200


async def test_revoking_tokens_closes_event_streams(server):
    from tornado import httpclient, websocket

    server.add_user("hal")
    ws = await websocket.websocket_connect(
        httpclient.HTTPRequest(
            server.url.replace("http", "ws") + "/api/events",
            headers={"Authorization": "Bearer " + server.tokens["hal"]},
        )
    )
    assert json.loads(await ws.read_message())["type"] == "synced"
    server.api("PATCH", "/admin/users/hal", json={"revoke_tokens": True}, expect=200)
    # closed by the server: nothing more arrives
    assert await ws.read_message() is None
    ws.close()


@pytest.mark.parametrize(
    "method,path,code",
    [
        ("PATCH", "/simulations/abcdef", "unknown_simulation"),
        ("POST", "/simulations/abcdef/run", "unknown_simulation"),
        ("GET", "/simulations/abcdef/frames?since=x", "unknown_simulation"),
        ("GET", "/simulations/abcdef/log?tail=x", "unknown_simulation"),
        ("POST", "/admin/hosts/nohost/drain", "unknown_host"),
        ("PATCH", "/admin/users/nobody", "unknown_user"),
    ],
)
def test_unknown_object_before_bad_input(server, method, path, code):
    """An unknown object is a 404 whatever the input; nothing changes."""
    before = _state(server)
    r = server.api(method, path, data=b"{not json", expect=404)
    assert r.json()["error"] == code
    assert _state(server) == before


@pytest.mark.parametrize(
    "method,path", [("GET", "/sbatch/hosts"), ("POST", "/sbatch/login")]
)
def test_sign_in_needs_credentials(server, method, path):
    r = server.api(method, path, user=None, json={"host": "x"}, expect=401)
    assert r.json()["error"] == "unauthorized"


@pytest.mark.parametrize(
    "method,path,body,code",
    [
        ("POST", "/admin/hosts/localhost/drain", {"drain": "false"}, "bad_drain"),
        ("PATCH", "/admin/users/admin", {"new_token": "false"}, "bad_new_token"),
        ("PATCH", "/admin/users/admin", {"revoke_tokens": "no"}, "bad_revoke_tokens"),
        ("PATCH", "/admin/users/admin", {"plan": "gold"}, "bad_plan"),
        ("POST", "/admin/users", {"name": "eve", "extra": 1}, "unknown_field"),
        ("POST", "/login", {"token": 5}, "bad_token"),
        ("POST", "/login", {"token": {"a": 1}}, "bad_token"),
        ("POST", "/simulations", {"code": "heat", "color": "red"}, "unknown_field"),
    ],
)
def test_wrong_types_change_nothing(server, method, path, body, code):
    before = _state(server)
    hosts = server.api("GET", "/admin/hosts", expect=200).json()
    r = server.api(method, path, json=body, expect=400)
    assert r.json()["error"] == code
    assert _state(server) == before
    assert server.api("GET", "/admin/hosts", expect=200).json() == hosts
    # the admin's token still works
    server.api("GET", "/whoami", expect=200)


def test_deep_json_is_a_400_everywhere(server):
    sid = server.create("admin", "heat")["id"]
    deep = b"[" * 2000 + b"]" * 2000
    for method, path in (
        ("POST", "/login"),
        ("POST", "/simulations"),
        ("PATCH", f"/simulations/{sid}"),
        ("POST", f"/simulations/{sid}/run"),
        ("POST", "/admin/hosts/localhost/drain"),
        ("POST", "/admin/users"),
        ("PATCH", "/admin/users/admin"),
        ("POST", "/sbatch/login"),
    ):
        r = server.api(method, path, data=b'{"a": ' + deep + b"}")
        assert r.status_code == 400 and r.json()["error"] == "bad_json", (path, r.text)


def test_openapi_and_docs(server):
    d = requests.get(server.url + "/api/openapi.json", timeout=5).json()
    assert d["openapi"] == "3.1.0" and "/api/simulations/{id}/run" in d["paths"]
    r = requests.get(server.url + "/api/docs", timeout=5)
    assert r.status_code == 200 and "swagger-ui-bundle.js" in r.text
    for a in ("/api/docs/assets/swagger-ui-bundle.js", "/api/docs.js"):
        assert requests.get(server.url + a, timeout=5).status_code == 200, a
    s = requests.get(server.url + "/api/openapi.json?for=swagger-ui", timeout=5)
    assert s.json()["openapi"].startswith("3.0")


def test_upload_name_is_taken_as_sent(server):
    sid = server.create("admin", "heat")["id"]
    before = _state(server)
    # a space at either end is refused, not stripped (Tornado's own
    # argument would strip it)
    for q in ("a%00b", "run.log%0A", "%ff", "a%20", "%20a"):
        r = server.api("POST", f"/simulations/{sid}/files?name={q}", data=b"x")
        assert r.status_code == 400, (q, r.text)
    assert _state(server) == before
    # what is sent is what is stored
    server.api("POST", f"/simulations/{sid}/files?name=a%20b", data=b"x", expect=201)
    f = server.api("GET", f"/simulations/{sid}/files", expect=200).json()
    assert f["inputs"] == ["a b"]


def test_errors_are_not_downloads(server):
    sid = server.create("admin", "heat")["id"]
    r = server.api("GET", f"/simulations/{sid}/files/nothing.txt", expect=404)
    assert "Content-Disposition" not in r.headers
    assert r.headers["Content-Type"].startswith("application/json")
