"""The command line: ``logstream run``, ``serve``, ``tail`` and ``gc``.

Each command parses its options into a ``Settings`` and makes one ``trio.run`` call.
"""

from __future__ import annotations

import functools
import gc as python_gc  # the module; `gc` below is the command
import os
import shlex
import signal
import socket
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import click
import trio
from click.core import ParameterSource

from logstream import api, remote, routes
from logstream import tail as tail_module
from logstream.announce import announce_server, running_server_url
from logstream.backends.open_backend import open_backend
from logstream.backends.protocol import Backend
from logstream.config import DEFAULT_MAX_STREAMS, DEFAULT_PORT, Settings
from logstream.errors import StorageError
from logstream.jobsfile import JobsFile, JobsFileError, load_jobs_file
from logstream.jobspec import DEFAULT_PTY_SIZE, GRACE_S, JobSpec
from logstream.matchers import Matcher, MatcherError, parse_matchers
from logstream.reconnect import FIRST_CONTACT_S
from logstream.redisformat import InvalidRedisURL, check_redis_url
from logstream.ring import DEFAULT_RING_LINES
from logstream.server import PortInUse, bind_socket, format_url
from logstream.store import default_data_dir
from logstream.workers import WORKER_ENV, Workers, worker_argv

F = TypeVar("F", bound=Callable[..., Any])
#: After a first signal, viewers get the end until this long after it (the job is killed after
#: ``GRACE_S``); stopping the server takes at most ``graceful_timeout_s`` + 1 more (4 s), so
#: ``run`` exits within 15 s of the signal.
SIGNALLED_EXIT_S = GRACE_S + 1


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
            help="Port; 0: any free port. [default: 8765, or a free port when 8765 is taken]",
        ),
        click.option(
            "--data-dir",
            type=click.Path(path_type=Path),
            envvar="LOGSTREAM_DATA_DIR",
            show_envvar=True,
            default=None,
            help="Where logs are kept. [default: $XDG_STATE_HOME/logstream, i.e. "
            "~/.local/state/logstream]",
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
            show_envvar=True,
            default=None,
            help="Require this token (Bearer header, ?token= or cookie). Prefer "
            "LOGSTREAM_TOKEN or --token-file: other local users can read a command line.",
        ),
        click.option(
            "--token-file",
            type=click.Path(dir_okay=False, path_type=Path),
            default=None,
            help="Read the token from this file (its first line).",
        ),
        click.option(
            "--allow-host",
            "allow_hosts",
            multiple=True,
            metavar="NAME",
            help="Also answer requests addressed to this host name (repeatable; without a "
            "token only loopback names are answered).",
        ),
        click.option(
            "--no-auth", is_flag=True, help="Allow a non-loopback address without a token."
        ),
        click.option(
            "--mask",
            "masks",
            multiple=True,
            metavar="VAR",
            help="Replace this environment variable's value by *** (repeatable). "
            "[env var: LOGSTREAM_MASK, comma-separated]",
        ),
        click.option(
            "--matchers",
            "matcher_files",
            multiple=True,
            type=click.Path(dir_okay=False, path_type=Path),
            metavar="FILE",
            help="Problem matchers in GitHub's JSON format for every job (repeatable).",
        ),
        click.option(
            "--max-streams",
            type=click.IntRange(min=1),
            default=DEFAULT_MAX_STREAMS,
            show_default=True,
            help="Most event streams at once (job logs and job lists); more are told to "
            "retry later.",
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


def upload_timeout_option(help_text: str) -> Callable[[F], F]:
    """``--upload-timeout SECONDS`` of ``run --server`` and ``push``."""
    return click.option(
        "--upload-timeout",
        "upload_timeout_s",
        type=click.FloatRange(min=0),
        default=60.0,
        show_default=True,
        metavar="SECONDS",
        help=help_text,
    )


#: ``--data-dir`` of the commands that only read or tidy the data directory.
data_dir_option = click.option(
    "--data-dir",
    type=click.Path(path_type=Path),
    envvar="LOGSTREAM_DATA_DIR",
    show_envvar=True,
    default=None,
    help="The data directory. [default: $XDG_STATE_HOME/logstream, i.e. ~/.local/state/logstream]",
)


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
    matchers = _read_matchers(options.pop("matcher_files", ()))
    masks = list(options.pop("masks", ()))
    masks += [m.strip() for m in os.environ.get("LOGSTREAM_MASK", "").split(",") if m.strip()]
    data_dir = options.pop("data_dir", None) or default_data_dir()
    options["token"] = read_token(options.pop("token_file", None), options.get("token"))
    options["allow_hosts"] = tuple(options.get("allow_hosts", ()))
    if options.get("redis_url"):
        try:
            check_redis_url(options["redis_url"])
        except InvalidRedisURL as error:
            raise UsageError(f"--redis {error}") from None
    settings = Settings(
        data_dir=Path(data_dir), masks=tuple(masks), matchers=tuple(matchers), **options
    )
    try:
        socket.getaddrinfo(settings.host, None, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as error:
        reason = error.strerror if isinstance(error, socket.gaierror) else str(error)
        raise UsageError(f"cannot listen on --host {settings.host}: {reason}") from None
    try:
        settings.check_exposure()
    except ValueError as error:
        raise UsageError(
            f"{error}: set LOGSTREAM_TOKEN, --token-file or --token, or pass --no-auth to "
            "serve logs to anyone who can connect"
        ) from None
    return settings


def _read_matchers(paths: tuple[Path, ...]) -> list[Matcher]:
    matchers: list[Matcher] = []
    for path in paths:
        try:
            matchers += parse_matchers(path.read_text())
        except (OSError, UnicodeDecodeError, MatcherError) as error:
            reason = error.strerror if isinstance(error, OSError) else str(error)
            raise UsageError(f"--matchers {path}: {reason}") from None
    return matchers


def read_token(token_file: Path | None, token: str | None) -> str | None:
    """The token of ``--token-file`` (its first line), else ``token``; a bad file is an error.

    The file wins over ``LOGSTREAM_TOKEN``; with ``--token`` on the command line too it is
    ambiguous, and refused.
    """
    if token_file is None:
        return token
    context = click.get_current_context(silent=True)
    if context is not None and context.get_parameter_source("token") == ParameterSource.COMMANDLINE:
        raise UsageError("give --token or --token-file, not both")
    try:
        text = token_file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise UsageError(f"cannot read the token file {token_file}: {error}") from None
    lines = text.splitlines()
    value = lines[0].strip() if lines else ""
    if not value:
        raise UsageError(f"the token file {token_file} is empty")
    return value


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="logstream")
def cli() -> None:
    """Live build logs over Server-Sent Events.

    Run any command with `logstream run -- COMMAND`: its output shows in your terminal as
    usual and live at a URL, for browsers (a log viewer) and for `curl` or `logstream tail`.
    Every line is kept on disk; a reconnecting client resumes at exactly the next line.
    """


RUN_EXIT_STATUSES = """\b
Exit status:
  the command's own     when it exited
  128+N                 it died of signal N (130 after Ctrl-C, 143 after SIGTERM)
  127                   the command was not found
  126                   the command could not be run (not executable)
  2                     usage error: bad option, taken port, public address without a
                        token (nothing was run)"""


def _pty_size(context: Any, param: Any, value: str | None) -> tuple[int, int] | None:
    """``--pty-size COLSxROWS``, as ``120x40``."""
    if value is None:
        return None
    columns, _, rows = value.lower().partition("x")
    if columns.isdigit() and rows.isdigit() and 0 < int(columns) < 10000 > int(rows) > 0:
        return int(columns), int(rows)
    raise click.BadParameter(f"{value!r} is not COLSxROWS (for example 120x40)")


@cli.command(context_settings={"allow_interspersed_args": False}, epilog=RUN_EXIT_STATUSES)
@server_options
@click.option(
    "--pty/--no-pty",
    default=None,
    help="Run the command with a pseudo-terminal for stdout and another for stderr: it "
    "line-buffers and keeps its colours, stderr lines stay stderr lines. [default: --pty when "
    "this process's stdout is a terminal, else pipes]",
)
@click.option(
    "--pty-size",
    callback=_pty_size,
    metavar="COLSxROWS",
    default=None,
    help="Size of the pseudo-terminals. [default: the size of this terminal, following its "
    f"resizes; without one {DEFAULT_PTY_SIZE[0]}x{DEFAULT_PTY_SIZE[1]}]",
)
@click.option("--quiet", "-q", is_flag=True, help="Do not copy the output to this terminal.")
@click.option(
    "--linger",
    type=click.FloatRange(min=0),
    default=None,
    metavar="SECONDS",
    help="Keep serving this long after the job ends; a signal ends it. [default: exit once "
    f"every connected viewer has the end event, at most {api.END_WAIT_S:g} s after the job ends]",
)
@click.option("--name", default=None, help="The job's name. [default: the command]")
@click.option(
    "--server",
    envvar="LOGSTREAM_SERVER",
    show_envvar=True,
    default=None,
    metavar="URL",
    help="Send the log to this `logstream serve` instead of serving it here (CI runners).",
)
@upload_timeout_option("With --server: after the command ends, wait at most this long.")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def run(
    command: tuple[str, ...],
    pty: bool | None,
    pty_size: tuple[int, int] | None,
    quiet: bool,
    linger: float | None,
    name: str | None,
    server: str | None,
    upload_timeout_s: float,
    **options: Any,
) -> int:
    """Run COMMAND and serve its log live.

    \b
    Examples:
      logstream run make test
      logstream run --no-pty -- npm run build
      logstream run --host 0.0.0.0 --token s3cret -- ./ci.sh

    Prints `logstream: job ID live at URL` on stderr once the log is served, then runs the
    command with its stdout and stderr copied here byte for byte, and at the end one
    `logstream: ` line with its status, duration and where to see the log again. When a
    `logstream serve` runs on the same data directory (and neither --host nor --port is
    given), the URL is that server's and no port is opened. Ctrl-C or SIGTERM is forwarded to
    the command's process group; SIGKILL follows after 10 s, or at once on a second Ctrl-C.
    """
    context = click.get_current_context()
    own_server = any(
        context.get_parameter_source(option) == click.core.ParameterSource.COMMANDLINE
        for option in ("host", "port", "certfile")
    )
    settings = make_settings(options)
    pty_options: dict[str, Any] = {
        "pty": os.isatty(1) if pty is None else pty,
        "pty_size": pty_size or DEFAULT_PTY_SIZE,
        # Our terminal, whose size the pseudo-terminals follow (unless a size was given).
        "terminal_fd": None if pty_size else next((fd for fd in (1, 2, 0) if os.isatty(fd)), None),
    }
    if server is not None:
        _check_server_url(server)
        # The job never sees the runner token, and its log never shows it (the spec's
        # masker hides every token: ``Settings.job_masker``).
        spec = JobSpec.resolve(
            settings,
            command,
            name=name,
            tee=not quiet,
            env=remote.command_env(os.environ),
            **pty_options,
        )
        return trio.run(
            functools.partial(
                remote.run_remote,
                settings,
                spec,
                server=server,
                token=settings.token,
                upload_timeout_s=upload_timeout_s,
                say=say,
            )
        )
    spec = JobSpec.resolve(settings, command, name=name, tee=not quiet, **pty_options)
    return trio.run(_run, settings, spec, linger, own_server)


def _check_server_url(server: str) -> None:
    if not server.startswith(("http://", "https://")):
        raise UsageError(f"--server: an http:// or https:// URL, got {server[:100]!r}")


async def _run(settings: Settings, spec: JobSpec, linger_s: float | None, own_server: bool) -> int:
    shared_url = None if own_server else running_server_url(settings.data_dir)
    sock = _bind(settings) if shared_url is None else None
    signalled = trio.Event()
    first_signal_at = 0.0
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with (
            _backend_errors(),
            # No wait for viewers on leaving: it is below, shorter after a signal.
            api.serve(
                settings,
                sock=sock,
                end_wait_s=0,
                serve_tasks=False,
                accept_runners=False,
                url=shared_url,
            ) as server,
            trio.open_nursery() as nursery,
        ):
            job = await server.create(spec)
            freeze_startup_heap()
            say(f"job {job.id} live at {server.url}{routes.job_page(job.id)}")
            started = trio.current_time()

            async def forward_signals() -> None:
                nonlocal first_signal_at
                async for signum in signals:
                    if not signalled.is_set():
                        first_signal_at = trio.current_time()
                        signalled.set()
                    if not job.job.ended:
                        job.runner.notice(_stop_notice(signum, job.runner.stopping))
                        job.cancel(signum)

            nursery.start_soon(forward_signals)
            result = await job.run()
            duration_s = trio.current_time() - started
            live_url = server.url if shared_url else None
            say(_end_line(job.id, result.status, result.exit_code, duration_s, live_url, settings))
            if shared_url is None:
                if signalled.is_set():
                    # Exit within 15 s of the first signal: viewers get what time is left.
                    with trio.move_on_at(first_signal_at + SIGNALLED_EXIT_S):
                        await server.state.wait_no_streams()
                elif linger_s is not None:
                    with trio.move_on_after(linger_s):
                        await signalled.wait()
                else:
                    # Let every connected viewer receive the end event, but not forever.
                    with trio.move_on_after(api.END_WAIT_S):
                        await server.state.wait_no_streams()
            nursery.cancel_scope.cancel()
    return result.exit_code


def _stop_notice(signum: int, stopping: bool) -> str:
    if stopping:
        return "killing the job now (SIGKILL)"
    what = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
    return (
        f"got {what}: told the job to stop; it is killed in {GRACE_S:g} s, "
        "or now on a second Ctrl-C"
    )


def _end_line(
    job_id: str,
    status: str,
    exit_code: int,
    duration_s: float,
    live_url: str | None,
    settings: Settings,
) -> str:
    """The last ``logstream: `` line: how the job ended and where its log stays."""
    ended = f"job {job_id} {status} (exit status {exit_code}) after {_duration(duration_s)}"
    if live_url:
        return f"{ended}; its log: {live_url}{routes.job_page(job_id)}"
    data_dir = (
        ""
        if settings.data_dir == default_data_dir()
        else f" --data-dir {shlex.quote(str(settings.data_dir))}"
    )
    later = format_url("http", "127.0.0.1", DEFAULT_PORT)
    page = f"{later}{routes.job_page(job_id)}"
    return f"{ended}; to see its log again: logstream serve{data_dir}, then {page}"


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, seconds = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {seconds} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


#: See ``freeze_startup_heap``.
GC_YOUNG_THRESHOLD = 10_000


def freeze_startup_heap() -> None:
    """Keep the cyclic garbage collector out of the serving path.

    Everything built at startup (the modules and objects of click, quart, hypercorn and
    logstream) is exempted from collection: a full collection walked that heap in about
    30 ms, a stall every client saw as a latency spike. They live as long as the process
    anyway; later objects are collected as usual.

    The youngest generation is collected after ``GC_YOUNG_THRESHOLD`` more tracked objects
    instead of Python's 700: every write to a client allocates and frees a dozen (coroutines,
    ASGI messages, h11 events, cancel scopes), and with hundreds of clients the live count
    swung past 700 some 300 times a second, each pass (and every tenth, of the older
    generation too) a pause between two writes. With 100 clients at 2,000 lines a second,
    one write per line, 8 s (docs/benchmarks.md, "One line per write"): about 3,000
    collections before, 143 after. Garbage that only a collection frees (reference cycles)
    waits a little longer: at most that many objects.
    """
    python_gc.collect()
    python_gc.freeze()
    python_gc.set_threshold(GC_YOUNG_THRESHOLD, *python_gc.get_threshold()[1:])


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
@click.option(
    "--ingest-token",
    envvar="LOGSTREAM_INGEST_TOKEN",
    show_envvar=True,
    default=None,
    help="The token remote runners send (default: the viewer token also admits runners).",
)
@click.option(
    "--runner-timeout",
    "runner_timeout_s",
    type=click.FloatRange(min=1),
    default=120.0,
    show_default=True,
    metavar="SECONDS",
    help="A remote job whose runner sends nothing this long shows as interrupted.",
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
    show up live, and so do the jobs of remote runners (`logstream run --server URL`). While
    this server runs, such a `logstream run` on this machine prints this server's page for its
    job (it outlives the run). With --jobs, the jobs defined in that file can be started from
    the API.
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
            # `logstream run` on this data directory names our page for its job.
            with announce_server(settings.data_dir, _reachable_url(server.url)):
                say(f"serving at {server.url}/")
                if keep_days is not None or keep_jobs is not None:
                    nursery.start_soon(_gc_hourly, server.catalog.backend, keep_days, keep_jobs)
                async for _signum in signals:
                    break
            say("shutting down")
            nursery.cancel_scope.cancel()
    return 0


def _reachable_url(url: str) -> str:
    """``url`` with a wildcard address (``0.0.0.0``, ``::``) replaced by this host's name."""
    parts = urlsplit(url)
    if parts.hostname in ("0.0.0.0", "::"):
        netloc = f"{socket.gethostname()}:{parts.port}"
        return urlunsplit((parts.scheme, netloc, parts.path, "", ""))
    return url


async def _gc_hourly(backend: Backend, keep_days: float | None, keep_jobs: int | None) -> None:
    while True:
        removed = await backend.remove_old_jobs(keep_days, keep_jobs)
        if removed:
            say(f"removed {len(removed)} old jobs")
        await trio.sleep(3600)


@cli.command()
@click.option(
    "--server",
    envvar="LOGSTREAM_SERVER",
    show_envvar=True,
    required=True,
    metavar="URL",
    help="The `logstream serve` to upload to (also LOGSTREAM_SERVER).",
)
@click.option(
    "--token",
    envvar="LOGSTREAM_TOKEN",
    show_envvar=True,
    default=None,
    help="The server's runner token. Prefer LOGSTREAM_TOKEN or --token-file: other local "
    "users can read a command line.",
)
@click.option(
    "--token-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Read the server's runner token from this file (its first line).",
)
@data_dir_option
@upload_timeout_option("Give up on a job after this long.")
@click.argument("job_ids", nargs=-1, metavar="[ID]...")
def push(
    server: str,
    token: str | None,
    token_file: Path | None,
    data_dir: Path | None,
    upload_timeout_s: float,
    job_ids: tuple[str, ...],
) -> int:
    """Upload finished jobs to a server: those given, else every unfinished upload.

    A `run --server` that could not upload everything in time says which job to push.
    Pushing twice is harmless: the server keeps each line once. Exits 1 when a job could
    not be uploaded completely.
    """
    _check_server_url(server)
    token = read_token(token_file, token)
    return trio.run(
        functools.partial(
            remote.push_jobs,
            data_dir or default_data_dir(),
            list(job_ids),
            server=server,
            token=token,
            timeout_s=upload_timeout_s,
            say=say,
        )
    )


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
    show_envvar=True,
    default=None,
    help="The server's token (sent as a Bearer header). Prefer LOGSTREAM_TOKEN or "
    "--token-file: other local users can read a command line.",
)
@click.option(
    "--token-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Read the server's token from this file (its first line).",
)
@click.option(
    "--reconnect-for",
    type=click.FloatRange(min=0),
    default=tail_module.DEFAULT_RECONNECT_FOR_S,
    show_default=True,
    metavar="SECONDS",
    help="Give up after a server that answered before is unreachable this long (0: never); "
    f"one that never answered: after {FIRST_CONTACT_S:g} s.",
)
def tail_command(
    url: str,
    after: int | None,
    tail_lines: int | None,
    no_follow: bool,
    token: str | None,
    token_file: Path | None,
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
    token = read_token(token_file, token)
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


@cli.command(options_metavar="[--data-dir DIR] [--keep-days N] [--keep-jobs N]")
@data_dir_option
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
    """Remove old finished jobs (never a running one), from the data directory or Redis.

    Give --keep-days, --keep-jobs or both: a job goes when either says so.
    """
    if keep_days is None and keep_jobs is None:
        raise UsageError("gc: give --keep-days N, --keep-jobs N, or both")
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
    except click.UsageError as error:
        # Every message of ours on stderr is a whole `logstream: ` line.
        where = error.ctx.command_path if error.ctx else "logstream"
        say(f"{error.format_message()} (see `{where} --help`)")
        return error.exit_code
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
