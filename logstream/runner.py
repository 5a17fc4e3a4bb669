"""Run a command as a job: its output becomes lines in a ``LiveLog``, byte-exact in our terminal.

Theory of operation
-------------------
The command runs in its own session, so its process group is exactly the job: signals go to
the whole group (``killpg``), and nothing of the job outlives us. Its stdout and stderr are two
pipes, or with ``pty=True`` two pseudo-terminals (so that it line-buffers and keeps its colours
on both, and its stderr lines stay stderr lines; the stdout one is its controlling terminal).
One reader task polls both with an epoll set of its own, which reports them in the order they
became readable, and reads up to 64 KiB from each ready one in that order: between the streams
the log keeps the order in which the command wrote, as far as the kernel lets us see it (a
reader that is woken for both at once cannot tell; one task per stream would toss a coin every
time). Each chunk goes through its stream's line splitter into the log (``LiveLog.append``,
which never blocks), then, unless quiet, to a ``_Tee`` that copies it to our own stdout/stderr
as is from a task of its own. A slow terminal (``| less``) slows the command, as it would
without logstream, through the tee's bounded buffer; but the log never waits on the terminal
once the command has ended, so no line is lost to a slow or stuck terminal.

The pseudo-terminals get a fixed size (``pty_size``), or follow the size of our own terminal
(``terminal_fd``) and its resizes (SIGWINCH). Pagers would wait for a key nobody presses, so
the command's environment says ``PAGER=cat`` and the like (``PAGER_ENV``), as CI agents do.

Ending: when the main process exits, background processes it left may still hold the pipes.
They get ``DRAIN_S`` to finish writing, then whatever is left of the job gets SIGTERM, and
SIGKILL after the grace period. "The job" is its process group, plus any process that left
the group (``setsid``) but still carries the job's marker in its environment
(``LOGSTREAM_JOB_ID``, as Jenkins does with ``BUILD_ID``). The reader then reads what is left in
the pipes and stops at EOF, or once they have been idle for ``DRAIN_S``.
When we are told to stop (Ctrl-C, SIGTERM, a cancel request), the signal goes to the group at
once and SIGKILL follows after the grace period; the terminal copy is then abandoned after
``DRAIN_S`` if the terminal does not take it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import select
import signal
import struct
import subprocess
import sys
import termios
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import trio

from logstream.config import TOKEN_VARIABLES
from logstream.fdio import write_all
from logstream.joblog import LiveLog
from logstream.jobspec import JobSpec
from logstream.lines import DEFAULT_LINE_LIMIT, LineSplitter
from logstream.workflow import add_mask_value

READ_BYTES = 64 * 1024
TEE_BUFFER_BYTES = 1 << 20  # beyond this a slow terminal slows the command, as without us
DRAIN_S = 0.5
JOB_MARKER = "LOGSTREAM_JOB_ID"
#: Set for every command run under a pseudo-terminal: a pager would wait for a key forever.
PAGER_ENV = {
    "PAGER": "cat",
    "GIT_PAGER": "cat",
    "MANPAGER": "cat",
    "SYSTEMD_PAGER": "cat",
    "AWS_PAGER": "",
}


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
    _wait_scope: trio.CancelScope | None = None
    _masters: list[int] = field(default_factory=list)
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
        if self.spec.pty and self.spec.terminal_fd is not None:
            # Listening before the command starts: no resize of our terminal goes unseen.
            with trio.open_signal_receiver(signal.SIGWINCH) as resizes:
                return await self._run(resizes)
        return await self._run(None)

    async def _run(self, resizes: AsyncIterator[int] | None) -> RunOutcome:
        try:
            process, fds = await self._start()
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
                nursery.start_soon(self._read_all, fds, readers_done)
                nursery.start_soon(self._kill_after_grace, process.pid)
                if resizes is not None:
                    nursery.start_soon(self._follow_terminal_size, resizes)
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
            for fd in fds:
                os.close(fd)
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

    async def _start(self) -> tuple[trio.Process, list[int]]:
        """Start the command; the non-blocking read ends of its stdout and stderr."""
        env = dict(os.environ if self.spec.env is None else self.spec.env)
        for name in TOKEN_VARIABLES:
            env.pop(name, None)  # a job that prints its environment must not print our token
        env[JOB_MARKER] = self.log.job.id
        if self.spec.pty:
            env.setdefault("TERM", "xterm-256color")
            env.update(PAGER_ENV)
            pairs = [os.openpty(), os.openpty()]
        else:
            pairs = [os.pipe(), os.pipe()]
        reads = [read for read, _write in pairs]
        try:
            for read, write in pairs:
                os.set_blocking(read, False)
                if self.spec.pty:
                    _set_size(write, self._size())
                    attributes = termios.tcgetattr(write)
                    attributes[1] &= ~termios.ONLCR  # keep "\n" as is: no "\r\n" on every line
                    termios.tcsetattr(write, termios.TCSANOW, attributes)
            process = await trio.lowlevel.open_process(
                list(self.spec.command),
                stdin=subprocess.DEVNULL,
                stdout=pairs[0][1],
                stderr=pairs[1][1],
                start_new_session=True,
                cwd=self.spec.cwd,
                env=env,
                preexec_fn=_take_controlling_terminal if self.spec.pty else None,
            )
        except BaseException:
            for read in reads:
                os.close(read)
            raise
        finally:
            for _read, write in pairs:
                os.close(write)
        if self.spec.pty:
            self._masters = reads
        return process, reads

    def _size(self) -> tuple[int, int]:
        if self.spec.terminal_fd is not None:
            with contextlib.suppress(OSError):
                columns, rows = os.get_terminal_size(self.spec.terminal_fd)
                if columns > 0 and rows > 0:
                    return columns, rows
        return self.spec.pty_size

    async def _follow_terminal_size(self, resizes: AsyncIterator[int]) -> None:
        """Resize the pseudo-terminals with ours: the job gets SIGWINCH as it would without us."""
        async for _ in resizes:
            size = self._size()
            for master in self._masters:
                with contextlib.suppress(OSError):
                    _set_size(master, size)

    async def _read_all(self, fds: list[int], done: trio.Event) -> None:
        """Read stdout (``fds[0]``) and stderr (``fds[1]``) to EOF, in the order they are ready."""
        streams = {
            fd: _Stream(
                fd,
                LineSplitter(self.line_limit, self.spec.masker),
                number == 2,
                self._tees.get(number),
            )
            for number, fd in enumerate(fds, start=1)
        }
        poller = select.epoll()
        try:
            for fd in fds:
                poller.register(fd, select.EPOLLIN)
            while streams:
                ready = poller.poll(0)
                if not ready:
                    scope = self._wait_scope = trio.CancelScope()
                    if self._ending:
                        scope.deadline = trio.current_time() + DRAIN_S
                    with scope:
                        await trio.lowlevel.wait_readable(poller.fileno())
                    self._wait_scope = None
                    if scope.cancelled_caught:
                        break  # idle since the job ended: a leftover holds the pipe
                    continue
                # stdout before stderr when both have data: a command that writes stdout first
                # (``::add-mask::VALUE``, then the value on stderr) is read in that order.
                ready.sort(key=lambda event: streams[event[0]].stderr)
                for fd, _events in ready:
                    stream = streams[fd]
                    try:
                        chunk = os.read(fd, READ_BYTES)
                    except BlockingIOError:
                        continue
                    except OSError:
                        chunk = b""  # a pseudo-terminal reports the end of output as EIO
                    if not chunk:
                        poller.unregister(fd)
                        del streams[fd]
                        self._flush(stream)
                        continue
                    self._append(stream.splitter.feed(chunk), stream.stderr)
                    await self.log.wait_writable()
                    if stream.tee is not None:
                        stream.tee.put(chunk)
                        if not self._ending:
                            await stream.tee.wait_room()
                await trio.lowlevel.checkpoint()
        finally:
            self._wait_scope = None
            poller.close()
            for stream in streams.values():
                self._flush(stream)
        done.set()

    def _flush(self, stream: _Stream) -> None:
        self._append(stream.splitter.flush(), stream.stderr)

    def _append(self, lines: list[str], stderr: bool) -> None:
        if not lines:
            return
        # Joined once: for ``::add-mask::`` here and for the problem detector's scan.
        joined = "\n".join(lines)
        if "::add-mask::" in joined:
            lines = self._masked(lines)
            joined = "\n".join(lines)
        self.log.append(lines, stderr=stderr, joined=joined)

    def _masked(self, lines: list[str]) -> list[str]:
        """``::add-mask::VALUE`` masks VALUE in itself and every later line.

        As on GitHub Actions: a job can hide a secret it computes (a token it fetched) before
        printing it. Lines of either stream read after it are masked. The splitter has masked
        every line already (before cutting long ones), but with the values known when it read
        them: the ``::add-mask::`` line itself and the lines after it are masked again.
        """
        masker = self.spec.masker
        masked: list[str] = []
        start = 0
        for n, line in enumerate(lines):
            if (value := add_mask_value(line)) is not None:
                masked += masker.apply(lines[start:n]) if start else lines[:n]
                masker.add(value)
                start = n
        return masked + masker.apply(lines[start:])

    def _begin_ending(self) -> None:
        """The main process exited: readers stop when idle, and no longer wait for the tee."""
        self._ending = True
        if self._wait_scope is not None:
            self._wait_scope.deadline = trio.current_time() + DRAIN_S
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

    def notice(self, message: str) -> None:
        """One ``logstream: `` line on our stderr, in order with the job's own stderr copy."""
        self._to_terminal(f"logstream: {message}", quiet_too=True)

    def _append_notice(self, text: str) -> None:
        self.log.append([text], stderr=True)
        self._to_terminal(text)

    def _to_terminal(self, text: str, *, quiet_too: bool = False) -> None:
        line = text.encode() + b"\n"
        if 2 in self._tees:
            self._tees[2].put(line)
        elif self.spec.tee or quiet_too:
            with contextlib.suppress(OSError):
                write_all(2, line)


@dataclass
class _Stream:
    fd: int
    splitter: LineSplitter
    stderr: bool
    tee: _Tee | None


def _set_size(fd: int, size: tuple[int, int]) -> None:
    columns, rows = size
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))


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
