"""The benchmark scenarios (docs/benchmarks.md).

Each function runs once and returns its figures (a flat dict).
"""

from __future__ import annotations

import json
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks import harness as h
from benchmarks.procstat import (
    RssSampler,
    children_cpu_seconds,
    cpu_seconds,
    load_average,
    wait_exited,
)

Figures = dict[str, float]
MB = 1 << 20


@dataclass(frozen=True)
class Sizes:
    """How big each scenario is: ``full`` for the record, ``quick`` to try things out."""

    ingest_lines: int
    max_rate_lines: dict[int, int]
    paced_s: float
    catchup_lines: int
    storm_clients: int
    memory_lines: int


FULL = Sizes(
    ingest_lines=1_000_000,
    max_rate_lines={1: 2_000_000, 100: 200_000, 1000: 20_000},
    paced_s=6.0,
    catchup_lines=1_000_000,
    storm_clients=1000,
    memory_lines=10_000_000,
)
QUICK = Sizes(
    ingest_lines=1_000_000,
    max_rate_lines={1: 500_000, 100: 50_000, 1000: 5_000},
    paced_s=3.0,
    catchup_lines=1_000_000,
    storm_clients=1000,
    memory_lines=3_000_000,
)


def _load() -> float:
    return load_average()[0]


def ingest_logstream(lines: int) -> Figures:
    """``logstream run --quiet -- firehose.py N``: lines/s from job start to exit, CPU/Mline."""
    with h.temporary_directory() as tmp:
        argv = [
            h.PYTHON, "-m", "logstream.cli", "run", "--quiet", "--port", "0",
            "--data-dir", tmp, "--", *h.firehose(lines),
        ]  # fmt: skip
        load = _load()
        spawned = time.perf_counter()
        process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        assert process.stderr is not None
        process.stderr.readline()
        job_started = time.perf_counter()
        cpu_at_start = cpu_seconds(process.pid)
        wait_exited(process.pid)
        exited = time.perf_counter()
        cpu = cpu_seconds(process.pid) - cpu_at_start
        child_cpu = children_cpu_seconds(process.pid)
        process.wait()
    return {
        "lines_per_s": lines / (exited - job_started),
        "cpu_s_per_mline": cpu / (lines / 1e6),
        "firehose_cpu_s": child_cpu,
        "wall_total_s": exited - spawned,
        "load": load,
    }


def ingest_inprocess(lines: int, disk: bool) -> Figures:
    """logstream's runner and log in-process, with or without the disk store."""
    load = _load()
    argv = [h.PYTHON, "-m", "benchmarks.ingest_nodisk", *(["--disk"] if disk else []), "--"]
    out = subprocess.run([*argv, *h.firehose(lines)], capture_output=True, check=True, cwd=h.ROOT)
    result = json.loads(out.stdout)
    return {
        "lines_per_s": result["lines"] / result["wall_s"],
        "cpu_s_per_mline": result["cpu_s"] / (result["lines"] / 1e6),
        "load": load,
    }


def ingest_baseline(lines: int) -> Figures:
    load = _load()
    server = h.start_baseline(h.firehose(lines))
    started = time.perf_counter()
    server.job_ended.wait(120)
    ended = time.perf_counter()
    cpu = cpu_seconds(server.pid)
    server.stop()
    return {"lines_per_s": lines / (ended - started), "cpu_s_per_mline": cpu / (lines / 1e6),
            "load": load}  # fmt: skip


def firehose_alone(lines: int) -> Figures:
    """The producer's own ceiling: firehose.py into /dev/null."""
    load = _load()
    started = time.perf_counter()
    subprocess.run(h.firehose(lines), stdout=subprocess.DEVNULL, check=True)
    return {"lines_per_s": lines / (time.perf_counter() - started), "load": load}


def fanout(kind: str, clients: int, rate: float, lines: int, flush: str = "batch") -> Figures:
    """``clients`` streams on one job printing ``lines`` stamped lines at ``rate`` (0: max);
    ``flush="line"``: one write per line (a line-buffered build) instead of a batch per tick."""
    with h.temporary_directory() as tmp:
        fifo = h.make_fifo(Path(tmp))
        command = h.gated(fifo, h.firehose(lines, rate=rate, stamp=True, flush=flush))
        server = h.start_server(kind, Path(tmp) / "data", command)
        processes = 2 if clients >= 500 else 1
        load = _load()
        group = h.start_clients(server, clients, processes=processes, stamped=True)
        try:
            group.wait_ready()
            sampler = RssSampler(server.pid).start()
            cpu_before = cpu_seconds(server.pid)
            go = h.open_gate(fifo)
            results = group.results()
            cpu = cpu_seconds(server.pid) - cpu_before
            sampler.stop()
        finally:
            group.kill()
            server.stop()
    done = max(max(r["t_end"]) for r in results)
    hist = h.merge_histograms(results)
    delivered = sum(r["lines"] for r in results)
    duration = done - go
    return {
        "events_per_s": delivered / duration,
        "p50_ms": h.percentile_ms(hist, 0.50),
        "p99_ms": h.percentile_ms(hist, 0.99),
        "max_ms": h.percentile_ms(hist, 1.0),
        "server_cpu_pct": 100 * cpu / duration,
        # One HTTP chunk per server write: how well batching works, and what a write costs.
        "lines_per_write": delivered / max(1, sum(r["chunks"] for r in results)),
        "server_us_per_write": 1e6 * cpu / max(1, sum(r["chunks"] for r in results)),
        "server_rss_mb": sampler.peak / MB,
        "client_cpu_pct": 100 * sum(r["cpu_s"] for r in results) / duration,
        "complete": float(
            delivered == clients * lines
            and all(r["ended"] == r["clients"] and not r["mismatched"] for r in results)
        ),
        "load": load,
    }


def make_finished_job(data_dir: Path, lines: int) -> str:
    """Run firehose.py as a logstream job into ``data_dir``; return the job's ID."""
    server = h.start_logstream_run(data_dir, h.firehose(lines))
    server.stop(120)
    return server.job_id


def catchup(kind: str, lines: int, data_dir: Path | None, job_id: str) -> Figures:
    """A new client reads a finished job: from disk (logstream serve) or memory (baseline)."""
    load = _load()
    if kind == "baseline":
        server = h.start_baseline(h.firehose(lines), linger_s=60)
        server.job_ended.wait(120)
        path = "/events"
    else:
        assert data_dir is not None
        server = h.start_logstream_serve(data_dir)
        path = f"/api/jobs/{job_id}/events"
    try:
        cpu_before = cpu_seconds(server.pid)
        group = h.start_clients(server, 1, path=path)
        group.wait_ready()
        (result,) = group.results()
        cpu = cpu_seconds(server.pid) - cpu_before
    finally:
        server.process.terminate()
        server.stop()
    started, first, end = result["started"][0], result["t_first"][0], result["t_end"][0]
    return {
        "lines_per_s": result["lines"] / (end - started),
        "first_event_ms": 1000 * (first - started),
        "server_cpu_s": cpu,
        "complete": float(result["lines"] == lines and result["ended"] == 1),
        "load": load,
    }


def storm_resume_ids(clients: int, last: int, ring_lines: int) -> list[int | None]:
    """Different ``Last-Event-ID``s: most within the ring, one in twenty back on disk."""
    on_disk = clients // 20
    ids: list[int | None] = [last - 1 - i * 20 for i in range(clients - on_disk)]
    ids += [last - ring_lines - 1 - i * 2000 for i in range(on_disk)]
    return ids


def storm(kind: str, clients: int, preamble: int = 200_000) -> Figures:
    """``clients`` reconnect at once with different ``Last-Event-ID``s to a running job."""
    with h.temporary_directory() as tmp:
        fifo = h.make_fifo(Path(tmp))
        command = h.gated(fifo, h.firehose(200, rate=100), before=h.firehose(preamble))
        server = h.start_server(kind, Path(tmp) / "data", command)
        try:
            h.wait_for_path(Path(f"{fifo}.reached"))
            deadline = time.monotonic() + 30
            while kind == "logstream" and server.lines() < preamble:
                if time.monotonic() > deadline:
                    raise TimeoutError("the job did not reach its preamble")
                time.sleep(0.05)
            time.sleep(0.3)
            ids = storm_resume_ids(clients, preamble, 100_000)
            load = _load()
            sampler = RssSampler(server.pid).start()
            cpu_before = cpu_seconds(server.pid)
            group = h.start_clients(server, clients, processes=2, resume_ids=ids, target=preamble)
            group.wait_ready()
            h.open_gate(fifo)
            results = group.results()
            sampler.stop()
            cpu_end = cpu_seconds(server.pid)
        finally:
            server.stop()
    started = [t for r in results for t in r["started"]]
    first = [t for r in results for t in r["t_first"]]
    caught = [t for r in results for t in r["t_target"]]
    storm_start = min(started)
    to_first = [1000 * (f - s) for f, s in zip(first, started, strict=True)]
    caught_up = max(caught) - storm_start
    delivered = sum(r["lines"] for r in results)
    expected = sum(preamble + 200 - i for i in ids if i is not None)
    return {
        "first_event_p50_ms": h.quantile(to_first, 0.5),
        "first_event_p99_ms": h.quantile(to_first, 0.99),
        "first_event_max_ms": max(to_first),
        "all_caught_up_s": caught_up,
        "backlog_lines": float(sum(preamble - i for i in ids if i is not None)),
        "server_cpu_s": cpu_end - cpu_before,
        "server_rss_mb": sampler.peak / MB,
        "client_cpu_s": sum(r["cpu_s"] for r in results),
        "complete": float(
            delivered == expected
            and all(r["ended"] == r["clients"] and not r["mismatched"] for r in results)
            and not any(r["wrong_start"] for r in results)
        ),
        "load": load,
    }


def memory(lines: int) -> Figures:
    """Server RSS over a long job with one client following it."""
    with h.temporary_directory() as tmp:
        fifo = h.make_fifo(Path(tmp))
        server = h.start_logstream_run(Path(tmp) / "data", h.gated(fifo, h.firehose(lines)))
        load = _load()
        group = h.start_clients(server, 1, timeout_s=600)
        try:
            group.wait_ready()
            sampler = RssSampler(server.pid, interval_s=0.1).start()
            go = time.monotonic()
            h.open_gate(fifo)
            (result,) = group.results()
            sampler.stop()
        finally:
            group.kill()
            server.stop()
    samples = [(t - go, rss / MB) for t, rss in sampler.samples]
    settled = [rss for t, rss in samples if t >= 1.0] or [rss for _t, rss in samples]
    return {
        "rss_start_mb": samples[0][1],
        "rss_min_after_1s_mb": min(settled),
        "rss_max_after_1s_mb": max(settled),
        "rss_spread_mb": max(settled) - min(settled),
        "rss_end_mb": samples[-1][1],
        "lines_per_s": result["lines"] / (max(result["t_end"]) - min(result["started"])),
        "complete": float(result["lines"] == lines and result["ended"] == 1),
        "load": load,
    }


def describe(figures: list[Figures]) -> dict[str, Any]:
    """Median and min-max of each figure over several runs."""
    out: dict[str, Any] = {}
    for key in figures[0]:
        values = sorted(f[key] for f in figures)
        middle = len(values) // 2
        median = values[middle] if len(values) % 2 else (values[middle - 1] + values[middle]) / 2
        out[key] = {"median": median, "min": values[0], "max": values[-1]}
    return out
