"""The server's side of remote runs: jobs that runners create, append to and end over HTTP.

Theory of operation
-------------------
A remote job lives in the backend like any other; while its runner uploads, this process is
the job's writer (``Backend.create_job`` with the runner's ID, or ``resume_job``) and appends
the runner's blocks, already numbered and encoded, through a ``LiveLog``: viewers are woken per
block as for a local job, and blocks reach the backend in batches. ``RemoteLog`` is what the
catalog serves: the live log while the runner is active, the backend's stored log otherwise.
Only the ``Backend`` protocol is used, so any backend (and any node of a shared one) works.

Requests of one job are serialised by a per-job lock; each answer says the last line stored.
``LiveLog.append_block`` ignores the lines it has and refuses a block that would leave a hole
(``ingest.Conflict`` with the last line), so the runner resumes exactly where the server is.

One writer at a time: with a shared backend (``serve --redis``) the node that has the job live
holds its lease, and another node receiving the runner's requests answers 503
(``WriterElsewhere``) until that lease is gone: the runner backs off and retries. A load balancer
should therefore send one job's ingest requests to one node (docs/scaling.md, by the job ID);
when that node dies, its lease expires after ``--lease-s`` and the next node takes the job over
from what Redis has.

Liveness: every request of the runner (an idle runner repeats its job creation as a heartbeat)
marks it seen. A job not seen for ``runner_timeout_s`` is released: its queued blocks are
stored and the backend's writer given up, so it shows as ``interrupted`` (its viewers get the
end event, as for a local runner that died). The runner's next request resumes it where it
stopped. Until then a released job whose runner is not overdue still shows ``running``: after
a restart of the server, its remote jobs count as last heard from when the backend last
stored something of them (``Backend.changed_at``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import time

import trio

from logstream.backends.protocol import Backend, Cursor, Job, JobLog, Read
from logstream.catalog import Catalog
from logstream.detectproc import STALL_S, shared_process
from logstream.errors import Conflict as StateConflict
from logstream.errors import JobExists, StorageError, Unavailable, UnknownJob
from logstream.ingest import STATUSES, Conflict, JobEnd, NotYours, Records, RemoteJobSpec
from logstream.joblog import LiveLog
from logstream.problemlog import ProblemList
from logstream.ring import DEFAULT_RING_LINES, Block
from logstream.wakeups import Changes

RESTORE_NEWEST_JOBS = 500
WATCH_INTERVAL_S = 1.0
#: How long ``close`` waits for a creation under way, then for the jobs to be let go: long
#: enough for a stuck detector process to be found out (the lines it holds go too).
CLOSE_WAIT_S = STALL_S + 5


def token_owner(token: bytes | None) -> str:
    """What a remote job records of the token that created it: a fingerprint, never the token."""
    return hashlib.sha256(token).hexdigest()[:32] if token else ""


class RemoteLog:
    """One remote job as viewers see it: live while its runner uploads, stored otherwise."""

    interruptible_wait = True

    def __init__(self, stored: JobLog | None, seen_at: float) -> None:
        self.live: LiveLog | None = None
        self.stored = stored
        #: trio time of the runner's last request.
        self.seen_at = seen_at
        #: Quiet for longer than the runner timeout.
        self.overdue = False
        #: trio time this process last told the backend it heard from the runner.
        self.announced_at = -math.inf
        self.lock = trio.Lock()
        self.changes = Changes()

    @property
    def job(self) -> Job:
        if self.live is not None:
            return self.live.job
        assert self.stored is not None
        job = self.stored.job
        if isinstance(self.stored, LiveLog) and self.overdue:
            # Let go, and gone from the backend (``_release_quiet``): all there will be.
            return dataclasses.replace(job, status="interrupted")
        if job.status == "interrupted" and not self.overdue:
            # Its writer is gone because this server let it go (or restarted), not its runner.
            return dataclasses.replace(job, status="running")
        return job

    @property
    def last(self) -> int:
        if self.live is not None:
            return self.live.last
        assert self.stored is not None
        return self.stored.last

    @property
    def received(self) -> int:
        """The last line the server has taken from the runner (``LiveLog.received``)."""
        return self.live.received if self.live is not None else self.last

    @property
    def ended(self) -> bool:
        """The runner recorded the job's end."""
        return self.job.status in STATUSES

    async def refresh(self, max_age_s: float = 0.0) -> None:
        if self.live is None and self.stored is not None:
            await self.stored.refresh(max_age_s)

    async def read_problems(self) -> ProblemList:
        if self.live is not None:
            return await self.live.read_problems()
        assert self.stored is not None
        return await self.stored.read_problems()

    async def read_after(self, cursor: Cursor, max_bytes: int = 1 << 20) -> Read:
        if self.live is not None:
            return await self.live.read_after(cursor, max_bytes)
        assert self.stored is not None
        return await self.stored.read_after(cursor, max_bytes)

    async def wait_beyond(self, seq: int) -> None:
        # A released live log has no more lines but no end either: waiting on it would return
        # at once, for ever (a viewer spinning): the runner's return or overdue wakes this.
        if self.live is not None and not self.live.released:
            await self.live.wait_beyond(seq)
        elif self.last <= seq and not self.job.ended:
            await self.changes.wait()

    def changed(self) -> None:
        self.changes.notify()


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
        self.backend: Backend = catalog.backend
        self.runner_timeout_s = runner_timeout_s
        self.ring_lines = ring_lines
        self._logs: dict[str, RemoteLog] = {}
        self._creating = trio.Lock()
        self._nursery: trio.Nursery | None = None
        self._stopping = False  # ``close`` has begun

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Restore the remote jobs whose runners may still come back, then watch for quiet ones."""
        restored = await self._restore()
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                task_status.started()
                while True:
                    if not restored:  # the backend was down at start (it answers 503 meanwhile)
                        restored = await self._restore()
                    await self._release_quiet()
                    await trio.sleep(min(WATCH_INTERVAL_S, self.runner_timeout_s / 4))
        finally:
            self._nursery = None

    async def close(self) -> None:
        """Store what the live logs hold and stop (the server stops; runners resume later).

        Requests that come meanwhile are answered 503 (runners retry, here after a restart or
        on another node); one under way ends first (each job's lock), and a job being created
        goes live before the others are let go, so none is left behind holding its writer."""
        self._stopping = True
        with trio.move_on_after(CLOSE_WAIT_S):  # (a backend that hangs: go on without it)
            async with self._creating:  # later creations see ``_stopping``
                pass
        # All at once: a shared backend's round trips add up over many jobs. (Out of time, the
        # writers are cancelled: they still store what they have and let their jobs go.)
        with trio.move_on_after(CLOSE_WAIT_S):
            async with trio.open_nursery() as nursery:
                for remote in list(self._logs.values()):
                    nursery.start_soon(_let_go, remote)
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()

    async def create(self, job_id: str, spec: RemoteJobSpec, owner: str) -> tuple[int, bool, bool]:
        """Create the job, or find the runner's own: ``(last, ended, created)``."""
        async with self._creating:
            remote = self._logs.get(job_id)
            created = False
            if remote is None:
                self._check_serving()
                try:
                    writer = await self.backend.create_job(
                        spec.name,
                        spec.command,
                        job_id=job_id,
                        pid=os.getpid(),
                        meta=spec.meta,
                        owner=owner,
                        started_at=spec.started_at,
                    )
                except JobExists:
                    remote = await self._load(job_id)
                else:
                    created = True
                    remote = RemoteLog(None, trio.current_time())
                    await self._go_live(remote, LiveLog(writer, self.ring_lines))
                    self._logs[job_id] = remote
                    self.catalog.add_remote(remote)
        _check_owner(remote, owner)
        async with remote.lock:
            if not remote.ended:
                await self._activate(remote, job_id)
            return remote.received, remote.ended, created

    async def append(self, job_id: str, records: Records, owner: str) -> int:
        """Store the lines of ``records`` the server lacks; the last line stored."""
        remote = await self._get(job_id, owner)
        async with remote.lock:
            if remote.ended:
                raise Conflict("the job has ended", remote.last, ended=True)
            live = await self._activate(remote, job_id)
            time_ms = records.time_ms or time.time_ns() // 1_000_000
            try:
                last = live.append_block(
                    Block(records.first, records.last, records.payload, time_ms)
                )
            except StorageError:
                raise Conflict(
                    f"lines {live.received + 1}..{records.first - 1} are missing: "
                    f"send from line {live.received + 1}",
                    live.received,
                ) from None
            remote.seen_at = trio.current_time()
            # The backend far behind: the runner waits, and keeps its lines meanwhile.
            await live.wait_writable()
            return last

    async def end(self, job_id: str, end: JobEnd, owner: str) -> int:
        """Record the job's end once the server has all its lines; the last line."""
        remote = await self._get(job_id, owner)
        async with remote.lock:
            if remote.ended:
                return remote.last
            live = await self._activate(remote, job_id)
            if live.received != end.lines:
                raise Conflict(
                    f"the job has {end.lines} lines, the server {live.received}: "
                    "send the rest first",
                    live.received,
                )
            live.finish(end.status, end.exit_code)
            await live.wait_closed()
            remote.changed()
            self.catalog.notify()
            self.catalog.retire(job_id)
            self._logs.pop(job_id, None)
            return live.last

    async def _get(self, job_id: str, owner: str) -> RemoteLog:
        async with self._creating:
            remote = self._logs.get(job_id) or await self._load(job_id)
        _check_owner(remote, owner)
        return remote

    async def _load(self, job_id: str, seen_at: float | None = None) -> RemoteLog:
        """A job of the backend this process does not know yet (hold ``_creating``)."""
        stored = await self.backend.open_log(job_id)
        remote = RemoteLog(stored, trio.current_time() if seen_at is None else seen_at)
        if stored.job.owner is not None and not remote.ended:
            self._logs[job_id] = remote
            self.catalog.add_remote(remote)
        return remote

    async def _activate(self, remote: RemoteLog, job_id: str) -> LiveLog:
        """The job's live log, resumed from the backend if it is not live; the runner counts
        as seen. Hold ``remote.lock``."""
        self._check_serving()
        remote.seen_at = now = trio.current_time()
        if now - remote.announced_at >= self.runner_timeout_s / 8:
            # Other nodes: the runner lives, even if this node dies before it is heard again.
            remote.announced_at = now
            await self.backend.runner_seen(job_id, self.runner_timeout_s)
        if remote.live is not None:
            return remote.live
        try:
            writer = await self.backend.resume_job(job_id)
        except StateConflict as error:
            raise Conflict(error.message, remote.last) from None
        live = LiveLog(writer, self.ring_lines)
        await self._go_live(remote, live)
        return live

    def _check_serving(self) -> None:
        if self._stopping:
            raise Unavailable("the server is stopping: send again later")

    async def _go_live(self, remote: RemoteLog, live: LiveLog) -> None:
        try:
            if self._nursery is None:  # (``run`` ended: it is ``close`` that has)
                raise Unavailable("the server is stopping: send again later")
            live.detect_elsewhere(shared_process())
            await self._nursery.start(live.run_writer)
        except BaseException:
            await live.abandon()  # the runner's next request finds the job free to resume
            raise
        remote.live = live
        remote.overdue = False
        remote.changed()
        self.catalog.notify()

    async def _release_quiet(self) -> None:
        deadline = trio.current_time() - self.runner_timeout_s
        for job_id, remote in list(self._logs.items()):
            if remote.seen_at >= deadline or remote.overdue:
                continue
            async with remote.lock:
                live = remote.live
                if remote.seen_at >= deadline or remote.ended:
                    continue
                if live is not None:
                    live.release()
                    await live.wait_closed()
                    remote.live = None
                    remote.stored = live  # what it stored, until the backend's log opens
                if isinstance(remote.stored, LiveLog):
                    try:
                        remote.stored = await self.backend.open_log(job_id)
                    except (StorageError, OSError):
                        continue  # (the backend is unreachable) again on the next pass
                    except UnknownJob:  # gone from the backend (Redis restarted empty)
                        self._logs.pop(job_id, None)
                        self.catalog.retire(job_id)
                remote.overdue = True
                remote.changed()
            self.catalog.notify()

    async def _restore(self) -> bool:
        """Remote jobs that were running when the server stopped: their runners may be
        retrying right now, so they show as running until they are overdue. Whether the
        backend could be asked (if not, the watch asks again)."""
        now = time.time()
        try:
            jobs = await self.backend.list_jobs(RESTORE_NEWEST_JOBS)
        except (StorageError, OSError):
            return False
        for job in jobs:
            if job.owner is None or job.status != "interrupted":
                continue
            try:
                quiet_s = max(0.0, now - await self.backend.changed_at(job.id))
                if quiet_s < self.runner_timeout_s:
                    async with self._creating:
                        # (already here: its runner came back before the backend answered)
                        if job.id not in self._logs:
                            await self._load(job.id, trio.current_time() - quiet_s)
            except UnknownJob:
                continue
            except (StorageError, OSError):
                return False
        return True


async def _let_go(remote: RemoteLog) -> None:
    """Store what the job's live log holds and give its writer up."""
    async with remote.lock:
        if remote.live is not None:
            remote.live.release()
            await remote.live.wait_closed()


def _check_owner(remote: RemoteLog, owner: str) -> None:
    if remote.job.owner != owner:
        raise NotYours("this job was not created by this runner token")
