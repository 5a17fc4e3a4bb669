"""Where jobs live: the ``Backend`` protocol and its implementations.

``open_backend`` is the one place that picks an implementation from the settings; nothing
else knows which one it has. See ``protocol`` for the seam and docs/architecture.md for how a
new backend fits.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from logstream.backends.datadir import DataDirBackend
from logstream.backends.protocol import Backend, Cursor, Job, JobLog, JobWriter, Position, Read
from logstream.config import Settings

__all__ = [
    "Backend",
    "Cursor",
    "DataDirBackend",
    "Job",
    "JobLog",
    "JobWriter",
    "Position",
    "Read",
    "open_backend",
]


@asynccontextmanager
async def open_backend(settings: Settings) -> AsyncIterator[Backend]:
    """The backend the settings name, ready to use, for the life of the ``async with`` block.

    A backend with background work (connections, leases, watchers) runs it inside this block.
    Raises ``StorageError`` when it cannot be used.
    """
    backend = DataDirBackend(settings.data_dir)
    backend.check()
    yield backend
