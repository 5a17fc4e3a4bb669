"""Graceful shutdown of `logstream serve` (docs/operations.md), through a real process.

SIGTERM or Ctrl-C: the listening socket closes, every stream ends cleanly without an ``end``
event (so EventSource and `logstream tail` resume later), stuck clients are cut after a short
grace, and the process exits 0 within a few seconds.
"""

from __future__ import annotations

import signal
import socket
import sys
import time
from pathlib import Path

import httpx
import pytest
import trio

from logstream import sse
from logstream.job import Job
from logstream.ring import Block
from logstream.sse import SSEParser
from logstream.store import DataDir, LogWriter, write_job

from .processes import DEADLINE_S, start_logstream

PY = sys.executable


def finished_job(data_dir: Path, lines: int) -> str:
    store = DataDir(data_dir)
    job_id, path = store.new_job_dir()
    write_job(path, Job(id=job_id, name="big", command=["big"], status="succeeded", exit_code=0))
    writer = LogWriter(path)
    for first in range(1, lines + 1, 1000):
        texts = [f"{'x' * 100} {seq}" for seq in range(first, first + 1000)]
        writer.write([Block(first, first + 999, sse.encode_lines(first, texts), 0)])
    writer.close(sse.encode_end("succeeded", 0))
    write_job(
        path,
        Job(
            id=job_id,
            name="big",
            command=["big"],
            status="succeeded",
            exit_code=0,
            lines=lines,
        ),
    )
    return job_id


async def open_stuck_stream(port: int, job_id: str) -> trio.SocketStream:
    sock = trio.socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    await sock.connect(("127.0.0.1", port))
    stream = trio.SocketStream(sock)
    await stream.send_all(f"GET /api/jobs/{job_id}/events HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    with trio.fail_after(DEADLINE_S):
        assert (await stream.receive_some(4096)).startswith(b"HTTP/1.1 200")
    return stream


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
async def test_serve_ends_streams_cleanly_and_exits_promptly_even_with_stuck_clients(
    nursery: trio.Nursery, tmp_path: Path, signum: signal.Signals
) -> None:
    data_dir = tmp_path / "data"
    big = finished_job(data_dir, 100_000)
    go = tmp_path / "go"
    script = (
        "import os, time\n"
        "print('one', flush=True)\n"
        f"while not os.path.exists({str(go)!r}): time.sleep(0.01)\n"
        "print('two', flush=True)\n"
    )
    running = await start_logstream(
        nursery, "run", "--port", "0", "--data-dir", str(data_dir), "--", PY, "-c", script
    )
    job_id, _ = await running.wait_for_url()
    args = ["serve", "--port", "0", "--data-dir", str(data_dir), "--write-timeout", "600"]
    serving = await start_logstream(nursery, *args)
    base = await serving.wait_for_serving()
    port = int(base.rsplit(":", 1)[1])
    stuck = [await open_stuck_stream(port, big) for _ in range(3)]
    events: list[sse.Event] = []
    parser = SSEParser()
    stopped_at = 0.0
    with trio.fail_after(DEADLINE_S):
        async with (
            httpx.AsyncClient(timeout=DEADLINE_S) as client,
            client.stream("GET", f"{base}/api/jobs/{job_id}/events") as response,
        ):
            async for data in response.aiter_raw():
                events += parser.feed(data)
                if any(e.id == "1" for e in events) and not stopped_at:
                    stopped_at = time.monotonic()
                    serving.signal(signum)
        # The stream ended cleanly (no error above) and without an end event: resume later.
        assert [e.id for e in events if e.id] == ["1"]
        assert not any(e.event == "end" for e in events)
        assert await serving.wait_exit() == 0
    exited_s = time.monotonic() - stopped_at
    assert exited_s < 5, exited_s
    assert b"logstream: shutting down" in serving.stderr
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    for stream in stuck:
        await stream.aclose()
    # A new server on the same port: the client resumes where it was, nothing repeated.
    serving = await start_logstream(nursery, *args[:2], str(port), *args[3:])
    await serving.wait_for_serving()
    go.touch()
    resumed: list[sse.Event] = []
    parser = SSEParser()
    with trio.fail_after(DEADLINE_S):
        async with (
            httpx.AsyncClient(timeout=DEADLINE_S) as client,
            client.stream(
                "GET", f"{base}/api/jobs/{job_id}/events", headers={"Last-Event-ID": "1"}
            ) as response,
        ):
            async for data in response.aiter_raw():
                resumed += parser.feed(data)
    assert [(e.id, sse.line_text(e.data)) for e in resumed if e.id] == [("2", "two")]
    assert resumed[-1].event == "end"
    assert await running.wait_exit() == 0
    serving.signal(signal.SIGTERM)
    assert await serving.wait_exit() == 0
