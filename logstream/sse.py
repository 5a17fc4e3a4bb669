"""Server-Sent Events: encode logstream's events to bytes, and parse any event stream.

Theory of operation
-------------------
The encoder turns a batch of lines into the bytes of their SSE records in one go, so each line is
encoded exactly once and the same bytes go to every client and to the log file on disk. A record
is ``id: <seq>``, then ``event: stderr`` for stderr lines, then ``data: <text>``, then a blank
line. SSE cannot carry a carriage return inside a field, so a lone ``\\r`` in a line's text becomes
a line break between two ``data:`` fields; the client joins them with ``\\n`` and maps every ``\\n``
back to ``\\r`` (a line's text never contains ``\\n``).

Every record of a line starts with ``id: `` and no other field line does, so ``b"\\nid: "``
marks the start of a line record, and ``b"\\n\\n"`` the end of any record (every field line,
even ``data: `` of an empty line, is non-empty, so a record never holds a blank line). The store
and the readers rely on both facts.

The parser follows the WHATWG algorithm: lines end at ``\\r\\n``, ``\\r`` or ``\\n`` (never
``str.splitlines()``, which also breaks at form feeds and Unicode separators), a ``\\r`` at the
end of a chunk may be the first half of a ``\\r\\n``, and an event is dispatched at a blank line.
"""

from __future__ import annotations

import codecs
import json
import re
from dataclasses import dataclass

RETRY_MS = 1000
KEEPALIVE = b":\n\n"
LINE_RECORD_START = b"\nid: "
RECORD_END = b"\n\n"
END_RECORD_START = b"event: end\n"


def encode_retry(retry_ms: int = RETRY_MS) -> bytes:
    """The ``retry:`` field that opens every stream."""
    return b"retry: %d\n\n" % retry_ms


def encode_lines(first_seq: int, lines: list[str], *, stderr: bool = False) -> bytes:
    """Encode consecutive lines numbered from ``first_seq`` as one block of SSE records."""
    if not lines:
        return b""
    head = "\nevent: stderr\ndata: " if stderr else "\ndata: "
    # Every step runs in C (map, zip, str.join): no Python frame per line.
    ids = map(str, range(first_seq, first_seq + len(lines)))
    body = "id: " + "\n\nid: ".join(map(head.join, zip(ids, lines, strict=True))) + "\n\n"
    if "\r" in body:
        body = body.replace("\r", "\ndata: ")
    return body.encode()


def encode_time(unix_ms: int) -> bytes:
    """A time mark: the lines after it were read at or after ``unix_ms``."""
    return b"event: time\ndata: %d\n\n" % unix_ms


def encode_gap(first_available: int) -> bytes:
    """Lines before ``first_available`` are lost; the stream continues there."""
    return b'event: gap\ndata: {"first": %d}\n\n' % first_available


def encode_end(status: str, exit_code: int | None) -> bytes:
    """The job ended and the client has every line."""
    data = json.dumps({"status": status, "exit_code": exit_code}, separators=(", ", ": "))
    return b"event: end\ndata: " + data.encode() + b"\n\n"


def line_text(data: str) -> str:
    """The text of a line from the data of its event (``\\n`` back to ``\\r``)."""
    return data.replace("\n", "\r")


def last_line_seq(records: bytes) -> int | None:
    """The sequence number of the last line record in a block of whole records, if any."""
    start = records.rfind(LINE_RECORD_START)
    if start < 0:
        if not records.startswith(b"id: "):
            return None
        start = -1
    end = records.index(b"\n", start + 5)
    return int(records[start + 5 : end])


def count_line_records(records: bytes) -> int:
    """How many line records a block of whole records holds."""
    return records.count(LINE_RECORD_START) + records.startswith(b"id: ")


def find_line_record(records: bytes, seq: int) -> int:
    """The offset of the record of line ``seq`` in a block of whole records, or -1."""
    if records.startswith(b"id: %d\n" % seq):
        return 0
    at = records.find(b"\nid: %d\n" % seq)
    return at + 1 if at >= 0 else -1


def whole_records_within(records: bytes, max_bytes: int) -> int:
    """The length of the longest run of whole records at the start of ``records`` that is at
    most ``max_bytes`` long and holds a line record (longer only when the first line's record
    alone is longer). A line record never holds a blank line, so records end at ``\n\n``."""
    if len(records) <= max_bytes:
        return len(records)
    # A record boundary followed by a line record, with the part before it within the budget.
    at = records.rfind(b"\n\nid: ", 0, max_bytes + 4)
    first_line = find_line_record_start(records)
    if at < 0 or first_line < 0 or at < first_line:
        if first_line < 0:
            return len(records)
        at = records.find(b"\n\nid: ", first_line)
        return len(records) if at < 0 else at + 2
    return at + 2


def find_line_record_start(records: bytes) -> int:
    """The offset of the first line record in a block of whole records, or -1."""
    if records.startswith(b"id: "):
        return 0
    at = records.find(LINE_RECORD_START)
    return at + 1 if at >= 0 else -1


@dataclass(frozen=True, slots=True)
class Event:
    """One dispatched event, as a browser's EventSource would see it."""

    data: str
    event: str = "message"
    id: str | None = None


class SSEParser:
    """Incremental parser: ``feed(bytes)`` returns the events completed so far."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._pending = ""
        self._first = True
        self._data: list[str] = []
        self._event = ""
        self._id: str | None = None
        #: The last event ID seen, as EventSource keeps it for reconnecting.
        self.last_event_id = ""
        #: The reconnection delay the server asked for with ``retry:``, if any.
        self.retry_ms: int | None = None

    def feed(self, data: bytes) -> list[Event]:
        text = self._decoder.decode(data)
        if self._first and text:
            self._first = False
            text = text.removeprefix("\ufeff")
        return self._feed_text(text)

    def flush(self) -> list[Event]:
        """End of stream: a last event without its blank line is dropped, as the spec says."""
        events = self._feed_text(self._decoder.decode(b"", final=True))
        if self._pending:
            events += self._feed_text("\n")
        return events

    def _feed_text(self, text: str) -> list[Event]:
        text = self._pending + text
        # A trailing \r may be half of \r\n: keep it until the next chunk.
        cut = len(text) - 1 if text.endswith("\r") else len(text)
        events: list[Event] = []
        pos = 0
        for match in _EOL.finditer(text, 0, cut):
            event = self._field(text[pos : match.start()])
            if event is not None:
                events.append(event)
            pos = match.end()
        self._pending = text[pos:]
        return events

    def _field(self, line: str) -> Event | None:
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id":
            if "\0" not in value:
                self._id = value
                self.last_event_id = value
        elif name == "retry" and value.isascii() and value.isdigit():
            self.retry_ms = int(value)
        return None

    def _dispatch(self) -> Event | None:
        data, event, event_id = self._data, self._event, self._id
        self._data, self._event, self._id = [], "", None
        if not data:
            return None
        return Event(data="\n".join(data), event=event or "message", id=event_id)


_EOL = re.compile(r"\r\n|\r|\n")
