"""Task-runner mode: start and cancel the jobs a jobs file defines (docs/task-runner.md).

Theory of operation
-------------------
``TaskRunner`` knows the job definitions and starts them in a ``JobSupervisor`` (which cancels
every running job when the server shuts down). A request can only *name* a defined job: the
command, its arguments, environment and folder come from the jobs file alone, so no request can
run anything else. ``max_running`` counts the jobs of that name this server runs,
including starts still in progress, so two concurrent requests cannot both take the last slot.

The HTTP routes (``POST /api/jobs``, ``POST /api/jobs/<ID>/cancel``) and their cross-site
checks are in ``web``; this module raises domain errors (``errors``) only.
"""

from __future__ import annotations

import os

from logstream.catalog import Catalog
from logstream.config import Settings
from logstream.errors import Conflict, NotFound, Unavailable
from logstream.jobsfile import JobDefinition, JobsFile
from logstream.jobspec import JobSpec
from logstream.launch import JobHandle, JobSupervisor


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
            handle = await self.supervisor.start(job_spec(self.settings, definition))
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


def job_spec(settings: Settings, definition: JobDefinition) -> JobSpec:
    """How a defined job runs: the server's settings, the definition's command and limits."""
    return JobSpec.resolve(
        settings,
        definition.command,
        name=definition.name,
        cwd=definition.cwd,
        env=definition.environment(os.environ),
        timeout_s=definition.timeout_s,
    )
