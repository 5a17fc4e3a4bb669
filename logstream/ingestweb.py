"""The ingest routes (``/api/ingest/jobs/<ID>...``) as plain ASGI, in front of the web app.

Runners upload many requests a second; these routes skip the web framework (a few hundred
microseconds a request) and read the body themselves, under their own size limit, since the
framework's applies to the viewer's small JSON bodies. Authentication is done before (``Guard``
in server.py puts the runner token it accepted in ``scope["logstream.runner"]``); what a token
may do is decided here: it creates jobs and appends to the jobs it created (``RemoteJobs``).
docs/protocol.md, "Remote runners", describes the routes.
"""

from __future__ import annotations

import json
import re
from typing import Any

import trio

from logstream import ingest
from logstream.asgi import ASGIApp, Receive, Scope, Send, send_json
from logstream.errors import LogstreamError, UnknownJob
from logstream.ingest import IngestError
from logstream.remotejobs import RemoteJobs, token_owner
from logstream.store import JOB_ID

PREFIX = "/api/ingest/jobs/"
_ROUTE = re.compile(r"/api/ingest/jobs/([^/]+)(/lines|/end)?")
PARSE_INLINE_BYTES = 64 * 1024  # larger bodies are checked in a worker thread
#: ``Retry-After`` of a 503 (runners back off on their own: for other clients).
RETRY_AFTER_S = b"1"


class IngestRoutes:
    """ASGI middleware: answers ``/api/ingest/...``, passes everything else to ``app``."""

    def __init__(self, app: ASGIApp, remote_jobs: RemoteJobs | None) -> None:
        self.app = app
        self.remote_jobs = remote_jobs

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/api/ingest/"):
            await self.app(scope, receive, send)
            return
        headers = [(b"cache-control", b"no-store")]
        try:
            status, answer = await self._answer(scope, receive)
        except UnknownJob:
            status, answer = 404, {"error": "no such job: create it with PUT first"}
        except LogstreamError as error:
            status, answer = error.error_status_hint, {"error": error.message}
            if isinstance(error, ingest.Conflict):
                answer.update(last=error.last, ended=error.ended)
            elif isinstance(error, ingest.BodyTooLarge):
                answer["max_bytes"] = ingest.MAX_BODY_BYTES
            if status == 503:
                # Redis down, or the job's writer is another node whose lease has not gone yet.
                headers.append((b"retry-after", RETRY_AFTER_S))
        await send_json(send, status, answer, headers)

    async def _answer(self, scope: Scope, receive: Receive) -> tuple[int, dict[str, Any]]:
        match = _ROUTE.fullmatch(scope["path"])
        if match is None or not JOB_ID.fullmatch(match[1]):
            return 404, {"error": "not found"}
        if self.remote_jobs is None:
            return 404, {"error": "this server does not accept remote jobs (logstream serve does)"}
        job_id, action, method = match[1], match[2], scope["method"]
        expected = {None: "PUT", "/lines": "POST", "/end": "POST"}[action]
        if method != expected:
            return 405, {"error": f"method not allowed: use {expected}"}
        headers = {name.decode("latin-1"): value for name, value in scope["headers"]}
        if "origin" in headers:
            # Runners send no Origin; a browser page must not upload through a viewer's session.
            return 403, {"error": "ingest requests from browsers are refused"}
        owner = token_owner(scope.get("logstream.runner"))
        content_type = headers.get("content-type", b"").split(b";")[0].strip().lower()
        if action == "/lines":
            if content_type != b"text/event-stream":
                raise ingest.UnsupportedEncoding("Content-Type: text/event-stream (log records)")
            encoding = headers.get("content-encoding", b"").decode("latin-1")
            body = await _read_body(receive, ingest.MAX_BODY_BYTES)
            if len(body) > PARSE_INLINE_BYTES:
                records = await trio.to_thread.run_sync(_parse, body, encoding)
            else:
                records = _parse(body, encoding)
            last = await self.remote_jobs.append(job_id, records, owner)
            return 200, {"last": last}
        if content_type != b"application/json":
            raise ingest.UnsupportedEncoding("Content-Type: application/json")
        data = _json_body(await _read_body(receive, ingest.MAX_JOB_SPEC_BYTES))
        if action is None:
            spec = ingest.parse_job_spec(data)
            last, ended, created = await self.remote_jobs.create(job_id, spec, owner)
            return (201 if created else 200), {"id": job_id, "last": last, "ended": ended}
        end = ingest.parse_end(data)
        last = await self.remote_jobs.end(job_id, end, owner)
        return 200, {"last": last, "ended": True}


def _parse(body: bytes, encoding: str) -> ingest.Records:
    return ingest.parse_records(ingest.decompress(body, encoding))


def _json_body(body: bytes) -> object:
    try:
        return json.loads(body)
    except ValueError:
        raise IngestError("the body is not JSON") from None


async def _read_body(receive: Receive, max_bytes: int) -> bytes:
    """The request body; ``BodyTooLarge`` as soon as it is over ``max_bytes``."""
    parts: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise IngestError("the client went away")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > max_bytes:
            raise ingest.BodyTooLarge(f"the body is over {max_bytes} bytes")
        parts.append(chunk)
        if not message.get("more_body", False):
            return b"".join(parts)
