"""The one place that picks a backend from the settings."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from logstream.backends.datadir import DataDirBackend
from logstream.backends.protocol import Backend
from logstream.config import Settings


@asynccontextmanager
async def open_backend(settings: Settings) -> AsyncIterator[Backend]:
    """The backend the settings name, ready to use, for the life of the ``async with`` block.

    A backend with background work (connections, leases, watchers) runs it inside this block.
    Raises ``StorageError`` when it cannot be used.
    """
    if settings.redis_url:
        # Imported here: only a node that uses Redis loads its client.
        from logstream.backends.redis import RedisBackend

        async with RedisBackend.open(
            settings.redis_url, ring_lines=settings.ring_lines, lease_s=settings.lease_s
        ) as redis:
            yield redis
        return
    backend = DataDirBackend(settings.data_dir)
    backend.check()
    yield backend
