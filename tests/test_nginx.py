"""The nginx configuration of docs/ci.md, run for real with Debian's nginx in front of `serve`.

The test takes the ```nginx block from docs/ci.md as it is, swaps its TLS lines for a plain
loopback `listen`, points it at a server started here, and shortens `proxy_read_timeout` to a
few seconds, below an idle period of the job, with the server's keep-alive comments every second:
a stream that nginx buffered or cut while idle would fail the test. nginx runs as its own
instance (config, pid, logs and temp files in a temp dir), never as the system's service.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import trio

from logstream import api, sse
from logstream.config import Settings

from .nginx import documented_block, free_port, needs_nginx, replace_all, running_nginx, without_tls
from .processes import start_runner
from .sse_client import ResumingClient

DEADLINE_S = 60
READ_TIMEOUT_S = 3

pytestmark = needs_nginx


def documented_config(upstream_port: int, listen_port: int) -> str:
    block = replace_all(
        documented_block("ci.md"),
        {
            "server 127.0.0.1:8765;": f"server 127.0.0.1:{upstream_port};",
            "proxy_read_timeout 1h;": f"proxy_read_timeout {READ_TIMEOUT_S}s;",
        },
    )
    return without_tls(block, listen_port)


async def test_the_documented_nginx_config_passes_streams_and_uploads_unbuffered_and_uncut(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    settings = Settings(data_dir=tmp_path / "server", port=0, keepalive_s=1.0)
    async with api.serve(settings, end_wait_s=0) as server:
        upstream_port = int(server.url.rsplit(":", 1)[1])
        listen_port = free_port()
        config = documented_config(upstream_port, listen_port)
        async with running_nginx(tmp_path / "nginx", config, listen_port) as base:
            await through_nginx(nursery, tmp_path, base)


async def through_nginx(nursery: trio.Nursery, tmp_path: Path, base: str) -> None:
    go = tmp_path / "go"
    script = (
        "import os, sys, time\n"
        "for n in range(1, 1001): print('line', n)\n"
        "sys.stdout.flush()\n"
        f"while not os.path.exists({str(go)!r}): time.sleep(0.01)\n"
        "for n in range(1001, 2001): print('line', n)\n"
    )
    running, job_id = await start_runner(nursery, base, tmp_path / "runner", script, "--quiet")
    viewer = ResumingClient(f"{base}/api/jobs/{job_id}/events")
    with trio.fail_after(DEADLINE_S):
        async with trio.open_nursery() as reading:
            reading.start_soon(viewer.run)
            # Through nginx while the job still runs (and waits): nothing is held in a buffer.
            await viewer.wait_for_lines(1000)
            assert not go.exists()
            # (Earlier connections may have come before the runner created the job: 404.)
            connections = viewer.connections
            # The period under test: idle for longer than nginx's proxy_read_timeout.
            await trio.sleep(READ_TIMEOUT_S + 1.5)
            go.touch()
            assert await running.wait_exit() == 0
    assert viewer.ended
    assert viewer.ids == list(range(1, 2001))
    assert viewer.connections == connections, "the idle stream was cut"
    # Resuming through nginx gives exactly the rest.
    parser = sse.SSEParser()
    events: list[sse.Event] = []
    async with (
        httpx.AsyncClient(timeout=DEADLINE_S) as client,
        client.stream(
            "GET", f"{base}/api/jobs/{job_id}/events", headers={"Last-Event-ID": "1500"}
        ) as response,
    ):
        assert response.status_code == 200
        async for data in response.aiter_raw():
            events += parser.feed(data)
    assert [int(e.id) for e in events if e.id is not None] == list(range(1501, 2001))
    assert events[-1].event == "end"
