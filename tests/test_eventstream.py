"""What an event stream sends, decided without a server: opening, time mark, gap, end."""

from __future__ import annotations

from logstream import sse
from logstream.backends.protocol import Cursor, Read
from logstream.eventstream import GROW_AFTER_BYTES, SLOW_WRITE_S, EventStream
from logstream.job import Job
from logstream.ring import Chunk

RUNNING = Job(id="j", name="j", command=("j",))


def read(first: int, last: int, time_ms: int = 0, marked: bool = False) -> Read:
    payload = sse.encode_lines(first, [f"l{n}" for n in range(first, last + 1)])
    if marked:
        payload = sse.encode_time(time_ms) + payload
    return Read(Chunk(payload, last, time_ms), first, Cursor(last, position=last * 10))


def test_the_first_chunk_carries_the_opening_and_its_read_time() -> None:
    stream = EventStream(0, retry_ms=1000)
    sent = stream.chunk(read(1, 2, time_ms=1234))
    assert sent == (
        sse.encode_retry(1000) + sse.encode_time(1234) + sse.encode_lines(1, ["l1", "l2"])
    )
    assert stream.cursor == Cursor(2, position=20)  # the backend's position is kept
    assert stream.chunk(read(3, 3, time_ms=9999)) == sse.encode_lines(3, ["l3"])
    assert stream.opening() is None


def test_a_chunk_that_starts_with_its_own_time_mark_gets_no_second_one() -> None:
    stream = EventStream(0, retry_ms=1000)
    sent = stream.chunk(read(1, 1, time_ms=5, marked=True))
    assert sent.count(b"event: time") == 1


def test_lost_lines_are_announced_with_a_gap_before_the_chunk() -> None:
    stream = EventStream(0, retry_ms=1000)
    stream.chunk(read(1, 1))
    assert stream.chunk(read(5, 5)) == sse.encode_gap(5) + sse.encode_lines(5, ["l5"])


def test_the_end_follows_only_when_the_client_has_every_line() -> None:
    stream = EventStream(3, retry_ms=1000)
    ended = RUNNING.with_lines(5).ending("failed", 2)
    assert stream.opening() == sse.encode_retry(1000)
    assert stream.end(RUNNING, 3) is None
    assert stream.end(ended, 5) is None and stream.line_pending(5)
    stream.chunk(read(4, 5))
    assert stream.end(ended, 5) == sse.encode_end("failed", 2)
    assert not stream.line_pending(5)


def test_a_client_behind_gets_its_backlog_in_pieces_of_whole_records() -> None:
    stream = EventStream(0, retry_ms=1000)
    stream.opening()
    backlog = read(1, 100)  # one read of 100 lines, as from a big block of the ring
    piece = stream.chunk(backlog, max_bytes=200)
    assert len(piece) <= 200
    lines = [int(e.id or 0) for e in sse.SSEParser().feed(piece)]
    assert lines == list(range(1, lines[-1] + 1))
    # The cursor stops after the piece (no backend position: the next read seeks by line).
    assert stream.cursor == Cursor(lines[-1])
    # The rest follows from the next read, exactly.
    rest = stream.chunk(read(lines[-1] + 1, 100))
    assert [int(e.id or 0) for e in sse.SSEParser().feed(rest)] == list(range(lines[-1] + 1, 101))


def test_a_line_longer_than_a_piece_is_sent_whole() -> None:
    stream = EventStream(0, retry_ms=1000)
    stream.opening()
    payload = sse.encode_lines(1, ["x" * 1000, "y"])
    sent = stream.chunk(Read(Chunk(payload, 2, 0), 1, Cursor(2)), max_bytes=100)
    assert sent == sse.encode_lines(1, ["x" * 1000])
    assert stream.cursor == Cursor(1)


def test_pieces_never_split_a_record() -> None:
    records = sse.encode_time(7) + sse.encode_lines(1, ["a\rb", "c" * 50, "d"], stderr=True)
    for budget in range(1, len(records) + 2):
        cut = sse.whole_records_within(records, budget)
        assert records[:cut].endswith(b"\n\n")
        assert cut <= budget or sse.last_line_seq(records[:cut]) == 1
        assert sse.last_line_seq(records[:cut]) is not None


def test_a_client_that_keeps_taking_writes_gets_bigger_ones_and_a_slow_one_small() -> None:
    stream = EventStream(0, retry_ms=1000, min_piece=1000, max_piece=8000)
    assert stream.piece_bytes == 1000
    # Kernel buffers take the first writes of any client: no growth before GROW_AFTER_BYTES.
    stream.written(0.0001, GROW_AFTER_BYTES - 1)
    assert stream.piece_bytes == 1000
    for expected in (2000, 4000, 8000, 8000):
        stream.written(0.0001, 1000)
        assert stream.piece_bytes == expected
    stream.written(SLOW_WRITE_S, 8000)  # it made us wait: maybe it stopped reading
    assert stream.piece_bytes == 1000
    stream.written(0.0001, 1000)
    assert stream.piece_bytes == 1000  # and it proves itself again before growing
