"""The detector process: problem detection for every job of this process, on another core.

Theory of operation
-------------------
Detection costs Python work per problem (its rule, its record): on a log with a problem every
hundred lines, done on the runner's event loop, it took 13-20 % of ingest throughput
(docs/benchmarks.md). So a serving process hands it to one child, ``python -m
logstream.detectproc``, shared by all its jobs and started with the first. ``LiveLog`` sends
each block's joined text (``feed``) and *holds the block* until the child answers with the
problems it completes, as plain rows and ready records (``problemlog.Row``,
``Found.to_record``); then it adds the problems and lets the block into the ring and the
writer's queue exactly as in-process detection does, so every reader's guarantee holds
unchanged: a stored line's problems are stored before it, and an event stream sends a problem
right after the line that completed it. The runner does no work per problem: rows become
``Found`` objects only when someone reads them.

Frames, both ways: a 4-byte big-endian length and a pickle (the child is our own process).
Requests: ``("open", key, matchers, cwd)``, ``("feed", key, first, stderr, text, through)``,
``("end", key, flush)``. Answers, one per ``feed`` and ``end``, in order:
``(key, through, rows, records, last)``. The child answers each batch of requests it reads in
one write.

Failure: if the child cannot start, exits, or leaves a request unanswered for ``STALL_S``, it
is killed and every job it served goes on in process (``LiveLog.detection_lost``): the held
blocks are detected there and released, so no line is lost or stuck; what the child knew (a
traceback under way, matchers added by ``::add-matcher::``) is lost with it. The next job
starts a new child.
"""

from __future__ import annotations

import itertools
import mmap
import os
import pickle
import struct
import subprocess
import sys
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

import trio

import logstream
from logstream.matchers import Matcher
from logstream.problemlog import Found, Row

#: A request unanswered this long (real time) means a stuck child: it is killed.
STALL_S = 10.0
#: Memory shared with the child: each block's text goes there (a copy, no system call); a
#: block that finds no room goes in its request instead.
SHARED_BYTES = 16 << 20
MATCHER_FILE_MAX_BYTES = 1 << 20
_HEADER = struct.Struct(">I")
READY: tuple[int, int, list[Row], list[bytes], bool] = (
    0,
    0,
    [],
    [],
    False,
)  # the child's first answer: it has started (keys start at 1)


def frame(message: object) -> bytes:
    body = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return _HEADER.pack(len(body)) + body


def unframe(buffer: bytearray) -> Iterator[Any]:
    """The whole messages at the start of ``buffer``, removed from it as they are read."""
    offset = 0
    try:
        while len(buffer) - offset >= _HEADER.size:
            (size,) = _HEADER.unpack_from(buffer, offset)
            end = offset + _HEADER.size + size
            if len(buffer) < end:
                break
            yield pickle.loads(memoryview(buffer)[offset + _HEADER.size : end])
            offset = end
    finally:
        del buffer[:offset]


def matcher_file_reader(cwd: Path) -> Callable[[str], str]:
    """Reads the file an ``::add-matcher::PATH`` line names, relative to the job's folder.

    Blocking: matcher files are small (at most 1 MiB) and rare.
    """

    def read(path: str) -> str:
        with open(cwd / path, "rb") as file:
            data = file.read(MATCHER_FILE_MAX_BYTES + 1)
        if len(data) > MATCHER_FILE_MAX_BYTES:
            raise OSError(0, f"larger than {MATCHER_FILE_MAX_BYTES} bytes")
        return data.decode()

    return read


# -- the child ----------------------------------------------------------------------------------


class _Jobs:
    """The child's side: one ``Detector`` per open job."""

    def __init__(self, shared: mmap.mmap) -> None:
        from logstream.problems import Detector, best_scanner

        self._shared = shared
        best_scanner()  # compiled once, before the first job
        self._new = Detector
        self._detectors: dict[int, Any] = {}

    def handle(self, message: tuple[Any, ...]) -> tuple[Any, ...] | None:
        kind, key = message[0], message[1]
        if kind == "open":
            matchers, cwd = message[2], message[3]
            read_file = matcher_file_reader(Path(cwd)) if cwd is not None else None
            self._detectors[key] = self._new(matchers, read_file=read_file)
            return None
        detector = self._detectors.get(key)
        found: list[Any] = []
        try:
            if kind == "feed":
                first, stderr, text, through = message[2:]
                if isinstance(text, tuple):  # where it is in the shared memory
                    start, end = text
                    text = self._shared[start:end].decode("utf-8", "surrogatepass")
                if detector is not None:
                    found = detector.feed(first, text.split("\n"), stderr=stderr, joined=text)
                last = False
            else:  # "end"
                through = -1
                if detector is not None and message[2]:
                    found = detector.flush()
                self._detectors.pop(key, None)
                last = True
        except Exception:  # a bug in a rule must not stop the job's lines: say it, go on
            traceback.print_exc()
            found = []
        items = [Found(problem, problem.found_at or through) for problem in found]
        return (
            key,
            through,
            [item.to_row() for item in items],
            [item.to_record() for item in items],
            last,
        )


def child_main(shared_fd: int) -> None:
    """Answer requests on stdin until it closes (the serving process ended or died)."""
    jobs = _Jobs(mmap.mmap(shared_fd, 0, prot=mmap.PROT_READ))
    buffer = bytearray()
    os.write(1, frame(READY))
    while True:
        data = os.read(0, 1 << 20)
        if not data:
            return
        buffer += data
        answers = [jobs.handle(message) for message in unframe(buffer)]
        out = b"".join(frame(answer) for answer in answers if answer is not None)
        view = memoryview(out)
        while view:
            view = view[os.write(1, view) :]


# -- the serving process's side -----------------------------------------------------------------


class DetectionClient(Protocol):
    """What a job's log hears from the detector process (``joblog.LiveLog``)."""

    def detected(self, through: int, rows: list[Row], records: list[bytes], last: bool) -> None:
        """The answer to the next request this job sent: the problems it completed."""

    def detection_lost(self) -> None:
        """The child is gone: detect here from now on; unanswered requests will not be."""


class DetectorProcess:
    """The serving process's handle on the child: requests never wait (they are queued and
    sent by a task), answers are handed to the job that asked."""

    def __init__(self) -> None:
        self.lost = False
        self.pid: int | None = None  # the child's, once started
        #: Set once the child answers (it has imported and compiled its rules) or is lost.
        self.ready = trio.Event()
        self._clients: dict[int, DetectionClient] = {}
        self._keys = itertools.count(1)
        self._out = bytearray()
        self._has_out = trio.Event()
        self._unanswered = 0
        self._answered_at = time.monotonic()
        self._waiting = trio.Event()  # set while requests are unanswered
        self._shared_fd = os.memfd_create("logstream-detector", os.MFD_CLOEXEC)
        os.ftruncate(self._shared_fd, SHARED_BYTES)
        self._shared = mmap.mmap(self._shared_fd, SHARED_BYTES)
        self._regions: deque[tuple[int, int]] = deque()  # in use, oldest first
        self._frees: deque[bool] = deque()  # per unanswered request: whether it holds one

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
        data = text.encode("utf-8", "surrogatepass")
        region = self._place(len(data))
        if region is None:
            self._send(("feed", key, first, stderr, text, through))
            return
        start, end = region
        self._shared[start:end] = data
        self._send(("feed", key, first, stderr, region, through), frees=True)

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
            self._unanswered += 1
            self._frees.append(frees)
        self._out += frame(message)
        self._has_out.set()

    async def run(self) -> None:
        """Start the child and serve it until it ends; then its jobs detect in process."""
        try:
            process = await trio.lowlevel.open_process(
                [sys.executable, "-m", "logstream.detectproc", str(self._shared_fd)],
                pass_fds=(self._shared_fd,),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                env=_child_environment(),
                start_new_session=True,  # a Ctrl-C for the job's terminal is not for it
            )
        except OSError:
            self._lose()
            return
        finally:
            os.close(self._shared_fd)  # the mapping stays
        self.pid = process.pid
        try:
            assert process.stdin is not None and process.stdout is not None
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._send_loop, process.stdin)
                nursery.start_soon(self._watchdog, nursery.cancel_scope)
                await self._receive_loop(process.stdout)
                nursery.cancel_scope.cancel()
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass  # the child died: its jobs go on in process
        except Exception as error:  # a system task must not raise: say it, go on in process
            sys.stderr.write(f"logstream: the detector process failed: {error!r}\n")
        finally:
            self._lose()
            process.kill()
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
            for key, through, rows, records, last in unframe(buffer):
                if not key:
                    self.ready.set()
                    continue
                self._unanswered -= 1
                if self._frees.popleft():
                    self._regions.popleft()
                self._answered_at = time.monotonic()
                if not self._unanswered:
                    self._waiting = trio.Event()
                client = self._clients.pop(key) if last else self._clients.get(key)
                if client is not None:
                    client.detected(through, rows, records, last)

    async def _watchdog(self, scope: trio.CancelScope) -> None:
        while True:
            await self._waiting.wait()
            await trio.sleep(1.0)
            if self._unanswered and time.monotonic() - self._answered_at >= STALL_S:
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
        self._frees.clear()
        for client in clients.values():
            client.detection_lost()


def _child_environment() -> dict[str, str]:
    """This environment, with this copy of logstream importable first."""
    env = dict(os.environ)
    root = str(Path(logstream.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    return env


_shared: trio.lowlevel.RunVar[DetectorProcess] = trio.lowlevel.RunVar("detector_process")


def shared_process() -> DetectorProcess:
    """This trio run's detector process, started (as a system task) if there is none alive."""
    try:
        process = _shared.get()
        if not process.lost:
            return process
    except LookupError:
        pass
    process = DetectorProcess()
    _shared.set(process)
    trio.lowlevel.spawn_system_task(process.run, name="logstream detector process")
    return process


if __name__ == "__main__":
    child_main(int(sys.argv[1]))
