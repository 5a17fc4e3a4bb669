"""A job's log: live (ring + writer, and the one backpressure it applies) or read from disk."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from logstream import logformat, sse
from logstream.backends.datadir import DataDirBackend, FileLog
from logstream.backends.protocol import Cursor
from logstream.errors import StorageError
from logstream.joblog import LiveLog
from logstream.ring import Block
from logstream.store import LogReader


async def new_log(data_dir: Path, **kwargs: Any) -> tuple[LiveLog, Path]:
    """A job of the data directory this test writes; the job's folder."""
    writer = await DataDirBackend(data_dir).create_job("job", ["job"])
    return LiveLog(writer, **kwargs), writer.path


async def test_runner_waits_only_while_the_disk_is_far_behind(tmp_path: Path) -> None:
    log, path = await new_log(tmp_path, max_pending_bytes=1000)
    log.append(["x" * 100])
    await log.wait_writable()  # well under the bound: no wait at all
    log.append(["y" * 600, "z" * 600])
    writable = trio.Event()

    async def reader() -> None:
        await log.wait_writable()
        writable.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(reader)
        await trio.testing.wait_all_tasks_blocked()
        assert not writable.is_set()  # no writer yet: the queue stays over the bound
        await nursery.start(log.run_writer)
        with trio.fail_after(10):
            await writable.wait()
        log.finish("succeeded", 0)
    assert LogReader(path).last_seq() == 3


async def test_lines_are_on_disk_once_persisted(tmp_path: Path) -> None:
    log, path = await new_log(tmp_path)
    async with trio.open_nursery() as nursery:
        await nursery.start(log.run_writer)
        log.append([f"l{n}" for n in range(1, 1001)])
        with trio.fail_after(10):
            await log.wait_persisted(1000)
        assert LogReader(path).last_seq() == 1000
        log.finish("failed", 1)
        await log.wait_closed()
    assert LogReader(path).end() == ("failed", 1)


async def test_file_log_shows_the_job_as_it_is_after_each_refresh(tmp_path: Path) -> None:
    # The LiveLog plays the other process; the lock it holds marks the job as running.
    live, _path = await new_log(tmp_path)
    data_dir = DataDirBackend(tmp_path).data
    job_id = live.job.id
    async with trio.open_nursery() as nursery:
        await nursery.start(live.run_writer)
        live.append(["a", "b"])
        with trio.fail_after(10):
            await live.wait_persisted(2)
        log = await FileLog.open(data_dir, job_id)
        assert (log.job.status, log.last) == ("running", 2)
        live.append(["c"])
        with trio.fail_after(10):
            await live.wait_persisted(3)
        assert log.last == 2  # what it read; callers refresh before they look
        await log.refresh()
        assert (log.job.status, log.last) == ("running", 3)
        live.finish("failed", 5)
        await live.wait_closed()
        await log.refresh()
    assert (log.job.status, log.job.exit_code, log.last, log.job.lines) == ("failed", 5, 3, 3)
    assert log.job.finished_at is not None


async def test_numbered_blocks_are_taken_once_whatever_is_re_sent(tmp_path: Path) -> None:
    log, path = await new_log(tmp_path)
    sent = [Block(n, n + 1, sse.encode_lines(n, [f"l{n}", f"l{n + 1}"]), 0) for n in (1, 3)]
    assert log.append_block(sent[0]) == 2
    assert log.append_block(sent[0]) == 2  # re-sent after a lost acknowledgement
    overlapping = Block(2, 4, sse.encode_lines(2, ["l2", "l3", "l4"]), 0)
    assert log.append_block(overlapping) == 4
    with pytest.raises(StorageError):
        log.append_block(Block(6, 6, sse.encode_lines(6, ["l6"]), 0))
    async with trio.open_nursery() as nursery:
        await nursery.start(log.run_writer)
        log.finish("succeeded", 0)
    assert LogReader(path).last_seq() == 4
    assert (log.job.status, log.job.lines) == ("succeeded", 4)
    stored = await DataDirBackend(tmp_path).open_log(log.job.id)
    assert [
        line[0] for line in logformat.iter_lines((await stored.read_after(Cursor(0))).chunk.payload)
    ] == [1, 2, 3, 4]


async def test_a_resumed_job_goes_on_numbering_after_its_stored_lines(tmp_path: Path) -> None:
    backend = DataDirBackend(tmp_path)
    first, path = await new_log(tmp_path)
    first.append(["a", "b"])
    async with trio.open_nursery() as nursery:
        await nursery.start(first.run_writer)
        with trio.fail_after(10):
            await first.wait_persisted(2)
        nursery.cancel_scope.cancel()
    await first._writer.release()  # the runner went away without an end
    resumed = LiveLog(await backend.resume_job(first.job.id))
    assert resumed.last == 2
    resumed.append(["c"])
    read = await resumed.read_after(Cursor(0))  # line 1 and 2 come from disk, 3 from the ring
    assert read.chunk.last == 2
    assert (await resumed.read_after(read.next)).chunk.last == 3
    async with trio.open_nursery() as nursery:
        await nursery.start(resumed.run_writer)
        resumed.finish("succeeded", 0)
    assert LogReader(path).last_seq() == 3
    assert (await backend.open_log(first.job.id)).job.status == "succeeded"


async def test_a_writer_cancelled_at_its_start_stores_the_lines_and_frees_the_job(
    tmp_path: Path,
) -> None:
    # (a request cancelled as it creates the job, a server stop that ran out of time)
    backend = DataDirBackend(tmp_path)
    writer = await backend.create_job("job", ["job"], job_id="cut")
    log = LiveLog(writer)
    log.append(["taken before the cancel"])
    async with trio.open_nursery() as nursery:
        with trio.CancelScope() as request:
            request.cancel()
            await nursery.start(log.run_writer)
    assert request.cancelled_caught
    assert LogReader(writer.path).last_seq() == 1
    resumed = await backend.resume_job("cut")  # not WriterElsewhere: the run lock is free
    assert resumed.last_stored == 1
    await resumed.release()
