"""What every ``Backend`` must do, checked against each implementation through the protocol.

A new backend adds itself to ``BACKENDS`` (a factory from a temp folder to an open backend)
and must pass every test here unchanged.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

import pytest
import trio

from logstream import sse
from logstream.backends.datadir import DataDirBackend
from logstream.backends.protocol import Backend, Cursor, JobLog
from logstream.backends.redis import RedisBackend
from logstream.errors import (
    BadRequest,
    Conflict,
    JobExists,
    StorageError,
    UnknownJob,
    WriterElsewhere,
)
from logstream.problemlog import Found
from logstream.problems import Problem
from logstream.ring import Block
from tests.redis_server import RedisServer


@asynccontextmanager
async def data_dir_backend(tmp_path: Path) -> AsyncIterator[Backend]:
    backend = DataDirBackend(tmp_path / "data")
    backend.check()
    yield backend


@asynccontextmanager
async def redis_backend(tmp_path: Path) -> AsyncIterator[Backend]:
    server = RedisServer()
    server.start()
    try:
        async with RedisBackend.open(server.url) as backend:
            yield backend
    finally:
        server.close()


BACKENDS: dict[str, Callable[[Path], AbstractAsyncContextManager[Backend]]] = {
    "datadir": data_dir_backend,
    "redis": redis_backend,
}


@pytest.fixture(params=sorted(BACKENDS))
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    async with BACKENDS[request.param](tmp_path) as opened:
        yield opened


def block(first: int, last: int, *, stderr: bool = False) -> Block:
    lines = [f"line {n}" for n in range(first, last + 1)]
    return Block(first, last, sse.encode_lines(first, lines, stderr=stderr), 0)


async def all_lines(log: JobLog) -> list[int]:
    """The sequence numbers of every stored line, read in small chunks from the start."""
    seqs: list[int] = []
    cursor = Cursor(0)
    while True:
        read = await log.read_after(cursor, max_bytes=64)
        if not read.chunk.payload:
            return seqs
        assert read.first == cursor.seq + 1
        seqs += [n for n in range(read.first, read.chunk.last + 1)]
        cursor = read.next


async def test_a_new_job_is_listed_running_with_its_name_command_and_meta(
    backend: Backend,
) -> None:
    writer = await backend.create_job("tests", ["make", "test"], meta={"ci": {"sha": "abc"}})
    jobs = await backend.list_jobs()
    assert [(j.id, j.name, tuple(j.command), j.status) for j in jobs] == [
        (writer.job.id, "tests", ("make", "test"), "running")
    ]
    assert jobs[0].meta == {"ci": {"sha": "abc"}}
    assert await backend.runner_alive(writer.job.id)
    await writer.release()


async def test_a_caller_chosen_id_is_kept_and_cannot_be_taken_twice(backend: Backend) -> None:
    job_id = backend.new_job_id()
    writer = await backend.create_job("x", ["x"], job_id=job_id)
    assert writer.job.id == job_id
    with pytest.raises(JobExists):
        await backend.create_job("y", ["y"], job_id=job_id)
    with pytest.raises(BadRequest):
        await backend.create_job("z", ["z"], job_id="../escape")
    await writer.release()


async def test_re_sent_and_overlapping_blocks_store_each_line_once(backend: Backend) -> None:
    writer = await backend.create_job("x", ["x"])
    assert await writer.append_blocks([block(1, 3)]) == 3
    assert await writer.append_blocks([block(1, 3)]) == 3  # a re-sent block: ignored
    assert await writer.append_blocks([block(2, 5), block(6, 6)]) == 6  # 2-3 skipped
    log = await backend.open_log(writer.job.id)
    assert await all_lines(log) == [1, 2, 3, 4, 5, 6]
    await writer.release()


async def test_reads_come_in_pieces_of_whole_records_within_the_budget(backend: Backend) -> None:
    """A client that is behind gets big blocks in small pieces, each line once, from any
    line (issue 13: a stuck client holds one piece); the data directory serves them from one
    read ahead of the file."""
    writer = await backend.create_job("x", ["x"])
    await writer.append_blocks([block(1, 3000), block(3001, 3001), block(3002, 9000)])
    await writer.finish(writer.job.with_lines(9000).ending("succeeded", 0))
    log = await backend.open_log(writer.job.id)
    for start in (0, 1, 1234, 2999, 3000, 8999):
        cursor, seqs = Cursor(start), []
        while True:
            read = await log.read_after(cursor, max_bytes=1000)
            if not read.chunk.payload:
                break
            assert len(read.chunk.payload) <= 1000
            assert read.first == cursor.seq + 1
            seqs += [int(e.id or 0) for e in sse.SSEParser().feed(read.chunk.payload) if e.id]
            assert seqs[-1] == read.chunk.last
            cursor = read.next
        assert seqs == list(range(start + 1, 9001)), start


async def test_a_block_that_leaves_a_hole_is_refused(backend: Backend) -> None:
    writer = await backend.create_job("x", ["x"])
    await writer.append_blocks([block(1, 2)])
    with pytest.raises(StorageError):
        await writer.append_blocks([block(4, 5)])
    assert writer.last_stored == 2
    await writer.release()


async def test_finish_records_the_end_for_every_reader(backend: Backend) -> None:
    writer = await backend.create_job("x", ["x"])
    await writer.append_blocks([block(1, 4)])
    await writer.finish(writer.job.with_lines(4).ending("failed", 3))
    log = await backend.open_log(writer.job.id)
    assert (log.job.status, log.job.exit_code, log.job.lines, log.last) == ("failed", 3, 4, 4)
    assert log.job.finished_at is not None
    assert not await backend.runner_alive(writer.job.id)
    listed = await backend.list_jobs()
    assert (listed[0].status, listed[0].lines) == ("failed", 4)


async def test_a_released_job_reads_interrupted_and_can_be_resumed(backend: Backend) -> None:
    writer = await backend.create_job("x", ["x"])
    await writer.append_blocks([block(1, 2)])
    await writer.release()
    log = await backend.open_log(writer.job.id)
    assert (log.job.status, log.last) == ("interrupted", 2)
    assert not await backend.runner_alive(writer.job.id)

    resumed = await backend.resume_job(writer.job.id)
    assert resumed.last_stored == 2
    assert await backend.runner_alive(writer.job.id)
    await resumed.append_blocks([block(1, 3)])  # the runner re-sends what it was unsure of
    await resumed.finish(resumed.job.with_lines(3).ending("succeeded", 0))
    log = await backend.open_log(writer.job.id)
    assert await all_lines(log) == [1, 2, 3]
    assert log.job.status == "succeeded"
    with pytest.raises(Conflict):
        await backend.resume_job(writer.job.id)


async def test_a_running_job_cannot_be_resumed_by_a_second_writer(backend: Backend) -> None:
    writer = await backend.create_job("x", ["x"])
    # Not a conflict for good: the holder may be dying (a node killed, its lease not expired).
    with pytest.raises(WriterElsewhere):
        await backend.resume_job(writer.job.id)
    await writer.release()


async def test_a_remote_runner_heard_from_keeps_its_job_running_without_a_writer(
    tmp_path: Path,
) -> None:
    # With Redis: the node writing a remote job died (its lease is gone), the runner lives and
    # will resume the job on another node; meanwhile no node shows it interrupted.
    async with redis_backend(tmp_path) as backend:
        writer = await backend.create_job("x", ["x"], owner="fingerprint")
        await backend.runner_seen(writer.job.id, 0.5)
        await writer.release()
        assert (await backend.open_log(writer.job.id)).job.status == "running"
        assert [job.status for job in await backend.list_jobs()] == ["running"]
        resumed = await backend.resume_job(writer.job.id)  # the writer is free to take
        await resumed.release()
        with trio.fail_after(10):
            while await backend.runner_alive(writer.job.id):  # noqa: ASYNC110
                await trio.sleep(0.05)  # Redis expires the key: nothing to wait on
        assert (await backend.open_log(writer.job.id)).job.status == "interrupted"


async def test_a_reader_sees_new_lines_after_refresh_and_wait_beyond(backend: Backend) -> None:
    writer = await backend.create_job("x", ["x"])
    log = await backend.open_log(writer.job.id)
    assert log.last == 0
    await writer.append_blocks([block(1, 2)])
    with trio.fail_after(10):
        await log.wait_beyond(0)
    await log.refresh()
    assert log.last == 2 and log.job.lines == 2
    read = await log.read_after(Cursor(1))
    assert (read.first, read.chunk.last, read.next.seq) == (2, 2, 2)
    assert b"line 2" in read.chunk.payload and b"line 1\n" not in read.chunk.payload
    await writer.release()


async def test_unknown_ids_raise_unknown_job(backend: Backend) -> None:
    for job_id in ("20260101T000000000000Z-0000", "../etc", ""):
        with pytest.raises(UnknownJob):
            await backend.open_log(job_id)


async def test_remove_old_jobs_keeps_running_ones(backend: Backend) -> None:
    running = await backend.create_job("running", ["x"])
    ended = await backend.create_job("ended", ["x"])
    await ended.finish(ended.job.ending("succeeded", 0))
    assert await backend.remove_old_jobs(None, 0) == [ended.job.id]
    assert [job.id for job in await backend.list_jobs()] == [running.job.id]
    await running.release()


async def test_a_remote_runners_owner_and_start_time_are_kept(backend: Backend) -> None:
    writer = await backend.create_job(
        "x", ["x"], owner="fingerprint", started_at="2026-01-02T03:04:05.000000Z"
    )
    for job in (writer.job, (await backend.open_log(writer.job.id)).job):
        assert (job.owner, job.started_at) == ("fingerprint", "2026-01-02T03:04:05.000000Z")
    local = await backend.create_job("y", ["y"])
    assert (await backend.list_jobs())[0].owner is None
    await writer.release()
    await local.release()


async def test_changed_at_moves_when_lines_or_the_end_are_stored(backend: Backend) -> None:
    before = time.time()
    writer = await backend.create_job("x", ["x"])
    created = await backend.changed_at(writer.job.id)
    # A clock with coarse steps (a file system's mtime) may read slightly in the past.
    assert before - 2 <= created <= time.time() + 2
    await writer.append_blocks([block(1, 2)])
    assert await backend.changed_at(writer.job.id) >= created
    await writer.finish(writer.job.with_lines(2).ending("succeeded", 0))
    assert await backend.changed_at(writer.job.id) >= created
    with pytest.raises(UnknownJob):
        await backend.changed_at("20260101T000000000000Z-0000")


def found(line: int, severity: str, title: str) -> bytes:
    return Found(Problem(line, severity, title, "a.py", 3), found_at=line + 1).to_record()


async def test_problems_are_read_in_the_order_found_and_removed_with_the_job(
    backend: Backend,
) -> None:
    writer = await backend.create_job("x", ["x"])
    log = await backend.open_log(writer.job.id)
    assert (await log.read_problems()).found == []
    await writer.append_problems([found(2, "error", "E1"), found(1, "warning", "W")])
    await writer.append_blocks([block(1, 3)])
    assert [f.problem.title for f in (await log.read_problems()).found] == ["E1", "W"]
    await writer.append_problems([found(3, "error", "E2")])
    await writer.append_blocks([block(4, 4)])
    problems = await (await backend.open_log(writer.job.id)).read_problems()
    assert [(f.problem.title, f.found_at) for f in problems.found] == [
        ("E1", 3),
        ("W", 2),
        ("E2", 4),
    ]
    assert problems.shown_counts() == {"error": 2, "warning": 1}
    assert [p["line"] for p in problems.in_line_order()] == [1, 2, 3]
    await writer.finish(writer.job.with_lines(4).ending("failed", 1))
    assert (await log.read_problems()).shown_counts() == {"error": 2, "warning": 1}
    assert await backend.remove_old_jobs(None, 0) == [writer.job.id]
    with pytest.raises(UnknownJob):
        await backend.open_log(writer.job.id)
