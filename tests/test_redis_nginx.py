"""docs/scaling.md's nginx in front of three real `serve --redis` nodes, nodes killed by -9.

The test takes the ```nginx block of docs/scaling.md as it is, with the node addresses swapped
for the nodes started here and its TLS lines for a plain loopback `listen` (``tests/nginx.py``).
Jobs come from a real `logstream run --server` uploading through nginx; viewers are resuming
clients reading through nginx, as a browser's EventSource or `logstream tail` does. How the test
knows which node to kill is what an operator would look at: each node's `/metrics`
(`logstream_streams_open`) for a viewer, the job's lease in Redis for a runner.
"""

from __future__ import annotations

import re
import signal
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import trio

from logstream import redisformat
from tests.nginx import (
    documented_block,
    free_port,
    needs_nginx,
    replace_all,
    running_nginx,
    without_tls,
)
from tests.processes import Logstream, start_runner
from tests.redis_server import RedisServer, redis_server
from tests.sse_client import ResumingClient
from tests.test_redis_nodes import start_node

__all__ = ["redis_server"]

pytestmark = needs_nginx

DEADLINE_S = 60
LEASE_S = 1.0
DOCUMENTED_NODES = ("10.0.0.11:8765", "10.0.0.12:8765", "10.0.0.13:8765")
STREAMS_OPEN = re.compile(r"^logstream_streams_open (\d+)$", re.MULTILINE)


def documented_config(node_urls: list[str], listen_port: int) -> str:
    nodes = {
        documented: url.removeprefix("http://")
        for documented, url in zip(DOCUMENTED_NODES, node_urls, strict=True)
    }
    return without_tls(replace_all(documented_block("scaling.md"), nodes), listen_port)


def gated_script(tmp_path: Path) -> tuple[str, Path, Path]:
    """A job printing lines 1-1000, then (after ``go``) 1001-2000 at a few per millisecond,
    then (after ``finish``) 2001-2100: it is mid-job, with uploads flowing, as long as we like."""
    go, finish = tmp_path / "go", tmp_path / "finish"
    script = (
        "import os, sys, time\n"
        "def wait(path):\n"
        "    while not os.path.exists(path): time.sleep(0.01)\n"
        "for n in range(1, 1001): print('line', n)\n"
        "sys.stdout.flush()\n"
        f"wait({str(go)!r})\n"
        "for n in range(1001, 2001):\n"
        "    print('line', n, flush=True)\n"
        "    if n % 4 == 0: time.sleep(0.001)\n"
        f"wait({str(finish)!r})\n"
        "for n in range(2001, 2101): print('line', n)\n"
    )
    return script, go, finish


async def start_cluster(
    nursery: trio.Nursery, redis: RedisServer
) -> tuple[list[tuple[Logstream, str]], list[str]]:
    nodes = [await start_node(nursery, redis, lease_s=LEASE_S) for _ in DOCUMENTED_NODES]
    return nodes, [url for _node, url in nodes]


async def streams_open(url: str) -> int:
    async with httpx.AsyncClient(timeout=10) as client:
        metrics = (await client.get(f"{url}/metrics")).text
    match = STREAMS_OPEN.search(metrics)
    assert match is not None, metrics
    return int(match[1])


async def node_serving_the_stream(urls: list[str]) -> int:
    """The index of the one node with an open event stream (only our viewer opens one)."""
    with trio.fail_after(DEADLINE_S):
        while True:
            counts = [await streams_open(url) for url in urls]
            if sorted(counts) == [0] * (len(urls) - 1) + [1]:
                return counts.index(1)
            await trio.sleep(0.05)  # polled: nothing tells the test when a node accepted it


async def lease_holder_pid(redis: RedisServer, job_id: str) -> int | None:
    return await trio.to_thread.run_sync(read_lease_holder_pid, redis, job_id)


def read_lease_holder_pid(redis: RedisServer, job_id: str) -> int | None:
    """The process ID in the job's lease (``host:pid:nonce``), or None while nobody holds it."""
    key = redisformat.lease_key(job_id).encode()
    with socket.socket(socket.AF_UNIX) as client:
        client.settimeout(10)
        client.connect(str(redis.socket))
        client.sendall(b"*2\r\n$3\r\nGET\r\n$%d\r\n%s\r\n" % (len(key), key))
        reply = b""
        while not reply.startswith(b"$-1\r\n") and reply.count(b"\r\n") < 2:
            reply += client.recv(4096)
    if reply.startswith(b"$-1"):
        return None
    holder = reply.split(b"\r\n")[1].decode()
    return int(holder.split(":")[-2])


@dataclass
class JobThroughNginx:
    """Three nodes behind the documented nginx, a runner uploading through it, and a viewer
    reading through it that has the job's first 1,000 lines."""

    nodes: list[tuple[Logstream, str]]
    urls: list[str]
    running: Logstream
    job_id: str
    viewer: ResumingClient
    go: Path
    finish: Path


@asynccontextmanager
async def job_through_nginx(
    nursery: trio.Nursery, tmp_path: Path, redis: RedisServer
) -> AsyncIterator[JobThroughNginx]:
    nodes, urls = await start_cluster(nursery, redis)
    listen_port = free_port()
    config = documented_config(urls, listen_port)
    script, go, finish = gated_script(tmp_path)
    async with running_nginx(tmp_path / "nginx", config, listen_port) as base:
        running, job_id = await start_runner(nursery, base, tmp_path / "runner", script, "--quiet")
        viewer = ResumingClient(f"{base}/api/jobs/{job_id}/events")
        with trio.fail_after(DEADLINE_S):
            async with trio.open_nursery() as reading:
                reading.start_soon(viewer.run)
                await viewer.wait_for_lines(1000)
                yield JobThroughNginx(nodes, urls, running, job_id, viewer, go, finish)


async def test_a_viewer_whose_node_is_killed_is_resumed_by_nginx_on_another_node(
    nursery: trio.Nursery, tmp_path: Path, redis_server: RedisServer
) -> None:
    async with job_through_nginx(nursery, tmp_path, redis_server) as job:
        victim = await node_serving_the_stream(job.urls)
        connections = job.viewer.connections
        job.nodes[victim][0].signal(signal.SIGKILL)
        # The cut stream is resumed through nginx, on a node that is still there.
        survivors = [url for index, url in enumerate(job.urls) if index != victim]
        await node_serving_the_stream(survivors)
        assert job.viewer.connections > connections
        job.go.touch()
        await job.viewer.wait_for_lines(2000)
        job.finish.touch()
        assert await job.running.wait_exit() == 0
    assert job.viewer.ended
    assert job.viewer.ids == list(range(1, 2101))


async def test_a_runner_whose_node_is_killed_uploads_through_another_node_and_loses_nothing(
    nursery: trio.Nursery, tmp_path: Path, redis_server: RedisServer
) -> None:
    async with job_through_nginx(nursery, tmp_path, redis_server) as job:
        job_id, running, viewer, urls = job.job_id, job.running, job.viewer, job.urls
        # The node nginx sends this job's uploads to holds the job's lease.
        pids = [node.pid for node, _url in job.nodes]
        holder = await lease_holder_pid(redis_server, job_id)
        assert holder is not None
        writer = pids.index(holder)
        job.go.touch()
        await viewer.wait_for_lines(1200)  # uploads are flowing: kill mid-stream
        job.nodes[writer][0].signal(signal.SIGKILL)
        # Another node takes the job over once the dead node's lease has expired.
        while await lease_holder_pid(redis_server, job_id) in (None, pids[writer]):  # noqa: ASYNC110
            await trio.sleep(0.05)  # polled: Redis tells nobody
        job.finish.touch()
        assert await running.wait_exit() == 0  # the command's status, unaffected
    # The runner saw trouble (its node gone, then 503 until the lease expired) and went on.
    assert b"uploading again" in running.stderr, running.stderr
    assert b"not uploaded" not in running.stderr
    assert viewer.ended
    assert viewer.ids == list(range(1, 2101))
    # Every node still there has the whole job, each line once, and its end.
    for index, url in enumerate(urls):
        if index == writer:
            continue
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            job = (await client.get(f"/api/jobs/{job_id}")).json()
        assert (job["status"], job["exit_code"], job["lines"]) == ("succeeded", 0, 2100)
        again = ResumingClient(f"{url}/api/jobs/{job_id}/events")
        with trio.fail_after(DEADLINE_S):
            await again.run()
        assert again.ids == list(range(1, 2101))
        assert again.connections == 1
