"""Launching jobs: the handle, timeouts, a missing command, and the supervisor's close."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import trio

from logstream import logformat
from logstream.backends.datadir import DataDirBackend
from logstream.backends.protocol import Cursor
from logstream.catalog import Catalog
from logstream.jobspec import JobSpec
from logstream.launch import JobSupervisor, create_job

PY = sys.executable


async def stored_lines(catalog: Catalog, job_id: str) -> list[tuple[int, str, str]]:
    log = await catalog.backend.open_log(job_id)
    return list(logformat.iter_lines((await log.read_after(Cursor(0))).chunk.payload))


async def test_run_ends_with_the_end_stored_and_the_runner_gone(tmp_path: Path) -> None:
    catalog = Catalog(DataDirBackend(tmp_path))
    script = "import sys; print('out'); print('err', file=sys.stderr); sys.exit(3)"
    async with trio.open_nursery() as nursery:
        handle = await create_job(nursery, catalog, JobSpec((PY, "-c", script), "x"))
        assert await catalog.backend.runner_alive(handle.id)
        result = await handle.run()
    assert (result.status, result.exit_code) == ("failed", 3)
    assert not await catalog.backend.runner_alive(handle.id)
    stored = await catalog.backend.open_log(handle.id)
    assert (stored.job.status, stored.job.exit_code, stored.job.lines) == ("failed", 3, 2)
    # Numbered in the order the pipes were read: either stream may come first.
    lines = await stored_lines(catalog, handle.id)
    assert sorted(seq for seq, _, _ in lines) == [1, 2]
    assert sorted((stream, text) for _, stream, text in lines) == [("e", "err"), ("o", "out")]


async def test_a_timeout_cancels_the_job_and_says_so_last(tmp_path: Path) -> None:
    catalog = Catalog(DataDirBackend(tmp_path))
    spec = JobSpec(
        (PY, "-c", "import time; print('x', flush=True); time.sleep(60)"),
        "slow",
        timeout_s=0.5,
        grace_s=2,
    )
    async with trio.open_nursery() as nursery:
        handle = await create_job(nursery, catalog, spec)
        with trio.fail_after(30):
            result = await handle.run()
    assert result.status == "cancelled"
    lines = await stored_lines(catalog, handle.id)
    assert lines[-1] == (2, "e", "logstream: timed out after 0.5 s")


async def test_a_missing_command_fails_with_127_and_a_notice(tmp_path: Path) -> None:
    catalog = Catalog(DataDirBackend(tmp_path))
    async with trio.open_nursery() as nursery:
        handle = await create_job(nursery, catalog, JobSpec(("/nonexistent/cmd",), "missing"))
        result = await handle.run()
    assert (result.status, result.exit_code) == ("failed", 127)
    [(_, stream, text)] = await stored_lines(catalog, handle.id)
    assert stream == "e" and text.startswith("logstream: cannot run '/nonexistent/cmd'")


async def test_closing_the_supervisor_cancels_running_jobs_and_waits(tmp_path: Path) -> None:
    catalog = Catalog(DataDirBackend(tmp_path))
    supervisor = JobSupervisor(catalog)
    async with trio.open_nursery() as nursery:
        await nursery.start(supervisor.run)
        handle = await supervisor.start(JobSpec((PY, "-c", "import time; time.sleep(60)"), "s"))
        assert [h.id for h in supervisor.running()] == [handle.id]
        supervisor.close()
        with trio.fail_after(30):
            await supervisor.wait_closed()
    assert handle.done and handle.result is not None
    assert handle.result.status == "cancelled"
    assert (await catalog.backend.open_log(handle.id)).job.status == "cancelled"


async def test_a_job_that_cannot_start_shows_interrupted_and_holds_no_lock(
    tmp_path: Path,
) -> None:
    catalog = Catalog(DataDirBackend(tmp_path))
    async with trio.open_nursery() as closed:
        pass  # no new task starts here: the log's writer cannot
    with pytest.raises(RuntimeError):
        await create_job(closed, catalog, JobSpec(("true",), "x", job_id="never"))
    [listed] = await catalog.jobs()
    shown = await catalog.get("never")
    assert (listed.status, shown.job.status) == ("interrupted", "interrupted")
    assert not await catalog.backend.runner_alive("never")
