"""The server's side of remote runs: jobs that runners create, append to and end over HTTP.

Theory of operation
-------------------
A remote job lives in the data directory like any other; while its runner uploads, this process
is the job's writer: it holds the job's run lock and appends the runner's blocks, already
numbered and encoded, through a ``LiveLog`` (so viewers are woken per block, as for a local job,
and the blocks reach the disk in batches). ``RemoteLog`` is what the catalog serves: the live
log while the runner is active, the files otherwise.

Requests of one job are serialised by a per-job lock; each answer says the last line stored.
A block is cut to the lines after that (repeats are ignored) and refused when it would leave a
hole (``ingest.Conflict``), so the runner resumes exactly where the server is.

Liveness: every request of the runner (an idle runner repeats its job creation as a heartbeat)
marks it seen. A job not seen for ``runner_timeout_s`` is suspended: its queued blocks are
written, its lock released, and it shows as ``interrupted`` (its viewers get the end event,
as for a local runner that died). The runner's next request resumes it where it stopped. After
a restart of the server, running remote jobs count as seen when their files last changed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import time
from pathlib import Path

import trio

from logstream import store
from logstream.catalog import Catalog
from logstream.ingest import Conflict, JobEnd, NotYours, Records, RemoteJobSpec
from logstream.joblog import Cursor, LiveLog, Read, _read_disk
from logstream.ring import DEFAULT_RING_LINES, Block
from logstream.store import Job, LogReader, UnknownJob

RESTORE_NEWEST_JOBS = 500
WATCH_INTERVAL_S = 1.0


def token_owner(token: bytes | None) -> str:
    """What a remote job records of the token that created it: a fingerprint, never the token."""
    return hashlib.sha256(token).hexdigest()[:32] if token else ""


class RemoteLog:
    """One remote job as viewers see it: live while its runner uploads, from disk otherwise."""

    def __init__(self, path: Path, job: Job, last: int, seen_at: float) -> None:
        self.path = path
        self.live: LiveLog | None = None
        #: trio time of the runner's last request.
        self.seen_at = seen_at
        self.interrupted = False
        self.ended = job.ended
        self.lock = trio.Lock()
        self._job = job
        self._last = last
        self._reader = LogReader(path)
        self._changed = trio.Event()

    @property
    def job(self) -> Job:
        if self.live is not None:
            return self.live.job
        status = "interrupted" if self.interrupted and not self._job.ended else self._job.status
        return dataclasses.replace(self._job, status=status, lines=self._last)

    @property
    def last(self) -> int:
        return self.live.last if self.live is not None else self._last

    async def read_after(self, cursor: Cursor, max_bytes: int = 1 << 20) -> Read:
        if self.live is not None:
            return await self.live.read_after(cursor, max_bytes)
        return await _read_disk(self._reader, cursor, max_bytes)

    async def wait_beyond(self, seq: int) -> None:
        if self.live is not None:
            await self.live.wait_beyond(seq)
        elif self.last <= seq and not self.job.ended:
            await self._changed.wait()

    def changed(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def went_quiet(self, live: LiveLog) -> None:
        """The live log is suspended: serve the files, as of what it wrote."""
        self.live = None
        self._job = dataclasses.replace(live.job)
        self._last = live.last
        self.interrupted = True
        self.changed()


class RemoteJobs:
    """Remote jobs of one server. Start it with ``await nursery.start(remote_jobs.run)``."""

    def __init__(
        self,
        catalog: Catalog,
        *,
        runner_timeout_s: float = 120.0,
        ring_lines: int = DEFAULT_RING_LINES,
    ) -> None:
        self.catalog = catalog
        self.data_dir = catalog.data_dir
        self.runner_timeout_s = runner_timeout_s
        self.ring_lines = ring_lines
        self._logs: dict[str, RemoteLog] = {}
        self._creating = trio.Lock()
        self._nursery: trio.Nursery | None = None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Restore the running remote jobs of the data directory, then watch for quiet ones."""
        for job, last, age_s in await trio.to_thread.run_sync(self._find_running):
            path = self.data_dir.job_path(job.id)
            remote = RemoteLog(path, job, last, trio.current_time() - age_s)
            self._logs[job.id] = remote
            self.catalog.add_remote(remote)
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                task_status.started()
                while True:
                    await self._interrupt_quiet()
                    await trio.sleep(min(WATCH_INTERVAL_S, self.runner_timeout_s / 4))
        finally:
            self._nursery = None

    async def close(self) -> None:
        """Write what the live logs hold and stop (the server stops; runners resume later)."""
        with trio.move_on_after(5):
            for remote in list(self._logs.values()):
                if remote.live is not None:
                    remote.live.suspend()
                    await remote.live.wait_closed()
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()

    async def create(self, job_id: str, spec: RemoteJobSpec, owner: str) -> tuple[int, bool, bool]:
        """Create the job, or find the runner's own: ``(last, ended, created)``."""
        path = self.data_dir.job_path(job_id)  # raises UnknownJob for an invalid ID
        async with self._creating:
            remote = self._logs.get(job_id)
            created = False
            if remote is None:
                try:
                    await trio.to_thread.run_sync(_make_dir, path)
                except FileExistsError:
                    remote = await self._load(job_id)
                else:
                    created = True
                    job = Job(
                        id=job_id,
                        name=spec.name,
                        command=spec.command,
                        started_at=spec.started_at or store.utc_now(),
                        meta=spec.meta,
                        owner=owner,
                        pid=os.getpid(),
                    )
                    remote = RemoteLog(path, job, 0, trio.current_time())
                    self._logs[job_id] = remote
                    self.catalog.add_remote(remote)
        _check_owner(remote, owner)
        async with remote.lock:
            if not remote.ended:
                await self._activate(remote)
            return remote.last, remote.ended, created

    async def append(self, job_id: str, records: Records, owner: str) -> int:
        """Store the lines of ``records`` the server lacks; the last line stored."""
        remote = await self._get(job_id, owner)
        async with remote.lock:
            if remote.ended:
                raise Conflict("the job has ended", remote.last, ended=True)
            live = await self._activate(remote)
            rest = records.after(live.last)
            if rest is None:
                return live.last
            if rest.first > live.last + 1:
                raise Conflict(
                    f"lines {live.last + 1}..{rest.first - 1} are missing: "
                    f"send from line {live.last + 1}",
                    live.last,
                )
            time_ms = rest.time_ms or time.time_ns() // 1_000_000
            live.append_block(Block(rest.first, rest.last, rest.payload, time_ms))
            remote.seen_at = trio.current_time()
            # The disk far behind: the runner waits, and keeps its lines meanwhile.
            await live.wait_writable()
            return live.last

    async def end(self, job_id: str, end: JobEnd, owner: str) -> int:
        """Record the job's end once the server has all its lines; the last line."""
        remote = await self._get(job_id, owner)
        async with remote.lock:
            if remote.ended:
                return remote.last
            live = await self._activate(remote)
            if live.last != end.lines:
                raise Conflict(
                    f"the job has {end.lines} lines, the server {live.last}: send the rest first",
                    live.last,
                )
            live.finish(end.status, end.exit_code)
            await live.wait_closed()
            remote.ended = True
            remote.changed()
            self.catalog.notify()
            self.catalog.retire(job_id)
            del self._logs[job_id]
            return live.last

    async def _get(self, job_id: str, owner: str) -> RemoteLog:
        self.data_dir.job_path(job_id)
        async with self._creating:
            remote = self._logs.get(job_id) or await self._load(job_id)
        _check_owner(remote, owner)
        return remote

    async def _load(self, job_id: str) -> RemoteLog:
        """A remote job of the data directory not known yet (hold ``_creating``)."""

        def load() -> tuple[Job, int]:
            path = self.data_dir.job_path(job_id)
            try:
                job = Job.from_json((path / "job.json").read_bytes())
            except FileNotFoundError:
                raise UnknownJob(job_id) from None
            reader = LogReader(path)
            if job.status == "running" and (end := reader.end()) is not None:
                job.status, job.exit_code = end  # ended, but job.json was not rewritten
            return job, reader.last_seq()

        job, last = await trio.to_thread.run_sync(load)
        remote = RemoteLog(self.data_dir.job_path(job_id), job, last, trio.current_time())
        if job.owner is not None and not job.ended:
            self._logs[job_id] = remote
            self.catalog.add_remote(remote)
        return remote

    async def _activate(self, remote: RemoteLog) -> LiveLog:
        """The job's live log, opened (lock taken, torn tail cut) if it is not open; the
        runner counts as seen. Hold ``remote.lock``."""
        remote.seen_at = trio.current_time()
        if remote.live is not None:
            return remote.live
        assert self._nursery is not None, "RemoteJobs.run is not running"
        path = self.data_dir.job_path(remote.job.id)
        try:
            lock_fd = await trio.to_thread.run_sync(store.hold_run_lock, path)
        except BlockingIOError:
            raise Conflict("another process writes this job", remote.last) from None
        try:
            last = await trio.to_thread.run_sync(store.reopen_log, path)
            job = dataclasses.replace(remote.job, status="running", lines=last, pid=os.getpid())
            live = LiveLog(path, job, self.ring_lines, start_after=last)
            await self._nursery.start(_write_then_unlock, live, lock_fd)
        except BaseException:
            os.close(lock_fd)
            raise
        remote.live = live
        remote.interrupted = False
        remote.changed()
        self.catalog.notify()
        return live

    async def _interrupt_quiet(self) -> None:
        deadline = trio.current_time() - self.runner_timeout_s
        for remote in list(self._logs.values()):
            if remote.seen_at >= deadline or remote.interrupted or remote.ended:
                continue
            async with remote.lock:
                live = remote.live
                if remote.seen_at >= deadline or remote.ended:
                    continue
                if live is not None:
                    live.suspend()
                    await live.wait_closed()
                    remote.went_quiet(live)
                else:
                    remote.interrupted = True
                    remote.changed()
            self.catalog.notify()

    def _find_running(self) -> list[tuple[Job, int, float]]:
        """Remote jobs that were running when the server stopped: job, last line, quiet for."""
        found = []
        now = time.time()
        for job_id in self.data_dir.job_ids()[:RESTORE_NEWEST_JOBS]:
            path = self.data_dir.job_path(job_id)
            try:
                job = Job.from_json((path / "job.json").read_bytes())
                if job.owner is None or job.ended or store.runner_alive(path):
                    continue
                reader = LogReader(path)
                if reader.end() is not None:
                    continue
                changed = max(
                    (path / name).stat().st_mtime
                    for name in ("job.json", "log")
                    if (path / name).exists()
                )
            except (OSError, ValueError):
                continue
            found.append((job, reader.last_seq(), max(0.0, now - changed)))
        return found


def _check_owner(remote: RemoteLog, owner: str) -> None:
    if remote.job.owner != owner:
        raise NotYours("this job was not created by this runner token")


def _make_dir(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.mkdir()


async def _write_then_unlock(
    live: LiveLog, lock_fd: int, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    try:
        await live.run_writer(task_status=task_status)
    finally:
        os.close(lock_fd)
