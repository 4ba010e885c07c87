"""Second review of issue 13 (sweeps): the GUI, the CLI and the async executor.

Each test reproduces one defect against a real supervisor with its test
codes (`conftest.Server`) and fails until it is fixed; each cancels or
deletes what it started before the fixture's cleanup.
"""

import asyncio
import os
import pathlib
import re
import subprocess
import sys
import threading
import time

import pytest

from conftest import wait_for
from supervisor import client
from tests import browser_test as bt

try:
    from playwright.sync_api import expect
except ImportError:  # the browser fixture says what is missing
    expect = None

browser = bt.browser
pages = bt.pages

_ROOT = pathlib.Path(__file__).resolve().parents[1]

XSS = "<img src=x onerror=alert(1)>"


def _sweep(server, user, expect=202, **body):
    return server.api("POST", "/sweeps", user, json=body, expect=expect).json()


def _done(server, user, sid, timeout_secs=30):
    return wait_for(
        lambda: (d := server.api("GET", f"/sweeps/{sid}", user, expect=200).json())[
            "status"
        ]
        != "running"
        and d,
        timeout_secs,
        what=f"sweep {sid} done",
    )


def _cli(server, token, *args, timeout=60):
    e = dict(os.environ, SUPERVISOR_PKCLI_SIM_URL=server.url)
    e.pop("SUPERVISOR_PKCLI_SIM_TOKEN", None)
    if token:
        e["SUPERVISOR_PKCLI_SIM_TOKEN"] = token
    return subprocess.run(
        [sys.executable, "-m", "supervisor.cli", "sweep", *args],
        env=e,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=_ROOT,
    )


# --- 1. the GUI ---------------------------------------------------------------


def _new_sleep_form(page):
    page.get_by_role("link", name="New simulation").first.click()
    page.get_by_text(re.compile(r"^Test codes")).click()
    page.get_by_role("radio", name=re.compile("^Test: sleep")).check()
    page.get_by_role("button", name="Sweep Seconds").click()


@pytest.mark.browser
def test_gui_a_huge_range_count_keeps_the_form_responsive(server, pages):
    """axes.js Axis.update builds every value of a range (rangeValues) and
    looks for a repeat with `vs.indexOf(v) !== i` for each: quadratic in the
    count, for float ranges too. A count of 100,000 (a mistyped 10,000) freezes
    the tab for many seconds, though the server refuses anything over 10,000."""
    server.add_user("hugo")
    page = pages.new()
    bt.sign_in(page, server, "hugo")
    _new_sleep_form(page)
    page.get_by_label("How Seconds is swept").select_option("range")
    axis = page.locator("[data-axis=secs]")
    axis.get_by_label("Start").fill("0")
    axis.get_by_label("Stop").fill("1")
    t = time.monotonic()
    try:
        axis.get_by_label("Count").fill("10000000", timeout=5000)
    except Exception as e:
        raise AssertionError(f"the tab froze on a count of 10,000,000: {e}") from e
    expect(page.locator("#sweep-count")).to_have_text("10,000,000 runs", timeout=5000)
    page.evaluate("1")
    took = time.monotonic() - t
    assert took < 2, f"the form was frozen for {took:.1f} s by one count"


@pytest.mark.browser
def test_gui_xss_through_names_and_member_errors(server, pages):
    """Names and a string parameter carried into members' errors are text."""
    server.add_user("xena")
    w = _sweep(
        server,
        "xena",
        code="crash",
        name=XSS,
        axes={"message": [XSS, XSS + "2"]},
    )
    _done(server, "xena", w["id"])
    page = pages.new()
    dialogs = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    bt.sign_in(page, server, "xena")
    row = page.locator(f"tr[data-sweep='{w['id']}']")
    expect(row.locator("a.sim-link")).to_have_text(XSS)
    row.locator("a.sim-link").click()
    expect(page.locator("#sweep-title")).to_have_text(XSS)
    expect(page.locator("#sweep-members [data-status=error]")).to_have_count(2)
    expect(page.locator("#sweep-table tbody tr")).to_have_count(2)
    # the plot of a code with no result, all members failed: still a page
    page.locator("#sweep-delete").click()
    expect(page.get_by_role("dialog")).to_contain_text(XSS)
    page.get_by_role("dialog").get_by_role("button", name="Keep it").click()
    page.locator("#sweep-members .member-cell").first.click()
    expect(bt.status(page)).to_have_attribute("data-status", "error")
    expect(page.locator("#sim-sweep")).to_have_text(XSS)
    assert page.locator("img[src=x]").count() == 0
    assert not dialogs, dialogs
    server.api("DELETE", f"/sweeps/{w['id']}", "xena", expect=200)


@pytest.mark.browser
def test_gui_another_users_sweep_by_url_is_not_found(server, pages):
    server.add_user("anna")
    server.add_user("bert")
    w = _sweep(server, "anna", code="sleep", axes={"secs": [0.0, 0.0]})
    _done(server, "anna", w["id"])
    r = server.api("GET", f"/sweeps/{w['id']}", "bert")
    assert r.status_code == 404, r.text
    page = pages.new()
    bt.sign_in(page, server, "bert", path=f"/sweeps/{w['id']}")
    expect(page.get_by_role("heading", name="Sweep not found")).to_be_visible()
    assert page.locator("#sweep-title").count() == 0
    server.api("DELETE", f"/sweeps/{w['id']}", "anna", expect=200)


@pytest.mark.browser
def test_gui_a_sweep_deleted_in_another_tab(server, pages):
    """Two tabs of one user on a running sweep; one deletes it."""
    server.add_user("tess")
    w = _sweep(
        server, "tess", code="sleep", axes={"secs": [30, 30, 30]}, max_parallel=1
    )
    a = pages.new()
    b = pages.new()
    bt.sign_in(a, server, "tess", path=f"/sweeps/{w['id']}")
    bt.sign_in(b, server, "tess", path=f"/sweeps/{w['id']}")
    for p in (a, b):
        expect(p.locator("#sweep-members [data-status=running]")).to_have_count(1)
    a.locator("#sweep-delete").click()
    a.get_by_role("dialog").get_by_role("button", name="Delete").click()
    expect(a.get_by_role("heading", name="Simulations")).to_be_visible()
    # the other tab says so, without a reload, and offers nothing to do
    expect(b.locator("#sweep-status")).to_have_attribute("data-status", "deleted")
    expect(b.get_by_text("This sweep was deleted.")).to_be_visible()
    for i in ("#sweep-cancel", "#sweep-retry", "#sweep-delete"):
        expect(b.locator(i)).to_be_disabled()
    expect(b.locator("#sweep-members [data-status=running]")).to_have_count(0)


# --- 2. the CLI ---------------------------------------------------------------


def test_cli_refuses_an_axis_of_nan(server):
    """pkcli/sweep.py _json_or_text reads `NaN` (and `Infinity`) as JSON
    numbers (Python's json accepts them): the sweep is created with a member
    whose `secs` is NaN, which no bound refuses (NaN < 0 is false)."""
    t = server.add_user("nina")
    p = _cli(server, t, "create", "sleep", "--axis", "secs=NaN,0")
    try:
        assert p.returncode == 1, (p.stdout, p.stderr)
        assert "secs" in p.stderr, p.stderr
    finally:
        for w in server.api("GET", "/sweeps", "nina", expect=200).json():
            server.api("DELETE", f"/sweeps/{w['id']}", "nina")
    assert server.api("GET", "/sweeps", "nina", expect=200).json() == []


def test_cli_watch_of_a_sweep_deleted_meanwhile(server):
    t = server.add_user("walt")
    w = _sweep(server, "walt", code="sleep", axes={"secs": [30, 30]})
    p = subprocess.Popen(
        [sys.executable, "-m", "supervisor.cli", "sweep", "watch", w["id"]],
        env=dict(
            os.environ,
            SUPERVISOR_PKCLI_SIM_URL=server.url,
            SUPERVISOR_PKCLI_SIM_TOKEN=t,
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=_ROOT,
    )
    try:
        wait_for(
            lambda: server.api("GET", f"/sweeps/{w['id']}", "walt").json()["counts"].get(
                "running"
            ),
            20,
            what="members running",
        )
        time.sleep(1)
        server.api("DELETE", f"/sweeps/{w['id']}", "walt", expect=200)
        out, err = p.communicate(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 1, (out, err)
    assert "deleted" in err, err
    assert "Traceback" not in err, err


def test_cli_without_a_token(server):
    p = _cli(server, None, "list")
    assert p.returncode == 1, (p.stdout, p.stderr)
    assert "no API token" in p.stderr
    p = _cli(server, "sv_not-a-token", "status", "abc")
    assert p.returncode == 1, (p.stdout, p.stderr)
    assert "Traceback" not in p.stderr, p.stderr


# --- 3. the async executor ------------------------------------------------------


def _in_thread(fn, *args):
    """asyncio.run(fn(*args)) in a thread: Playwright's loop holds this one."""
    box = {}

    def run():
        try:
            box["r"] = asyncio.run(fn(*args))
        except BaseException as e:
            box["e"] = e

    t = threading.Thread(target=run)
    t.start()
    t.join(120)
    assert not t.is_alive(), "still running"
    if "e" in box:
        raise box["e"]
    return box.get("r")


def test_async_executor_survives_a_server_restart(server):
    _in_thread(_async_executor_survives_a_server_restart, server)


async def _async_executor_survives_a_server_restart(server):
    server.add_user("rosa")
    tok = server.tokens["rosa"]

    async def main():
        c = client.AsyncClient(server.url, tok)
        async with c.executor("sleep") as ex:
            fs = [ex.submit(secs=2) for _ in range(2)]
            await asyncio.sleep(1)
            server.stop()
            server.start()
            return await asyncio.wait_for(asyncio.gather(*fs), 60)

    jobs = await main()
    assert [j["status"] for j in jobs] == ["completed", "completed"], jobs


def test_async_executor_cancel_and_exceptions(server):
    _in_thread(_async_executor_cancel_and_exceptions, server)


async def _async_executor_cancel_and_exceptions(server):
    server.add_user("cato")
    tok = server.tokens["cato"]

    async def main():
        c = client.AsyncClient(server.url, tok)
        ex = c.executor("sleep")
        async with ex:
            bad = ex.submit(secs=-1)
            slow = ex.submit(secs=30)
            ok = ex.submit(secs=0)
            with pytest.raises(client.ApiError):
                await bad
            await wait_running(c, slow)
            slow.cancel()
            j = await ok
            assert j["status"] == "completed"
        with pytest.raises(RuntimeError):
            ex.submit(secs=0)
        return slow

    async def wait_running(c, f):
        for _ in range(200):
            if f.simulation and (await c.sweep(f.sweep_id))["counts"].get("running"):
                return
            await asyncio.sleep(0.05)
        raise AssertionError("not running")

    slow = await main()
    assert slow.cancelled()
    d = server.api("GET", f"/sweeps/{slow.sweep_id}", "cato", expect=200).json()
    assert d["members"][slow.index]["status"] == "canceled", d


@pytest.mark.browser
def test_gui_heat_map_with_results_missing_for_canceled_members(server, pages):
    """A grid whose slow members are canceled: the heat map must have holes.

    A member canceled while it ran keeps a `result` (reports.py passes the
    agent's `result` whatever the status; runs.py end stores it), and
    views/sweep/plot.js plots `m.result` whatever `m.status`: a canceled run's
    value at the moment it was stopped is drawn, tabled and exported as if it
    were the code's final result."""
    server.add_user("hank")
    w = _sweep(
        server,
        "hank",
        code="heat",
        params={"nx": 500},
        max_parallel=1,
        axes={"steps": [200, 5000000], "alpha": [0.01, 0.02]},
    )
    page = pages.new()
    bt.sign_in(page, server, "hank", path=f"/sweeps/{w['id']}")
    plot = page.locator("#sweep-plot")
    expect(plot).to_have_attribute("data-points", "2", timeout=30000)
    expect(page.locator("#sweep-members [data-status=running]")).to_have_count(1)
    server.api("POST", f"/sweeps/{w['id']}/cancel", "hank", expect=200)
    expect(page.locator("#sweep-status")).to_have_attribute("data-status", "canceled")
    expect(plot).to_have_attribute("data-kind", "heatmap")
    expect(plot).to_have_attribute("data-points", "2")
    expect(page.locator("#sweep-members [data-status=canceled]")).to_have_count(2)
    z = page.evaluate("document.querySelector('#sweep-plot .plot-area').data[0].z")
    assert sum(v is None for r in z for v in r) == 2, z
    d = server.api("GET", f"/sweeps/{w['id']}", "hank", expect=200).json()
    ms = [(m["status"], m["result"]) for m in d["members"]]
    assert ms[2:] == [("canceled", None)] * 2, ms
    with page.expect_download() as dl:
        page.locator("#sweep-csv").click()
    text = pathlib.Path(dl.value.path()).read_text()
    assert text.count("canceled") >= 2, text
    server.api("DELETE", f"/sweeps/{w['id']}", "hank", expect=200)


def test_cli_bad_axis_specs_and_exit_codes(server):
    t = server.add_user("cleo")
    for args in (
        ["--axis", "secs=0:1:0"],
        ["--axis", "secs=0:1:3:cubic"],
        ["--axis", "secs=1,,2"],
        ["--axis", "secs=0:1:3", "--max-parallel", "0"],
        ["--axis", "secs=0:1:3", "--cores", "x"],
        ["--axis", "nope=1,2"],
        ["--axis", "secs=0:1:99999999999"],
    ):
        p = _cli(server, t, "create", "sleep", *args)
        assert p.returncode == 1, (args, p.stdout, p.stderr)
        assert "Traceback" not in p.stderr, (args, p.stderr)
        assert p.stderr.strip(), args
    assert server.api("GET", "/sweeps", "cleo", expect=200).json() == []
    for cmd in ("status", "watch", "cancel", "retry", "delete"):
        p = _cli(server, t, cmd, "0123456789abcdef")
        assert p.returncode == 1, (cmd, p.stdout, p.stderr)
        assert "Traceback" not in p.stderr, (cmd, p.stderr)


def test_async_executor_of_an_unknown_code_fails_its_futures(server):
    _in_thread(_async_executor_of_an_unknown_code_fails_its_futures, server)


async def _async_executor_of_an_unknown_code_fails_its_futures(server):
    c = client.AsyncClient(server.url, server.add_user("ugo"))
    async with c.executor("no-such-code") as ex:
        f = ex.submit(secs=1)
        with pytest.raises(client.ApiError):
            await asyncio.wait_for(f, 20)


def test_async_cancelling_the_task_in_its_with_block_cancels_members(server):
    _in_thread(_async_cancelling_the_task_in_its_with_block_cancels_members, server)


async def _async_cancelling_the_task_in_its_with_block_cancels_members(server):
    """A task inside ``async with ex`` cancelled (a timeout): __aexit__ calls
    shutdown() and waits for every member to end on the server, so the
    cancellation takes as long as the runs (asyncio code expects a cancel to
    end the task promptly)."""
    server.add_user("tim")
    c = client.AsyncClient(server.url, server.tokens["tim"])
    got = {}

    async def block():
        async with c.executor("sleep") as ex:
            f = ex.submit(secs=20)
            got["f"] = f
            await f

    t = time.monotonic()
    with pytest.raises((asyncio.TimeoutError, asyncio.CancelledError)):
        await asyncio.wait_for(block(), 2)
    took = time.monotonic() - t
    f = got["f"]
    d = await c.sweep(f.sweep_id)
    if d["status"] == "running":
        await c.cancel_sweep(f.sweep_id)
    assert took < 8, f"cancelling the task took {took:.1f} s"


def test_async_executor_whose_server_is_gone_fails_its_futures(server):
    _in_thread(_async_server_gone, server)


async def _async_server_gone(server):
    server.add_user("gina")
    c = client.AsyncClient(
        server.url,
        server.tokens["gina"],
        reconnect=client.Reconnect(give_up_secs=2),
    )
    ex = c.executor("sleep")
    f = ex.submit(secs=30)
    while not f.simulation:
        await asyncio.sleep(0.05)
    g = ex.submit(secs=0)
    await asyncio.sleep(0)
    server.stop()
    try:
        for x in (f, g):
            with pytest.raises(Exception) as e:
                await asyncio.wait_for(x, 20)
            assert not isinstance(e.value, asyncio.TimeoutError), e.value
        await asyncio.wait_for(ex.shutdown(), 15)
    finally:
        server.start()
        server.api("POST", f"/sweeps/{f.sweep_id}/cancel", "gina")
        _done(server, "gina", f.sweep_id)


@pytest.mark.browser
def test_gui_list_row_follows_a_sweep_live(server, pages):
    server.add_user("liv")
    page = pages.new()
    bt.sign_in(page, server, "liv")
    w = _sweep(server, "liv", code="sleep", axes={"secs": [0.2, 0.4, 0.6]})
    row = page.locator(f"tr[data-sweep='{w['id']}']")
    expect(row).to_be_visible()
    expect(row.locator(".sweep-progress-text")).to_have_text(
        "3 of 3 done", timeout=30000
    )
    expect(row.locator(".badge")).to_have_attribute("data-status", "done")
    server.api("DELETE", f"/sweeps/{w['id']}", "liv", expect=200)
    expect(row).to_have_count(0)


@pytest.mark.browser
def test_gui_a_log_range_from_zero_is_refused_in_the_form(server, pages):
    server.add_user("lola")
    page = pages.new()
    bt.sign_in(page, server, "lola")
    _new_sleep_form(page)
    page.get_by_label("How Seconds is swept").select_option("range")
    axis = page.locator("[data-axis=secs]")
    axis.get_by_label("Start").fill("0")
    axis.get_by_label("Stop").fill("1")
    axis.get_by_label("Count").fill("3")
    axis.get_by_label("Scale").select_option("log")
    preview = axis.locator(".axis-preview")
    expect(preview).not_to_have_text(re.compile("3 values"))
    assert "NaN" not in preview.inner_text()


def test_cli_create_watch_exits_1_when_members_fail(server):
    t = server.add_user("carl")
    p = _cli(server, t, "create", "crash", "--axis", "message=a,b", "--watch")
    assert p.returncode == 1, (p.stdout, p.stderr)
    assert "2 of 2 members did not complete" in p.stderr, p.stderr
    i = p.stdout.splitlines()[0]
    p = _cli(server, t, "retry", i)
    assert p.returncode == 0, (p.stdout, p.stderr)
    assert p.stdout.startswith("retried 2"), p.stdout
    p = _cli(server, t, "watch", i)
    assert p.returncode == 1, (p.stdout, p.stderr)
    for args in (
        ["--axis", "message=a,b", "--axis", "x=1", "--zip"],
        ["--axis", "message=a,b,c", "--zip", "--axes", '{"message": [1]}'],
    ):
        p = _cli(server, t, "create", "crash", *args)
        assert p.returncode == 1, (args, p.stdout, p.stderr)
    p = _cli(server, t, "cancel", i, "--members", "7")
    assert p.returncode == 1, (p.stdout, p.stderr)
    assert "Traceback" not in p.stderr
    p = _cli(server, t, "delete", i)
    assert p.returncode == 0 and p.stdout.startswith("deleted"), (p.stdout, p.stderr)


@pytest.mark.browser
def test_gui_a_sweep_of_10000_members_loads_and_cancels(server, pages):
    server.add_user("max", plan="premium")
    w = _sweep(
        server,
        "max",
        code="sleep",
        axes={"secs": {"start": 30, "stop": 31, "num": 10000}},
        max_parallel=1,
    )
    page = pages.new()
    bt.sign_in(page, server, "max")
    t = time.monotonic()
    page.goto(f"{server.url}/#/sweeps/{w['id']}")
    cells = page.locator("#sweep-members .member-cell")
    expect(cells).to_have_count(10000, timeout=20000)
    expect(page.locator("#sweep-members [data-status=running]")).to_have_count(
        1, timeout=20000
    )
    loaded = time.monotonic() - t
    t = time.monotonic()
    page.locator("#sweep-cancel").click()
    expect(page.locator("#sweep-status")).to_have_attribute(
        "data-status", "canceled", timeout=30000
    )
    expect(page.locator("#sweep-members [data-status=canceled]")).to_have_count(
        10000, timeout=30000
    )
    canceled = time.monotonic() - t
    t = time.monotonic()
    page.evaluate("1")
    assert time.monotonic() - t < 1
    server.api("DELETE", f"/sweeps/{w['id']}", "max", expect=200)
    assert loaded < 5 and canceled < 5, (loaded, canceled)


@pytest.mark.browser
def test_gui_retry_in_one_tab_shows_in_the_other(server, pages):
    server.add_user("rita")
    w = _sweep(server, "rita", code="crash", axes={"message": ["a", "b"]})
    _done(server, "rita", w["id"])
    a = pages.new()
    b = pages.new()
    bt.sign_in(a, server, "rita", path=f"/sweeps/{w['id']}")
    bt.sign_in(b, server, "rita", path=f"/sweeps/{w['id']}")
    expect(b.locator("#sweep-members [data-status=error]")).to_have_count(2)
    seen = b.evaluate(
        """() => { window.__st = [];
        new MutationObserver(() => window.__st.push(
            document.querySelector('#sweep-status').dataset.status)).observe(
            document.querySelector('#sweep-status'), {attributes: true});}"""
    )
    a.get_by_role("button", name="Retry 2 failed").click()
    expect(a.locator("#notices")).to_contain_text("Running 2 members again.")
    expect(b.locator("#sweep-status")).to_have_attribute("data-status", "done")
    wait_for(
        lambda: server.api("GET", f"/sweeps/{w['id']}", "rita").json()["status"]
        == "done",
        20,
    )
    d = server.api("GET", f"/sweeps/{w['id']}", "rita").json()
    assert [m["status"] for m in d["members"]] == ["error", "error"]
    expect(b.locator("#sweep-members [data-status=error]")).to_have_count(2)
    assert "running" in b.evaluate("window.__st"), seen
    server.api("DELETE", f"/sweeps/{w['id']}", "rita", expect=200)



@pytest.mark.browser
def test_gui_sweep_page_follows_through_a_server_restart(server, pages):
    server.add_user("remy")
    w = _sweep(
        server, "remy", code="sleep", axes={"secs": [1.0, 1.0, 1.0]}, max_parallel=1
    )
    page = pages.new()
    bt.sign_in(page, server, "remy", path=f"/sweeps/{w['id']}")
    expect(page.locator("#sweep-members [data-status=running]")).to_have_count(1)
    server.stop()
    server.start()
    expect(page.locator("#sweep-status")).to_have_attribute(
        "data-status", "done", timeout=40000
    )
    d = server.api("GET", f"/sweeps/{w['id']}", "remy", expect=200).json()
    assert d["counts"] == {"completed": 3}, d["counts"]
    expect(page.locator("#sweep-members [data-status=completed]")).to_have_count(3)
    expect(page.locator("#sweep-done")).to_have_text("3 of 3")
    expect(page.locator("#sweep-plot")).to_have_attribute("data-points", "3")


def test_csv_export_neutralises_formulas_in_text_values(server):
    """results.csv writes a string parameter (and the error it becomes) as
    is: a cell `=HYPERLINK(...)` runs as a formula when the CSV is opened in
    a spreadsheet (CSV injection); text cells starting with = + - @ need a
    leading quote."""
    server.add_user("fred")
    evil = '=HYPERLINK("http://127.0.0.1/x","click")'
    w = _sweep(server, "fred", code="crash", axes={"message": [evil, "@SUM(1)"]})
    _done(server, "fred", w["id"])
    r = server.api("GET", f"/sweeps/{w['id']}/results.csv", "fred", expect=200)
    server.api("DELETE", f"/sweeps/{w['id']}", "fred", expect=200)
    import csv
    import io

    rows = list(csv.reader(io.StringIO(r.text)))
    bad = [c for row in rows[1:] for c in row if c[:1] in ("=", "@", "+")]
    assert not bad, rows
