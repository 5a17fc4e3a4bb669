"""Bad input: each case has a row in docs/bad-input.md.

Requests go over raw sockets where a client library would tidy them up (``..`` segments,
non-ASCII bytes, oversized heads); command output goes through a real `logstream run`.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import sys
from pathlib import Path

import httpx
import pytest
import trio

from logstream import sse
from logstream.config import Settings
from logstream.lines import LineSplitter
from logstream.sse import SSEParser

from .conftest import Server, running_server, with_settings
from .processes import start_logstream

DEADLINE_S = 30
PY = sys.executable


def port_of(server: Server) -> int:
    return int(server.url.rsplit(":", 1)[1])


async def raw_request(port: int, request: bytes) -> bytes:
    """Send ``request`` as is; the answer up to the server's close (or 64 KiB)."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    received = b""
    with trio.fail_after(DEADLINE_S):
        await stream.send_all(request)
        while len(received) < 65536:
            try:
                data = await stream.receive_some()
            except trio.BrokenResourceError:
                break
            if not data or (b"\r\n\r\n" in received + data and b"content-length: 0" in data):
                received += data
                break
            received += data
            if received.startswith(b"HTTP/1.1") and _whole(received):
                break
    await stream.aclose()
    return received


def _whole(response: bytes) -> bool:
    head, sep, body = response.partition(b"\r\n\r\n")
    if not sep:
        return False
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return len(body) >= int(line.split(b":")[1])
    return False


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


def get(target: bytes, *headers: bytes) -> bytes:
    return (
        b"GET "
        + target
        + b" HTTP/1.1\r\nHost: x\r\n"
        + b"".join(h + b"\r\n" for h in headers)
        + b"\r\n"
    )


# -- Resume IDs ---------------------------------------------------------------------------------


@pytest.mark.parametrize("digits", [20, 4301, 10_000])
async def test_a_resume_id_of_any_length_waits_on_a_running_job_and_is_204_on_a_finished_one(
    server: Server, digits: int
) -> None:
    huge = "9" * digits
    running = await server.new_job()
    running.append(["a"])
    finished = await server.new_job()
    finished.append(["a"])
    finished.finish("succeeded", 0)
    async with server.client() as client:
        done = await client.get(
            f"/api/jobs/{finished.job.id}/events", params={"last_event_id": huge}
        )
        assert done.status_code == 204
        by_tail = await client.get(f"/api/jobs/{finished.job.id}/events", params={"tail": huge})
        assert by_tail.status_code == 200 and b"id: 1\n" in by_tail.content
        # Beyond the last line of a running job: the stream waits (no line, no error) and
        # ends with the job.
        async with client.stream(
            "GET", f"/api/jobs/{running.job.id}/events", headers={"Last-Event-ID": huge}
        ) as response:
            assert response.status_code == 200
            chunks = response.aiter_raw()
            assert (await chunks.__anext__()).startswith(b"retry: 1000")
            running.append(["b"])
            running.finish("succeeded", 0)
            rest = b"".join([chunk async for chunk in chunks])
    assert b"id: " not in rest and b"event: end" in rest


async def test_leading_zeros_are_the_same_number(server: Server) -> None:
    log = await server.new_job()
    log.append(["a", "b", "c"])
    log.finish("succeeded", 0)
    async with server.client() as client:
        response = await client.get(
            f"/api/jobs/{log.job.id}/events", headers={"Last-Event-ID": "0" * 5000 + "2"}
        )
    assert b"id: 3\n" in response.content and b"id: 2\n" not in response.content


async def test_a_resume_id_from_another_job_is_a_position_in_this_one(server: Server) -> None:
    """IDs are per-job line numbers: another job's ID names a line here, or one to come."""
    long_job = await server.new_job()
    long_job.append([f"l{i}" for i in range(1, 101)])
    short_job = await server.new_job()
    short_job.append([f"s{i}" for i in range(1, 11)])
    short_job.finish("succeeded", 0)
    async with server.client() as client:
        beyond = await client.get(
            f"/api/jobs/{short_job.job.id}/events", headers={"Last-Event-ID": "50"}
        )
        inside = await client.get(
            f"/api/jobs/{short_job.job.id}/events", headers={"Last-Event-ID": "8"}
        )
    assert beyond.status_code == 204
    events = SSEParser().feed(inside.content)
    assert [e.id for e in events if e.event != "end" and e.id] == ["9", "10"]


async def test_non_ascii_digits_in_the_header_are_400(server: Server) -> None:
    log = await server.new_job()
    log.append(["a"])
    for value in ["\u0661\u0662".encode(), b"\xff\xfe", b"1\xc2\xa0"]:
        response = await raw_request(
            port_of(server),
            get(f"/api/jobs/{log.job.id}/events".encode(), b"Last-Event-ID: " + value),
        )
        assert status_of(response) == 400, value
        assert b'"error"' in response


# -- Job IDs and query parameters ---------------------------------------------------------------


@pytest.mark.parametrize(
    "target",
    [
        b"/api/jobs/../events",
        b"/api/jobs/%2e%2e/events",
        b"/api/jobs/%2E%2E/%2E%2E/etc/passwd",
        b"/api/jobs/..%2F..%2Fetc%2Fpasswd/log",
        b"/api/jobs/" + b"a" * 10_000 + b"/events",
        b"/api/jobs/%C3%A9t%C3%A9/events",
        b"/api/jobs/a%00b/events",
        b"/api/jobs/a%ff/log",
        b"/jobs/%2e%2e",
    ],
)
async def test_malformed_job_ids_are_404_json(server: Server, target: bytes) -> None:
    response = await raw_request(port_of(server), get(target))
    assert status_of(response) == 404
    assert b"application/json" in response and b'"error"' in response


async def test_raw_non_ascii_bytes_in_the_request_line_are_400(server: Server) -> None:
    response = await raw_request(port_of(server), get("/api/jobs/été/events".encode()))
    assert status_of(response) == 400


async def test_unknown_query_parameters_are_ignored_and_the_first_of_a_repeat_wins(
    server: Server,
) -> None:
    log = await server.new_job()
    log.append([f"l{i}" for i in range(1, 6)])
    log.finish("succeeded", 0)
    query = "foo=1&bar&x=%ff&last_event_id=2&last_event_id=4&callback=alert(1)"
    async with server.client() as client:
        response = await client.get(f"/api/jobs/{log.job.id}/events?{query}")
    ids = [e.id for e in SSEParser().feed(response.content) if e.id and e.event != "end"]
    assert ids == ["3", "4", "5"]


# -- Oversized and slow requests ----------------------------------------------------------------


@pytest.mark.parametrize(
    "request_bytes",
    [
        get(b"/" + b"a" * 200_000),
        get(b"/healthz", b"X-Big: " + b"a" * 200_000),
        get(b"/healthz", *[b"X-%d: v" % i for i in range(20_000)]),
    ],
    ids=["request-line", "one-header", "many-headers"],
)
async def test_request_heads_over_16_kib_are_431_and_closed(
    server: Server, request_bytes: bytes
) -> None:
    response = await raw_request(port_of(server), request_bytes)
    assert status_of(response) == 431
    assert b"connection: close" in response.lower()
    async with server.client() as client:
        assert (await client.get("/healthz")).status_code == 200


async def test_garbage_instead_of_http_is_400(server: Server) -> None:
    response = await raw_request(port_of(server), b"\x16\x03\x01\x02\x00 hello\r\n\r\n")
    assert status_of(response) == 400


async def test_slow_senders_are_closed_after_the_keep_alive_timeout(settings: Settings) -> None:
    """Many connections dribbling a request head byte by byte hold nothing for long."""
    async with running_server(with_settings(settings, keep_alive_timeout_s=0.5)) as server:
        port = port_of(server)
        closed_after: list[float] = []

        async def dribble() -> None:
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            started = trio.current_time()
            request = get(b"/healthz")
            with trio.fail_after(DEADLINE_S):
                try:
                    for byte in request[:-1]:
                        await stream.send_all(bytes([byte]))
                        await trio.sleep(0.05)  # the slow sender itself
                    raise AssertionError("a whole slow request head was accepted")
                except trio.BrokenResourceError:
                    closed_after.append(trio.current_time() - started)
            await stream.aclose()

        async with trio.open_nursery() as nursery:
            for _ in range(50):
                nursery.start_soon(dribble)
            # Meanwhile others are served at once.
            async with server.client() as client:
                for _ in range(20):
                    assert (await client.get("/healthz")).status_code == 200
        assert len(closed_after) == 50
        assert max(closed_after) < 5


OPEN_AND_DROP = """
import random, socket, sys
port, job = int(sys.argv[1]), sys.argv[2]
heads = [b"", b"GET /heal", b"GET /healthz HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n"]
stream = f"GET /api/jobs/{job}/events HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n".encode()
rng = random.Random(10)
for i in range(10000):
    s = socket.create_connection(("127.0.0.1", port))
    data = stream if rng.random() < 0.05 else rng.choice(heads)
    if data:
        s.sendall(data)
    s.close()
"""


async def test_ten_thousand_connections_opened_and_dropped_leave_the_server_healthy(
    server: Server,
) -> None:
    """Bare connects, torn request heads, streams dropped at once: nothing leaks."""
    log = await server.new_job()
    log.append(["a"])
    fds_before = len(os.listdir("/proc/self/fd"))
    # The clients run in another process, so the server has this one to itself.
    with trio.fail_after(120):
        await trio.run_process(
            [PY, "-c", OPEN_AND_DROP, str(port_of(server)), log.job.id], check=True
        )
        async with server.client() as client:
            assert (await client.get("/healthz")).status_code == 200
            # Every dropped stream ended: none holds a slot.
            await server.state.wait_no_streams()
            log.finish("succeeded", 0)
            tail = await client.get(f"/api/jobs/{log.job.id}/events?tail=1")
        # No event tells when hypercorn has closed its last sockets: poll the count.
        while len(os.listdir("/proc/self/fd")) > fds_before + 20:  # noqa: ASYNC110
            await trio.sleep(0.05)
    assert tail.status_code == 200 and b"id: 1\n" in tail.content


# -- Command output -----------------------------------------------------------------------------


async def run_job(nursery: trio.Nursery, data_dir: Path, script: str) -> str:
    running = await start_logstream(
        nursery,
        "run",
        "--quiet",
        "--port",
        "0",
        "--data-dir",
        str(data_dir),
        "--",
        PY,
        "-c",
        script,
    )
    job_id, _ = await running.wait_for_url()
    assert await running.wait_exit() == 0
    return job_id


def expected_lines(output: bytes) -> list[str]:
    splitter = LineSplitter()
    return splitter.feed(output) + splitter.flush()


async def served_lines(settings: Settings, job_id: str) -> list[str]:
    async with running_server(settings) as server, server.client() as client:
        response = await client.get(f"/api/jobs/{job_id}/events")
    events = SSEParser().feed(response.content)
    assert events[-1].event == "end"
    return [sse.line_text(e.data) for e in events if e.id and e.event != "end"]


async def test_invalid_utf8_nul_and_binary_output_is_kept_line_for_line(
    nursery: trio.Nursery, settings: Settings, tmp_path: Path
) -> None:
    rng = random.Random(4)
    binary = bytes(rng.randrange(256) for _ in range(200_000))
    output = (
        b"invalid \xff\xfe utf-8 \xe2\x82 cut\n"
        b"nul \x00 in \x00 line\n"
        b"overlong \xc0\xaf and surrogate \xed\xa0\x80\n" + binary + b"\nafter binary\n"
    )
    source = tmp_path / "output.bin"
    source.write_bytes(output)
    script = f"import sys; sys.stdout.buffer.write(open({str(source)!r}, 'rb').read())"
    job_id = await run_job(nursery, settings.data_dir, script)
    lines = await served_lines(settings, job_id)
    assert lines == expected_lines(output)
    assert lines[:3] == [
        "invalid \ufffd\ufffd utf-8 \ufffd cut",
        "nul \x00 in \x00 line",
        "overlong \ufffd\ufffd and surrogate \ufffd\ufffd\ufffd",
    ]
    assert lines[-1] == "after binary"


async def test_a_100_mb_single_line_is_kept_in_pieces_of_the_line_limit(
    nursery: trio.Nursery, settings: Settings
) -> None:
    size = 100_000_000
    script = (
        "import sys\n"
        "block = bytes(range(32, 127)) * 1000\n"
        f"left = {size}\n"
        "while left > 0:\n"
        "    sys.stdout.buffer.write(block[:left]); left -= len(block)\n"
        "sys.stdout.buffer.write(b'\\nshort\\n')\n"
    )
    job_id = await run_job(nursery, settings.data_dir, script)
    block = bytes(range(32, 127)) * 1000
    want = hashlib.sha256()
    left = size
    while left > 0:
        want.update(block[:left])
        left -= len(block)
    got = hashlib.sha256()
    pieces = 0
    last = b""
    async with running_server(settings) as server, server.client() as client:
        async with client.stream("GET", f"/api/jobs/{job_id}/log") as response:
            buffered = b""
            async for data in response.aiter_raw():
                buffered += data
                *whole, buffered = buffered.split(b"\n")
                for line in whole:
                    if len(line) <= 65536 and line != b"short":
                        got.update(line)
                        pieces += 1
                    last = line
        job = (await client.get(f"/api/jobs/{job_id}")).json()
    assert got.hexdigest() == want.hexdigest()
    assert pieces == -(-size // 65536) and last == b"short"
    assert job["lines"] == pieces + 1


@pytest.mark.slow
async def test_a_gigabyte_of_output_is_kept_whole_with_bounded_memory(
    nursery: trio.Nursery, settings: Settings
) -> None:
    line_count, width = 10_000_000, 99
    script = (
        "import sys\n"
        f"line = b'x' * {width} + b'\\n'\n"
        f"block = line * 10000\n"
        f"for _ in range({line_count // 10000}): sys.stdout.buffer.write(block)\n"
    )
    running = await start_logstream(
        nursery,
        "run",
        "--quiet",
        "--linger",
        "600",
        "--port",
        "0",
        "--data-dir",
        str(settings.data_dir),
        "--",
        PY,
        "-c",
        script,
    )
    job_id, url = await running.wait_for_url()
    base = url.split("/jobs/")[0]
    with trio.fail_after(600):
        async with (
            httpx.AsyncClient(timeout=600) as client,
            client.stream(
                "GET",
                f"{base}/api/jobs/{job_id}/events",
                headers={"Last-Event-ID": str(10**30)},
            ) as response,
        ):
            # Resumed beyond every line: the stream ends only when the job has.
            body = b"".join([chunk async for chunk in response.aiter_raw()])
    assert b"event: end" in body
    status = await trio.Path(f"/proc/{running.pid}/status").read_text()
    peak_kb = int(next(line for line in status.splitlines() if line.startswith("VmHWM")).split()[1])
    running.signal(signal.SIGTERM)
    await running.wait_exit()
    job = json.loads((settings.data_dir / "jobs" / job_id / "job.json").read_bytes())
    assert job["lines"] == line_count
    log_size = (settings.data_dir / "jobs" / job_id / "log").stat().st_size
    assert log_size > line_count * width
    assert peak_kb < 400_000, peak_kb
    print(f"\n1 GB job: peak RSS of logstream run {peak_kb / 1024:.0f} MiB")


async def test_output_written_after_the_main_process_exited_is_kept(
    nursery: trio.Nursery, settings: Settings
) -> None:
    script = (
        "import os, sys, time\n"
        "if os.fork() == 0:\n"
        "    time.sleep(0.05)\n"
        "    print('from the background, after main exited', flush=True)\n"
        "    os._exit(0)\n"
        "print('main', flush=True)\n"
    )
    job_id = await run_job(nursery, settings.data_dir, script)
    lines = await served_lines(settings, job_id)
    assert lines == ["main", "from the background, after main exited"]
