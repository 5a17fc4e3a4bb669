"""The catalog: live logs of this process first, then the backend's, one reader per job."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import trio
import trio.testing

from logstream.backends.datadir import DataDirBackend
from logstream.catalog import Catalog
from logstream.errors import UnknownJob
from logstream.joblog import LiveLog
from logstream.jobspec import JobSpec
from logstream.launch import create_job


async def test_a_job_of_this_process_is_served_live_then_from_the_backend(tmp_path: Path) -> None:
    catalog = Catalog(DataDirBackend(tmp_path))
    async with trio.open_nursery() as nursery:
        spec = JobSpec((sys.executable, "-c", "print('a'); print('b')"), "two")
        handle = await create_job(nursery, catalog, spec)
        assert await catalog.get(handle.id) is handle.log  # known before the command starts
        [listed] = await catalog.jobs()
        assert (listed.id, listed.status) == (handle.id, "running")
        await handle.run()
    assert (await catalog.get(handle.id)).job.lines == 2
    catalog.retire(handle.id)
    stored = await catalog.get(handle.id)
    assert not isinstance(stored, LiveLog)
    assert (stored.job.status, stored.last) == ("succeeded", 2)
    assert await catalog.get(handle.id) is stored  # one reader per job, refreshed


async def test_the_job_list_shows_live_jobs_as_they_are_now(tmp_path: Path) -> None:
    backend = DataDirBackend(tmp_path)
    catalog = Catalog(backend)
    log = LiveLog(await backend.create_job("x", ["x"]))
    catalog.add_live(log)
    log.append(["a", "b", "c"])
    [listed] = await catalog.jobs()
    assert listed.lines == 3  # the stored job.json still says 0
    assert (await backend.list_jobs())[0].lines == 0


class SilentBackend(DataDirBackend):
    """A backend that never reports a change itself."""

    async def wait_changed(self) -> None:
        await trio.sleep_forever()


async def test_wait_changed_returns_when_a_job_of_this_process_starts(tmp_path: Path) -> None:
    backend = SilentBackend(tmp_path)
    catalog = Catalog(backend)
    woken = trio.Event()

    async def wait() -> None:
        await catalog.wait_changed()
        woken.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(wait)
        await trio.testing.wait_all_tasks_blocked()
        assert not woken.is_set()
        catalog.add_live(LiveLog(await backend.create_job("x", ["x"])))
        with trio.fail_after(30):  # only the catalog's own notice can wake it
            await woken.wait()


async def test_an_unknown_or_malformed_id_is_unknown(tmp_path: Path) -> None:
    catalog = Catalog(DataDirBackend(tmp_path))
    for job_id in ("nope", "../../etc/passwd"):
        with pytest.raises(UnknownJob):
            await catalog.get(job_id)
