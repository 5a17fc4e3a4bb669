"""Secret masking on whole lines."""

from __future__ import annotations

from logstream.mask import MASK, Masker


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
