"""The errors the domain raises; the web layer turns them into HTTP answers in one place.

As in h11 (``ProtocolError.error_status_hint``), each error carries the HTTP status that fits
it, so the domain never imports the web framework and ``web.py`` needs one handler for all.
"""

from __future__ import annotations


class LogstreamError(Exception):
    """Base of every error logstream raises on purpose; ``message`` is safe to show a client."""

    #: The HTTP status that answers a request failing with this error.
    error_status_hint = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadRequest(LogstreamError):
    """The request is malformed (a resume ID that is not a number, ...)."""

    error_status_hint = 400


class NotFound(LogstreamError):
    """No such job, job definition or route."""

    error_status_hint = 404


class UnknownJob(NotFound, LookupError):
    """No job with this ID exists in the backend."""

    def __init__(self, job_id: str) -> None:
        super().__init__("no such job")
        self.job_id = job_id


class Conflict(LogstreamError):
    """The request clashes with the job's state (finished, too many running, ID taken)."""

    error_status_hint = 409


class JobExists(Conflict):
    """A job with this ID already exists."""


class Forbidden(LogstreamError):
    """The request comes from another site (CSRF)."""

    error_status_hint = 403


class UnsupportedMediaType(LogstreamError):
    """A state-changing request must be ``Content-Type: application/json``."""

    error_status_hint = 415


class Unavailable(LogstreamError):
    """The server is shutting down, or its backend cannot be reached."""

    error_status_hint = 503


class Busy(Unavailable):
    """Too many requests of this kind at once: come back later."""


class WriterElsewhere(Unavailable):
    """Another writer holds the job (a node's lease or a process's lock not yet gone): its
    runner tries again shortly, and gets it once that writer lets go or its lease expires."""


class StorageError(Unavailable):
    """The backend failed to store or read something (disk full, connection lost, ...)."""
