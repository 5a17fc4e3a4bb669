"""The runner's side of remote runs: upload a job's log to a central ``logstream serve``.

Theory of operation
-------------------
``logstream run --server URL`` runs the job exactly as a local run does, into its own data
directory; an ``Uploader`` task follows the job's log like a viewer would (the newest lines from
memory, older ones from disk) and posts what the server lacks. The command's output path never
waits for it: the log is appended and written to disk whatever the network does, and the
uploader only reads. ``upload.UploadState`` decides what to send and when to retry;
``IngestClient`` turns HTTP answers into what the state machine understands.

``upload.json`` in the job's directory remembers the server, the ``meta`` and how far the upload
got, so ``logstream push`` can finish it later with the same job ID and meta.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import httpx
import trio

from logstream import ingest, routes, sse
from logstream.backends.datadir import DataDirBackend
from logstream.backends.open_backend import open_backend
from logstream.backends.protocol import Backend, Cursor, Job, JobLog
from logstream.catalog import Catalog
from logstream.cimeta import ci_meta
from logstream.config import Settings
from logstream.errors import UnknownJob
from logstream.jobspec import JobSpec
from logstream.launch import create_job
from logstream.store import DataDir
from logstream.upload import Step, Trouble, UploadState

UPLOAD_BYTES = 1 << 20  # records per request, uncompressed
COMPRESS_INLINE_BYTES = 64 * 1024  # larger bodies are compressed in a worker thread
REQUEST_TIMEOUT_S = 20.0
#: An idle runner repeats its job creation this often, so the server knows it is alive.
HEARTBEAT_S = 30.0
UPLOAD_RECORD = "upload.json"
TOKEN_VARIABLES = ("LOGSTREAM_TOKEN", "LOGSTREAM_INGEST_TOKEN")


class UploadFailed(Exception):
    """A request failed in a way worth retrying later."""

    def __init__(self, kind: Trouble, detail: str) -> None:
        super().__init__(f"{kind.value}: {detail}")
        self.kind = kind
        self.detail = detail


class Gap(Exception):
    """The server refused a block that does not continue what it has; it has up to ``last``."""

    def __init__(self, last: int) -> None:
        super().__init__(f"the server has lines up to {last}")
        self.last = last


class Ingest(Protocol):
    """What the uploader needs of a server (``IngestClient``; tests use one in memory)."""

    server: str

    async def create(self, job_id: str, spec: dict[str, Any]) -> tuple[int, bool]: ...

    async def send(self, job_id: str, records: bytes) -> int: ...

    async def end(self, job_id: str, status: str, exit_code: int | None, lines: int) -> None: ...


class IngestClient:
    """The ingest routes of one server (docs/protocol.md, "Remote runners")."""

    def __init__(
        self, server: str, token: str | None = None, timeout_s: float = REQUEST_TIMEOUT_S
    ) -> None:
        self.server = server.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._client = httpx.AsyncClient(
            base_url=f"{self.server}/api/ingest/jobs/",
            headers=headers,
            timeout=httpx.Timeout(timeout_s),
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def create(self, job_id: str, spec: dict[str, Any]) -> tuple[int, bool]:
        """Create the job (or find it): the last line the server has, and whether it ended."""
        answer = await self._request("PUT", job_id, json=spec)
        return int(answer["last"]), bool(answer.get("ended"))

    async def send(self, job_id: str, records: bytes) -> int:
        """Upload whole records; the last line the server has now. ``Gap`` on a hole."""
        if len(records) > COMPRESS_INLINE_BYTES:
            body = await trio.to_thread.run_sync(ingest.compress, records)
        else:
            body = ingest.compress(records)
        headers = {"Content-Type": "text/event-stream", "Content-Encoding": "gzip"}
        answer = await self._request("POST", f"{job_id}/lines", content=body, headers=headers)
        return int(answer["last"])

    async def end(self, job_id: str, status: str, exit_code: int | None, lines: int) -> None:
        end = {"status": status, "exit_code": exit_code, "lines": lines}
        await self._request("POST", f"{job_id}/end", json=end)

    async def _request(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        try:
            response = await self._client.request(method, path, **kwargs)
        except httpx.ConnectTimeout:
            raise UploadFailed(Trouble.UNREACHABLE, "connection timed out") from None
        except httpx.ConnectError as error:
            raise UploadFailed(Trouble.UNREACHABLE, _reason(error)) from None
        except httpx.TimeoutException:
            raise UploadFailed(
                Trouble.TIMEOUT, f"no answer within {REQUEST_TIMEOUT_S:g} s"
            ) from None
        except (httpx.TransportError, httpx.DecodingError) as error:
            raise UploadFailed(Trouble.CUT, _reason(error)) from None
        try:
            answer = response.json()
        except ValueError:
            answer = {}
        if not isinstance(answer, dict):
            answer = {}
        status = response.status_code
        if status in (200, 201) and isinstance(answer.get("last"), int):
            return answer
        if status == 409 and isinstance(answer.get("last"), int):
            raise Gap(answer["last"])
        detail = f"HTTP {status}: {str(answer.get('error', response.reason_phrase))[:200]}"
        if status in (401, 403):
            raise UploadFailed(Trouble.REFUSED, detail)
        if status >= 500 or status in (200, 201):
            raise UploadFailed(Trouble.SERVER_ERROR, detail)
        raise UploadFailed(Trouble.REJECTED, detail)


def _reason(error: Exception) -> str:
    text = str(error) or type(error).__name__
    # "[Errno 111] Connection refused" -> "connection refused"
    if "] " in text:
        text = text.split("] ", 1)[1]
    return text[:1].lower() + text[1:200]


@dataclass
class Uploader:
    """Uploads one job's log (``source``) to the server until the server has all of it."""

    client: Ingest
    job_id: str
    spec: dict[str, Any]
    source: JobLog
    notify: Callable[[str], None]
    state: UploadState | None = None
    upload_bytes: int = UPLOAD_BYTES

    def __post_init__(self) -> None:
        self.state = self.state or UploadState()
        self._done = trio.Event()

    @property
    def done(self) -> bool:
        return self._done.is_set()

    @property
    def acked(self) -> int:
        assert self.state is not None
        return self.state.acked

    async def wait_done(self) -> None:
        await self._done.wait()

    async def run(self) -> None:
        """Upload until the server has every line and the end (or until cancelled)."""
        state = self.state
        assert state is not None
        while True:
            job = self.source.job
            step = state.next_step(self.source.last, job.ended)
            if step is Step.DONE:
                self._done.set()
                return
            if step is Step.WAIT:
                with trio.move_on_after(HEARTBEAT_S) as idle:
                    await self.source.wait_beyond(state.acked)
                if idle.cancelled_caught:
                    # A quiet command: tell the server the runner is alive (docs/protocol.md).
                    state.created = False
                continue
            try:
                notice = await self._do(step, state)
            except Gap as gap:
                state.on_gap(gap.last)
                continue
            except UploadFailed as failure:
                delay, notice = state.on_trouble(failure.kind, failure.detail)
                if notice:
                    self.notify(f"{notice}; the job goes on and its lines are kept")
                await trio.sleep(delay)
                continue
            if notice:
                self.notify(f"{notice} to {self.client.server}")

    async def _do(self, step: Step, state: UploadState) -> str | None:
        if step is Step.CREATE:
            last, ended = await self.client.create(self.job_id, self.spec)
            return state.on_created(last, ended)
        if step is Step.SEND:
            read = await self.source.read_after(Cursor(state.acked), self.upload_bytes)
            chunk = read.chunk
            if not chunk.payload:
                # Counted but not readable yet (a record not whole on disk): look again soon.
                await trio.sleep(0.05)
                return None
            payload = chunk.payload
            if chunk.time_ms and not payload.startswith(b"event: time"):
                payload = sse.encode_time(chunk.time_ms) + payload
            return state.on_acked(await self.client.send(self.job_id, payload))
        job = self.source.job
        if job.status in ingest.STATUSES:
            await self.client.end(self.job_id, job.status, job.exit_code, state.acked)
        # else its runner died (``push`` of an interrupted job): there is no end to record.
        return state.on_ended()


def job_spec(job: Job) -> dict[str, Any]:
    """The body that creates the job on the server."""
    return {
        "name": job.name,
        "command": list(job.command),
        "started_at": job.started_at,
        "meta": dict(job.meta),
    }


def write_upload_record(job_path: Path, record: dict[str, Any]) -> None:
    """Remember where the job goes and how far its upload got (``logstream push`` reads it)."""
    temporary = job_path / (UPLOAD_RECORD + ".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    with open(fd, "w") as file:
        json.dump(record, file)
    os.replace(temporary, job_path / UPLOAD_RECORD)


def read_upload_record(job_path: Path) -> dict[str, Any] | None:
    with contextlib.suppress(OSError, ValueError):
        record = json.loads((job_path / UPLOAD_RECORD).read_bytes())
        if isinstance(record, dict):
            return record
    return None


def summary_line(name: str, url: str) -> str:
    """The Markdown line appended to GitHub's ``$GITHUB_STEP_SUMMARY``."""
    shown = name.replace("[", "\\[").replace("]", "\\]").replace("\n", " ")[:200]
    return f"- Live log of `{shown.replace('`', '')}`: [{url}]({url})\n"


def append_step_summary(environ: Mapping[str, str], name: str, url: str) -> None:
    """Under GitHub Actions, put the log's link on the run's page (one click away)."""
    path = environ.get("GITHUB_STEP_SUMMARY")
    if path:
        with contextlib.suppress(OSError), open(path, "a", encoding="utf-8") as file:
            file.write(summary_line(name, url))


def command_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The command's environment: ours without the tokens (a job never sees them)."""
    return {k: v for k, v in environ.items() if k not in TOKEN_VARIABLES}


async def run_remote(
    settings: Settings,
    spec: JobSpec,
    *,
    server: str,
    token: str | None,
    upload_timeout_s: float,
    say: Callable[[str], None],
) -> int:
    """Run ``spec`` as a job whose log goes live on ``server``; the command's exit status.

    The job lives in this machine's data directory (``settings``) like a local run's; the URL
    line comes first, before any request: the server may be down, the job runs anyway.
    """
    server = server.rstrip("/")
    found = ci_meta(os.environ, socket.gethostname())
    spec = replace(spec, meta={key: spec.masker.mask(value) for key, value in found.items()})
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as received:
        async with open_backend(settings) as backend, trio.open_nursery() as nursery:
            job = await create_job(nursery, Catalog(backend), spec)
            url = f"{server}{routes.job_page(job.id)}"
            say(f"job {job.id} live at {url}")
            append_step_summary(os.environ, job.name, url)
            path = DataDir(settings.data_dir).job_path(job.id)
            record: dict[str, Any] = {"server": server, "uploaded": 0, "complete": False}
            await trio.to_thread.run_sync(write_upload_record, path, record)
            client = IngestClient(server, token)
            uploader = Uploader(client, job.id, job_spec(job.job), job.log, notify=say)
            uploading = trio.CancelScope()
            waiting = trio.CancelScope()

            async def upload() -> None:
                with uploading:
                    await uploader.run()

            async def forward_signals() -> None:
                async for signum in received:
                    if job.job.ended:
                        waiting.cancel()  # a signal while we wait for the upload: stop waiting
                    else:
                        job.cancel(signum)

            nursery.start_soon(upload)
            nursery.start_soon(forward_signals)
            result = await job.run()
            with waiting:
                waiting.deadline = trio.current_time() + upload_timeout_s
                await uploader.wait_done()
            uploading.cancel()
            await client.aclose()
            record.update(uploaded=uploader.acked, complete=uploader.done)
            await trio.to_thread.run_sync(write_upload_record, path, record)
            if not uploader.done:
                lines = job.log.last
                say(
                    f"{lines - uploader.acked} of {lines} lines (and the job's end) are not "
                    f"uploaded to {server}; they are kept in {path}; upload them with: "
                    f"logstream push --server {server} {job.id}"
                )
            nursery.cancel_scope.cancel()
    return result.exit_code


async def push_jobs(
    data_dir: Path,
    job_ids: list[str],
    *,
    server: str,
    token: str | None,
    timeout_s: float,
    say: Callable[[str], None],
) -> int:
    """Upload finished jobs of ``data_dir`` (default: those whose upload is not complete).

    Idempotent: the server keeps what it has, so pushing a job twice is harmless. Returns 0
    when every job is on the server complete, 1 otherwise.
    """
    server = server.rstrip("/")
    data = DataDir(data_dir)
    if not job_ids:
        job_ids = await trio.to_thread.run_sync(_unfinished_uploads, data)
        if not job_ids:
            say("every job's upload is complete; nothing to push")
            return 0
    backend = DataDirBackend(data_dir)
    failed = 0
    client = IngestClient(server, token)
    try:
        for job_id in job_ids:
            if not await _push_one(backend, data, job_id, client, timeout_s, say):
                failed += 1
    finally:
        await client.aclose()
    return 1 if failed else 0


async def _push_one(
    backend: Backend,
    data: DataDir,
    job_id: str,
    client: IngestClient,
    timeout_s: float,
    say: Callable[[str], None],
) -> bool:
    try:
        log = await backend.open_log(job_id)
    except (UnknownJob, ValueError, OSError):
        say(f"no job {job_id} in {data.path}")
        return False
    if not log.job.ended:
        say(f"job {job_id} is still running; its runner uploads it")
        return False
    job = log.job
    if not job.meta:
        job = replace(job, meta=ci_meta({}, socket.gethostname()))
    uploader = Uploader(
        client, job_id, job_spec(job), log, notify=lambda text: say(f"job {job_id}: {text}")
    )
    with trio.move_on_after(timeout_s):
        await uploader.run()
    path = data.job_path(job_id)
    record = await trio.to_thread.run_sync(read_upload_record, path) or {}
    record.update(server=client.server, uploaded=uploader.acked, complete=uploader.done)
    await trio.to_thread.run_sync(write_upload_record, path, record)
    if uploader.done:
        say(f"job {job_id}: {log.last} lines at {client.server}{routes.job_page(job_id)}")
        return True
    say(f"job {job_id}: {log.last - uploader.acked} of {log.last} lines not uploaded")
    return False


def _unfinished_uploads(data: DataDir) -> list[str]:
    """Jobs that a ``run --server`` could not upload completely (oldest first)."""
    unfinished = []
    for job_id in reversed(data.job_ids()):
        record = read_upload_record(data.job_path(job_id))
        if record is not None and not record.get("complete"):
            unfinished.append(job_id)
    return unfinished
