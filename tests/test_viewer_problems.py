"""The problems panel, annotations and the job list's counts, in real headless Chromium."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, Route, expect

from . import test_viewer
from .test_viewer import DEADLINE_MS, Child, finished_job, row, rows, start

pytestmark = pytest.mark.browser

FAILING = """
import sys
for n in range(1, 401):
    if n == 60:
        print("src/util.c:12:3: warning: unused variable 'x'", flush=True)
    elif n == 200:
        print("src/main.c:7:5: error: expected ';' before 'return'", flush=True)
    elif n == 300:
        print("make: *** [Makefile:3: all] Error 1", flush=True)
    else:
        print(f"step {n}: fine", flush=True)
sys.exit(2)
"""

COMMANDS = """
print("::group::Build")
print("compiling")
print("::endgroup::")
print("::error file=app.py,line=3,title=Broken build::it broke")
print("::add-mask::hunter2-secret")
print("the password is hunter2-secret")
print("done")
"""


# The browser and page fixtures of the viewer tests, shared (one definition).
playwright = test_viewer.playwright
browser = test_viewer.browser
page = test_viewer.page


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Child]:
    child = start(["serve", "--port", "0", "--data-dir", str(tmp_path / "data")])
    yield child
    child.stop()


def test_a_failed_job_opens_at_its_first_error_and_the_panel_steps_through_errors(
    page: Page, serve: Child, tmp_path: Path
) -> None:
    job_id = finished_job(tmp_path / "data", sys.executable, "-c", FAILING)
    page.goto(f"{serve.base}/jobs/{job_id}")
    panel = page.locator("#problems")
    expect(panel).to_be_visible()
    # Errors first, then warnings, each jumping to its line.
    expect(panel.locator(".problem .p-title")).to_have_text(
        ["expected ';' before 'return'", "[Makefile:3: all] Error 1", "unused variable 'x'"]
    )
    expect(page.locator("#problems-summary")).to_have_text("2 errors, 1 warning")
    expect(row(page, 200)).to_have_class(_has("sel"))
    expect(row(page, 200)).to_be_in_viewport()
    assert 400 not in rows(page) or not page.locator('#rows .r[data-s="400"]').is_visible()
    page.locator("#log").focus()
    page.keyboard.press("e")
    expect(row(page, 300)).to_have_class(_has("sel"))
    page.keyboard.press("e")  # wraps around to the first error
    expect(row(page, 200)).to_have_class(_has("sel"))
    page.keyboard.press("Shift+E")
    expect(row(page, 300)).to_have_class(_has("sel"))
    panel.locator(".problem.p-warning").click()
    expect(row(page, 60)).to_have_class(_has("sel"))
    expect(row(page, 60)).to_be_in_viewport()
    page.locator("#problems-close").click()
    expect(panel).to_be_hidden()
    page.locator("#problems-button").click()
    expect(panel).to_be_visible()


def test_a_failed_job_with_200_000_problems_opens_at_its_first_one_with_all_counted(
    page: Page, serve: Child, tmp_path: Path
) -> None:
    many = "for n in range(200_000): print(f'src/f{n}.c:1:2: error: e{n}')\nraise SystemExit(1)"
    job_id = finished_job(tmp_path / "data", sys.executable, "-c", many)
    page.goto(f"{serve.base}/jobs/{job_id}")
    expect(page.locator("#problems-summary")).to_have_text("200000 errors")
    expect(page.locator("#problems .problem .p-title").first).to_have_text("e0")
    expect(row(page, 1)).to_have_class(_has("sel"))
    page.locator("#log").focus()
    page.keyboard.press("Shift+E")  # from the first error back round to the last
    expect(row(page, 200_000)).to_have_class(_has("sel"))


def test_a_succeeded_job_opens_at_its_tail_with_annotations_and_no_endgroup_lines(
    page: Page, serve: Child, tmp_path: Path
) -> None:
    job_id = finished_job(tmp_path / "data", sys.executable, "-c", COMMANDS)
    page.goto(f"{serve.base}/jobs/{job_id}")
    expect(row(page, 7)).to_be_visible()
    expect(page.locator("#problems")).to_be_hidden()
    expect(page.locator("#problems-button")).to_have_text("Problems 1")
    annotation = row(page, 4)
    expect(annotation).to_have_class(_has("an-error"))
    expect(annotation.locator(".an-title")).to_have_text("Broken build")
    expect(annotation.locator(".an-msg")).to_have_text("it broke")
    expect(annotation.locator(".an-where")).to_have_text("app.py:3")
    expect(annotation).not_to_contain_text("::error")
    assert 3 not in rows(page)  # ::endgroup:: is hidden, as on GitHub
    assert 2 in rows(page)
    expect(page.locator("#rows")).not_to_contain_text("hunter2-secret")
    expect(row(page, 6)).to_contain_text("the password is ***")


GATED = """
import os, sys, time
gate = sys.argv[1]
print("starting", flush=True)
while not os.path.exists(gate):
    time.sleep(0.02)
print("src/late.c:1:1: error: found while you watch", flush=True)
while not os.path.exists(os.path.join(os.path.dirname(gate), "gate2")):
    time.sleep(0.02)
"""


def test_the_panel_fills_live_and_the_job_list_shows_counts(page: Page, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    child = start(
        ["run", "--quiet", "--port", "0", "--data-dir", str(tmp_path / "data"), "--",
         sys.executable, "-c", GATED, str(gate)]
    )  # fmt: skip
    try:
        page.goto(f"{child.base}/jobs/{child.job_id}")
        expect(row(page, 1)).to_be_visible()
        expect(page.locator("#problems-button")).to_have_text("Problems")
        gate.write_text("go")
        expect(page.locator("#problems-button")).to_have_text("Problems 1")
        page.locator("#problems-button").click()
        expect(page.locator("#problems .p-title")).to_have_text(["found while you watch"])
        page.goto(f"{child.base}/")
        badge = page.locator(f'.job[data-id="{child.job_id}"] .problem-counts .badge')
        expect(badge).to_have_text(["✖ 1"])
        page.locator("#filter-status").select_option("failed")
        expect(page.locator(f'.job[data-id="{child.job_id}"]')).to_be_hidden()
        page.locator("#filter-status").select_option("running")
        expect(page.locator(f'.job[data-id="{child.job_id}"]')).to_be_visible()
        page.locator("#filter-text").fill("no such job")
        expect(page.locator(f'.job[data-id="{child.job_id}"]')).to_be_hidden()
        page.locator("#filter-text").fill("LATE.c")  # in its command, whatever the case
        expect(page.locator(f'.job[data-id="{child.job_id}"]')).to_be_visible()
    finally:
        (tmp_path / "gate2").write_text("go")
        child.stop()


SKIPPED_BY_THE_TAIL = """
import os, sys, time
gate = sys.argv[1]
print("src/a.c:1:1: error: before the page", flush=True)
while not os.path.exists(gate):
    time.sleep(0.02)
print("src/b.c:2:2: error: between the list and the stream", flush=True)
for n in range(1500):
    print(f"step {n}", flush=True)
while not os.path.exists(gate + "2"):
    time.sleep(0.02)
"""


def test_a_problem_found_between_the_list_and_the_stream_start_is_not_missed(
    page: Page, tmp_path: Path
) -> None:
    # The page loads the problem list, then opens the stream 1,000 lines from the end: a
    # problem found in between, more than 1,000 lines before the end, is in neither unless the
    # list is loaded again once the stream has started.
    gate = tmp_path / "gate"
    child = start(
        ["run", "--quiet", "--port", "0", "--data-dir", str(tmp_path / "data"), "--",
         sys.executable, "-c", SKIPPED_BY_THE_TAIL, str(gate)]
    )  # fmt: skip
    held: list[Route] = []

    def hold(route: Route) -> None:
        held.append(route)  # the stream waits until the test lets it go

    page.route("**/events?*", hold)
    try:
        page.goto(f"{child.base}/jobs/{child.job_id}")
        expect(page.locator("#problems-button")).to_have_text("Problems 1")
        gate.write_text("go")
        page.wait_for_function(
            "async (api) => (await (await fetch(api)).json()).lines >= 1502",
            arg=f"/api/jobs/{child.job_id}",
            timeout=DEADLINE_MS,
        )
        assert len(held) == 1
        held[0].continue_()
        expect(row(page, 1502)).to_be_visible()
        expect(page.locator("#problems-button")).to_have_text("Problems 2")
    finally:
        (tmp_path / "gate2").write_text("go")
        child.stop()


def _has(name: str) -> re.Pattern[str]:
    return re.compile(rf"(^|\s){name}(\s|$)")


# Records every Notification the page constructs and every permission request. HIDE makes the
# page report itself hidden, as when the user is in another tab. UNDECIDED makes the permission
# read "default" (never asked: headless Chromium answers "denied" itself, with no prompt to show)
# until the page asks, and the emulated user then says yes.
NOTIFY_SPY = """
(() => {
  const Real = window.Notification;
  window.__notes = [];
  window.__asks = 0;
  function Spy(title, options) {
    window.__notes.push({ title, body: options?.body ?? null, tag: options?.tag ?? null });
    return new Real(title, options);
  }
  Spy.prototype = Real.prototype;
  let answer = UNDECIDED ? "default" : null;
  Object.defineProperty(Spy, "permission", { get: () => answer ?? Real.permission });
  Spy.requestPermission = (...args) => {
    window.__asks += 1;
    if (!UNDECIDED) return Real.requestPermission(...args);
    answer = "granted";
    return Promise.resolve(answer);
  };
  window.Notification = Spy;
  if (HIDE) {
    Object.defineProperty(document, "hidden", { get: () => true });
    Object.defineProperty(document, "visibilityState", { get: () => "hidden" });
  }
})();
"""

ENDS_ON_GATE = """
import os, sys, time
print("src/main.c:7:5: error: expected ';' before 'return'", flush=True)
while not os.path.exists(sys.argv[1]):
    time.sleep(0.02)
sys.exit(2)
"""


def notify_page(browser: Browser, *, hidden: bool, granted: bool) -> tuple[Page, list[str]]:
    context = browser.new_context(permissions=["notifications"] if granted else [])
    spy = NOTIFY_SPY.replace("HIDE", json.dumps(hidden)).replace(
        "UNDECIDED", json.dumps(not granted)
    )
    context.add_init_script(spy)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.set_default_timeout(DEADLINE_MS)
    return page, errors


def gated_job(tmp_path: Path) -> tuple[Child, Path]:
    gate = tmp_path / "gate"
    child = start(
        ["run", "--quiet", "--port", "0", "--linger", "60", "--name", "nightly", "--",
         sys.executable, "-c", ENDS_ON_GATE, str(gate)]
    )  # fmt: skip
    return child, gate


@pytest.mark.parametrize("hidden", [True, False], ids=["hidden", "visible"])
def test_a_followed_job_that_ends_notifies_only_when_the_page_is_hidden(
    browser: Browser, tmp_path: Path, hidden: bool
) -> None:
    page, errors = notify_page(browser, hidden=hidden, granted=True)
    child, gate = gated_job(tmp_path)
    try:
        page.goto(f"{child.base}/jobs/{child.job_id}")
        assert page.evaluate("Notification.permission") == "granted"
        expect(page.locator("#problems-button")).to_have_text("Problems 1")
        assert page.evaluate("window.__notes") == []
        gate.write_text("go")
        expect(page.locator("#status")).to_have_text("failed (exit 2)")
        notes = page.evaluate("window.__notes")
        if hidden:
            assert notes == [
                {
                    "title": "nightly: failed",
                    "body": "exit code 2 · 1 error",
                    "tag": f"logstream-{child.job_id}",
                }
            ]
        else:
            assert notes == []
    finally:
        page.context.close()
        child.stop()
    assert not errors, f"JavaScript errors on the page: {errors}"


def test_permission_to_notify_is_asked_once_on_a_click(browser: Browser, tmp_path: Path) -> None:
    page, errors = notify_page(browser, hidden=False, granted=False)
    child, gate = gated_job(tmp_path)
    try:
        page.goto(f"{child.base}/jobs/{child.job_id}")
        assert page.evaluate("Notification.permission") == "default"
        expect(row(page, 1)).to_be_visible()
        assert page.evaluate("window.__asks") == 0  # never without a click
        page.locator("#log").click()
        assert page.evaluate("window.__asks") == 1
        page.locator("#log").click()
        assert page.evaluate("window.__asks") == 1
        page.reload()
        expect(row(page, 1)).to_be_visible()
        page.locator("#log").click()
        assert page.evaluate("window.__asks") == 0  # asked once for good, not once per page
    finally:
        gate.write_text("go")
        page.context.close()
        child.stop()
    assert not errors, f"JavaScript errors on the page: {errors}"
