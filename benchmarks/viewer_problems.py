"""The problems panel of a 1,000,000-line job with 10,000 problems, in headless Chromium.

Run: .venv/bin/python -m benchmarks.viewer_problems [--lines 1000000] [--every 100]

Live: a page follows the job from its first line while it prints the lines, 20,000 a second
(``problems_cost``'s mix: one problem every 100 lines, 200 a second; it fails; 50 s). Counted while
it runs: long tasks (> 50 ms), the worst, frames; then how long after the job's end the panel shows
every problem, and how long ``e`` takes, 20 times, to select the next error and paint. Then
the failed job opened anew: the time until it shows its first error, selected, with the panel
open, and the long tasks of that load. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from playwright.sync_api import Page, sync_playwright

from benchmarks.problems_cost import PRODUCER
from benchmarks.viewer_follow import OBSERVE

# The same lines, written at a steady rate (argv[3] lines/s) in writes of 1,000; the job fails.
FLUSH = """    if len(batch) >= 10000:
        out.write(b"".join(batch))
        batch.clear()
"""
PACED = """    if len(batch) >= 1000:
        out.write(b"".join(batch))
        out.flush()
        batch.clear()
        time.sleep(max(0.0, started + n / rate - time.monotonic()))
"""
assert FLUSH in PRODUCER
PACED_PRODUCER = (
    "import time\nrate = float(__import__('sys').argv[3])\nstarted = time.monotonic()\n"
    + PRODUCER.replace(FLUSH, PACED)
    + "\nsys.exit(1)\n"
)

PRESS_E = """async (times) => {
  const took = [], handler = [];
  const panel = window.logstream.problems;
  for (let n = 0; n < times; n++) {
    await new Promise((done) => requestAnimationFrame(() => setTimeout(done, 0)));
    const before = panel.current;
    const started = performance.now();
    document.dispatchEvent(new KeyboardEvent("keydown", { key: "e", bubbles: true }));
    handler.push(performance.now() - started);
    await new Promise((done) => requestAnimationFrame(() => setTimeout(done, 0)));
    if (panel.current === before) throw new Error("e did not move to the next error");
    took.push(performance.now() - started);
  }
  return [took, handler];
}"""
SHOWN = "() => ['error', 'warning'].reduce((n, s) => n + window.logstream.problems.count(s), 0)"


def long_tasks(page: Page) -> dict[str, float]:
    tasks: list[int] = page.evaluate("() => window.__long.slice()")
    return {"long_tasks": len(tasks), "worst_ms": max(tasks, default=0), "total_ms": sum(tasks)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--every", type=int, default=100)
    parser.add_argument("--rate", type=float, default=20_000, help="lines/s")
    args = parser.parse_args()
    expected = args.lines // args.every
    directory = Path(tempfile.mkdtemp(prefix="logstream-viewer-problems-"))
    script = directory / "producer.py"
    script.write_text(PACED_PRODUCER)
    command = [sys.executable, "-m", "logstream.cli", "run", "--quiet", "--port", "0"]
    command += ["--data-dir", str(directory / "data"), "--linger", "600", "--"]
    command += [sys.executable, str(script), str(args.lines), str(args.every), str(args.rate)]
    job = subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL)
    assert job.stderr is not None
    found = re.search(r"(http://\S+)/jobs/(\S+)", job.stderr.readline().decode())
    assert found, "no URL"
    base, job_id = found.group(1), found.group(2)
    result: dict[str, object] = {"lines": args.lines, "problems": expected, "rate": args.rate}
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path="/usr/bin/chromium", args=["--no-sandbox"]
            )
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.add_init_script(OBSERVE)
            page.goto(f"{base}/jobs/{job_id}")
            while httpx.get(f"{base}/api/jobs/{job_id}").json()["status"] == "running":
                time.sleep(0.05)
            ended = time.perf_counter()
            try:
                page.wait_for_function(f"() => ({SHOWN})() >= {expected}", timeout=60_000)
            except Exception:
                result["stuck"] = page.evaluate(
                    f"() => [({SHOWN})(), window.logstream.store.last, document.title]"
                )
                raise
            result["live"] = {
                "panel_complete_after_end_s": round(time.perf_counter() - ended, 3),
                "frames": page.evaluate("() => window.__frames"),
                **long_tasks(page),
            }
            if not expected:  # (--every above --lines: the cost of following alone)
                return 0
            page.evaluate("() => window.logstream.problems.setOpen(true)")
            presses, handled = page.evaluate(PRESS_E, 20)
            result["e_ms"] = {
                "to_next_frame_median": round(statistics.median(presses), 1),
                "to_next_frame_worst": round(max(presses), 1),
                "handler_median": round(statistics.median(handled), 1),
                "handler_worst": round(max(handled), 1),
            }
            reopened = browser.new_page(viewport={"width": 1280, "height": 900})
            reopened.add_init_script(OBSERVE)
            started = time.perf_counter()
            reopened.goto(f"{base}/jobs/{job_id}")
            reopened.wait_for_function(
                """() => { const l = window.logstream; return l && l.problems.open &&
                   l.problems.current !== null && l.view.selection !== null &&
                   document.querySelector('#rows .r.sel:not(.ld)') !== null; }""",
                timeout=120_000,
            )
            result["reopened"] = {
                "first_error_shown_s": round(time.perf_counter() - started, 3),
                "first_error_line": reopened.evaluate("() => window.logstream.problems.current"),
                "entries_in_panel": reopened.evaluate(
                    "() => document.querySelectorAll('#problem-list li').length"
                ),
                **long_tasks(reopened),
            }
            browser.close()
    finally:
        job.kill()
        job.wait()
        print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
