"""Follow a 10,000 lines/s job in headless Chromium for 10 s; count long tasks (> 50 ms).

Run: .venv/bin/python benchmarks/viewer_follow.py [--rate 10000] [--seconds 10]
Prints one JSON object: long tasks, their total and worst duration, frames, lines shown.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parent.parent
OBSERVE = """
window.__long = [];
new PerformanceObserver((list) => {
  for (const entry of list.getEntries()) window.__long.push(Math.round(entry.duration));
}).observe({ type: "longtask", buffered: true });
window.__frames = 0;
const count = () => { window.__frames++; requestAnimationFrame(count); };
requestAnimationFrame(count);
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rate", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    total = int(args.rate * (args.seconds + 5))
    command = [sys.executable, "-m", "logstream.cli", "run", "--quiet", "--port", "0"]
    command += ["--linger", "5", "--", sys.executable, str(ROOT / "sample_jobs" / "firehose.py")]
    command += [str(total), "--rate", str(args.rate)]
    job = subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, cwd=ROOT)
    assert job.stderr is not None
    line = job.stderr.readline().decode()
    url = re.search(r"(http://\S+)", line)
    assert url, line
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.add_init_script(OBSERVE)
            page.goto(url.group(1))
            page.wait_for_function("() => window.logstream && window.logstream.store.last > 0")
            page.evaluate("() => { window.__long.length = 0; window.__frames = 0; }")
            first = page.evaluate("() => window.logstream.store.last")
            time.sleep(args.seconds)  # the measurement window itself
            result = page.evaluate(
                """() => ({long: window.__long.slice(), frames: window.__frames,
                   last: window.logstream.store.last,
                   rows: document.querySelectorAll('#rows .r').length,
                   following: window.logstream.view.following})"""
            )
            browser.close()
    finally:
        job.kill()
        job.wait()
    long_tasks = result["long"]
    print(
        json.dumps(
            {
                "rate_lines_per_s": args.rate,
                "seconds": args.seconds,
                "long_tasks_over_50ms": len(long_tasks),
                "long_task_total_ms": sum(long_tasks),
                "worst_long_task_ms": max(long_tasks, default=0),
                "frames": result["frames"],
                "fps": round(result["frames"] / args.seconds, 1),
                "lines_received": result["last"] - first,
                "rows_in_dom": result["rows"],
                "still_following": result["following"],
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
