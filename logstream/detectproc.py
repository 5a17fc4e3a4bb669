"""The detector process: problem detection for every job of this process, on another core.

Theory of operation
-------------------
Detection costs Python work per problem (its rule, its record): on a log with a problem every
hundred lines, done on the runner's event loop, it took 17-30 % of ingest throughput
(docs/benchmarks.md). So a serving process hands it to one child (``detectchild``), shared by
all its jobs and started with the first. ``LiveLog`` puts each block's text in memory shared
with the child (a copy, no system call; a block that finds no room rides in its request),
sends a small request (``feed``), and *holds the block* until the child answers with the
problems it completes, as plain rows and ready records (``problemlog.Row``,
``Found.to_record``). Then it adds the problems and lets the block into the ring and the
writer's queue exactly as in-process detection does, so every reader's guarantee holds
unchanged: a stored line's problems are stored before it, and an event stream sends a problem
right after the line that completed it. The runner does no work per problem: rows become
``Found`` objects only when someone reads them. Held blocks count in the runner's backpressure
(``LiveLog.wait_writable``) like blocks the disk has not taken yet.

Requests: ``("open", key, matchers, cwd)``, ``("feed", key, first, stderr, text or (start,
end) in the shared memory, through)``, ``("skip", key, stderr, count, last_text, last_seq)``,
``("end", key, flush)``. Answers, one per ``feed`` and ``end``, in the order asked: ``(key,
through, rows, records, last, needs_every_line)``; a region of the shared memory is free again
once its request is answered (a ring, oldest first).

Lines that cannot matter skip the round trip: a small block (a job writing a line at a time)
that holds no sign of any rule (``problems.holds_signs``, one Hyperscan pass), while no request
of the job is unanswered and its detector's last answer said it does not need every line (no
traceback under way, no project matchers), goes straight into the ring; the child is only told
how many lines it skipped, with the next request. So a job that prints a line at a time pays a
round trip only for the lines that may be problems.

Failure: if the child cannot start, exits, or leaves a request unanswered for ``STALL_S``, it
is killed and every job it served goes on in process (``LiveLog.detection_lost``): the held
blocks are detected there and released, so no line is lost or stuck; what the child knew (a
traceback under way, matchers added by ``::add-matcher::``) is lost with it. The next job
starts a new child; after a child that ended before its first answer (it could not be
started, it failed or crashed importing), none is tried again. One that was stuck (perhaps
only slow on a loaded machine) is. Whatever happens, the child
is killed before its jobs are told, and a job that fails to take an answer (a bug) is that
job's trouble only: this task never raises (a trio system task that raises ends the run).
"""

from __future__ import annotations

import itertools
import mmap
import os
import subprocess
import sys
import tempfile
import time
import traceback
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import trio

import logstream
from logstream.detectchild import frame, unframe
from logstream.matchers import Matcher
from logstream.problemlog import Row

#: A request unanswered this long (real time) means a stuck child: it is killed.
STALL_S = 10.0
#: What its jobs do once the child is lost.
LOST = "problems are found in this process from now on"
#: Memory shared with the child: each block's text goes there (a copy, no system call); a
#: block that finds no room goes in its request instead.
SHARED_BYTES = 16 << 20


class DetectionClient(Protocol):
    """What a job's log hears from the detector process (``joblog.LiveLog``)."""

    def detected(
        self,
        through: int,
        rows: list[Row],
        records: list[bytes],
        last: bool,
        needs_every_line: bool,
    ) -> None:
        """The answer to the next request this job sent: the problems it completed, and
        whether the job's detector needs every line now (``Detector.needs_every_line``)."""

    def detection_lost(self) -> None:
        """The child is gone: detect here from now on; unanswered requests will not be."""


class DetectorProcess:
    """The serving process's handle on the child: requests never wait (they are queued and
    sent by a task), answers are handed to the job that asked."""

    def __init__(self) -> None:
        self.lost = False
        #: The child answered once (it has imported and compiled its rules).
        self.started = False
        #: It could not start, or ended before its first answer (failed or crashed, not
        #: stuck): ``shared_process`` does not try again (it would fail for every job).
        self.failed_to_start = False
        self.pid: int | None = None  # the child's, once started
        #: Set once the child answers (it has imported and compiled its rules) or is lost.
        self.ready = trio.Event()
        self._clients: dict[int, DetectionClient] = {}
        self._keys = itertools.count(1)
        self._out = bytearray()
        self._has_out = trio.Event()
        self._answered_at = time.monotonic()
        self._waiting = trio.Event()  # set while requests are unanswered
        self._stuck = False  # the watchdog killed it
        self._shared_fd, self._shared = _shared_memory()
        self._regions: deque[tuple[int, int]] = deque()  # in use, oldest first
        #: Per unanswered request, oldest first: whether it holds a region.
        self._unanswered: deque[bool] = deque()

    def open(
        self, client: DetectionClient, matchers: Sequence[Matcher], cwd: str | None
    ) -> int | None:
        """A key for the job's requests; ``None`` if the child is lost already."""
        if self.lost:
            return None
        key = next(self._keys)
        self._clients[key] = client
        self._send(("open", key, tuple(matchers), cwd), answered=False)
        return key

    def feed(self, key: int, first: int, stderr: bool, text: str, through: int) -> None:
        shared = self._shared
        data = text.encode("utf-8", "surrogatepass") if shared is not None else b""
        region = self._place(len(data))
        if shared is None or region is None:
            self._send(("feed", key, first, stderr, text, through))
            return
        start, end = region
        shared[start:end] = data
        self._send(("feed", key, first, stderr, region, through), frees=True)

    def skip(self, key: int, stderr: bool, count: int, last_text: str, last_seq: int) -> None:
        """Lines the job did not send (``Detector.skip``); not answered."""
        self._send(("skip", key, stderr, count, last_text, last_seq), answered=False)

    def end(self, key: int, *, flush: bool) -> None:
        """The job has no more lines (``flush``: report a traceback cut short)."""
        self._send(("end", key, flush))

    def _place(self, size: int) -> tuple[int, int] | None:
        """Room for ``size`` bytes in the shared memory, after the regions in use (a ring)."""
        if not size:
            return None
        regions = self._regions
        if not regions:
            start = 0
        else:
            tail, head = regions[0][0], regions[-1][1]
            if head > tail and head + size <= SHARED_BYTES:
                start = head
            elif head > tail and size < tail:
                start = 0  # wrap around
            elif head < tail and head + size < tail:
                start = head
            else:
                return None
        if start + size > SHARED_BYTES:
            return None
        regions.append((start, start + size))
        return start, start + size

    def _send(
        self, message: tuple[Any, ...], *, answered: bool = True, frees: bool = False
    ) -> None:
        if answered:
            if not self._unanswered:
                self._answered_at = time.monotonic()
                self._waiting.set()
            self._unanswered.append(frees)
        self._out += frame(message)
        self._has_out.set()

    async def run(self) -> None:
        """Start the child and serve it until it ends; then its jobs detect in process."""
        try:
            process = await trio.lowlevel.open_process(
                _child_command(self._shared_fd),
                pass_fds=() if self._shared_fd < 0 else (self._shared_fd,),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                env=_child_environment(),
                start_new_session=True,  # a Ctrl-C for the job's terminal is not for it
            )
        except Exception as error:  # OSError, or no sys.executable at all
            _say(f"the detector process cannot start ({error!r}): {LOST}")
            self.failed_to_start = True
            self._lose()
            return
        finally:
            if self._shared_fd >= 0:
                os.close(self._shared_fd)  # the mapping stays
        self.pid = process.pid
        try:
            assert process.stdin is not None and process.stdout is not None
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._send_loop, process.stdin)
                nursery.start_soon(self._watchdog, nursery.cancel_scope)
                await self._receive_loop(process.stdout)
                _say(f"the detector process ended ({await _exit_reason(process)}): {LOST}")
                nursery.cancel_scope.cancel()
        except* (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            _say(f"the detector process ended ({await _exit_reason(process)}): {LOST}")
        except* Exception as group:  # a system task must not raise: say it, go on in process
            _say(f"the detector process failed ({group.exceptions[0]!r}): {LOST}")
        finally:
            process.kill()  # first: nothing below may leave it behind, stopped or stuck
            # Ended before its first answer (an import error, a crash): it would fail again,
            # for every job. One that was only slow (the watchdog's) may start well next time.
            self.failed_to_start = not self.started and not self._stuck
            try:
                self._lose()
            finally:
                with trio.CancelScope(shield=True):
                    await process.wait()

    async def _send_loop(self, stdin: trio.abc.SendStream) -> None:
        while True:
            await self._has_out.wait()
            self._has_out = trio.Event()
            data, self._out = self._out, bytearray()
            await stdin.send_all(data)

    async def _receive_loop(self, stdout: trio.abc.ReceiveStream) -> None:
        buffer = bytearray()
        while data := await stdout.receive_some(1 << 20):
            buffer += data
            for key, through, rows, records, last, needs_every_line in unframe(buffer):
                if not key:
                    self.started = True
                    self._answered_at = time.monotonic()
                    self.ready.set()
                    continue
                if self._unanswered.popleft():
                    self._regions.popleft()
                self._answered_at = time.monotonic()
                if not self._unanswered:
                    self._waiting = trio.Event()
                client = self._clients.pop(key) if last else self._clients.get(key)
                if client is None:
                    continue
                if not _tell(client.detected, through, rows, records, last, needs_every_line):
                    # That job detects in process from now on: its lines must not wait.
                    self._clients.pop(key, None)
                    _tell(client.detection_lost)

    async def _watchdog(self, scope: trio.CancelScope) -> None:
        while True:
            await self._waiting.wait()
            await trio.sleep(min(1.0, STALL_S / 4))
            if self._unanswered and time.monotonic() - self._answered_at >= STALL_S:
                _say(f"the detector process did not answer for {STALL_S:g} s: killed; {LOST}")
                self._stuck = True
                scope.cancel()
                return

    def _lose(self) -> None:
        if self.lost:
            return
        self.lost = True
        self.ready.set()
        clients, self._clients = self._clients, {}
        self._out = bytearray()
        self._regions.clear()
        self._unanswered.clear()
        for client in clients.values():
            _tell(client.detection_lost)


def _shared_memory() -> tuple[int, mmap.mmap | None]:
    """Memory to share with the child, and its file descriptor (Linux: a memfd; elsewhere an
    unlinked temporary file, which the page cache keeps in memory just the same). ``(-1,
    None)`` if there is none to be had (no descriptor or memory left): then every block's text
    goes in its request."""
    fd = -1
    try:
        if hasattr(os, "memfd_create"):
            fd = os.memfd_create("logstream-detector", os.MFD_CLOEXEC)
        else:
            with tempfile.TemporaryFile(prefix="logstream-detector-") as file:
                fd = os.dup(file.fileno())
        os.ftruncate(fd, SHARED_BYTES)
        return fd, mmap.mmap(fd, SHARED_BYTES)
    except OSError as error:
        _say(f"no memory to share with the detector process ({error}): blocks go by pipe")
        if fd >= 0:
            os.close(fd)
        return -1, None


#: Starts the child from this very copy of logstream (its ``__init__.py`` is the first argument),
#: whatever the child's path holds: run with ``-P``, the server's folder is not on it, so a
#: project's ``json.py`` or ``logstream/`` there cannot shadow the standard library or us.
_BOOTSTRAP = """\
import importlib.util, os, sys
init = sys.argv[1]
spec = importlib.util.spec_from_file_location(
    "logstream", init, submodule_search_locations=[os.path.dirname(init)]
)
package = importlib.util.module_from_spec(spec)
sys.modules["logstream"] = package
spec.loader.exec_module(package)
from logstream.detectchild import child_main
child_main(int(sys.argv[2]))
"""


def _child_command(shared_fd: int) -> list[str]:
    return [sys.executable, "-P", "-c", _BOOTSTRAP, logstream.__file__, str(shared_fd)]


def _child_environment() -> dict[str, str]:
    """This environment without logstream's own settings: they hold tokens and a Redis URL,
    and the child needs none of them."""
    return {name: value for name, value in os.environ.items() if not name.startswith("LOGSTREAM_")}


async def _exit_reason(process: trio.Process) -> str:
    """Why the child ended (it closed its output: it has ended, or is about to)."""
    with trio.move_on_after(1):
        await process.wait()
    code = process.returncode
    if code is None:
        return "it closed its output"
    return f"killed by signal {-code}" if code < 0 else f"exit status {code}"


def _say(message: str) -> None:
    sys.stderr.write(f"logstream: {message}\n")


def _tell(call: Callable[..., None], *args: Any) -> bool:
    """Hand a job an answer; a bug there is that job's, not every job's: say it, go on.
    Whether it took the answer."""
    try:
        call(*args)
    except Exception:
        _say("problem detection failed for a job (its problems may be incomplete):")
        traceback.print_exc()
        return False
    return True


_shared: trio.lowlevel.RunVar[DetectorProcess] = trio.lowlevel.RunVar("detector_process")


def shared_process() -> DetectorProcess:
    """This trio run's detector process, started (as a system task) if there is none alive.

    One that was lost is replaced, unless it could not start at all."""
    try:
        process = _shared.get()
        if not process.lost or process.failed_to_start:
            return process  # alive, or cannot start (then jobs detect in process)
    except LookupError:
        pass
    process = DetectorProcess()
    _shared.set(process)
    trio.lowlevel.spawn_system_task(process.run, name="logstream detector process")
    return process
