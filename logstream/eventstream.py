"""What one event stream sends, as a pure state object; ``web`` drives it with reads and waits.

Theory of operation
-------------------
A stream owns a cursor (the last line its client has) and sends, in this order: the opening
``retry:`` (with the first chunk, or alone once the client is caught up), the records after
the cursor as the log returns them, a ``gap`` event before a chunk that does not start at the
next line (those lines are gone), and the ``end`` event only once everything the log has is
sent and the job has ended. The first chunk gets a time mark when it does not start with one,
so the client learns when its first lines were read even mid-block. No I/O: the async loop in
``web`` reads, waits, and sends what this object returns.
"""

from __future__ import annotations

from logstream import sse
from logstream.backends.protocol import Cursor, Job, Read


class EventStream:
    """The sending side of one client's event stream."""

    def __init__(self, after: int, retry_ms: int) -> None:
        self.cursor = Cursor(after)
        self._opening: bytes | None = sse.encode_retry(retry_ms)

    def chunk(self, read: Read) -> bytes:
        """The bytes to send for a read that found records; the cursor moves past them."""
        chunk = read.chunk
        prefix = b""
        if self._opening is not None:
            prefix, self._opening = self._opening, None
            if chunk.time_ms and not chunk.payload.startswith(b"event: time"):
                prefix += sse.encode_time(chunk.time_ms)
        if read.first > self.cursor.seq + 1:
            prefix += sse.encode_gap(read.first)
        self.cursor = read.next
        return prefix + chunk.payload if prefix else chunk.payload

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
