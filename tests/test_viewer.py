"""The browser viewer in real headless Chromium, against real servers run as subprocesses.

Sync Playwright cannot share the trio loop a server would run in, so every server here is a
`logstream serve` or `logstream run` child process; its URL comes from its first stderr line.
Nothing sleeps to wait: Playwright's `expect` and `wait_for_function` poll with deadlines.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, Playwright, expect, sync_playwright

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "sample_jobs"
CHROMIUM = "/usr/bin/chromium"
LOGSTREAM = [sys.executable, "-m", "logstream.cli"]
SHOTS = Path(os.environ.get("LOGSTREAM_SHOTS", "/tmp/logstream-shots"))
URL_LINE = re.compile(r"logstream: (?:job (\S+) live at|serving at) (http://\S+?)/?(?:jobs/\S+)?$")
DEADLINE_MS = 15_000

if not Path(CHROMIUM).exists():  # pragma: no cover - scripts/test.sh installs it
    pytest.skip("Chromium is not installed (scripts/test.sh installs it)", allow_module_level=True)


@dataclass
class Child:
    """A logstream child process and the base URL it printed."""

    process: subprocess.Popen[bytes]
    base: str
    job_id: str | None

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    @property
    def port(self) -> int:
        return int(self.base.rsplit(":", 1)[1])


def start(args: list[str], env: dict[str, str] | None = None) -> Child:
    """Start `logstream ARGS` and wait (15 s at most) for its URL line on stderr."""
    process = subprocess.Popen(
        [*LOGSTREAM, *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, **(env or {})},
        cwd=ROOT,
    )
    assert process.stderr is not None
    found: list[re.Match[str]] = []
    seen: list[str] = []
    ready = threading.Event()

    def read() -> None:
        assert process.stderr is not None
        for raw in process.stderr:
            line = raw.decode(errors="replace").rstrip("\n")
            seen.append(line)
            match = URL_LINE.search(line)
            if match and not found:
                found.append(match)
                ready.set()
        ready.set()

    threading.Thread(target=read, daemon=True).start()
    if not ready.wait(15) or not found:
        process.kill()
        raise AssertionError(f"no URL line from logstream {args}: {seen}")
    return Child(process, found[0].group(2).rstrip("/"), found[0].group(1))


def finished_job(data_dir: Path, *command: str, env: dict[str, str] | None = None) -> str:
    """Run COMMAND to its end as a logstream job in DATA_DIR; return the job's ID."""
    child = start(
        ["run", "--quiet", "--port", "0", "--data-dir", str(data_dir), "--", *command], env
    )
    assert child.process.wait(timeout=60) is not None
    assert child.job_id
    return child.job_id


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as running:
        yield running


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
    yield browser
    browser.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1100, "height": 800})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.set_default_timeout(DEADLINE_MS)
    yield page
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def serve(data_dir: Path) -> Iterator[Child]:
    child = start(["serve", "--port", "0", "--data-dir", str(data_dir)])
    yield child
    child.stop()


def rows(page: Page) -> list[int]:
    """The line numbers of the rows in the DOM, in DOM order."""
    numbers: list[int] = page.eval_on_selector_all(
        "#rows .r[data-s]", "rows => rows.map(r => Number(r.dataset.s))"
    )
    return numbers


def row(page: Page, seq: int) -> Any:
    return page.locator(f'#rows .r[data-s="{seq}"]')


def shot(page: Page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"))


# ---- pure modules, run in the browser --------------------------------------------------------

ANSI_CASES = (Path(__file__).parent / "viewer_cases.js").read_text()


def test_ansi_parser_and_group_markers_behave_like_a_terminal(
    page: Page, serve: Child, data_dir: Path
) -> None:
    page.goto(serve.base + "/")
    out = page.evaluate(ANSI_CASES)
    assert out["cr"] == "progress 100%"
    assert out["crShorter"] == "xycdef"
    assert out["erase"] == "erased"
    assert out["osc"] == "alinkb"
    assert out["tabLinear"] == "a\tb"
    assert out["tabCells"] == "Xb      Y"  # a tab moves the cursor, erasing nothing
    assert out["nul"] == "[\u2400]"
    assert out["styles"] == [
        ["red", 1, None, True, False],
        [" ", None, None, False, False],
        ["o", "rgb(255, 135, 0)", None, False, False],
        ["x", "rgb(255, 135, 0)", "rgb(1, 2, 3)", False, False],
        ["i", "rgb(255, 135, 0)", "rgb(1, 2, 3)", False, True],
    ]
    assert out["sgr22"] is True
    assert out["bright"] == [[10, None], [10, 11]]
    assert out["marks"] == [
        ["hell", False],
        ["o", True],
        [" w", False],
        ["o", True],
        ["rld", False],
    ]
    assert out["markers"] == [
        ["start", "gh", "Compile"],
        ["end", "gh", ""],
        ["start", "gl", "Header text"],
        ["end", "gl", ""],
        ["start", "bk", ":hammer: Build"],
        ["start", "bk", "Tests"],
        None,
        None,
        *[None] * 6,
        ["start", "bk", "Failing tests"],
    ]
    assert out["groups"] == [
        ["outer", 1, 6, 0],
        ["inner", 2, 4, 1],
        ["a", 7, 8, 0],
        ["b", 9, None, 0],
    ]
    assert out["range"] == [[120, 140], [7, 7], [3, 9], None]
    assert out["folds"] == {
        "gitlab": [["A", True], ["B", True], ["C", False], ["D", False]],
        "buildkite": [["a", True], ["b", False], ["c", True], ["d", True]],
        # With no +++ header, Buildkite leaves the last --- group unfolded.
        "noExpanded": [["a", True], ["b", True], ["c", False], ["d", True]],
        # `^^^ +++` unfolds the group it is in.
        "expandPrevious": [["a", False], ["b", False], ["c", True]],
        "github": [["g", False]],
    }


# ---- the log page ----------------------------------------------------------------------------

GATED = """
import os, sys, time
gate = sys.argv[1]
def wait(name):
    while not os.path.exists(os.path.join(gate, name)):
        time.sleep(0.02)
phases = int(sys.argv[2]); per = int(sys.argv[3])
n = 0
for phase in range(phases):
    if phase:
        wait(f"go{phase}")
    for _ in range(per):
        n += 1
        print(f"line {n} of phase {phase}", flush=True)
"""


def gated_job(tmp_path: Path, phases: int, per: int) -> tuple[list[str], Path]:
    gate = tmp_path / "gate"
    gate.mkdir()
    script = tmp_path / "gated.py"
    script.write_text(GATED)
    return ["python3", str(script), str(gate), str(phases), str(per)], gate


def test_lines_appear_live_and_the_end_shows_status(page: Page, tmp_path: Path) -> None:
    command, gate = gated_job(tmp_path, 2, 3)
    job = start(["run", "--quiet", "--port", "0", "--linger", "60", "--", *command])
    try:
        page.goto(f"{job.base}/jobs/{job.job_id}")
        expect(row(page, 3)).to_contain_text("line 3 of phase 0")
        expect(page.locator("#status")).to_have_text("running")
        expect(page.locator("#conn")).to_have_attribute("data-state", "live")
        (gate / "go1").touch()
        expect(row(page, 6)).to_contain_text("line 6 of phase 1")
        expect(page.locator("#status")).to_have_text("succeeded")
        expect(page.locator("#conn")).to_have_attribute("data-state", "ended")
        assert rows(page) == [1, 2, 3, 4, 5, 6]
        # The page closed its EventSource on `end`: it does not reconnect.
        assert page.evaluate("() => window.logstream.view.ended") is True
    finally:
        job.stop()


def test_after_the_server_drops_the_connection_every_line_shows_once(
    page: Page, tmp_path: Path, data_dir: Path
) -> None:
    command, gate = gated_job(tmp_path, 3, 20)
    runner = start(["run", "--quiet", "--port", "0", "--data-dir", str(data_dir), "--", *command])
    server = start(["serve", "--port", "0", "--data-dir", str(data_dir)])
    try:
        page.set_viewport_size({"width": 900, "height": 1600})
        page.goto(f"{server.base}/jobs/{runner.job_id}")
        expect(row(page, 20)).to_contain_text("line 20 of phase 0")
        # A real drop: the server dies without a word, lines arrive while it is away.
        server.stop(signal.SIGKILL)
        expect(page.locator("#conn")).not_to_have_attribute("data-state", "live")
        (gate / "go1").touch()
        server = start(["serve", "--port", str(server.port), "--data-dir", str(data_dir)])
        expect(row(page, 40)).to_contain_text("line 40 of phase 1")
        expect(page.locator("#conn")).to_have_attribute("data-state", "live")
        (gate / "go2").touch()
        expect(page.locator("#conn")).to_have_attribute("data-state", "ended")
        expect(row(page, 60)).to_contain_text("line 60 of phase 2")
        assert rows(page) == list(range(1, 61))
        texts = page.eval_on_selector_all("#rows .r .x", "xs => xs.map(x => x.textContent)")
        assert texts == [f"line {n} of phase {(n - 1) // 20}" for n in range(1, 61)]
    finally:
        server.stop()
        runner.stop()


def test_colours_render_and_stderr_is_marked(page: Page, serve: Child, data_dir: Path) -> None:
    job_id = finished_job(data_dir, "python3", str(SAMPLES / "nasty.py"))
    page.emulate_media(color_scheme="light")
    page.goto(f"{serve.base}/jobs/{job_id}")
    # stdout and stderr lines interleave in reading order: find lines by text, not number.
    line = page.locator("#rows .r", has_text="bold red 256 orange 24-bit")
    expect(line).to_have_count(1)
    styles = line.locator(".x span").evaluate_all(
        "spans => spans.map(s => [s.textContent, getComputedStyle(s).color,"
        " getComputedStyle(s).fontWeight])"
    )
    assert styles[0] == ["bold red", "rgb(207, 34, 46)", "700"]
    assert ["256 orange", "rgb(255, 135, 0)", "400"] in styles
    assert ["24-bit", "rgb(0, 128, 255)", "400"] in styles
    expect(page.locator("#rows .r .x", has_text="progress")).to_have_text("progress 100%")
    expect(page.locator("#rows .r .x", has_text="erased")).to_have_text("erased")
    stderr = page.locator("#rows .r", has_text="a line on stderr")
    expect(stderr).to_have_class(re.compile(r"\be\b"))
    expect(page.locator("#rows .r.e")).to_have_count(1)
    # stderr is not an error: no red background, a quiet grey mark in the gutter.
    assert stderr.evaluate("r => getComputedStyle(r).backgroundColor") == "rgba(0, 0, 0, 0)"
    mark = stderr.locator(".n").evaluate("n => getComputedStyle(n).borderLeftColor")
    assert mark == "rgb(175, 184, 193)"
    shot(page, "nasty-light")


def test_html_in_log_lines_is_shown_as_text_and_never_runs(
    page: Page, serve: Child, data_dir: Path
) -> None:
    job_id = finished_job(data_dir, "python3", str(SAMPLES / "nasty.py"))
    dialogs: list[str] = []

    def refuse(dialog: Any) -> None:
        dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", refuse)
    response = page.goto(f"{serve.base}/jobs/{job_id}")
    assert response is not None
    csp = response.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    line = page.locator("#rows .r .x", has_text="<img src=x")
    expect(line).to_have_text(
        "<img src=x onerror=alert(1)> <script>alert('xss')</script> &amp; &lt;"
    )
    assert page.locator("#rows img, #rows script").count() == 0
    assert dialogs == []


def test_permalinks_highlight_a_range_and_survive_a_reload(
    page: Page, serve: Child, data_dir: Path
) -> None:
    job_id = finished_job(data_dir, "python3", str(SAMPLES / "firehose.py"), "3000")
    page.goto(f"{serve.base}/jobs/{job_id}#L1200-L1210")
    for seq in (1200, 1205, 1210):
        expect(row(page, seq)).to_have_class(re.compile(r"\bsel\b"))
    expect(row(page, 1211)).not_to_have_class(re.compile(r"\bsel\b"))
    expect(row(page, 1200)).to_be_in_viewport()
    page.reload()
    expect(row(page, 1200)).to_have_class(re.compile(r"\bsel\b"))
    expect(row(page, 1200)).to_be_in_viewport()
    # Clicking a line number links to it; shift-click extends to a range.
    row(page, 1203).locator(".n").click()
    page.wait_for_function("() => location.hash === '#L1203'")
    row(page, 1206).locator(".n").click(modifiers=["Shift"])
    page.wait_for_function("() => location.hash === '#L1203-L1206'")
    expect(page.locator("#selection-what")).to_have_text("Lines 1203\u20131206")


def test_search_counts_matches_and_moves_between_them(
    page: Page, serve: Child, data_dir: Path
) -> None:
    job_id = finished_job(data_dir, "python3", str(SAMPLES / "firehose.py"), "3000")
    page.goto(f"{serve.base}/jobs/{job_id}")
    expect(row(page, 3000)).to_be_visible()
    page.keyboard.press("/")
    page.keyboard.type("line 77")  # lines 77 and 770-779
    expect(page.locator("#search-count")).to_have_text(re.compile(r"^\d+ / 11$"))
    page.locator("#search").press("Enter")
    count = page.locator("#search-count").inner_text()
    current = int(count.split(" / ")[0])
    expected = [77, *range(770, 780)][current - 1]
    expect(row(page, expected)).to_have_class(re.compile(r"\bcur\b"))
    expect(row(page, expected)).to_be_in_viewport()
    expect(row(page, expected).locator("mark")).to_have_text("line 77")
    page.locator("#search").press("Shift+Enter")
    expect(page.locator("#search-count")).to_have_text(f"{current - 1 or 11} / 11")
    page.locator("#search").fill("no such text")
    expect(page.locator("#search-count")).to_have_text("no matches")


FOLDING = r"""
import sys
print("::group::GitHub step")
for n in range(3):
    print(f"inside github {n}")
print("::endgroup::")
print("\x1b[0Ksection_start:1700000000:gl_section\r\x1b[0KGitLab section")
print("inside gitlab")
print("\x1b[0Ksection_end:1700000042:gl_section\r\x1b[0K")
print("--- Buildkite step")
print("inside buildkite")
print("+++ Buildkite tests")
print("inside buildkite tests")
"""


def test_groups_of_three_ci_dialects_fold_and_show_durations(
    page: Page, serve: Child, data_dir: Path, tmp_path: Path
) -> None:
    script = tmp_path / "folding.py"
    script.write_text(FOLDING)
    job_id = finished_job(data_dir, "python3", str(script))
    page.goto(f"{serve.base}/jobs/{job_id}")
    headers = page.locator("#rows .r.gh")
    expect(headers).to_have_count(4)
    expect(headers.locator(".gn")).to_have_text(
        ["GitHub step", "GitLab section", "Buildkite step", "Buildkite tests"]
    )
    # GitLab sections carry their own timestamps: 42 s.
    expect(row(page, 6).locator(".gd")).to_have_text("42s")
    # Buildkite's `---` starts folded (the log has a `+++`), its `+++` unfolded.
    expect(row(page, 9).locator(".fold")).to_have_attribute("aria-expanded", "false")
    expect(row(page, 9).locator(".gd")).to_have_text(re.compile(r"(^|· )1 line$"))
    expect(row(page, 10)).to_have_count(0)
    expect(row(page, 12)).to_be_visible()
    row(page, 1).locator(".fold").click()
    expect(row(page, 1).locator(".fold")).to_have_attribute("aria-expanded", "false")
    expect(row(page, 2)).to_have_count(0)
    expect(row(page, 5)).to_have_count(0)
    expect(row(page, 1).locator(".gd")).to_contain_text("4 lines")
    row(page, 9).locator(".fold").click()
    expect(row(page, 10)).to_contain_text("inside buildkite")
    row(page, 1).locator(".fold").click()
    expect(row(page, 3)).to_contain_text("inside github 1")
    # Keyboard: z folds all, Z unfolds all.
    page.locator("#log").focus()
    page.keyboard.press("z")
    assert_rows = page.wait_for_function(
        "() => [...document.querySelectorAll('#rows .r')].map(r => +r.dataset.s).join() "
        "=== '1,6,9,11'"
    )
    assert assert_rows
    page.keyboard.press("Shift+Z")
    expect(row(page, 12)).to_be_visible()


STAGED = r"""
import os, sys, time
gate = sys.argv[1]
def wait(name):
    while not os.path.exists(os.path.join(gate, name)):
        time.sleep(0.02)
def say(*lines):
    for line in lines:
        print(line, flush=True)
say("\x1b[0Ksection_start:1700000000:deps[collapsed=true]\r\x1b[0KInstall deps", "installing")
wait("go1")
say("\x1b[0Ksection_end:1700000003:deps\r\x1b[0K", "--- Build", "compiling")
wait("go2")
say("--- Test", "testing")
"""


def test_groups_asked_to_start_folded_fold_once_they_end(
    page: Page, tmp_path: Path, data_dir: Path
) -> None:
    gate = tmp_path / "gate"
    gate.mkdir()
    script = tmp_path / "staged.py"
    script.write_text(STAGED)
    job = start(
        ["run", "--quiet", "--port", "0", "--linger", "60", "--data-dir", str(data_dir), "--",
         "python3", str(script), str(gate)]
    )  # fmt: skip
    try:
        page.goto(f"{job.base}/jobs/{job.job_id}")
        # A `[collapsed=true]` section still running stays open: its lines are being followed.
        expect(row(page, 2).locator(".x")).to_have_text("installing")
        expect(row(page, 1).locator(".fold")).to_have_attribute("aria-expanded", "true")
        (gate / "go1").touch()
        # Ended, it folds; the Buildkite `---` group now running stays open.
        expect(row(page, 1).locator(".fold")).to_have_attribute("aria-expanded", "false")
        expect(row(page, 2)).to_have_count(0)
        expect(row(page, 5)).to_contain_text("compiling")
        (gate / "go2").touch()
        expect(page.locator("#conn")).to_have_attribute("data-state", "ended")
        # `---` groups fold, except the last when no `+++` group exists (Buildkite's rule).
        expect(row(page, 4).locator(".fold")).to_have_attribute("aria-expanded", "false")
        expect(row(page, 5)).to_have_count(0)
        expect(row(page, 7)).to_contain_text("testing")
        expect(row(page, 6).locator(".fold")).to_have_attribute("aria-expanded", "true")
        # A permalink into a folded group shows its line; `j` skips the lines of folded groups.
        page.goto(f"{job.base}/jobs/{job.job_id}#L5")
        expect(row(page, 5)).to_have_class(re.compile(r"\bsel\b"))
        expect(row(page, 4).locator(".fold")).to_have_attribute("aria-expanded", "true")
        expect(row(page, 1).locator(".fold")).to_have_attribute("aria-expanded", "false")
        page.keyboard.press("Escape")
        page.wait_for_function("() => location.hash === ''")
        row(page, 1).locator(".n").click()
        page.wait_for_function("() => location.hash === '#L1'")
        page.keyboard.press("j")
        page.wait_for_function("() => location.hash === '#L4'")
    finally:
        job.stop()


def test_keyboard_moves_the_selection_jumps_searches_and_shows_help(
    page: Page, serve: Child, data_dir: Path
) -> None:
    job_id = finished_job(data_dir, "python3", str(SAMPLES / "firehose.py"), "3000")
    page.goto(f"{serve.base}/jobs/{job_id}")
    expect(row(page, 3000)).to_be_in_viewport()
    page.keyboard.press("g")
    expect(row(page, 1)).to_be_in_viewport()
    expect(page.locator("#follow-toggle")).to_have_attribute("aria-pressed", "false")
    # With nothing selected, `j` selects the top line; then each `j`/`k` moves one line, and
    # the view scrolls to keep the selection in sight.
    page.keyboard.press("j")
    page.wait_for_function("() => location.hash === '#L1'")
    for _ in range(59):
        page.keyboard.press("j")
    page.wait_for_function("() => location.hash === '#L60'")
    expect(row(page, 60)).to_have_class(re.compile(r"\bsel\b"))
    expect(row(page, 60)).to_be_in_viewport()
    for _ in range(5):
        page.keyboard.press("k")
    page.wait_for_function("() => location.hash === '#L55'")
    expect(page.locator("#selection-what")).to_have_text("Line 55")
    expect(page.locator("#rows .r.sel")).to_have_count(1)
    page.keyboard.press("Escape")
    page.wait_for_function("() => location.hash === ''")
    expect(page.locator("#selection")).to_be_hidden()
    # `G`: the last line, following again.
    page.keyboard.press("Shift+G")
    expect(row(page, 3000)).to_be_in_viewport()
    expect(page.locator("#follow-toggle")).to_have_attribute("aria-pressed", "true")
    # `/` focuses the search box (the key is not typed into it); `Esc` clears it and leaves.
    page.keyboard.press("/")
    expect(page.locator("#search")).to_be_focused()
    expect(page.locator("#search")).to_have_value("")
    page.keyboard.type("line 2999")
    expect(page.locator("#search-count")).to_have_text("1 / 1")
    page.keyboard.press("Escape")
    expect(page.locator("#search")).to_have_value("")
    expect(page.locator("#log")).to_be_focused()
    # `?` opens the list of keys; keys do nothing else while it is open; `Esc` closes it.
    page.keyboard.press("?")
    expect(page.locator("#help")).to_be_visible()
    expect(page.locator("#help")).to_contain_text("select the next / previous line")
    page.keyboard.press("g")
    page.keyboard.press("Escape")
    expect(page.locator("#help")).to_be_hidden()
    expect(page.locator("#follow-toggle")).to_have_attribute("aria-pressed", "true")
    expect(row(page, 3000)).to_be_in_viewport()


LONG_LINE = " ".join(f"word{n}" for n in range(150))


def test_wrap_toggles_between_wrapping_and_scrolling_long_lines(
    page: Page, serve: Child, data_dir: Path
) -> None:
    job_id = finished_job(data_dir, "python3", "-c", f"print('short'); print({LONG_LINE!r})")
    page.goto(f"{serve.base}/jobs/{job_id}")
    expect(row(page, 2)).to_contain_text("word149")
    wrapped = """() => {
        const log = document.getElementById("log");
        const long = document.querySelector('#rows .r[data-s="2"]');
        const short = document.querySelector('#rows .r[data-s="1"]');
        return {
            space: getComputedStyle(long.querySelector(".x")).whiteSpace,
            tall: long.offsetHeight / short.offsetHeight,
            scrolls: log.scrollWidth > log.clientWidth,
        };
    }"""
    # Not wrapped (the default at 1100 px): one row high, the log scrolls sideways.
    expect(page.locator("#wrap")).to_have_attribute("aria-pressed", "false")
    assert page.evaluate(wrapped) == {"space": "pre", "tall": 1, "scrolls": True}
    page.keyboard.press("w")
    expect(page.locator("#log")).to_have_class(re.compile(r"\bwrap\b"))
    page.wait_for_function(f"() => ({wrapped})().tall >= 3")
    state = page.evaluate(wrapped)
    assert state["space"] == "pre-wrap" and not state["scrolls"], state
    # Remembered across a reload.
    page.reload()
    expect(page.locator("#wrap")).to_have_attribute("aria-pressed", "true")
    expect(row(page, 2)).to_contain_text("word149")
    page.wait_for_function(f"() => ({wrapped})().tall >= 3")
    page.locator("#wrap").click()
    expect(page.locator("#wrap")).to_have_attribute("aria-pressed", "false")
    page.wait_for_function(f"() => ({wrapped})().tall === 1")
    assert page.evaluate(wrapped)["scrolls"] is True


def test_copy_buttons_and_c_put_the_plain_text_on_the_clipboard(
    page: Page, serve: Child, data_dir: Path
) -> None:
    job_id = finished_job(
        data_dir, "python3", "-c",
        r"print('first'); print('\x1b[1;31mred\x1b[0m and\tplain'); print('third')",
    )  # fmt: skip
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=serve.base)
    page.goto(f"{serve.base}/jobs/{job_id}")
    expect(row(page, 2).locator(".x")).to_have_text("red and    plain")
    clipboard = "() => navigator.clipboard.readText()"
    # The one copy button moves into the hovered row's gutter.
    row(page, 2).hover()
    button = row(page, 2).locator(".cp")
    expect(button).to_be_visible()
    button.click()
    expect(page.locator("#flash")).to_have_text("copied line")
    # The line as text: escapes gone, the tab kept (what a paste into an editor should get).
    assert page.evaluate(clipboard) == "red and\tplain"
    expect(page.locator("#selection")).to_be_hidden()  # copying does not select
    # `c` copies the selected range.
    row(page, 1).locator(".n").click()
    row(page, 3).locator(".n").click(modifiers=["Shift"])
    page.wait_for_function("() => location.hash === '#L1-L3'")
    page.keyboard.press("c")
    expect(page.locator("#flash")).to_have_text("copied 3 lines")
    assert page.evaluate(clipboard) == "first\nred and\tplain\nthird"


def test_a_million_line_job_opens_at_its_tail_quickly(
    page: Page, serve: Child, data_dir: Path, record_property: Any
) -> None:
    job_id = finished_job(data_dir, "python3", str(SAMPLES / "firehose.py"), "1000000")
    started = time.perf_counter()
    page.goto(f"{serve.base}/jobs/{job_id}")
    expect(row(page, 1_000_000)).to_contain_text("line 1000000 of the firehose")
    expect(row(page, 1_000_000)).to_be_in_viewport()
    seconds = time.perf_counter() - started
    record_property("million_line_tail_s", round(seconds, 3))
    print(f"\n1M-line job: last line visible {seconds * 1000:.0f} ms after navigation")
    _write_figure("million_line_tail_ms", round(seconds * 1000))
    assert seconds < 10, "sanity deadline"
    # Only what is near the viewport is in the DOM.
    assert len(rows(page)) <= 400
    # Jump to the very first line: loaded on demand.
    page.locator("#log").focus()
    page.keyboard.press("g")
    expect(row(page, 1)).to_contain_text("line 1 of the firehose")
    expect(row(page, 1)).to_be_in_viewport()
    assert len(rows(page)) <= 400


def _write_figure(name: str, value: float) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / "figures.json"
    figures = json.loads(path.read_text()) if path.exists() else {}
    figures[name] = value
    path.write_text(json.dumps(figures, indent=2))


# ---- the job list ----------------------------------------------------------------------------


def test_job_list_updates_live_newest_first(page: Page, serve: Child, data_dir: Path) -> None:
    first = finished_job(data_dir, "python3", str(SAMPLES / "failing_tests.py"))
    page.goto(serve.base + "/")
    expect(page.locator(f'.job[data-id="{first}"] .status')).to_have_text("failed")
    expect(page.locator(f'.job[data-id="{first}"] .exit')).to_have_text("exit 1")
    second = finished_job(data_dir, "python3", "-c", "print('hi')")
    expect(page.locator(".job").first).to_have_attribute("data-id", second)
    expect(page.locator(f'.job[data-id="{second}"] .status')).to_have_text("succeeded")
    expect(page.locator(".job")).to_have_count(2)
    shot(page, "list-light")


def test_token_in_the_page_url_is_hidden_after_load(page: Page, data_dir: Path) -> None:
    child = start(["serve", "--port", "0", "--data-dir", str(data_dir), "--token", "s3cret"])
    try:
        page.goto(child.base + "/?token=s3cret")
        expect(page.locator("#conn")).to_have_attribute("data-state", "live")
        assert "token" not in page.url
        expect(page.locator("#no-jobs")).to_be_visible()
    finally:
        child.stop()


def test_log_page_is_usable_at_320_px_in_both_themes(
    browser: Browser, serve: Child, data_dir: Path
) -> None:
    job_id = finished_job(data_dir, "python3", str(SAMPLES / "build.py"), env={"SAMPLE_FAST": "1"})
    for scheme in ("light", "dark"):
        context = browser.new_context(viewport={"width": 320, "height": 640}, color_scheme=scheme)
        page = context.new_page()
        page.goto(f"{serve.base}/jobs/{job_id}")
        expect(page.locator("#rows .r", has_text="build succeeded")).to_be_visible()
        width = page.evaluate("() => document.documentElement.scrollWidth")
        assert width <= 320
        background = page.evaluate("() => getComputedStyle(document.body).backgroundColor")
        assert (background == "rgb(13, 17, 23)") == (scheme == "dark")
        shot(page, f"build-320-{scheme}")
        context.close()


def test_defined_jobs_get_run_buttons_that_post_their_name(page: Page, serve: Child) -> None:
    # Task-runner mode is served by another part of the server; its API is mocked here.
    posted: list[Any] = []
    job = {
        "id": "20260101T000000000000Z-beef", "name": "build", "command": ["make"],
        "status": "running", "exit_code": None, "started_at": "2026-01-01T00:00:00Z",
        "finished_at": None, "lines": 0, "url": "/jobs/20260101T000000000000Z-beef",
    }  # fmt: skip

    def api_jobs(route: Any) -> None:
        if route.request.method == "POST":
            posted.append(route.request.post_data_json)
            route.fulfill(status=201, json=job)
        else:
            defined = [{"name": "build", "command": ["make"], "running": 0, "max_running": 1}]
            route.fulfill(json={"jobs": [], "defined": defined})

    page.route("**/api/jobs", api_jobs)
    page.goto(serve.base + "/")
    # The stream's snapshot replaces the list: click only after it came.
    expect(page.locator("#jobs")).to_have_attribute("data-snapshot", "received")
    page.get_by_role("button", name="Run").click()
    expect(page.locator(f'.job[data-id="{job["id"]}"] .status')).to_have_text("running")
    assert posted == [{"name": "build"}]
    expect(page.locator(f'.job[data-id="{job["id"]}"] .cancel')).to_be_visible()


def test_a_remote_jobs_list_row_and_page_show_who_ran_it(
    page: Page, serve: Child, tmp_path: Path
) -> None:
    env = {
        "GITHUB_ACTIONS": "true",
        "GITHUB_SERVER_URL": "https://github.com",
        "GITHUB_REPOSITORY": "acme/rocket",
        "GITHUB_RUN_ID": "42",
        "GITHUB_SHA": "0123456789abcdef",
        "GITHUB_REF_NAME": "main",
        "GITHUB_WORKFLOW": "CI",
        "GITHUB_JOB": "test",
    }
    runner = start(
        [
            *("run", "--quiet", "--server", serve.base, "--data-dir", str(tmp_path / "runner")),
            *("--", "python3", "-c", "print('from a CI runner')"),
        ],
        env,
    )
    assert runner.process.wait(timeout=60) == 0
    page.goto(serve.base + "/")
    ci = page.locator(f'.job[data-id="{runner.job_id}"] .ci')
    expect(ci).to_contain_text("acme/rocket · main · 01234567 · CI / test · on ")
    expect(ci.get_by_role("link", name="CI / test")).to_have_attribute(
        "href", "https://github.com/acme/rocket/actions/runs/42"
    )
    page.goto(f"{serve.base}/jobs/{runner.job_id}")
    expect(page.locator("#rows .r", has_text="from a CI runner")).to_be_visible()
    expect(page.locator("#ci").get_by_role("link", name="01234567")).to_have_attribute(
        "href", "https://github.com/acme/rocket/commit/0123456789abcdef"
    )
    shot(page, "remote-job")


def test_job_list_has_headers_and_shows_a_command_once_on_one_line(
    page: Page, serve: Child, data_dir: Path
) -> None:
    long_arg = "x" * 400
    unnamed = finished_job(data_dir, "python3", "-c", "print('hi')", long_arg)
    child = start(
        ["run", "--quiet", "--port", "0", "--data-dir", str(data_dir), "--name", "tests", "--",
         "python3", "-c", "pass"]
    )  # fmt: skip
    assert child.process.wait(timeout=60) == 0
    named = child.job_id
    page.goto(serve.base + "/")
    expect(page.locator("#jobs-head")).to_be_visible()
    expect(page.locator("#jobs-head span")).to_have_text(
        ["Status", "Problems", "Job", "Command", "Started", "Duration", "Exit", ""]
    )
    unnamed_row = page.locator(f'.job[data-id="{unnamed}"]')
    expect(unnamed_row.locator(".job-name")).to_have_text(
        f"python3 -c 'print('\"'\"'hi'\"'\"')' {long_arg}"[:200]
    )
    expect(unnamed_row.locator(".command")).to_have_text("")  # not a second time
    assert long_arg in (unnamed_row.locator(".command").get_attribute("title") or "")
    named_row = page.locator(f'.job[data-id="{named}"]')
    expect(named_row.locator(".job-name")).to_have_text("tests")
    expect(named_row.locator(".command")).to_have_text("python3 -c pass")
    # One line each, cut with an ellipsis; the whole text is in the tooltip.
    name = unnamed_row.locator(".job-name")
    line_height = float(name.evaluate("n => parseFloat(getComputedStyle(n).lineHeight)"))
    assert name.evaluate("n => n.getBoundingClientRect().height") <= line_height + 1
    assert name.evaluate("n => n.scrollWidth > n.clientWidth")
    assert name.evaluate("n => getComputedStyle(n).textOverflow") == "ellipsis"
    assert long_arg in (name.get_attribute("title") or "")
    shot(page, "list-headers")


def test_a_wrong_job_or_a_trailing_slash_in_the_browser_gives_a_page_with_a_way_back(
    page: Page, serve: Child, data_dir: Path
) -> None:
    job_id = finished_job(data_dir, "python3", "-c", "print('the log line')")
    response = page.goto(f"{serve.base}/jobs/no-such-job")
    assert response is not None and response.status == 404
    expect(page.locator("h1")).to_have_text("Not found")
    page.get_by_role("link", name="All jobs").click()
    expect(page).to_have_url(serve.base + "/")
    expect(page.locator(f'.job[data-id="{job_id}"]')).to_be_visible()
    page.goto(f"{serve.base}/jobs/{job_id}/")
    expect(page).to_have_url(f"{serve.base}/jobs/{job_id}")
    expect(page.locator("#rows .r", has_text="the log line")).to_be_visible()


def test_the_job_page_cancels_a_cancellable_job_and_downloads_the_log(
    page: Page, tmp_path: Path, data_dir: Path
) -> None:
    jobs_file = tmp_path / "jobs.toml"
    jobs_file.write_text('[jobs.sleeper]\ncommand = "echo started; exec sleep 300"\n')
    child = start(["serve", "--port", "0", "--data-dir", str(data_dir), "--jobs", str(jobs_file)])
    try:
        job = httpx.post(f"{child.base}/api/jobs", json={"name": "sleeper"}).json()
        page.goto(f"{child.base}/jobs/{job['id']}")
        expect(page.locator("#rows .r", has_text="started")).to_be_visible()
        cancel = page.locator("#cancel")
        expect(cancel).to_be_visible()
        cancel.click()
        expect(page.locator("#status")).to_have_class(re.compile(r"st-cancelled"))
        expect(cancel).to_be_hidden()
        with page.expect_download() as download_info:
            page.locator("#download").click()
        download = download_info.value
        assert download.suggested_filename == f"{job['id']}.log"
        assert Path(download.path()).read_text().startswith("started\n")
        # A job this server does not run (a `logstream run`) has no Cancel button.
        other = finished_job(data_dir, "python3", "-c", "print('done')")
        page.goto(f"{child.base}/jobs/{other}")
        expect(page.locator("#rows .r", has_text="done")).to_be_visible()
        expect(page.locator("#cancel")).to_be_hidden()
        expect(page.locator("#download")).to_have_text("Download")
    finally:
        child.stop()
