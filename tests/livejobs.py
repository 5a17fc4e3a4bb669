"""Helpers for tests of jobs a real server runs: read events, run the CLI, find processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import trio

from logstream.sse import Event, SSEParser

DEADLINE_S = 60
ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Events:
    events: list[Event]

    @property
    def lines(self) -> list[tuple[str, str]]:
        """``(event, text)`` of every line event."""
        return [(e.event, e.data) for e in self.events if e.id is not None]

    @property
    def end(self) -> dict[str, object] | None:
        ends = [e for e in self.events if e.event == "end"]
        return json.loads(ends[-1].data) if ends else None


async def read_events(
    base_url: str,
    job_id: str,
    *,
    token: str | None = None,
    until: Callable[[list[Event]], bool] | None = None,
) -> Events:
    """The job's events from the start, until the end event (or until ``until`` holds)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    parser = SSEParser()
    events: list[Event] = []
    async with (
        httpx.AsyncClient(base_url=base_url, timeout=httpx.Timeout(30.0), headers=headers) as c,
        c.stream("GET", f"/api/jobs/{job_id}/events") as response,
    ):
        assert response.status_code == 200, response.status_code
        async for data in response.aiter_raw():
            events += parser.feed(data)
            if until is not None and until(events):
                break
    return Events(events)


def has_lines(count: int) -> Callable[[list[Event]], bool]:
    return lambda events: sum(e.id is not None for e in events) >= count


def cli_env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("LOGSTREAM_TOKEN", None)
    return {**env, **extra}


def cli(*args: str) -> list[str]:
    """The command line running ``logstream ARGS`` from this checkout."""
    return [sys.executable, "-m", "logstream.cli", *args]


async def run_cli(
    *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[bytes]:
    """Run ``logstream ARGS`` to its end; stdout and stderr captured."""
    with trio.fail_after(DEADLINE_S):
        return await trio.run_process(
            cli(*args), capture_stdout=True, capture_stderr=True, check=False, env=env or cli_env()
        )
