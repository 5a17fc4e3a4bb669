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

import httpx
import trio

from logstream.config import Settings

from .conftest import running_server, with_settings
from .processes import start_logstream, start_runner
from .sse_client import ResumingClient

DEADLINE_S = 60
PY = sys.executable


class CuttingProxy:
    """Forwards loopback connections to ``target``; cuts the first ``cuts_left`` of them.

    A connection is cut after a random number of response bytes, or, ``both_ways``, of bytes
    in either direction (so uploads are cut mid-request too).
    """

    def __init__(
        self,
        target: tuple[str, int],
        cuts: int,
        max_cut_bytes: int,
        seed: int,
        *,
        both_ways: bool = False,
    ) -> None:
        self.target = target
        self.cuts_left = cuts
        self.planned = cuts
        self.cuts = 0
        self.max_cut_bytes = max_cut_bytes
        self.rng = random.Random(seed)
        self.both_ways = both_ways
        #: Set once every planned cut has happened.
        self.all_cut = trio.Event()

    async def handle(self, client: trio.SocketStream) -> None:
        planned = self.cuts_left > 0
        if planned:
            self.cuts_left -= 1
        cuts_before = self.cuts
        try:
            await self._forward(
                client, self.rng.randint(1, self.max_cut_bytes) if planned else None
            )
        finally:
            if planned and self.cuts == cuts_before:
                self.cuts_left += 1  # closed before its cut: another connection gets it

    async def _forward(self, client: trio.SocketStream, budget: int | None) -> None:
        try:
            upstream = await trio.open_tcp_stream(*self.target)
        except OSError:
            await client.aclose()  # the server is down: the client sees a reset connection
            return
        async with client, upstream, trio.open_nursery() as nursery:

            async def requests() -> None:
                nonlocal budget
                try:
                    while data := await client.receive_some(65536):
                        if self.both_ways and budget is not None:
                            if len(data) >= budget:
                                await upstream.send_all(data[:budget])
                                self._cut()
                                break
                            budget -= len(data)
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
                            self._cut()
                            break
                        if budget is not None:
                            budget -= len(data)
                        await client.send_all(data)
                except trio.BrokenResourceError:
                    pass
                nursery.cancel_scope.cancel()

            nursery.start_soon(requests)
            nursery.start_soon(responses)

    def _cut(self) -> None:
        self.cuts += 1
        if self.cuts_left == 0 and self.cuts == self.planned:
            self.all_cut.set()

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


async def test_200_cuts_of_a_runners_uploads_store_and_show_every_line_once(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    """A real runner uploads a 200,000-line job through a proxy that cuts its connections
    mid-request and mid-answer; a viewer follows through another cutting proxy."""
    total = 200_000
    serving = await start_logstream(
        nursery, "serve", "--port", "0", "--data-dir", str(tmp_path / "server")
    )
    base = await serving.wait_for_serving()
    host, port = base.removeprefix("http://").split(":")
    uploads = CuttingProxy(
        (host, int(port)), cuts=200, max_cut_bytes=30_000, seed=11, both_ways=True
    )
    views = CuttingProxy((host, int(port)), cuts=200, max_cut_bytes=200_000, seed=12)
    go = tmp_path / "go"
    # The job writes steadily, so that it is still running while the cuts happen, and waits at
    # the end until they all have.
    script = (
        "import os, sys, time\n"
        f"for start in range(1, {total} + 1, 250):\n"
        "    lines = range(start, start + 250)\n"
        "    sys.stdout.write(''.join(f'line {n} of the job\\n' for n in lines))\n"
        "    sys.stdout.flush()\n"
        "    time.sleep(0.002)\n"
        f"while not os.path.exists({str(go)!r}): time.sleep(0.01)\n"
    )
    with trio.fail_after(DEADLINE_S * 2):
        async with trio.open_nursery() as proxies:
            upload_port = await proxies.start(uploads.serve)
            view_port = await proxies.start(views.serve)
            running, job_id = await start_runner(
                nursery,
                f"http://127.0.0.1:{upload_port}",
                tmp_path / "runner",
                script,
                "--quiet",
            )
            follower = ResumingClient(f"http://127.0.0.1:{view_port}/api/jobs/{job_id}/events")
            async with trio.open_nursery() as reading:
                reading.start_soon(follower.run)
                await uploads.all_cut.wait()
                go.touch()
                assert await running.wait_exit() == 0
            proxies.cancel_scope.cancel()
    assert uploads.cuts == 200
    assert follower.ended
    assert follower.ids == list(range(1, total + 1))
    async with httpx.AsyncClient(timeout=DEADLINE_S) as client:
        job = (await client.get(f"{base}/api/jobs/{job_id}")).json()
        assert (job["status"], job["lines"]) == ("succeeded", total)
        log = (await client.get(f"{base}/api/jobs/{job_id}/log")).content
    assert log == b"".join(b"line %d of the job\n" % n for n in range(1, total + 1))
    notices = bytes(running.stderr).count(b"logstream: ")
    assert notices <= 5, bytes(running.stderr)
    print(f"\n{uploads.cuts} upload cuts, {views.cuts} viewer cuts, {follower.connections} views")
