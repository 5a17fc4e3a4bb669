"""The log's record format as pure functions: here, searching the lines' text of a block."""

from __future__ import annotations

from logstream import sse
from logstream.logformat import search_lines


def block(*lines: str, first: int = 1, stderr: bool = False) -> bytes:
    return sse.encode_time(1_764_030_783_120) + sse.encode_lines(first, list(lines), stderr=stderr)


def test_search_looks_at_line_text_never_at_the_framing() -> None:
    records = block("hello", "world", first=12) + block("warning", first=14, stderr=True)
    for framing in ["data:", "data: ", "id:", "id: 12", "12", "event:", "stderr", "time", "1764"]:
        assert search_lines(records, framing, 100) == [], framing


def test_search_ignores_case_and_ansi_escapes() -> None:
    records = block("hello", "\x1b[31mERR\x1b[0mOR here", "nothing", "Error again")
    assert search_lines(records, "error", 100) == [2, 4]
    assert search_lines(block("plain ERROR"), "error", 100) == [1]


def test_search_finds_text_that_looks_like_framing_when_a_line_holds_it() -> None:
    records = block("x", "data: 5", "id: 7", first=40)
    assert search_lines(records, "data:", 100) == [41]
    assert search_lines(records, "id: 7", 100) == [42]


def test_search_matches_a_carriage_return_inside_a_line() -> None:
    records = block("10%\r50%\r100%", "50%")
    assert search_lines(records, "0%\r5", 100) == [1]
    assert search_lines(records, "50%", 100) == [1, 2]


def test_search_stops_at_the_limit() -> None:
    records = block(*["match"] * 10)
    assert search_lines(records, "match", 3) == [1, 2, 3]
