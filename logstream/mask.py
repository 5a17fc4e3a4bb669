"""Secret masking: the values of chosen environment variables become ``***`` in every line.

Theory of operation
-------------------
Masking sees a line as a reader does. The line splitter calls it on whole lines, after the
pieces of each line from however many reads are joined, and *before* a line longer than the
line limit is cut (``LineSplitter``), so a value that straddles a cut is still one value. A
line still arriving when it must be cut (more than twice the limit with no newline) is masked
up to ``partial``'s safe point: the rest, at least the longest secret's length, waits for more
text. A value that spans several lines is masked line by line, as GitHub Actions does.

Escape sequences (colours, titles, ...) are invisible in a terminal and in the viewer, so a
value interrupted by one (``SEC\\x1b[0mRET``) reads whole there, and ``/search`` matches it.
Matching therefore also runs on the text with escape sequences removed; what is replaced is
the original text from the value's first character to its last, escapes within included. A
value inside an escape sequence (a window title) is masked too.

Values may overlap (``abc`` and ``bcd`` in ``abcd``, or one value inside another): the union of
every occurrence of every value is replaced, each run of overlapping occurrences by a single
``***``, so no fragment of any secret is left. (Occurrences that only touch stay ``******``:
a line still arriving is then masked the same whichever read ends where.)

Not masked: values transformed in any way (base64, URL-encoding, split by a cursor move).
Secrets can be added while a job runs (``add``): every later line is masked with them.
"""

from __future__ import annotations

import bisect
import os
import re
from collections.abc import Iterable, Mapping

MASK = "***"
#: Characters of one run of overlapping secrets an unfinished line may hold back at most.
MAX_HELD_RUN = 1 << 20
#: What a terminal does not show: CSI (``ESC [ ... final``), OSC/DCS/SOS/PM/APC strings up to
#: BEL or ST (unterminated: to the end of the line, never beyond: ``apply`` matches on lines
#: joined by ``\n``), other two- or three-byte escapes, BEL.
ESCAPE = re.compile(
    r"\x1b(?:\[[0-?]*[ -/]*(?:[@-~]|$)|[\]PX^_](?:[^\x07\x1b\n]|\x1b(?!\\))*(?:\x07|\x1b\\|$)"
    r"|[ -/]*(?:[0-~]|$))"
    r"|\x07",
    re.MULTILINE,
)
#: An escape sequence at the end of text that more text could still complete.
_OPEN_ESCAPE = re.compile(
    r"\x1b(?:\[[0-?]*[ -/]*|[\]PX^_](?:[^\x07\x1b]|\x1b(?!\\))*\x1b?|[ -/]*)\Z"
)
_INVISIBLE = ("\x1b", "\x07")


class Masker:
    """Replaces secret values by ``***``; ``add`` takes more secrets at any time."""

    def __init__(self, values: Iterable[str] = ()) -> None:
        self._values: list[str] = []
        self.longest = 0
        for value in values:
            self.add(value)

    @classmethod
    def from_env(
        cls,
        names: Iterable[str],
        environ: Mapping[str, str] = os.environ,
        secrets: Iterable[str | None] = (),
    ) -> Masker:
        """Mask the values of the environment variables ``names`` (unset ones are skipped),
        and the ``secrets`` given as values (``None`` and empty ones skipped)."""
        values = [environ[name] for name in names if environ.get(name)]
        return cls([*values, *(secret for secret in secrets if secret)])

    def add(self, value: str) -> None:
        """Mask ``value`` too from now on (each of its lines, as a value spanning lines)."""
        parts = {part for part in value.split("\n") if part.strip()} - set(self._values)
        if parts:
            self._values = sorted({*self._values, *parts}, key=len, reverse=True)
            self.longest = len(self._values[0])

    def including(self, values: Iterable[str]) -> Masker:
        """A masker that also hides ``values`` (a token the command must never show)."""
        return Masker([*self._values, *values])

    def __bool__(self) -> bool:
        return bool(self._values)

    def mask(self, text: str) -> str:
        """``text`` (one line, a name or an argument) with every secret replaced by ``***``."""
        if not self._values:
            return text
        return self._settle(text, _replace(text, self._spans(text)))

    def _settle(self, before: str, masked: str) -> str:
        """``masked``, masked again while that changes it (a few times at most).

        A mask right after a dangling escape start (``ESC [`` then ``***``) can turn into an
        escape sequence itself and hide the text after it, joining what it kept apart.
        """
        for _ in range(3):
            if masked == before or "\x1b" not in masked:
                break
            before, masked = masked, _replace(masked, self._spans(masked))
        return masked

    def apply(self, lines: list[str]) -> list[str]:
        """The lines with every secret value replaced by ``***``."""
        if not self._values:
            return lines
        # One pass over the joined block finds out, in C, whether any line needs work.
        joined = "\n".join(lines)
        if not any(value in joined for value in self._values):
            if not any(mark in joined for mark in _INVISIBLE):
                return lines
            visible = ESCAPE.sub("", joined)
            if not any(value in visible for value in self._values):
                return lines
        return [self.mask(line) for line in lines]

    def partial(self, text: str) -> tuple[str, int]:
        """Mask the start of an unfinished line that no later text can change.

        Returns the masked start and where in ``text`` the unmasked rest begins: the rest
        holds the last ``longest - 1`` visible characters (the start of a secret whose end
        has not arrived), any escape sequence not finished yet, and any occurrence that
        reaches into them. The caller keeps the rest and feeds it again with what follows.
        """
        if not self._values:
            return text, len(text)
        starts, visible = _visible(text)
        keep_from = len(visible) - (self.longest - 1)
        cut = len(text) if keep_from >= len(visible) else _original(starts, max(0, keep_from))
        open_escape = _OPEN_ESCAPE.search(text)
        if open_escape is not None and open_escape.start() < cut:
            cut = open_escape.start()
        spans = self._spans(text)
        for start, end in spans:
            if start < cut < end:
                # An occurrence crossing the cut moves the cut to its start. Only a run of
                # overlapping occurrences longer than ``MAX_HELD_RUN`` (a secret like "aa" in
                # "aaaa...") is emitted whole, masked, so that memory stays bounded.
                cut = start if cut - start <= MAX_HELD_RUN else end
                break
        head = text[:cut]
        return self._settle(head, _replace(head, [s for s in spans if s[1] <= cut])), cut

    def _spans(self, text: str) -> list[tuple[int, int]]:
        """The merged ``[start, end)`` ranges of ``text`` that secrets cover.

        With escape sequences, occurrences are looked for both in the text as it reads and in
        the raw text: a secret inside an escape (a window title) is shown by a terminal's
        title bar, or by the viewer when the line limit cuts the escape in two.
        """
        found = _find(self._values, text)
        if any(mark in text for mark in _INVISIBLE):
            starts, visible = _visible(text)
            found += [
                (_original(starts, start), _original(starts, end - 1) + 1)
                for start, end in _find(self._values, visible)
            ]
        if not found:
            return []
        found.sort()
        merged = [found[0]]
        for start, end in found[1:]:
            if start < merged[-1][1]:
                merged[-1] = (merged[-1][0], max(merged[-1][1], end))
            else:
                merged.append((start, end))
        return merged


def _find(values: list[str], text: str) -> list[tuple[int, int]]:
    """Every occurrence of every value in ``text``, overlapping ones included."""
    found: list[tuple[int, int]] = []
    for value in values:
        at = text.find(value)
        while at >= 0:
            found.append((at, at + len(value)))
            at = text.find(value, at + 1)
    return found


def _visible(text: str) -> tuple[list[int], str]:
    """``text`` without escape sequences, and for each visible character its index in ``text``.

    The index list is run-length: ``starts[k]`` is where the k-th visible run begins, as pairs
    (visible offset, original offset) flattened for ``bisect``.
    """
    runs: list[tuple[int, int]] = []  # (visible offset, original offset) of each visible run
    pieces: list[str] = []
    at = visible_at = 0
    for escape in ESCAPE.finditer(text):
        if escape.start() > at:
            runs.append((visible_at, at))
            pieces.append(text[at : escape.start()])
            visible_at += escape.start() - at
        at = escape.end()
    if at < len(text) or not runs:
        runs.append((visible_at, at))
        pieces.append(text[at:])
    flat = [offset for run in runs for offset in run]
    return flat, "".join(pieces)


def _original(starts: list[int], visible_index: int) -> int:
    """The index in the original text of the visible character ``visible_index``."""
    if not starts:
        return visible_index
    run = bisect.bisect_right(starts[0::2], visible_index) - 1
    return starts[2 * run + 1] + visible_index - starts[2 * run]


def _replace(text: str, spans: list[tuple[int, int]]) -> str:
    if not spans:
        return text
    out: list[str] = []
    at = 0
    for start, end in spans:
        out.append(text[at:start])
        out.append(MASK)
        at = end
    out.append(text[at:])
    return "".join(out)
