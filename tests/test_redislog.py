"""A node's view of jobs in Redis: one follower per job however many clients, exact resume."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio

from logstream import sse
from logstream.backends.protocol import Cursor
from logstream.redislog import RedisJobs, RedisLog
from logstream.redisstore import RedisStore, RedisUnavailable
from logstream.ring import Block
from tests.redis_server import RedisServer, redis_server

__all__ = ["redis_server"]

DEADLINE_S = 30


def block(first: int, count: int) -> Block:
    lines = [f"line {n}" for n in range(first, first + count)]
    return Block(first, first + count - 1, sse.encode_lines(first, lines), 1)


@asynccontextmanager
async def node(url: str) -> AsyncIterator[RedisJobs]:
    """One node's view (its own connections), as a `serve --redis` process would have."""
    async with RedisStore.connect(url) as store, trio.open_nursery() as nursery:
        jobs = RedisJobs(store)
        await nursery.start(jobs.run)
        yield jobs
        nursery.cancel_scope.cancel()


async def new_job(store: RedisStore, job_id: str, lease_ms: int = 60_000) -> None:
    await store.load_functions()
    await store.set_lease(job_id, "test", lease_ms)
    fields = {"id": job_id, "name": job_id, "command": ["x"], "started_at": "2026-12-04T00:00Z"}
    await store.create_job(job_id, fields)


async def read_to_end(log: RedisLog, after: int = 0) -> list[int]:
    """The line numbers a client gets from ``after`` until the end, as ``web`` reads them."""
    cursor = Cursor(after)
    seen: list[int] = []
    while True:
        read = await log.read_after(cursor, 4096)
        chunk = read.chunk
        if chunk.payload:
            assert read.first == cursor.seq + 1, "a gap"
            for event in sse.SSEParser().feed(chunk.payload):
                if event.id:
                    seen.append(int(event.id))
            cursor = read.next
            continue
        if log.job.ended and cursor.seq >= log.last:
            return seen
        await log.wait_beyond(cursor.seq)


async def blocked_readers(store: RedisStore) -> int:
    clients = await store.client.client_list()
    return sum(1 for client in clients if client.get("cmd") == "xread")


async def test_many_clients_of_a_node_share_one_read_of_redis(redis_server: RedisServer) -> None:
    async with (
        RedisStore.connect(redis_server.url) as writer,
        node(redis_server.url) as node_b,
        node(redis_server.url) as node_c,
    ):
        await new_job(writer, "j")
        await writer.append("j", [block(1, 10)])
        results: dict[str, list[int]] = {}

        async def client(name: str, jobs: RedisJobs, after: int) -> None:
            results[name] = await read_to_end(await jobs.get("j"), after)

        with trio.fail_after(DEADLINE_S):
            async with trio.open_nursery() as nursery:
                for n in range(20):
                    nursery.start_soon(client, f"b{n}", node_b, n % 12)
                    nursery.start_soon(client, f"c{n}", node_c, 0)
                # Every client waits beyond line 10: one blocking read per node, not per client.
                # No event tells when Redis sees a client block: poll its client list.
                while await blocked_readers(writer) < 2:  # noqa: ASYNC110
                    await trio.sleep(0.01)
                assert await blocked_readers(writer) == 2
                first = 11
                for count in (1, 50, 7, 300):
                    await writer.append("j", [block(first, count)])
                    first += count
                await writer.finish("j", "succeeded", 0, "2026-12-04T00:01Z", first - 1)
        for name, seen in results.items():
            after = int(name[1:]) % 12 if name.startswith("b") else 0
            assert seen == list(range(after + 1, first)), name
        log = await node_c.get("j")
        assert (log.job.status, log.job.exit_code, log.last) == ("succeeded", 0, first - 1)


async def test_resume_at_any_line_on_another_node_is_exact(redis_server: RedisServer) -> None:
    async with RedisStore.connect(redis_server.url) as writer, node(redis_server.url) as node_b:
        await new_job(writer, "j")
        await writer.append("j", [block(1, 100), block(101, 100), block(201, 5)])
        await writer.finish("j", "failed", 1, "2026-12-04T00:01Z", 205)
        log = await node_b.get("j")
        for after in (0, 1, 99, 100, 101, 150, 200, 204, 205):
            assert await read_to_end(log, after) == list(range(after + 1, 206))


async def test_a_runner_whose_lease_expires_reads_as_interrupted(
    redis_server: RedisServer,
) -> None:
    async with RedisStore.connect(redis_server.url) as writer, node(redis_server.url) as node_b:
        await new_job(writer, "j", lease_ms=200)
        await writer.append("j", [block(1, 3)])
        log = await node_b.get("j")
        with trio.fail_after(DEADLINE_S):
            assert await read_to_end(log) == [1, 2, 3]
        assert log.job.status == "interrupted"
        # A runner that comes back resumes the job.
        await writer.set_lease("j", "test", 60_000)
        await node_b.get("j")
        assert log.job.status == "running"


async def test_redis_down_fails_reads_and_ends_waits(redis_server: RedisServer) -> None:
    async with RedisStore.connect(redis_server.url) as writer, node(redis_server.url) as node_b:
        await new_job(writer, "j")
        await writer.append("j", [block(1, 3)])
        log = await node_b.get("j")

        async def kill_once_followed() -> None:
            while not log.following:  # noqa: ASYNC110 (no event for "a follower started")
                await trio.sleep(0.01)
            redis_server.kill()

        # A client waiting for more when Redis goes away: its read fails (its stream ends).
        with (
            trio.fail_after(DEADLINE_S),
            pytest.RaisesGroup(RedisUnavailable, flatten_subgroups=True),
        ):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(kill_once_followed)
                await read_to_end(log)
