"""Ingest in-process, with or without the disk store: ``python -m benchmarks.ingest_nodisk``.

``python -m benchmarks.ingest_nodisk [--disk] -- COMMAND...`` runs COMMAND with logstream's own
``JobRunner`` into a ``LiveLog`` (pipes, 64 KiB reads, ``LineSplitter``, ``encode_lines``, the
ring, the writer task) and prints one JSON line: lines, wall seconds, CPU seconds.

Without ``--disk`` the log's ``JobWriter`` is one that keeps nothing: the writer task still
batches, hops to a thread and marks blocks persisted (so the ring evicts as usual), but no byte
reaches the disk. That is the honest "ingest without the disk store": the same code path minus
the ``write()`` calls. logstream itself has no such switch, on purpose: every line is kept.
No HTTP server runs here; it would sit idle anyway.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import trio

from logstream.backends.datadir import DataDirBackend
from logstream.backends.protocol import Job, JobLog, JobWriter
from logstream.detectproc import shared_process
from logstream.joblog import LiveLog
from logstream.jobspec import JobSpec
from logstream.problems import Detector
from logstream.ring import Block
from logstream.runner import JobRunner


class NullWriter:
    """A ``JobWriter`` that keeps nothing: the ingest path without the disk."""

    def __init__(self, job: Job) -> None:
        self.job = job
        self.last_stored = 0
        self.batch_interval_s = 0.2  # as the data directory batches

    async def append_blocks(self, blocks: Sequence[Block], *, sync: bool = False) -> int:
        await trio.to_thread.run_sync(lambda: None)  # the hop a real write takes
        self.last_stored = blocks[-1].last if blocks else self.last_stored
        return self.last_stored

    async def append_problems(self, records: Sequence[bytes]) -> None:
        pass

    async def finish(self, job: Job) -> None:
        self.job = job

    async def release(self) -> None:
        pass

    def open_log(self) -> JobLog:
        raise NotImplementedError("nothing is stored")


async def ingest(
    command: list[str],
    disk: bool,
    directory: Path,
    detector: Detector | None = None,
    *,
    detect_elsewhere: bool = False,
) -> dict[str, float]:
    """One run; ``detector`` replaces the log's problem detector, ``detect_elsewhere`` hands
    detection to the detector process as ``logstream run`` does (``problems_cost``)."""
    writer: JobWriter
    if disk:
        writer = await DataDirBackend(directory).create_job("bench", command)
    else:
        writer = NullWriter(Job(id="bench", name="bench", command=command))
    log = LiveLog(writer)
    if detector is not None:
        log.detector = detector
    process = shared_process() if detect_elsewhere else None
    if process is not None:
        await process.ready.wait()  # as in a server: started before the job
        log.detect_elsewhere(process)
    runner = JobRunner(log, JobSpec(tuple(command), "bench", tee=False))
    async with trio.open_nursery() as nursery:
        await nursery.start(log.run_writer)
        before = resource.getrusage(resource.RUSAGE_SELF)
        started = time.perf_counter()
        await runner.run()
        ran = time.perf_counter() - started
        await log.wait_closed()
        wall = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_SELF)
        child_cpu = process_cpu_s(process.pid) if process and process.pid else 0.0
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    problems = sum(log.problems.counts.values())
    return {
        "lines": log.last,
        "problems": problems,
        "wall_s": wall,
        "command_s": ran,
        "cpu_s": cpu,
        "detector_process_cpu_s": child_cpu,
    }


def process_cpu_s(pid: int) -> float:
    """User + system CPU of a live process so far (``/proc/PID/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--disk", action="store_true", help="keep the real disk store")
    parser.add_argument("command", nargs="+")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="logstream-ingest-") as directory:
        result = trio.run(ingest, args.command, args.disk, Path(directory))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
