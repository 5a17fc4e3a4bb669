"""``python -m benchmarks.redis [--quick] [--http]``: Redis as the store of many nodes.

Starts its own ``redis-server`` (AOF on, ``appendfsync everysec``, as docs/scaling.md
recommends) in a temporary directory and measures, in this one process:

- **push**: lines/s stored through ``logstream_append`` (blocks of 100 and 1,000 lines of 80
  bytes, several blocks per call as a job's writer flushes them);
- **memory**: bytes Redis uses per stored line (``MEMORY USAGE`` of the job's keys);
- **catch-up**: lines/s a client reads a finished 1M-line job from Redis (``XRANGE`` entries
  turned into chunks, as a node serves a resume);
- **A->B**: a writer appends 2,000 lines/s in 10 ms batches; a second connection follows the
  job as a node does (one blocking ``XREAD`` feeding the ring); latency from the append call to
  the follower's wake-up, p50/p99.

With ``--http``, real ``serve --redis`` processes over real sockets (the load client of
``benchmarks.loadclient``): node A runs a job (``firehose.py --stamp`` behind a gate) and
viewers follow it on node B:

- **A->B over HTTP**: one viewer on B at 2,000 lines/s: latency from the line's print on A's
  job to its arrival at the viewer on B (through A's runner, Redis, B's follower and ring);
- **fan-out, 1 vs 2 workers**: 500 viewers on B (``--workers 1`` then ``--workers 2``) at
  2,000 lines/s: delivered lines/s, latency, B's CPU;
- **catch-up over HTTP**: one new viewer on B reads a finished 1M-line job from Redis.

Nothing here runs under pytest and nothing asserts a time; the figures in docs/scaling.md say
the load they were taken under.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import urllib.request
from pathlib import Path

import trio

from benchmarks import harness as h
from benchmarks.procstat import cpu_seconds, load_average
from logstream import sse
from logstream.backends.protocol import Cursor
from logstream.redislog import RedisJobs
from logstream.redisstore import RedisStore
from logstream.ring import Block
from tests.redis_server import RedisServer

LINE = "x" * 72  # with "line N " about 80 bytes


def make_blocks(lines: int, per_block: int, first: int = 1) -> list[Block]:
    blocks = []
    now_ms = time.time_ns() // 1_000_000
    for start in range(first, first + lines, per_block):
        count = min(per_block, first + lines - start)
        text = [f"line {n} {LINE}" for n in range(start, start + count)]
        blocks.append(Block(start, start + count - 1, sse.encode_lines(start, text), now_ms))
    return blocks


async def new_job(store: RedisStore, job_id: str) -> None:
    fields = {"id": job_id, "name": job_id, "command": ["bench"], "started_at": "2026-12-04T00:00Z"}
    await store.create_job(job_id, fields, lease=("bench", 600_000))


async def push(store: RedisStore, lines: int, per_block: int, per_call: int) -> float:
    job_id = f"push-{per_block}-{per_call}"
    await new_job(store, job_id)
    blocks = make_blocks(lines, per_block)
    started = time.perf_counter()
    for at in range(0, len(blocks), per_call):
        await store.append(job_id, blocks[at : at + per_call])
    elapsed = time.perf_counter() - started
    return lines / elapsed


async def memory_per_line(store: RedisStore, lines: int, per_block: int) -> float:
    job_id = f"memory-{per_block}"
    await new_job(store, job_id)
    blocks = make_blocks(lines, per_block)
    for at in range(0, len(blocks), 16):
        await store.append(job_id, blocks[at : at + 16])
    return await store.memory_usage(job_id) / lines


async def catchup(store: RedisStore, lines: int) -> tuple[float, float]:
    job_id = "catchup"
    await new_job(store, job_id)
    blocks = make_blocks(lines, 1000)
    for at in range(0, len(blocks), 16):
        await store.append(job_id, blocks[at : at + 16])
    await store.finish(job_id, "succeeded", 0, "2026-12-04T00:01Z", lines)
    async with trio.open_nursery() as nursery:
        jobs = RedisJobs(store)
        await nursery.start(jobs.run)
        log = await jobs.get(job_id)
        cursor = Cursor(0)
        received = 0
        started = time.perf_counter()
        while True:
            read = await log.read_after(cursor, 128 * 1024)
            if not read.chunk.payload:
                break
            received += len(read.chunk.payload)
            cursor = Cursor(read.chunk.last)
        elapsed = time.perf_counter() - started
        nursery.cancel_scope.cancel()
    assert cursor.seq == lines
    return lines / elapsed, received / elapsed / 1e6


async def a_to_b(url: str, seconds: float, rate: int) -> tuple[float, float, int]:
    async with RedisStore.connect(url) as writer, RedisStore.connect(url) as reader:
        job_id = "latency"
        await new_job(writer, job_id)
        latencies: list[float] = []
        sent_at: dict[int, float] = {}
        async with trio.open_nursery() as nursery:
            jobs = RedisJobs(reader)
            await nursery.start(jobs.run)
            log = await jobs.get(job_id)

            async def follow() -> None:
                cursor = 0
                while True:
                    await log.wait_beyond(cursor)
                    now = time.perf_counter()
                    while log.last > cursor:
                        cursor += 1
                        if cursor in sent_at:
                            latencies.append(now - sent_at.pop(cursor))

            nursery.start_soon(follow)
            per_batch = rate // 100
            first = 1
            deadline = time.perf_counter() + seconds
            next_at = time.perf_counter()
            while time.perf_counter() < deadline:
                block = make_blocks(per_batch, per_batch, first)[0]
                sent_at[block.last] = time.perf_counter()
                await writer.append(job_id, [block])
                first += per_batch
                next_at += 0.01
                await trio.sleep(max(0.0, next_at - time.perf_counter()))
            while sent_at and time.perf_counter() < deadline + 5:  # noqa: ASYNC110
                await trio.sleep(0.01)
            nursery.cancel_scope.cancel()
    latencies.sort()
    p50 = latencies[len(latencies) // 2] * 1000
    p99 = latencies[int(len(latencies) * 0.99)] * 1000
    return p50, p99, len(latencies)


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of ``pid`` and its running children (the workers of ``--workers``)."""
    total = cpu_seconds(pid)
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_bytes()
            except OSError:
                continue
            if int(stat[stat.rfind(b")") + 2 :].split()[1]) == pid:
                total += cpu_seconds(int(entry.name))
    return total


def start_node(url: str, *args: str) -> h.Server:
    argv = [h.PYTHON, "-m", "logstream.cli", "serve", "--port", "0", "--redis", url, *args]
    server, match = h._start("logstream", argv, h.SERVING_LINE)
    server.base_url = match[1]
    return server


def start_job(node: h.Server, name: str) -> str:
    request = urllib.request.Request(
        f"{node.base_url}/api/jobs",
        data=json.dumps({"name": name}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request) as response:
        return str(json.load(response)["id"])


def stop(*servers: h.Server) -> None:
    for server in servers:
        server.process.terminate()
        server.stop()


def http_follow(url: str, clients: int, rate: float, lines: int, workers: int) -> dict[str, float]:
    """``clients`` viewers on node B of a job run on node A; figures as in ``fanout``."""
    with tempfile.TemporaryDirectory(prefix="logstream-bench-") as tmp:
        fifo = h.make_fifo(Path(tmp))
        jobs = Path(tmp) / "jobs.toml"
        command = h.gated(fifo, h.firehose(lines, rate=rate, stamp=True))
        jobs.write_text(f"[jobs.fire]\ncommand = {json.dumps(command)}\n")
        node_a = start_node(url, "--jobs", str(jobs))
        node_b = start_node(url, "--workers", str(workers))
        try:
            job_id = start_job(node_a, "fire")
            node_b.events_path = f"/api/jobs/{job_id}/events"
            load = load_average()[0]
            group = h.start_clients(node_b, clients, processes=2 if clients >= 500 else 1,
                                    stamped=True)  # fmt: skip
            group.wait_ready()
            cpu_before = tree_cpu_seconds(node_b.pid)
            go = h.open_gate(fifo)
            results = group.results()
            cpu = tree_cpu_seconds(node_b.pid) - cpu_before
        finally:
            stop(node_a, node_b)
    done = max(max(r["t_end"]) for r in results)
    hist = h.merge_histograms(results)
    delivered = sum(r["lines"] for r in results)
    return {
        "events_per_s": delivered / (done - go),
        "p50_ms": h.percentile_ms(hist, 0.50),
        "p99_ms": h.percentile_ms(hist, 0.99),
        "node_b_cpu_pct": 100 * cpu / (done - go),
        "complete": float(delivered == clients * lines),
        "load": load,
    }


def http_catchup(url: str, lines: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="logstream-bench-") as tmp:
        jobs = Path(tmp) / "jobs.toml"
        jobs.write_text(f"[jobs.fire]\ncommand = {json.dumps(h.firehose(lines))}\n")
        node_a = start_node(url, "--jobs", str(jobs))
        node_b = start_node(url)
        try:
            job_id = start_job(node_a, "fire")
            while True:  # wait for the job's end (benchmark only: polling is fine here)
                with urllib.request.urlopen(f"{node_a.base_url}/api/jobs/{job_id}") as response:
                    if json.load(response)["status"] != "running":
                        break
                time.sleep(0.2)
            load = load_average()[0]
            group = h.start_clients(node_b, 1, path=f"/api/jobs/{job_id}/events")
            group.wait_ready()
            (result,) = group.results()
        finally:
            stop(node_a, node_b)
    return {
        "lines_per_s": result["lines"] / (result["t_end"][0] - result["started"][0]),
        "first_event_ms": 1000 * (result["t_first"][0] - result["started"][0]),
        "complete": float(result["lines"] == lines and result["ended"] == 1),
        "load": load,
    }


def http_main(quick: bool) -> None:
    server = RedisServer(appendonly=True, fsync="everysec")
    server.start()
    try:
        seconds = 3 if quick else 6
        figures = http_follow(server.url, 1, 2000, 2000 * seconds, 1)
        print(f"A->B over HTTP, 1 viewer, 2,000 lines/s: {figures}")
        for workers in (1, 2):
            figures = http_follow(server.url, 500, 2000, 2000 * seconds, workers)
            print(f"fan-out, 500 viewers on B, 2,000 lines/s, --workers {workers}: {figures}")
        lines = 200_000 if quick else 1_000_000
        figures = http_catchup(server.url, lines)
        print(f"catch-up over HTTP of a finished {lines:,}-line job: {figures}")
    finally:
        server.close()


async def main(quick: bool) -> None:
    server = RedisServer(appendonly=True, fsync="everysec")
    server.start()
    try:
        lines = 200_000 if quick else 1_000_000
        print(f"load average at start: {load_average()[0]:.2f}; cores: {os.cpu_count()}")
        async with RedisStore.connect(server.url) as store:
            await store.load_functions()
            for per_block, per_call in ((100, 1), (100, 16), (1000, 1), (1000, 16)):
                rate = await push(store, lines // 4, per_block, per_call)
                print(f"push: {per_block} lines/block, {per_call} blocks/call: {rate:,.0f} lines/s")
            for per_block in (100, 1000):
                size = await memory_per_line(store, lines // 4, per_block)
                print(f"memory: {per_block} lines/block: {size:.1f} bytes/line (80-byte lines)")
            rate, megabytes = await catchup(store, lines)
            print(f"catch-up of a finished {lines:,}-line job: {rate:,.0f} lines/s, "
                  f"{megabytes:.0f} MB/s")  # fmt: skip
        p50, p99, count = await a_to_b(server.url, 5 if quick else 20, 2000)
        print(f"A->B at 2,000 lines/s: p50 {p50:.2f} ms, p99 {p99:.2f} ms ({count} batches)")
        print(f"load average at end: {load_average()[0]:.2f}")
    finally:
        server.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m benchmarks.redis", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller jobs, shorter runs")
    parser.add_argument("--http", action="store_true", help="real nodes over HTTP")
    args = parser.parse_args()
    if args.http:
        http_main(args.quick)
    else:
        trio.run(main, args.quick)
