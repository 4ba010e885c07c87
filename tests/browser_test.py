"""The browser GUI in a real browser: Debian's Chromium driven by Playwright.

Each test runs a real supervisor with real local agents (tests/conftest.py)
and signs in through the page. The page gets every change by push; the tests
watch its DOM (a MutationObserver records what it showed) and never reload
it. Screenshots go to tests/artifacts/ (git-ignored) for people to look at.
"""

import os
import pathlib
import re
import shutil
import time

import pytest
import requests

try:
    from playwright.sync_api import expect, sync_playwright
except ImportError:  # reported by the browser fixture
    sync_playwright = None

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = pathlib.Path(__file__).resolve().parent / "artifacts"
LAPTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
#: heat at ~8 µs a step: a run of about 5 s, long enough to watch it move
WATCHED_HEAT_STEPS = 600000

# records what the simulation page shows, as it changes (the page itself
# never polls; this observer only listens to its DOM)
_RECORD = """() => {
    window.__seen = [];
    const q = (s) => document.querySelector(s);
    const rec = () => {
        const e = {
            t: performance.now(),
            s: q('#status').dataset.status,
            p: Number(q('#progress').getAttribute('aria-valuenow') || 0),
            f: Number(q('#plot') ? q('#plot').dataset.frames : 0),
        };
        const l = window.__seen[window.__seen.length - 1];
        if (!l || l.s !== e.s || l.p !== e.p || l.f !== e.f) {
            window.__seen.push(e);
        }
    };
    rec();
    new MutationObserver(rec).observe(q('main'), {
        subtree: true,
        attributes: true,
        attributeFilter: ['data-status', 'aria-valuenow', 'data-frames'],
    });
}"""


def _missing(why):
    if os.environ.get("CI") == "true":
        pytest.fail(f"browser tests need {why} (CI=true: not skipping)")
    pytest.skip(f"browser tests need {why}")


@pytest.fixture(scope="module")
def browser():
    if sync_playwright is None:
        _missing("the playwright package (pip install playwright)")
    if not (os.path.exists(CHROMIUM) or shutil.which("chromium")):
        _missing(f"Chromium at {CHROMIUM} (apt-get install chromium)")
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield b
        finally:
            b.close()


class Pages:
    """Browser contexts of one test, closed at its end; page errors fail it."""

    def __init__(self, browser):
        self.browser = browser
        self.contexts = []
        self.errors = []

    def new(self, viewport=LAPTOP):
        c = self.browser.new_context(viewport=viewport)
        c.set_default_timeout(15000)
        self.contexts.append(c)
        p = c.new_page()
        p.on("pageerror", lambda e: self.errors.append(str(e)))
        return p

    def close(self):
        for c in self.contexts:
            c.close()


@pytest.fixture
def pages(browser):
    p = Pages(browser)
    yield p
    p.close()
    assert not p.errors, f"errors in the page: {p.errors}"


# plotly redraws a plot for the new width on the window's resize event
_PLOTS_FIT = """() => [...document.querySelectorAll('.plot-area')].every((d) => {
    const s = d.querySelector('.main-svg');
    return !s || s.getBoundingClientRect().width <= d.parentElement.clientWidth + 1;
})"""


def shot(page, name, narrow=False):
    """Full-page screenshot; `narrow` also takes one at phone width."""
    page.screenshot(path=ARTIFACTS / f"{name}.png", full_page=True)
    if narrow:
        v = page.viewport_size
        page.set_viewport_size(PHONE)
        page.wait_for_function(_PLOTS_FIT)
        # nothing sticks out to the right at phone width
        assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
        page.screenshot(path=ARTIFACTS / f"{name}-narrow.png", full_page=True)
        page.set_viewport_size(v)
        page.wait_for_function(_PLOTS_FIT)


def sign_in(page, server, user, path="/"):
    page.goto(server.url + "/")
    page.get_by_label("API token").fill(server.tokens[user])
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#account-name")).to_have_text(user)
    if path != "/":
        page.goto(f"{server.url}/#{path}")
    expect(page.locator("body")).to_have_attribute("data-live", "synced")


def status(page):
    return page.locator("#status")


@pytest.mark.browser
def test_sign_in_bad_then_good_token(server, pages):
    page = pages.new()
    page.goto(server.url + "/")
    expect(page.get_by_role("heading", name="Sign in to simvisor")).to_be_visible()
    page.get_by_label("API token").fill("sv_not-a-real-token")
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#login-error")).to_contain_text("That token is not valid")
    expect(page.locator("#nav")).to_be_hidden()
    shot(page, "login-bad-token", narrow=True)
    page.get_by_label("API token").fill(server.tokens["admin"])
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Simulations")).to_be_visible()
    expect(page.locator("#login-error")).to_have_count(0)
    # an admin gets the admin link
    expect(page.get_by_role("link", name="Admin")).to_be_visible()
    expect(page.get_by_text("No simulations yet")).to_be_visible()
    shot(page, "list-empty")
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_label("API token")).to_be_visible()
    # the cookie is gone: a reload stays signed out
    page.reload()
    expect(page.get_by_label("API token")).to_be_visible()


@pytest.mark.browser
def test_sign_in_again_after_tokens_revoked(server, pages):
    server.add_user("ivy")
    page = pages.new()
    sign_in(page, server, "ivy")
    expect(page.get_by_role("link", name="Admin")).to_be_hidden()
    t = server.api(
        "PATCH",
        "/admin/users/ivy",
        json={"revoke_tokens": True, "new_token": True},
        expect=200,
    ).json()["token"]
    # a browser restart drops the _xsrf session cookie; the stale session
    # cookie stays and must not keep the person from signing in again
    page.context.clear_cookies(name="_xsrf")
    page.reload()
    page.get_by_label("API token").fill(t)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Simulations")).to_be_visible()
    expect(page.locator("#account-name")).to_have_text("ivy")


@pytest.mark.browser
def test_create_run_and_watch_heat(server, pages):
    server.add_user("alice")
    page = pages.new()
    sign_in(page, server, "alice")
    page.get_by_role("link", name="New simulation").first.click()
    expect(page.get_by_role("heading", name="New simulation")).to_be_visible()
    page.get_by_role("radio", name=re.compile("^Heat equation")).check()
    page.get_by_label("Name").fill("rod cooling")
    steps = page.get_by_label("Time steps")
    expect(steps).to_have_value("300000")
    # out of bounds: refused with the server's own words, nothing created
    steps.fill("0")
    page.get_by_role("button", name="Create simulation").click()
    err = page.locator("[data-param=steps] .field-error")
    expect(err).to_have_text("Time steps (steps) must be at least 1.")
    expect(page.locator("#new-error")).to_contain_text("Nothing was created")
    r = server.api(
        "POST",
        "/simulations",
        "alice",
        json={"code": "heat", "params": {"steps": 0}},
        expect=400,
    )
    assert err.inner_text().rstrip(".").lower() == r.json()["message"].lower()
    assert server.api("GET", "/simulations", "alice", expect=200).json() == []
    shot(page, "new-rejected")

    steps.fill(str(WATCHED_HEAT_STEPS))
    page.get_by_role("button", name="Create simulation").click()
    expect(page.get_by_role("heading", name="rod cooling")).to_be_visible()
    sims = server.api("GET", "/simulations", "alice", expect=200).json()
    assert [s["params"]["steps"] for s in sims] == [WATCHED_HEAT_STEPS]
    expect(status(page)).to_have_attribute("data-status", "missing")
    # the cores field is bounded by the code (heat: 4) and the plan (basic: 2)
    expect(page.get_by_label("Cores")).to_have_attribute("max", "2")

    page.evaluate(_RECORD)
    page.get_by_role("button", name="Run", exact=True).click()
    expect(status(page)).to_have_attribute("data-status", "running")
    expect(page.locator("#situation")).to_contain_text("Running on local")
    # mid-run, for people to look at
    page.wait_for_function(
        "Number(document.querySelector('#plot').dataset.frames) > 20"
    )
    shot(page, "sim-heat-running")
    expect(status(page)).to_have_attribute("data-status", "completed", timeout=60000)
    seen = page.evaluate("window.__seen")
    statuses = [
        e["s"] for i, e in enumerate(seen) if i == 0 or seen[i - 1]["s"] != e["s"]
    ]
    assert statuses[0] == "missing"
    order = [s for s in statuses if s in ("queued", "running", "completed")]
    assert order == ["queued", "running", "completed"], statuses
    running = [e for e in seen if e["s"] == "running"]
    progress = sorted({e["p"] for e in running if 0 < e["p"] < 100})
    assert len(progress) >= 2, f"progress did not move while running: {running}"
    frames = [e["f"] for e in running]
    assert frames == sorted(frames) and len(set(frames)) >= 3, frames
    # while running, the plot gained frames over time (not all at the end)
    assert running[-1]["t"] - running[0]["t"] > 500
    expect(page.locator("#progress")).to_have_attribute("aria-valuenow", "100")
    plot = page.locator("#plot")
    assert int(plot.get_attribute("data-frames")) > 50
    assert int(plot.get_attribute("data-points")) == 101
    expect(plot.locator(".main-svg").first).to_be_visible()
    expect(page.locator("#log")).to_contain_text("heat: wrote result.json")
    expect(page.get_by_role("link", name="result.json")).to_have_attribute(
        "href", re.compile(r"/files/result\.json$")
    )
    h = page.locator("#history tbody tr")
    expect(h).to_have_count(1)
    expect(h.first.locator("[data-status]")).to_have_attribute(
        "data-status", "completed"
    )
    shot(page, "sim-heat-completed", narrow=True)
    page.get_by_role("link", name="Simulations").first.click()
    row = page.locator(f"tr[data-sim='{sims[0]['id']}']")
    expect(row.locator("[data-status]")).to_have_attribute("data-status", "completed")
    shot(page, "list", narrow=True)


@pytest.mark.browser
def test_cancel_within_a_second_seen_by_a_second_browser(server, pages):
    server.add_user("carol")
    s = server.create("carol", "forever")
    a = pages.new()
    b = pages.new()
    sign_in(a, server, "carol", f"/sim/{s['id']}")
    sign_in(b, server, "carol", f"/sim/{s['id']}")
    expect(status(b)).to_have_attribute("data-status", "missing")
    a.get_by_role("button", name="Run", exact=True).click()
    for p in (a, b):
        expect(status(p)).to_have_attribute("data-status", "running")
        expect(p.locator("#log")).to_contain_text("forever: heartbeat 1")
    # the other browser shows the same: status, situation, progress, log
    for sel in ("#status", "#situation"):
        assert a.locator(sel).inner_text() == b.locator(sel).inner_text()
    expect(b.locator("#cancel")).to_be_enabled()
    t = time.monotonic()
    a.locator("#cancel").click()
    a.wait_for_function(
        "document.querySelector('#status').dataset.status === 'canceled'",
        timeout=10000,
    )
    secs = time.monotonic() - t
    print(f"canceled shown {secs * 1000:.0f} ms after the click")
    assert secs < 1, f"canceled shown {secs:.3f} s after the click"
    expect(status(b)).to_have_attribute("data-status", "canceled")
    for p in (a, b):
        expect(p.locator("#history tbody tr")).to_have_count(1)
        expect(p.locator("#run")).to_be_enabled()
        expect(p.locator("#cancel")).to_be_disabled()
    assert server.job("carol", s["id"])["status"] == "canceled"
    shot(a, "sim-canceled")
    shot(b, "sim-canceled-second-browser", narrow=True)


@pytest.mark.browser
def test_non_admin_gets_no_admin_console(server, pages):
    server.add_user("dave")
    page = pages.new()
    sign_in(page, server, "dave")
    expect(page.get_by_role("link", name="Simulations").first).to_be_visible()
    expect(page.get_by_role("link", name="Admin")).to_be_hidden()
    page.goto(server.url + "/#/admin")
    expect(page.get_by_role("heading", name="Not allowed")).to_be_visible()
    expect(page.locator("#admin-jobs")).to_have_count(0)
    r = page.evaluate(
        """async () => {
            const r = await fetch('/api/admin/jobs');
            return {status: r.status, body: await r.json()};
        }"""
    )
    assert r["status"] == 403 and r["body"]["error"] == "forbidden", r
    shot(page, "admin-not-allowed")


@pytest.mark.browser
def test_admin_console(server, pages):
    server.add_user("erin")
    s = server.create("erin", "forever")
    server.run("erin", s["id"])
    server.wait_status("erin", s["id"], "running")
    page = pages.new()
    sign_in(page, server, "admin", "/admin")
    row = page.locator(f"#admin-jobs tr[data-sim='{s['id']}']")
    expect(row.locator("[data-status]")).to_have_attribute("data-status", "running")
    expect(row).to_contain_text("erin")
    agents = page.locator("#admin-agents tbody tr")
    expect(agents).to_have_count(1)
    expect(agents.first).to_contain_text("erin")
    expect(page.locator("#admin-hosts")).to_contain_text("1 of")
    shot(page, "admin", narrow=True)

    # cancel another user's run
    row.get_by_role("button", name="Cancel erin's forever").click()
    expect(row).to_have_count(0)
    expect(page.locator("#admin-jobs")).to_contain_text("No job is queued")
    j = server.job("erin", s["id"])
    assert j["status"] == "canceled" and "admin" in j["error"], j
    expect(page.locator("#admin-hosts")).to_contain_text("0 of")

    # drain and undrain the host
    host = server.api("GET", "/admin/hosts", expect=200).json()[0]["name"]
    page.get_by_role("button", name=f"Drain {host}").click()
    expect(page.locator("#admin-hosts")).to_contain_text("draining")
    assert server.api("GET", "/admin/hosts").json()[0]["draining"] is True
    page.get_by_role("button", name=f"Undrain {host}").click()
    expect(page.locator("#admin-hosts .tag-warn")).to_have_count(0)
    assert server.api("GET", "/admin/hosts").json()[0]["draining"] is False

    # a new user: the token is shown once and works
    page.get_by_label("New user").fill("frank")
    page.get_by_role("button", name="Create user").click()
    token = page.locator("#new-token")
    expect(token).to_contain_text("sv_")
    server.tokens["frank"] = token.inner_text().strip()
    server.api("GET", "/whoami", "frank", expect=200)
    shot(page, "admin-new-user")
    page.get_by_label("Plan of frank").select_option("premium")
    expect(page.locator("#notices")).to_contain_text("frank: plan is now premium")
    u = server.api("GET", "/whoami", "frank", expect=200).json()["user"]
    assert u["plan"] == "premium"

    # kill erin's (now idle) agent
    agents.first.get_by_role("button", name=re.compile("^Kill agent")).click()
    page.get_by_role("dialog").get_by_role("button", name="Kill agent").click()
    expect(page.locator("#admin-agents")).to_contain_text("No agent is running")


@pytest.mark.browser
def test_rename_edit_delete_and_failures(server, pages):
    server.add_user("hana")
    s = server.create("hana", "lorenz", steps=1000)
    page = pages.new()
    sign_in(page, server, "hana", f"/sim/{s['id']}")
    # a 500 and a network failure are said in words; nothing stays disabled
    run = page.get_by_role("button", name="Run", exact=True)
    page.route("**/api/simulations/*/run", lambda r: r.fulfill(status=500, body="x"))
    run.click()
    expect(page.locator("#action-error")).to_have_text(
        "The supervisor had a problem (HTTP 500); please try again."
    )
    expect(run).to_be_enabled()
    page.unroute("**/api/simulations/*/run")
    page.route("**/api/simulations/*/run", lambda r: r.abort())
    run.click()
    expect(page.locator("#action-error")).to_contain_text("Cannot reach the supervisor")
    expect(run).to_be_enabled()
    page.unroute("**/api/simulations/*/run")
    assert server.job("hana", s["id"])["status"] == "missing"
    # cores out of bounds: refused before sending, in the server's words
    page.get_by_label("Cores").fill("3")
    run.click()
    expect(page.locator("#action-error")).to_have_text(
        "Cores must be an integer from 1 to 1 for lorenz."
    )
    r = server.api(
        "POST", f"/simulations/{s['id']}/run", "hana", json={"cores": 3}, expect=400
    )
    assert r.json()["message"] == "cores must be an integer from 1 to 1 for lorenz"
    page.get_by_role("button", name="Rename this simulation").click()
    page.get_by_label("New name").fill("butterfly")
    page.get_by_role("button", name="Save", exact=True).click()
    expect(page.get_by_role("heading", name="butterfly")).to_be_visible()
    page.get_by_role("button", name="Edit", exact=True).click()
    page.get_by_label("rho").fill("-1")
    page.get_by_role("button", name="Save parameters").click()
    expect(page.locator("[data-param=rho] .field-error")).to_have_text(
        "Rho (rho) must be at least 0.0."
    )
    page.get_by_label("rho").fill("99.5")
    page.get_by_role("button", name="Save parameters").click()
    expect(page.locator("#params")).to_contain_text("99.5")
    got = server.api("GET", f"/simulations/{s['id']}", "hana", expect=200).json()
    assert got["name"] == "butterfly" and got["params"]["rho"] == 99.5
    page.get_by_role("button", name="Delete simulation…").click()
    page.get_by_role("dialog").get_by_role("button", name="Keep it").click()
    expect(page.get_by_role("heading", name="butterfly")).to_be_visible()
    page.get_by_role("button", name="Delete simulation…").click()
    page.get_by_role("dialog").get_by_role("button", name="Delete").click()
    expect(page.get_by_role("heading", name="Simulations")).to_be_visible()
    expect(page.get_by_text("No simulations yet")).to_be_visible()
    server.api("GET", f"/simulations/{s['id']}", "hana", expect=404)


@pytest.mark.browser
def test_page_recovers_after_supervisor_restart(server, pages):
    server.add_user("gina")
    s = server.create("gina", "sleep", secs=2)
    page = pages.new()
    sign_in(page, server, "gina")
    page.evaluate("window.__not_reloaded = true")
    server.run("gina", s["id"])
    row = page.locator(f"tr[data-sim='{s['id']}']")
    expect(row.locator("[data-status]")).to_have_attribute("data-status", "running")
    server.stop()
    banner = page.locator("#banner")
    expect(banner).to_be_visible()
    expect(banner).to_contain_text("Disconnected from the supervisor — reconnecting")
    shot(page, "list-disconnected", narrow=True)
    server.start()
    # the run ended while the supervisor was down; its agent tells the new one
    expect(banner).to_be_hidden(timeout=30000)
    expect(row.locator("[data-status]")).to_have_attribute(
        "data-status", "completed", timeout=30000
    )
    # and the new connection is live: a simulation made elsewhere shows up
    t = server.create("gina", "heat", steps=1000)
    expect(page.locator(f"tr[data-sim='{t['id']}']")).to_be_visible()
    assert page.evaluate("window.__not_reloaded") is True
    shot(page, "list-reconnected")


@pytest.mark.browser
def test_api_docs_render_offline(server, pages):
    """Swagger UI from the bundled package draws every path of the document."""
    page = pages.new()
    fetched = []
    page.on("request", lambda r: fetched.append(r.url))
    page.goto(server.url + "/api/docs")
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("simvisor")
    expect(page.locator(".opblock").first).to_be_visible()
    n = len(requests.get(server.url + "/api/openapi.json", timeout=5).json()["paths"])
    assert page.locator(".opblock").count() >= n
    # nothing from anywhere but us
    assert all(u.startswith(server.url) for u in fetched), fetched
    shot(page, "api-docs")
