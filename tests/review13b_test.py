"""Second review of issue 13 (sweeps): the GUI, the CLI and the async executor.

What held is in the report, not here: the async executor (cancel,
exceptions, `async with`, shutdown(cancel_futures=True), a restart or a
supervisor gone for good), XSS through names and errors, another user's
sweep by URL, two tabs, deleting a sweep while its page is open, watch of
a deleted sweep, no token, bad --axis specs and exit codes.

Each test reproduces one defect against a real supervisor with its test
codes (`conftest.Server`) and fails until it is fixed; each cancels or
deletes what it started before the fixture's cleanup.
"""

import csv
import io
import os
import pathlib
import re
import subprocess
import sys
import time

import pytest

from conftest import wait_for
from tests import browser_test as bt

try:
    from playwright.sync_api import expect
except ImportError:  # the browser fixture says what is missing
    expect = None

browser = bt.browser
pages = bt.pages

_ROOT = pathlib.Path(__file__).resolve().parents[1]


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
    """axes.js Axis.update (about line 234) builds every value of a range
    (rangeValues) and then looks for a repeat with `vs.indexOf(v) !== i` for
    each one: memory linear and time quadratic in the count, with no cap
    though the server refuses more than 10,000 members. One extra zero typed
    in Count (10,000,000) freezes the tab: Playwright's fill cannot even
    finish."""
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
    rows = list(csv.reader(io.StringIO(r.text)))
    bad = [c for row in rows[1:] for c in row if c[:1] in ("=", "@", "+")]
    assert not bad, rows


# --- 2. the CLI ---------------------------------------------------------------


def test_cli_refuses_an_axis_of_nan(server):
    """pkcli/sweep.py _json_or_text reads `NaN` (and `Infinity`, `1e400`) as
    JSON numbers (Python's json takes them) and the client sends them: the
    server refuses the body as "body is not JSON ... invalid character (byte
    36) (HTTP 400 bad_json)", which names neither the axis nor the value. The
    CLI must refuse such a value itself, naming `secs`. (`--params` has the
    same path, sim._params.)"""
    t = server.add_user("nina")
    p = _cli(server, t, "create", "sleep", "--axis", "secs=NaN,0")
    try:
        assert p.returncode == 1, (p.stdout, p.stderr)
        assert "secs" in p.stderr, p.stderr
    finally:
        for w in server.api("GET", "/sweeps", "nina", expect=200).json():
            server.api("DELETE", f"/sweeps/{w['id']}", "nina")
    assert server.api("GET", "/sweeps", "nina", expect=200).json() == []
