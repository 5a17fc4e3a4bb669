"""The live log of a job this process runs: ring + writer, and the one backpressure it applies."""

from __future__ import annotations

from pathlib import Path

import trio
import trio.testing

from logstream.joblog import LiveLog
from logstream.store import Job, LogReader


def new_log(path: Path, **kwargs: int) -> LiveLog:
    return LiveLog(path, Job(id="job", name="job", command=["job"]), **kwargs)


async def test_runner_waits_only_while_the_disk_is_far_behind(tmp_path: Path) -> None:
    log = new_log(tmp_path, max_pending_bytes=1000)
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
    assert LogReader(tmp_path).last_seq() == 3


async def test_lines_are_on_disk_once_persisted(tmp_path: Path) -> None:
    log = new_log(tmp_path)
    async with trio.open_nursery() as nursery:
        await nursery.start(log.run_writer)
        log.append([f"l{n}" for n in range(1, 1001)])
        with trio.fail_after(10):
            await log.wait_persisted(1000)
        assert LogReader(tmp_path).last_seq() == 1000
        log.finish("failed", 1)
        await log.wait_closed()
    assert LogReader(tmp_path).end() == ("failed", 1)
