"""``logstream tail URL``: follow one job's log in a terminal (docs/tail.md).

Theory of operation
-------------------
The client reads ``GET /api/jobs/<ID>/events`` with httpx and parses it with ``sse.SSEParser``
(the project's one parser: WHATWG-exact, property-tested). It owns one number, the
last line it has printed (``last``); a line event whose ID is not above it is never printed
again, and every reconnect sends ``Last-Event-ID: last``, so after a dropped connection the
server continues with the next line: nothing lost, nothing repeated. ``--from N`` starts with
``last = N``. ``--tail N`` is turned into a position once, before the first stream: ``GET
/api/jobs/<ID>`` and ``last = max(0, lines - N)``. It is never sent as ``?tail=N``, which the
server counts from the job's end at each request: a connection dropped before the first line
would then skip the lines written during the outage.

A dropped connection, a refused connection or a 5xx answer is an outage: the client waits at
least the server's ``retry:`` delay, doubling it while attempts keep failing (at most
``MAX_BACKOFF_S``), and gives up after ``reconnect_for_s`` without reaching the server (these
rules are the pure ``reconnect.Reconnect``; this module drives it). The
read timeout is well above the server's 15 s keep-alive, so an idle job is never mistaken for
a dead connection, but a silently broken one is noticed.

stdout lines go to stdout and stderr lines to stderr, each ending with ``\\n`` (a ``\\n`` in the
data of an event is a ``\\r`` of the line: ``sse.line_text``). Output is buffered and flushed
when the stream switches, at least every ``FLUSH_INTERVAL_S``, and at the end, so a firehose
costs few writes and the interleaving of stdout and stderr on a terminal is kept. logstream's
own messages are whole lines on stderr starting ``logstream: ``.

Exit status (documented in docs/tail.md): see ``exit_status`` and the ``EXIT_*`` constants.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import BinaryIO
from urllib.parse import parse_qs, urlsplit, urlunsplit

import httpx
import trio

from logstream import routes, sse
from logstream.reconnect import Reconnect

#: The job was cancelled without a non-zero exit code of its own (as after Ctrl-C).
EXIT_CANCELLED = 130
#: The job's runner died without recording an end (status ``interrupted``): no exit code.
EXIT_INTERRUPTED = 75
#: Bad usage: a URL that names no job, bad options, or a request the server refused (400).
EXIT_USAGE = 2
#: The server answered 404: no such job.
EXIT_NO_SUCH_JOB = 66
#: The server gave up on us, or we on it: unreachable for too long, or an unexpected answer.
EXIT_UNAVAILABLE = 69
#: The server answered 401: a token is required, or the one given is wrong.
EXIT_UNAUTHORIZED = 77

CONNECT_TIMEOUT_S = 10.0
#: Above the server's keep-alive interval (15 s), so an idle stream is not cut.
READ_TIMEOUT_S = 45.0
DEFAULT_RECONNECT_FOR_S = 600.0
FLUSH_INTERVAL_S = 0.05
JOB_PATH = re.compile(r"^(?P<prefix>.*?)/(?:api/)?jobs/(?P<id>[A-Za-z0-9_-]{1,64})(?:/events)?/?$")
LINE_EVENTS = frozenset({"", "message", "stderr"})


class TailError(Exception):
    """``tail`` cannot go on: a message for stderr and the exit status."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


@dataclass(frozen=True)
class Target:
    """Where a job's API lives, from a page URL (``/jobs/<ID>``) or an API URL."""

    base: str
    job_id: str
    token: str | None = None

    @property
    def events_url(self) -> str:
        return self.base + routes.job_events(self.job_id)

    @property
    def job_url(self) -> str:
        return self.base + routes.job_api(self.job_id)


def parse_target(url: str) -> Target:
    """The job a URL names: ``http://HOST:PORT/jobs/ID``, ``.../api/jobs/ID[/events]``.

    A ``token`` query parameter (as in a shared viewer link) is taken as the token.
    """
    parts = urlsplit(url.strip())
    match = JOB_PATH.match(parts.path)
    if parts.scheme not in ("http", "https") or not parts.netloc or match is None:
        raise TailError(
            f"not a job URL: {url!r}; expected http://HOST:PORT/jobs/ID (as `logstream run` "
            "prints it)",
            EXIT_USAGE,
        )
    token = parse_qs(parts.query).get("token", [None])[0]
    base = urlunsplit((parts.scheme, parts.netloc, match["prefix"], "", ""))
    return Target(base, match["id"], token)


def exit_status(status: str, exit_code: int | None) -> int:
    """``tail``'s exit status for a job that ended with ``status`` and ``exit_code``.

    succeeded: 0; failed: its exit code (1 if it has none); cancelled: its exit code when
    non-zero (143 after SIGTERM), else ``EXIT_CANCELLED``; interrupted: ``EXIT_INTERRUPTED``.
    """
    code = exit_code if exit_code is not None and 0 < exit_code < 256 else None
    if status == "succeeded":
        return 0
    if status == "cancelled":
        return code or EXIT_CANCELLED
    if status == "interrupted":
        return EXIT_INTERRUPTED
    return code or 1


class Output:
    """stdout and stderr of the terminal, buffered, flushed in order (see the module doc)."""

    def __init__(self, stdout: BinaryIO, stderr: BinaryIO) -> None:
        self._files = (stdout, stderr)
        self._pending: list[bytes] = []
        self._pending_fd = 0

    def line(self, text: str, *, stderr: bool = False) -> None:
        fd = int(stderr)
        if fd != self._pending_fd:
            self.flush()
            self._pending_fd = fd
        self._pending.append(text.encode("utf-8", "surrogateescape") + b"\n")

    def notice(self, message: str) -> None:
        """One whole ``logstream: `` line on stderr, in order with the job's lines."""
        self.line(f"logstream: {message}", stderr=True)
        self.flush()

    def flush(self) -> None:
        if self._pending:
            file = self._files[self._pending_fd]
            data = b"".join(self._pending)
            # Cleared before the write: a Ctrl-C (raised between any two bytecodes) right
            # after the write must not leave the lines pending, to be written again on exit.
            self._pending.clear()
            file.write(data)
            file.flush()

    async def flush_periodically(self) -> None:
        while True:
            await trio.sleep(FLUSH_INTERVAL_S)
            self.flush()


@dataclass
class _Ended:
    status: str
    exit_code: int | None


class _Dropped(Exception):
    """The stream ended before the job's end: reconnect."""


@dataclass
class Tail:
    """Follows one job; ``await Tail(...).run()`` returns the exit status."""

    target: Target
    output: Output
    after: int | None = None
    tail_lines: int | None = None
    follow: bool = True
    token: str | None = None
    reconnect_for_s: float = DEFAULT_RECONNECT_FOR_S
    #: The last line printed (``None``: none yet).
    last: int | None = None
    retry_ms: int = sse.RETRY_MS
    clock: Callable[[], float] = trio.current_time
    _connected: bool = field(default=False, init=False)
    _progressed: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        self.last = self.after

    async def run(self) -> int:
        """Print the job's lines until it ends (or, without follow, up to now); exit status.

        Raises ``TailError`` when it cannot go on.
        """
        token = self.token or self.target.token
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        timeout = httpx.Timeout(CONNECT_TIMEOUT_S, read=READ_TIMEOUT_S)
        outcome: int | TailError = EXIT_UNAVAILABLE
        try:
            async with (
                httpx.AsyncClient(headers=headers, timeout=timeout) as client,
                trio.open_nursery() as nursery,
            ):
                nursery.start_soon(self.output.flush_periodically)
                try:
                    outcome = await self._run(client)
                except TailError as error:
                    outcome = error  # raised outside the nursery: not wrapped in a group
                finally:
                    nursery.cancel_scope.cancel()
                    self.output.flush()
        except BaseExceptionGroup as group:
            # Ctrl-C lands in whichever task runs and comes out of the nursery in a group;
            # the caller (the CLI: exit 130, no traceback) expects the KeyboardInterrupt.
            if group.subgroup(KeyboardInterrupt) is not None:
                raise KeyboardInterrupt from None
            raise
        if isinstance(outcome, TailError):
            raise outcome
        return outcome

    async def _run(self, client: httpx.AsyncClient) -> int:
        stop_at: int | None = None
        if not self.follow:
            try:
                job = await self._job(client)
            except (_Dropped, httpx.TransportError) as error:
                raise TailError(
                    f"cannot reach {self.target.base} ({_describe(error)})", EXIT_UNAVAILABLE
                ) from None
            self._start_from(job)
            # A job that ended: its stream ends with the end event. A running one: print
            # the lines it has now.
            if job["status"] == "running":
                stop_at = _int_or_none(job["lines"]) or 0
                if (self.last or 0) >= stop_at:
                    return 0
        reconnect = Reconnect(self.target.base, self.reconnect_for_s, self.retry_ms)
        while True:
            reconnect.attempt_started(self.clock())
            try:
                ended = await self._stream(client, stop_at)
                if ended is None:
                    return 0  # --no-follow: printed everything that existed
                self.output.flush()
                return exit_status(ended.status, ended.exit_code)
            except (_Dropped, httpx.TransportError) as error:
                reason = _describe(error)
            reconnect.retry_ms = self.retry_ms
            retry = reconnect.dropped(
                self.clock(), reason, connected=self._connected, progressed=self._progressed
            )
            if retry.notice:
                self.output.notice(retry.notice)
            if retry.give_up:
                raise TailError(retry.give_up, EXIT_UNAVAILABLE)
            await trio.sleep(retry.delay_s)

    async def _stream(self, client: httpx.AsyncClient, stop_at: int | None) -> _Ended | None:
        """One connection: print lines until the end (returned), ``stop_at``, or a drop."""
        self._connected = False
        self._progressed = False
        if self.last is None and self.tail_lines is not None:
            self._start_from(await self._job(client))
            self._connected = True
        headers: dict[str, str] = {}
        if self.last is not None:
            headers["Last-Event-ID"] = str(self.last)
        headers |= {"Accept": "text/event-stream", "Cache-Control": "no-store"}
        async with client.stream("GET", self.target.events_url, headers=headers) as response:
            if response.status_code == 204:
                # Resumed at the end of a finished job: its end is in the job's metadata.
                self._connected = True
                job = await self._job(client)
                return _Ended(str(job["status"]), _int_or_none(job["exit_code"]))
            await self._check(response)
            content_type = response.headers.get("content-type", "").partition(";")[0]
            if content_type.strip().lower() != "text/event-stream":
                raise _Dropped(f"not an event stream ({content_type[:60]!r})")
            self._connected = True
            parser = sse.SSEParser()
            async for data in response.aiter_bytes():
                for event in self._feed(parser, data):
                    ended = self._handle(event)
                    if ended is not None:
                        return ended
                    if stop_at is not None and (self.last or 0) >= stop_at:
                        return None
        raise _Dropped("the server closed the stream")

    def _feed(self, parser: sse.SSEParser, data: bytes) -> list[sse.Event]:
        """The events ``data`` completes; a ``retry:`` among them is taken at once."""
        events = parser.feed(data)
        if parser.retry_ms is not None:
            self.retry_ms = parser.retry_ms
        return events

    def _handle(self, event: sse.Event) -> _Ended | None:
        if event.event in LINE_EVENTS:
            line_id = event.id or ""
            seq = int(line_id) if line_id.isascii() and line_id.isdigit() else None
            if seq is None or (self.last is not None and seq <= self.last):
                return None  # never print a line twice
            self.output.line(sse.line_text(event.data), stderr=event.event == "stderr")
            self.last = seq
            self._progressed = True
        elif event.event == "gap":
            first = int(json.loads(event.data)["first"])
            lost = f"lines {self.last + 1} to {first - 1}" if self.last else f"lines before {first}"
            self.output.notice(f"{lost} are lost (the server no longer has them)")
            self.last = first - 1
        elif event.event == "end":
            data = json.loads(event.data)
            return _Ended(str(data["status"]), _int_or_none(data.get("exit_code")))
        return None

    def _start_from(self, job: dict[str, object]) -> None:
        """Fix where ``--tail N`` starts, once: later requests resume from ``last``."""
        if self.last is None and self.tail_lines is not None:
            self.last = max(0, (_int_or_none(job.get("lines")) or 0) - self.tail_lines)

    async def _job(self, client: httpx.AsyncClient) -> dict[str, object]:
        """``GET /api/jobs/<ID>``; a transport error or a 5xx is an outage (raised as is)."""
        response = await client.get(self.target.job_url)
        await self._check(response)
        job: dict[str, object] = response.json()
        return job

    async def _check(self, response: httpx.Response) -> None:
        status = response.status_code
        if status == 200:
            return
        if status >= 500 or status == 429:
            raise _Dropped(f"HTTP {status}")
        await response.aread()
        if status == 404:
            raise TailError(f"no job {self.target.job_id} at {self.target.base}", EXIT_NO_SUCH_JOB)
        if status == 401:
            problem = (
                "the token was refused"
                if self.token or self.target.token
                else "a token is required (pass --token or set LOGSTREAM_TOKEN)"
            )
            raise TailError(f"{self.target.base} answered 401: {problem}", EXIT_UNAUTHORIZED)
        message = _error_message(response)
        if status == 400:
            raise TailError(f"the server refused the request: {message}", EXIT_USAGE)
        raise TailError(f"unexpected answer HTTP {status}: {message}", EXIT_UNAVAILABLE)


def _int_or_none(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _error_message(response: httpx.Response) -> str:
    try:
        return str(response.json()["error"])
    except (ValueError, KeyError, TypeError):
        return response.text[:200]


def _describe(error: BaseException) -> str:
    text = str(error) or type(error).__name__
    return text.splitlines()[0][:200] if text else type(error).__name__


async def tail(
    url: str,
    *,
    stdout: BinaryIO,
    stderr: BinaryIO,
    after: int | None = None,
    tail_lines: int | None = None,
    follow: bool = True,
    token: str | None = None,
    reconnect_for_s: float = DEFAULT_RECONNECT_FOR_S,
) -> int:
    """Follow the job at ``url``, writing its lines to ``stdout``/``stderr``; the exit status.

    Errors (404, 401, an unreachable server, a bad URL) become a ``logstream: `` line on
    ``stderr`` and their ``EXIT_*`` status.
    """
    output = Output(stdout, stderr)
    try:
        target = parse_target(url)
        return await Tail(
            target,
            output,
            after=after,
            tail_lines=tail_lines,
            follow=follow,
            token=token,
            reconnect_for_s=reconnect_for_s,
        ).run()
    except TailError as error:
        output.notice(error.message)
        return error.status
