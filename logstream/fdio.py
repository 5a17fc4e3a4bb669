"""Whole writes to a file descriptor (pure: ``os`` only)."""

from __future__ import annotations

import os


def write_all(fd: int, data: bytes | bytearray) -> None:
    """Write all of ``data``, however many ``write`` calls it takes."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
