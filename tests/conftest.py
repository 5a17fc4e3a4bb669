"""Shared fixtures: a real hypercorn server on 127.0.0.1, port 0, in the test's trio loop."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from logstream import api
from logstream.backends.datadir import DataDirBackend
from logstream.backends.protocol import JobWriter
from logstream.catalog import Catalog
from logstream.config import Settings
from logstream.joblog import LiveLog
from logstream.store import DataDir
from logstream.web import AppState


@pytest.fixture(autouse=True)
def _isolated_state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No test touches the user's real data directory."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.delenv("LOGSTREAM_DATA_DIR", raising=False)
    monkeypatch.delenv("LOGSTREAM_TOKEN", raising=False)
    monkeypatch.delenv("LOGSTREAM_MASK", raising=False)
    yield


@dataclass
class Server:
    url: str
    catalog: Catalog
    data_dir: DataDir
    state: AppState
    nursery: trio.Nursery
    app: Any
    writers: list[JobWriter] = field(default_factory=list)

    async def new_job(self, name: str = "job", ring_lines: int = 100_000) -> LiveLog:
        """A job run by 'this process': the test appends its lines like the runner would."""
        writer = await self.catalog.backend.create_job(name, [name])
        self.writers.append(writer)
        log = LiveLog(writer, ring_lines)
        self.catalog.add_live(log)
        await self.nursery.start(log.run_writer)
        return log

    def client(self, **kwargs: Any) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, timeout=httpx.Timeout(30.0), **kwargs)

    async def release_jobs(self) -> None:
        """Unfinished test jobs: their runner 'dies' (they read as interrupted)."""
        for writer in self.writers:
            await writer.release()


@asynccontextmanager
async def running_server(settings: Settings) -> AsyncIterator[Server]:
    """A server of its own for a test: the product's one assembly (``api.serve``), no grace
    for viewers at the end; test jobs' writers run in the test's nursery until cancelled."""
    async with trio.open_nursery() as nursery:
        async with api.serve(settings, end_wait_s=0, serve_tasks=False) as served:
            catalog = served.catalog
            backend = catalog.backend
            assert isinstance(backend, DataDirBackend)
            server = Server(served.url, catalog, backend.data, served.state, nursery, served.app)
            try:
                yield server
            finally:
                await server.release_jobs()
        # Job writers of unfinished test jobs run until cancelled.
        nursery.cancel_scope.cancel()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", port=0)


@pytest.fixture
async def server(settings: Settings) -> AsyncIterator[Server]:
    async with running_server(settings) as running:
        yield running


def with_settings(settings: Settings, **changes: Any) -> Settings:
    return replace(settings, **changes)
