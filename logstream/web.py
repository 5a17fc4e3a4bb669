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

import contextlib
import json
import math
import re
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

import trio
from quart import Request, Response, request
from quart_trio import QuartTrio

from logstream import logformat, routes, sse
from logstream.backends.protocol import Cursor, Job, JobLog
from logstream.catalog import Catalog
from logstream.config import Settings
from logstream.errors import (
    BadRequest,
    Busy,
    Forbidden,
    LogstreamError,
    Unavailable,
    UnknownJob,
    UnsupportedMediaType,
)
from logstream.eventstream import EventStream
from logstream.hosts import HostPolicy
from logstream.metrics import Metrics
from logstream.taskrunner import TaskRunner
from logstream.wakeups import interrupt

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
#: ``Retry-After`` of a 503 (the backend is unreachable): about how often it is checked.
UNAVAILABLE_RETRY_S = 2


def create_app(state: AppState) -> QuartTrio:
    """The quart-trio app serving ``state.catalog``: every route is defined here.

    With ``state.tasks`` (task-runner mode) it also starts and cancels defined jobs.
    """
    catalog, settings, tasks = state.catalog, state.settings, state.tasks
    app = QuartTrio(__name__, static_folder=str(STATIC), static_url_path="/static")
    app.config["MAX_CONTENT_LENGTH"] = 64 * 1024

    @app.errorhandler(LogstreamError)
    async def domain_error(error: LogstreamError) -> Response:
        if isinstance(error, UnknownJob) and _wants_page():
            return await _page("notfound.html", 404)
        response = _json({"error": error.message}, error.error_status_hint)
        if error.error_status_hint == 503:
            response.headers["Retry-After"] = str(UNAVAILABLE_RETRY_S)
        return response

    @app.errorhandler(404)
    async def not_found(error: Exception) -> Response:
        if _wants_page():
            return await _page("notfound.html", 404)
        return _json({"error": "not found"}, 404)

    @app.errorhandler(405)
    async def not_allowed(error: Exception) -> Response:
        return _json({"error": "method not allowed"}, 405)

    # The security headers (CSP, X-Frame-Options, ...) are added by ``server.Guard``, to every
    # answer, the framework's own errors included; CORS headers by the ``cors.Cors`` middleware.
    hosts = settings.host_policy()

    @app.get("/")
    async def index() -> Response:
        return await _page("index.html")

    @app.get("/jobs/<job_id>")
    async def job_page(job_id: str) -> Response:
        await catalog.get(job_id)
        return await _page("job.html")

    @app.get("/jobs/<job_id>/")
    async def job_page_slash(job_id: str) -> Response:
        await catalog.get(job_id)
        # Relative, so it works behind a path prefix too.
        return Response("", status=308, headers={"Location": f"../{job_id}"})

    @app.get("/healthz")
    async def healthz() -> Response:
        catalog.backend.check_health()  # StorageError: 503, and the load balancer looks elsewhere
        return Response("ok\n", content_type="text/plain; charset=utf-8")

    @app.get("/metrics")
    async def metrics() -> Response:
        body = state.metrics.render(catalog.live_logs(), state.streams)
        return Response(body, content_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/api/jobs")
    async def list_jobs() -> Response:
        jobs = await catalog.jobs()
        return _json({"jobs": [job_json(job) for job in jobs], "defined": state.defined_jobs()})

    @app.get("/api/jobs/<job_id>")
    async def show_job(job_id: str) -> Response:
        log = await catalog.get(job_id)
        problems = await log.read_problems()  # current also for a job another process runs
        shown = job_json(log.job.with_problems(problems.shown_counts()))
        shown["cancellable"] = state.cancellable(log.job.id, log.job.ended)
        return _json(shown)

    @app.get("/api/jobs/<job_id>/problems")
    async def problems(job_id: str) -> Response:
        log = await catalog.get(job_id)
        found = await log.read_problems()
        return _json({"problems": found.in_line_order()})

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

    if tasks is not None:

        @app.post("/api/jobs")
        async def start_job() -> Response:
            refuse_cross_site(request, hosts)
            name = defined_job_name(await _json_object())
            handle = await tasks.start(name)
            response = _json(job_json(handle.job), 201)
            response.headers["Location"] = routes.job_api(handle.id)
            return response

        @app.post("/api/jobs/<job_id>/cancel")
        async def cancel_job(job_id: str) -> Response:
            refuse_cross_site(request, hosts)
            handle = await tasks.cancel(job_id)
            return _json(job_json(handle.job), 202)

    return app


class AppState:
    """What the routes share: the catalog, settings, counters and the shutdown signal."""

    def __init__(
        self, catalog: Catalog, settings: Settings, tasks: TaskRunner | None = None
    ) -> None:
        self.catalog = catalog
        self.settings = settings
        #: Task-runner mode: the jobs a request may start.
        self.tasks = tasks
        self.metrics = Metrics()
        #: Every open event stream: job logs and job lists (``max_streams`` counts both).
        self.streams = 0
        #: Of those, the job-list streams: they never end on their own, so waiting for the
        #: viewers of a job to receive its end does not wait for them.
        self.job_list_streams = 0
        self.shutting_down = trio.Event()
        self._streams_changed = trio.Event()
        #: The keep-alive scopes of streams waiting in a scope (job lists, polled logs).
        self._waiting: set[trio.CancelScope] = set()
        #: The tasks of event streams parked in their log, and since when (``wakeups``).
        self._parked: dict[trio.lowlevel.Task, float] = {}
        self.search_limiter = trio.CapacityLimiter(MAX_SEARCHES)
        self.searches_waiting = 0
        self.job_list = JobListWatch(catalog)

    @property
    def waiting_streams(self) -> int:
        """Event streams waiting for something to send now."""
        return len(self._parked) + len(self._waiting)

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

    def cancellable(self, job_id: str, ended: bool) -> bool:
        """Whether ``POST /api/jobs/<ID>/cancel`` would stop the job: this server runs it."""
        return (
            self.tasks is not None and not ended and self.tasks.supervisor.get(job_id) is not None
        )

    def shut_down(self) -> None:
        """End every stream without an ``end`` event, so clients resume elsewhere or later."""
        self.shutting_down.set()
        for waiting in list(self._waiting):
            waiting.cancel()
        for task in list(self._parked):
            interrupt(task)

    async def wait_streams_below(self, count: int, *, job_lists: bool = False) -> None:
        """Until fewer than ``count`` job-log streams (``job_lists``: of any stream) are open."""
        while self.streams - (0 if job_lists else self.job_list_streams) >= count >= 0:
            await self._streams_changed.wait()

    async def wait_no_streams(self) -> None:
        await self.wait_streams_below(1)

    async def stream_events(
        self, log: JobLog, after: int, slot: StreamSlot | None = None
    ) -> AsyncIterator[bytes]:
        """One client's event stream: the loop of the module's theory of operation.

        One generator, no layers: under load every write to a client passes through here,
        and each generator level, cancel scope or task per wait costs microseconds that many
        clients times many lines a second turn into latency (issue 13). A wait parks the task
        in the log (``wakeups``); the keep-alive ticker and ``shut_down`` interrupt it.
        """
        slot = slot or StreamSlot(self)
        metrics, settings = self.metrics, self.settings
        stream = EventStream(
            after, settings.retry_ms, settings.stream_min_chunk_bytes, settings.stream_chunk_bytes
        )
        parked = self._parked
        task = trio.lowlevel.current_task()
        try:
            while not self.shutting_down.is_set():
                piece_bytes = stream.piece_bytes
                read = await log.read_after(stream.cursor, piece_bytes)
                if stream.problems_due() and (news := stream.problems(await log.read_problems())):
                    metrics.bytes_sent += len(news)
                    yield news  # the problems that the lines sent so far completed
                data = stream.chunk(read, piece_bytes) if read.chunk.payload else b""
                del read  # not held while a slow client takes the piece
                if data:
                    metrics.bytes_sent += len(data)
                    started = trio.current_time()
                    yield data
                    stream.written(trio.current_time() - started, len(data))
                    continue
                if (opening := stream.opening()) is not None:
                    metrics.bytes_sent += len(opening)
                    yield opening
                # Everything the log has is sent: only now may the end follow.
                if (end := stream.end(log.job, log.last)) is not None:
                    problems = await log.read_problems()
                    data = stream.problems(problems, all_of_them=True) + end
                    metrics.bytes_sent += len(data)
                    yield data
                    return
                if self.shutting_down.is_set():
                    return
                if log.interruptible_wait and not stream.line_pending(log.last):
                    waited_since = parked[task] = trio.current_time()
                    try:
                        await log.wait_beyond(stream.cursor.seq)
                    finally:
                        del parked[task]
                    keepalive_due = trio.current_time() - waited_since >= settings.keepalive_s
                else:
                    keepalive_due = await self._wait_in_scope(log, stream)
                if keepalive_due and not self.shutting_down.is_set():
                    metrics.bytes_sent += len(sse.KEEPALIVE)
                    yield sse.KEEPALIVE
        except Unavailable:
            # The backend is unreachable: end the stream without an end event, so the client
            # resumes later, or on another node, exactly where it was.
            return
        finally:
            slot.release()

    def _stream_ended(self, job_list: bool) -> None:
        self.streams -= 1
        self.job_list_streams -= job_list
        self._streams_changed.set()
        self._streams_changed = trio.Event()

    async def _wait_in_scope(self, log: JobLog, stream: EventStream) -> bool:
        """Wait for a log that cannot be interrupted (one polling the disk), or shortly for a
        line whose record is not whole yet; whether the keep-alive time passed instead."""
        with trio.move_on_after(self.settings.keepalive_s) as waited:
            self._waiting.add(waited)
            try:
                if stream.line_pending(log.last):
                    await trio.sleep(0.05)
                else:
                    await log.wait_beyond(stream.cursor.seq)
            finally:
                self._waiting.discard(waited)
        return waited.cancelled_caught

    async def run_keepalive(self) -> None:
        """Wake the streams that have waited ``keepalive_s`` for a line, so each sends a
        keep-alive comment (within a quarter of ``keepalive_s`` of it being due), until
        shutdown. One task for every stream instead of a timer per wait."""
        keepalive_s = self.settings.keepalive_s
        while not self.shutting_down.is_set():
            with trio.move_on_after(keepalive_s / 4):
                await self.shutting_down.wait()
            due = trio.current_time() - keepalive_s
            for task, since in list(self._parked.items()):
                if since <= due:
                    interrupt(task)

    async def stream_job_list(self, slot: StreamSlot | None = None) -> AsyncIterator[bytes]:
        """The job list, then an event per job that changed: one shared watch feeds them all."""
        slot = slot or StreamSlot(self, job_list=True)
        try:
            with contextlib.suppress(Unavailable):  # as for a job's stream: the client comes back
                async for data in self._job_list():
                    yield data
        finally:
            slot.release()

    async def _job_list(self) -> AsyncIterator[bytes]:
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
            jobs = await self.catalog.jobs()
            self._read_at = trio.current_time()
            changed = []
            shown_now: dict[str, dict[str, Any]] = {}
            for job in jobs:
                shown = job_json(job)
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


def defined_job_name(body: dict[str, Any]) -> str:
    """The job a start request names: ``{"name": "..."}`` and nothing else."""
    extra = sorted(set(body) - {"name"})
    if extra:
        raise BadRequest(
            f"unknown field {extra[0]!r}: a request only names a job of the jobs file; "
            "its command, arguments, env and cwd come from that file"
        )
    name = body.get("name")
    if not isinstance(name, str) or not name:
        raise BadRequest('give the job to start as {"name": "..."}')
    return name


def refuse_cross_site(request: Request, hosts: HostPolicy) -> None:
    """Refuse a state-changing request another site may have sent.

    Starting and cancelling change state, so besides the token (checked by ``server.Guard``
    before routing) they are refused from other sites (CSRF): a request with a body must say
    ``Content-Type: application/json`` (which a plain HTML form cannot send, and which makes a
    browser ask the server first, a CORS preflight that we do not grant), and when it carries
    an ``Origin`` header, its host must be one this server answers to (loopback, the bound
    address, ``--allow-host`` names) or it must be the ``--cors-origin`` origin. Never the
    request's own ``Host``: under DNS rebinding that is the attacker's name
    (``hosts.HostPolicy``). A request without a body carries nothing to forge and needs no
    Content-Type (``curl -X POST .../cancel``): the ``Origin`` and ``Sec-Fetch-Site`` checks
    and the token stand against other sites."""
    content_type = request.headers.get("Content-Type", "").partition(";")[0].strip().lower()
    has_body = bool(request.content_length) or "transfer-encoding" in request.headers
    if has_body and content_type != "application/json":
        raise UnsupportedMediaType("send Content-Type: application/json")
    origin = request.headers.get("Origin")
    if origin is not None:
        if not hosts.origin_allowed(origin):
            raise Forbidden(
                f"cross-origin request refused (Origin {origin[:100]!r}): only pages on "
                "loopback names, on --allow-host names or on the --cors-origin may start "
                "or cancel jobs"
            )
    elif request.headers.get("Sec-Fetch-Site", "") == "cross-site":
        raise Forbidden("cross-site request refused")


async def _json_object() -> dict[str, Any]:
    """The request's body: a JSON object (empty counts as ``{}``)."""
    raw = await request.get_data(as_text=False)
    try:
        body = json.loads(raw) if raw.strip() else {}
    except (ValueError, UnicodeDecodeError):
        raise BadRequest("the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    return body


def _json(data: object, status: int = 200) -> Response:
    return Response(json.dumps(data), status=status, content_type="application/json")


def job_json(job: Job) -> dict[str, object]:
    """The job as the HTTP API shows it (without the runner's process ID and folder, and
    without the fingerprint of the runner token that created a remote job)."""
    shown = asdict(job)
    del shown["pid"], shown["cwd"], shown["owner"]
    shown["command"] = list(job.command)
    if job.meta:
        shown["meta"] = dict(job.meta)
    else:
        del shown["meta"]
    shown["url"] = routes.job_page(job.id)
    shown["problems"] = {
        severity: job.problems.get(severity, 0) for severity in ("error", "warning")
    }
    return shown


def _wants_page() -> bool:
    """A browser asking for a page (not the API, not a script): a 404 is a page then."""
    return not request.path.startswith("/api/") and "text/html" in request.headers.get("Accept", "")


async def _page(name: str, status: int = 200) -> Response:
    html = await trio.Path(STATIC / name).read_bytes()
    response = Response(html, status=status, content_type="text/html; charset=utf-8")
    response.headers["Cache-Control"] = "no-cache"
    return response


def _number(value: str | None, name: str) -> int | None:
    """A non-negative integer parameter (ASCII digits only); empty counts as absent."""
    if value is None or value == "":
        return None
    if not DIGITS.fullmatch(value):
        raise BadRequest(f"{name} must be a non-negative integer, got {value[:40]!r}")
    digits = value.lstrip("0")
    # Valid however big (docs/protocol.md), but int() refuses more than 4,300 digits: any
    # value this long is beyond every line there will ever be.
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
        cursor = read.next


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
            # As in ``stream_events``: a chunk that starts with its own mark needs no other.
            if chunk.time_ms and not chunk.payload.startswith(b"event: time"):
                times.append((read.first, chunk.time_ms))
        for line in logformat.iter_lines(chunk.payload):
            if len(lines) >= limit or size >= MAX_PAGE_BYTES:
                break
            lines.append(line)
            size += len(line[2])
        end_seq = lines[-1][0] if lines else chunk.last
        times += [t for t in logformat.iter_times(chunk.payload, chunk.last + 1) if t[0] <= end_seq]
        cursor = read.next if end_seq == chunk.last else Cursor(end_seq)
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
        cursor = read.next
        found = await trio.to_thread.run_sync(
            logformat.search_lines, chunk.payload, needle, limit - len(matches)
        )
        matches += found
        if len(matches) >= limit:
            return matches, True
