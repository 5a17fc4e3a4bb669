"""Jobs kept in Redis as one node's clients read them: one follower per job, fanned out locally.

Theory of operation
-------------------
A node may serve thousands of clients of one job; Redis must see that job once. ``RedisLog``
is the node's single view of one job. While some client waits for lines beyond what the node
has, one follower task holds a blocking ``XREAD`` on the job's stream and appends every block
it gets to the log's ``Ring`` (the same ring a local job has), waking all waiting clients once
per batch. Clients then read from the ring; only a client behind the ring (a resume far back,
or the first read of a finished job) reads from Redis itself, a few large ``XRANGE`` entries
at a time (``RedisStore.read_entries``), and joins the ring once it has caught up.

The ring starts at whatever line is newest when the follower starts (it never holds older
lines), and every block in Redis is final, so the ring may evict any block at any time. The
follower stops when no client has waited for ``IDLE_S`` or the job ended; its ring goes with
it. A blocking read returns every ``FOLLOW_BLOCK_MS`` without news so the follower can notice
a runner whose lease expired (the job then reads as interrupted and its streams end).

When Redis cannot be reached, the follower stops and wakes every client; their next read fails
with ``RedisUnavailable`` and their streams end, so they resume later, on any node.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import trio

from logstream.backends.protocol import Cursor, Job, Read
from logstream.problemlog import ProblemList, decode_records
from logstream.redisformat import End, chunk_after
from logstream.redisstore import FOLLOW_BLOCK_MS, RANGE_COUNT, RedisStore, RedisUnavailable
from logstream.ring import DEFAULT_RING_LINES, Block, Chunk, Ring
from logstream.wakeups import Changes

#: A follower with no waiting client for this long stops (the next client starts another).
IDLE_S = 30.0


def job_from_fields(fields: dict[str, Any], lease_alive: bool) -> Job:
    """The job as the API shows it; ``running`` without a live lease reads as interrupted."""
    known = {name: value for name, value in fields.items() if name in Job.__dataclass_fields__}
    job = Job(**known)  # "command" may be a list: Job makes it a tuple
    if job.status == "running" and not lease_alive:
        return replace(job, status="interrupted")
    return job


class RedisLog:
    """One job in Redis, as this node serves it (``JobLog``)."""

    interruptible_wait = True

    def __init__(
        self,
        store: RedisStore,
        job: Job,
        start_follower: Callable[[RedisLog], None],
        ring_lines: int = DEFAULT_RING_LINES,
    ) -> None:
        self.store = store
        self._job = job
        self._last = job.lines
        self._start_follower = start_follower
        self.ring_lines = ring_lines
        self.ring: Ring | None = None
        self.following = False
        self.changes = Changes()
        self._unavailable: RedisUnavailable | None = None
        self.last_wait = -math.inf
        self._entry_bytes = 64 * 1024
        #: Set when the job-list watcher hears of a change to this job (removed, say).
        self.stale = False
        self._problems = ProblemList()
        self._problems_read = 0  # records of the Redis list already in ``_problems``
        self._problems_final = False
        self._problems_lock = trio.Lock()

    @property
    def job(self) -> Job:
        return self._job.with_lines(self._last)

    @property
    def last(self) -> int:
        return self._last

    @property
    def ended(self) -> bool:
        return self._job.ended

    async def refresh(self, max_age_s: float = 0.0) -> None:
        """Read the job's state from Redis (one round trip; cheap enough to skip no reads)."""
        if self._job.ended and self._job.status != "interrupted" and not self.stale:
            return  # final: nothing changes any more, unless it was removed (``stale``)
        self.stale = False
        fields, alive = await self.store.job_fields(self._job.id)
        self._set_job(job_from_fields(fields, alive))

    async def read_after(self, cursor: Cursor, max_bytes: int = 1 << 20) -> Read:
        if self._unavailable is not None and not self.following:
            error, self._unavailable = self._unavailable, None
            raise error
        if self.ring is not None:
            chunk = self.ring.read_after(cursor.seq, max_bytes)
            if chunk is not None:
                return Read(chunk, cursor.seq + 1, Cursor(chunk.last) if chunk.payload else cursor)
        if cursor.seq >= self._last and not self.following and self.ended:
            return Read(Chunk(b"", cursor.seq, 0), cursor.seq + 1, cursor)
        # Ask for about ``max_bytes``: entries are whole blocks, of the size seen so far.
        count = max(2, min(RANGE_COUNT, max_bytes // self._entry_bytes + 1))
        entries = await self.store.read_entries(self._job.id, cursor.seq, count)
        blocks = [entry for entry in entries if isinstance(entry, Block)]
        if blocks:
            self._entry_bytes = max(1, sum(len(b.payload) for b in blocks) // len(blocks))
            # Stored lines, though the chunk below may send only the first of them.
            self._last = max(self._last, blocks[-1].last)
        for entry in entries:
            if isinstance(entry, End):
                self._record_end(entry)
        chunk, first = chunk_after(blocks, cursor.seq, max_bytes)
        self._last = max(self._last, chunk.last)
        # Positions are not needed: entry IDs are line numbers, any line is one lookup away.
        return Read(chunk, first, Cursor(chunk.last) if chunk.payload else cursor)

    async def read_problems(self) -> ProblemList:
        # Incremental: only the records added since the last read cross the network.
        async with self._problems_lock:
            if not self._problems_final:
                # Once the end is known, one more read finds every record: none come later.
                final = self.ended and self._job.status != "interrupted"
                records = await self.store.read_problems(self._job.id, self._problems_read)
                self._problems_read += len(records)
                found, _used = decode_records(b"".join(records))
                self._problems.add(found)
                self._problems_final = final
        return self._problems

    async def wait_beyond(self, seq: int) -> None:
        if self._last > seq or self.ended:
            return
        self.last_wait = trio.current_time()
        if not self.following:
            self._start_follower(self)
        await self.changes.wait()

    async def follow(self) -> None:
        """The follower: feed the ring from one blocking read until idle or ended."""
        self.following = True
        try:
            await self._follow()
        except RedisUnavailable as error:
            self._unavailable = error
        finally:
            self.following = False
            self.ring = None
            self._wake()

    async def _follow(self) -> None:
        after_id, top = await self.store.top_entry(self._job.id)
        if isinstance(top, End):
            self._record_end(top)
            return
        start = top.last if top is not None else 0
        self.ring = ring = Ring(max_lines=self.ring_lines, persisted_through=2**62, last=start)
        self._last = max(self._last, start)
        self._wake()
        while not self.ended:
            if trio.current_time() - self.last_wait > IDLE_S:
                return
            entries = await self.store.wait_entries(self._job.id, after_id, FOLLOW_BLOCK_MS)
            if not entries:
                # Quiet for a while: has its runner's lease expired (then: interrupted)?
                before = self._job
                await self.refresh()
                if self._job.status != before.status:
                    self._wake()
                continue
            for identifier, entry in entries:
                after_id = identifier
                if isinstance(entry, End):
                    self._record_end(entry)
                elif entry.first == ring.last + 1:
                    ring.append(entry)
                    self._last = max(self._last, entry.last)
            self._wake()

    def _record_end(self, end: End) -> None:
        if self._job.status in ("running", "interrupted"):
            lines = max(self._job.lines, self._last)
            self._job = replace(self._job, status=end.status, exit_code=end.exit_code, lines=lines)

    def _set_job(self, job: Job) -> None:
        self._job = job
        self._last = max(self._last, job.lines)

    def _wake(self) -> None:
        self.changes.notify()


class RedisJobs:
    """This node's view of every job in Redis: logs by ID, their followers, job-list news.

    Start it with ``await nursery.start(jobs.run)``; it runs the followers and the one task
    that watches for jobs created or ended on any node.
    """

    def __init__(self, store: RedisStore, ring_lines: int = DEFAULT_RING_LINES) -> None:
        self.store = store
        self.ring_lines = ring_lines
        self._logs: dict[str, RedisLog] = {}
        self._nursery: trio.Nursery | None = None
        self._changed = trio.Event()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._watch_changes)
            task_status.started()
            await trio.sleep_forever()

    async def get(self, job_id: str) -> RedisLog:
        """The job's log with its state read now; raises ``UnknownJob``."""
        log = self._logs.get(job_id)
        if log is None:
            fields, alive = await self.store.job_fields(job_id)
            log = self._logs.setdefault(
                job_id,
                RedisLog(self.store, job_from_fields(fields, alive), self._follow, self.ring_lines),
            )
            self._forget_idle()
        else:
            await log.refresh()
        return log

    async def jobs(self, limit: int = 500) -> list[Job]:
        return [job_from_fields(fields, alive) for fields, alive in await self.store.jobs(limit)]

    async def wait_changed(self) -> None:
        await self._changed.wait()

    def _follow(self, log: RedisLog) -> None:
        if self._nursery is None:
            raise RuntimeError("RedisJobs.run is not running")
        log.following = True  # before the task runs: one follower per log
        self._nursery.start_soon(log.follow)

    def _forget_idle(self) -> None:
        # Logs nobody follows are cheap to re-create: keep the dict from growing without end.
        if len(self._logs) > 1024:
            for job_id, log in list(self._logs.items()):
                if not log.following:
                    del self._logs[job_id]

    async def _watch_changes(self) -> None:
        after = "$"
        while True:
            try:
                after, changed = await self.store.wait_changes(after)
            except RedisUnavailable:
                await trio.sleep(1.0)
                continue
            if not changed:
                continue
            for job_id in changed:
                if log := self._logs.get(job_id):
                    log.stale = True
            self._changed.set()
            self._changed = trio.Event()
