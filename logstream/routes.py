"""The URL layout of a server, spelled once: the web app's routes, the API and the CLI use it.

Pure: no trio, no I/O.
"""

from __future__ import annotations

JOB_PAGE = "/jobs/{id}"
JOB_API = "/api/jobs/{id}"
JOB_EVENTS = "/api/jobs/{id}/events"


def job_page(job_id: str) -> str:
    """The job's page in the viewer."""
    return JOB_PAGE.format(id=job_id)


def job_api(job_id: str) -> str:
    """The job's JSON."""
    return JOB_API.format(id=job_id)


def job_events(job_id: str) -> str:
    """The job's Server-Sent Events stream."""
    return JOB_EVENTS.format(id=job_id)
