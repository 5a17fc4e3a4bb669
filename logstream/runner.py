"""Run a command as a job: its output becomes lines in a ``LiveLog``, byte-exact in our terminal.

Theory of operation
-------------------
The command runs in its own session, so its process group is exactly the job: signals go to
the whole group (``killpg``), and nothing of the job outlives us. stdout and stderr are read
concurrently in 64 KiB chunks; each chunk goes through the stream's line splitter into the log
(``LiveLog.append``, which never blocks), then, unless quiet, to our own stdout/stderr as is.
With ``pty=True`` the command writes to a pseudo-terminal (so it line-buffers and keeps its
colours) and both streams arrive as one.

Ending: when the main process exits, background processes it left may still hold the pipes.
They get ``DRAIN_S`` to finish writing, then whatever is left of the group gets SIGTERM, and
SIGKILL after the grace period; the pipes are closed without waiting for EOF any longer.
When we are told to stop (Ctrl-C, SIGTERM, a cancel request), the signal goes to the group at
once and SIGKILL follows after the grace period.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import signal
import struct
import subprocess
import termios
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import trio

from logstream.joblog import LiveLog
from logstream.lines import DEFAULT_LINE_LIMIT, LineSplitter
from logstream.mask import Masker

READ_BYTES = 64 * 1024
DRAIN_S = 0.5
GRACE_S = 10.0
PTY_SIZE = (50, 200)  # rows, columns


@dataclass
class JobResult:
    status: str
    exit_code: int


@dataclass
class JobRunner:
    """Runs one command into a ``LiveLog``; ``stop()`` cancels it."""

    log: LiveLog
    command: Sequence[str]
    cwd: Path | None = None
    env: Mapping[str, str] | None = None
    pty: bool = False
    tee: bool = True
    masker: Masker = field(default_factory=lambda: Masker(()))
    line_limit: int = DEFAULT_LINE_LIMIT
    grace_s: float = GRACE_S
    #: A ``logstream: `` line to append to the log's stderr right before the end (a timeout).
    end_notice: str | None = None
    _stop: trio.Event = field(default_factory=trio.Event)
    _signal: int = signal.SIGTERM
    _pgid: int | None = None

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def stop(self, signum: int = signal.SIGTERM) -> None:
        """Send ``signum`` to the job's process group now and SIGKILL after the grace period."""
        if self._stop.is_set():
            return
        self._signal = signum
        self._stop.set()
        if self._pgid is not None:
            _killpg(self._pgid, signum)

    async def run(self) -> JobResult:
        """Run the command to its end; record the end in the log; return status and exit code."""
        try:
            process, streams = await self._start()
        except OSError as error:
            self._append_notice(f"logstream: cannot run {self.command[0]!r}: {error.strerror}")
            code = 127 if error.errno == errno.ENOENT else 126
            self.log.finish("failed", code)
            return JobResult("failed", code)
        self._pgid = process.pid
        if self._stop.is_set():
            _killpg(process.pid, self._signal)
        readers_done = trio.Event()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._read_all, streams, readers_done)
            nursery.start_soon(self._kill_after_grace, process.pid)
            returncode = await process.wait()
            with trio.move_on_after(DRAIN_S):
                await readers_done.wait()
            await self._end_group(process.pid)
            with trio.move_on_after(DRAIN_S):
                await readers_done.wait()
            nursery.cancel_scope.cancel()
        for stream in streams:
            await stream.aclose()
        exit_code = 128 - returncode if returncode < 0 else returncode
        status = "cancelled" if self._stop.is_set() else "succeeded" if exit_code == 0 else "failed"
        if self.end_notice:
            self._append_notice(self.end_notice)
        self.log.finish(status, exit_code)
        return JobResult(status, exit_code)

    async def _start(self) -> tuple[trio.Process, list[trio.abc.ReceiveStream]]:
        env = dict(os.environ if self.env is None else self.env)
        if not self.pty:
            process = await trio.lowlevel.open_process(
                list(self.command),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
                cwd=self.cwd,
                env=env,
            )
            assert process.stdout is not None and process.stderr is not None
            return process, [process.stdout, process.stderr]
        env.setdefault("TERM", "xterm-256color")
        master, secondary = os.openpty()
        try:
            fcntl.ioctl(secondary, termios.TIOCSWINSZ, struct.pack("HHHH", *PTY_SIZE, 0, 0))
            attributes = termios.tcgetattr(secondary)
            attributes[1] &= ~termios.ONLCR  # keep "\n" as is: no "\r\n" on every line
            termios.tcsetattr(secondary, termios.TCSANOW, attributes)
            process = await trio.lowlevel.open_process(
                list(self.command),
                stdin=subprocess.DEVNULL,
                stdout=secondary,
                stderr=secondary,
                start_new_session=True,
                cwd=self.cwd,
                env=env,
                preexec_fn=_take_controlling_terminal,
            )
        except BaseException:
            os.close(master)
            raise
        finally:
            os.close(secondary)
        return process, [trio.lowlevel.FdStream(master)]

    async def _read_all(self, streams: list[trio.abc.ReceiveStream], done: trio.Event) -> None:
        async with trio.open_nursery() as nursery:
            for fd, stream in enumerate(streams, start=1):
                nursery.start_soon(self._read, stream, fd)
        done.set()

    async def _read(self, stream: trio.abc.ReceiveStream, fd: int) -> None:
        splitter = LineSplitter(self.line_limit)
        stderr = fd == 2
        try:
            while True:
                try:
                    chunk = await stream.receive_some(READ_BYTES)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    break  # a pty reports the end of output as EIO
                if not chunk:
                    break
                self.log.append(self.masker.apply(splitter.feed(chunk)), stderr=stderr)
                await self.log.wait_writable()
                if self.tee:
                    await trio.to_thread.run_sync(_write_all, fd, chunk)
        finally:
            self.log.append(self.masker.apply(splitter.flush()), stderr=stderr)

    async def _kill_after_grace(self, pgid: int) -> None:
        await self._stop.wait()
        await trio.sleep(self.grace_s)
        _killpg(pgid, signal.SIGKILL)

    async def _end_group(self, pgid: int) -> None:
        """SIGTERM what is left of the group, then SIGKILL after the grace period."""
        if not _group_alive(pgid):
            return
        _killpg(pgid, signal.SIGTERM)
        with trio.move_on_after(self.grace_s):
            # No event tells when a process group empties: poll it.
            while _group_alive(pgid):  # noqa: ASYNC110
                await trio.sleep(0.02)
        _killpg(pgid, signal.SIGKILL)

    def _append_notice(self, text: str) -> None:
        self.log.append([text], stderr=True)
        if self.tee:
            _write_all(2, text.encode() + b"\n")


def _take_controlling_terminal() -> None:
    fcntl.ioctl(1, termios.TIOCSCTTY, 0)


def _killpg(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def _group_alive(pgid: int) -> bool:
    """Whether any live (not zombie) process is in group ``pgid``.

    ``killpg(pgid, 0)`` is not enough: where PID 1 does not reap orphans, the job's dead
    background processes linger as zombies.
    """
    try:
        names = os.listdir("/proc")
    except OSError:
        return _killpg_probe(pgid)
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as file:
                stat = file.read()
        except OSError:
            continue
        # Fields after the command (which may hold spaces) start after the last ')'.
        fields = stat[stat.rfind(b")") + 2 :].split()
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] not in (b"Z", b"X"):
            return True
    return False


def _killpg_probe(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _write_all(fd: int, data: bytes | bytearray) -> None:
    view = memoryview(data)
    try:
        while view:
            view = view[os.write(fd, view) :]
    except BrokenPipeError:
        pass  # our own stdout went away; the log still gets every line
