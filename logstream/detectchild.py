"""The detector process's own side: ``child_main(FD)`` (see ``detectproc``, which starts it).

It reads requests on stdin, detects with one ``problems.Detector`` per job, reads each block's
text from the memory shared with its parent (the file descriptor ``FD``), and answers each
batch of requests it read in one write to stdout. It needs no trio: it starts fast and does
nothing else. It ends when stdin closes (its parent ended or died).

Frames, both ways: a 4-byte big-endian length and a pickle (the peer is our own process).
"""

from __future__ import annotations

import mmap
import os
import pickle
import struct
import sys
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from logstream.problemlog import Found, Row

MATCHER_FILE_MAX_BYTES = 1 << 20
_HEADER = struct.Struct(">I")
#: The child's first answer: it has started and compiled its rules (job keys start at 1).
READY: tuple[int, int, list[Row], list[bytes], bool, bool] = (0, 0, [], [], False, False)


def frame(message: object) -> bytes:
    body = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return _HEADER.pack(len(body)) + body


def unframe(buffer: bytearray) -> Iterator[Any]:
    """The whole messages at the start of ``buffer``, removed from it as they are read."""
    offset = 0
    try:
        while len(buffer) - offset >= _HEADER.size:
            (size,) = _HEADER.unpack_from(buffer, offset)
            end = offset + _HEADER.size + size
            if len(buffer) < end:
                break
            yield pickle.loads(memoryview(buffer)[offset + _HEADER.size : end])
            offset = end
    finally:
        del buffer[:offset]


def matcher_file_reader(cwd: Path) -> Callable[[str], str]:
    """Reads the file an ``::add-matcher::PATH`` line names, relative to the job's folder.

    Blocking: matcher files are small (at most 1 MiB) and rare.
    """

    def read(path: str) -> str:
        with open(cwd / path, "rb") as file:
            data = file.read(MATCHER_FILE_MAX_BYTES + 1)
        if len(data) > MATCHER_FILE_MAX_BYTES:
            raise OSError(0, f"larger than {MATCHER_FILE_MAX_BYTES} bytes")
        return data.decode()

    return read


class _Jobs:
    """The child's side: one ``Detector`` per open job."""

    def __init__(self, shared: mmap.mmap | None) -> None:
        from logstream.problems import Detector, best_scanner

        self._shared = shared
        best_scanner()  # compiled once, before the first job
        self._new = Detector
        self._detectors: dict[int, Any] = {}

    def handle(self, message: tuple[Any, ...]) -> tuple[Any, ...] | None:
        kind, key = message[0], message[1]
        if kind == "open":
            matchers, cwd = message[2], message[3]
            read_file = matcher_file_reader(Path(cwd)) if cwd is not None else None
            self._detectors[key] = self._new(matchers, read_file=read_file)
            return None
        detector = self._detectors.get(key)
        if kind == "skip":
            if detector is not None:
                stderr, count, last_text, last_seq = message[2:]
                detector.skip(count, last_text, last_seq, stderr=stderr)
            return None
        found: list[Any] = []
        last = kind == "end"
        through = -1 if last else message[5]
        try:
            if not last:
                first, stderr, text = message[2:5]
                if isinstance(text, tuple):  # where it is in the shared memory
                    assert self._shared is not None  # (only then do regions come)
                    start, end = text
                    text = self._shared[start:end].decode("utf-8", "surrogatepass")
                if detector is not None:
                    found = detector.feed(first, text.split("\n"), stderr=stderr, joined=text)
            else:
                if detector is not None and message[2]:
                    found = detector.flush()
                self._detectors.pop(key, None)
        except Exception:  # a bug in a rule must not stop the job's lines: say it, go on
            traceback.print_exc()
            found = []
        items = [Found(problem, problem.found_at or through) for problem in found]
        needs_every_line = detector is not None and not last and detector.needs_every_line
        return (
            key,
            through,
            [item.to_row() for item in items],
            [item.to_record() for item in items],
            last,
            needs_every_line,
        )


def child_main(shared_fd: int) -> None:
    """Answer requests on stdin until it closes (the serving process ended or died)."""
    shared = mmap.mmap(shared_fd, 0, prot=mmap.PROT_READ) if shared_fd >= 0 else None
    jobs = _Jobs(shared)
    buffer = bytearray()
    os.write(1, frame(READY))
    while True:
        data = os.read(0, 1 << 20)
        if not data:
            return
        buffer += data
        answers = [jobs.handle(message) for message in unframe(buffer)]
        out = b"".join(frame(answer) for answer in answers if answer is not None)
        view = memoryview(out)
        while view:
            view = view[os.write(1, view) :]


if __name__ == "__main__":
    child_main(int(sys.argv[1]))
