"""The web app: quart-trio routes over the catalog; errors map to HTTP in one place.

Theory of operation
-------------------
Each event stream is one task that owns a cursor (the last line its client has). It asks the
job's log for everything after the cursor and sends that as one chunk, so a client that falls
behind catches up in big writes, and under load batches grow instead of writes multiplying. When
nothing is newer it waits on the log (woken once per appended block), sending a keep-alive
comment every ``keepalive_s``. The runner never waits for a stream: streams only read.

Everything a stream needs from the request (resume ID, ``tail``) is read before the streaming
generator starts, because the request context is gone inside it. Quart's default response
timeout would cut a stream after 60 s, so event streams have none.
"""

from __future__ import annotations

import json
import math
import re
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio
from quart import Response, request
from quart_trio import QuartTrio

from logstream import logformat, sse
from logstream.catalog import Catalog
from logstream.config import Settings
from logstream.joblog import Cursor, JobLog
from logstream.metrics import Metrics
from logstream.store import UnknownJob

if TYPE_CHECKING:
    from logstream.taskrunner import TaskRunner

STATIC = Path(__file__).parent / "static"
STREAM_HEADERS = {
    "Content-Type": "text/event-stream; charset=utf-8",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",
}
DIGITS = re.compile(r"[0-9]+")
DEFAULT_PAGE_LINES = 1000
MAX_PAGE_LINES = 10_000
#: A page of ``/lines`` stops after this much text (at least one line): 10,000 lines of
#: 64 KiB would be 640 MiB in memory, several times over while it is encoded.
MAX_PAGE_BYTES = 4 * 1024 * 1024
#: Searches that run at once; more wait, and beyond ``MAX_SEARCHES_WAITING`` are told to
#: come back (503). One search of a large log costs seconds of CPU.
MAX_SEARCHES = 2
MAX_SEARCHES_WAITING = 16
SEARCH_SLICE_BYTES = 256 * 1024  # searched in one go by a worker thread, holding the GIL
BEYOND_ANY_LINE = 10**18
#: How often the job list is re-read for jobs that other processes run.
JOB_LIST_POLL_S = 1.0


class HTTPError(Exception):
    """An answer other than 200: status and a message for the JSON body."""

    status = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadRequest(HTTPError):
    """The request is malformed (a resume ID that is not a number, ...)."""

    status = 400


class NotFound(HTTPError):
    """No such job or route."""

    status = 404


class Busy(HTTPError):
    """Too many requests of this kind at once: come back later."""

    status = 503


def create_app(catalog: Catalog, settings: Settings) -> QuartTrio:
    """The quart-trio app serving ``catalog``."""
    app = QuartTrio(__name__, static_folder=str(STATIC), static_url_path="/static")
    app.config["MAX_CONTENT_LENGTH"] = 64 * 1024
    state = AppState(catalog, settings)
    app.extensions["logstream"] = state

    @app.errorhandler(HTTPError)
    async def http_error(error: HTTPError) -> Response:
        return _json({"error": error.message}, error.status)

    @app.errorhandler(UnknownJob)
    async def unknown_job(error: UnknownJob) -> Response:
        return _json({"error": "no such job"}, 404)

    @app.errorhandler(404)
    async def not_found(error: Exception) -> Response:
        return _json({"error": "not found"}, 404)

    @app.errorhandler(405)
    async def not_allowed(error: Exception) -> Response:
        return _json({"error": "method not allowed"}, 405)

    # The security headers (CSP, X-Frame-Options, ...) are added by ``server.Guard``, to every
    # answer, the framework's own errors included.
    @app.after_request
    async def cors_headers(response: Response) -> Response:
        if settings.cors_origin and request.headers.get("Origin") == settings.cors_origin:
            response.headers["Access-Control-Allow-Origin"] = settings.cors_origin
            response.headers["Vary"] = "Origin"
        return response

    @app.get("/")
    async def index() -> Response:
        return await _page("index.html")

    @app.get("/jobs/<job_id>")
    async def job_page(job_id: str) -> Response:
        await catalog.get(job_id)
        return await _page("job.html")

    @app.get("/healthz")
    async def healthz() -> Response:
        return Response("ok\n", content_type="text/plain; charset=utf-8")

    @app.get("/metrics")
    async def metrics() -> Response:
        body = state.metrics.render(catalog, state.streams)
        return Response(body, content_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/api/jobs")
    async def list_jobs() -> Response:
        jobs = await trio.to_thread.run_sync(catalog.jobs)
        return _json({"jobs": [job.to_api() for job in jobs], "defined": state.defined_jobs()})

    @app.get("/api/jobs/<job_id>")
    async def show_job(job_id: str) -> Response:
        log = await catalog.get(job_id)
        return _json(_job_json(log))

    @app.get("/api/jobs/<job_id>/events")
    async def events(job_id: str) -> Response:
        log = await catalog.get(job_id)
        after, resumed = _start_position(log, request.headers, request.args)
        if resumed and log.job.ended and after >= log.last:
            return Response("", status=204)
        if (busy := state.refuse_stream()) is not None:
            return busy
        # The slot is taken now, not when the body starts: a burst of requests must not all
        # pass the check above before any of their streams has begun.
        slot = StreamSlot(state)
        response = Response(state.stream_events(log, after, slot), headers=STREAM_HEADERS)
        response.timeout = None
        return response

    @app.get("/api/jobs/<job_id>/log")
    async def plain_log(job_id: str) -> Response:
        log = await catalog.get(job_id)
        response = Response(_plain_text(log), content_type="text/plain; charset=utf-8")
        response.timeout = None
        if request.args.get("download"):
            response.headers["Content-Disposition"] = f'attachment; filename="{job_id}.log"'
        return response

    @app.get("/api/jobs/<job_id>/lines")
    async def lines(job_id: str) -> Response:
        log = await catalog.get(job_id)
        after = _number(request.args.get("after"), "after") or 0
        limit = _number(request.args.get("limit"), "limit")
        limit = min(DEFAULT_PAGE_LINES if limit is None else limit, MAX_PAGE_LINES)
        return _json(await _page_of_lines(log, after, limit))

    @app.get("/api/jobs/<job_id>/search")
    async def search(job_id: str) -> Response:
        log = await catalog.get(job_id)
        query = request.args.get("q", "")
        limit = min(_number(request.args.get("limit"), "limit") or 10_000, 100_000)
        if not query:
            raise BadRequest("q: give the text to search for")
        async with state.searching():
            matches, truncated = await _search(log, query, limit)
        return _json({"matches": matches, "truncated": truncated})

    @app.get("/api/events")
    async def job_list_events() -> Response:
        if (busy := state.refuse_stream()) is not None:
            return busy
        slot = StreamSlot(state, job_list=True)
        response = Response(state.stream_job_list(slot), headers=STREAM_HEADERS)
        response.timeout = None
        return response

    return app


class AppState:
    """What the routes share: the catalog, settings, counters and the shutdown signal."""

    def __init__(self, catalog: Catalog, settings: Settings) -> None:
        self.catalog = catalog
        self.settings = settings
        self.metrics = Metrics()
        #: Every open event stream: job logs and job lists (``max_streams`` counts both).
        self.streams = 0
        #: Of those, the job-list streams: they never end on their own, so waiting for the
        #: viewers of a job to receive its end does not wait for them.
        self.job_list_streams = 0
        self.shutting_down = trio.Event()
        self._streams_changed = trio.Event()
        #: The keep-alive scopes of event streams waiting for lines.
        self._waiting: set[trio.CancelScope] = set()
        #: Task-runner mode (``taskrunner.add_task_routes``): the jobs a request may start.
        self.tasks: TaskRunner | None = None
        self.search_limiter = trio.CapacityLimiter(MAX_SEARCHES)
        self.searches_waiting = 0
        self.job_list = JobListWatch(catalog)

    def refuse_stream(self) -> Response | None:
        """With ``max_streams`` streams open: the answer that says "come back later"."""
        limit = self.settings.max_streams
        if limit is None or self.streams < limit:
            return None
        self.metrics.streams_refused += 1
        response = Response(sse.encode_retry(self.settings.busy_retry_ms), headers=STREAM_HEADERS)
        response.headers["Retry-After"] = str(self.settings.busy_retry_ms // 1000)
        return response

    @asynccontextmanager
    async def searching(self) -> AsyncIterator[None]:
        """A turn to search: ``MAX_SEARCHES`` at once, a few more wait, the rest get 503."""
        if self.searches_waiting >= MAX_SEARCHES_WAITING:
            raise Busy("too many searches at once; try again in a moment")
        self.searches_waiting += 1
        try:
            await self.search_limiter.acquire()
        finally:
            self.searches_waiting -= 1
        try:
            yield
        finally:
            self.search_limiter.release()

    def defined_jobs(self) -> list[dict[str, object]]:
        return self.tasks.defined() if self.tasks else []

    def shut_down(self) -> None:
        """End every stream without an ``end`` event, so clients resume elsewhere or later."""
        self.shutting_down.set()
        for waiting in list(self._waiting):
            waiting.cancel()

    async def wait_streams_below(self, count: int, *, job_lists: bool = False) -> None:
        """Until fewer than ``count`` job-log streams (``job_lists``: of any stream) are open."""
        while self.streams - (0 if job_lists else self.job_list_streams) >= count >= 0:
            await self._streams_changed.wait()

    async def wait_no_streams(self) -> None:
        await self.wait_streams_below(1)

    async def stream_events(
        self, log: JobLog, after: int, slot: StreamSlot | None = None
    ) -> AsyncIterator[bytes]:
        slot = slot or StreamSlot(self)
        try:
            async for data in self._events(log, after):
                self.metrics.bytes_sent += len(data)
                yield data
        finally:
            slot.release()

    def _stream_ended(self, job_list: bool) -> None:
        self.streams -= 1
        self.job_list_streams -= job_list
        self._streams_changed.set()
        self._streams_changed = trio.Event()

    async def _events(self, log: JobLog, after: int) -> AsyncIterator[bytes]:
        cursor = Cursor(after)
        opening: bytes | None = sse.encode_retry(self.settings.retry_ms)
        while not self.shutting_down.is_set():
            read = await log.read_after(cursor, self.settings.stream_chunk_bytes)
            chunk = read.chunk
            if chunk.payload:
                prefix = b""
                if opening is not None:
                    prefix, opening = opening, None
                    # The client learns when these lines were read, even mid-block.
                    if chunk.time_ms and not chunk.payload.startswith(b"event: time"):
                        prefix += sse.encode_time(chunk.time_ms)
                if read.first > cursor.seq + 1:
                    prefix += sse.encode_gap(read.first)
                yield prefix + chunk.payload if prefix else chunk.payload
                cursor.seq = chunk.last
                continue
            if opening is not None:
                yield opening
                opening = None
            # Everything the log has is sent: only now may the end follow.
            job = log.job
            if job.ended and cursor.seq >= log.last:
                yield sse.encode_end(job.status, job.exit_code)
                return
            # No task per wait (a nursery here cost more than the send itself under load):
            # shut_down() cancels the scopes of waiting streams directly.
            with trio.move_on_after(self.settings.keepalive_s) as waited:
                self._waiting.add(waited)
                if self.shutting_down.is_set():
                    waited.cancel()  # shut_down() ran during the read above: do not wait
                try:
                    if log.last > cursor.seq:
                        # A newer line is known but its record is not whole on disk yet.
                        await trio.sleep(0.05)
                    else:
                        await log.wait_beyond(cursor.seq)
                finally:
                    self._waiting.discard(waited)
            if waited.cancelled_caught and not self.shutting_down.is_set():
                yield sse.KEEPALIVE

    async def stream_job_list(self, slot: StreamSlot | None = None) -> AsyncIterator[bytes]:
        """The job list, then an event per job that changed: one shared watch feeds them all."""
        slot = slot or StreamSlot(self, job_list=True)
        try:
            watch = self.job_list
            await watch.refresh()
            generation = watch.generation
            yield sse.encode_retry(self.settings.retry_ms) + watch.snapshot()
            quiet_since = trio.current_time()
            while not self.shutting_down.is_set():
                with trio.move_on_after(JOB_LIST_POLL_S) as waited:
                    self._waiting.add(waited)
                    if self.shutting_down.is_set():
                        waited.cancel()
                    try:
                        await self.catalog.wait_changed()
                    finally:
                        self._waiting.discard(waited)
                if self.shutting_down.is_set():
                    return
                await watch.refresh()
                if watch.generation != generation:
                    data = watch.changes_since(generation)
                    generation = watch.generation
                    quiet_since = trio.current_time()
                    yield data
                elif trio.current_time() - quiet_since >= self.settings.keepalive_s:
                    quiet_since = trio.current_time()
                    yield sse.KEEPALIVE
        finally:
            slot.release()


class JobListWatch:
    """The job list, read at most once per ``JOB_LIST_POLL_S`` (or on a change this process
    makes) however many ``/api/events`` streams follow it, and what changed since when.

    Jobs run by other processes sharing the data directory change only on disk, so the list
    is polled; each stream used to read every ``job.json`` every second on its own.
    """

    def __init__(self, catalog: Catalog, history: int = 64) -> None:
        self.catalog = catalog
        self.generation = 0
        self._shown: dict[str, dict[str, Any]] = {}
        self._order: list[str] = []
        #: ``(generation, events)``: the ``job`` events that made each recent generation.
        self._history: deque[tuple[int, bytes]] = deque(maxlen=history)
        self._lock = trio.Lock()
        self._read_at = -math.inf
        self._read_version = -1

    async def refresh(self) -> None:
        async with self._lock:
            fresh = trio.current_time() - self._read_at < JOB_LIST_POLL_S * 0.9
            if fresh and self._read_version == self.catalog.version:
                return
            self._read_version = self.catalog.version
            jobs = await trio.to_thread.run_sync(self.catalog.jobs)
            self._read_at = trio.current_time()
            changed = []
            shown_now: dict[str, dict[str, Any]] = {}
            for job in jobs:
                shown = job.to_api()
                shown_now[job.id] = shown
                if self._shown.get(job.id) != shown:
                    changed.append(_event("job", shown))
            self._order = [job.id for job in jobs]
            self._shown = shown_now
            if changed:
                self.generation += 1
                self._history.append((self.generation, b"".join(changed)))

    def snapshot(self) -> bytes:
        return _event("jobs", {"jobs": [self._shown[job_id] for job_id in self._order]})

    def changes_since(self, generation: int) -> bytes:
        """The ``job`` events after ``generation``; the whole list when those are forgotten."""
        if not self._history or self._history[0][0] > generation + 1:
            return self.snapshot()
        return b"".join(events for number, events in self._history if number > generation)


class StreamSlot:
    """One of ``max_streams``: taken when a stream is answered, released when it ends.

    A stream whose body never starts (the client left at once) never runs its generator's
    ``finally``; the slot is then released when the response is dropped.
    """

    def __init__(self, state: AppState, *, job_list: bool = False) -> None:
        self._state: AppState | None = state
        self._job_list = job_list
        state.streams += 1
        state.job_list_streams += job_list
        state.metrics.streams_total += 1

    def release(self) -> None:
        if self._state is not None:
            state, self._state = self._state, None
            state._stream_ended(self._job_list)

    def __del__(self) -> None:
        self.release()


def _event(name: str, data: object) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()


def _json(data: object, status: int = 200) -> Response:
    return Response(json.dumps(data), status=status, content_type="application/json")


def _job_json(log: JobLog) -> dict[str, object]:
    shown = log.job.to_api()
    shown["lines"] = max(log.last, log.job.lines)
    return shown


async def _page(name: str) -> Response:
    html = await trio.Path(STATIC / name).read_bytes()
    response = Response(html, content_type="text/html; charset=utf-8")
    response.headers["Cache-Control"] = "no-cache"
    return response


def _number(value: str | None, name: str) -> int | None:
    """A non-negative integer parameter (ASCII digits only); empty counts as absent."""
    if value is None or value == "":
        return None
    if not DIGITS.fullmatch(value):
        raise BadRequest(f"{name} must be a non-negative integer, got {value[:40]!r}")
    digits = value.lstrip("0")
    # Valid however big (§5), but int() refuses more than 4,300 digits: any value this long is
    # beyond every line there will ever be.
    return int(digits or "0") if len(digits) <= 18 else BEYOND_ANY_LINE


def _start_position(log: JobLog, headers: Any, args: Any) -> tuple[int, bool]:
    """The last line the client has: ``Last-Event-ID``, else ``last_event_id``, else ``tail``.

    Also whether it is a resume: only a resume of a finished job at its end is answered 204;
    ``tail=0`` is a new stream that gets just the end event.
    """
    resume = _number(headers.get("Last-Event-ID"), "Last-Event-ID")
    if resume is None:
        resume = _number(args.get("last_event_id"), "last_event_id")
    tail = _number(args.get("tail"), "tail")
    if resume is not None:
        return resume, True
    if tail is not None:
        return max(0, log.last - tail), False
    return 0, False


async def _plain_text(log: JobLog) -> AsyncIterator[bytes]:
    cursor = Cursor(0)
    while True:
        read = await log.read_after(cursor)
        if not read.chunk.payload:
            return
        yield logformat.plain_text(read.chunk.payload)
        cursor.seq = read.chunk.last


async def _page_of_lines(log: JobLog, after: int, limit: int) -> dict[str, object]:
    cursor = Cursor(after)
    lines: list[tuple[int, str, str]] = []
    times: list[tuple[int, int]] = []
    first: int | None = None
    size = 0
    while len(lines) < limit and size < MAX_PAGE_BYTES:
        read = await log.read_after(cursor, max_bytes=256 * 1024)
        chunk = read.chunk
        if not chunk.payload:
            break
        if first is None:
            first = read.first
            # As in ``_events``: a chunk that starts with its own mark needs no other.
            if chunk.time_ms and not chunk.payload.startswith(b"event: time"):
                times.append((read.first, chunk.time_ms))
        for line in logformat.iter_lines(chunk.payload):
            if len(lines) >= limit or size >= MAX_PAGE_BYTES:
                break
            lines.append(line)
            size += len(line[2])
        end_seq = lines[-1][0] if lines else chunk.last
        times += [t for t in logformat.iter_times(chunk.payload, chunk.last + 1) if t[0] <= end_seq]
        cursor.seq = end_seq
    return {
        "lines": lines,
        "times": times,
        "first": first if first is not None else after + 1,
        "last": log.last,
        "ended": log.job.ended,
    }


async def _search(log: JobLog, query: str, limit: int) -> tuple[list[int], bool]:
    # Matching runs in a worker thread one block (about 1 MiB) at a time, so a search through
    # millions of lines never holds up the event loop for longer than it takes to read a block.
    needle = query.casefold()
    cursor = Cursor(0)
    matches: list[int] = []
    while True:
        read = await log.read_after(cursor, SEARCH_SLICE_BYTES)
        chunk = read.chunk
        if not chunk.payload:
            return matches, False
        cursor.seq = chunk.last
        found = await trio.to_thread.run_sync(
            logformat.search_lines, chunk.payload, needle, limit - len(matches)
        )
        matches += found
        if len(matches) >= limit:
            return matches, True
