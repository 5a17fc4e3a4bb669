"""``python -m benchmarks [--quick] [--runs N] [--json FILE] [SCENARIO...]``."""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks import harness
from benchmarks import scenarios as s
from benchmarks.harness import temporary_directory
from benchmarks.procstat import load_average

SCENARIOS = ("ingest", "fanout", "perline", "catchup", "storm", "memory")
TARGET_CELLS = [(1, 0), (100, 2000), (1000, 100), (100, 0)]
ALL_CELLS = [(c, r) for r in (2000, 100, 0) for c in (1, 100, 1000)]
#: One write per line (issue 13): the cells where the cost per wake shows.
PER_LINE_CELLS = [(100, 2000), (1000, 100), (1, 0)]
PER_LINE_MAX_RATE_LINES = 200_000


def _fmt(value: float) -> str:
    if value != value:
        return "nan"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


class Report:
    def __init__(self, runs: int) -> None:
        self.runs = runs
        self.rows: dict[str, dict[str, Any]] = {}

    def measure(self, name: str, once: Callable[[], s.Figures], runs: int | None = None) -> None:
        figures = []
        for _ in range(runs or self.runs):
            figures.append(once())
            time.sleep(0.5)  # let the previous processes' sockets and pages settle
        described = s.describe(figures)
        self.rows[name] = described
        shown = ", ".join(
            f"{key} {_fmt(v['median'])} [{_fmt(v['min'])}-{_fmt(v['max'])}]"
            for key, v in described.items()
        )
        print(f"{name}: {shown}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument(
        "scenarios", nargs="*", metavar="SCENARIO", help=f"any of {', '.join(SCENARIOS)} (all)"
    )
    parser.add_argument("--quick", action="store_true", help="smaller jobs, one run, targets only")
    parser.add_argument("--runs", type=int, default=None, help="runs per figure (default 3; 1)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument(
        "--pin",
        action="store_true",
        help="server and job on CPU 0, load clients on CPU 1 (sched_setaffinity)",
    )
    parser.add_argument(
        "--hypercorn-fastsend",
        action="store_true",
        help="patch hypercorn's send path in logstream servers (benchmarks/hypercorn_fastsend.py)",
    )
    args = parser.parse_args()
    if args.hypercorn_fastsend:
        harness.LOGSTREAM = harness.FASTSEND_LOGSTREAM
    if args.pin:
        harness.SERVER_CPUS, harness.CLIENT_CPUS = {0}, {1}
    chosen = args.scenarios or list(SCENARIOS)
    if unknown := set(chosen) - set(SCENARIOS):
        parser.error(f"unknown scenario: {', '.join(sorted(unknown))}")
    sizes = s.QUICK if args.quick else s.FULL
    report = Report(args.runs or (1 if args.quick else 3))
    print(
        f"# {platform.node()}: {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"load {' '.join(f'{x:.2f}' for x in load_average())} at start",
        flush=True,
    )
    started = time.monotonic()
    if "ingest" in chosen:
        n = sizes.ingest_lines
        report.measure("ingest firehose alone (producer ceiling)", lambda: s.firehose_alone(n))
        report.measure("ingest logstream run (ring + disk)", lambda: s.ingest_logstream(n))
        report.measure("ingest in-process, disk store", lambda: s.ingest_inprocess(n, True))
        report.measure("ingest in-process, no disk store", lambda: s.ingest_inprocess(n, False))
        report.measure("ingest baseline (memory only)", lambda: s.ingest_baseline(n))
    if "fanout" in chosen:
        for clients, rate in TARGET_CELLS if args.quick else ALL_CELLS:
            lines = sizes.max_rate_lines[clients] if not rate else int(rate * sizes.paced_s)
            shown = f"{rate:g} lines/s" if rate else "max rate"
            for kind in ("logstream", "baseline"):
                report.measure(
                    f"fanout {kind} {clients} clients {shown}",
                    lambda k=kind, c=clients, r=rate, n=lines: s.fanout(k, c, r, n),  # type: ignore[misc]
                )
    if "perline" in chosen:
        for clients, rate in PER_LINE_CELLS:
            lines = PER_LINE_MAX_RATE_LINES if not rate else int(rate * sizes.paced_s)
            shown = f"{rate:g} lines/s" if rate else "max rate"
            for kind in ("logstream", "baseline"):
                report.measure(
                    f"perline {kind} {clients} clients {shown}",
                    lambda k=kind, c=clients, r=rate, n=lines: s.fanout(k, c, r, n, "line"),  # type: ignore[misc]
                )
    if "catchup" in chosen:
        n = sizes.catchup_lines
        with temporary_directory() as tmp:
            job_id = s.make_finished_job(Path(tmp), n)
            report.measure(
                "catchup logstream (serve, from disk)",
                lambda: s.catchup("logstream", n, Path(tmp), job_id),
            )
        report.measure("catchup baseline (memory)", lambda: s.catchup("baseline", n, None, ""))
    if "storm" in chosen:
        for kind in ("logstream", "baseline"):
            report.measure(
                f"storm {kind} {sizes.storm_clients} clients",
                lambda k=kind: s.storm(k, sizes.storm_clients),  # type: ignore[misc]
            )
    if "memory" in chosen:
        report.measure(
            f"memory logstream {sizes.memory_lines:,} lines",
            lambda: s.memory(sizes.memory_lines),
            1,
        )
    print(f"# done in {time.monotonic() - started:.0f} s, load "
          f"{' '.join(f'{x:.2f}' for x in load_average())} at end", flush=True)  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(report.rows, indent=1))


if __name__ == "__main__":
    main()
