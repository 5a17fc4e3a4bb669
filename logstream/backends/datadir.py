"""The data directory as a ``Backend``: the default, for one machine.

Theory of operation
-------------------
Files and their format belong to ``store`` (synchronous, called from worker threads); this
module puts them behind the async ``Backend`` protocol.

A job's writer holds the ``flock`` on its ``lock`` file from ``create_job`` until ``finish`` or
``release``; the kernel drops it when the writing process dies, even by ``kill -9``, so "is the
runner alive" is "is the lock held", and a job whose ``job.json`` says ``running`` while nobody
holds the lock reads as ``interrupted``. The end is recorded in this order: the ``end`` record
appended to the log and fsynced, then ``job.json`` rewritten, then the lock released; readers
(``FileLog``) read in the opposite order, so whatever says "ended" is read before the lines are
counted.

``FileLog`` reads a job that another process runs or ran. While the job runs it re-reads the
job's state (file size, last line, end record, ``job.json``) from a worker thread: for every
request that shows the state (``refresh``), and for waiting streams at most every
``POLL_INTERVAL_S``, one read shared by all of them. Its cursor positions are file offsets.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping, Sequence
from contextlib import suppress
from dataclasses import replace
from pathlib import Path
from typing import Any

import trio

from logstream import sse, store
from logstream.backends.protocol import Cursor, Job, JobLog, Read
from logstream.errors import Conflict, StorageError, UnknownJob, WriterElsewhere
from logstream.job import utc_now
from logstream.problemlog import ProblemList
from logstream.ring import Block, Chunk, blocks_after
from logstream.store import DataDir, LogReader, LogWriter, ProblemReader

POLL_INTERVAL_S = 0.1
#: How much of a log file one read takes in (``ReadAhead``): shared by the job's readers.
READ_AHEAD_BYTES = 256 * 1024
#: How long a job's lines are collected before one write to its log file.
FLUSH_INTERVAL_S = 0.2
#: How often ``wait_changed`` returns: the data directory cannot notify, so job lists poll.
LIST_POLL_INTERVAL_S = 1.0


class DataDirBackend:
    """Jobs in ``<path>/jobs/<ID>/``; any number of processes on one machine share it."""

    def __init__(self, path: Path) -> None:
        self.data = DataDir(path)
        #: The ``problems`` file of each job listed running, read on from where the last
        #: listing stopped (``_list_jobs`` runs in worker threads, maybe two at once).
        self._running_problems: dict[str, ProblemReader] = {}
        self._running_problems_lock = threading.Lock()

    @property
    def path(self) -> Path:
        return self.data.path

    def check(self) -> None:
        """Create the directory and prove it writable; ``StorageError`` saying why not."""
        try:
            self.data.create()
            probe = self.data.jobs_path / f".write-test-{os.getpid()}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as error:
            raise StorageError(
                f"cannot use the data directory {self.path}: {error.strerror}"
            ) from None

    def check_health(self) -> None:
        """Always healthy: a failing disk shows in the writes, and the server runs on."""

    def new_job_id(self) -> str:
        job_id, path = self.data.new_job_dir()
        path.rmdir()
        return job_id

    async def create_job(
        self,
        name: str,
        command: Sequence[str],
        *,
        job_id: str | None = None,
        cwd: str = "",
        pid: int | None = None,
        meta: Mapping[str, Any] | None = None,
        owner: str | None = None,
        started_at: str | None = None,
    ) -> DataDirWriter:
        def create() -> DataDirWriter:
            if job_id is None:
                new_id, path = self.data.new_job_dir()
            else:
                new_id, path = job_id, self.data.named_job_dir(job_id)
            lock_fd = store.hold_run_lock(path)
            try:
                job = Job(
                    id=new_id,
                    name=name,
                    command=tuple(command),
                    cwd=cwd,
                    pid=pid,
                    meta=dict(meta or {}),
                    owner=owner,
                    started_at=started_at or utc_now(),
                )
                store.write_job(path, job)
                return DataDirWriter(self.data, path, job, lock_fd, last_stored=0)
            except BaseException:
                os.close(lock_fd)
                raise

        return await trio.to_thread.run_sync(create)

    async def resume_job(self, job_id: str) -> DataDirWriter:
        def resume() -> DataDirWriter:
            path = self.data.job_path(job_id)
            job = self.data.read_job(job_id)
            try:
                lock_fd = store.hold_run_lock(path)
            except BlockingIOError:
                raise WriterElsewhere(f"job {job_id} is being written by another process") from None
            try:
                job = self.data.read_job(job_id)  # as it is now that nobody else writes it
                if job.status not in ("running", "interrupted"):
                    raise Conflict(f"job {job_id} has already ended ({job.status})")
                if LogReader(path).end() is not None:
                    # Its writer recorded the end, then died before rewriting job.json.
                    raise Conflict(f"job {job_id} has already ended")
                job = replace(job, status="running")
                # A writer killed mid-write left a torn record: the next ones follow the last
                # whole one.
                last = store.reopen_log(path)
                return DataDirWriter(self.data, path, job, lock_fd, last_stored=last)
            except BaseException:
                os.close(lock_fd)
                raise

        return await trio.to_thread.run_sync(resume)

    async def open_log(self, job_id: str) -> FileLog:
        return await FileLog.open(self.data, job_id)

    async def list_jobs(self, limit: int = 500) -> list[Job]:
        return await trio.to_thread.run_sync(self._list_jobs, limit)

    def _list_jobs(self, limit: int) -> list[Job]:
        found: list[Job] = []
        for job_id in self.data.job_ids()[:limit]:
            try:
                found.append(self.data.read_job(job_id))
            except (UnknownJob, ValueError, OSError):
                continue  # just created, or removed meanwhile
        with self._running_problems_lock:
            readers, self._running_problems = self._running_problems, {}
            return [self._with_current_problems(job, readers) for job in found]

    def _with_current_problems(self, job: Job, readers: dict[str, ProblemReader]) -> Job:
        """A running job's ``job.json`` has its problem counts only once it ends: until then
        they come from its ``problems`` file, which its runner appends to as it finds them."""
        if job.ended:
            return job
        reader = readers.get(job.id) or ProblemReader(self.data.job_path(job.id))
        self._running_problems[job.id] = reader  # (kept for the jobs still listed running)
        reader.read_new()
        return job.with_problems(reader.problems.shown_counts())

    async def wait_changed(self) -> None:
        await trio.sleep(LIST_POLL_INTERVAL_S)

    async def runner_alive(self, job_id: str) -> bool:
        path = self.data.job_path(job_id)
        return await trio.to_thread.run_sync(store.runner_alive, path)

    async def runner_seen(self, job_id: str, for_s: float) -> None:
        return None  # one server: ``RemoteJobs`` knows when it last heard from the runner

    async def changed_at(self, job_id: str) -> float:
        path = self.data.job_path(job_id)
        return await trio.to_thread.run_sync(store.changed_at, path)

    async def remove_old_jobs(self, keep_days: float | None, keep_jobs: int | None) -> list[str]:
        return await trio.to_thread.run_sync(self.data.gc, keep_days, keep_jobs)


class DataDirWriter:
    """The writer of one job of the data directory; holds its run lock until it ends."""

    def __init__(
        self, data: DataDir, path: Path, job: Job, lock_fd: int, *, last_stored: int
    ) -> None:
        self.path = path
        self._data = data
        self._job = job
        self._lock_fd: int | None = lock_fd
        self._writer: LogWriter | None = LogWriter(path)
        self._last_stored = last_stored
        #: After a failed append nothing more is appended: it could leave a torn record
        #: inside the file (a torn tail is ignored by readers).
        self._broken = False

    @property
    def job(self) -> Job:
        return self._job

    @property
    def last_stored(self) -> int:
        return self._last_stored

    @property
    def batch_interval_s(self) -> float:
        # One write (a thread hop, a few syscalls) per interval: readers of the file on this
        # machine poll it at about the same pace.
        return FLUSH_INTERVAL_S

    async def append_blocks(self, blocks: Sequence[Block], *, sync: bool = False) -> int:
        new = new_blocks(blocks, self._last_stored)
        if not new:
            return self._last_stored
        if self._broken or self._writer is None:
            raise StorageError(f"the log of job {self._job.id} can no longer be written")
        try:
            await trio.to_thread.run_sync(self._writer.write, new, sync)
        except OSError:
            self._broken = True
            raise
        self._last_stored = new[-1].last
        return self._last_stored

    async def append_problems(self, records: Sequence[bytes]) -> None:
        if self._broken or self._writer is None:
            raise StorageError(f"the problems of job {self._job.id} can no longer be written")
        await trio.to_thread.run_sync(store.append_problems, self.path, b"".join(records))

    async def finish(self, job: Job) -> None:
        """Append the end record (unless a write failed), rewrite ``job.json``, unlock.

        Runs to its end even when cancelled: a half-recorded end would read ``interrupted``.
        The first error is raised once all steps were tried.
        """
        self._job = job
        errors: list[OSError] = []
        with trio.CancelScope(shield=True):
            if self._writer is not None:
                writer, self._writer = self._writer, None
                end = sse.encode_end(job.status, job.exit_code)
                try:
                    if self._broken:
                        await trio.to_thread.run_sync(writer.close_quietly)
                    else:
                        await trio.to_thread.run_sync(writer.close, end)
                except OSError as error:
                    errors.append(error)
            if self._lock_fd is not None:
                try:
                    await trio.to_thread.run_sync(store.write_job, self.path, job)
                except OSError as error:
                    errors.append(error)
            await self.release()
        if errors:
            raise errors[0]

    async def release(self) -> None:
        if self._writer is not None:
            writer, self._writer = self._writer, None
            with suppress(OSError):
                writer.close_quietly()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def open_log(self) -> FileLog:
        return FileLog(self._data, self._job)


def new_blocks(blocks: Sequence[Block], last_stored: int) -> list[Block]:
    """``blocks`` without the lines at or below ``last_stored``; ``StorageError`` on a hole."""
    try:
        return blocks_after(blocks, last_stored)
    except ValueError as error:
        raise StorageError(str(error)) from None


class FileLog:
    """A job in the data directory that another process runs or ran.

    ``job`` and ``last`` are what the last ``refresh`` read from disk: callers await
    ``refresh()`` before using them (``Catalog.get`` does), so a cached ``FileLog`` never shows
    a job as it was minutes ago. Reads run in a worker thread, one at a time per job; callers
    that arrive meanwhile share the next read.
    """

    #: Waits poll the disk (``trio.sleep``): end them with a cancel scope.
    interruptible_wait = False

    def __init__(self, data_dir: DataDir, job: Job) -> None:
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
        self._read_ahead = ReadAhead()
        self._problems = ProblemReader(self.path)
        self._problems_lock = trio.Lock()
        self._problems_final = False

    @classmethod
    async def open(cls, data_dir: DataDir, job_id: str) -> FileLog:
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
        return self._job.with_lines(self._last)

    @property
    def last(self) -> int:
        return self._last

    async def refresh(self, max_age_s: float = 0.0) -> None:
        """Make ``job`` and ``last`` come from a disk read begun at most ``max_age_s`` ago.

        With the default 0 the read begins after this call, so whatever the other process had
        written when a request arrived is in the answer.
        """
        if self._final:
            # Nothing changes any more, but ``logstream gc`` may have removed the job.
            if not await trio.to_thread.run_sync(self._exists):
                raise UnknownJob(self._job.id)
            return
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
        read = self._read_ahead.read_after(cursor, max_bytes)
        if read is None:
            # Not in the part read last: read ahead (in a worker thread), shared by every
            # reader of this job that follows; each gets whole records of ``max_bytes``.
            region = await read_file_log(self._reader, cursor, max(max_bytes, READ_AHEAD_BYTES))
            read = self._read_ahead.keep(region, max_bytes)
        self._last = max(self._last, read.chunk.last)
        return read

    def _exists(self) -> bool:
        return (self.path / "job.json").exists()

    async def read_problems(self) -> ProblemList:
        async with self._problems_lock:
            if not self._problems_final:
                # Once the end is known, one more read finds every record: none come later.
                final = self._job.ended
                await trio.to_thread.run_sync(self._problems.read_new)
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
            status, exit_code = self._end
            job = replace(job, status=status, exit_code=exit_code)
        if job.ended:
            job = job.with_lines(max(job.lines, self._last))
            self._last = job.lines
        self._job = job
        self._final = final


class ReadAhead:
    """The part of a log file read last, from which readers that continue exactly (their
    cursor's position is a file offset inside it) get their next records without reading
    the file (a trip to a worker thread each): a client catching up in small pieces costs a
    slice, and the part in memory (``READ_AHEAD_BYTES``) is shared by every reader of the job.
    """

    def __init__(self) -> None:
        self._payload = b""
        self._start = 0  # the file offset of ``_payload[0]``

    def keep(self, read: Read, max_bytes: int) -> Read:
        """Keep what a read of the file found; return its first ``max_bytes`` as the read."""
        payload = read.chunk.payload
        if not payload or not isinstance(read.next.position, int):
            return read
        self._payload = payload
        self._start = read.next.position - len(payload)
        piece = self._piece(0, read.first, max_bytes, read.chunk.time_ms)
        return piece if piece is not None else read

    def read_after(self, cursor: Cursor, max_bytes: int) -> Read | None:
        """The records after ``cursor`` from the kept part, or ``None`` (read the file)."""
        if not isinstance(cursor.position, int):
            return None
        at = cursor.position - self._start
        if not 0 <= at < len(self._payload):
            return None
        return self._piece(at, cursor.seq + 1, max_bytes, 0)

    def _piece(self, at: int, first: int, max_bytes: int, time_ms: int) -> Read | None:
        piece = self._payload[at : at + max_bytes + 1]
        cut = sse.whole_records_within(piece, max_bytes)
        if cut == len(piece) and at + cut < len(self._payload):
            return None  # the first record is longer than the slice: read the file
        piece = piece[:cut]
        start = sse.find_line_record_start(piece)
        if start < 0 or not piece.startswith(b"id: %d\n" % first, start):
            return None  # not where this cursor continues
        last = sse.last_line_seq(piece)
        assert last is not None
        return Read(Chunk(piece, last, time_ms), first, Cursor(last, self._start + at + cut))


async def read_file_log(reader: LogReader, cursor: Cursor, max_bytes: int) -> Read:
    """Records after ``cursor`` from the log file; positions are file offsets."""
    offset = cursor.position if isinstance(cursor.position, int) else -1
    chunk, next_offset, first = await trio.to_thread.run_sync(
        reader.read_after, cursor.seq, offset, max_bytes
    )
    if not chunk.payload:
        return Read(chunk, first, cursor)
    return Read(chunk, first, Cursor(chunk.last, next_offset))


def _check_protocol(backend: DataDirBackend, writer: DataDirWriter, log: FileLog) -> None:
    """Type-checked only: the data directory implements the protocols."""
    from logstream.backends.protocol import Backend, JobWriter

    _b: Backend = backend
    _w: JobWriter = writer
    _l: JobLog = log
