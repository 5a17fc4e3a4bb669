"""Real `logstream` processes for end-to-end tests: start, read the URL line, collect output."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import trio

DEADLINE_S = 30
URL_LINE = re.compile(rb"^logstream: job (?P<id>[A-Za-z0-9_-]+) live at (?P<url>http://\S+)\n")
END_LINE = re.compile(
    rb"logstream: job (?P<id>[A-Za-z0-9_-]+) (?P<status>succeeded|failed|cancelled) "
    rb"\(exit status (?P<code>\d+)\) after [^;\n]+; (?P<where>[^\n]+)\n\Z"
)
SERVING_LINE = re.compile(rb"^logstream: serving at (?P<url>http://\S+)/\n")


@dataclass
class Logstream:
    """A `logstream` subprocess whose stdout and stderr the test reads as they arrive."""

    process: trio.Process
    stdout: bytearray = field(default_factory=bytearray)
    stderr: bytearray = field(default_factory=bytearray)
    changed: trio.Event = field(default_factory=trio.Event)
    output_closed: bool = False

    @property
    def pid(self) -> int:
        return self.process.pid

    async def _pump(self, stream: trio.abc.ReceiveStream, into: bytearray) -> None:
        async with stream:
            while data := await stream.receive_some(65536):
                into += data
                self.changed.set()
                self.changed = trio.Event()

    async def wait_for(
        self, pattern: re.Pattern[bytes], *, in_stderr: bool = True
    ) -> re.Match[bytes]:
        with trio.fail_after(DEADLINE_S):
            while True:
                match = pattern.search(self.stderr if in_stderr else self.stdout)
                if match:
                    return match
                if self.process.returncode is not None:
                    code = self.process.returncode
                    raise AssertionError(f"logstream exited {code}; stderr: {bytes(self.stderr)!r}")
                await self.changed.wait()

    async def wait_for_url(self) -> tuple[str, str]:
        """The job ID and page URL from the first stderr line."""
        match = await self.wait_for(URL_LINE)
        return match["id"].decode(), match["url"].decode()

    async def wait_for_serving(self) -> str:
        return (await self.wait_for(SERVING_LINE))["url"].decode()

    async def wait_exit(self) -> int:
        """The exit status, once the process has exited and all its output is read."""
        with trio.fail_after(DEADLINE_S):
            code = await self.process.wait()
            while not self.output_closed:
                await self.changed.wait()
        return code

    def signal(self, signum: signal.Signals) -> None:
        self.process.send_signal(signum)


async def start_logstream(
    nursery: trio.Nursery, *args: str, cwd: Path | None = None, env: dict[str, str] | None = None
) -> Logstream:
    """Start `python -m logstream ARGS` with its stdout and stderr piped to the test."""
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "logstream", *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=cwd,
        env={**os.environ, **(env or {})},
    )
    assert process.stdout is not None and process.stderr is not None
    running = Logstream(process)

    async def pump_both() -> None:
        async with trio.open_nursery() as pumps:
            assert process.stdout is not None and process.stderr is not None
            pumps.start_soon(running._pump, process.stdout, running.stdout)
            pumps.start_soon(running._pump, process.stderr, running.stderr)
        running.output_closed = True
        running.changed.set()

    async def reap() -> None:
        try:
            await pump_both()
            await process.wait()
        finally:
            if process.returncode is None:
                process.kill()
                with trio.CancelScope(shield=True):
                    await process.wait()

    nursery.start_soon(reap)
    return running


async def start_serve(nursery: trio.Nursery, data_dir: Path, *args: str) -> tuple[Logstream, str]:
    """`logstream serve` on a free port; its base URL once it listens."""
    serving = await start_logstream(
        nursery, "serve", "--port", "0", "--data-dir", str(data_dir), *args
    )
    return serving, await serving.wait_for_serving()


async def start_runner(
    nursery: trio.Nursery,
    server: str,
    data_dir: Path,
    script: str,
    *args: str,
    env: dict[str, str] | None = None,
) -> tuple[Logstream, str]:
    """`logstream run --server SERVER` of a Python script; its job ID once it named its page."""
    running = await start_logstream(
        nursery,
        "run",
        "--server",
        server,
        "--data-dir",
        str(data_dir),
        *args,
        "--",
        sys.executable,
        "-c",
        script,
        env=env,
    )
    job_id, url = await running.wait_for_url()
    assert url == f"{server}/jobs/{job_id}"
    return running, job_id


def live_processes_in_group(pgid: int) -> list[int]:
    """Processes of a process group that still run (zombies waiting to be reaped don't count)."""
    alive = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = _stat(int(entry.name))
            if stat is not None and int(stat[2]) == pgid and stat[0] not in ("Z", "X"):
                alive.append(int(entry.name))
    return alive


def is_running(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie."""
    stat = _stat(pid)
    return stat is not None and stat[0] not in ("Z", "X")


def _stat(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (state, ppid, pgrp, ...)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name is in parentheses and may hold spaces.
    return stat[stat.rindex(")") + 2 :].split()
