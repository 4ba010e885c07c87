"""Sweeps in the browser: the axes editor, the sweep page, the list's row.

A real supervisor with its test codes and a real local agent
(tests/conftest.py); Debian's Chromium driven by Playwright. Sweeps are
made from the new-simulation form; a MutationObserver records what the
sweep page's results plot and member grid showed as members finished (the
page never polls and is never reloaded). Screenshots go to tests/artifacts/.
"""

import csv
import pathlib
import io
import re

import pytest

from supervisor import sweep_axes
from tests import browser_test as bt

try:
    from playwright.sync_api import expect
except ImportError:  # the browser fixture says what is missing
    expect = None

pytestmark = pytest.mark.browser

# the browser fixtures of tests/browser_test.py
browser = bt.browser
pages = bt.pages

#: the seconds of a sweep of `sleep` that finishes in about 4 s, one at a time
NAPS = [0.2, 0.4, 0.6, 0.8, 1.0]

# records the plot's points and the completed cells as they change
_RECORD = """() => {
    window.__seen = [];
    const q = (s) => document.querySelector(s);
    const rec = () => {
        if (!q('#sweep-plot')) {
            return;
        }
        const e = {
            t: performance.now(),
            points: Number(q('#sweep-plot').dataset.points),
            done: document.querySelectorAll(
                '#sweep-members [data-status=completed]').length,
            status: q('#sweep-status').dataset.status,
        };
        const l = window.__seen[window.__seen.length - 1];
        if (!l || l.points !== e.points || l.done !== e.done
                || l.status !== e.status) {
            window.__seen.push(e);
        }
    };
    rec();
    new MutationObserver(rec).observe(q('main'), {
        subtree: true,
        attributes: true,
        attributeFilter: ['data-points', 'data-status'],
    });
}"""


def _new_form(page, code_radio, test_code=False):
    page.get_by_role("link", name="New simulation").first.click()
    if test_code:
        page.get_by_text(re.compile(r"^Test codes")).click()
    page.get_by_role("radio", name=code_radio).check()


def _sweep_id(page):
    page.wait_for_url(re.compile(r"#/sweeps/[0-9a-f]+$"))
    return page.url.rsplit("/", 1)[1]


@pytest.mark.browser
def test_sweep_of_one_axis_fills_its_plot(server, pages):
    server.add_user("sam")
    page = pages.new()
    bt.sign_in(page, server, "sam")
    _new_form(page, re.compile("^Test: sleep"), test_code=True)
    page.get_by_label("Name", exact=True).fill("naps")
    page.get_by_role("button", name="Sweep Seconds").click()
    axis = page.locator("[data-axis=secs]")
    page.get_by_label("How Seconds is swept").select_option("range")
    axis.get_by_label("Start").fill("0.2")
    axis.get_by_label("Stop").fill("1")
    axis.get_by_label("Count").fill("5")
    expect(axis.locator(".axis-preview")).to_have_text(
        "5 values: 0.2, 0.4, 0.6, 0.8, 1.0"
    )
    expect(page.locator("#sweep-count")).to_have_text("5 runs")
    # one at a time: they finish 0.4 s or more apart, even on a busy host
    page.get_by_label("At most at once").fill("1")
    create = page.get_by_role("button", name="Create sweep of 5 runs")
    bt.shot(page, "sweep-new-range")
    create.click()
    sid = _sweep_id(page)
    expect(page.get_by_role("heading", name="naps")).to_be_visible()
    page.evaluate(_RECORD)
    expect(page.locator("#sweep-status")).to_have_attribute(
        "data-status", "done", timeout=30000
    )
    expect(page.locator("#sweep-plot")).to_have_attribute("data-points", "5")
    expect(page.locator("#sweep-plot")).to_have_attribute("data-kind", "line")
    cells = page.locator("#sweep-members .member-cell")
    expect(cells).to_have_count(5)
    expect(page.locator("#sweep-members [data-status=completed]")).to_have_count(5)
    expect(page.locator("#sweep-done")).to_have_text("5 of 5")
    expect(page.locator("#sweep-counts")).to_have_text("5 completed")
    bt.shot(page, "sweep-line", narrow=True)

    # the plot grew as members finished, not all at the end
    seen = page.evaluate("window.__seen")
    points = [e["points"] for e in seen]
    assert points == sorted(points), seen
    assert len({p for p in points if 0 < p < 5}) >= 2, seen
    assert seen[0]["status"] == "running", seen

    # what it drew is what the server has
    d = server.api("GET", f"/sweeps/{sid}", "sam", expect=200).json()
    assert [m["params"]["secs"] for m in d["members"]] == pytest.approx(NAPS)
    assert [m["result"]["secs"] for m in d["members"]] == pytest.approx(NAPS)
    xy = page.evaluate(
        "(() => { const t = document.querySelector('#sweep-plot .plot-area')"
        ".data[0]; return [t.x, t.y]; })()"
    )
    assert xy[0] == pytest.approx(NAPS) and xy[1] == pytest.approx(NAPS)
    rows = page.locator("#sweep-table tbody tr")
    expect(rows).to_have_count(5)
    expect(rows.locator("[data-result=secs]")).to_have_text(
        ["0.2", "0.4", "0.6", "0.8", "1"]
    )

    # the CSV, with the page's session
    with page.expect_download() as dl:
        page.locator("#sweep-csv").click()
    got = list(csv.reader(io.StringIO(pathlib.Path(dl.value.path()).read_text())))
    assert got[0] == ["index", "simulation", "status", "secs", "secs", "error"]
    assert [r[2] for r in got[1:]] == ["completed"] * 5
    assert [float(r[3]) for r in got[1:]] == pytest.approx(NAPS)

    # a member is a simulation of its own, linked back to its sweep
    cells.nth(2).click()
    expect(bt.status(page)).to_have_attribute("data-status", "completed")
    expect(page.locator("#sim-sweep")).to_have_text("naps")
    page.locator("#sim-sweep").click()
    expect(page.locator("#sweep-title")).to_have_text("naps")

    # the list: the sweep is one row, its members are not listed
    page.locator("#nav").get_by_role("link", name="Simulations").click()
    row = page.locator(f"tr[data-sweep='{sid}']")
    expect(row).to_be_visible()
    expect(page.locator("tbody tr")).to_have_count(1)
    expect(row.locator(".badge")).to_have_attribute("data-status", "done")
    expect(row.locator(".sweep-progress-text")).to_have_text("5 of 5 done")
    expect(page.locator(".page-head .count")).to_have_text("0 simulations · 1 sweep")
    bt.shot(page, "sweep-list")
    row.get_by_role("link", name="naps").click()
    expect(page.locator("#sweep-plot")).to_have_attribute("data-points", "5")


@pytest.mark.browser
def test_sweep_of_two_axes_draws_a_heat_map(server, pages):
    server.add_user("hana")
    page = pages.new()
    bt.sign_in(page, server, "hana")
    _new_form(page, re.compile("^Heat equation"))
    page.get_by_label("Name", exact=True).fill("rods")
    page.get_by_label("Time steps").fill("2000")
    page.get_by_role("button", name=re.compile("^Sweep Diffusivity")).click()
    page.locator("[data-axis=alpha]").get_by_label("Values").fill("0.01, 0.02, 0.04")
    page.get_by_role("button", name=re.compile("^Sweep Initial")).click()
    opts = page.locator("[data-axis=initial] input[type=checkbox]")
    expect(opts).to_have_count(3)
    # the current value is checked; add another
    expect(page.locator("[data-axis=initial] input:checked")).to_have_count(1)
    opts.nth(1).check()
    count = page.locator("#sweep-count")
    expect(count).to_have_text("6 runs (a grid of 3 × 2)")
    page.get_by_text("zip: the i-th values together").click()
    expect(count).to_have_text(
        "Zip needs axes of one length: alpha has 3, initial has 2"
    )
    page.get_by_text("grid: every combination").click()
    expect(count).to_have_text("6 runs (a grid of 3 × 2)")
    bt.shot(page, "sweep-new-grid")
    page.get_by_role("button", name="Create sweep of 6 runs").click()
    sid = _sweep_id(page)
    page.evaluate(_RECORD)
    expect(page.locator("#sweep-status")).to_have_attribute(
        "data-status", "done", timeout=60000
    )
    plot = page.locator("#sweep-plot")
    expect(plot).to_have_attribute("data-kind", "heatmap")
    expect(plot).to_have_attribute("data-points", "6")
    expect(
        page.locator("#sweep-members.member-matrix [data-status=completed]")
    ).to_have_count(6)
    seen = page.evaluate("window.__seen")
    assert [e["points"] for e in seen] == sorted(e["points"] for e in seen), seen
    d = server.api("GET", f"/sweeps/{sid}", "hana", expect=200).json()
    z = page.evaluate("document.querySelector('#sweep-plot .plot-area').data[0].z")
    # a column per alpha, a row per initial profile
    want = [[None] * 3 for _ in range(2)]
    for m in d["members"]:
        want[m["index"] % 2][m["index"] // 2] = m["result"]["u_max"]
    assert z == want
    assert all(v is not None for r in z for v in r)
    bt.shot(page, "sweep-heatmap", narrow=True)


@pytest.mark.browser
def test_sweep_refused_then_canceled_retried_and_deleted(server, pages):
    server.add_user("cora")
    page = pages.new()
    bt.sign_in(page, server, "cora")
    _new_form(page, re.compile("^Test: sleep"), test_code=True)
    page.get_by_label("Name", exact=True).fill("long naps")
    page.get_by_role("button", name="Sweep Seconds").click()
    values = page.locator("[data-axis=secs]").get_by_label("Values")
    err = page.locator("[data-axis=secs] .axis-error")
    form_err = page.locator("#new-error")

    # not a number: refused here, nothing sent
    values.fill("1, abc")
    page.get_by_role("button", name=re.compile("^Create sweep")).click()
    expect(err).to_have_text("Each value of Seconds must be a number, not “abc”.")
    expect(form_err).to_contain_text("Nothing was created")

    # out of bounds: the server's words, naming the member
    values.fill("1, -1")
    with page.expect_response(re.compile(r"/api/sweeps$")) as r:
        page.get_by_role("button", name="Create sweep of 2 runs").click()
    assert r.value.status == 400
    said = r.value.json()
    assert said["error"] == "bad_param"
    expect(err).to_have_text("Member 1 (secs=-1): Seconds (secs) must be at least 0.0.")
    expect(form_err).to_have_text(
        "Not created: Member 1 (secs=-1): Seconds (secs) must be at least 0.0."
    )
    assert said["message"] == "member 1 (secs=-1): Seconds (secs) must be at least 0.0"
    bt.shot(page, "sweep-new-refused")

    # too many: counted by the server before anything is made
    page.get_by_label("How Seconds is swept").select_option("range")
    axis = page.locator("[data-axis=secs]")
    axis.get_by_label("Start").fill("0")
    axis.get_by_label("Stop").fill("1")
    axis.get_by_label("Count").fill("20000")
    page.get_by_role("button", name="Create sweep of 20,000 runs").click()
    expect(form_err).to_have_text(
        "Not created: The sweep would have 20000 members, more than the limit of 10000."
    )
    assert server.api("GET", "/sweeps", "cora", expect=200).json() == []
    assert server.api("GET", "/simulations", "cora", expect=200).json() == []

    # one at a time, and canceled while the first runs
    page.get_by_label("How Seconds is swept").select_option("list")
    values.fill("30 30 30")
    page.get_by_label("At most at once").fill("1")
    page.get_by_role("button", name="Create sweep of 3 runs").click()
    sid = _sweep_id(page)
    running = page.locator("#sweep-members [data-status=running]")
    expect(running).to_have_count(1)
    expect(page.locator("#sweep-members [data-status=pending]")).to_have_count(2)
    expect(page.locator("#sweep-counts .legend-item")).to_have_text(
        ["2 pending", "1 running"]
    )
    bt.shot(page, "sweep-running")
    page.locator("#sweep-cancel").click()
    expect(page.locator("#sweep-status")).to_have_attribute("data-status", "canceled")
    expect(page.locator("#sweep-members [data-status=canceled]")).to_have_count(3)
    expect(page.locator("#sweep-cancel")).to_be_disabled()
    d = server.api("GET", f"/sweeps/{sid}", "cora", expect=200).json()
    assert [m["status"] for m in d["members"]] == ["canceled"] * 3
    expect(page.locator("#sweep-table tbody tr .error-cell").nth(2)).to_have_text(
        "its sweep was canceled before it ran"
    )

    # retry runs the canceled members again; cancel them again
    retry = page.get_by_role("button", name="Retry 3 failed")
    retry.click()
    expect(page.locator("#notices")).to_contain_text("Running 3 members again.")
    expect(running).to_have_count(1)
    expect(page.locator("#sweep-status")).to_have_attribute("data-status", "running")
    page.locator("#sweep-cancel").click()
    expect(page.locator("#sweep-status")).to_have_attribute("data-status", "canceled")

    # delete: the row and the members go
    page.locator("#sweep-delete").click()
    page.get_by_role("dialog").get_by_role("button", name="Delete").click()
    expect(page.get_by_role("heading", name="Simulations")).to_be_visible()
    expect(page.get_by_text("No simulations yet")).to_be_visible()
    assert server.api("GET", "/sweeps", "cora", expect=200).json() == []
    assert server.api("GET", "/simulations", "cora", expect=200).json() == []


#: ranges whose preview in the form must be the values the server makes
_RANGES = [
    ({"start": 0.2, "stop": 1, "num": 5, "scale": "linear"}, False),
    ({"start": 1, "stop": 1000, "num": 7, "scale": "log"}, False),
    ({"start": 5, "stop": -5, "num": 4, "scale": "linear"}, False),
    ({"start": 3, "stop": 3, "num": 1, "scale": "linear"}, False),
    ({"start": 1, "stop": 100, "num": 6, "scale": "log"}, True),
    ({"start": 0, "stop": 9, "num": 4, "scale": "linear"}, True),
    # halves to even, as Python rounds
    ({"start": 0.5, "stop": 6.5, "num": 4, "scale": "linear"}, True),
]


@pytest.mark.browser
def test_range_preview_is_what_the_server_makes(server, pages):
    page = pages.new()
    page.goto(server.url + "/")
    got = page.evaluate(
        """async (ranges) => {
            const { rangeValues } = await import('/js/axes.js');
            return ranges.map(([r, integer]) =>
                rangeValues(r.start, r.stop, r.num, r.scale, integer));
        }""",
        _RANGES,
    )
    want = [sweep_axes.axis_values(r, integer) for r, integer in _RANGES]
    assert got == [pytest.approx(w, rel=1e-12) for w in want]
