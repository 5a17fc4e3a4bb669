"""Many `serve --redis` nodes, as real processes, sharing one real redis-server.

A job started on one node is followed on the others; viewers move between nodes mid-stream;
nodes and Redis are killed. Every viewer must get every line exactly once.
"""

from __future__ import annotations

import json
import os
import re
import signal
from collections.abc import Callable
from pathlib import Path

import httpx
import trio

from logstream.sse import SSEParser
from tests.livejobs import has_lines, read_events
from tests.processes import Logstream, is_running, start_logstream, start_runner
from tests.redis_server import RedisServer, redis_aof, redis_server
from tests.sse_client import ResumingClient

__all__ = ["redis_aof", "redis_server"]

DEADLINE_S = 60
LINES = 2000


def gated_jobs_file(tmp_path: Path, lines: int = LINES) -> tuple[Path, Path]:
    """A jobs file whose job ``gated`` prints half its lines, waits for the gate, then the rest."""
    gate = tmp_path / "gate"
    os.mkfifo(gate)
    half = lines // 2
    script = f"seq 1 {half}; read go < {gate}; seq {half + 1} {lines}; echo oops >&2; exit 3"
    jobs = tmp_path / "jobs.toml"
    jobs.write_text(f"[jobs.gated]\ncommand = {json.dumps(['/bin/sh', '-c', script])}\n")
    return jobs, gate


async def open_gate(gate: Path) -> None:
    def write() -> None:
        with open(gate, "w") as fifo:
            fifo.write("go\n")

    await trio.to_thread.run_sync(write)


async def start_node(
    nursery: trio.Nursery, redis: RedisServer, *args: str, lease_s: float | None = None
) -> tuple[Logstream, str]:
    extra = ["--lease-s", str(lease_s)] if lease_s is not None else []
    node = await start_logstream(
        nursery, "serve", "--port", "0", "--redis", redis.url, *extra, *args
    )
    return node, await node.wait_for_serving()


async def start_job(url: str) -> str:
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        response = await client.post("/api/jobs", json={"name": "gated"})
        assert response.status_code == 201, response.text
        return str(response.json()["id"])


def numbers(events: list[tuple[str, str]]) -> list[int]:
    return [int(text) for kind, text in events if kind == "message"]


async def wait_until(check: Callable[[], object]) -> None:
    """Poll a condition of another process (no event tells us), up to the deadline."""
    with trio.fail_after(DEADLINE_S):
        while not check():  # noqa: ASYNC110
            await trio.sleep(0.02)


async def wait_until_status(client: httpx.AsyncClient, path: str, status: int) -> None:
    """Poll ``path`` until it answers ``status`` (a node checks Redis every second)."""
    with trio.fail_after(DEADLINE_S):
        while (await client.get(path)).status_code != status:  # noqa: ASYNC110
            await trio.sleep(0.05)


async def test_a_job_run_on_one_node_streams_on_every_node(
    nursery: trio.Nursery, tmp_path: Path, redis_server: RedisServer
) -> None:
    jobs, gate = gated_jobs_file(tmp_path)
    _a, url_a = await start_node(nursery, redis_server, "--jobs", str(jobs))
    _b, url_b = await start_node(nursery, redis_server)
    _c, url_c = await start_node(nursery, redis_server)
    job_id = await start_job(url_a)
    followers: dict[str, object] = {}

    async def follow(name: str, url: str) -> None:
        followers[name] = await read_events(url, job_id)

    with trio.fail_after(DEADLINE_S):
        async with trio.open_nursery() as viewers:
            for name, url in (("a", url_a), ("b", url_b), ("c", url_c), ("c2", url_c)):
                viewers.start_soon(follow, name, url)
            await open_gate(gate)
    expected = list(range(1, LINES + 1))
    for name, events in followers.items():
        assert numbers(events.lines) == expected, name  # type: ignore[attr-defined]
        assert ("stderr", "oops") in events.lines, name  # type: ignore[attr-defined]
        assert len(events.lines) == LINES + 1, name  # type: ignore[attr-defined]
        assert events.end == {"status": "failed", "exit_code": 3}, name  # type: ignore[attr-defined]
    async with httpx.AsyncClient(base_url=url_c) as client:
        listed = (await client.get("/api/jobs")).json()["jobs"]
        shown = (await client.get(f"/api/jobs/{job_id}")).json()
    assert [job["id"] for job in listed] == [job_id]
    assert (shown["status"], shown["exit_code"], shown["lines"]) == ("failed", 3, LINES + 1)


async def test_a_viewer_moving_to_another_node_mid_stream_loses_and_repeats_nothing(
    nursery: trio.Nursery, tmp_path: Path, redis_server: RedisServer
) -> None:
    jobs, gate = gated_jobs_file(tmp_path)
    _a, url_a = await start_node(nursery, redis_server, "--jobs", str(jobs))
    _b, url_b = await start_node(nursery, redis_server)
    job_id = await start_job(url_a)
    with trio.fail_after(DEADLINE_S):
        first = await read_events(url_a, job_id, until=has_lines(700))
        # The connection to A dies after line 700 (more may have arrived in the same read:
        # like an EventSource, the client resumes after the last event it handled).
        seen = [int(e.id) for e in first.events if e.id][:700]
        assert seen == list(range(1, 701))
        headers = {"Last-Event-ID": "700"}
        rest: list[int] = []
        async with (
            httpx.AsyncClient(base_url=url_b, timeout=30) as client,
            client.stream("GET", f"/api/jobs/{job_id}/events", headers=headers) as response,
        ):
            assert response.status_code == 200
            await open_gate(gate)  # the job goes on while the viewer reads from B
            parser = SSEParser()
            async for data in response.aiter_raw():
                rest += [int(e.id) for e in parser.feed(data) if e.id]
    # Every line once (the stderr line's place among them is the order the runner read it).
    assert seen + rest == list(range(1, LINES + 2))


async def test_a_node_killed_mid_job_leaves_it_interrupted_everywhere_else(
    nursery: trio.Nursery, tmp_path: Path, redis_server: RedisServer
) -> None:
    jobs, _gate = gated_jobs_file(tmp_path)
    node_a, url_a = await start_node(nursery, redis_server, "--jobs", str(jobs), lease_s=1.0)
    _b, url_b = await start_node(nursery, redis_server)
    job_id = await start_job(url_a)
    with trio.fail_after(DEADLINE_S):
        before = await read_events(url_b, job_id, until=has_lines(LINES // 2))
        node_a.signal(signal.SIGKILL)
        # The viewer on B, resuming where it was, gets the end once A's lease expires.
        client = ResumingClient(f"{url_b}/api/jobs/{job_id}/events")
        client.ids = numbers(before.lines)
        await client.run()
    assert client.ids == list(range(1, LINES // 2 + 1))
    async with httpx.AsyncClient(base_url=url_b) as http:
        shown = (await http.get(f"/api/jobs/{job_id}")).json()
    assert (shown["status"], shown["exit_code"]) == ("interrupted", None)


async def test_redis_down_answers_503_and_ends_streams_then_recovers(
    nursery: trio.Nursery, tmp_path: Path, redis_aof: RedisServer
) -> None:
    jobs, gate = gated_jobs_file(tmp_path)
    _a, url_a = await start_node(nursery, redis_aof, "--jobs", str(jobs))
    _b, url_b = await start_node(nursery, redis_aof)
    job_id = await start_job(url_a)
    client = ResumingClient(f"{url_b}/api/jobs/{job_id}/events")
    async with httpx.AsyncClient(base_url=url_b, timeout=30) as http:
        with trio.fail_after(DEADLINE_S):
            async with trio.open_nursery() as viewers:
                viewers.start_soon(client.run, 0.2)
                await client.wait_for_lines(LINES // 2)
                connections = client.connections
                redis_aof.kill()
                # The open stream ends (the client reconnects and is refused meanwhile).
                await wait_until(lambda: client.connections > connections)
                await wait_until_status(http, "/healthz", 503)
                refused = await http.get(f"/api/jobs/{job_id}")
                assert refused.status_code == 503
                assert refused.headers["Retry-After"]
                redis_aof.start()
                await open_gate(gate)
        await wait_until_status(http, "/healthz", 200)
    # Every line exactly once, although Redis died mid-job: the writer on A kept them.
    assert client.ids == list(range(1, LINES + 2))


async def test_gc_removes_old_jobs_from_redis(
    nursery: trio.Nursery, tmp_path: Path, redis_server: RedisServer
) -> None:
    jobs = tmp_path / "jobs.toml"
    jobs.write_text('[jobs.quick]\ncommand = ["echo", "hi"]\n')
    _a, url_a = await start_node(nursery, redis_server, "--jobs", str(jobs))
    ids = []
    async with httpx.AsyncClient(base_url=url_a, timeout=30) as client:
        for _ in range(3):
            response = await client.post("/api/jobs", json={"name": "quick"})
            ids.append(response.json()["id"])
            await read_events(url_a, ids[-1])
    gc = await start_logstream(nursery, "gc", "--redis", redis_server.url, "--keep-jobs", "1")
    assert await gc.wait_exit() == 0
    assert b"removed 2 jobs" in gc.stderr
    async with httpx.AsyncClient(base_url=url_a, timeout=30) as client:
        listed = (await client.get("/api/jobs")).json()["jobs"]
        assert [job["id"] for job in listed] == [ids[-1]]
        # Every node hears of the removal (a node that showed the job forgets it).
        await wait_until_status(client, f"/api/jobs/{ids[0]}", 404)


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2 :].split()
            if int(fields[1]) == pid and fields[0] not in ("Z", "X"):
                found.append(int(entry.name))
    return found


def listening_sockets(port: int) -> int:
    """How many sockets listen on ``port`` (state 0A in /proc/net/tcp)."""
    count = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        if int(local.split(":")[1], 16) == port and state == "0A":
            count += 1
    return count


async def test_workers_serve_one_port_and_a_dead_worker_is_replaced(
    nursery: trio.Nursery, tmp_path: Path, redis_server: RedisServer
) -> None:
    jobs = tmp_path / "jobs.toml"
    jobs.write_text('[jobs.quick]\ncommand = ["echo", "hi"]\n')
    parent, url = await start_node(nursery, redis_server, "--workers", "2", "--jobs", str(jobs))
    port = int(url.rsplit(":", 1)[1])
    assert parent.stderr.count(b"serving at") == 1
    workers = children_of(parent.pid)
    assert len(workers) == 2
    assert listening_sockets(port) == 2
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        started = await client.post("/api/jobs", json={"name": "quick"})
        job_id = started.json()["id"]
        events = await read_events(url, job_id)
        assert events.lines == [("message", "hi")]
        os.kill(workers[0], signal.SIGKILL)
    await wait_until(lambda: not is_running(workers[0]))  # its socket is closed
    # The other worker answers new connections meanwhile; the parent starts a new one.
    for _ in range(20):
        async with httpx.AsyncClient(base_url=url, timeout=30) as fresh:
            assert (await fresh.get(f"/api/jobs/{job_id}")).status_code == 200
    with trio.fail_after(DEADLINE_S):
        await parent.wait_for(re.compile(rb"worker \d exited with status -9; starting it again"))
        await wait_until(lambda: listening_sockets(port) == 2)
    parent.signal(signal.SIGTERM)
    assert await parent.wait_exit() == 0
    assert children_of(parent.pid) == []


async def test_workers_need_redis(nursery: trio.Nursery) -> None:
    node = await start_logstream(nursery, "serve", "--port", "0", "--workers", "2")
    assert await node.wait_exit() == 2
    assert b"--workers needs --redis" in node.stderr


async def test_a_remote_runner_uploads_to_a_redis_node_and_every_node_shows_it(
    nursery: trio.Nursery, tmp_path: Path, redis_server: RedisServer
) -> None:
    _a, url_a = await start_node(nursery, redis_server, "--ingest-token", "runner-t")
    _b, url_b = await start_node(nursery, redis_server)
    script = (
        "import sys\n"
        "print('building', flush=True)\n"
        "print('Traceback (most recent call last):', file=sys.stderr, flush=True)\n"
        "print('  File \"app.py\", line 7, in <module>', file=sys.stderr, flush=True)\n"
        "print('ValueError: bad input', file=sys.stderr, flush=True)\n"
        "sys.exit(1)\n"
    )
    running, job_id = await start_runner(
        nursery, url_a, tmp_path / "runner", script, env={"LOGSTREAM_TOKEN": "runner-t"}
    )
    assert await running.wait_exit() == 1
    async with httpx.AsyncClient(base_url=url_b, timeout=DEADLINE_S) as client:
        with trio.fail_after(DEADLINE_S):
            # Polled: nothing tells the test when the end reached node B.
            while (await client.get(f"/api/jobs/{job_id}")).json()["status"] == "running":  # noqa: ASYNC110
                await trio.sleep(0.05)
            job = (await client.get(f"/api/jobs/{job_id}")).json()
        assert (job["status"], job["exit_code"], job["lines"]) == ("failed", 1, 4)
        assert job["problems"] == {"error": 1, "warning": 0}
        assert "owner" not in job
        problems = (await client.get(f"/api/jobs/{job_id}/problems")).json()["problems"]
        assert [(p["line"], p["title"], p["file"]) for p in problems] == [
            (2, "ValueError: bad input", "app.py")
        ]
        listed = (await client.get("/api/jobs")).json()["jobs"]
        assert [(j["id"], j["problems"]) for j in listed] == [(job_id, job["problems"])]
    events = (await read_events(url_b, job_id)).events
    assert [int(e.id) for e in events if e.id is not None] == [1, 2, 3, 4]
    assert [e.event for e in events].count("problem") == 1
