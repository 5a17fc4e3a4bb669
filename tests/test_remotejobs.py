"""Remote jobs as the server starts, stops and loses its backend: no job is left locked (its
run lock or Redis lease held) or shown running for good, and no failure ends the server."""

from __future__ import annotations

import errno
from pathlib import Path
from typing import Any, NoReturn

import pytest
import trio
import trio.testing

from logstream import remotejobs
from logstream.backends.datadir import DataDirBackend, DataDirWriter, FileLog
from logstream.catalog import Catalog
from logstream.errors import StorageError, Unavailable
from logstream.ingest import RemoteJobSpec
from logstream.remotejobs import RemoteJobs

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

    async def open_log(self, job_id: str) -> FileLog:
        if self.down:
            self.failed.set()
            raise StorageError("Redis cannot be reached")
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
