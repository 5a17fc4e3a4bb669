"""The on-disk format of a job's log: pure functions, no I/O.

Theory of operation
-------------------
A job's directory holds three files (docs/data-dir.md describes them for tool writers):

``log``
    The job's event stream exactly as clients receive it, minus ``retry:`` and keep-alives:
    line records (``id: <seq>``, optional ``event: stderr``, ``data: ...``), time marks
    (``event: time``) and, when the job ended, one final ``event: end`` record. Appending the
    very bytes the ring holds makes writing a plain ``write()`` and catch-up a plain ``read()``.
``index``
    A sparse index: fixed-size little-endian entries ``(seq, offset, time_ms)``, one at least
    every ``INDEX_EVERY_BYTES`` of log, each at the start of a record. Finding a line costs a
    binary search and a read of at most ``INDEX_EVERY_BYTES`` plus one record.
``job.json``
    The job's metadata, replaced atomically.

Crash safety: records are only appended. A record is complete when it ends with a blank line
(``\\n\\n``), which no record contains anywhere else, so after a crash the log is cut back to its
last complete record (``whole_length``) and nothing torn is ever served. Index entries are fixed
size; a torn last entry, or one pointing past the log's whole records, is ignored.
"""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Iterator

from logstream import sse

INDEX_ENTRY = struct.Struct("<QQQ")
INDEX_EVERY_BYTES = 64 * 1024
ANSI_ESCAPE = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)|[@-Z\\-_])")
# A line record's head up to its text. ``^`` only ever matches a record's start or a ``data:``
# field (a line's text holds no ``\n``), so no text is matched.
_LINE_HEAD = re.compile(r"^id: [0-9]+\n(?:event: stderr\n)?data: ", re.MULTILINE)
_TIME_MARK = re.compile(r"^event: time\ndata: [0-9]+\n\n", re.MULTILINE)


def whole_length(data: bytes) -> int:
    """Length of the prefix of ``data`` made of complete records."""
    end = data.rfind(sse.RECORD_END)
    return end + 2 if end >= 0 else 0


def end_record_at(records: bytes) -> int:
    """Offset of the ``end`` record in a block of whole records, or -1."""
    if records.startswith(sse.END_RECORD_START):
        return 0
    at = records.find(b"\n\n" + sse.END_RECORD_START)
    return at + 2 if at >= 0 else -1


def parse_end_record(record: bytes) -> tuple[str, int | None]:
    """The ``(status, exit_code)`` of an ``end`` record."""
    data = record[len(sse.END_RECORD_START) :].strip()
    info = json.loads(data.removeprefix(b"data: "))
    return str(info["status"]), info["exit_code"]


def pack_index_entry(seq: int, offset: int, time_ms: int) -> bytes:
    return INDEX_ENTRY.pack(seq, offset, time_ms)


def whole_index_length(data: bytes) -> int:
    """How much of ``data`` is whole index entries (a crash can tear the last one)."""
    return len(data) - len(data) % INDEX_ENTRY.size


def unpack_index(data: bytes) -> Iterator[tuple[int, int, int]]:
    """Entries ``(seq, offset, time_ms)`` in order; a torn last entry is ignored."""
    return INDEX_ENTRY.iter_unpack(data[: whole_index_length(data)])


def iter_lines(records: bytes) -> Iterator[tuple[int, str, str]]:
    """``(seq, stream, text)`` for each line record in a block of whole records.

    ``stream`` is ``"o"`` or ``"e"``; time marks and other records are skipped.
    """
    for record in records.split(sse.RECORD_END):
        if not record.startswith(b"id: "):
            continue
        head, _, rest = record.partition(b"\n")
        stream = "o"
        if rest.startswith(b"event: stderr\n"):
            stream = "e"
            rest = rest[14:]
        text = rest.decode().removeprefix("data: ").replace("\ndata: ", "\r")
        yield int(head[4:]), stream, text


def iter_times(records: bytes, next_seq: int) -> Iterator[tuple[int, int]]:
    """``(seq, time_ms)`` for each time mark: ``seq`` is the first line after the mark."""
    pos = 0
    while True:
        at = records.find(b"event: time\ndata: ", pos)
        if at < 0:
            return
        end = records.index(b"\n", at + 18)
        time_ms = int(records[at + 18 : end])
        following = records.find(sse.LINE_RECORD_START, end)
        seq = next_seq
        if following >= 0:
            seq = int(records[following + 5 : records.index(b"\n", following + 5)])
        yield seq, time_ms
        pos = end


def plain_text(records: bytes) -> bytes:
    """The lines of a block of whole records as text, one per line, ``\\r`` kept."""
    return b"".join(text.encode() + b"\n" for _seq, _stream, text in iter_lines(records))


def search_lines(records: bytes, needle: str, limit: int) -> list[int]:
    """Sequence numbers of the (at most ``limit``) lines whose text contains ``needle``.

    ``needle`` is casefolded; the match ignores case and ANSI escape sequences, and looks at the
    lines' text only, never at the record framing (``data:``, ``id:``, sequence numbers).
    """
    text = records.decode()
    if "\x1b" not in text:
        # Most blocks hold no match: one C-level pass over the bare text skips them whole.
        # Heads become a NUL, not nothing: a line whose text starts "data: " must not turn into
        # a continuation (a "\r") of the record before it.
        bare = _LINE_HEAD.sub("\0", _TIME_MARK.sub("", text)).replace("\ndata: ", "\r")
        if needle not in bare.casefold():
            return []
    matches: list[int] = []
    for seq, _stream, line in iter_lines(records):
        if needle in ANSI_ESCAPE.sub("", line).casefold():
            matches.append(seq)
            if len(matches) >= limit:
                break
    return matches
