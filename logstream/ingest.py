"""The ingest protocol's pure core: what a runner may upload, checked before anything is stored.

Theory of operation
-------------------
A runner uploads a job's lines as the very records its own data directory holds (line records
and time marks, docs/data-dir.md), so the runner sends what it has on disk without re-encoding
and the server appends what it receives without re-encoding. The server cannot trust those
bytes: they go to every viewer as they are. ``parse_records`` therefore accepts a body only if
it is a sequence of complete, well-formed records (no ``retry:``, no ``end``, no stray field,
no carriage return, valid UTF-8) whose line numbers are consecutive; it runs in C-level regex
and comparisons, no Python work per line.

The runner owns the numbering. The server answers every upload with the last line it has
(``last``): a block that ends at or before ``last`` is already stored and is ignored; one that
overlaps is cut to the lines after ``last`` (``after``); one that starts beyond ``last + 1``
would leave a hole and is refused, so the runner resumes at ``last + 1``. Uploads are therefore
idempotent, and any sequence of repeats, cuts and retries stores each line exactly once.

Bodies may be gzip-compressed; ``decompress`` refuses one that inflates past the size limit
(a compression bomb) without inflating the rest.
"""

from __future__ import annotations

import datetime as dt
import re
import zlib
from dataclasses import dataclass

from logstream.errors import LogstreamError

MAX_BODY_BYTES = 8 << 20  # an upload's records, uncompressed
MAX_JOB_SPEC_BYTES = 64 * 1024
MAX_META_KEYS = 32
MAX_META_VALUE_CHARS = 1000
MAX_COMMAND_PARTS = 1000
MAX_NAME_CHARS = 1000
STATUSES = ("succeeded", "failed", "cancelled")

_RECORDS = re.compile(
    rb"(?>id: [0-9]{1,18}\n(?:event: stderr\n)?(?:data: [^\r\n]*+\n)++\n"
    rb"|event: time\ndata: [0-9]{1,18}\n\n)*+"
)
_LINE_IDS = re.compile(rb"\nid: ([0-9]+)")
# A field line starts the body or follows a "\n"; inside valid records, "event: time" as a field
# is only ever a time mark.
_TIME_MARK = re.compile(rb"(?:\A|\n)event: time\ndata: ([0-9]+)\n\n")
_META_KEY = re.compile(r"[a-z][a-z0-9_]{0,31}")


class IngestError(LogstreamError):
    """An upload the server refuses (its ``error_status_hint`` says how)."""

    error_status_hint = 400


class BodyTooLarge(IngestError):
    """The body is over the size limit (compressed or not)."""

    error_status_hint = 413


class UnsupportedEncoding(IngestError):
    """A ``Content-Type`` or ``Content-Encoding`` the ingest routes do not take."""

    error_status_hint = 415


class NotYours(IngestError):
    """The job exists but this runner's token did not create it (or it is not a remote job)."""

    error_status_hint = 403


class Conflict(IngestError):
    """The upload does not continue what the server has; ``last``: the line to resume after."""

    error_status_hint = 409

    def __init__(self, message: str, last: int, ended: bool = False) -> None:
        super().__init__(message)
        self.last = last
        self.ended = ended


@dataclass(frozen=True, slots=True)
class Records:
    """Lines ``first..last`` as whole records; ``time_ms``: the first time mark, else 0."""

    first: int
    last: int
    payload: bytes
    time_ms: int

    def after(self, seq: int) -> Records | None:
        """The part of the records after line ``seq``; ``None`` when nothing is left."""
        if seq < self.first:
            return self
        if seq >= self.last:
            return None
        at = self.payload.find(b"\nid: %d\n" % (seq + 1)) + 1
        assert at > 0, "consecutive numbering guarantees the record exists"
        rest = self.payload[at:]
        return Records(seq + 1, self.last, rest, _first_time(rest))


def parse_records(payload: bytes) -> Records:
    """Check an upload's records; raise ``IngestError`` with a reason when it is not valid."""
    if not payload:
        raise IngestError("the body holds no records")
    if _RECORDS.fullmatch(payload) is None:
        raise IngestError(
            "the body is not a sequence of whole line records and time marks "
            "(docs/protocol.md, 'Uploading lines')"
        )
    try:
        payload.decode()
    except UnicodeDecodeError as error:
        raise IngestError(f"the body is not valid UTF-8 at byte {error.start}") from None
    ids = _LINE_IDS.findall(b"\n" + payload)
    if not ids:
        raise IngestError("the body holds no line records")
    first = int(ids[0])
    if first < 1:
        raise IngestError("line numbers start at 1")
    expected = "\n".join(map(str, range(first, first + len(ids)))).encode()
    if b"\n".join(ids) != expected:
        raise IngestError(f"line numbers must be consecutive from {first}")
    return Records(first, first + len(ids) - 1, payload, _first_time(payload))


def decompress(body: bytes, encoding: str | None, max_bytes: int = MAX_BODY_BYTES) -> bytes:
    """The body without its ``Content-Encoding`` (gzip or identity), at most ``max_bytes``."""
    encoding = (encoding or "identity").strip().lower()
    if encoding == "identity":
        if len(body) > max_bytes:
            raise BodyTooLarge(f"the body is over {max_bytes} bytes")
        return body
    if encoding not in ("gzip", "x-gzip"):
        raise UnsupportedEncoding(f"Content-Encoding {encoding[:40]!r}: use gzip or none")
    inflater = zlib.decompressobj(wbits=31)
    try:
        data = inflater.decompress(body, max_bytes + 1)
    except zlib.error as error:
        raise IngestError(f"the gzip body is corrupt: {error}") from None
    if len(data) > max_bytes:
        raise BodyTooLarge(f"the body inflates to over {max_bytes} bytes")
    if not inflater.eof or inflater.unused_data:
        raise IngestError("the gzip body is truncated or has trailing data")
    return data


def compress(payload: bytes) -> bytes:
    """gzip at level 1: log text shrinks 10-20x, at a few hundred MB/s."""
    return zlib.compress(payload, 1, wbits=31)


@dataclass(frozen=True)
class RemoteJobSpec:
    """What a runner says about a job it creates: shown by the API, never run."""

    name: str
    command: list[str]
    started_at: str | None
    meta: dict[str, str]


def parse_job_spec(data: object) -> RemoteJobSpec:
    """Check the JSON body of a job creation; raise ``IngestError`` when it is not valid."""
    if not isinstance(data, dict):
        raise IngestError("the body must be a JSON object")
    name = data.get("name")
    if not isinstance(name, str) or not name or len(name) > MAX_NAME_CHARS:
        raise IngestError(f"name: a non-empty string of at most {MAX_NAME_CHARS} characters")
    command = data.get("command", [])
    if (
        not isinstance(command, list)
        or len(command) > MAX_COMMAND_PARTS
        or not all(isinstance(part, str) for part in command)
    ):
        raise IngestError("command: a list of strings")
    started_at = data.get("started_at")
    if started_at is not None and not _is_timestamp(started_at):
        raise IngestError("started_at: an ISO 8601 UTC time like 2026-12-04T18:25:00.000Z")
    return RemoteJobSpec(name, list(command), started_at, parse_meta(data.get("meta", {})))


def parse_meta(meta: object) -> dict[str, str]:
    """Who ran the job: short string values under lower-case keys; links must be http(s)."""
    if not isinstance(meta, dict) or len(meta) > MAX_META_KEYS:
        raise IngestError(f"meta: an object of at most {MAX_META_KEYS} string values")
    checked: dict[str, str] = {}
    for key, value in meta.items():
        if not isinstance(key, str) or not _META_KEY.fullmatch(key):
            raise IngestError(f"meta: key {str(key)[:40]!r} is not [a-z][a-z0-9_]{{0,31}}")
        if not isinstance(value, str) or len(value) > MAX_META_VALUE_CHARS:
            raise IngestError(f"meta.{key}: a string of at most {MAX_META_VALUE_CHARS} characters")
        if key.endswith("_url") and not value.startswith(("https://", "http://")):
            raise IngestError(f"meta.{key}: an http or https URL")
        checked[key] = value
    return checked


@dataclass(frozen=True)
class JobEnd:
    """The end a runner records: status, exit code, and how many lines the job has."""

    status: str
    exit_code: int | None
    lines: int


def parse_end(data: object) -> JobEnd:
    """Check the JSON body of an end; raise ``IngestError`` when it is not valid."""
    if not isinstance(data, dict):
        raise IngestError("the body must be a JSON object")
    status, exit_code, lines = data.get("status"), data.get("exit_code"), data.get("lines")
    if status not in STATUSES:
        raise IngestError(f"status: one of {', '.join(STATUSES)}")
    if exit_code is not None and (not isinstance(exit_code, int) or isinstance(exit_code, bool)):
        raise IngestError("exit_code: an integer or null")
    if not isinstance(lines, int) or isinstance(lines, bool) or lines < 0:
        raise IngestError("lines: the job's number of lines")
    assert isinstance(status, str)
    return JobEnd(status, exit_code, lines)


def _first_time(payload: bytes) -> int:
    match = _TIME_MARK.search(payload)
    return int(match[1]) if match else 0


def _is_timestamp(value: object) -> bool:
    if not isinstance(value, str) or not value.endswith("Z") or len(value) > 40:
        return False
    try:
        dt.datetime.fromisoformat(value[:-1] + "+00:00")
    except ValueError:
        return False
    return True
