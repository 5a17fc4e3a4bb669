"""Run a command as a job: its output becomes lines in a ``LiveLog``, byte-exact in our terminal.

Theory of operation
-------------------
The command runs in its own session, so its process group is exactly the job: signals go to
the whole group (``killpg``), and nothing of the job outlives us. stdout and stderr are read
concurrently in 64 KiB chunks; each chunk goes through the stream's line splitter into the log
(``LiveLog.append``, which never blocks), then, unless quiet, to a ``_Tee`` that copies it to
our own stdout/stderr as is from a task of its own. A slow terminal (``| less``) slows the
command, as it would without logstream, through the tee's bounded buffer; but the log never
waits on the terminal once the command has ended, so no line is lost to a slow or stuck
terminal. With ``pty=True`` the command writes to a pseudo-terminal (so it line-buffers and
keeps its colours) and both streams arrive as one.

Ending: when the main process exits, background processes it left may still hold the pipes.
They get ``DRAIN_S`` to finish writing, then whatever is left of the job gets SIGTERM, and
SIGKILL after the grace period. "The job" is its process group, plus any process that left
the group (``setsid``) but still carries the job's marker in its environment
(``LOGSTREAM_JOB_ID``, as Jenkins does with ``BUILD_ID``). The readers then read what is left in
the pipes and stop at EOF, or once a pipe has been idle for ``DRAIN_S``.
When we are told to stop (Ctrl-C, SIGTERM, a cancel request), the signal goes to the group at
once and SIGKILL follows after the grace period; the terminal copy is then abandoned after
``DRAIN_S`` if the terminal does not take it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import signal
import struct
import subprocess
import sys
import termios
from dataclasses import dataclass, field

import trio

from logstream.fdio import write_all
from logstream.joblog import LiveLog
from logstream.jobspec import JobSpec
from logstream.lines import DEFAULT_LINE_LIMIT, LineSplitter

READ_BYTES = 64 * 1024
TEE_BUFFER_BYTES = 1 << 20  # beyond this a slow terminal slows the command, as without us
DRAIN_S = 0.5
JOB_MARKER = "LOGSTREAM_JOB_ID"
PTY_SIZE = (50, 200)  # rows, columns


@dataclass(frozen=True)
class RunOutcome:
    """How a job ended: its status and the command's exit status."""

    status: str
    exit_code: int


@dataclass
class JobRunner:
    """Runs one job's command into a ``LiveLog``; ``stop()`` cancels it."""

    log: LiveLog
    spec: JobSpec
    line_limit: int = DEFAULT_LINE_LIMIT
    #: A ``logstream: `` line to append to the log's stderr right before the end (a timeout).
    end_notice: str | None = None
    _stop: trio.Event = field(default_factory=trio.Event)
    _signal: int = signal.SIGTERM
    _pgid: int | None = None
    _tees: dict[int, _Tee] = field(default_factory=dict)
    _receive_scopes: dict[int, trio.CancelScope] = field(default_factory=dict)
    _ending: bool = False

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def stop(self, signum: int = signal.SIGTERM) -> None:
        """Send ``signum`` to the job's process group now and SIGKILL after the grace period.

        A second call (a second Ctrl-C) does not wait for the grace period: SIGKILL at once.
        """
        if self._stop.is_set():
            if self._pgid is not None:
                _killpg(self._pgid, signal.SIGKILL)
            return
        self._signal = signum
        self._stop.set()
        if self._pgid is not None:
            _killpg(self._pgid, signum)

    async def run(self) -> RunOutcome:
        """Run the command to its end; record the end in the log; return status and exit code."""
        try:
            process, streams = await self._start()
        except OSError as error:
            self._append_notice(f"logstream: cannot run {self.spec.command[0]!r}: {error.strerror}")
            code = 127 if error.errno == errno.ENOENT else 126
            self.log.finish("failed", code)
            return RunOutcome("failed", code)
        self._pgid = process.pid
        if self._stop.is_set():
            _killpg(process.pid, self._signal)
        readers_done = trio.Event()
        async with trio.open_nursery() as copying:
            if self.spec.tee:
                self._tees = {fd: _Tee(fd) for fd in (1, 2)}
                for tee in self._tees.values():
                    copying.start_soon(tee.run)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._read_all, streams, readers_done)
                nursery.start_soon(self._kill_after_grace, process.pid)
                returncode = await process.wait()
                self._begin_ending()
                with trio.move_on_after(DRAIN_S):
                    await readers_done.wait()
                await self._end_job(process.pid)
                # Every writer is gone: what is left in the pipes is finite; read it to EOF.
                # Only a writer we could not kill keeps a pipe busy: give up after the grace.
                with trio.move_on_after(self.spec.grace_s):
                    await readers_done.wait()
                nursery.cancel_scope.cancel()
            for stream in streams:
                await stream.aclose()
            exit_code = 128 - returncode if returncode < 0 else returncode
            status = (
                "cancelled" if self._stop.is_set() else "succeeded" if exit_code == 0 else "failed"
            )
            if self.end_notice:
                self._append_notice(self.end_notice)
            self.log.finish(status, exit_code)
            # The log is complete; only the copy to our terminal may still be under way.
            for tee in self._tees.values():
                tee.close()
            if self._stop.is_set():
                # Told to stop: don't wait long for a terminal that takes nothing.
                copying.cancel_scope.deadline = trio.current_time() + DRAIN_S
        return RunOutcome(status, exit_code)

    async def _start(self) -> tuple[trio.Process, list[trio.abc.ReceiveStream]]:
        env = dict(os.environ if self.spec.env is None else self.spec.env)
        env[JOB_MARKER] = self.log.job.id
        if not self.spec.pty:
            process = await trio.lowlevel.open_process(
                list(self.spec.command),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
                cwd=self.spec.cwd,
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
                list(self.spec.command),
                stdin=subprocess.DEVNULL,
                stdout=secondary,
                stderr=secondary,
                start_new_session=True,
                cwd=self.spec.cwd,
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
        tee = self._tees.get(fd)
        try:
            while True:
                scope = trio.CancelScope()
                if self._ending:
                    scope.deadline = trio.current_time() + DRAIN_S
                self._receive_scopes[fd] = scope
                with scope:
                    try:
                        chunk = await stream.receive_some(READ_BYTES)
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        break  # a pty reports the end of output as EIO
                if scope.cancelled_caught or not chunk:
                    break  # EOF, or idle since the job ended: a leftover holds the pipe
                self.log.append(self.spec.masker.apply(splitter.feed(chunk)), stderr=stderr)
                await self.log.wait_writable()
                if tee is not None:
                    tee.put(chunk)
                    if not self._ending:
                        await tee.wait_room()
        finally:
            self._receive_scopes.pop(fd, None)
            self.log.append(self.spec.masker.apply(splitter.flush()), stderr=stderr)

    def _begin_ending(self) -> None:
        """The main process exited: readers stop when idle, and no longer wait for the tee."""
        self._ending = True
        deadline = trio.current_time() + DRAIN_S
        for scope in self._receive_scopes.values():
            scope.deadline = deadline
        for tee in self._tees.values():
            tee.unbounded()

    async def _kill_after_grace(self, pgid: int) -> None:
        await self._stop.wait()
        await trio.sleep(self.spec.grace_s)
        _killpg(pgid, signal.SIGKILL)

    async def _end_job(self, pgid: int) -> None:
        """SIGTERM what is left of the job, then SIGKILL after the grace period."""
        marker = f"{JOB_MARKER}={self.log.job.id}".encode()
        if not _job_alive(pgid, marker):
            return
        _signal_job(pgid, marker, signal.SIGTERM)
        with trio.move_on_after(self.spec.grace_s):
            # No event tells when a process group empties: poll it.
            while _job_alive(pgid, marker):  # noqa: ASYNC110
                await trio.sleep(0.02)
        _signal_job(pgid, marker, signal.SIGKILL)

    def _append_notice(self, text: str) -> None:
        self.log.append([text], stderr=True)
        line = text.encode() + b"\n"
        if 2 in self._tees:
            self._tees[2].put(line)
        elif self.spec.tee:
            with contextlib.suppress(OSError):
                write_all(2, line)


def _take_controlling_terminal() -> None:
    fcntl.ioctl(1, termios.TIOCSCTTY, 0)


def _killpg(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def _job_processes(pgid: int, marker: bytes) -> tuple[bool, list[int]]:
    """Whether the group has live processes, and the live ones outside it with the marker.

    Zombies don't count: where PID 1 does not reap orphans, the job's dead background processes
    linger as zombies, so ``killpg(pgid, 0)`` is not enough.
    """
    group_alive = False
    escaped: list[int] = []
    try:
        names = os.listdir("/proc")
    except OSError:
        return _killpg_probe(pgid), []
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
        if len(fields) < 3 or fields[0] in (b"Z", b"X"):
            continue
        if int(fields[2]) == pgid:
            group_alive = True
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as file:
                environ = file.read()
        except OSError:
            continue
        if marker in environ.split(b"\0"):
            escaped.append(int(name))
    return group_alive, escaped


def _job_alive(pgid: int, marker: bytes) -> bool:
    group_alive, escaped = _job_processes(pgid, marker)
    return group_alive or bool(escaped)


def _signal_job(pgid: int, marker: bytes, signum: int) -> None:
    _killpg(pgid, signum)
    for pid in _job_processes(pgid, marker)[1]:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signum)


def _killpg_probe(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class _Tee:
    """Copies one stream's raw bytes to our own stdout or stderr, from a task of its own.

    ``put`` never blocks; the reader waits in ``wait_room`` while more than
    ``TEE_BUFFER_BYTES`` are not yet written, so a slow terminal slows the command as it would
    without logstream. After the command ended the buffer is unbounded: the pipes are emptied
    into the log whatever the terminal does. A write error (stdout closed, a full disk behind
    a redirect) ends the copy with one notice; the log is not affected.
    """

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._chunks: list[bytes | bytearray] = []
        self._bytes = 0
        self._limit = TEE_BUFFER_BYTES
        self._closed = False
        self._failed = False
        self._changed = trio.Event()

    def put(self, chunk: bytes | bytearray) -> None:
        if not self._failed:
            self._chunks.append(chunk)
            self._bytes += len(chunk)
            self._wake()

    def close(self) -> None:
        self._closed = True
        self._wake()

    def unbounded(self) -> None:
        self._limit = sys.maxsize
        self._wake()

    async def wait_room(self) -> None:
        while self._bytes > self._limit:
            await self._changed.wait()

    async def run(self) -> None:
        while self._chunks or not self._closed:
            if not self._chunks:
                await self._changed.wait()
                continue
            data = b"".join(self._chunks)
            self._chunks.clear()
            try:
                # Abandoned on cancel: a terminal that takes nothing must not hold us.
                await trio.to_thread.run_sync(write_all, self.fd, data, abandon_on_cancel=True)
            except BrokenPipeError:
                self._fail(None)  # our reader went away (`| head`): quietly stop copying
            except OSError as error:
                self._fail(error)
            finally:
                if not self._failed:
                    self._bytes -= len(data)
                self._wake()

    def _fail(self, error: OSError | None) -> None:
        self._failed = True
        self._chunks.clear()
        self._bytes = 0
        if error is not None and self.fd != 2:
            name = {1: "stdout"}.get(self.fd, f"fd {self.fd}")
            with contextlib.suppress(OSError):
                write_all(2, f"logstream: stopped copying to {name}: {error.strerror}\n".encode())

    def _wake(self) -> None:
        self._changed.set()
        self._changed = trio.Event()
