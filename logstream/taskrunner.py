"""Task-runner mode (contract §8): start and cancel the jobs a jobs file defines, over HTTP.

Theory of operation
-------------------
``TaskRunner`` knows the job definitions and starts them in a ``JobSupervisor`` (which cancels
every running job when the server shuts down). A request can only *name* a defined job: the
command, its arguments, environment and folder come from the jobs file alone, so no request can
run anything else (§7). ``max_running`` counts the jobs of that name this server runs,
including starts still in progress, so two concurrent requests cannot both take the last slot.

Starting and cancelling change state, so besides the token (checked by ``server.Guard`` before
routing) they are refused from other sites (CSRF): the request must say
``Content-Type: application/json`` (which a plain HTML form cannot send, and which makes a
browser ask the server first, a CORS preflight that we do not grant), and when it carries an
``Origin`` header, that must be this server's own origin or the ``--cors-origin`` one.
"""

from __future__ import annotations

import json
import os
from typing import Any

from quart import Response, request
from quart_trio import QuartTrio

from logstream.catalog import Catalog
from logstream.config import Settings
from logstream.jobsfile import JobDefinition, JobsFile
from logstream.launch import JobHandle, JobSupervisor
from logstream.mask import Masker
from logstream.web import BadRequest, HTTPError, NotFound


class Unavailable(HTTPError):
    """The server is shutting down."""

    status = 503


class Conflict(HTTPError):
    """The request clashes with the job's state (finished, or too many running)."""

    status = 409


class Forbidden(HTTPError):
    """The request comes from another site (CSRF)."""

    status = 403


class UnsupportedMediaType(HTTPError):
    """A state-changing request must be ``Content-Type: application/json``."""

    status = 415


class TaskRunner:
    """Starts defined jobs by name and cancels jobs this server runs."""

    def __init__(
        self,
        supervisor: JobSupervisor,
        settings: Settings,
        jobs_file: JobsFile | None = None,
    ) -> None:
        self.supervisor = supervisor
        self.settings = settings
        self.jobs_file = jobs_file
        self._by_name: dict[str, list[JobHandle]] = {}
        self._starting: dict[str, int] = {}

    @property
    def catalog(self) -> Catalog:
        return self.supervisor.catalog

    def definitions(self) -> tuple[JobDefinition, ...]:
        return self.jobs_file.jobs if self.jobs_file else ()

    def running_count(self, name: str) -> int:
        handles = [h for h in self._by_name.get(name, []) if not h.job.ended]
        self._by_name[name] = handles
        return len(handles) + self._starting.get(name, 0)

    def defined(self) -> list[dict[str, object]]:
        """The defined jobs as ``GET /api/jobs`` shows them under ``"defined"``."""
        return [
            {
                "name": job.name,
                "command": list(job.command),
                "running": self.running_count(job.name),
                "max_running": job.max_running,
            }
            for job in self.definitions()
        ]

    async def start(self, name: str) -> JobHandle:
        """Start the job defined as ``name``: ``NotFound`` or ``Conflict`` when it cannot."""
        definition = self.jobs_file.get(name) if self.jobs_file else None
        if definition is None:
            raise NotFound(f"no job named {name!r} is defined")
        if self.supervisor.closing:
            raise Unavailable("the server is shutting down")
        limit = definition.max_running
        if limit is not None and self.running_count(name) >= limit:
            raise Conflict(f"{name}: already {limit} running (max_running = {limit})")
        self._starting[name] = self._starting.get(name, 0) + 1
        try:
            handle = await self.supervisor.start(
                definition.command,
                name=definition.name,
                cwd=definition.cwd,
                env=definition.environment(os.environ),
                masker=Masker.from_env(self.settings.masks),
                ring_lines=self.settings.ring_lines,
                timeout_s=definition.timeout_s,
                matchers=self.settings.matchers,
            )
        finally:
            self._starting[name] -= 1
        self._by_name.setdefault(name, []).append(handle)
        return handle

    async def cancel(self, job_id: str) -> JobHandle:
        """Cancel a job this server runs; ``Conflict`` when it has ended or runs elsewhere."""
        log = await self.catalog.get(job_id)  # UnknownJob -> 404
        handle = self.supervisor.get(job_id)
        if handle is None or log.job.ended:
            if log.job.ended:
                raise Conflict(f"job {job_id} has already ended ({log.job.status})")
            raise Conflict(f"job {job_id} is run by another process; cancel it there")
        handle.cancel()
        return handle


def add_task_routes(app: QuartTrio, tasks: TaskRunner) -> None:
    """Add ``POST /api/jobs`` and ``POST /api/jobs/<ID>/cancel`` to the app."""
    state = app.extensions["logstream"]
    state.tasks = tasks
    settings = tasks.settings

    @app.post("/api/jobs")
    async def start_job() -> Response:
        _refuse_cross_site(settings.cors_origin)
        body = await _json_object()
        extra = sorted(set(body) - {"name"})
        if extra:
            raise BadRequest(
                f"unknown field {extra[0]!r}: a request only names a job of the jobs file; "
                "its command, arguments, env and cwd come from that file"
            )
        name = body.get("name")
        if not isinstance(name, str) or not name:
            raise BadRequest('give the job to start as {"name": "..."}')
        handle = await tasks.start(name)
        response = _job_response(handle, 201)
        response.headers["Location"] = f"/api/jobs/{handle.id}"
        return response

    @app.post("/api/jobs/<job_id>/cancel")
    async def cancel_job(job_id: str) -> Response:
        _refuse_cross_site(settings.cors_origin)
        handle = await tasks.cancel(job_id)
        return _job_response(handle, 202)


def _refuse_cross_site(cors_origin: str | None) -> None:
    content_type = request.headers.get("Content-Type", "").partition(";")[0].strip().lower()
    if content_type != "application/json":
        raise UnsupportedMediaType("send Content-Type: application/json")
    origin = request.headers.get("Origin")
    if origin is not None:
        own = f"{request.scheme}://{request.host}"
        if origin.rstrip("/").lower() not in {own.lower(), (cors_origin or own).lower()}:
            raise Forbidden(f"cross-origin request refused (Origin {origin[:100]!r})")
    elif request.headers.get("Sec-Fetch-Site", "") == "cross-site":
        raise Forbidden("cross-site request refused")


async def _json_object() -> dict[str, Any]:
    raw = await request.get_data(as_text=False)
    try:
        body = json.loads(raw) if raw.strip() else {}
    except (ValueError, UnicodeDecodeError):
        raise BadRequest("the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    return body


def _job_response(handle: JobHandle, status: int) -> Response:
    shown = handle.job.to_api()
    shown["lines"] = max(handle.log.last, handle.job.lines)
    return Response(json.dumps(shown), status=status, content_type="application/json")
