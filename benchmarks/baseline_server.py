"""BASELINE, not logstream: the practical ceiling of a hand-written trio SSE server.

``python -m benchmarks.baseline_server [--port P] [--linger S] -- COMMAND...`` runs COMMAND and
serves its stdout as SSE to any ``GET`` (the path is ignored; ``Last-Event-ID`` resumes) over raw
trio sockets: HTTP/1.1 chunked, the same records logstream sends (``retry:``, ``id:``/``data:``,
``event: end``). It does what the issue calls the practical Python ceiling and nothing more:

- reads the pipe in 64 KiB chunks and splits with bytes operations (no UTF-8 decoding, no
  ``\\r`` handling, no line limit, no masking);
- encodes each batch of lines once, as one bytes block, shared by every client;
- keeps every block in memory (no ring eviction, no disk store);
- each client task sends everything after its cursor as one write, and waits on one
  ``trio.Event`` per generation, so clients wake once per batch.

It prints ``baseline: serving at http://HOST:PORT/`` on stderr once it listens and
``baseline: job ended`` when the command has exited and its output is read. After the job ends it
exits once no client is connected and ``--linger`` seconds have passed.
"""

from __future__ import annotations

import argparse
import bisect
import subprocess
import sys

import trio

READ_BYTES = 64 * 1024
MAX_SEND_BYTES = 1 << 20
HEADERS = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\n"
    b"Cache-Control: no-cache\r\nX-Accel-Buffering: no\r\nTransfer-Encoding: chunked\r\n\r\n"
)


def encode_block(first: int, lines: list[bytes]) -> bytes:
    """SSE records of consecutive lines, encoded in C (map, zip, join): no frame per line."""
    ids = "\n".join(map(str, range(first, first + len(lines)))).encode().split(b"\n")
    return b"id: " + b"\n\nid: ".join(map(b"\ndata: ".join, zip(ids, lines, strict=True))) + b"\n\n"


def http_chunk(payload: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(payload), payload)


class Hub:
    def __init__(self) -> None:
        self.firsts: list[int] = []
        self.blocks: list[bytes] = []
        self.lasts: list[int] = []
        self.last = 0
        self.ended = False
        self.clients = 0
        self.changed = trio.Event()
        self.no_clients = trio.Event()

    def append(self, lines: list[bytes]) -> None:
        first = self.last + 1
        self.blocks.append(encode_block(first, lines))
        self.firsts.append(first)
        self.last += len(lines)
        self.lasts.append(self.last)
        self.wake()

    def wake(self) -> None:
        self.changed.set()
        self.changed = trio.Event()

    def read_after(self, cursor: int) -> tuple[bytes, int]:
        if cursor >= self.last:
            return b"", cursor
        index = bisect.bisect_right(self.firsts, cursor + 1) - 1
        block = self.blocks[index]
        if self.firsts[index] != cursor + 1:
            block = block[block.find(b"\nid: %d\n" % (cursor + 1)) + 1 :]
        parts, size, last = [block], len(block), self.lasts[index]
        for following in range(index + 1, len(self.blocks)):
            if size >= MAX_SEND_BYTES:
                break
            parts.append(self.blocks[following])
            size += len(self.blocks[following])
            last = self.lasts[following]
        return b"".join(parts), last


async def read_command(hub: Hub, command: list[str]) -> None:
    process = await trio.lowlevel.open_process(
        command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE
    )
    assert process.stdout is not None
    pending: bytes = b""
    while True:
        chunk = bytes(await process.stdout.receive_some(READ_BYTES))
        if not chunk:
            break
        cut = chunk.rfind(b"\n")
        if cut < 0:
            pending += chunk
            continue
        head = pending + chunk[:cut] if pending else chunk[:cut]
        pending = chunk[cut + 1 :]
        hub.append(head.split(b"\n"))
    if pending:
        hub.append([pending])
    await process.wait()
    hub.ended = True
    hub.wake()
    sys.stderr.write("baseline: job ended\n")
    sys.stderr.flush()


async def serve_client(hub: Hub, stream: trio.SocketStream) -> None:
    hub.clients += 1
    try:
        request = b""
        while b"\r\n\r\n" not in request:
            data = await stream.receive_some(16384)
            if not data:
                return
            request += data
        cursor = 0
        for line in request.split(b"\r\n"):
            name, _, value = line.partition(b":")
            if name.lower() == b"last-event-id" and value.strip():
                cursor = int(value.strip())
        await stream.send_all(HEADERS + http_chunk(b"retry: 1000\n\n"))
        while True:
            payload, last = hub.read_after(cursor)
            if payload:
                await stream.send_all(http_chunk(payload))
                cursor = last
                continue
            if hub.ended:
                end = b'event: end\ndata: {"status": "succeeded", "exit_code": 0}\n\n'
                await stream.send_all(http_chunk(end) + b"0\r\n\r\n")
                return
            await hub.changed.wait()
    except trio.BrokenResourceError:
        pass
    finally:
        hub.clients -= 1
        if not hub.clients:
            hub.no_clients.set()
            hub.no_clients = trio.Event()
        await stream.aclose()


async def main_async(port: int, linger_s: float, command: list[str]) -> None:
    hub = Hub()
    listeners = await trio.open_tcp_listeners(port, host="127.0.0.1", backlog=4096)
    host, bound = listeners[0].socket.getsockname()[:2]
    async with trio.open_nursery() as nursery:

        async def handler(stream: trio.SocketStream) -> None:
            await serve_client(hub, stream)

        nursery.start_soon(trio.serve_listeners, handler, listeners)
        sys.stderr.write(f"baseline: serving at http://{host}:{bound}/\n")
        sys.stderr.flush()
        await read_command(hub, command)
        await trio.sleep(linger_s)
        while hub.clients:
            await hub.no_clients.wait()
        nursery.cancel_scope.cancel()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--linger", type=float, default=0.0)
    parser.add_argument("command", nargs="+")
    args = parser.parse_args()
    trio.run(main_async, args.port, args.linger, args.command)


if __name__ == "__main__":
    main()
