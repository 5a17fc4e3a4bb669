"""Jobs and lines in a real redis-server: idempotent appends, exact reads at any line, the end."""

from __future__ import annotations

import datetime as dt

import pytest
import trio

from logstream import redisformat, sse
from logstream.errors import UnknownJob
from logstream.redisformat import End, InvalidRedisURL, check_redis_url, chunk_after
from logstream.redisstore import JobEnded, RedisStore, RedisUnavailable
from logstream.ring import Block, blocks_after
from tests.redis_server import RedisServer, redis_aof, redis_server

__all__ = ["redis_aof", "redis_server"]


def block(first: int, count: int, time_ms: int = 1) -> Block:
    lines = [f"line {n}" for n in range(first, first + count)]
    return Block(first, first + count - 1, sse.encode_lines(first, lines), time_ms)


def job_fields(job_id: str) -> dict[str, object]:
    return {"id": job_id, "name": "build", "command": ["make"], "started_at": "2026-12-04T00:00Z"}


def test_redis_urls_are_checked_with_a_clear_message() -> None:
    for good in ("redis://localhost:6379/0", "rediss://:pw@h:1/2", "unix:///run/r.sock"):
        assert check_redis_url(good) == good
    for bad, says in [
        ("localhost:6379", "use redis://"),
        ("http://h", "use redis://"),
        ("redis://", "give a host"),
        ("redis://h:port", "must be a number"),
        ("redis://h/x", "database"),
        ("unix://", "socket"),
    ]:
        with pytest.raises(InvalidRedisURL, match=says):
            check_redis_url(bad)


def test_chunk_after_starts_inside_a_block_and_reports_gaps() -> None:
    blocks = [block(1, 3), block(4, 3)]
    chunk, first = chunk_after(blocks, 2, 1 << 20)
    assert (first, chunk.last) == (3, 6)
    assert chunk.payload.startswith(b"id: 3\n")
    chunk, first = chunk_after(blocks, 0, 1)  # the budget: at least one line
    assert (first, chunk.last) == (1, 1)
    chunk, first = chunk_after([block(5, 2)], 2, 1 << 20)
    assert (first, chunk.last) == (5, 6)  # lines 3 and 4 are lost: a gap
    chunk, first = chunk_after(blocks, 6, 1 << 20)
    assert (chunk.payload, chunk.last) == (b"", 6)


def test_blocks_after_cuts_at_the_stored_line_and_refuses_holes() -> None:
    blocks = [block(1, 3), block(4, 3)]
    assert blocks_after(blocks, 0) == blocks
    assert blocks_after(blocks, 3) == [blocks[1]]
    assert blocks_after(blocks, 6) == []
    cut = blocks_after(blocks, 4)
    assert [(b.first, b.last) for b in cut] == [(5, 6)]
    assert cut[0].payload == sse.encode_lines(5, ["line 5", "line 6"])
    with pytest.raises(ValueError, match=r"1\.\.3 are missing"):
        blocks_after([block(4, 3)], 0)
    with pytest.raises(ValueError, match=r"4\.\.4 are missing"):
        blocks_after([block(1, 3), block(5, 1)], 0)


async def test_a_block_sent_twice_is_stored_once(redis_server: RedisServer) -> None:
    async with RedisStore.connect(redis_server.url) as store:
        await store.load_functions()
        assert await store.create_job("j1", job_fields("j1"))
        assert not await store.create_job("j1", job_fields("j1"))
        assert await store.append("j1", [block(1, 3)]) == 3
        assert await store.append("j1", [block(1, 3)]) == 3
        assert await store.append("j1", [block(1, 3), block(4, 2)]) == 5
        # Overlapping the stored end: refused whole, the answer says where to resume.
        assert await store.append("j1", [block(5, 3)]) == 5
        # Not continuing (lines 6-7 missing): refused, nothing stored out of order.
        assert await store.append("j1", [block(8, 1)]) == 5
        entries = await store.read_entries("j1", 0)
        assert [(e.first, e.last) for e in entries if isinstance(e, Block)] == [(1, 3), (4, 5)]


async def test_two_writers_racing_store_each_block_once(redis_server: RedisServer) -> None:
    # Two nodes given the same retried blocks at the same time: the log has each line once.
    async with RedisStore.connect(redis_server.url) as store:
        await store.load_functions()
        await store.create_job("race", job_fields("race"))
        blocks = [block(first, 10) for first in range(1, 2001, 10)]

        async def writer() -> None:
            for at in range(0, len(blocks), 7):
                await store.append("race", blocks[at : at + 7])

        async with trio.open_nursery() as nursery:
            for _ in range(3):
                nursery.start_soon(writer)
        seen: list[int] = []
        after = 0
        while entries := await store.read_entries("race", after):
            for entry in entries:
                assert isinstance(entry, Block)
                seen += range(entry.first, entry.last + 1)
                after = entry.last
        assert seen == list(range(1, 2001))


async def test_reads_start_at_any_line_and_end_with_the_end(redis_server: RedisServer) -> None:
    async with RedisStore.connect(redis_server.url) as store:
        await store.load_functions()
        await store.create_job("j", job_fields("j"))
        await store.append("j", [block(1, 5), block(6, 5), block(11, 5)])
        await store.finish("j", "failed", 2, "2026-12-04T00:01Z", 15)
        for cursor in range(16):
            entries = await store.read_entries("j", cursor)
            blocks = [e for e in entries if isinstance(e, Block)]
            chunk, first = chunk_after(blocks, cursor, 1 << 20)
            assert first == cursor + 1
            assert chunk.last == 15
            if cursor < 15:
                assert chunk.payload.startswith(b"id: %d\n" % (cursor + 1))
            assert entries[-1] == End("failed", 2)
        fields, alive = await store.job_fields("j")
        assert (fields["status"], fields["exit_code"], fields["lines"]) == ("failed", 2, 15)
        assert fields["name"] == "build" and not alive
        with pytest.raises(JobEnded):
            await store.append("j", [block(16, 1)])
        assert await store.append("j", [block(11, 5)]) == 15  # a late retry is harmless
        with pytest.raises(UnknownJob):
            await store.job_fields("nope")


async def test_an_end_before_all_lines_are_stored_is_refused(redis_server: RedisServer) -> None:
    async with RedisStore.connect(redis_server.url) as store:
        await store.load_functions()
        await store.create_job("j", job_fields("j"))
        await store.append("j", [block(1, 5)])
        with pytest.raises(Exception, match="MISSING"):
            await store.finish("j", "succeeded", 0, "2026-12-04T00:01Z", 9)
        fields, _alive = await store.job_fields("j")
        assert fields["status"] == "running"


async def test_a_blocking_read_wakes_on_a_new_block(redis_server: RedisServer) -> None:
    async with RedisStore.connect(redis_server.url) as store:
        await store.load_functions()
        await store.create_job("j", job_fields("j"))
        got: list[tuple[str, Block | End]] = []

        async def follow() -> None:
            got.extend(await store.wait_entries("j", "0-0", block_ms=20_000))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(follow)
            await store.append("j", [block(1, 2)])
        assert [(identifier, entry) for identifier, entry in got] == [("1-0", block(1, 2))]


async def test_jobs_are_listed_newest_first_and_removed(redis_server: RedisServer) -> None:
    async with RedisStore.connect(redis_server.url) as store:
        await store.load_functions()
        for job_id in ("a1", "a3", "a2"):
            await store.create_job(job_id, job_fields(job_id))
        await store.set_lease("a2", "node", 60_000)
        listed = await store.jobs(2)
        assert [(fields["id"], alive) for fields, alive in listed] == [("a3", False), ("a2", True)]
        await store.remove_job("a3")
        assert await store.job_ids(10) == ["a2", "a1"]
        assert await redis_server_keys(store, "a3") == 0


async def test_gc_removes_old_and_surplus_ended_jobs_only(redis_server: RedisServer) -> None:
    async with RedisStore.connect(redis_server.url) as store:
        await store.load_functions()
        for day, job_id in enumerate(["d1", "d2", "d3", "d4"], start=1):
            await store.create_job(job_id, job_fields(job_id))
            await store.finish(job_id, "succeeded", 0, f"2026-12-0{day}T12:00:00.000Z", 0)
        await store.set_lease("d5", "node", 60_000)
        await store.create_job("d5", job_fields("d5"))  # running: never removed
        await store.create_job("d6", job_fields("d6"))  # no lease: interrupted, removable
        now = dt.datetime(2026, 12, 4, 13, tzinfo=dt.UTC).timestamp()
        assert await store.remove_old_jobs(keep_days=1.5, keep_jobs=None, now_s=now) == [
            "d2",
            "d1",
        ]
        assert await store.remove_old_jobs(keep_days=None, keep_jobs=2, now_s=now) == ["d4", "d3"]
        assert await store.job_ids(10) == ["d6", "d5"]
        assert await store.remove_old_jobs(keep_days=None, keep_jobs=0, now_s=now) == ["d6"]


async def redis_server_keys(store: RedisStore, job_id: str) -> int:
    return await store.client.exists(redisformat.job_keys(job_id))


async def test_redis_down_is_reported_as_unavailable(redis_server: RedisServer) -> None:
    async with RedisStore.connect(redis_server.url) as store:
        await store.load_functions()
        redis_server.kill()
        with pytest.raises(RedisUnavailable):
            await store.ping()
        with pytest.raises(RedisUnavailable):
            await store.append("j", [block(1, 1)])
        redis_server.start()
        await store.ping()


async def test_aof_restart_keeps_every_acknowledged_line(redis_aof: RedisServer) -> None:
    async with RedisStore.connect(redis_aof.url) as store:
        await store.load_functions()
        await store.create_job("j", job_fields("j"))
        acknowledged = await store.append("j", [block(1, 100), block(101, 100)])
    redis_aof.kill()
    redis_aof.start()
    async with RedisStore.connect(redis_aof.url) as store:
        assert await store.last_line("j") == acknowledged == 200
        # Functions are kept in the append-only file too.
        assert await store.append("j", [block(201, 1)]) == 201


async def test_problem_records_are_stored_once_even_when_a_writer_retries(
    redis_server: RedisServer,
) -> None:
    async with RedisStore.connect(redis_server.url) as store:
        await store.load_functions()
        await store.create_job("j", job_fields("j"))
        assert await store.append_problems("j", 0, [b"a\n", b"b\n"]) == 2
        # The reply was lost: the writer sends the same records again, from what it knew.
        assert await store.append_problems("j", 0, [b"a\n", b"b\n"]) == 2
        assert await store.append_problems("j", 2, [b"c\n"]) == 3
        assert await store.read_problems("j", 0) == [b"a\n", b"b\n", b"c\n"]
        assert await store.read_problems("j", 2) == [b"c\n"]
        await store.remove_job("j")
        with pytest.raises(UnknownJob):
            await store.append_problems("j", 3, [b"d\n"])
        assert await store.client.exists([redisformat.problems_key("j")]) == 0
