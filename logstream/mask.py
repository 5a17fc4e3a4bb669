"""Secret masking: the values of chosen environment variables become ``***`` in every line.

Masking runs on whole lines, after the line splitter has joined the pieces of each line from
however many reads, so a value split across two reads is still masked. A value that spans
several lines is masked line by line, as GitHub Actions does. Longer values are replaced first,
so a secret that contains another is hidden whole.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping

MASK = "***"


class Masker:
    def __init__(self, values: Iterable[str]) -> None:
        parts = {part for value in values for part in value.split("\n") if part.strip()}
        self._values = sorted(parts, key=len, reverse=True)

    @classmethod
    def from_env(cls, names: Iterable[str], environ: Mapping[str, str] = os.environ) -> Masker:
        """Mask the values of the environment variables ``names`` (unset ones are skipped)."""
        return cls(environ[name] for name in names if environ.get(name))

    def including(self, values: Iterable[str]) -> Masker:
        """A masker that also hides ``values`` (a token the command must never show)."""
        return Masker([*self._values, *values])

    def add(self, value: str) -> None:
        """Mask ``value`` too from now on (a job's ``::add-mask::VALUE`` line)."""
        parts = {part for part in value.split("\n") if part.strip()} - set(self._values)
        if parts:
            self._values = sorted([*self._values, *parts], key=len, reverse=True)

    def __bool__(self) -> bool:
        return bool(self._values)

    def mask(self, text: str) -> str:
        """``text`` with every secret value replaced by ``***`` (for names and arguments)."""
        for value in self._values:
            text = text.replace(value, MASK)
        return text

    def apply(self, lines: list[str]) -> list[str]:
        """The lines with every secret value replaced by ``***``."""
        if not self._values:
            return lines
        # One pass over the joined block finds out, in C, whether any line needs work.
        joined = "\n".join(lines)
        if not any(value in joined for value in self._values):
            return lines
        for value in self._values:
            joined = joined.replace(value, MASK)
        return joined.split("\n")
