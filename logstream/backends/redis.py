"""Redis Streams as a ``Backend``: any number of ``serve`` nodes share every job.

Theory of operation
-------------------
The layout and the server-side functions are in ``redisformat``, the commands in
``redisstore``, and a node's reading side (one follower per job, fanned out through a ring) in
``redislog``. This module puts them behind the ``Backend`` protocol and adds the two things a
writer needs:

- **Leases.** A job written by this node holds ``logstream:{ID}:lease`` with a TTL of
  ``lease_s``; one task refreshes every lease the node holds every ``lease_s / 3``. A node that
  dies (even by ``kill -9``) stops refreshing, and once the lease expires every node shows the
  job as ``interrupted``.
- **Retries.** Appends are idempotent, so a writer that cannot reach Redis keeps its blocks and
  retries with backoff until Redis is back, instead of losing them: the job's ``LiveLog`` keeps
  serving them from its ring meanwhile, and past its pending limit slows the command down.

Health: one task pings Redis every ``HEALTH_INTERVAL_S``; ``healthy`` is what it last saw, so
``/healthz`` answers from memory however often a load balancer asks.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import secrets
import socket
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import asdict, replace
from typing import Any

import trio

from logstream.backends.protocol import Job
from logstream.errors import (
    BadRequest,
    Conflict,
    JobExists,
    StorageError,
    UnknownJob,
    WriterElsewhere,
)
from logstream.job import utc_now
from logstream.redislog import RedisJobs, RedisLog, job_from_fields
from logstream.redisstore import RedisStore, RedisUnavailable
from logstream.ring import DEFAULT_RING_LINES, Block, blocks_after
from logstream.store import JOB_ID

DEFAULT_LEASE_S = 10.0
HEALTH_INTERVAL_S = 1.0
BATCH_INTERVAL_S = 0.005
RETRY_MIN_S = 0.05
RETRY_MAX_S = 2.0


class RedisBackend:
    """Jobs in Redis; open one with ``RedisBackend.open(url)``."""

    def __init__(
        self,
        store: RedisStore,
        *,
        ring_lines: int = DEFAULT_RING_LINES,
        lease_s: float = DEFAULT_LEASE_S,
    ) -> None:
        self.store = store
        self.lease_s = lease_s
        self.jobs = RedisJobs(store, ring_lines)
        #: Who this node is, as its leases say.
        self.node = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self.healthy = False
        self._leases: set[str] = set()
        self._functions_loaded = False

    @classmethod
    @asynccontextmanager
    async def open(
        cls, url: str, *, ring_lines: int = DEFAULT_RING_LINES, lease_s: float = DEFAULT_LEASE_S
    ) -> AsyncIterator[RedisBackend]:
        """The backend with its tasks (followers, leases, health) running until the block ends.

        Redis may be down now: the node starts anyway and answers 503 until it is back.
        """
        async with RedisStore.connect(url) as store, trio.open_nursery() as nursery:
            backend = cls(store, ring_lines=ring_lines, lease_s=lease_s)
            await backend._check_health()
            await nursery.start(backend.jobs.run)
            nursery.start_soon(backend._keep_healthy)
            nursery.start_soon(backend._keep_leases)
            try:
                yield backend
            finally:
                nursery.cancel_scope.cancel()

    def check_health(self) -> None:
        # The last command that failed to reach Redis counts at once, not at the next ping.
        if not (self.healthy and self.store.reachable):
            raise StorageError("Redis is unavailable; try again shortly")

    def new_job_id(self) -> str:
        # Time-ordered like the data directory's, with enough randomness that IDs made on
        # different nodes at the same microsecond never collide (creation is checked anyway).
        now = dt.datetime.now(dt.UTC)
        return now.strftime("%Y%m%dT%H%M%S%fZ-") + secrets.token_hex(6)

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
    ) -> RedisJobWriter:
        if job_id is not None and not JOB_ID.fullmatch(job_id):
            raise BadRequest(f"job IDs match {JOB_ID.pattern}")
        while True:
            new_id = job_id or self.new_job_id()
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
            created = await self.store.create_job(
                new_id, _fields(job), lease=(self.node, self._lease_ms)
            )
            if created:
                self._leases.add(new_id)
                return RedisJobWriter(self, job, last_stored=0)
            if job_id is not None:
                raise JobExists(f"job {job_id} already exists")

    async def resume_job(self, job_id: str) -> RedisJobWriter:
        # One writer at a time, as with any backend: the lease must be free (its holder
        # released it, or died and it expired). Appends stay idempotent regardless.
        fields, _alive = await self.store.job_fields(job_id)
        if fields["status"] != "running":
            raise Conflict(f"job {job_id} has already ended ({fields['status']})")
        if not await self.store.take_lease(job_id, self.node, self._lease_ms):
            # Alive, or dead (killed) with its lease not yet expired: the runner retries.
            raise WriterElsewhere(f"job {job_id} is being written by another node")
        self._leases.add(job_id)
        job = job_from_fields(fields, lease_alive=True)
        problems = await self.store.problem_count(job_id)
        return RedisJobWriter(self, job, last_stored=job.lines, problems_stored=problems)

    async def open_log(self, job_id: str) -> RedisLog:
        if not JOB_ID.fullmatch(job_id):
            raise UnknownJob(job_id)
        return await self.jobs.get(job_id)

    async def list_jobs(self, limit: int = 500) -> list[Job]:
        return await self.jobs.jobs(limit)

    async def wait_changed(self) -> None:
        await self.jobs.wait_changed()

    async def runner_alive(self, job_id: str) -> bool:
        return await self.store.lease_alive(job_id)

    async def runner_seen(self, job_id: str, for_s: float) -> None:
        with contextlib.suppress(RedisUnavailable):  # the writer's own retries notice it
            await self.store.runner_seen(job_id, int(for_s * 1000))

    async def changed_at(self, job_id: str) -> float:
        if not JOB_ID.fullmatch(job_id):
            raise UnknownJob(job_id)
        return await self.store.changed_at(job_id)

    async def remove_old_jobs(self, keep_days: float | None, keep_jobs: int | None) -> list[str]:
        return await self.store.remove_old_jobs(keep_days, keep_jobs)

    @property
    def _lease_ms(self) -> int:
        return int(self.lease_s * 1000)

    async def _check_health(self) -> None:
        try:
            if not self._functions_loaded:
                # After a Redis restart without persistence the functions are gone too.
                await self.store.load_functions()
                self._functions_loaded = True
            await self.store.ping()
            self.healthy = True
        except RedisUnavailable:
            self.healthy = False
            self._functions_loaded = False

    async def _keep_healthy(self) -> None:
        while True:
            await trio.sleep(HEALTH_INTERVAL_S)
            await self._check_health()

    async def _keep_leases(self) -> None:
        while True:
            await trio.sleep(self.lease_s / 3)
            for job_id in list(self._leases):
                try:
                    await self.store.set_lease(job_id, self.node, self._lease_ms)
                except RedisUnavailable:
                    break  # the health task notices; the next round tries again

    async def _retry(self, attempt: int) -> None:
        await trio.sleep(min(RETRY_MAX_S, RETRY_MIN_S * 2**attempt))


class RedisJobWriter:
    """The writer of one job in Redis (``JobWriter``); retries until Redis takes each block."""

    def __init__(
        self, backend: RedisBackend, job: Job, last_stored: int, problems_stored: int = 0
    ) -> None:
        self._backend = backend
        self._store = backend.store
        self._job = job
        self._stored = last_stored
        #: Records of the job's problem list this writer knows are stored (retries skip them).
        self._problems_stored = problems_stored
        self._finished = False

    @property
    def job(self) -> Job:
        return self._job

    @property
    def last_stored(self) -> int:
        return self._stored

    @property
    def batch_interval_s(self) -> float:
        # Other nodes see a line only once it is in Redis: batch briefly (one round trip per
        # interval), not for the data directory's 200 ms.
        return BATCH_INTERVAL_S

    async def append_blocks(self, blocks: Sequence[Block], *, sync: bool = False) -> int:
        # ``sync`` asks for power-loss safety: with Redis that is its append-only file's
        # fsync policy (docs/scaling.md), not something one append can ask for.
        pending = self._after_stored(list(blocks))
        attempt = 0
        while pending:
            try:
                stored = await self._store.append(self._job.id, pending)
            except RedisUnavailable:
                await self._backend._retry(attempt)
                attempt += 1
                continue
            except UnknownJob:
                # Gone from Redis (a Redis restarted without its append-only file).
                raise StorageError(f"job {self._job.id} is no longer in Redis") from None
            if stored < pending[0].first - 1:
                raise StorageError(f"Redis has job {self._job.id} only up to line {stored}")
            self._stored = max(self._stored, stored)
            pending = self._after_stored(pending)
        return self._stored

    async def append_problems(self, records: Sequence[bytes]) -> None:
        # Retried like lines: the lines that completed these problems wait for them.
        attempt = 0
        while records:
            try:
                self._problems_stored = await self._store.append_problems(
                    self._job.id, self._problems_stored, records
                )
                return
            except RedisUnavailable:
                await self._backend._retry(attempt)
                attempt += 1
            except UnknownJob:
                raise StorageError(f"job {self._job.id} is no longer in Redis") from None

    async def finish(self, job: Job) -> None:
        if self._finished:
            return
        finished_at = job.finished_at or utc_now()
        attempt = 0
        while True:
            try:
                await self._store.finish(
                    job.id, job.status, job.exit_code, finished_at, self._stored, job.problems
                )
                break
            except RedisUnavailable:
                await self._backend._retry(attempt)
                attempt += 1
            except UnknownJob:
                raise StorageError(f"job {job.id} is no longer in Redis") from None
        self._finished = True
        self._job = replace(job, finished_at=finished_at, lines=self._stored)
        self._backend._leases.discard(job.id)

    async def release(self) -> None:
        self._backend._leases.discard(self._job.id)
        if not self._finished:
            await self._store.drop_lease(self._job.id)

    def open_log(self) -> RedisLog:
        # Read only for lines older than the writer's ring: never followed.
        return RedisLog(self._store, self._job, _never_followed)

    def _after_stored(self, blocks: list[Block]) -> list[Block]:
        try:
            return blocks_after(blocks, self._stored)
        except ValueError as error:
            raise StorageError(f"job {self._job.id}: {error}") from None


def _fields(job: Job) -> dict[str, Any]:
    fields = asdict(job)
    fields["command"] = list(job.command)
    fields["meta"] = dict(job.meta)
    return fields


def _never_followed(log: RedisLog) -> None:
    raise RuntimeError("a writer's stored log is read, never followed")
