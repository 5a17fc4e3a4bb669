"""What one event stream sends, as a pure state object; ``web`` drives it with reads and waits.

Theory of operation
-------------------
A stream owns a cursor (the last line its client has) and sends, in this order: the opening
``retry:`` (with the first chunk, or alone once the client is caught up), the records after
the cursor as the log returns them, a ``gap`` event before a chunk that does not start at the
next line (those lines are gone), and the ``end`` event only once everything the log has is
sent and the job has ended. The first chunk gets a time mark when it does not start with one,
so the client learns when its first lines were read even mid-block. A problem found in the log
goes out as ``event: problem`` after the line that completed it (its ``found_at``): a stream
resumed after line N sends exactly the problems completed after N; at the end, before ``end``,
the rest (a traceback the job's end cut short). No I/O: the async loop in
``web`` reads, waits, and sends what this object returns.
"""

from __future__ import annotations

import json

from logstream import sse
from logstream.backends.protocol import Cursor, Job, Read
from logstream.problemlog import ProblemList

#: A write that takes this long means a client that does not keep up (a busy server delays
#: writes by milliseconds, never by this much).
SLOW_WRITE_S = 0.5
#: Writes grow only once this much went out since the last slow write: kernel buffers take
#: the first few hundred KB even from a client that never reads.
GROW_AFTER_BYTES = 256 * 1024


class EventStream:
    """The sending side of one client's event stream."""

    def __init__(
        self, after: int, retry_ms: int, min_piece: int = 16 * 1024, max_piece: int = 256 * 1024
    ) -> None:
        self.cursor = Cursor(after)
        #: Most bytes for the next write (see ``written``).
        self.piece_bytes = min_piece
        self._min_piece, self._max_piece = min_piece, max(min_piece, max_piece)
        self._sent_since_slow = 0
        self._opening: bytes | None = sse.encode_retry(retry_ms)
        self._after = after
        self._problems_sent: int | None = None  # how many of the job's problems, in found order
        self._problems_through = after

    def problems_due(self) -> bool:
        """Whether lines were sent since problems were last looked at."""
        return self._opening is None and self._problems_through < self.cursor.seq

    def problems(self, found: ProblemList, *, all_of_them: bool = False) -> bytes:
        """``event: problem`` records for the problems the lines sent so far completed (with
        ``all_of_them``: every one not sent yet, for the job's end)."""
        items = found.found
        if self._problems_sent is None:
            self._problems_sent = 0
            while (
                self._problems_sent < len(items)
                and items[self._problems_sent].found_at <= self._after
            ):
                self._problems_sent += 1
        through = self.cursor.seq
        out = []
        while self._problems_sent < len(items) and (
            all_of_them or items[self._problems_sent].found_at <= through
        ):
            data = json.dumps(items[self._problems_sent].problem.to_json())
            out.append(f"event: problem\ndata: {data}\n\n".encode())
            self._problems_sent += 1
        self._problems_through = through
        return b"".join(out)

    def chunk(self, read: Read, max_bytes: int | None = None) -> bytes:
        """The bytes to send for a read that found records; the cursor moves past them.

        With ``max_bytes``, only the whole records within it (at least one line) are sent and
        the cursor stops after them: a client that is behind gets its backlog in pieces, so
        a client that stops reading holds one small piece, not a whole read of the log.
        """
        chunk = read.chunk
        before = self.cursor.seq
        self.cursor = read.next
        if max_bytes is not None and (piece := chunk.within(max_bytes)) is not chunk:
            # Cut here (a backend gave more): the next read finds the rest by line number.
            chunk, self.cursor = piece, Cursor(piece.last)
        payload = chunk.payload
        prefix = b""
        if self._opening is not None:
            prefix, self._opening = self._opening, None
            if chunk.time_ms and not payload.startswith(b"event: time"):
                prefix += sse.encode_time(chunk.time_ms)
        if read.first > before + 1:
            prefix += sse.encode_gap(read.first)
        return prefix + payload if prefix else payload

    def written(self, took_s: float, size: int) -> None:
        """The last write (``size`` bytes) took ``took_s``. Once ``GROW_AFTER_BYTES`` went out
        since the last slow write, each write doubles the next one (up to ``max_piece``: a
        client catching up gets big writes, which keep pace with a job writing at full
        speed); a slow write (``SLOW_WRITE_S``) sets it back to ``min_piece``, so a client that
        stops reading soon holds one small piece until the write deadline cuts it."""
        if took_s >= SLOW_WRITE_S:
            self.piece_bytes = self._min_piece
            self._sent_since_slow = 0
            return
        self._sent_since_slow += size
        if self._sent_since_slow >= GROW_AFTER_BYTES:
            self.piece_bytes = min(self.piece_bytes * 2, self._max_piece)

    def opening(self) -> bytes | None:
        """The opening, if not sent yet (the client is caught up before any line)."""
        opening, self._opening = self._opening, None
        return opening

    def end(self, job: Job, last: int) -> bytes | None:
        """The ``end`` event once the job ended and the client has its ``last`` line."""
        if job.ended and self.cursor.seq >= last:
            return sse.encode_end(job.status, job.exit_code)
        return None

    def line_pending(self, last: int) -> bool:
        """A newer line is known (``last``) though the read found none: its record is not
        whole in the store yet, so poll shortly rather than wait for a newer one."""
        return last > self.cursor.seq
