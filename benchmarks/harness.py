"""Starting the servers under test and the load clients as real processes over real sockets."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
FIREHOSE = str(ROOT / "sample_jobs" / "firehose.py")
PYTHON = sys.executable
JOB_LINE = re.compile(r"logstream: job (\S+) live at (http://[^/]+)/jobs/")
SERVING_LINE = re.compile(r"(?:logstream|baseline): serving at (http://[^/]+)/")


#: How a logstream server under test is started: ``python -m logstream.cli``, or with
#: ``--hypercorn-fastsend`` a ``python -c`` that first patches hypercorn's send path.
LOGSTREAM = ["-m", "logstream.cli"]
FASTSEND_LOGSTREAM = [
    "-c",
    "from benchmarks.hypercorn_fastsend import install; install(); "
    "from logstream.cli import main; main()",
]

#: CPUs for the server under test (and the job it runs: children inherit) and for the load
#: clients; ``None``: anywhere. ``python -m benchmarks --pin`` sets ``{0}`` and ``{1}``.
SERVER_CPUS: set[int] | None = None
CLIENT_CPUS: set[int] | None = None


def _pinned(cpus: set[int] | None) -> Any:
    """A ``preexec_fn`` that keeps the child (and its children) on ``cpus``."""
    if cpus is None:
        return None
    return lambda: os.sched_setaffinity(0, cpus)


def firehose(
    lines: int, *, rate: float = 0, stamp: bool = False, flush: str = "batch"
) -> list[str]:
    command = ["python3", FIREHOSE, str(lines)]
    if rate:
        command += ["--rate", str(rate)]
    if stamp:
        command.append("--stamp")
    if flush != "batch":
        command += ["--flush", flush]
    return command


def gated(fifo: Path, command: Sequence[str], before: Sequence[str] = ()) -> list[str]:
    """``command`` that starts only once the harness opens the gate (a FIFO).

    ``before`` runs first, then the file ``<fifo>.reached`` is created: the job is at the gate.
    """
    script = 'cat "$0" >/dev/null; exec "$@"'
    if before:
        script = f'{" ".join(before)} && touch "$0.reached" && {script}'
    return ["sh", "-c", script, str(fifo), *command]


@dataclass
class Server:
    """A server process under test: ``kind`` is ``logstream`` or ``baseline``."""

    kind: str
    process: subprocess.Popen[bytes]
    base_url: str
    events_path: str
    job_id: str = ""
    stderr_lines: list[str] = field(default_factory=list)
    job_ended: threading.Event = field(default_factory=threading.Event)

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def host_port(self) -> tuple[str, int]:
        host, port = self.base_url.removeprefix("http://").rsplit(":", 1)
        return host, int(port)

    def lines(self) -> int:
        """The job's line count from the API (logstream only)."""
        with urllib.request.urlopen(f"{self.base_url}/api/jobs/{self.job_id}") as response:
            return int(json.load(response)["lines"])

    def stop(self, timeout_s: float = 15.0) -> None:
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _start(kind: str, argv: list[str], pattern: re.Pattern[str]) -> tuple[Server, re.Match[str]]:
    process = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        preexec_fn=_pinned(SERVER_CPUS),
        cwd=ROOT,
    )
    assert process.stderr is not None
    first = process.stderr.readline().decode()
    match = pattern.search(first)
    if match is None:
        process.kill()
        raise RuntimeError(f"{kind} did not start: {first!r}")
    server = Server(kind, process, "", "")

    def drain() -> None:
        assert process.stderr is not None
        for raw in process.stderr:
            line = raw.decode(errors="replace")
            server.stderr_lines.append(line)
            if "job ended" in line:
                server.job_ended.set()

    threading.Thread(target=drain, daemon=True).start()
    return server, match


def start_logstream_run(
    data_dir: Path, command: Sequence[str], extra: Sequence[str] = ()
) -> Server:
    argv = [
        PYTHON, *LOGSTREAM, "run", "--quiet", "--port", "0",
        "--data-dir", str(data_dir), *extra, "--", *command,
    ]  # fmt: skip
    server, match = _start("logstream", argv, JOB_LINE)
    server.job_id, server.base_url = match[1], match[2]
    server.events_path = f"/api/jobs/{server.job_id}/events"
    return server


def start_logstream_serve(data_dir: Path) -> Server:
    argv = [PYTHON, *LOGSTREAM, "serve", "--port", "0", "--data-dir", str(data_dir)]
    server, match = _start("logstream", argv, SERVING_LINE)
    server.base_url = match[1]
    return server


def start_baseline(command: Sequence[str], linger_s: float = 0) -> Server:
    argv = [PYTHON, "-m", "benchmarks.baseline_server", "--linger", str(linger_s), "--", *command]
    server, match = _start("baseline", argv, SERVING_LINE)
    server.base_url = match[1]
    server.events_path = "/events"
    return server


def start_server(kind: str, data_dir: Path, command: Sequence[str]) -> Server:
    if kind == "baseline":
        return start_baseline(command)
    return start_logstream_run(data_dir, command)


@dataclass
class Clients:
    processes: list[subprocess.Popen[bytes]]

    def wait_ready(self) -> None:
        for process in self.processes:
            assert process.stdout is not None
            line = process.stdout.readline()
            if line.strip() != b"ready":
                raise RuntimeError(f"load client failed: {line!r}")

    def kill(self) -> None:
        """Stop any client process still running (after a failure)."""
        for process in self.processes:
            if process.poll() is None:
                process.kill()
                process.wait()

    def results(self) -> list[dict[str, Any]]:
        out = []
        for process in self.processes:
            assert process.stdout is not None
            data = process.stdout.read()
            process.wait()
            out.append(json.loads(data.splitlines()[-1]))
        return out


def start_clients(
    server: Server,
    clients: int,
    *,
    processes: int = 1,
    path: str | None = None,
    resume_ids: Sequence[int | None] | None = None,
    stamped: bool = False,
    target: int = 0,
    timeout_s: float = 120,
) -> Clients:
    """``clients`` SSE connections spread over ``processes`` load-client processes."""
    host, port = server.host_port
    ids = list(resume_ids) if resume_ids is not None else [None] * clients
    started = []
    for part in range(processes):
        mine = ids[part::processes]
        config = {
            "host": host,
            "port": port,
            "path": path or server.events_path,
            "clients": len(mine),
            "resume_ids": mine,
            "stamped": stamped,
            "target": target,
            "timeout_s": timeout_s,
        }
        started.append(
            subprocess.Popen(
                [PYTHON, "-m", "benchmarks.loadclient", json.dumps(config)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                cwd=ROOT,
                preexec_fn=_pinned(CLIENT_CPUS),
            )
        )
    return Clients(started)


def open_gate(fifo: Path) -> float:
    """Let the gated command start; returns the time (epoch seconds) it was let go."""
    now = time.time()
    with open(fifo, "wb"):
        pass
    return now


def wait_for_path(path: Path, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} did not appear")
        time.sleep(0.01)


def make_fifo(directory: Path) -> Path:
    fifo = directory / "gate"
    os.mkfifo(fifo)
    return fifo


def temporary_directory() -> tempfile.TemporaryDirectory[str]:
    return tempfile.TemporaryDirectory(prefix="logstream-bench-")


def merge_histograms(results: list[dict[str, Any]]) -> dict[int, int]:
    merged: dict[int, int] = {}
    for result in results:
        for bucket, count in result["hist"].items():
            merged[int(bucket)] = merged.get(int(bucket), 0) + count
    return merged


def percentile_ms(hist: dict[int, int], fraction: float, bucket_ns: int = 10_000) -> float:
    """The ``fraction`` quantile of a histogram of ``bucket_ns`` buckets (upper bucket edge)."""
    total = sum(hist.values())
    if not total:
        return float("nan")
    wanted = fraction * total
    seen = 0
    for bucket in sorted(hist):
        seen += hist[bucket]
        if seen >= wanted:
            return (bucket + 1) * bucket_ns / 1e6
    return (max(hist) + 1) * bucket_ns / 1e6


def quantile(values: Sequence[float], fraction: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]
