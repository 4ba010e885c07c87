"""The file library in the browser: the Files page and file parameters.

A real supervisor with its test codes and a real local agent
(tests/conftest.py); Debian's Chromium driven by Playwright. The upload goes
through the page's file picker with the browser's upload throttled (DevTools
network conditions) so that its progress events come over seconds; the
connection is cut halfway (DevTools offline) and the page's Resume sends the
rest. The test code ``checksum`` then reads the file in a run. A
MutationObserver records what the progress bar showed; the page is never
reloaded. Screenshots go to tests/artifacts/.
"""

import hashlib
import os
import re

import pytest

from tests import browser_test as bt

try:
    from playwright.sync_api import expect
except ImportError:  # the browser fixture says what is missing
    expect = None

pytestmark = pytest.mark.browser

# the browser fixtures of tests/browser_test.py
browser = bt.browser
pages = bt.pages

FILE_BYTES = 5 * 2**20
#: bytes/s of the throttled upload: about 2.5 s for the file
UPLOAD_BYTES_PER_SEC = 2 * 2**20

# records what the upload's progress bar shows, as it changes
_RECORD = """() => {
    window.__bar = [];
    const bar = document.querySelector('#upload-progress');
    const rec = () => {
        const e = {
            t: performance.now(),
            pct: Number(bar.getAttribute('aria-valuenow')),
            bytes: Number(bar.dataset.bytes || 0),
            state: bar.dataset.state || '',
        };
        const l = window.__bar[window.__bar.length - 1];
        if (!l || l.pct !== e.pct || l.bytes !== e.bytes || l.state !== e.state) {
            window.__bar.push(e);
        }
    };
    rec();
    new MutationObserver(rec).observe(bar, {
        attributes: true,
        attributeFilter: ['aria-valuenow', 'data-bytes', 'data-state'],
    });
}"""


def _network(cdp, offline=False, upload=-1):
    cdp.send(
        "Network.emulateNetworkConditions",
        {
            "offline": offline,
            "latency": 0,
            "downloadThroughput": -1,
            "uploadThroughput": upload,
        },
    )


@pytest.mark.browser
def test_upload_resume_run_and_delete_library_file(server, pages, tmp_path):
    server.add_user("lena")
    data = os.urandom(FILE_BYTES)
    sha = hashlib.sha256(data).hexdigest()
    src = tmp_path / "data.bin"
    src.write_bytes(data)
    page = pages.new()
    bt.sign_in(page, server, "lena")
    page.get_by_role("link", name="Files", exact=True).click()
    expect(page.get_by_role("heading", name="Files", exact=True)).to_be_visible()
    expect(page.get_by_text("No files yet")).to_be_visible()
    expect(page.locator("#library-quota")).to_have_text("0 B of 20 GB used")

    # upload, throttled; the connection drops halfway and Resume sends the rest
    cdp = page.context.new_cdp_session(page)
    cdp.send("Network.enable")
    _network(cdp, upload=UPLOAD_BYTES_PER_SEC)
    page.get_by_label("File", exact=True).set_input_files(src)
    expect(page.get_by_label("Name in your library")).to_have_value("data.bin")
    page.evaluate(_RECORD)
    page.get_by_role("button", name="Upload", exact=True).click()
    bar = page.locator("#upload-progress")
    page.wait_for_function(
        "Number(document.querySelector('#upload-progress')"
        ".getAttribute('aria-valuenow')) >= 40"
    )
    shot_mid = bt.ARTIFACTS / "files-uploading.png"
    page.screenshot(path=shot_mid, full_page=True)
    page.get_by_role("button", name="Stop").click()
    expect(bar).to_have_attribute("data-state", "stopped")
    expect(page.locator("#upload-error")).to_contain_text("The upload was stopped")
    resume = page.get_by_role("button", name="Resume")
    expect(resume).to_be_visible()
    bt.shot(page, "files-upload-stopped")
    with page.expect_response(re.compile(r"/api/library/data\.bin/upload$")) as asked:
        resume.click()
    received = asked.value.json()["received"]
    expect(bar).to_have_attribute("data-state", "done", timeout=30000)
    _network(cdp)
    seen = page.evaluate("window.__bar")
    sending = [e for e in seen if e["state"] == "uploading"]
    first = [e["pct"] for e in sending if e["t"] < _t(seen, "stopped")]
    assert len({p for p in first if 0 < p < 100}) >= 3, f"no progress: {seen}"
    assert first == sorted(first), seen
    # the resume started where the server said the bytes stopped
    later = [e for e in sending if e["t"] > _t(seen, "stopped")]
    start = later[0]["bytes"]
    assert 0 < start < FILE_BYTES, seen
    assert start == received, (received, seen)
    assert len({e["pct"] for e in later}) >= 3, f"resume did not move: {seen}"
    expect(page.locator("#upload-label")).to_have_text("Uploaded data.bin")

    row = page.locator("tr[data-file='data.bin']")
    expect(row.locator(".file-size")).to_have_text("5.0 MB")
    expect(row.locator(".file-size")).to_have_attribute("data-bytes", str(FILE_BYTES))
    expect(row.locator(".file-sha")).to_have_attribute("data-sha256", sha)
    expect(row.locator(".file-sha")).to_have_text(f"{sha[:12]}…")
    expect(page.locator("#library-quota")).to_have_text("5.0 MB of 20 GB used")
    (f,) = server.api("GET", "/library", "lena", expect=200).json()
    assert (f["name"], f["size"], f["sha256"]) == ("data.bin", FILE_BYTES, sha)
    link = row.get_by_role("link", name="data.bin")
    expect(link).to_have_attribute("href", "/api/library/data.bin")
    bt.shot(page, "files-uploaded", narrow=True)

    # a checksum simulation that takes it, through the form
    page.get_by_role("link", name="New simulation").first.click()
    page.get_by_text(re.compile(r"^Test codes")).click()
    page.get_by_role("radio", name=re.compile("^Test: checksum")).check()
    pick = page.get_by_label("Data file")
    expect(pick).to_have_attribute("data-loaded", "true")
    expect(pick.locator("option")).to_have_text(
        ["Choose a file…", "data.bin (5.0 MB)", "release.dat"]
    )
    # the library's files, and apart those the site provides
    expect(pick.locator("optgroup")).to_have_count(2)
    expect(
        pick.locator("optgroup[label='Provided by the site'] option")
    ).to_have_attribute("value", "site/release.dat")
    page.get_by_label("Name", exact=True).fill("sum it")
    page.get_by_role("button", name="Create simulation").click()
    expect(page.locator("[data-param=data] .field-error")).to_have_text(
        "Choose the data file."
    )
    # the form's upload shortcut: a name the patterns refuse, then one they take
    field = page.locator("[data-param=data]")
    (tmp_path / "notes.txt").write_bytes(b"not data")
    (tmp_path / "small.dat").write_bytes(b"0123456789" * 100)
    with page.expect_file_chooser() as fc:
        field.get_by_role("button", name="Upload a file…").click()
    fc.value.set_files(tmp_path / "notes.txt")
    expect(field.locator(".form-error")).to_have_text(
        "Data file (data) must be a file named like *.bin or *.dat."
    )
    with page.expect_file_chooser() as fc:
        field.get_by_role("button", name="Upload a file…").click()
    fc.value.set_files(tmp_path / "small.dat")
    expect(field.locator(".uploader")).to_have_attribute("data-state", "done")
    expect(pick).to_have_value("small.dat")
    expect(page.locator("[data-param=data] .field-error")).to_have_text("")
    expect(pick.locator("option")).to_have_text(
        ["Choose a file…", "data.bin (5.0 MB)", "small.dat (1000 B)", "release.dat"]
    )
    bt.shot(page, "new-file-param")
    pick.select_option("data.bin")
    page.get_by_role("button", name="Create simulation").click()
    expect(page.get_by_role("heading", name="sum it")).to_be_visible()
    page.get_by_role("button", name="Run", exact=True).click()
    expect(bt.status(page)).to_have_attribute("data-status", "completed", timeout=30000)
    expect(page.locator("#log")).to_contain_text(f"{FILE_BYTES} bytes sha256={sha}")
    (done,) = server.api("GET", "/simulations", "lena", expect=200).json()

    # a run holds it: the delete is refused in the server's words
    hold = server.create("lena", "checksum", data="data.bin", secs=30)
    server.run("lena", hold["id"])
    server.wait_status("lena", hold["id"], "running")
    page.get_by_role("link", name="Files", exact=True).click()
    # a rename, in place
    page.get_by_role("button", name="Rename small.dat").click()
    page.get_by_label("New name for small.dat").fill("small2.dat")
    page.get_by_role("button", name="Save", exact=True).click()
    expect(page.locator("tr[data-file='small2.dat']")).to_be_visible()
    expect(page.locator("tr[data-file='small.dat']")).to_have_count(0)
    used = row.locator(".file-used")
    expect(used.get_by_role("link")).to_have_count(2)
    expect(used.get_by_role("link", name="sum it")).to_have_attribute(
        "href", f"#/sim/{done['id']}"
    )
    row.get_by_role("button", name="Delete data.bin").click()
    page.get_by_role("dialog").get_by_role("button", name="Delete").click()
    notice = page.locator("#notices .notice-error")
    expect(notice).to_contain_text(
        f"data.bin not deleted: 'data.bin' cannot be deleted while a run of "
        f"{hold['id']} uses it."
    )
    expect(row).to_be_visible()
    bt.shot(page, "files-in-use")

    # canceled, it lets go
    page.goto(f"{server.url}/#/sim/{hold['id']}")
    page.locator("#cancel").click()
    expect(bt.status(page)).to_have_attribute("data-status", "canceled")
    page.get_by_role("link", name="Files", exact=True).click()
    row.get_by_role("button", name="Delete data.bin").click()
    page.get_by_role("dialog").get_by_role("button", name="Delete").click()
    expect(row).to_have_count(0)
    expect(page.locator("#library-quota")).to_have_text("1000 B of 20 GB used")
    left = server.api("GET", "/library", "lena", expect=200).json()
    assert [f["name"] for f in left] == ["small2.dat"]


def _t(seen, state):
    return next(e["t"] for e in seen if e["state"] == state)
