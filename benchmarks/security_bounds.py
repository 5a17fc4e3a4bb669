"""The resource bounds of docs/security.md, measured on a real ``logstream serve``.

``python -m benchmarks.security_bounds [--root DIR]``: ``DIR`` is a checkout of logstream to
measure (default: this one), so the figures of an older version can be taken side by side
(``git archive OLD | tar -x -C /tmp/old``, then ``--root /tmp/old``).

- ``lines``: peak RSS growth of ``serve`` while 4 clients fetch ``/lines?limit=10000`` at once
  from a job of 600 lines of 64 KiB;
- ``events``: the CPU ``serve`` uses with 100 ``/api/events`` streams open over 406 jobs.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import trio

from benchmarks.procstat import load_average

HERE = Path(__file__).resolve().parents[1]


def _serve(root: Path, data: Path) -> tuple[subprocess.Popen[bytes], str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "logstream", "serve", "--port", "0", "--data-dir", str(data)],
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(root)},
        cwd=root,  # ``-m`` looks in the working directory first
    )
    assert process.stderr is not None
    line = process.stderr.readline().decode()
    return process, line.split("serving at ")[1].strip().rstrip("/")


def _status_kb(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as status:
        return int(next(line for line in status if line.startswith(field)).split()[1])


def _cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def lines(root: Path, work: Path) -> str:
    data = work / "lines"
    script = "import sys\nline = 'x' * 65535 + '\\n'\nfor _ in range(600): sys.stdout.write(line)"
    await trio.run_process(
        [sys.executable, "-m", "logstream", "run", "--quiet", "--port", "0", "--data-dir",
         str(data), "--", sys.executable, "-c", script],
        env={**os.environ, "PYTHONPATH": str(root)},
        cwd=root,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    job = os.listdir(data / "jobs")[0]
    process, url = _serve(root, data)
    try:
        before = _status_kb(process.pid, "VmHWM")
        async with httpx.AsyncClient(timeout=600) as client, trio.open_nursery() as nursery:
            for _ in range(4):
                nursery.start_soon(client.get, f"{url}/api/jobs/{job}/lines?limit=10000")
        after = _status_kb(process.pid, "VmHWM")
    finally:
        process.terminate()
        process.wait()
    return f"lines: peak RSS {before / 1024:.0f} -> {after / 1024:.0f} MiB"


async def events(root: Path, work: Path, streams: int = 100, jobs: int = 406) -> str:
    sys.path.insert(0, str(root))
    from logstream.job import Job
    from logstream.store import DataDir, write_job

    data = DataDir(work / "events")
    data.create()
    for index in range(jobs):
        job_id, path = data.new_job_dir()
        write_job(path, Job(id=job_id, name=f"j{index}", command=["true"], status="succeeded"))
    process, url = _serve(root, data.path)
    limits = httpx.Limits(max_connections=streams + 10)
    try:
        async with httpx.AsyncClient(timeout=60, limits=limits) as client:

            async def follow() -> None:
                async with client.stream("GET", f"{url}/api/events") as response:
                    async for _ in response.aiter_raw():
                        pass

            async with trio.open_nursery() as nursery:
                for _ in range(streams):
                    nursery.start_soon(follow)
                await trio.sleep(3)  # every stream open and past its first read
                cpu, wall = _cpu_s(process.pid), time.monotonic()
                await trio.sleep(10)
                used = (_cpu_s(process.pid) - cpu) / (time.monotonic() - wall)
                nursery.cancel_scope.cancel()
    finally:
        process.terminate()
        process.wait()
    return f"events: {streams} streams over {jobs} jobs: serve used {used:.0%} of a core"


async def main(root: Path) -> None:
    with tempfile.TemporaryDirectory() as work:
        print(f"load before: {load_average()}")
        print(await lines(root, Path(work)))
        print(await events(root, Path(work)))
        print(f"load after: {load_average()}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=HERE)
    trio.run(main, parser.parse_args().root.resolve())
