"""The ring buffer: bounded, ordered, O(log n) lookup, never evicting what is not on disk."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from logstream import sse
from logstream.ring import Block, Ring


def block(first: int, count: int, time_ms: int = 0) -> Block:
    lines = [f"line {seq}" for seq in range(first, first + count)]
    return Block(first, first + count - 1, sse.encode_lines(first, lines), time_ms)


def lines_of(payload: bytes) -> list[int]:
    return [int(e.id or 0) for e in sse.SSEParser().feed(payload)]


def test_read_after_returns_every_newer_line_in_one_chunk() -> None:
    ring = Ring(max_lines=100)
    ring.append(block(1, 3))
    ring.append(block(4, 2))
    chunk = ring.read_after(2)
    assert chunk is not None
    assert lines_of(chunk.payload) == [3, 4, 5]
    assert chunk.last == 5


def test_nothing_newer_gives_an_empty_chunk() -> None:
    ring = Ring()
    ring.append(block(1, 2))
    chunk = ring.read_after(2)
    assert chunk is not None and chunk.payload == b"" and chunk.last == 2
    empty = Ring().read_after(0)
    assert empty is not None and empty.payload == b""


def test_blocks_must_continue_the_sequence() -> None:
    ring = Ring()
    ring.append(block(1, 2))
    with pytest.raises(ValueError):
        ring.append(block(4, 1))


def test_eviction_keeps_the_newest_lines_and_reports_what_it_dropped() -> None:
    ring = Ring(max_lines=4, persisted_through=10**9)
    assert ring.append(block(1, 3)) == []
    assert ring.append(block(4, 3)) == []  # dropping lines 1-3 would leave fewer than 4
    assert ring.append(block(7, 3)) == [block(1, 3)]
    assert ring.first == 4
    assert ring.read_after(2) is None  # older than the ring: the caller reads the disk
    assert ring.statistics().evicted_lines == 3


def test_nothing_is_evicted_before_it_is_persisted() -> None:
    ring = Ring(max_lines=2)
    for first in range(1, 20, 2):
        ring.append(block(first, 2))
    assert ring.first == 1  # the store has nothing yet: the ring is the only copy
    evicted = ring.mark_persisted(10)
    assert [b.first for b in evicted] == [1, 3, 5, 7, 9]
    assert ring.first == 11


def test_byte_bound_evicts_too() -> None:
    ring = Ring(max_lines=10**6, max_bytes=100, persisted_through=10**9)
    for first in range(1, 50, 5):
        ring.append(block(first, 5))
    assert ring.statistics().bytes <= 100 + len(block(46, 5).payload)


def test_max_bytes_bounds_a_chunk_but_returns_at_least_one_line() -> None:
    ring = Ring()
    for first in range(1, 100, 10):
        ring.append(block(first, 10))
    chunk = ring.read_after(0, max_bytes=1)
    assert chunk is not None and chunk.last == 1 and lines_of(chunk.payload) == [1]
    # Within a budget: the rest of a block, then only whole blocks that fit.
    budget = len(block(1, 10).payload) + 40
    chunk = ring.read_after(4, max_bytes=budget)
    assert chunk is not None and len(chunk.payload) <= budget
    assert lines_of(chunk.payload) == list(range(5, 11))  # the next block would not fit


@given(
    st.lists(st.integers(1, 20), min_size=1, max_size=40),
    st.integers(1, 30),
    st.data(),
)
@settings(max_examples=200)
def test_reading_from_any_cursor_gives_each_line_once_in_order(
    sizes: list[int], max_lines: int, data: st.DataObject
) -> None:
    ring = Ring(max_lines=max_lines, persisted_through=10**9)
    first = 1
    for size in sizes:
        ring.append(block(first, size))
        first += size
    last = first - 1
    cursor = data.draw(st.integers(ring.first - 1, last))
    seen: list[int] = []
    while True:
        chunk = ring.read_after(cursor, max_bytes=data.draw(st.integers(1, 500)))
        assert chunk is not None
        if not chunk.payload:
            break
        seen += lines_of(chunk.payload)
        cursor = chunk.last
    assert seen == list(range(seen[0] if seen else last + 1, last + 1))
    assert not seen or seen[0] == max(ring.first, 1) or seen[0] >= ring.first


def test_a_block_after_a_line_inside_it_starts_at_the_next_line() -> None:
    whole = Block(3, 5, sse.encode_time(7) + sse.encode_lines(3, ["c", "d", "e"]), 7)
    rest = whole.after(3)
    assert (rest.first, rest.last, rest.time_ms) == (4, 5, 7)
    assert rest.payload == sse.encode_lines(4, ["d", "e"])
    assert whole.after(2) is whole
