"""The command line: ``logstream run``, ``serve``, ``tail`` and ``gc``.

Each command parses its options into a ``Settings`` and makes one ``trio.run`` call.
"""

from __future__ import annotations

import functools
import gc as python_gc  # the module; `gc` below is the command
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import click
import trio

from logstream import api, routes
from logstream import tail as tail_module
from logstream.backends.open_backend import open_backend
from logstream.backends.protocol import Backend
from logstream.config import Settings
from logstream.errors import StorageError
from logstream.jobsfile import JobsFile, JobsFileError, load_jobs_file
from logstream.jobspec import JobSpec
from logstream.redisformat import InvalidRedisURL, check_redis_url
from logstream.ring import DEFAULT_RING_LINES
from logstream.server import PortInUse, bind_socket, format_url
from logstream.store import default_data_dir
from logstream.workers import WORKER_ENV, Workers, worker_argv

F = TypeVar("F", bound=Callable[..., Any])


def say(message: str) -> None:
    """Write one whole ``logstream: `` line to stderr."""
    sys.stderr.write(f"logstream: {message}\n")
    sys.stderr.flush()


class UsageError(click.ClickException):
    exit_code = 2

    def show(self, file: Any = None) -> None:
        say(self.message)


def server_options(function: F) -> F:
    """Options shared by ``run`` and ``serve``."""
    decorators = [
        click.option(
            "--host",
            default="127.0.0.1",
            show_default=True,
            help="Address to listen on. Outside loopback a token is required.",
        ),
        click.option(
            "--port",
            type=click.IntRange(0, 65535),
            default=None,
            help="Port (default 8765, or a free port when 8765 is taken; 0: any).",
        ),
        click.option(
            "--data-dir",
            type=click.Path(path_type=Path),
            envvar="LOGSTREAM_DATA_DIR",
            default=None,
            help="Where logs are kept [default: $XDG_STATE_HOME/logstream].",
        ),
        click.option(
            "--ring-lines",
            type=click.IntRange(min=1),
            default=DEFAULT_RING_LINES,
            show_default=True,
            help="Lines kept in memory per job.",
        ),
        click.option(
            "--token",
            envvar="LOGSTREAM_TOKEN",
            default=None,
            help="Require this token (Bearer header, ?token= or cookie).",
        ),
        click.option(
            "--no-auth", is_flag=True, help="Allow a non-loopback address without a token."
        ),
        click.option(
            "--mask",
            "masks",
            multiple=True,
            metavar="VAR",
            help="Replace this environment variable's value by *** (repeatable; "
            "also LOGSTREAM_MASK=A,B).",
        ),
        click.option(
            "--max-streams",
            type=click.IntRange(min=1),
            default=None,
            help="Most event streams at once; more are told to retry later.",
        ),
        click.option(
            "--write-timeout",
            "write_timeout_s",
            type=click.FloatRange(min=0.1),
            default=30.0,
            show_default=True,
            metavar="SECONDS",
            help="Disconnect a client that takes no data for this long (it resumes later).",
        ),
        click.option("--cors-origin", default=None, help="Allow this one origin (CORS)."),
        click.option(
            "--certfile",
            type=click.Path(exists=True, path_type=Path),
            default=None,
            help="TLS certificate (enables HTTPS and HTTP/2).",
        ),
        click.option(
            "--keyfile",
            type=click.Path(exists=True, path_type=Path),
            default=None,
            help="TLS private key.",
        ),
    ]
    for decorator in reversed(decorators):
        function = decorator(function)
    return function


def redis_options(function: F) -> F:
    """Options of the commands that can keep jobs in Redis."""
    function = click.option(
        "--redis",
        "redis_url",
        envvar="LOGSTREAM_REDIS_URL",
        default=None,
        metavar="URL",
        help="Keep every job in this Redis (redis://[:PASSWORD@]HOST:PORT/DB, rediss://, "
        "unix:///PATH) instead of the data directory.",
    )(function)
    return function


def make_settings(options: dict[str, Any]) -> Settings:
    masks = list(options.pop("masks", ()))
    masks += [m.strip() for m in os.environ.get("LOGSTREAM_MASK", "").split(",") if m.strip()]
    data_dir = options.pop("data_dir", None) or default_data_dir()
    if options.get("redis_url"):
        try:
            check_redis_url(options["redis_url"])
        except InvalidRedisURL as error:
            raise UsageError(f"--redis {error}") from None
    settings = Settings(data_dir=Path(data_dir), masks=tuple(masks), **options)
    try:
        settings.check_exposure()
    except ValueError as error:
        raise UsageError(
            f"{error}: set --token or LOGSTREAM_TOKEN, or pass --no-auth to serve logs to "
            "anyone who can connect"
        ) from None
    return settings


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="logstream")
def cli() -> None:
    """Live build logs over Server-Sent Events.

    Run any command with `logstream run -- COMMAND`: its output shows in your terminal as
    usual and live at a URL, for browsers (a log viewer) and for `curl` or `logstream tail`.
    Every line is kept on disk; a reconnecting client resumes at exactly the next line.
    """


@cli.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@server_options
@click.option(
    "--pty",
    is_flag=True,
    help="Run under a pseudo-terminal (line-buffered, colours kept; one stream).",
)
@click.option("--quiet", "-q", is_flag=True, help="Do not copy the output to this terminal.")
@click.option(
    "--linger",
    type=click.FloatRange(min=0),
    default=None,
    metavar="SECONDS",
    help="Keep serving this long after the job ends.",
)
@click.option("--name", default=None, help="The job's name [default: the command].")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def run(
    command: tuple[str, ...],
    pty: bool,
    quiet: bool,
    linger: float | None,
    name: str | None,
    **options: Any,
) -> int:
    """Run COMMAND and serve its log live.

    \b
    Examples:
      logstream run make test
      logstream run --pty -- npm run build
      logstream run --host 0.0.0.0 --token s3cret -- ./ci.sh

    Prints `logstream: job ID live at URL` on stderr once the server listens, then runs the
    command with its stdout and stderr copied here byte for byte. Exits with the command's
    exit status (128+N when it died of signal N). Ctrl-C or SIGTERM is forwarded to the
    command's process group; SIGKILL follows after 10 s.
    """
    settings = make_settings(options)
    spec = JobSpec.resolve(settings, command, name=name, pty=pty, tee=not quiet)
    return trio.run(_run, settings, spec, linger)


async def _run(settings: Settings, spec: JobSpec, linger_s: float | None) -> int:
    sock = _bind(settings)
    linger_over = trio.Event()
    # After a linger nobody waits for the end events; else every connected viewer gets them,
    # but not forever.
    end_wait_s = 0 if linger_s is not None else api.END_WAIT_S
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with (
            _backend_errors(),
            api.serve(settings, sock=sock, end_wait_s=end_wait_s, serve_tasks=False) as server,
            trio.open_nursery() as nursery,
        ):
            job = await server.create(spec)
            freeze_startup_heap()
            say(f"job {job.id} live at {server.url}{routes.job_page(job.id)}")

            async def forward_signals() -> None:
                async for signum in signals:
                    if job.job.ended:
                        linger_over.set()
                    else:
                        job.cancel(signum)

            nursery.start_soon(forward_signals)
            result = await job.run()
            if linger_s is not None:
                with trio.move_on_after(linger_s):
                    await linger_over.wait()
            nursery.cancel_scope.cancel()
    return result.exit_code


def freeze_startup_heap() -> None:
    """Exempt everything built at startup from the cyclic garbage collector.

    The modules and objects of click, quart, hypercorn and logstream make a heap that a full
    collection walked in about 30 ms: a stall every client saw as a latency spike (p99 21-34 ms
    instead of 8 ms with 100 clients at 2,000 lines/s, docs/benchmarks.md). They live as long
    as the process anyway; later objects are collected as usual.
    """
    python_gc.collect()
    python_gc.freeze()


def _bind(settings: Settings) -> socket.socket:
    """Bind before anything else happens: a taken port must not leave a job behind."""
    try:
        return bind_socket(settings.host, settings.port, reuse_port=settings.reuse_port)
    except PortInUse as error:
        raise UsageError(f"{error.strerror}; choose another --port (0: any free port)") from None


@asynccontextmanager
async def _backend_errors() -> AsyncIterator[None]:
    """A backend that cannot be used (an unwritable data directory) is a usage error."""
    try:
        yield
    except StorageError as error:
        raise UsageError(error.message) from None


@cli.command()
@server_options
@click.option(
    "--jobs",
    "jobs_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="A TOML jobs file: jobs that POST /api/jobs may start.",
)
@click.option(
    "--keep-days",
    type=click.FloatRange(min=0),
    default=None,
    help="Remove finished jobs older than this (checked hourly).",
)
@click.option(
    "--keep-jobs",
    type=click.IntRange(min=0),
    default=None,
    help="Keep only this many newest finished jobs (checked hourly).",
)
@redis_options
@click.option(
    "--lease-s",
    type=click.FloatRange(min=0.1),
    default=10.0,
    show_default=True,
    metavar="SECONDS",
    help="With --redis: a job whose node stops (dies) shows as interrupted after this long.",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Node processes serving this one port (SO_REUSEPORT), e.g. one per core. Needs --redis.",
)
def serve(
    jobs_file: Path | None,
    keep_days: float | None,
    keep_jobs: int | None,
    workers: int,
    **options: Any,
) -> int:
    """Serve every job in the data directory (or in Redis), live and finished.

    Jobs that `logstream run` processes on this machine write to the same data directory
    show up live. With --jobs, the jobs defined in that file can be started from the API.
    With --redis, any number of `serve` nodes on any machines share every job (docs/scaling.md).
    """
    options["reuse_port"] = bool(os.environ.get(WORKER_ENV))
    settings = make_settings(options)
    try:
        jobs = load_jobs_file(jobs_file) if jobs_file else None
    except JobsFileError as error:
        raise UsageError(str(error)) from None
    if workers > 1:
        return _serve_workers(settings, workers)
    return trio.run(_serve, settings, jobs, keep_days, keep_jobs)


def _serve_workers(settings: Settings, count: int) -> int:
    if not settings.redis_url:
        raise UsageError(
            "--workers needs --redis: the workers are separate processes that share jobs "
            "through Redis"
        )
    # Held (bound, not listening) while the workers run: the port stays ours.
    try:
        reserved = bind_socket(settings.host, settings.port, reuse_port=True)
    except PortInUse as error:
        raise UsageError(f"{error.strerror}; choose another --port (0: any free port)") from None
    with reserved:
        port = reserved.getsockname()[1]
        url = format_url(settings.scheme, settings.host, port)
        argv = [sys.executable, "-m", "logstream", *worker_argv(click.get_current_context().obj)]
        return trio.run(Workers(count, argv, port, url, say).run)


async def _serve(
    settings: Settings, jobs: JobsFile | None, keep_days: float | None, keep_jobs: int | None
) -> int:
    sock = _bind(settings)
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        # On SIGTERM streams end at once (clients resume later); running jobs are cancelled
        # and their logs finished before the server stops.
        async with (
            _backend_errors(),
            api.serve(settings, jobs, sock=sock, end_wait_s=0) as server,
            trio.open_nursery() as nursery,
        ):
            freeze_startup_heap()
            say(f"serving at {server.url}/")
            if keep_days is not None or keep_jobs is not None:
                nursery.start_soon(_gc_hourly, server.catalog.backend, keep_days, keep_jobs)
            async for _signum in signals:
                break
            say("shutting down")
            nursery.cancel_scope.cancel()
    return 0


async def _gc_hourly(backend: Backend, keep_days: float | None, keep_jobs: int | None) -> None:
    while True:
        removed = await backend.remove_old_jobs(keep_days, keep_jobs)
        if removed:
            say(f"removed {len(removed)} old jobs")
        await trio.sleep(3600)


@cli.command("tail")
@click.argument("url")
@click.option(
    "--from",
    "after",
    type=click.IntRange(min=0),
    default=None,
    metavar="N",
    help="Start after line N (resume where you left off).",
)
@click.option(
    "--tail",
    "tail_lines",
    type=click.IntRange(min=0),
    default=None,
    metavar="N",
    help="Start with the last N lines.",
)
@click.option("--no-follow", is_flag=True, help="Print the lines the job has now and exit.")
@click.option(
    "--token",
    envvar="LOGSTREAM_TOKEN",
    default=None,
    help="The server's token (sent as a Bearer header).",
)
@click.option(
    "--reconnect-for",
    type=click.FloatRange(min=0),
    default=tail_module.DEFAULT_RECONNECT_FOR_S,
    show_default=True,
    metavar="SECONDS",
    help="Give up after the server is unreachable this long (0: never).",
)
def tail_command(
    url: str,
    after: int | None,
    tail_lines: int | None,
    no_follow: bool,
    token: str | None,
    reconnect_for: float,
) -> int:
    """Follow a job's log: stdout lines to stdout, stderr lines to stderr.

    \b
    Examples:
      logstream tail http://127.0.0.1:8765/jobs/ID
      logstream tail --tail 100 --no-follow http://ci.example:8765/jobs/ID

    Reconnects after a dropped connection and resumes at exactly the next line. Exits with
    the job's exit status when it ends: 0 when it succeeded, its exit code when it failed or
    was cancelled (130 without one), 75 when its runner died (interrupted). With --no-follow
    a job still running exits 0. Errors: 2 bad URL, 66 no such job, 77 token missing or
    wrong, 69 server unreachable for too long.
    """
    if after is not None and tail_lines is not None:
        raise UsageError("tail: give --from or --tail, not both")
    try:
        return trio.run(
            functools.partial(
                tail_module.tail,
                url,
                stdout=sys.stdout.buffer,
                stderr=sys.stderr.buffer,
                after=after,
                tail_lines=tail_lines,
                follow=not no_follow,
                token=token,
                reconnect_for_s=reconnect_for,
            )
        )
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # Our reader went away (`logstream tail URL | head`): stop quietly.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


@cli.command()
@click.option(
    "--data-dir",
    type=click.Path(path_type=Path),
    envvar="LOGSTREAM_DATA_DIR",
    default=None,
    help="The data directory [default: $XDG_STATE_HOME/logstream].",
)
@redis_options
@click.option(
    "--keep-days",
    type=click.FloatRange(min=0),
    default=None,
    help="Remove finished jobs that ended more than this many days ago.",
)
@click.option(
    "--keep-jobs",
    type=click.IntRange(min=0),
    default=None,
    help="Keep only this many newest jobs; remove older finished ones.",
)
def gc(
    data_dir: Path | None, redis_url: str | None, keep_days: float | None, keep_jobs: int | None
) -> int:
    """Remove old finished jobs (never a running one), from the data directory or Redis."""
    if keep_days is None and keep_jobs is None:
        raise UsageError("gc: give --keep-days and/or --keep-jobs")
    settings = make_settings({"data_dir": data_dir, "redis_url": redis_url})
    removed = trio.run(_remove_old_jobs, settings, keep_days, keep_jobs)
    say(f"removed {len(removed)} jobs")
    return 0


async def _remove_old_jobs(
    settings: Settings, keep_days: float | None, keep_jobs: int | None
) -> list[str]:
    async with _backend_errors(), open_backend(settings) as backend:
        return await backend.remove_old_jobs(keep_days, keep_jobs)


def main(argv: Sequence[str] | None = None) -> int:
    """The console script: returns the exit status."""
    _reopen_closed_standard_fds()
    try:
        args = list(argv) if argv is not None else sys.argv[1:]
        result = cli.main(
            args=args,
            prog_name="logstream",
            standalone_mode=False,
            obj=args,  # ``serve --workers`` starts its workers with the same arguments
        )
    except click.exceptions.Abort:
        say("aborted")
        return 130
    except click.ClickException as error:
        error.show()
        return error.exit_code
    except click.exceptions.Exit as exit_:
        return exit_.exit_code
    return result if isinstance(result, int) else 0


def _reopen_closed_standard_fds() -> None:
    """Point a closed stdin, stdout or stderr at /dev/null.

    Started with `>&-`, the next file we open would take fd 1, and the copy of the command's
    output meant for our stdout would be written into it (a socket, or a log file).
    """
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR)
            if null != fd:
                os.dup2(null, fd)
                os.close(null)


if __name__ == "__main__":
    sys.exit(main())
