"""Signing in to an HPC login node from the browser, then a run through Slurm.

The supervisor has one sbatch login node "hpc" of the test HPC site
(tests/hpc_site.py: a real sshd that asks for a password, then a one-time
code, and real Slurm). The person chooses sbatch on the simulation page,
runs, is told the run waits for a sign-in, signs in through the dialog
(first with a wrong password), and watches the run go through Slurm.
Screenshots go to tests/artifacts/.
"""

import re

import pytest

from tests import browser_test as bt

try:
    from playwright.sync_api import expect
except ImportError:  # the browser fixture says what is missing
    expect = None

pytestmark = [pytest.mark.browser, pytest.mark.slurm]

# the browser fixtures of tests/browser_test.py
browser = bt.browser
pages = bt.pages

WRONG_PASSWORD = "not-the-password"

# records what the page shows as it changes: the job's status, Slurm's state
# of the job, and the sign-in dialog's progress line and button
_RECORD = """() => {
    window.__seen = [];
    window.__batch = [];
    window.__progress = [];
    const q = (s) => document.querySelector(s);
    const rec = () => {
        const s = q('#status')?.dataset.status;
        const l = window.__seen[window.__seen.length - 1];
        if (s && l !== s) {
            window.__seen.push(s);
        }
        const b = q('#batch');
        const bt = b ? b.textContent : null;
        if (bt && window.__batch[window.__batch.length - 1] !== bt) {
            window.__batch.push(bt);
        }
        const p = q('#signin-progress');
        if (p && p.textContent) {
            const e = p.textContent + (q('#signin-submit').disabled ? ' [disabled]' : '');
            if (window.__progress[window.__progress.length - 1] !== e) {
                window.__progress.push(e);
            }
        }
    };
    rec();
    new MutationObserver(rec).observe(document.body, {
        subtree: true,
        childList: true,
        characterData: true,
        attributes: true,
        attributeFilter: ['data-status', 'data-state', 'disabled'],
    });
}"""


@pytest.fixture
def sbatch_server(sbatch_factory):
    """A supervisor with the login node "hpc": password, then a one-time code."""
    return sbatch_factory("prompt")


@pytest.mark.timeout(300)
def test_sign_in_to_login_node_and_run_through_slurm(sbatch_server, hpc_site, pages):
    sb = sbatch_server
    server = sb.server
    server.add_user("uma")
    s = server.create("uma", "sleep", secs=4)
    page = pages.new()
    bt.sign_in(page, server, "uma", f"/sim/{s['id']}")
    page.evaluate(_RECORD)

    # where runs go: the default first, sbatch named with its login node
    run_on = page.get_by_label("Run on")
    expect(run_on).to_have_value("local")
    expect(run_on.locator("option[value=sbatch]")).to_have_text("sbatch (hpc)")
    run_on.select_option("sbatch")
    line = page.locator("#signin-line")
    expect(line.get_by_role("button", name="Sign in to hpc")).to_be_visible()

    # the run is queued and waits for a sign-in, and the page says so
    page.get_by_role("button", name="Run", exact=True).click()
    expect(bt.status(page)).to_have_attribute("data-status", "queued")
    expect(page.locator("#situation")).to_contain_text(
        re.compile("sign in to hpc", re.IGNORECASE)
    )
    j = server.job("uma", s["id"])
    assert j["driver"] == "sbatch" and j["situation"].startswith("sign in to hpc"), j
    start = page.get_by_role("button", name="Sign in to hpc to start this run")
    expect(start).to_be_visible()
    bt.shot(page, "sbatch-waiting-for-sign-in", narrow=True)

    # a wrong password: the server's words, secrets cleared, dialog still open
    start.click()
    dialog = page.get_by_role("dialog", name="Sign in to hpc")
    expect(dialog).to_be_visible()
    expect(dialog.locator("#signin-host")).to_contain_text("hpc")
    user = dialog.get_by_label("User name")
    password = dialog.get_by_label("Password")
    code = dialog.get_by_label("One-time code")
    expect(user).to_be_focused()
    expect(password).to_have_attribute("type", "password")
    expect(code).to_have_attribute("autocomplete", "off")
    user.fill(hpc_site.user)
    password.fill(WRONG_PASSWORD)
    code.fill(hpc_site.bad_otp())
    submit = dialog.get_by_role("button", name="Sign in", exact=True)
    submit.click()
    error = dialog.locator("#signin-error")
    expect(error).to_contain_text("refused the password", timeout=45000)
    progress = page.evaluate("window.__progress")
    assert "Signing in to hpc… [disabled]" in progress, progress
    expect(dialog).to_be_visible()
    expect(password).to_have_value("")
    expect(code).to_have_value("")
    expect(user).to_have_value(hpc_site.user)
    expect(password).to_be_focused()
    expect(submit).to_be_enabled()
    bt.shot(page, "sbatch-sign-in-refused")
    page.set_viewport_size(bt.PHONE)
    assert page.evaluate("document.documentElement.scrollWidth") <= bt.PHONE["width"]
    page.screenshot(path=bt.ARTIFACTS / "sbatch-sign-in-refused-narrow.png")
    page.set_viewport_size(bt.LAPTOP)
    assert not server.api("GET", "/sbatch/hosts", "uma").json()["hosts"][0]["signed_in"]

    # the right password and a fresh code: signed in, and the run starts
    otp = hpc_site.otp()
    password.fill(hpc_site.password)
    code.fill(otp)
    submit.click()
    expect(dialog).to_have_count(0, timeout=60000)
    expect(page.locator("#notices")).to_contain_text("Signed in to hpc")
    expect(line).to_contain_text("Signed in to hpc")
    expect(start).to_have_count(0)
    expect(bt.status(page)).to_have_attribute(
        "data-status", re.compile("starting|running|completed"), timeout=60000
    )
    expect(bt.status(page)).to_have_attribute(
        "data-status", "completed", timeout=120000
    )
    batch = page.locator("#batch")
    expect(batch).to_have_text(re.compile(r"^Slurm job \d+ · COMPLETED"))
    seen = page.evaluate("window.__seen")
    order = [x for x in seen if x in ("queued", "running", "completed")]
    assert order == ["queued", "running", "completed"], seen
    shown = page.evaluate("window.__batch")
    assert any(re.search(r"· (RUNNING|COMPLETED)", b) for b in shown), shown
    print(f"Slurm states shown: {shown}")
    j = server.job("uma", s["id"])
    assert j["status"] == "completed" and j["batch"]["state"] == "COMPLETED", j
    # signed in: the files on the login node are listed, no sign-in asked
    expect(page.locator("#files-signin-text")).to_have_count(0)
    bt.shot(page, "sbatch-completed", narrow=True)

    # the agent on the login node goes away: the page is told, and the files
    # (which are there) ask for a sign-in, which brings them back
    assert sb.kill_agent()
    expect(line.get_by_role("button", name="Sign in to hpc")).to_be_visible()
    page.get_by_role("button", name="Refresh the file list").click()
    files = page.locator("#files")
    expect(files.locator("#files-signin-text")).to_contain_text("sign in there")
    bt.shot(page, "sbatch-files-need-sign-in")
    files.get_by_role("button", name="Sign in to hpc").click()
    expect(dialog).to_be_visible()
    expect(user).to_have_value(hpc_site.user)
    expect(password).to_be_focused()
    otp2 = hpc_site.otp()
    password.fill(hpc_site.password)
    code.fill(otp2)
    code.press("Enter")
    expect(dialog).to_have_count(0, timeout=60000)
    expect(line).to_contain_text("Signed in to hpc")
    expect(files.get_by_role("link", name="run.out")).to_be_visible()

    # the password and the codes were kept nowhere the page can reach
    kept = page.evaluate(
        """() => JSON.stringify([location.href, {...localStorage}, {...sessionStorage},
            document.cookie, [...document.querySelectorAll('input')].map((i) => i.value)])"""
    )
    for secret in (hpc_site.password, WRONG_PASSWORD, otp, otp2):
        assert secret not in kept, kept
