"""Secret masking (pure): on whole lines, as a reader sees a line, across the line cut,
overlapping secrets."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from logstream.lines import LineSplitter
from logstream.mask import ESCAPE, MASK, Masker

SECRET = "hunter2-s3cret-value"


def split(chunks: list[bytes], masker: Masker, limit: int) -> list[str]:
    splitter = LineSplitter(limit, masker)
    lines: list[str] = []
    for chunk in chunks:
        lines += splitter.feed(chunk)
    return lines + splitter.flush()


def test_a_secret_broken_by_escape_sequences_is_masked_as_it_reads() -> None:
    masker = Masker([SECRET])
    for broken in [
        SECRET[:6] + "\x1b[0m" + SECRET[6:],
        SECRET[:3] + "\x1b[1;31m" + SECRET[3:9] + "\x1b]0;title\x07" + SECRET[9:],
        SECRET[:6] + "\x07" + SECRET[6:],
    ]:
        masked = masker.mask(f"token={broken} done")
        assert masked == "token=*** done"
    # Escapes around the secret are kept: the colours of the rest of the line stay.
    assert masker.mask(f"\x1b[32m{SECRET}\x1b[0m ok") == "\x1b[32m***\x1b[0m ok"
    assert masker.apply(["plain", f"a{SECRET[:6]}\x1b[0m{SECRET[6:]}"]) == ["plain", "a***"]
    # An unterminated title hides the rest of its own line only, never the next line.
    assert masker.apply(["\x1b]0;no end", f"a{SECRET[:6]}\x1b[0m{SECRET[6:]}"]) == [
        "\x1b]0;no end",
        "a***",
    ]


def test_overlapping_secrets_leave_no_fragment() -> None:
    masker = Masker(["abcdefXYZ1", "XYZ1ghijkl"])
    assert masker.mask("<abcdefXYZ1ghijkl>") == "<***>"
    assert Masker(["aXa"]).mask("aXaXa") == "***"
    # Touching occurrences are masked each, as they would be arriving in two reads.
    assert Masker([SECRET]).mask(SECRET + SECRET) == "******"


def test_secrets_added_at_run_time_mask_every_later_line() -> None:
    masker = Masker()
    splitter = LineSplitter(100, masker)
    assert splitter.feed(b"before hunter2-s3cret-value\n") == ["before hunter2-s3cret-value"]
    masker.add(SECRET)
    assert splitter.feed(b"after hunter2-s3cret-value\n") == ["after ***"]


def test_a_secret_across_the_line_cut_is_masked() -> None:
    limit = 65536
    masker = Masker([SECRET])
    line = "A" * (limit - 6) + SECRET
    lines = split([line.encode() + b"\n"], masker, limit)
    assert "".join(lines) == "A" * (limit - 6) + "***"
    assert not any(SECRET[:6] in piece or SECRET[6:] in piece for piece in lines)


def test_a_secret_across_the_cut_of_an_unfinished_line_is_masked() -> None:
    # More than twice the limit without a newline is cut as it arrives; the secret straddles
    # where that first cut falls, and arrives in many small reads.
    limit = 1000
    masker = Masker([SECRET])
    data = ("B" * (2 * limit - 5) + SECRET + "C" * 3000 + SECRET + "\n").encode()
    chunks = [data[i : i + 7] for i in range(0, len(data), 7)]
    lines = split(chunks, masker, limit)
    assert lines == split([data], masker, limit)
    assert all(len(piece.encode()) <= limit for piece in lines)
    assert "".join(lines) == "B" * (2 * limit - 5) + "***" + "C" * 3000 + "***"


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    chunks, at = [], 0
    for size in cuts:
        chunks.append(data[at : at + size])
        at += size
    return [*chunks, data[at:]]


SECRETS = ["abcab", "cabca"]  # they overlap each other and themselves


@settings(max_examples=300, deadline=None)
@given(
    parts=st.lists(
        st.sampled_from(["x", "é", "\n", "\x1b[0m", "\x07", "ab", "abcab", "cabca", "bc", "a"]),
        max_size=200,
    ),
    cuts=st.lists(st.integers(min_value=1, max_value=40), max_size=60),
    limit=st.integers(min_value=8, max_value=40),
)
def test_masking_is_the_same_whatever_the_reads_and_never_leaves_a_secret(
    parts: list[str], cuts: list[int], limit: int
) -> None:
    data = "".join(parts).encode()
    lines = split(chunked(data, cuts), Masker(SECRETS), limit)
    # No read boundary changes what is stored (a line arriving whole is masked whole).
    assert lines == split([data], Masker(SECRETS), limit)
    for line in lines:
        assert not any(secret in ESCAPE.sub("", line) for secret in SECRETS)
        assert len(line.encode()) <= limit


@settings(max_examples=300, deadline=None)
@given(
    parts=st.lists(
        st.sampled_from(
            ["x", "\n", "\x1b[0m", "\x07", "\x1b]0;t", "\x1b[", "m", "\x1b\\", "ab", "abcab", "bc"]
        ),
        max_size=200,
    ),
    cuts=st.lists(st.integers(min_value=1, max_value=40), max_size=60),
    limit=st.integers(min_value=8, max_value=40),
)
def test_no_escape_sequence_cut_or_dangling_uncovers_a_secret(
    parts: list[str], cuts: list[int], limit: int
) -> None:
    # Titles, escapes cut by the line limit or left dangling before a secret: every stored
    # line, read on its own as the viewer shows it, holds no secret, raw or as it reads.
    for line in split(chunked("".join(parts).encode(), cuts), Masker(SECRETS), limit):
        assert not any(secret in ESCAPE.sub("", line) or secret in line for secret in SECRETS)


def test_values_of_named_variables_are_masked_and_unset_ones_skipped() -> None:
    masker = Masker.from_env(["TOKEN", "UNSET", "EMPTY"], {"TOKEN": "s3cret", "EMPTY": ""})
    assert masker.apply(["token=s3cret", "nothing here"]) == [f"token={MASK}", "nothing here"]
    assert masker.mask("curl -H 'x: s3cret'") == f"curl -H 'x: {MASK}'"


def test_a_secret_containing_another_is_hidden_whole() -> None:
    masker = Masker(["abc", "abcdef"])
    assert masker.apply(["xabcdefx abc"]) == [f"x{MASK}x {MASK}"]


def test_a_multi_line_secret_is_masked_line_by_line() -> None:
    masker = Masker(["first\nsecond"])
    assert masker.apply(["a first", "second b"]) == [f"a {MASK}", f"{MASK} b"]


def test_no_secrets_returns_the_same_lines_and_is_false() -> None:
    lines = ["a", "b"]
    masker = Masker([" ", ""])
    assert not masker
    assert masker.apply(lines) is lines
