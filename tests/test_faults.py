"""Fault injection: connections cut at random byte offsets, servers killed -9.

A loopback proxy forwards each connection to the server and cuts it after a random number of
response bytes, anywhere: inside headers, inside an event, between the chunks of one write.
Every client resumes with the ID of the last whole event it saw and must end with every line
exactly once.
"""

from __future__ import annotations

import random
import signal
import sys
from pathlib import Path

import trio

from logstream.config import Settings

from .conftest import running_server, with_settings
from .processes import start_logstream
from .sse_client import ResumingClient

DEADLINE_S = 60
PY = sys.executable


class CuttingProxy:
    """Forwards loopback connections to ``target``; cuts the first ``cuts_left`` of them."""

    def __init__(self, target: tuple[str, int], cuts: int, max_cut_bytes: int, seed: int) -> None:
        self.target = target
        self.cuts_left = cuts
        self.cuts = 0
        self.max_cut_bytes = max_cut_bytes
        self.rng = random.Random(seed)

    async def handle(self, client: trio.SocketStream) -> None:
        budget = None
        if self.cuts_left > 0:
            self.cuts_left -= 1
            budget = self.rng.randint(1, self.max_cut_bytes)
        try:
            upstream = await trio.open_tcp_stream(*self.target)
        except OSError:
            await client.aclose()  # the server is down: the client sees a reset connection
            return
        async with client, upstream, trio.open_nursery() as nursery:

            async def requests() -> None:
                try:
                    while data := await client.receive_some(65536):
                        await upstream.send_all(data)
                except trio.BrokenResourceError:
                    pass
                nursery.cancel_scope.cancel()

            async def responses() -> None:
                nonlocal budget
                try:
                    while data := await upstream.receive_some(65536):
                        if budget is not None and len(data) >= budget:
                            await client.send_all(data[:budget])
                            self.cuts += 1
                            break
                        if budget is not None:
                            budget -= len(data)
                        await client.send_all(data)
                except trio.BrokenResourceError:
                    pass
                nursery.cancel_scope.cancel()

            nursery.start_soon(requests)
            nursery.start_soon(responses)

    async def serve(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        task_status.started(listeners[0].socket.getsockname()[1])
        await trio.serve_listeners(self.handle, listeners)


async def test_a_thousand_cuts_lose_and_repeat_nothing(settings: Settings) -> None:
    total, clients = 200_000, 8
    async with running_server(with_settings(settings, ring_lines=5_000)) as server:
        log = await server.new_job()
        host, port = server.url.removeprefix("http://").split(":")
        # ~5.6 MB of events per client; cuts every 20 KB on average use up the 1,000 cuts
        # well before the clients are done.
        proxy = CuttingProxy((host, int(port)), cuts=1_000, max_cut_bytes=40_000, seed=6)
        with trio.fail_after(DEADLINE_S):
            async with trio.open_nursery() as nursery:
                proxy_port = await nursery.start(proxy.serve)
                url = f"http://127.0.0.1:{proxy_port}/api/jobs/{log.job.id}/events"
                followers = [ResumingClient(url) for _ in range(clients)]
                async with trio.open_nursery() as reading:
                    for follower in followers:
                        reading.start_soon(follower.run, 0.0)
                    for first in range(1, total + 1, 500):
                        log.append([f"line {seq}" for seq in range(first, first + 500)])
                        await trio.lowlevel.checkpoint()
                    log.finish("succeeded", 0)
                nursery.cancel_scope.cancel()
    assert proxy.cuts == 1_000
    for follower in followers:
        assert follower.ended
        assert follower.ids == list(range(1, total + 1))
    print(
        f"\n{proxy.cuts} cuts over {clients} clients, "
        f"{sum(f.connections for f in followers)} connections"
    )


async def test_kill_9_and_restart_of_serve_while_clients_follow_a_running_job(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    data_dir = str(tmp_path / "data")
    go = [tmp_path / "go1", tmp_path / "go2"]
    # The job writes in three parts; each part waits for the test to have restarted the server.
    script = (
        "import os, sys, time\n"
        "def part(first):\n"
        "    for start in range(first, first + 60000, 1000):\n"
        "        sys.stdout.write(''.join(f'line {n}\\n' for n in range(start, start + 1000)))\n"
        "        sys.stdout.flush()\n"
        "part(1)\n"
        f"for marker, first in (({str(go[0])!r}, 60001), ({str(go[1])!r}, 120001)):\n"
        "    while not os.path.exists(marker): time.sleep(0.01)\n"
        "    part(first)\n"
    )
    total = 180_000
    running = await start_logstream(
        nursery, "run", "--quiet", "--port", "0", "--data-dir", data_dir, "--", PY, "-c", script
    )
    job_id, _ = await running.wait_for_url()
    serving = await start_logstream(nursery, "serve", "--port", "0", "--data-dir", data_dir)
    base = await serving.wait_for_serving()
    port = base.rsplit(":", 1)[1]
    followers = [ResumingClient(f"{base}/api/jobs/{job_id}/events") for _ in range(4)]
    with trio.fail_after(DEADLINE_S):
        async with trio.open_nursery() as reading:
            for follower in followers:
                reading.start_soon(follower.run)
            for marker, seen in zip(go, (30_000, 90_000), strict=True):
                for follower in followers:
                    await follower.wait_for_lines(seen)
                serving.signal(signal.SIGKILL)
                assert await serving.wait_exit() == -signal.SIGKILL
                serving = await start_logstream(
                    nursery, "serve", "--port", port, "--data-dir", data_dir
                )
                await serving.wait_for_serving()
                marker.touch()
        assert await running.wait_exit() == 0
    for follower in followers:
        assert follower.ended
        assert follower.ids == list(range(1, total + 1))
        assert follower.connections >= 3
    serving.signal(signal.SIGTERM)
    assert await serving.wait_exit() == 0
