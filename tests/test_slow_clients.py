"""Stuck and slow clients, dead peers and the stream limit, over real sockets.

A stuck client is a real TCP socket with a tiny receive buffer whose owner stops reading after
the response headers: the kernel buffers fill, and hypercorn's (shielded) write blocks.
"""

from __future__ import annotations

import os
import socket
import time

import httpx_sse
import trio

from logstream import sse
from logstream.config import Settings
from logstream.sse import SSEParser

from .conftest import Server, running_server, with_settings

DEADLINE_S = 30
LINE_PAD = "x" * 80


def rss_bytes() -> int:
    with open("/proc/self/statm") as file:
        return int(file.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def address(server: Server) -> tuple[str, int]:
    host, port = server.url.removeprefix("http://").split(":")
    return host, int(port)


async def open_stuck_stream(server: Server, job_id: str) -> trio.SocketStream:
    """A stream whose client reads the response headers and the opening, then nothing more."""
    sock = trio.socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    await sock.connect(address(server))
    stream = trio.SocketStream(sock)
    await stream.send_all(f"GET /api/jobs/{job_id}/events HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    received = b""
    with trio.fail_after(DEADLINE_S):
        while b"retry: " not in received:
            received += await stream.receive_some(4096)
    assert received.startswith(b"HTTP/1.1 200")
    return stream


async def read_until_closed(stream: trio.SocketStream) -> bytes:
    """Everything the server still sends before it closes or resets the connection."""
    received = bytearray()
    with trio.fail_after(DEADLINE_S):
        while True:
            try:
                data = await stream.receive_some(1 << 20)
            except trio.BrokenResourceError:
                break  # reset by the server (SO_LINGER 0)
            if not data:
                break
            received += data
    return bytes(received)


async def collect_ids(server: Server, job_id: str, into: list[int]) -> None:
    parser = SSEParser()
    async with (
        server.client() as client,
        client.stream("GET", f"/api/jobs/{job_id}/events") as response,
    ):
        async for data in response.aiter_raw():
            into += [int(e.id) for e in parser.feed(data) if e.id is not None]


async def test_stuck_clients_slow_neither_the_job_nor_others_and_are_cut_after_the_deadline(
    settings: Settings,
) -> None:
    stuck_count, total, per_block = 8, 300_000, 1_000
    write_timeout_s = 1.0
    async with running_server(
        with_settings(settings, write_timeout_s=write_timeout_s, ring_lines=5_000)
    ) as server:
        log = await server.new_job()
        log.append(["first"])
        stuck = [await open_stuck_stream(server, log.job.id) for _ in range(stuck_count)]
        received: list[int] = []
        rss_before = rss_bytes()
        peak_rss = rss_before
        async with trio.open_nursery() as nursery:
            nursery.start_soon(collect_ids, server, log.job.id, received)
            started = time.monotonic()
            for first in range(2, total + 1, per_block):
                last = min(first + per_block - 1, total)
                log.append([f"{LINE_PAD} {seq}" for seq in range(first, last + 1)])
                await trio.lowlevel.checkpoint()
                peak_rss = max(peak_rss, rss_bytes())
            produced_s = time.monotonic() - started
            log.finish("succeeded", 0)
        # The job ran at full speed: ~27 MB of output, never waiting for the stuck clients.
        assert received == list(range(1, total + 1))
        output_mb = total * (len(LINE_PAD) + 8) / 1e6
        # Had any stuck stream buffered what it could not send, memory would grow by the whole
        # output per stuck client; it holds one chunk instead.
        assert peak_rss - rss_before < 100e6, (peak_rss - rss_before) / 1e6
        # Each stuck client is disconnected once its write has waited the deadline; the job
        # ended meanwhile, so none of them got the end of the log.
        with trio.fail_after(DEADLINE_S):
            await server.state.wait_no_streams()
        for stream in stuck:
            rest = await read_until_closed(stream)
            assert b"event: end" not in rest
            await stream.aclose()
        print(
            f"\n{stuck_count} stuck clients held while the job wrote {output_mb:.0f} MB "
            f"in {produced_s:.2f} s; RSS grew {(peak_rss - rss_before) / 1e6:.1f} MB"
        )


async def test_a_slow_reader_is_served_at_its_own_pace_and_not_cut(settings: Settings) -> None:
    """A client that reads a little at a time keeps its stream: it is never stuck for long."""
    async with running_server(with_settings(settings, write_timeout_s=1.0)) as server:
        log = await server.new_job(ring_lines=1_000)
        total = 8_000
        for first in range(1, total + 1, 500):  # blocks the size of the runner's 64 KiB reads
            log.append([f"{LINE_PAD} {seq}" for seq in range(first, first + 500)])
        log.finish("succeeded", 0)
        sock = trio.socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        await sock.connect(address(server))
        stream = trio.SocketStream(sock)
        await stream.send_all(
            f"GET /api/jobs/{log.job.id}/events HTTP/1.1\r\nHost: x\r\n\r\n".encode()
        )
        received = bytearray()
        with trio.fail_after(DEADLINE_S):
            while not received.endswith(b"0\r\n\r\n"):
                data = await stream.receive_some(2048)
                assert data, "the server closed a slow but live client"
                received += data
                # About 4 KiB per 10 ms: far slower than the job, never stuck for a second.
                await trio.sleep(0.005)
        await stream.aclose()
        body = bytes(received).split(b"\r\n\r\n", 1)[1]
        assert b"event: end" in body
        assert body.count(b"\nid: ") + body.count(b"\r\nid: ") >= 1


async def test_shutdown_cuts_stuck_clients_within_the_grace_period(settings: Settings) -> None:
    """The write deadline is long, but stopping the server does not wait for it."""
    begun = 0.0
    async with running_server(with_settings(settings, write_timeout_s=600)) as server:
        log = await server.new_job()
        stuck = [await open_stuck_stream(server, log.job.id) for _ in range(3)]
        for first in range(1, 200_001, 1_000):
            log.append([f"{LINE_PAD} {seq}" for seq in range(first, first + 1_000)])
            await trio.lowlevel.checkpoint()
        begun = trio.current_time()
    assert trio.current_time() - begun < 5
    for stream in stuck:
        await read_until_closed(stream)
        await stream.aclose()


async def test_accepted_connections_carry_tcp_keepalive_and_user_timeout(
    server: Server,
) -> None:
    """Dead peers (no FIN, no RST) are found by the kernel: keep-alive probes, user timeout."""
    client = await trio.open_tcp_stream(*address(server))
    await client.send_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    with trio.fail_after(DEADLINE_S):
        assert (await client.receive_some()).startswith(b"HTTP/1.1 200")
    peer_port = client.socket.getsockname()[1]
    found = []
    for name in os.listdir("/proc/self/fd"):
        try:
            sock = socket.socket(fileno=int(name))
        except OSError:
            continue
        try:
            if sock.family == socket.AF_INET and sock.getpeername()[1] == peer_port:
                found.append(
                    (
                        sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
                        sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT),
                    )
                )
        except OSError:
            pass
        finally:
            sock.detach()
    await client.aclose()
    assert found == [(1, int(server.state.settings.write_timeout_s * 1000))]


async def test_over_max_streams_a_200_with_a_longer_retry_then_close(settings: Settings) -> None:
    """EventSource closes for good on a non-200, but retries a 200 that ends, after ``retry``."""
    async with running_server(
        with_settings(settings, max_streams=2, busy_retry_ms=7_000)
    ) as server:
        log = await server.new_job()
        log.append(["a"])
        held = [await open_stuck_stream(server, log.job.id) for _ in range(2)]
        async with server.client() as client:
            refused = await client.get(f"/api/jobs/{log.job.id}/events")
            assert refused.status_code == 200
            assert refused.headers["content-type"] == "text/event-stream; charset=utf-8"
            assert refused.content == b"retry: 7000\n\n"
            assert refused.headers["retry-after"] == "7"
            # What an EventSource-like client makes of it: a retry, no event, then the end.
            async with httpx_sse.aconnect_sse(
                client, "GET", f"/api/jobs/{log.job.id}/events"
            ) as source:
                seen = [(e.retry, e.data) async for e in source.aiter_sse()]
            assert seen == [(7000, "")]
            metrics = (await client.get("/metrics")).text
            assert "logstream_streams_refused_total 2" in metrics
            # A slot frees when a stream ends; the next client gets the log.
            await held[0].aclose()
            with trio.fail_after(DEADLINE_S):
                await server.state.wait_streams_below(2)
            parser = SSEParser()
            async with client.stream("GET", f"/api/jobs/{log.job.id}/events") as response:
                async for data in response.aiter_raw():
                    events = parser.feed(data)
                    if any(e.id == "1" for e in events):
                        break
        for stream in held[1:]:
            await stream.aclose()


async def test_max_streams_holds_under_a_burst_of_concurrent_requests(settings: Settings) -> None:
    async with running_server(with_settings(settings, max_streams=5)) as server:
        log = await server.new_job()
        log.append(["a"])
        outcomes: list[bytes] = []
        opened = trio.Event()
        release = trio.Event()

        async def one() -> None:
            async with (
                server.client() as client,
                client.stream("GET", f"/api/jobs/{log.job.id}/events") as response,
            ):
                # Hold the iterator: dropping it mid-stream closes the connection.
                chunks = response.aiter_raw()
                first = await chunks.__anext__()
                outcomes.append(first)
                if len(outcomes) == 30:
                    opened.set()
                if first.startswith(b"retry: 1000\n"):
                    await release.wait()

        with trio.fail_after(DEADLINE_S):
            async with trio.open_nursery() as nursery:
                for _ in range(30):
                    nursery.start_soon(one)
                await opened.wait()
                served = [o for o in outcomes if o.startswith(b"retry: 1000\n")]
                refused = [o for o in outcomes if o == sse.encode_retry(10_000)]
                assert (len(served), len(refused)) == (5, 25)
                release.set()
