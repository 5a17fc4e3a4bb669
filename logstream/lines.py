"""Incremental bytes -> lines (pure: no I/O, no async).

Theory of operation:

- A line is the bytes up to ``\\n``; a ``\\r\\n`` ending loses its ``\\r``; a lone ``\\r`` stays
  in the text (progress-bar redraws). ``str.splitlines`` is never used: it also splits on
  ``\\x0b \\x0c \\x1c-\\x1e \\x85 \\u2028 \\u2029``.
- Bytes are decoded as UTF-8 with invalid bytes replaced by U+FFFD. ``\\n`` is ASCII and never part
  of a multi-byte sequence, so everything up to the last ``\\n`` of a chunk decodes in one call and
  splits with one ``str.split``; only the unfinished tail is carried to the next chunk.
- The unfinished tail is kept as a list of byte chunks and joined once, when its ``\\n`` arrives
  (``partial + chunk`` would be quadratic on a long line).
- A line whose UTF-8 encoding is longer than ``limit`` bytes is cut greedily, at character
  boundaries, into pieces of at most ``limit`` bytes; nothing is dropped. An unfinished line
  longer than ``2 * limit`` bytes is cut as it arrives, so memory stays bounded by the limit
  whatever the command writes; the pieces are the same as if the whole line had arrived at once.
- With a ``Masker``, secrets are masked before a line is cut, so a secret that straddles a cut
  is still masked; an unfinished line keeps its last characters back (``Masker.partial``) until
  the text that may complete a secret arrives.
"""

from __future__ import annotations

from logstream.mask import Masker

DEFAULT_LINE_LIMIT = 65536

_MIN_LIMIT = 4  # one character of up to four UTF-8 bytes must always fit


def _is_continuation(byte: int) -> bool:
    return 0x80 <= byte <= 0xBF


def split_long(text: str, limit: int) -> list[str]:
    """Cut ``text`` into pieces of at most ``limit`` UTF-8 bytes, at character boundaries."""
    if len(text) * 4 <= limit:
        return [text]
    encoded = text.encode()
    if len(encoded) <= limit:
        return [text]
    pieces, start = _cut(encoded, limit)
    pieces.append(encoded[start:].decode())
    return pieces


def _cut(encoded: bytes, limit: int) -> tuple[list[str], int]:
    """Greedy pieces of valid UTF-8 ``encoded``; returns them and where the rest starts.

    A piece is cut only while more than ``limit`` bytes remain, so the rest is never empty: it is
    the last piece, or the start of one that later bytes of an unfinished line extend.
    """
    pieces: list[str] = []
    start, size = 0, len(encoded)
    while size - start > limit:
        end = start + limit
        while _is_continuation(encoded[end]):
            end -= 1
        pieces.append(encoded[start:end].decode())
        start = end
    return pieces, start


class LineSplitter:
    """Turns the chunks of one byte stream into complete lines.

    ``feed`` returns the lines completed by a chunk; ``flush`` returns the unfinished last line,
    if any, at the end of the stream.
    """

    def __init__(self, limit: int = DEFAULT_LINE_LIMIT, masker: Masker | None = None) -> None:
        if limit < _MIN_LIMIT:
            raise ValueError(f"line limit must be at least {_MIN_LIMIT} bytes")
        self.limit = limit
        #: Shared with whoever adds secrets while the job runs.
        self.masker = masker if masker is not None else Masker()
        self._pending: list[bytes | bytearray] = []
        self._pending_bytes = 0

    def feed(self, data: bytes | bytearray) -> list[str]:
        last_newline = data.rfind(b"\n")
        if last_newline < 0:
            if data:
                self._pending.append(data)
                self._pending_bytes += len(data)
                if self._pending_bytes > 2 * self.limit:
                    return self._cut_pending()
            return []
        end = last_newline + 1
        head = data if end == len(data) else data[:end]
        if self._pending:
            self._pending.append(head)
            head = b"".join(self._pending)
        rest = data[end:]
        self._pending = [rest] if rest else []
        self._pending_bytes = len(rest)
        lines = self._split(head)
        if self._pending_bytes > 2 * self.limit:
            lines.extend(self._cut_pending())
        return lines

    def flush(self) -> list[str]:
        if not self._pending:
            return []
        text = b"".join(self._pending).decode("utf-8", "replace")
        self._pending = []
        self._pending_bytes = 0
        return self._remask(split_long(self.masker.mask(text), self.limit))

    def _split(self, head: bytes | bytearray) -> list[str]:
        text = head.decode("utf-8", "replace")
        if "\r" in text:
            text = text.replace("\r\n", "\n")
        lines = text.split("\n")
        lines.pop()  # the empty string after the final "\n"
        lines = self.masker.apply(lines)
        # A replacement character takes three bytes for one invalid input byte; a mask
        # (``***``) is at most three characters longer than the secret it replaces.
        if (len(head) * 3 > self.limit or self.masker) and max(map(len, lines)) * 4 > self.limit:
            return [piece for line in lines for piece in self._remask(split_long(line, self.limit))]
        return lines

    def _remask(self, pieces: list[str]) -> list[str]:
        """Mask the pieces of a cut line again where the cut fell into an escape sequence.

        Each piece is shown as a line of its own: half an escape sequence (the start of a
        window title, a colour's final letter) can then make text read differently than in
        the whole line, and join a secret's characters the whole line kept apart.
        """
        if not self.masker or len(pieces) < 2:
            return pieces
        return [
            self.masker.mask(piece) if "\x1b" in piece or "\x07" in piece else piece
            for piece in pieces
        ]

    def _cut_pending(self) -> list[str]:
        """Emit the full pieces of a long unfinished line, keep the rest pending."""
        buffer = b"".join(self._pending)
        # Keep the last three bytes: they may start a UTF-8 sequence or be the "\r" of a "\r\n".
        cut = len(buffer) - 3
        for candidate in range(cut, cut - 4, -1):
            if not _is_continuation(buffer[candidate]):
                cut = candidate
                break
        # A valid sequence never spans a byte that is not a continuation byte, so the prefix
        # decodes exactly as it would as part of the whole line.
        text = buffer[:cut].decode("utf-8", "replace")
        masked, held = self.masker.partial(text)
        encoded = masked.encode()
        pieces, start = _cut(encoded, self.limit)
        pieces = self._remask(pieces)
        rest = encoded[start:] + text[held:].encode() + buffer[cut:]
        self._pending = [rest]
        self._pending_bytes = len(rest)
        return pieces
