"""The in-memory ring buffer: the newest lines of one job, as encoded SSE blocks.

Theory of operation
-------------------
The runner reads the command's output in large chunks; each chunk's lines become one ``Block``:
consecutive sequence numbers ``first..last`` and the SSE bytes of their records, encoded once
(``sse.encode_lines``) and shared by every client and by the log file. The job's writer assigns
sequence numbers (from 1, no gaps); the ring only checks that each block continues the last one.

A client holds a cursor: the last sequence number it has. ``read_after(cursor)`` returns the bytes
of every record after it, up to a byte budget, as one chunk to send in one write. Lookup is a
binary search over the blocks, then, when the cursor falls inside a block, a ``bytes.find`` of
the record's ``id:`` line: no Python work per line.

Eviction drops whole blocks, oldest first, while the rest still hold ``max_lines`` lines (so
the ring holds the newest ``max_lines`` lines, and at most one block more), or while it holds
more than ``max_bytes`` bytes; but
never a block that is not yet safely in the store (``persisted_through``): until then the ring
is the only copy. ``append`` and ``mark_persisted`` return the blocks they evicted. A cursor older
than the first block is answered with ``None``; the caller reads those lines from the store.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass, field

from logstream import sse

DEFAULT_RING_LINES = 100_000
DEFAULT_RING_BYTES = 256 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Block:
    """Lines ``first..last`` of a job as SSE records; ``time_ms``: when they were read."""

    first: int
    last: int
    payload: bytes
    time_ms: int

    @property
    def count(self) -> int:
        return self.last - self.first + 1

    def after(self, seq: int) -> Block:
        """This block without its lines up to ``seq`` (which must be inside it).

        It then starts at the record of line ``seq + 1``: a time mark before it goes too.
        """
        if seq < self.first:
            return self
        at = sse.find_line_record(self.payload, seq + 1)
        return Block(seq + 1, self.last, self.payload[at:], self.time_ms)


def blocks_after(blocks: Iterable[Block], stored: int) -> list[Block]:
    """``blocks`` without the lines at or below ``stored``: what a store still lacks.

    Blocks (or parts of them) already stored are dropped, so a re-sent block is stored once; a
    block that straddles ``stored`` is cut at its next line's record. Raises ``ValueError`` when
    a line is missing between what is stored and what is given (a hole).
    """
    kept: list[Block] = []
    expected = stored + 1
    for block in blocks:
        if block.last < expected:
            continue
        if block.first > expected:
            raise ValueError(f"lines {expected}..{block.first - 1} are missing")
        block = block.after(expected - 1)
        kept.append(block)
        expected = block.last + 1
    return kept


@dataclass(frozen=True, slots=True)
class Chunk:
    """Records after a cursor: send ``payload``, then the cursor becomes ``last``."""

    payload: bytes
    last: int
    time_ms: int

    def within(self, max_bytes: int) -> Chunk:
        """Its whole records within ``max_bytes`` (at least one line: more only when that
        line's record alone is longer), as a chunk ending at the last line kept."""
        cut = sse.whole_records_within(self.payload, max_bytes)
        if cut == len(self.payload):
            return self
        payload = self.payload[:cut]
        last = sse.last_line_seq(payload)
        assert last is not None, "a cut keeps a line"
        return Chunk(payload, last, self.time_ms)


@dataclass(slots=True)
class RingStatistics:
    lines: int
    bytes: int
    blocks: int
    first: int
    last: int
    evicted_lines: int


@dataclass
class Ring:
    """A bounded ring of blocks with O(log n) lookup by sequence number.

    The blocks are kept as four parallel lists of ints and bytes, not as ``Block`` objects:
    those lists hold nothing the garbage collector tracks, so a ring of 100,000 one-line
    blocks (a build that writes a line at a time) costs a full collection four list walks
    instead of 100,000 objects to traverse (the 20-40 ms stalls of issue 13).
    """

    max_lines: int = DEFAULT_RING_LINES
    max_bytes: int = DEFAULT_RING_BYTES
    #: Blocks up to this sequence number are in the store and may be evicted.
    persisted_through: int = 0
    _firsts: list[int] = field(default_factory=list)
    _lasts: list[int] = field(default_factory=list)
    _payloads: list[bytes] = field(default_factory=list)
    _times: list[int] = field(default_factory=list)
    _head: int = 0
    _lines: int = 0
    _bytes: int = 0
    _evicted_lines: int = 0
    #: The last sequence number appended (0: none yet).
    last: int = 0

    def __post_init__(self) -> None:
        if self.max_lines < 1 or self.max_bytes < 1:
            raise ValueError("a ring holds at least one line and one byte")

    @property
    def first(self) -> int:
        """The oldest sequence number still held (``last + 1`` when empty)."""
        return self._firsts[self._head] if self._head < len(self._firsts) else self.last + 1

    def append(self, block: Block) -> list[Block]:
        """Add the next block; return the blocks evicted to make room."""
        first, last, payload, time_ms = block.first, block.last, block.payload, block.time_ms
        if first != self.last + 1 or last < first:
            raise ValueError(f"block {first}..{last} does not follow {self.last}")
        self._firsts.append(first)
        self._lasts.append(last)
        self._payloads.append(payload)
        self._times.append(time_ms)
        self._lines += last - first + 1
        self._bytes += len(payload)
        self.last = last
        return self._evict()

    def mark_persisted(self, seq: int) -> list[Block]:
        """Lines up to ``seq`` are in the store; return the blocks this lets go."""
        self.persisted_through = max(self.persisted_through, seq)
        return self._evict()

    def read_after(self, cursor: int, max_bytes: int = 1 << 20) -> Chunk | None:
        """Whole records after line ``cursor``, at most ``max_bytes`` of them (at least one
        line: more only when that line's record alone is longer). A block longer than that
        is cut at a record, so a client that is behind gets its backlog in pieces.

        ``None`` when line ``cursor + 1`` is older than the ring; an empty chunk when nothing
        newer exists yet.
        """
        want = cursor + 1
        if want > self.last:
            return Chunk(b"", cursor, 0)
        if want < self.first:
            return None
        index = bisect.bisect_right(self._firsts, want, lo=self._head) - 1
        payload = self._payloads[index]
        offset = 0 if self._firsts[index] == want else sse.find_line_record(payload, want)
        if offset < 0:
            raise AssertionError(
                f"line {want} missing from block {self._firsts[index]}..{self._lasts[index]}"
            )
        last = self._lasts[index]
        time_ms = self._times[index]
        if len(payload) - offset > max_bytes:
            return Chunk(payload[offset:], last, time_ms).within(max_bytes)
        first_part = payload[offset:] if offset else payload
        parts = [first_part]
        size = len(first_part)
        for following in range(index + 1, len(self._payloads)):
            if size + len(self._payloads[following]) > max_bytes:
                break
            parts.append(self._payloads[following])
            size += len(self._payloads[following])
            last = self._lasts[following]
        return Chunk(b"".join(parts) if len(parts) > 1 else first_part, last, time_ms)

    def statistics(self) -> RingStatistics:
        return RingStatistics(
            lines=self._lines,
            bytes=self._bytes,
            blocks=len(self._firsts) - self._head,
            first=self.first,
            last=self.last,
            evicted_lines=self._evicted_lines,
        )

    def _evict(self) -> list[Block]:
        evicted: list[Block] = []
        while self._head < len(self._firsts) - 1:
            head = self._head
            last = self._lasts[head]
            if last > self.persisted_through:
                break
            count = last - self._firsts[head] + 1
            over_lines = self._lines - count >= self.max_lines
            over_bytes = self._bytes > self.max_bytes
            if not (over_lines or over_bytes):
                break
            payload = self._payloads[head]
            evicted.append(Block(self._firsts[head], last, payload, self._times[head]))
            self._lines -= count
            self._bytes -= len(payload)
            self._evicted_lines += count
            self._head += 1
        # Drop evicted slots in bulk: amortised O(1) per block, lists stay compact.
        if self._head > 64 and self._head * 2 > len(self._firsts):
            for column in (self._firsts, self._lasts, self._payloads, self._times):
                del column[: self._head]
            self._head = 0
        return evicted
