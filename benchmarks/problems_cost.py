"""What problem detection costs on the ingest path: ``python -m benchmarks.problems_cost``.

A job prints 1,000,000 lines, 10,000 of them problems (one in a hundred: compiler errors and
warnings, pytest failures, make, npm, tracebacks, workflow commands), the rest like
``firehose.py``. It runs in process with logstream's own ``JobRunner`` and ``LiveLog`` (pipes,
64 KiB reads, the line splitter, the ring, the disk store: ``benchmarks/ingest_nodisk.py
--disk``), with the detector and with a detector that finds nothing, in turns, so all see the
same machine. Printed: one JSON line per run, then the medians and the cost of
detection as a share of ingest CPU and of throughput. Also timed: the detector alone on the same
lines, fed in blocks as the runner feeds them (each with its joined text, as the runner has it).

Three modes, taking turns: without detection, with the detector process (the default: the
runner's CPU, and the child's separately), and in process (``JobSpec.detect_in_process``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import trio

from benchmarks.ingest_nodisk import ingest
from logstream.lines import LineSplitter
from logstream.problems import Detector, Problem

PRODUCER = r"""
import sys
problems = [
    "src/main.c:7:5: error: expected ';' before 'return'",
    "src/util.c:12:3: warning: unused variable 'x' [-Wunused-variable]",
    "FAILED tests/test_api.py::test_login - AssertionError: assert 401 == 200",
    "make: *** [Makefile:12: all] Error 2",
    "npm ERR! code ELIFECYCLE",
    "::error file=app.py,line=3,title=Lint::missing docstring",
    "src/app/config.py:14: error: Incompatible types in assignment  [assignment]",
    "--- FAIL: TestAdd (0.00s)",
]
total, every = int(sys.argv[1]), int(sys.argv[2])
out = sys.stdout.buffer
batch = []
for n in range(1, total + 1):
    if n % every == 0:
        k = n // every
        if k % 9 == 8:
            batch.append(b"Traceback (most recent call last):\n")
            batch.append(b'  File "app.py", line 3, in <module>\n')
            batch.append(b"ValueError: bad value %d\n" % n)
        else:
            batch.append(problems[k % 8].encode() + b"\n")
    else:
        batch.append(b"line %d of the firehose\n" % n)
    if len(batch) >= 10000:
        out.write(b"".join(batch))
        batch.clear()
out.write(b"".join(batch))
"""


class NullDetector(Detector):
    """Finds nothing, at no cost: the ingest path without detection."""

    def feed(
        self,
        first_seq: int,
        lines: Sequence[str],
        *,
        stderr: bool = False,
        joined: str | None = None,
    ) -> list[Problem]:
        return []


def detector_alone(script: Path, lines: int, every: int) -> dict[str, float]:
    data = subprocess.run(
        [sys.executable, str(script), str(lines), str(every)], capture_output=True, check=True
    ).stdout
    splitter = LineSplitter()
    blocks = [splitter.feed(data[i : i + 65536]) for i in range(0, len(data), 65536)]
    joined = ["\n".join(block) for block in blocks]  # the runner joins each block anyway
    detector = Detector()
    seq, found = 1, 0
    started = time.process_time()
    for block, text in zip(blocks, joined, strict=True):
        found += len(detector.feed(seq, block, joined=text))
        seq += len(block)
    return {"lines": seq - 1, "problems": found, "cpu_s": time.process_time() - started}


MODES = {
    "without": "ingest without detection",
    "process": "detection in the detector process (what logstream runs)",
    "in_process": "detection on the runner's event loop (JobSpec.detect_in_process)",
}


async def one_run(command: list[str], job_dir: Path, mode: str) -> dict[str, float]:
    if mode == "without":
        return await ingest(command, True, job_dir, NullDetector())
    return await ingest(command, True, job_dir, detect_elsewhere=mode == "process")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--every", type=int, default=100, help="one problem every N lines")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument(
        "--producer",
        choices=("cat", "python"),
        default="cat",
        help="cat: the job is `cat` of the lines written beforehand (the runner is the limit); "
        "python: a Python script writes them as it runs (and takes a core of its own)",
    )
    args = parser.parse_args()
    results: dict[str, list[dict[str, float]]] = {mode: [] for mode in MODES}
    with tempfile.TemporaryDirectory(prefix="logstream-problems-") as directory:
        script = Path(directory) / "producer.py"
        script.write_text(PRODUCER)
        command = [sys.executable, str(script), str(args.lines), str(args.every)]
        if args.producer == "cat":  # the lines written beforehand: the runner is the limit
            output = Path(directory) / "output.log"
            with output.open("wb") as file:
                subprocess.run(command, stdout=file, check=True)
            command = ["cat", str(output)]
        for run in range(args.runs):
            order = list(MODES)[run % 3 :] + list(MODES)[: run % 3]  # each mode first in turn
            for mode in order:
                job_dir = Path(directory) / f"job-{run}-{mode}"
                job_dir.mkdir()
                result = trio.run(one_run, command, job_dir, mode)
                result["mode"] = mode  # type: ignore[assignment]
                print(json.dumps(result), flush=True)
                results[mode].append(result)
        alone = detector_alone(script, args.lines, args.every)
    summary: dict[str, object] = {"detector_alone": alone}
    for mode, runs in results.items():
        summary[mode] = {
            "what": MODES[mode],
            "lines_per_s": statistics.median(r["lines"] / r["wall_s"] for r in runs),
            "cpu_s": statistics.median(r["cpu_s"] for r in runs),
            "detector_process_cpu_s": statistics.median(r["detector_process_cpu_s"] for r in runs),
            "problems": runs[0]["problems"],
        }
    off = summary["without"]
    assert isinstance(off, dict)
    for mode in ("process", "in_process"):
        on = summary[mode]
        assert isinstance(on, dict)
        on["throughput_cost_pct"] = 100 * (1 - on["lines_per_s"] / off["lines_per_s"])
        on["runner_cpu_cost_pct"] = 100 * (on["cpu_s"] - off["cpu_s"]) / off["cpu_s"]
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
