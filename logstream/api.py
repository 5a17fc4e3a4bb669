"""The Python API: serve live logs from a Python program (a task runner, a test harness, ...).

Everything runs inside the caller's ``trio.run``::

    import trio
    import logstream

    async def main() -> int:
        async with logstream.open_server(port=0) as server:
            job = await server.start(["make", "test"], name="tests")
            print("watch it at", job.url)
            result = await job.wait()
            return result.exit_code

    trio.run(main)

``open_server`` starts the same HTTP server as ``logstream serve`` (viewer, API, event streams)
and a job supervisor. ``Server.start`` runs a command as a job and returns a ``RunningJob`` at
once; ``Server.run`` also waits for its end. Jobs run in their own process group, their lines
are kept in the data directory, and leaving the ``async with`` block (normally, by an exception
or by cancellation) cancels the jobs still running, waits until their logs are finished, and
stops the server. The API never handles signals: that stays with the caller.
"""

from __future__ import annotations

import os
import signal
import socket
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypedDict, Unpack

import trio
from quart_trio import QuartTrio

from logstream import routes
from logstream.backends.open_backend import open_backend
from logstream.catalog import Catalog
from logstream.config import Settings
from logstream.ingestweb import IngestRoutes
from logstream.jobsfile import JobsFile, load_jobs_file
from logstream.jobspec import GRACE_S, JobSpec
from logstream.launch import JobHandle, JobSupervisor
from logstream.remotejobs import RemoteJobs
from logstream.ring import DEFAULT_RING_LINES
from logstream.runner import RunOutcome
from logstream.server import format_url, serve_http
from logstream.store import default_data_dir
from logstream.taskrunner import TaskRunner
from logstream.web import AppState, create_app

#: At most this long, leaving ``open_server`` waits for viewers to receive the end events.
END_WAIT_S = 5.0


@dataclass(frozen=True)
class JobResult:
    """How a job ended."""

    id: str
    name: str
    #: The job's page in the viewer.
    url: str
    #: ``succeeded``, ``failed`` or ``cancelled`` (a timeout cancels).
    status: str
    #: The command's exit status; 128+N when it died of signal N; 127 when it was not found.
    exit_code: int

    @property
    def ok(self) -> bool:
        return self.status == "succeeded"


class StartOptions(TypedDict, total=False):
    """The keyword options of ``Server.start`` (and ``Server.run``)."""

    name: str | None
    cwd: str | os.PathLike[str] | None
    env: Mapping[str, str] | None
    pty: bool
    tee: bool
    timeout_s: float | None
    grace_s: float


class RunningJob:
    """A job the server runs; returned by ``Server.start`` before its command ends."""

    def __init__(self, handle: JobHandle, base_url: str) -> None:
        self._handle = handle
        self._base_url = base_url

    @property
    def id(self) -> str:
        return self._handle.id

    @property
    def name(self) -> str:
        return self._handle.name

    @property
    def url(self) -> str:
        """The job's page in the live viewer (give it to ``logstream tail`` too)."""
        return self._base_url + routes.job_page(self.id)

    @property
    def events_url(self) -> str:
        """The job's Server-Sent Events stream."""
        return self._base_url + routes.job_events(self.id)

    @property
    def status(self) -> str:
        """``running`` until it ends, then as in ``JobResult.status``."""
        return self._handle.job.status

    @property
    def lines(self) -> int:
        """How many lines its log holds so far."""
        return self._handle.log.last

    def cancel(self) -> None:
        """SIGTERM to the job's process group, SIGKILL after the grace period; ends it
        ``cancelled``. Does nothing once it has ended."""
        self._handle.cancel(signal.SIGTERM)

    async def wait(self) -> JobResult:
        """Wait until the job has ended and its log is complete on disk."""
        return self._result(await self._handle.wait())

    def _result(self, result: RunOutcome) -> JobResult:
        return JobResult(self.id, self.name, self.url, result.status, result.exit_code)


class Server:
    """A running logstream server; get one from ``open_server``."""

    def __init__(
        self,
        url: str,
        settings: Settings,
        supervisor: JobSupervisor,
        tasks: TaskRunner,
        state: AppState,
        app: QuartTrio,
    ) -> None:
        #: ``http://HOST:PORT`` (no trailing slash).
        self.url = url
        self.settings = settings
        self._supervisor = supervisor
        self._tasks = tasks
        self.state = state
        #: The ASGI app (to embed or test it).
        self.app = app

    @property
    def catalog(self) -> Catalog:
        return self.state.catalog

    @property
    def data_dir(self) -> Path:
        return self.settings.data_dir

    async def start(
        self,
        command: Sequence[str] | str,
        *,
        name: str | None = None,
        cwd: str | os.PathLike[str] | None = None,
        env: Mapping[str, str] | None = None,
        pty: bool = False,
        tee: bool = False,
        timeout_s: float | None = None,
        grace_s: float = GRACE_S,
    ) -> RunningJob:
        """Start ``command`` as a job and return at once.

        ``command``: a list of arguments run as is, or a string run by ``/bin/sh -c``.
        ``name``: shown in the job list (default: the command). ``env``: variables added to
        this process's environment. ``pty``: a pseudo-terminal for stdout and another
        for stderr (line-buffered, colours kept, stderr lines stay stderr lines). ``tee``:
        also copy the output to this process's stdout and stderr.
        ``timeout_s``: cancel the job after this long (its log then ends with the stderr line
        ``logstream: timed out after N s``). ``grace_s``: between SIGTERM and SIGKILL.
        """
        argv = ["/bin/sh", "-c", command] if isinstance(command, str) else list(command)
        if not argv:
            raise ValueError("empty command")
        spec = JobSpec.resolve(
            self.settings,
            argv,
            name=name or (command[:200] if isinstance(command, str) else None),
            cwd=Path(cwd) if cwd is not None else None,
            env={**os.environ, **env} if env else None,
            pty=pty,
            tee=tee,
            timeout_s=timeout_s,
            grace_s=grace_s,
        )
        return RunningJob(await self._supervisor.start(spec), self.url)

    async def create(self, spec: JobSpec) -> JobHandle:
        """Create a job whose command the caller runs (``await handle.run()``) in its own
        task: its ID and URL are known before the command starts."""
        return await self._supervisor.create(spec)

    async def run(self, command: Sequence[str] | str, **options: Unpack[StartOptions]) -> JobResult:
        """Run ``command`` as a job to its end (options as for ``start``).

        If the caller is cancelled meanwhile, the job is cancelled too.
        """
        job = await self.start(command, **options)
        try:
            return await job.wait()
        finally:
            job.cancel()  # only does something when we were cancelled while waiting

    async def start_defined(self, name: str) -> RunningJob:
        """Start a job the jobs file defines (as ``POST /api/jobs`` would)."""
        handle = await self._tasks.start(name)
        return RunningJob(handle, self.url)


@asynccontextmanager
async def open_server(
    *,
    data_dir: str | os.PathLike[str] | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    token: str | None = None,
    jobs_file: str | os.PathLike[str] | None = None,
    ring_lines: int = DEFAULT_RING_LINES,
    masks: Sequence[str] = (),
    cors_origin: str | None = None,
    allow_hosts: Sequence[str] = (),
    end_wait_s: float = END_WAIT_S,
) -> AsyncIterator[Server]:
    """Serve live logs for as long as the ``async with`` block runs (call inside trio).

    ``data_dir``: where logs are kept (default: ``$LOGSTREAM_DATA_DIR``, else
    ``$XDG_STATE_HOME/logstream``). ``port=0`` picks a free port; ``server.url`` tells which.
    ``token``: require it from every client (docs/security.md); a host outside loopback needs one.
    ``jobs_file``: a TOML jobs file whose jobs ``POST /api/jobs`` (and ``start_defined``)
    may start. ``masks``: environment variables whose values become ``***`` in the logs.
    ``allow_hosts``: host names answered besides loopback when there is no token (the
    ``Host`` check against DNS rebinding, docs/security.md).

    On leaving the block, running jobs are cancelled and their logs finished, then viewers
    get up to ``end_wait_s`` to receive the end events before the server stops.
    """
    settings = Settings(
        data_dir=Path(data_dir) if data_dir is not None else default_data_dir(),
        host=host,
        port=port,
        token=token,
        ring_lines=ring_lines,
        masks=tuple(masks),
        cors_origin=cors_origin,
        allow_hosts=tuple(allow_hosts),
    )
    settings.check_exposure()
    jobs = load_jobs_file(Path(jobs_file)) if jobs_file is not None else None
    async with serve(settings, jobs, end_wait_s=end_wait_s) as server:
        yield server


@asynccontextmanager
async def serve(
    settings: Settings,
    jobs: JobsFile | None = None,
    *,
    sock: socket.socket | None = None,
    end_wait_s: float = END_WAIT_S,
    serve_tasks: bool = True,
    accept_runners: bool = True,
    url: str | None = None,
) -> AsyncIterator[Server]:
    """The one server assembly: ``logstream run``, ``logstream serve`` and ``open_server``.

    From ready ``Settings``: the backend, the catalog, the web app, the HTTP server and a job
    supervisor. ``sock``: a socket already bound with ``bind_socket``. ``serve_tasks``: answer
    ``POST /api/jobs`` (task-runner mode; ``jobs`` defines what it may start).
    ``accept_runners``: answer the ingest routes of remote runners (``RemoteJobs``). On leaving,
    running jobs are cancelled and their logs finished, viewers get up to ``end_wait_s`` to
    receive the end events, then every stream ends (clients resume later) and the server
    stops, its wait bounded by the graceful timeout. ``url``: another server (a ``logstream
    serve`` on the same data directory) serves these jobs: no HTTP server is started here,
    and ``server.url`` is that one.
    """
    async with open_backend(settings) as backend, trio.open_nursery() as nursery:
        catalog = Catalog(backend)
        supervisor = JobSupervisor(catalog)
        tasks = TaskRunner(supervisor, settings, jobs)
        state = AppState(catalog, settings, tasks if serve_tasks else None)
        nursery.start_soon(state.run_keepalive)
        stop = trio.Event()
        app = create_app(state)
        remote_jobs = None
        if accept_runners:
            remote_jobs = RemoteJobs(
                catalog, runner_timeout_s=settings.runner_timeout_s, ring_lines=settings.ring_lines
            )
            await nursery.start(remote_jobs.run)
        if url is None:
            routes = IngestRoutes(app, remote_jobs)  # type: ignore[arg-type]
            bound_host, bound_port = await nursery.start(serve_http, routes, settings, stop, sock)
            url = format_url(settings.scheme, bound_host, bound_port)
        await nursery.start(supervisor.run)
        server = Server(url.rstrip("/"), settings, supervisor, tasks, state, app)
        try:
            yield server
        finally:
            with trio.CancelScope(shield=True):
                supervisor.close()
                await supervisor.wait_closed()
                if remote_jobs is not None:
                    await remote_jobs.close()
                if end_wait_s > 0:
                    with trio.move_on_after(end_wait_s):
                        await state.wait_no_streams()
            state.shut_down()
            stop.set()
            nursery.cancel_scope.deadline = trio.current_time() + settings.graceful_timeout_s + 1
