"""The data directory: the only module that touches log files (format: ``logformat``).

Layout: ``<data-dir>/jobs/<ID>/{job.json, log, index, lock}``. Everything here is synchronous
and called from worker threads by the async layer (``joblog``), so no call blocks the event loop.

Permissions: logs hold whatever a command printed, so the data directory is created 0700 and
every folder and file in it 0700/0600 (whatever the umask). An operator who shares a data
directory with a group makes it group-writable (``chmod 2770``); folders and files are then
created 0770/0660 so the group keeps access. Job folders that are symbolic links are ignored:
they point outside the data directory, and ``gc`` could not remove them anyway.

Who writes what: the process running a job holds an exclusive ``flock`` on its ``lock`` file for
as long as the job runs and is the only writer of its files. The kernel drops the lock when that
process dies, even by ``kill -9``; a job whose ``job.json`` still says ``running`` while nobody
holds the lock was interrupted.
"""

from __future__ import annotations

import bisect
import contextlib
import datetime as dt
import fcntl
import os
import re
import secrets
import shutil
import stat
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import BinaryIO

from logstream import logformat, sse
from logstream.errors import BadRequest, JobExists, UnknownJob
from logstream.fdio import write_all
from logstream.job import Job
from logstream.problemlog import PROBLEMS_FILE, ProblemList, decode_records
from logstream.ring import Block, Chunk

JOB_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
READ_BLOCK_BYTES = 1 << 20
LAST_SEQ_SPAN_BYTES = 64 * 1024
_last_id_time: dt.datetime | None = None


def default_data_dir() -> Path:
    """``$LOGSTREAM_DATA_DIR``, else ``$XDG_STATE_HOME/logstream`` (``~/.local/state``)."""
    if configured := os.environ.get("LOGSTREAM_DATA_DIR"):
        return Path(configured)
    state = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
    return Path(state) / "logstream"


def folder_mode(path: Path) -> int:
    """The mode for new folders under ``path``: 0700, or 0770 when ``path`` is shared with its
    group (group-writable, which no default umask produces)."""
    try:
        shared = os.stat(path).st_mode & stat.S_IWGRP
    except FileNotFoundError:
        shared = 0
    return 0o770 if shared else 0o700


def file_mode(folder: Path) -> int:
    """The mode for new files in ``folder``: 0600, or 0660 in a group-shared folder."""
    return folder_mode(folder) & 0o666


def make_folder(path: Path) -> None:
    """``mkdir`` with the mode ``folder_mode`` of its parent, exactly (the umask ignored)."""
    mode = folder_mode(path.parent)
    path.mkdir(mode=mode)
    os.chmod(path, mode | (os.stat(path.parent).st_mode & stat.S_ISGID))


class DataDir:
    """The jobs of one data directory."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.jobs_path = path / "jobs"

    def create(self) -> None:
        """Create the data directory 0700 (its parents as usual) and ``jobs`` in it.

        An existing directory keeps its mode: the operator may have shared it on purpose.
        """
        if not self.path.is_dir():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(FileExistsError):
                self.path.mkdir(mode=0o700)
                os.chmod(self.path, 0o700)
        if not self.jobs_path.is_dir():
            with contextlib.suppress(FileExistsError):
                make_folder(self.jobs_path)

    def job_path(self, job_id: str) -> Path:
        if not JOB_ID.fullmatch(job_id):
            raise UnknownJob(job_id)
        path = self.jobs_path / job_id
        if path.is_symlink():
            raise UnknownJob(job_id)
        return path

    def new_job_dir(self) -> tuple[str, Path]:
        """A fresh, time-ordered, URL-safe job ID and its (new, empty) directory.

        ``mkdir`` is atomic, so two processes sharing the data directory never get the same ID.
        """
        self.create()
        global _last_id_time
        while True:
            now = dt.datetime.now(dt.UTC)
            # Strictly increasing within a process, even when the clock stands still.
            if _last_id_time is not None and now <= _last_id_time:
                now = _last_id_time + dt.timedelta(microseconds=1)
            _last_id_time = now
            job_id = now.strftime("%Y%m%dT%H%M%S%fZ-") + secrets.token_hex(8)
            path = self.jobs_path / job_id
            try:
                make_folder(path)
            except FileExistsError:
                continue
            return job_id, path

    def named_job_dir(self, job_id: str) -> Path:
        """A new, empty directory for a job whose ID the caller chose; ``JobExists`` if taken."""
        if not JOB_ID.fullmatch(job_id):
            raise BadRequest("a job ID is 1 to 64 of A-Z, a-z, 0-9, '_' and '-'")
        path = self.jobs_path / job_id
        self.create()
        try:
            make_folder(path)
        except FileExistsError:
            raise JobExists(f"job {job_id} already exists") from None
        return path

    def job_ids(self) -> list[str]:
        """IDs of every job with metadata, newest first."""
        try:
            with os.scandir(self.jobs_path) as entries:
                ids = [
                    entry.name
                    for entry in entries
                    if JOB_ID.fullmatch(entry.name) and entry.is_dir(follow_symlinks=False)
                ]
        except FileNotFoundError:
            return []
        return sorted(ids, reverse=True)

    def read_job(self, job_id: str) -> Job:
        """The job's metadata; a ``running`` job whose runner is gone reads as ``interrupted``.

        The runner records ``lines`` in ``job.json`` only at the end: for a job that has not
        ended, the count is the last line in its log, read after ``job.json``.
        """
        path = self.job_path(job_id)
        try:
            job = Job.from_json((path / "job.json").read_bytes())
        except FileNotFoundError:
            raise UnknownJob(job_id) from None
        if job.status == "running" and not runner_alive(path):
            # Re-read: the runner may have finished between the two reads.
            job = Job.from_json((path / "job.json").read_bytes())
            if job.status == "running":
                job = replace(job, status="interrupted")
        if job.status in ("running", "interrupted"):
            job = replace(job, lines=max(job.lines, LogReader(path).last_seq()))
        return job

    def remove_job(self, job_id: str) -> bool:
        """Remove a finished job; a running one is left alone. True when removed."""
        path = self.job_path(job_id)
        if runner_alive(path):
            return False
        shutil.rmtree(path, ignore_errors=True)
        return True

    def gc(self, keep_days: float | None, keep_jobs: int | None) -> list[str]:
        """Remove finished jobs older than ``keep_days`` or beyond the newest ``keep_jobs``."""
        removed: list[str] = []
        cutoff = time.time() - keep_days * 86400 if keep_days is not None else None
        for rank, job_id in enumerate(self.job_ids()):
            try:
                job = self.read_job(job_id)
            except (UnknownJob, ValueError):
                continue
            if not job.ended:
                continue
            too_many = keep_jobs is not None and rank >= keep_jobs
            finished = job.finished_at or job.started_at
            stamp = dt.datetime.fromisoformat(finished.replace("Z", "+00:00")).timestamp()
            too_old = cutoff is not None and stamp < cutoff
            if (too_many or too_old) and self.remove_job(job_id):
                removed.append(job_id)
        return removed


def write_job(path: Path, job: Job) -> None:
    """Replace ``job.json`` atomically (write a temporary file, fsync, rename)."""
    temporary = path / "job.json.tmp"
    data = job.to_json()
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
    with open(os.open(temporary, flags, file_mode(path)), "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, path / "job.json")


def reopen_log(path: Path) -> int:
    """Make the files of a job without an end record fit for appending; the last line on disk.

    A writer killed mid-write leaves a torn record at the end of ``log`` (readers ignore it) and
    maybe index entries past the whole records. Before anyone appends, both are cut back, so the
    new records follow the last whole one and no index entry points into them by mistake.
    """
    log_path, index_path = path / "log", path / "index"
    with contextlib.suppress(FileNotFoundError), open(log_path, "r+b") as log:
        size = log.seek(0, os.SEEK_END)
        span = LAST_SEQ_SPAN_BYTES
        while True:
            start = max(0, size - span)
            log.seek(start)
            tail = log.read(span)
            cut = logformat.whole_length(tail)
            if cut or start == 0:
                break
            span *= 4
        whole = start + cut
        if whole < size:
            log.truncate(whole)
        with contextlib.suppress(FileNotFoundError), open(index_path, "r+b") as index:
            entries = index.read()
            keep = 0
            for _seq, offset, _time_ms in logformat.unpack_index(entries):
                if offset >= whole:
                    break
                keep += logformat.INDEX_ENTRY.size
            if keep < len(entries):
                index.truncate(keep)
    return LogReader(path).last_seq()


def changed_at(path: Path) -> float:
    """Unix time of the last write to the job's files (``UnknownJob`` when there are none)."""
    times = []
    for name in ("job.json", "log"):
        with contextlib.suppress(FileNotFoundError):
            times.append((path / name).stat().st_mtime)
    if not times:
        raise UnknownJob(path.name)
    return max(times)


def hold_run_lock(path: Path) -> int:
    """Take the job's run lock for the life of this process; returns the file descriptor."""
    fd = os.open(path / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, file_mode(path))
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return fd


def runner_alive(path: Path) -> bool:
    """Whether some process still holds the job's run lock."""
    try:
        fd = os.open(path / "lock", os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


class LogWriter:
    """Appends blocks to a job's log and index. Not thread-safe: one writer task calls it."""

    def __init__(self, path: Path) -> None:
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
        mode = file_mode(path)
        self._log = os.open(path / "log", flags, mode)
        self._index = os.open(path / "index", flags, mode)
        self._size = os.fstat(self._log).st_size
        self._indexed_at = -logformat.INDEX_EVERY_BYTES

    def write(self, blocks: list[Block], sync: bool = False) -> None:
        """Append ``blocks``; with ``sync``, also fsync them (power-loss safety)."""
        entries: list[bytes] = []
        offset = self._size
        for block in blocks:
            if offset - self._indexed_at >= logformat.INDEX_EVERY_BYTES:
                record = sse.find_line_record(block.payload, block.first)
                entries.append(
                    logformat.pack_index_entry(block.first, offset + record, block.time_ms)
                )
                self._indexed_at = offset
            offset += len(block.payload)
        _write_blocks(self._log, [block.payload for block in blocks])
        self._size = offset
        if entries:
            write_all(self._index, b"".join(entries))
        if sync:
            os.fsync(self._log)

    def close(self, end_record: bytes) -> None:
        """Append the end record, make everything durable, and close."""
        write_all(self._log, end_record)
        os.fsync(self._log)
        os.fsync(self._index)
        self.close_quietly()

    def close_quietly(self) -> None:
        """Close without an end record (after a failed write, or to give the job up)."""
        os.close(self._log)
        os.close(self._index)


def _read_records(file: BinaryIO, offset: int, max_bytes: int) -> bytes:
    """The whole records from ``offset`` (at least one when there is one), without the end."""
    size = max_bytes
    while True:
        file.seek(offset)
        data = file.read(size)
        whole = logformat.whole_length(data)
        if whole or len(data) < size:
            break
        size *= 2  # a record longer than the block: read more
    records = data[:whole]
    end = logformat.end_record_at(records)
    return records[:end] if end >= 0 else records


def _write_blocks(fd: int, payloads: list[bytes]) -> None:
    """Append ``payloads`` with ``writev``: no joined copy, the GIL released throughout.

    At a million lines a second the writer flushes ~10 MB every 0.2 s; joining it first held
    the GIL for milliseconds, a stall for every client (docs/benchmarks.md).
    """
    batch_max = min(os.sysconf("SC_IOV_MAX"), 1024)
    views = [memoryview(payload) for payload in payloads if payload]
    at = 0
    while at < len(views):
        written = os.writev(fd, views[at : at + batch_max])
        while written:
            size = len(views[at])
            if written < size:
                views[at] = views[at][written:]
                break
            written -= size
            at += 1


class LogReader:
    """Reads a job's log by sequence number, also while another process appends to it.

    Thread-safe: all clients of a job share one reader and call it from worker threads at once.
    Its only mutable state, the index loaded so far, is guarded by a lock.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._index_lock = threading.Lock()
        self._seqs: list[int] = []
        self._entries: list[tuple[int, int, int]] = []
        self._index_bytes = 0

    def read_after(
        self, cursor: int, offset: int = -1, max_bytes: int = READ_BLOCK_BYTES
    ) -> tuple[Chunk, int, int]:
        """Records after line ``cursor``: ``(chunk, next_offset, first_seq_found)``.

        ``offset`` is where the record after ``cursor`` starts, when known from the previous
        read. ``first_seq_found`` is the sequence number of the first line in the chunk (more
        than ``cursor + 1`` only when lines were lost: the caller reports a gap). The chunk
        stops before the ``end`` record; an empty chunk means nothing newer is on disk yet.
        """
        time_ms = 0
        if offset < 0:
            offset, time_ms = self._seek(cursor + 1)
        try:
            file = open(self.path / "log", "rb")  # noqa: SIM115
        except FileNotFoundError:
            return Chunk(b"", cursor, 0), 0, cursor + 1
        with file:
            while True:
                records = _read_records(file, offset, max_bytes)
                start = sse.find_line_record(records, cursor + 1)
                first_found = cursor + 1
                if start < 0:
                    start = sse.find_line_record_start(records)
                    if start < 0:
                        # Only time marks (or nothing) so far.
                        return Chunk(b"", cursor, time_ms), offset, cursor + 1
                    first_found = int(records[start + 4 : records.index(b"\n", start)])
                    if first_found <= cursor:
                        # The index pointed before the cursor and the wanted line is not in
                        # this block: skip what the client has and read on.
                        offset += len(records)
                        continue
                chunk_records = records[start:]
                last = sse.last_line_seq(chunk_records)
                assert last is not None
                # Time marks after the last line stay for the next read.
                last_end = chunk_records.index(b"\n\n", chunk_records.rfind(b"id: ")) + 2
                chunk = Chunk(chunk_records[:last_end], last, time_ms)
                return chunk, offset + start + last_end, first_found

    def last_seq(self) -> int:
        """The last line's sequence number on disk (0 when none)."""
        try:
            with open(self.path / "log", "rb") as file:
                size = file.seek(0, os.SEEK_END)
                # Most records are short: a small tail usually holds the last one. A record can
                # be long (a line of 64 KiB with many CRs), so the span grows until one fits.
                span = LAST_SEQ_SPAN_BYTES
                while True:
                    file.seek(max(0, size - span))
                    data = file.read(span)
                    data = data[: logformat.whole_length(data)]
                    last = sse.last_line_seq(data)
                    if last is not None or span >= size:
                        return last or 0
                    span *= 4
        except FileNotFoundError:
            return 0

    def end(self) -> tuple[str, int | None] | None:
        """The ``(status, exit_code)`` of the log's end record, if it has one."""
        with contextlib.suppress(FileNotFoundError), open(self.path / "log", "rb") as file:
            size = file.seek(0, os.SEEK_END)
            file.seek(max(0, size - 4096))
            data = file.read()
            at = logformat.end_record_at(data[: logformat.whole_length(data)])
            if at >= 0:
                return logformat.parse_end_record(data[at:])
        return None

    def size(self) -> int:
        try:
            return os.stat(self.path / "log").st_size
        except FileNotFoundError:
            return 0

    def _seek(self, seq: int) -> tuple[int, int]:
        """Offset of an indexed record at or before line ``seq``, and its time."""
        size = self.size()
        with self._index_lock:
            self._load_index()
            at = bisect.bisect_right(self._seqs, seq) - 1
            while at >= 0:
                _seq, offset, time_ms = self._entries[at]
                # An entry past the end of the log (torn by a crash, or newer than ``size``)
                # is ignored.
                if offset < size:
                    return offset, time_ms
                at -= 1
        return 0, 0

    def _load_index(self) -> None:
        """Read the index entries appended since the last call (hold ``_index_lock``)."""
        try:
            with open(self.path / "index", "rb") as file:
                file.seek(self._index_bytes)
                data = file.read()
        except FileNotFoundError:
            return
        whole = logformat.whole_index_length(data)
        for entry in logformat.unpack_index(data[:whole]):
            if not self._seqs or entry[0] > self._seqs[-1]:
                self._seqs.append(entry[0])
                self._entries.append(entry)
        self._index_bytes += whole


def append_problems(job_path: Path, data: bytes) -> None:
    """Append problem records (``Found.to_record``) to the job's ``problems`` file
    (docs/data-dir.md)."""
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
    fd = os.open(job_path / PROBLEMS_FILE, flags, file_mode(job_path))
    try:
        write_all(fd, data)
    finally:
        os.close(fd)


class ProblemReader:
    """Follows a job's ``problems`` file that another process may still be writing."""

    def __init__(self, job_path: Path) -> None:
        self.path = job_path / PROBLEMS_FILE
        self.problems = ProblemList()
        self._offset = 0

    def read_new(self) -> None:
        """Add the whole records appended since the last call."""
        try:
            with open(self.path, "rb") as file:
                file.seek(self._offset)
                data = file.read()
        except FileNotFoundError:
            return
        found, used = decode_records(data)
        self._offset += used
        self.problems.add(found)
