"""The SSE encoder and parser: what a browser's EventSource would see."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from logstream import sse
from logstream.sse import Event, SSEParser

# Line text as the splitter can produce it: anything but "\n" (lone "\r" included).
line_text = st.text(alphabet=st.characters(blacklist_characters="\n", codec="utf-8"))


def parse(data: bytes) -> list[Event]:
    parser = SSEParser()
    return parser.feed(data) + parser.flush()


def parse_byte_by_byte(data: bytes) -> list[Event]:
    parser = SSEParser()
    events = []
    for i in range(len(data)):
        events += parser.feed(data[i : i + 1])
    return events + parser.flush()


def test_stdout_line_is_a_message_with_its_id() -> None:
    assert sse.encode_lines(7, ["hello"]) == b"id: 7\ndata: hello\n\n"
    assert parse(sse.encode_lines(7, ["hello"])) == [Event("hello", "message", "7")]


def test_stderr_line_is_an_stderr_event() -> None:
    data = sse.encode_lines(1, ["oops", "again"], stderr=True)
    assert data == b"id: 1\nevent: stderr\ndata: oops\n\nid: 2\nevent: stderr\ndata: again\n\n"


def test_lone_cr_becomes_a_data_line_break_and_maps_back() -> None:
    data = sse.encode_lines(3, ["10%\r50%\r100%"])
    assert data == b"id: 3\ndata: 10%\ndata: 50%\ndata: 100%\n\n"
    (event,) = parse(data)
    assert sse.line_text(event.data) == "10%\r50%\r100%"


def test_empty_line_is_still_an_event() -> None:
    assert parse(sse.encode_lines(1, [""])) == [Event("", "message", "1")]


def test_unicode_separators_are_not_line_breaks() -> None:
    text = "a\x0bb\x0cc\x1cd\x1ee\x85f\u2028g\u2029h"
    (event,) = parse(sse.encode_lines(1, [text]))
    assert event.data == text


def test_end_gap_and_time_events() -> None:
    events = parse(sse.encode_time(1700000000123) + sse.encode_gap(5) + sse.encode_end("failed", 3))
    assert events == [
        Event("1700000000123", "time"),
        Event('{"first": 5}', "gap"),
        Event('{"status": "failed", "exit_code": 3}', "end"),
    ]


def test_parser_keeps_retry_and_last_event_id() -> None:
    parser = SSEParser()
    parser.feed(sse.encode_retry(2500) + sse.encode_lines(41, ["a", "b"]))
    assert parser.retry_ms == 2500
    assert parser.last_event_id == "42"


def test_parser_handles_crlf_split_across_chunks_and_comments() -> None:
    parser = SSEParser()
    events = parser.feed(b": keep-alive\r")
    events += parser.feed(b"\ndata: x\r")
    events += parser.feed(b"\n\r\n")
    assert events == [Event("x")]


def test_parser_drops_an_unterminated_last_event() -> None:
    assert parse(b"data: complete\n\ndata: torn") == [Event("complete")]


def test_record_helpers_find_lines() -> None:
    block = sse.encode_time(1) + sse.encode_lines(10, ["a", "id: 12", "c"])
    assert sse.count_line_records(block) == 3
    assert sse.last_line_seq(block) == 12
    assert block[sse.find_line_record(block, 12) :].startswith(b"id: 12\ndata: c")
    assert sse.find_line_record(block, 13) == -1
    assert sse.find_line_record_start(block) == block.index(b"id: 10")


@given(st.lists(line_text, min_size=1, max_size=20), st.booleans(), st.integers(1, 10**12))
@settings(max_examples=300)
def test_encode_then_parse_returns_every_line_exactly(
    lines: list[str], stderr: bool, first: int
) -> None:
    data = sse.encode_lines(first, lines, stderr=stderr)
    for events in (parse(data), parse_byte_by_byte(data)):
        assert [sse.line_text(e.data) for e in events] == lines
        assert [e.id for e in events] == [str(first + i) for i in range(len(lines))]
        assert {e.event for e in events} == {"stderr" if stderr else "message"}


@given(st.lists(line_text, min_size=1, max_size=10), st.data())
@settings(max_examples=200)
def test_any_chunking_parses_the_same(lines: list[str], data: st.DataObject) -> None:
    payload = sse.encode_lines(1, lines)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(payload)), max_size=8)))
    parser = SSEParser()
    events = []
    for start, end in zip([0, *cuts], [*cuts, len(payload)], strict=True):
        events += parser.feed(payload[start:end])
    assert events + parser.flush() == parse(payload)
