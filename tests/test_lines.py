"""The line splitter: same lines whatever the chunking, exact text, bounded pieces."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from logstream.lines import DEFAULT_LINE_LIMIT, LineSplitter, split_long


def reference(data: bytes, limit: int) -> list[str]:
    """The rules of the contract, applied to the whole stream at once."""
    raw_lines = data.split(b"\n")
    last = raw_lines.pop()
    lines = [(raw[:-1] if raw.endswith(b"\r") else raw) for raw in raw_lines]
    if last:
        lines.append(last)
    out: list[str] = []
    for raw in lines:
        out.extend(split_long(raw.decode("utf-8", "replace"), limit))
    return out


def run(chunks: list[bytes], limit: int = DEFAULT_LINE_LIMIT) -> list[str]:
    splitter = LineSplitter(limit)
    lines: list[str] = []
    for chunk in chunks:
        lines.extend(splitter.feed(chunk))
    lines.extend(splitter.flush())
    return lines


def three_ways(data: bytes, limit: int = DEFAULT_LINE_LIMIT) -> list[str]:
    """Whole, byte by byte, and with an empty chunk between: all must agree."""
    whole = run([data], limit)
    assert run([data[i : i + 1] for i in range(len(data))], limit) == whole
    assert run([b"", data, b""], limit) == whole
    return whole


def test_newline_and_crlf_end_lines() -> None:
    assert three_ways(b"one\ntwo\r\nthree\n") == ["one", "two", "three"]


def test_last_line_without_newline_is_kept() -> None:
    assert three_ways(b"a\nb") == ["a", "b"]


def test_lone_cr_stays_in_the_line() -> None:
    assert three_ways(b"10%\r50%\r100%\n") == ["10%\r50%\r100%"]
    assert three_ways(b"x\r\r\n") == ["x\r"]
    assert three_ways(b"end\r") == ["end\r"]


def test_crlf_split_across_chunks() -> None:
    assert run([b"a\r", b"\nb\r", b"\n"]) == ["a", "b"]


def test_only_newline_splits_not_unicode_line_breaks() -> None:
    text = "a\x0bb\x0cc\x1cd\x85e\u2028f\u2029g"
    assert three_ways(text.encode() + b"\n") == [text]


def test_empty_lines_are_lines() -> None:
    assert three_ways(b"\n\n\r\n") == ["", "", ""]
    assert three_ways(b"") == []


def test_invalid_utf8_becomes_replacement_character() -> None:
    assert three_ways(b"bad \xff\xfe end\n\xe2\x82\n") == ["bad \ufffd\ufffd end", "\ufffd"]


def test_multibyte_character_split_across_chunks() -> None:
    euro = "€".encode()
    assert run([b"x" + euro[:1], euro[1:2], euro[2:] + b"\n"]) == ["x€"]


def test_nul_tab_and_ansi_are_unchanged() -> None:
    text = "\x00\t\x1b[31mred\x1b[0m"
    assert three_ways(text.encode() + b"\n") == [text]


def test_long_line_is_split_into_pieces_of_at_most_the_limit() -> None:
    line = ("é" * 7 + "a") * 20_000  # 300,000 bytes, two-byte characters
    lines = run([line.encode() + b"\n"])
    assert "".join(lines) == line
    assert all(len(piece.encode()) <= DEFAULT_LINE_LIMIT for piece in lines)
    assert len(lines[0].encode()) >= DEFAULT_LINE_LIMIT - 1


def test_replacement_characters_count_toward_the_limit() -> None:
    lines = run([b"\xff" * 100 + b"\n"], limit=30)
    assert all(len(piece.encode()) <= 30 for piece in lines)
    assert "".join(lines) == "\ufffd" * 100


def test_an_endless_line_holds_bounded_memory() -> None:
    splitter = LineSplitter(1024)
    emitted = 0
    for _ in range(1000):
        emitted += len(splitter.feed(b"y" * 4096))
        assert splitter._pending_bytes <= 3 * 1024
    assert emitted >= 3990
    rest = splitter.flush()
    assert len(rest) == 1 and len(rest[0]) <= 1024


def test_a_line_of_exactly_the_limit_is_one_piece_and_no_empty_line_follows() -> None:
    assert run([b"z" * 64, b"z" * 64, b"\n"], limit=64) == ["z" * 64, "z" * 64]


def test_limit_must_fit_a_character() -> None:
    with pytest.raises(ValueError):
        LineSplitter(3)


chunkings = st.lists(st.integers(min_value=0, max_value=40), max_size=30)
stream = st.lists(
    st.sampled_from([b"a", b"\n", b"\r", b"\r\n", b"\xff", "é".encode(), "€".encode(), b"\xe2"]),
    max_size=200,
).map(b"".join)


@settings(max_examples=400, deadline=None)
@given(data=stream, cuts=chunkings, limit=st.sampled_from([4, 5, 7, 16, 65536]))
def test_any_chunking_gives_the_reference_lines(data: bytes, cuts: list[int], limit: int) -> None:
    chunks, start = [], 0
    for size in cuts:
        chunks.append(data[start : start + size])
        start += size
    chunks.append(data[start:])
    assert run(chunks, limit) == reference(data, limit)


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=300), limit=st.sampled_from([4, 6, 9, 64]))
def test_arbitrary_bytes_byte_by_byte_match_reference(data: bytes, limit: int) -> None:
    assert run([data[i : i + 1] for i in range(len(data))], limit) == reference(data, limit)
