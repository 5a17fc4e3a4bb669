"""A job's log as clients read it: live in this process (ring + store) or from the data dir.

Theory of operation
-------------------
``LiveLog`` belongs to a job this process runs. The runner calls ``append`` (sync, never blocks):
the lines are encoded once into a ``Block``, put in the ring and queued for the writer task,
which appends queued blocks to the log file at least every ``FLUSH_INTERVAL_S`` from a worker
thread. Waiting clients are woken once per block: each wait uses the current generation's
``trio.Event``, which ``append`` sets and replaces.

``FileLog`` is a job of the data directory that this process does not run: finished, or run by
another ``logstream run`` on this machine. It reads the log file, and while the job runs it
re-reads the job's state (file size, last line, end record, ``job.json``) from a worker thread:
for every request that shows the state (``refresh``), and for waiting streams at most every
``POLL_INTERVAL_S``, one read shared by all of them.

Both answer ``read_after(cursor)`` with the records after the cursor as one chunk: from the
ring when it still holds the next line, else from disk in large blocks. The ring never evicts a
block before it is on disk, so every line is always in one or the other.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import trio

from logstream import sse, store
from logstream.problemlog import Found, ProblemList, ProblemReader, append_records
from logstream.problems import Detector
from logstream.ring import DEFAULT_RING_LINES, Block, Chunk, Ring
from logstream.store import Job, LogReader, LogWriter

FLUSH_INTERVAL_S = 0.2
FLUSH_BYTES = 8 << 20
MAX_PENDING_BYTES = 32 << 20  # beyond this the runner stops reading until the disk catches up
SYNC_INTERVAL_S = 5.0  # fsync of a running job's log: bounds what a power loss can take
POLL_INTERVAL_S = 0.1
TIME_MARK_EVERY_MS = 1000


@dataclass
class Cursor:
    """A client's position: the last line it has, and where the next record is on disk."""

    seq: int
    offset: int = -1


@dataclass(frozen=True, slots=True)
class Read:
    """What ``read_after`` found: the chunk, and the first line in it (> cursor+1: a gap)."""

    chunk: Chunk
    first: int


class JobLog(Protocol):
    @property
    def job(self) -> Job: ...

    @property
    def last(self) -> int: ...

    async def read_after(self, cursor: Cursor, max_bytes: int = ...) -> Read: ...

    async def wait_beyond(self, seq: int) -> None:
        """Return once a line after ``seq`` exists or the job ended (may return early)."""
        ...

    async def read_problems(self) -> ProblemList:
        """The job's problems found so far (docs/problems.md)."""
        ...


class LiveLog:
    """The log of a job this process runs."""

    def __init__(
        self,
        path: Path,
        job: Job,
        ring_lines: int = DEFAULT_RING_LINES,
        max_pending_bytes: int = MAX_PENDING_BYTES,
    ) -> None:
        self.path = path
        #: Finds problems in each block as it is appended (on the event loop: it is cheap).
        #: Replace it before the first line to give project matchers (``launch.create_job``).
        self.detector = Detector()
        self.problems = ProblemList()
        self._unwritten_problems: list[Found] = []
        self.max_pending_bytes = max_pending_bytes
        self._job = job
        self.ring = Ring(max_lines=ring_lines)
        self._writer = LogWriter(path)
        self._reader = LogReader(path)
        self._pending: list[Block] = []
        self._pending_bytes = 0
        self._changed = trio.Event()
        self._queued = trio.Event()
        self._closed = trio.Event()
        self._persisted = trio.Event()
        self._write_error: OSError | None = None
        self._last_mark_ms = 0
        self._ended = False

    @property
    def job(self) -> Job:
        return self._job

    @property
    def last(self) -> int:
        return self.ring.last

    def append(self, lines: list[str], *, stderr: bool = False) -> None:
        """Add lines read from the command. Never blocks: the runner calls it per read."""
        if not lines or self._ended:
            return
        first = self.ring.last + 1
        payload = sse.encode_lines(first, lines, stderr=stderr)
        now_ms = time.time_ns() // 1_000_000
        if now_ms - self._last_mark_ms >= TIME_MARK_EVERY_MS:
            payload = sse.encode_time(now_ms) + payload
            self._last_mark_ms = now_ms
        block = Block(first, first + len(lines) - 1, payload, now_ms)
        if found := self.detector.feed(first, lines, stderr=stderr):
            self._add_problems(
                [Found(problem, problem.found_at or block.last) for problem in found]
            )
        self.ring.append(block)
        self._job.lines = block.last
        self._pending.append(block)
        self._pending_bytes += len(payload)
        self._queued.set()
        self._changed.set()
        self._changed = trio.Event()

    def finish(self, status: str, exit_code: int | None) -> None:
        """The job ended: no more lines. The writer task records the end and stops."""
        if found := self.detector.flush():
            self._add_problems(
                [Found(problem, problem.found_at or self.ring.last) for problem in found]
            )
        self._job.status = status
        self._job.exit_code = exit_code
        self._job.finished_at = store.utc_now()
        self._ended = True
        self._queued.set()
        self._changed.set()

    def _add_problems(self, found: list[Found]) -> None:
        self.problems.add(found)
        self._unwritten_problems.extend(found)

    async def read_problems(self) -> ProblemList:
        return self.problems

    async def wait_writable(self) -> None:
        """Wait while the disk is far behind: the command's only backpressure.

        Viewers never slow the command, but a disk slower than the command would otherwise make
        the queue of unwritten blocks (which the ring may not evict) grow without bound. Past
        ``max_pending_bytes`` the runner stops reading, the pipe fills and the command waits,
        just as it would writing to that disk itself.
        """
        while self._pending_bytes > self.max_pending_bytes and not self._closed.is_set():
            await self._persisted.wait()

    async def wait_persisted(self, seq: int) -> None:
        """Wait until lines up to ``seq`` are written to the log file."""
        while self.ring.persisted_through < seq:
            await self._persisted.wait()

    async def wait_closed(self) -> None:
        """Wait until the end is recorded on disk."""
        await self._closed.wait()

    async def run_writer(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Append queued blocks to disk until the job ends, then record the end."""
        await trio.to_thread.run_sync(store.write_job, self.path, self._job)
        task_status.started()
        next_sync = trio.current_time() + SYNC_INTERVAL_S
        while True:
            await self._queued.wait()
            if not self._ended and self._pending_bytes < FLUSH_BYTES:
                # Let a batch build up: one write per interval, not one per read.
                with trio.move_on_after(FLUSH_INTERVAL_S):
                    while not self._ended and self._pending_bytes < FLUSH_BYTES:
                        await self._changed.wait()
            self._queued = trio.Event()
            blocks, self._pending, self._pending_bytes = self._pending, [], 0
            await self._write_problems()
            if blocks:
                sync = trio.current_time() >= next_sync
                if sync:
                    next_sync = trio.current_time() + SYNC_INTERVAL_S
                if self._write_error is None:
                    # Shielded: a block taken from the queue must reach the disk.
                    with trio.CancelScope(shield=True):
                        await self._write(self._writer.write, blocks, sync)
                self.ring.mark_persisted(blocks[-1].last)
                self._persisted.set()
                self._persisted = trio.Event()
            if self._ended and not self._pending:
                break
        end = sse.encode_end(self._job.status, self._job.exit_code)
        with trio.CancelScope(shield=True):
            await self._write_problems()
            if self._write_error is None:
                await self._write(self._writer.close, end)
            await self._write(store.write_job, self.path, self._job)
        self._closed.set()
        self._persisted.set()  # nobody waits for a writer that is gone

    async def _write_problems(self) -> None:
        """Problems go to disk before the lines that found them (docs/problems.md)."""
        found, self._unwritten_problems = self._unwritten_problems, []
        if found and self._write_error is None:
            with trio.CancelScope(shield=True):
                await self._write(append_records, self.path, found)

    async def _write(self, write: Callable[..., None], *args: Any) -> None:
        """Run a disk write in a thread; the first failure stops writing this job's log.

        A full or failing disk must not kill the job or lose its exit status. The log file keeps
        its whole records (a torn tail is ignored by readers); later lines are served from
        memory while the ring holds them, and a client that needs older ones gets a ``gap``.
        Appending after a failed write could leave a torn record inside the file, so none is.
        """
        try:
            await trio.to_thread.run_sync(write, *args)
        except OSError as error:
            if self._write_error is None:
                self._write_error = error
                with contextlib.suppress(OSError):
                    sys.stderr.write(
                        f"logstream: cannot write the log of job {self._job.id}: "
                        f"{error.strerror}; later lines are kept in memory only\n"
                    )
                    sys.stderr.flush()

    async def read_after(self, cursor: Cursor, max_bytes: int = 1 << 20) -> Read:
        chunk = self.ring.read_after(cursor.seq, max_bytes)
        if chunk is not None:
            cursor.offset = -1
            return Read(chunk, cursor.seq + 1)
        return await _read_disk(self._reader, cursor, max_bytes)

    async def wait_beyond(self, seq: int) -> None:
        if self.ring.last > seq or self._ended:
            return
        await self._changed.wait()


class FileLog:
    """A job in the data directory that another process runs or ran.

    ``job`` and ``last`` are what the last ``refresh`` read from disk: callers await
    ``refresh()`` before using them (``Catalog.get`` does), so a cached ``FileLog`` never shows
    a job as it was minutes ago. Reads run in a worker thread, one at a time per job; callers
    that arrive meanwhile share the next read.
    """

    def __init__(self, data_dir: store.DataDir, job: Job) -> None:
        """No I/O here: ``open`` reads the job's state in a worker thread."""
        self._data_dir = data_dir
        self.path = data_dir.job_path(job.id)
        self._job = job
        self._reader = LogReader(self.path)
        self._size = -1
        self._last = job.lines
        # job.json says the job ended (or its runner is gone): nothing will change any more.
        self._final = job.ended
        # The end record, which the runner writes before it rewrites job.json.
        self._end: tuple[str, int | None] | None = None
        self._read_started_at = -float("inf")  # trio time at which the last done read began
        self._reading: trio.Event | None = None
        self._problems = ProblemReader(self.path)
        self._problems_lock = trio.Lock()
        self._problems_final = False

    @classmethod
    async def open(cls, data_dir: store.DataDir, job_id: str) -> FileLog:
        """The job's log with its current state; raises ``UnknownJob``."""

        def load() -> FileLog:
            log = cls(data_dir, data_dir.read_job(job_id))
            if not log._final:
                log._refresh_sync()
            return log

        started = trio.current_time()
        log = await trio.to_thread.run_sync(load)
        log._read_started_at = started
        return log

    @property
    def job(self) -> Job:
        return self._job

    @property
    def last(self) -> int:
        return self._last

    async def refresh(self, max_age_s: float = 0.0) -> None:
        """Make ``job`` and ``last`` come from a disk read begun at most ``max_age_s`` ago.

        With the default 0 the read begins after this call, so whatever the other process had
        written when a request arrived is in the answer.
        """
        need_after = trio.current_time() - max_age_s
        while not self._final and self._read_started_at <= need_after:
            if self._reading is not None:
                await self._reading.wait()  # begun too early for us, maybe: loop and check
                continue
            reading = self._reading = trio.Event()
            started = trio.current_time()
            try:
                await trio.to_thread.run_sync(self._refresh_sync)
                self._read_started_at = started
            finally:
                self._reading = None
                reading.set()

    async def read_after(self, cursor: Cursor, max_bytes: int = 1 << 20) -> Read:
        read = await _read_disk(self._reader, cursor, max_bytes)
        self._last = max(self._last, read.chunk.last)
        return read

    async def read_problems(self) -> ProblemList:
        async with self._problems_lock:
            if not self._problems_final:
                final = self._job.ended
                await trio.to_thread.run_sync(self._problems.read_new)
                # Read once more after the end is known: then nothing will be added any more.
                self._problems_final = final
        return self._problems.problems

    async def wait_beyond(self, seq: int) -> None:
        # Every stream of the job polls, but they share one read per POLL_INTERVAL_S.
        while self._last <= seq and not self._job.ended:
            wait = self._read_started_at + POLL_INTERVAL_S - trio.current_time()
            if wait > 0:
                await trio.sleep(wait)
            await self.refresh(max_age_s=POLL_INTERVAL_S)

    def _refresh_sync(self) -> None:
        size = self._reader.size()
        grown = size != self._size
        self._size = size
        # Order matters: the runner appends lines, then the end record, then rewrites
        # job.json. Reading them in the opposite order, whatever says "ended" is read before
        # the lines are counted, so the count is complete. A runner killed by -9 shows only
        # as its lock being free (``read_job`` then says "interrupted").
        job = self._data_dir.read_job(self._job.id)
        final = job.ended
        if grown or final:
            if self._end is None:
                self._end = self._reader.end()
            self._last = max(self._last, self._reader.last_seq())
        if not final and self._end is not None:
            # Ended, but job.json (with finished_at) is not rewritten yet: read again later.
            job.status, job.exit_code = self._end
        if job.ended:
            job.lines = max(job.lines, self._last)
        self._job = job
        self._final = final


async def _read_disk(reader: LogReader, cursor: Cursor, max_bytes: int) -> Read:
    chunk, offset, first = await trio.to_thread.run_sync(
        reader.read_after, cursor.seq, cursor.offset, max_bytes
    )
    cursor.offset = offset if chunk.payload else cursor.offset
    return Read(chunk, first)
