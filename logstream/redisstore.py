"""The Redis commands behind the Redis backend: one small async method per operation.

The layout of keys and entries, and the server-side functions that make appends idempotent,
are in ``redisformat`` (pure). This module only sends commands, with coredis (anyio-native, so
it runs in trio's loop). Ordinary commands share multiplexed connections; each blocking
``XREAD`` takes a connection of its own from the pool for as long as it blocks.

Every failure to reach Redis (refused, reset, timed out, still loading its data) is raised as
``RedisUnavailable``, so the layers above answer 503 and runners keep their lines for later.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import coredis
import coredis.exceptions
from coredis.response.types import StreamEntry

from logstream import redisformat
from logstream.errors import Conflict, StorageError, UnknownJob
from logstream.redisformat import End
from logstream.ring import Block

#: A blocking read returns after this long without news, so callers can look at leases.
FOLLOW_BLOCK_MS = 2000
CONNECT_TIMEOUT_S = 5.0
#: Each job a node follows holds one connection in a blocking read, the rest share a few.
MAX_CONNECTIONS = 4096
#: Most entries one catch-up read asks for; entries hold whole blocks of many lines.
RANGE_COUNT = 64


class RedisUnavailable(StorageError):
    """Redis cannot be reached (down, restarting, loading): try again later."""


class JobEnded(Conflict):
    """Lines were sent for a job whose end is already recorded."""


_UNAVAILABLE = (
    coredis.exceptions.ConnectionError,
    TimeoutError,
    OSError,
)


class RedisStore:
    """Jobs and their lines in one Redis (or one Redis per shard of jobs, later)."""

    def __init__(self, client: coredis.Redis[bytes]) -> None:
        self.client = client
        #: False since a command could not reach Redis, until one does again.
        self.reachable = True

    @contextmanager
    def _mapped_errors(self) -> Iterator[None]:
        """Raise every way of not reaching Redis as ``RedisUnavailable``."""
        try:
            yield
        except RedisUnavailable:
            self.reachable = False
            raise
        except _UNAVAILABLE as error:
            # BusyLoadingError (a restarted Redis still reading its file) is a ConnectionError.
            self.reachable = False
            raise RedisUnavailable(f"Redis is unavailable: {error}") from error
        self.reachable = True

    @classmethod
    @asynccontextmanager
    async def connect(cls, url: str) -> AsyncIterator[RedisStore]:
        """A store on the Redis at ``url``; connections close when the block ends.

        Connecting is lazy: a Redis that is down now makes the first command fail with
        ``RedisUnavailable``, not this call, so a node starts (and answers 503) without it.
        """
        redisformat.check_redis_url(url)
        client: coredis.Redis[bytes] = coredis.Redis.from_url(
            url,
            decode_responses=False,
            connect_timeout=CONNECT_TIMEOUT_S,
            max_connections=MAX_CONNECTIONS,
            # No retries inside the client: callers decide (a runner keeps its lines).
            retry_policy=coredis.retry.NoRetryPolicy(),
        )
        async with client:
            yield cls(client)

    async def load_functions(self) -> None:
        """Load (or replace) the server-side functions; any node may do it at any time."""
        with self._mapped_errors():
            await self.client.function_load(redisformat.LIBRARY, replace=True)

    async def ping(self) -> None:
        with self._mapped_errors():
            await self.client.ping()

    async def create_job(
        self, job_id: str, fields: dict[str, Any], lease: tuple[str, int] | None = None
    ) -> bool:
        """Create the job unless it exists; True when this call created it.

        ``lease``: ``(holder, ttl_ms)``, taken with the creation (atomically), so no node ever
        reads the job as interrupted.
        """
        keys, args = [redisformat.job_key(job_id)], [redisformat.spec_json(fields)]
        if lease is not None:
            keys.append(redisformat.lease_key(job_id))
            args += [lease[0], str(lease[1])]
        with self._mapped_errors():
            created = await self._fcall("logstream_create", keys, args)
            if created:
                await self.client.zadd(redisformat.JOBS_KEY, {job_id: 0})
                await self._announce(job_id)
        return bool(created)

    async def append(self, job_id: str, blocks: Sequence[Block]) -> int:
        """Store the blocks that continue the log; the last line stored (see ``redisformat``)."""
        if not blocks:
            return await self.last_line(job_id)
        with self._mapped_errors():
            stored = await self._fcall(
                "logstream_append",
                [redisformat.job_key(job_id), redisformat.log_key(job_id)],
                redisformat.append_args(list(blocks)),
            )
        assert isinstance(stored, int)
        return stored

    async def finish(
        self,
        job_id: str,
        status: str,
        exit_code: int | None,
        finished_at: str,
        last: int,
        problems: Mapping[str, int] | None = None,
    ) -> None:
        """Record the job's end after its line ``last`` (once; a repeat changes nothing),
        with its problem counts for the job list."""
        code = "" if exit_code is None else str(exit_code)
        counts = json.dumps(dict(problems or {}))
        with self._mapped_errors():
            await self._fcall(
                "logstream_finish",
                [redisformat.job_key(job_id), redisformat.log_key(job_id)],
                [status, code, finished_at, last, counts],
            )
            await self.client.delete([redisformat.lease_key(job_id)])
            await self._announce(job_id)

    async def last_line(self, job_id: str) -> int:
        with self._mapped_errors():
            lines = await self.client.hget(redisformat.job_key(job_id), "lines")
        if lines is None:
            raise UnknownJob(job_id)
        return int(lines)

    async def changed_at(self, job_id: str) -> float:
        """Unix time (Redis's clock) of the job's last stored change: creation, lines, end."""
        with self._mapped_errors():
            changed = await self.client.hget(redisformat.job_key(job_id), "changed_ms")
        if changed is None:
            raise UnknownJob(job_id)
        return int(changed) / 1000

    async def append_problems(self, job_id: str, stored: int, records: Sequence[bytes]) -> int:
        """Append problem records (``problemlog.Found.to_record``) that follow the first
        ``stored`` of the job's list; returns how many the list holds.

        Idempotent: records already there (a retry after a lost reply) are not added again.
        Only while the job exists: records for a job removed meanwhile are dropped, not left
        behind under a key nothing removes.
        """
        with self._mapped_errors():
            count = await self._fcall(
                "logstream_problems",
                [redisformat.job_key(job_id), redisformat.problems_key(job_id)],
                [stored, *records],
            )
        assert isinstance(count, int)
        if count < 0:
            raise UnknownJob(job_id)
        return count

    async def problem_count(self, job_id: str) -> int:
        with self._mapped_errors():
            return int(await self.client.llen(redisformat.problems_key(job_id)))

    async def read_problems(self, job_id: str, start: int) -> list[bytes]:
        """The job's problem records from index ``start`` on."""
        with self._mapped_errors():
            found = await self.client.lrange(redisformat.problems_key(job_id), start, -1)
        return list(found)

    async def job_fields(self, job_id: str) -> tuple[dict[str, Any], bool]:
        """The job's fields (``redisformat.job_fields_from_hash``) and whether its lease lives
        (or its remote runner was heard from lately)."""
        with self._mapped_errors():
            async with self.client.pipeline(transaction=False) as pipe:
                fields = pipe.hgetall(redisformat.job_key(job_id))
                lease = pipe.exists(redisformat.alive_keys(job_id))
            found, alive = await fields, await lease
        if not found:
            raise UnknownJob(job_id)
        return redisformat.job_fields_from_hash(found), bool(alive)

    async def job_ids(self, limit: int) -> list[str]:
        """The newest job IDs first."""
        with self._mapped_errors():
            ids = await self.client.zrange(
                redisformat.JOBS_KEY, "+", "-", sortby=coredis.PureToken.BYLEX, rev=True,
                offset=0, count=limit,
            )  # fmt: skip
        return [job_id.decode() for job_id in ids]

    async def jobs(self, limit: int) -> list[tuple[dict[str, Any], bool]]:
        """The newest jobs' fields and lease states, in one round trip after the list."""
        ids = await self.job_ids(limit)
        with self._mapped_errors():
            async with self.client.pipeline(transaction=False) as pipe:
                replies = [
                    (
                        pipe.hgetall(redisformat.job_key(job_id)),
                        pipe.exists(redisformat.alive_keys(job_id)),
                    )
                    for job_id in ids
                ]
            found = [(await fields, await lease) for fields, lease in replies]
        return [
            (redisformat.job_fields_from_hash(fields), bool(alive))
            for fields, alive in found
            if fields  # removed between the two reads
        ]

    async def set_lease(self, job_id: str, holder: str, ttl_ms: int) -> None:
        """Say that ``holder`` runs the job for the next ``ttl_ms``."""
        with self._mapped_errors():
            await self.client.set(redisformat.lease_key(job_id), holder, px=ttl_ms)

    async def take_lease(self, job_id: str, holder: str, ttl_ms: int) -> bool:
        """Take the job's lease unless someone holds it; True when taken."""
        with self._mapped_errors():
            taken = await self.client.set(
                redisformat.lease_key(job_id), holder, px=ttl_ms, condition=coredis.PureToken.NX
            )
        return bool(taken)

    async def drop_lease(self, job_id: str) -> None:
        with self._mapped_errors():
            await self.client.delete([redisformat.lease_key(job_id)])

    async def lease_alive(self, job_id: str) -> bool:
        """Whether someone writes the job: its lease, or its remote runner heard from lately."""
        with self._mapped_errors():
            return bool(await self.client.exists(redisformat.alive_keys(job_id)))

    async def runner_seen(self, job_id: str, ttl_ms: int) -> None:
        """The job's remote runner was heard from: it counts as alive for ``ttl_ms``."""
        with self._mapped_errors():
            await self.client.set(redisformat.runner_key(job_id), b"1", px=ttl_ms)

    async def read_entries(
        self, job_id: str, after: int, count: int = RANGE_COUNT
    ) -> list[Block | End]:
        """Entries from the one holding line ``after + 1``: blocks, then maybe the end.

        One round trip of two reads (IDs are line numbers): the entry whose first line is at
        or before ``after + 1``, and up to ``count`` entries after it.
        """
        key = redisformat.log_key(job_id)
        wanted = redisformat.entry_id(after + 1)
        with self._mapped_errors():
            async with self.client.pipeline(transaction=False) as pipe:
                before_reply = pipe.xrevrange(key, wanted, "-", count=1)
                rest_reply = pipe.xrange(key, "(" + wanted, "+", count=count)
            before, rest = await before_reply, await rest_reply
        entries: list[Block | End] = []
        if before:
            entry = _parse(before[0])[1]
            if isinstance(entry, End) or entry.last > after:
                entries.append(entry)
        entries += [_parse(found)[1] for found in rest]
        return entries

    async def top_entry(self, job_id: str) -> tuple[str, Block | End | None]:
        """The stream ID of the newest entry ("0-0" when none) and the entry."""
        with self._mapped_errors():
            top = await self.client.xrevrange(redisformat.log_key(job_id), "+", "-", count=1)
        if not top:
            return "0-0", None
        return _parse(top[0])

    async def wait_entries(
        self, job_id: str, after_id: str, block_ms: int = FOLLOW_BLOCK_MS
    ) -> list[tuple[str, Block | End]]:
        """Entries after stream ID ``after_id``, blocking up to ``block_ms`` for the first."""
        key = redisformat.log_key(job_id)
        with self._mapped_errors():
            found = await self.client.xread({key: after_id}, count=RANGE_COUNT, block=block_ms)
        if not found:
            return []
        return [_parse(entry) for entry in next(iter(found.values()))]

    async def wait_changes(
        self, after_id: str, block_ms: int = FOLLOW_BLOCK_MS
    ) -> tuple[str, list[str]]:
        """Block until jobs are created, end or are removed after ``after_id`` (or
        ``block_ms`` pass): the ID to wait after next time, and the IDs of those jobs.

        ``"$"`` waits for news from now on.
        """
        with self._mapped_errors():
            if after_id == "$":
                top = await self.client.xrevrange(redisformat.CHANGES_KEY, "+", "-", count=1)
                after_id = _text(top[0].identifier) if top else "0-0"
            found = await self.client.xread(
                {redisformat.CHANGES_KEY: after_id}, count=1000, block=block_ms
            )
        if not found:
            return after_id, []
        entries = next(iter(found.values()))
        changed = [_text(entry.field_values.get(b"job", b"")) for entry in entries]
        return _text(entries[-1].identifier), changed

    async def remove_job(self, job_id: str) -> None:
        with self._mapped_errors():
            await self.client.unlink(redisformat.job_keys(job_id))
            await self.client.zrem(redisformat.JOBS_KEY, [job_id])
            await self._announce(job_id)

    async def remove_old_jobs(
        self, keep_days: float | None, keep_jobs: int | None, now_s: float | None = None
    ) -> list[str]:
        """Remove ended jobs finished more than ``keep_days`` ago or beyond the newest
        ``keep_jobs``; running jobs stay. Returns the removed IDs."""
        now_s = time.time() if now_s is None else now_s
        cutoff = now_s - keep_days * 86400 if keep_days is not None else None
        removed: list[str] = []
        for rank, (fields, alive) in enumerate(await self.jobs(limit=-1)):
            if fields["status"] == "running" and alive:
                continue
            too_many = keep_jobs is not None and rank >= keep_jobs
            finished = fields.get("finished_at") or fields.get("started_at") or ""
            too_old = cutoff is not None and _timestamp(finished) < cutoff
            if too_many or too_old:
                await self.remove_job(fields["id"])
                removed.append(fields["id"])
        return removed

    async def memory_usage(self, job_id: str) -> int:
        """Bytes Redis uses for the job's keys (its own estimate, all entries sampled)."""
        total = 0
        with self._mapped_errors():
            for key in redisformat.job_keys(job_id):
                total += await self.client.memory_usage(key, samples=0) or 0
        return total

    async def _announce(self, job_id: str) -> None:
        await self.client.xadd(
            redisformat.CHANGES_KEY,
            {"job": job_id},
            trim_strategy=coredis.PureToken.MAXLEN,
            threshold=redisformat.CHANGES_MAX_LEN,
            trim_operator=coredis.PureToken.APPROXIMATELY,
        )

    async def _fcall(self, name: str, keys: list[str], args: Sequence[Any]) -> object:
        try:
            return await self.client.fcall(name, keys, list(args))
        except coredis.exceptions.ResponseError as error:
            message = str(error)
            if "NOJOB" in message:
                raise UnknownJob(redisformat.job_id_of(keys[0])) from None
            if "ENDED" in message:
                raise JobEnded(f"job {redisformat.job_id_of(keys[0])} has ended") from None
            if "MISSING" in message:
                raise StorageError(message) from None
            if "Function not found" in message:
                await self.load_functions()
                return await self.client.fcall(name, keys, list(args))
            raise


def _timestamp(iso: str) -> float:
    try:
        return dt.datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0  # unreadable: as old as can be


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _parse(entry: StreamEntry) -> tuple[str, Block | End]:
    """A stream entry's ID and what it holds."""
    fields = {
        (k.encode() if isinstance(k, str) else k): (v.encode() if isinstance(v, str) else v)
        for k, v in entry.field_values.items()
    }
    identifier = _text(entry.identifier)
    return identifier, redisformat.parse_entry(identifier, fields)
