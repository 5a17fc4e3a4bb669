"""Remote runners over loopback: upload throughput, and runner-read to viewer-received latency.

Run: .venv/bin/python benchmarks/remote.py [--lines 1000000] [--rate 2000] [--seconds 10]

1. Throughput: `logstream serve`, then `logstream run --quiet --server URL -- firehose.py N`,
   timed from start to exit (the runner exits once the server has every line and the end);
   beside it the same job under a local `logstream run --quiet` and the firehose alone.
2. Latency: a job writes one line per write() at RATE lines/s, each stamped with
   ``time.time_ns()`` when written; a viewer follows the job's event stream on the server and
   takes, per line, the time received minus the stamp (write to the pipe, runner read, upload,
   store, stream). Prints p50, p99 and max.

Prints one JSON object. The machine's load is printed with it: these figures are noisy on a
shared machine.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import trio

from logstream.sse import SSEParser

ROOT = Path(__file__).resolve().parent.parent
FIREHOSE = str(ROOT / "sample_jobs" / "firehose.py")
LOGSTREAM = [sys.executable, "-m", "logstream.cli"]
SERVING = re.compile(rb"serving at (http://\S+?)/?\n")
PACED = """
import os, sys, time
rate, seconds, go = float(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
while not os.path.exists(go): time.sleep(0.01)
started = time.monotonic()
n = 0
while time.monotonic() - started < seconds:
    n += 1
    os.write(1, b"%d %d latency probe line\\n" % (n, time.time_ns()))
    delay = started + n / rate - time.monotonic()
    if delay > 0: time.sleep(delay)
"""


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def start_serve(data_dir: Path) -> tuple[subprocess.Popen[bytes], str]:
    serve = subprocess.Popen(
        [*LOGSTREAM, "serve", "--port", "0", "--data-dir", str(data_dir)],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
    )
    assert serve.stderr is not None
    line = serve.stderr.readline()
    match = SERVING.search(line)
    assert match, line
    return serve, match[1].decode()


def timed(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def throughput(lines: int, tmp: Path) -> dict[str, float]:
    firehose = [sys.executable, FIREHOSE, str(lines)]
    alone = timed(firehose)
    local = timed([*LOGSTREAM, "run", "--quiet", "--port", "0", "--data-dir", str(tmp / "local"),
                   "--", *firehose])  # fmt: skip
    serve, base = start_serve(tmp / "server")
    remote_run = [*LOGSTREAM, "run", "--quiet", "--server", base, "--data-dir", str(tmp / "runner")]
    try:
        # What a job of no lines costs (starting Python, imports, creating and ending the job).
        fixed = timed([*remote_run, "--", sys.executable, "-c", "pass"])
        remote = timed([*remote_run, "--", *firehose])
        jobs = httpx.get(f"{base}/api/jobs", timeout=30).json()["jobs"]
        assert jobs[0]["lines"] == lines and jobs[0]["status"] == "succeeded", jobs[0]
    finally:
        serve.terminate()
        serve.wait()
    return {
        "lines": lines,
        "firehose_alone_lines_per_s": round(lines / alone),
        "local_run_lines_per_s": round(lines / local),
        "remote_run_s": round(remote, 2),
        "remote_run_lines_per_s": round(lines / remote),
        "remote_fixed_cost_s": round(fixed, 2),
        "remote_lines_per_s_beyond_fixed_cost": round(lines / max(remote - fixed, 1e-3)),
    }


async def latency(rate: float, seconds: float, tmp: Path) -> dict[str, float]:
    serve, base = start_serve(tmp / "server2")
    go = tmp / "go"
    runner = subprocess.Popen(  # noqa: ASYNC220 (started once, before the measurement)
        [*LOGSTREAM, "run", "--quiet", "--server", base, "--data-dir", str(tmp / "runner2"),
         "--", sys.executable, "-c", PACED, str(rate), str(seconds), str(go)],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    assert runner.stderr is not None
    job_id = runner.stderr.readline().split()[2].decode()
    delays_ms: list[float] = []
    try:
        async with httpx.AsyncClient(timeout=60) as client:
            # The runner creates the job on the server first; nothing tells when.
            while (await client.get(f"{base}/api/jobs/{job_id}")).status_code != 200:  # noqa: ASYNC110
                await trio.sleep(0.05)
            parser = SSEParser()
            async with client.stream("GET", f"{base}/api/jobs/{job_id}/events") as response:
                go.touch()
                async for data in response.aiter_raw():
                    received = time.time_ns()
                    for event in parser.feed(data):
                        if event.id is not None:
                            stamp = int(event.data.split()[1])
                            delays_ms.append((received - stamp) / 1e6)
    finally:
        runner.wait()
        serve.terminate()
        serve.wait()
    delays_ms.sort()

    def pct(p: float) -> float:
        return round(delays_ms[min(len(delays_ms) - 1, int(len(delays_ms) * p))], 2)

    return {
        "rate_lines_per_s": rate,
        "lines": len(delays_ms),
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
        "max_ms": round(delays_ms[-1], 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--rate", type=float, default=2000)
    parser.add_argument("--seconds", type=float, default=10)
    args = parser.parse_args()
    result: dict[str, object] = {"load_at_start": load(), "cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory() as tmp:
        result["throughput"] = throughput(args.lines, Path(tmp))
        result["latency"] = trio.run(latency, args.rate, args.seconds, Path(tmp))
    result["load_at_end"] = load()
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
