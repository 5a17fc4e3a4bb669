"""Start a job in a nursery: the one path ``run``, ``serve --jobs`` and the Python API share.

Theory of operation
-------------------
A job is launched in two steps, so that its ID and URL are known before its command starts
(``logstream run`` prints the URL first): ``create_job`` creates the job in the catalog's
backend (which makes this process its writer), registers its ``LiveLog`` in the catalog and
starts the log's writer task in the given nursery; ``JobHandle.run`` then runs the command to
its end in the caller's task and waits until the backend has recorded the end.

``JobSupervisor`` is a small service for servers that run many jobs: it owns a nursery, starts
each job's ``run`` in it, knows the running ones by ID, and on ``close`` cancels them all and
waits until every log is finished, so no process of a job outlives the server.

A timeout stops the job like a cancel does (status ``cancelled``) and appends the stderr line
``logstream: timed out after N s`` to its log right before the end.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from pathlib import Path

import trio

from logstream.catalog import Catalog
from logstream.detectchild import matcher_file_reader
from logstream.detectproc import shared_process
from logstream.job import Job
from logstream.joblog import LiveLog
from logstream.jobspec import GRACE_S, JobSpec
from logstream.problems import Detector
from logstream.runner import JobRunner, RunOutcome


class JobHandle:
    """One job this process runs: its log, its runner, and its result once it ended."""

    def __init__(
        self,
        log: LiveLog,
        runner: JobRunner,
        catalog: Catalog,
    ) -> None:
        self.log = log
        self.runner = runner
        self.result: RunOutcome | None = None
        self._catalog = catalog
        self._started = False
        self._done = trio.Event()

    @property
    def id(self) -> str:
        return self.log.job.id

    @property
    def name(self) -> str:
        return self.log.job.name

    @property
    def job(self) -> Job:
        """The job's metadata, as the API shows it (``status``, ``exit_code``, ...)."""
        return self.log.job

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def cancel(self, signum: int = signal.SIGTERM) -> None:
        """Stop the job: ``signum`` to its process group now, SIGKILL after the grace period.

        The job ends ``cancelled``. Cancelling a job that has not started yet ends it as soon
        as it starts; cancelling one that has ended does nothing.
        """
        if not self.job.ended:  # its process group may be gone, its ID reused
            self.runner.stop(signum)

    async def run(self) -> RunOutcome:
        """Run the command to its end (call once); the end is on disk when this returns."""
        if self._started:
            raise RuntimeError(f"job {self.id} already runs")
        self._started = True
        try:
            async with trio.open_nursery() as nursery:
                if self.runner.spec.timeout_s is not None:
                    nursery.start_soon(self._stop_after_timeout, self.runner.spec.timeout_s)
                result = await self.runner.run()
                nursery.cancel_scope.cancel()
            self.result = result
            self._catalog.notify()
            await self.log.wait_closed()
            return result
        finally:
            self._done.set()

    async def wait(self) -> RunOutcome:
        """Wait until the job has ended and its end is on disk; its status and exit code."""
        await self._done.wait()
        if self.result is None:
            raise RuntimeError(f"job {self.id} was abandoned before it ended")
        return self.result

    async def _stop_after_timeout(self, timeout_s: float) -> None:
        await trio.sleep(timeout_s)
        if not self.runner.stopping:
            self.runner.end_notice = f"logstream: timed out after {timeout_s:g} s"
            self.runner.stop(signal.SIGTERM)


async def create_job(nursery: trio.Nursery, catalog: Catalog, spec: JobSpec) -> JobHandle:
    """A new job, visible in ``catalog``, with its log writer running in ``nursery``.

    Its command starts when the caller awaits ``JobHandle.run()``.
    """
    masker = spec.masker
    writer = await catalog.backend.create_job(
        # The command line often carries the secret too (`curl -H "token: $T"`).
        masker.mask(spec.name),
        [masker.mask(part) for part in spec.command],
        job_id=spec.job_id,
        cwd=str(spec.cwd or os.getcwd()),
        pid=os.getpid(),
        meta=spec.meta,
    )
    log = LiveLog(writer, spec.ring_lines, on_write_error=_say_on_stderr)
    try:
        cwd = spec.cwd or Path.cwd()
        log.detector = Detector(spec.matchers, read_file=matcher_file_reader(cwd))
        if not spec.detect_in_process:
            log.detect_elsewhere(shared_process(), spec.matchers, str(cwd))
        runner = JobRunner(log, spec)
        catalog.add_live(log)
        await nursery.start(log.run_writer)
    except BaseException:
        await log.abandon()
        catalog.retire(writer.job.id)  # served as the backend has it: interrupted
        catalog.notify()
        raise
    return JobHandle(log, runner, catalog)


class JobSupervisor:
    """Runs many jobs in a nursery of its own; ``close`` cancels them and waits for their end.

    Start it with ``await nursery.start(supervisor.run)``.
    """

    def __init__(self, catalog: Catalog, *, close_timeout_s: float = GRACE_S + 5) -> None:
        self.catalog = catalog
        self.close_timeout_s = close_timeout_s
        self._nursery: trio.Nursery | None = None
        self._jobs: dict[str, JobHandle] = {}
        self._closing = trio.Event()
        self._closed = trio.Event()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve until ``close``: then cancel every running job and wait until all ended."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            await self._closing.wait()
            for handle in self.running():
                handle.cancel()
            # The runner sends SIGKILL after its grace period; this bound is a last resort.
            nursery.cancel_scope.deadline = trio.current_time() + self.close_timeout_s
        self._nursery = None
        self._closed.set()

    def close(self) -> None:
        """Refuse new jobs, cancel the running ones; ``run`` returns once they all ended."""
        self._closing.set()

    async def wait_closed(self) -> None:
        """Wait until ``run`` has returned: every job ended and its log is finished."""
        await self._closed.wait()

    @property
    def closing(self) -> bool:
        return self._closing.is_set()

    async def start(self, spec: JobSpec) -> JobHandle:
        """Start a job now; it runs in the supervisor's nursery."""
        handle = await self.create(spec)
        self._jobs[handle.id] = handle
        assert self._nursery is not None
        self._nursery.start_soon(self._run, handle)
        return handle

    async def create(self, spec: JobSpec) -> JobHandle:
        """A job whose log writer runs in the supervisor's nursery and whose command the
        caller runs (``await handle.run()``): ``logstream run`` prints its URL first."""
        if self._nursery is None or self._closing.is_set():
            raise RuntimeError("the job supervisor is not running")
        return await create_job(self._nursery, self.catalog, spec)

    def get(self, job_id: str) -> JobHandle | None:
        """The job with this ID, if this supervisor started it."""
        return self._jobs.get(job_id)

    def running(self) -> list[JobHandle]:
        return [handle for handle in self._jobs.values() if not handle.done]

    async def _run(self, handle: JobHandle) -> None:
        if self._closing.is_set():
            handle.cancel()
        try:
            await handle.run()
        finally:
            # Finished jobs are read from disk: a long-running server keeps no ring per job.
            del self._jobs[handle.id]
            if handle.result is not None:
                self.catalog.retire(handle.id)


def _say_on_stderr(message: str) -> None:
    with contextlib.suppress(OSError):
        sys.stderr.write(message + "\n")
        sys.stderr.flush()
