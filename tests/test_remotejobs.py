"""Remote jobs as the server starts, stops and loses its backend: no job is left locked (its
run lock or Redis lease held) or shown running for good, and no failure ends the server."""

from __future__ import annotations

import errno
from pathlib import Path
from typing import Any, NoReturn

import pytest
import trio
import trio.testing

from logstream import remotejobs, sse
from logstream.backends.datadir import DataDirBackend, DataDirWriter, FileLog
from logstream.backends.protocol import Cursor, Read
from logstream.catalog import Catalog
from logstream.config import Settings
from logstream.errors import StorageError, Unavailable, UnknownJob
from logstream.ingest import Records, RemoteJobSpec
from logstream.job import Job
from logstream.remotejobs import RemoteJobs, RemoteLog
from logstream.web import AppState

DEADLINE_S = 30
SPEC = RemoteJobSpec("r", ["make"], None, {})


class CreationOnHold(DataDirBackend):
    """A backend whose ``create_job`` waits until the test lets it go (a slow disk or Redis),
    and then hands the writer back even if its caller was cancelled meanwhile (as a thread
    does: ``trio.to_thread``)."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.creating = trio.Event()
        self.go_on = trio.Event()

    async def create_job(self, *args: Any, **kwargs: Any) -> DataDirWriter:
        with trio.CancelScope(shield=True):
            self.creating.set()
            await self.go_on.wait()
            writer = await super().create_job(*args, **kwargs)
        return writer


async def resumable(root: Path, job_id: str) -> tuple[int, bool, bool]:
    """What the job's runner hears from a server started again on ``root``."""
    remote_jobs = RemoteJobs(Catalog(DataDirBackend(root)))
    async with trio.open_nursery() as nursery:
        await nursery.start(remote_jobs.run)
        answer = await remote_jobs.create(job_id, SPEC, "me")
        await remote_jobs.close()
    return answer


async def test_a_job_created_as_the_server_stops_is_let_go_with_the_others(
    tmp_path: Path,
) -> None:
    backend = CreationOnHold(tmp_path)
    remote_jobs = RemoteJobs(Catalog(backend))
    answers: list[object] = []

    async def create() -> None:
        try:
            answers.append(await remote_jobs.create("racing", SPEC, "me"))
        except Unavailable as error:
            answers.append(error)

    async with trio.open_nursery() as nursery:
        await nursery.start(remote_jobs.run)
        nursery.start_soon(create)
        await backend.creating.wait()
        closed = trio.Event()

        async def close() -> None:
            await remote_jobs.close()
            closed.set()

        nursery.start_soon(close)
        try:
            await trio.testing.wait_all_tasks_blocked()
            assert not closed.is_set()  # it waits for the job being created
        finally:
            backend.go_on.set()
        with trio.fail_after(DEADLINE_S):
            await closed.wait()
    assert len(answers) == 1 and isinstance(answers[0], Unavailable)  # the runner comes back
    assert (await backend.open_log("racing")).job.status == "interrupted"
    with trio.fail_after(DEADLINE_S):
        assert await resumable(tmp_path, "racing") == (0, False, False)  # not locked out


async def test_a_job_that_cannot_go_live_leaves_its_runner_free_to_retry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken() -> NoReturn:
        raise OSError(errno.EMFILE, "Too many open files")

    monkeypatch.setattr(remotejobs, "shared_process", broken)
    with pytest.raises(ExceptionGroup) as raised:
        await resumable(tmp_path, "unlucky")
    assert raised.group_contains(OSError, match="Too many open files")
    monkeypatch.undo()
    with trio.fail_after(DEADLINE_S):
        assert await resumable(tmp_path, "unlucky") == (0, False, False)


async def test_a_creation_cancelled_as_the_backend_answers_can_be_retried(
    tmp_path: Path,
) -> None:
    # The runner's request is cancelled (it hung up) just as the backend made the job: the
    # cancel lands as the job's writer task starts.
    backend = CreationOnHold(tmp_path)
    remote_jobs = RemoteJobs(Catalog(backend))
    async with trio.open_nursery() as nursery:
        await nursery.start(remote_jobs.run)
        request = trio.CancelScope()
        done = trio.Event()

        async def create() -> None:
            with request:
                await remote_jobs.create("cut", SPEC, "me")
            done.set()

        nursery.start_soon(create)
        await backend.creating.wait()
        request.cancel()
        backend.go_on.set()
        with trio.fail_after(DEADLINE_S):
            await done.wait()
            assert await remote_jobs.create("cut", SPEC, "me") == (0, False, False)
        await remote_jobs.close()


class BackendDown(DataDirBackend):
    """A backend that cannot be reached while ``down`` (Redis restarting, say)."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.down = False
        self.failed = trio.Event()

        self.emptied = False  # came back without the job (Redis with no persistence)

    async def open_log(self, job_id: str) -> FileLog:
        if self.down:
            self.failed.set()
            raise StorageError("Redis cannot be reached")
        if self.emptied:
            raise UnknownJob(f"no job {job_id}")
        return await super().open_log(job_id)


async def test_a_quiet_runners_job_is_let_go_even_while_the_backend_is_down(
    tmp_path: Path,
) -> None:
    backend = BackendDown(tmp_path)
    catalog = Catalog(backend)
    remote_jobs = RemoteJobs(catalog, runner_timeout_s=0.2)
    async with trio.open_nursery() as nursery:
        await nursery.start(remote_jobs.run)
        await remote_jobs.create("quiet", SPEC, "me")
        backend.down = True  # the runner goes quiet, and the backend is unreachable a while
        with trio.fail_after(DEADLINE_S):
            await backend.failed.wait()
        backend.down = False
        with trio.fail_after(DEADLINE_S):
            while (await catalog.get("quiet")).job.status != "interrupted":
                await catalog.wait_changed()
        with trio.fail_after(DEADLINE_S):
            assert await remote_jobs.create("quiet", SPEC, "me") == (0, False, False)
        await remote_jobs.close()


@pytest.fixture
def no_spinning(monkeypatch: pytest.MonkeyPatch) -> None:
    """A viewer that reads without ever waiting never reaches a checkpoint, so no deadline
    could end the test: fail it after that many reads instead."""
    reads = 0
    read_after = RemoteLog.read_after

    async def counted(self: RemoteLog, cursor: Cursor, max_bytes: int = 1 << 20) -> Read:
        nonlocal reads
        reads += 1
        if reads > 2000:
            raise AssertionError(f"the viewer spins: {reads} reads")
        return await read_after(self, cursor, max_bytes)

    monkeypatch.setattr(RemoteLog, "read_after", counted)


async def live_job(remote_jobs: RemoteJobs, job_id: str) -> None:
    await remote_jobs.create(job_id, SPEC, "me")
    await remote_jobs.append(job_id, Records(1, 1, sse.encode_lines(1, ["one"]), 0), "me")


@pytest.mark.parametrize("gone", [False, True])
@pytest.mark.usefixtures("no_spinning")
async def test_a_viewer_of_a_quiet_runners_job_gets_its_end(tmp_path: Path, gone: bool) -> None:
    backend = BackendDown(tmp_path)
    catalog = Catalog(backend)
    state = AppState(catalog, Settings(data_dir=tmp_path))
    remote_jobs = RemoteJobs(catalog, runner_timeout_s=0.5)
    backend.emptied = gone  # (and the server goes on)
    got: list[bytes] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(remote_jobs.run)
        await live_job(remote_jobs, "quiet")
        with trio.fail_after(DEADLINE_S):
            async for data in state.stream_events(await catalog.get("quiet"), 0):
                got.append(data)
        await remote_jobs.close()
    assert b"one" in b"".join(got) and b"interrupted" in got[-1]


@pytest.mark.usefixtures("no_spinning")
async def test_a_viewer_does_not_hold_up_the_servers_stop(tmp_path: Path) -> None:
    catalog = Catalog(DataDirBackend(tmp_path))
    state = AppState(catalog, Settings(data_dir=tmp_path))
    remote_jobs = RemoteJobs(catalog)
    async with trio.open_nursery() as nursery:
        await nursery.start(remote_jobs.run)
        await live_job(remote_jobs, "stopping")
        got_line = trio.Event()

        async def view() -> None:
            async for data in state.stream_events(await catalog.get("stopping"), 0):
                if b"one" in data:
                    got_line.set()

        nursery.start_soon(view)
        with trio.fail_after(DEADLINE_S):
            await got_line.wait()
            await remote_jobs.close()  # as the server does before it ends the streams
        state.shut_down()


class ListingDown(DataDirBackend):
    """A backend that cannot list its jobs until ``up`` is set (Redis down at start)."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.up = trio.Event()
        self.listed = trio.Event()

    async def list_jobs(self, limit: int = 500) -> list[Job]:
        if not self.up.is_set():
            raise StorageError("Redis cannot be reached")
        jobs = await super().list_jobs(limit)
        self.listed.set()
        return jobs


async def test_a_server_starts_while_its_backend_is_down_and_restores_its_jobs_later(
    tmp_path: Path,
) -> None:
    # A runner's job, given up by a server that stopped: the next server restores it.
    with trio.fail_after(DEADLINE_S):
        await resumable(tmp_path, "returning")
    backend = ListingDown(tmp_path)
    catalog = Catalog(backend)
    remote_jobs = RemoteJobs(catalog)
    async with trio.open_nursery() as nursery:
        with trio.fail_after(DEADLINE_S):
            await nursery.start(remote_jobs.run)  # does not wait for the backend
        backend.up.set()
        with trio.fail_after(DEADLINE_S):
            await backend.listed.wait()
            while (await catalog.get("returning")).job.status != "running":
                await catalog.wait_changed()
        await remote_jobs.close()
