"""Shared fixtures: a real hypercorn server on 127.0.0.1, port 0, in the test's trio loop."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from logstream.catalog import Catalog
from logstream.config import Settings
from logstream.joblog import LiveLog
from logstream.server import serve_http
from logstream.store import DataDir, Job, hold_run_lock
from logstream.web import AppState, create_app


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
    lock_fds: list[int] = field(default_factory=list)

    async def new_job(self, name: str = "job", ring_lines: int = 100_000) -> LiveLog:
        """A job run by 'this process': the test appends its lines like the runner would."""
        job_id, path = self.data_dir.new_job_dir()
        self.lock_fds.append(hold_run_lock(path))
        log = LiveLog(path, Job(id=job_id, name=name, command=[name]), ring_lines)
        self.catalog.add_live(log)
        await self.nursery.start(log.run_writer)
        return log

    def client(self, **kwargs: Any) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, timeout=httpx.Timeout(30.0), **kwargs)


async def start_server(nursery: trio.Nursery, settings: Settings) -> tuple[Server, trio.Event]:
    data_dir = DataDir(settings.data_dir)
    data_dir.create()
    catalog = Catalog(data_dir)
    app = create_app(catalog, settings)
    stop = trio.Event()
    host, port = await nursery.start(serve_http, app, settings, stop)
    server = Server(
        f"http://{host}:{port}", catalog, data_dir, app.extensions["logstream"], nursery, app
    )
    return server, stop


@asynccontextmanager
async def running_server(settings: Settings) -> AsyncIterator[Server]:
    """A server of its own for a test that needs special settings; stopped on exit."""
    async with trio.open_nursery() as nursery:
        server, stop = await start_server(nursery, settings)
        try:
            yield server
        finally:
            server.state.shut_down()
            stop.set()
            for fd in server.lock_fds:
                os.close(fd)
            # Job writers of unfinished test jobs run until cancelled.
            nursery.cancel_scope.cancel()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", port=0)


@pytest.fixture
async def server(nursery: trio.Nursery, settings: Settings) -> AsyncIterator[Server]:
    running, stop = await start_server(nursery, settings)
    yield running
    running.state.shut_down()
    stop.set()
    for fd in running.lock_fds:
        os.close(fd)


def with_settings(settings: Settings, **changes: Any) -> Settings:
    return replace(settings, **changes)
