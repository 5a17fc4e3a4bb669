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
notices growth by checking the file's size (at most every ``POLL_INTERVAL_S``, shared by all
its clients).

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
        self.ring.append(block)
        self._job.lines = block.last
        self._pending.append(block)
        self._pending_bytes += len(payload)
        self._queued.set()
        self._changed.set()
        self._changed = trio.Event()

    def finish(self, status: str, exit_code: int | None) -> None:
        """The job ended: no more lines. The writer task records the end and stops."""
        self._job.status = status
        self._job.exit_code = exit_code
        self._job.finished_at = store.utc_now()
        self._ended = True
        self._queued.set()
        self._changed.set()

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
            if self._write_error is None:
                await self._write(self._writer.close, end)
            await self._write(store.write_job, self.path, self._job)
        self._closed.set()
        self._persisted.set()  # nobody waits for a writer that is gone

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
    """A job in the data directory that another process runs or ran."""

    def __init__(self, data_dir: store.DataDir, job_id: str) -> None:
        self._data_dir = data_dir
        self.path = data_dir.job_path(job_id)
        self._job = data_dir.read_job(job_id)
        self._reader = LogReader(self.path)
        self._size = -1
        self._last = self._job.lines
        self._checked_at = -1.0
        self._job_checked_at = -1.0
        if not self._job.ended:
            self._refresh_sync()

    @property
    def job(self) -> Job:
        return self._job

    @property
    def last(self) -> int:
        return self._last

    async def read_after(self, cursor: Cursor, max_bytes: int = 1 << 20) -> Read:
        read = await _read_disk(self._reader, cursor, max_bytes)
        self._last = max(self._last, read.chunk.last)
        return read

    async def wait_beyond(self, seq: int) -> None:
        while self._last <= seq and not self._job.ended:
            now = trio.current_time()
            wait = self._checked_at + POLL_INTERVAL_S - now
            if wait > 0:
                await trio.sleep(wait)
                continue
            self._checked_at = now
            await trio.to_thread.run_sync(self._refresh_sync)

    def _refresh_sync(self) -> None:
        size = self._reader.size()
        now = time.monotonic()
        grown = size != self._size
        if grown:
            self._size = size
            self._last = max(self._last, self._reader.last_seq())
        # The end record follows the last line in the log, and job.json follows the end
        # record; a runner killed by -9 shows only as its lock being free.
        if grown or now - self._job_checked_at >= 1.0:
            self._job_checked_at = now
            job = self._data_dir.read_job(self._job.id)
            end = self._reader.end() if grown and not job.ended else None
            if end is not None:
                job.status, job.exit_code = end
            if job.ended:
                self._last = max(self._last, self._reader.last_seq())
                job.lines = max(job.lines, self._last)
            self._job = job


async def _read_disk(reader: LogReader, cursor: Cursor, max_bytes: int) -> Read:
    chunk, offset, first = await trio.to_thread.run_sync(
        reader.read_after, cursor.seq, cursor.offset, max_bytes
    )
    cursor.offset = offset if chunk.payload else cursor.offset
    return Read(chunk, first)
