"""What one streamed write costs the server: raw trio socket, bare hypercorn ASGI, quart-trio.

``python -m benchmarks.send_cost [N]`` serves, in turn, each stack in a child process that
streams ``N`` small SSE records, one write each, to one reading client process, and reports the
server's CPU microseconds per write. This isolates the per-send overhead of the HTTP stack,
which no batching in logstream can remove: it can only make sends fewer. The ``-fastsend``
stacks run with ``benchmarks/hypercorn_fastsend.py``'s patch to hypercorn (an experiment).
"""

from __future__ import annotations

import json
import resource
import socket
import subprocess
import sys
from typing import Any

import trio

#: ``-fastsend``: with ``benchmarks/hypercorn_fastsend.py``'s patch to hypercorn's send path.
STACKS = ("raw", "hypercorn", "quart", "hypercorn-fastsend", "quart-fastsend")
RECORD = b"id: 123456\ndata: 123456 1700000000000000000 firehose\n\n"
HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _raw(listener: socket.socket, count: int) -> float:
    sock, _ = await trio.to_thread.run_sync(listener.accept)
    stream = trio.SocketStream(trio.socket.from_stdlib_socket(sock))
    await stream.receive_some(65536)
    started = _cpu()
    await stream.send_all(HEAD)
    chunk = b"%x\r\n%b\r\n" % (len(RECORD), RECORD)
    for _ in range(count):
        await stream.send_all(chunk)
    await stream.send_all(b"0\r\n\r\n")
    spent = _cpu() - started
    await stream.aclose()
    return spent


async def _hypercorn(listener: socket.socket, count: int, stack: str) -> float:
    from hypercorn.config import Config
    from hypercorn.trio import serve

    done = trio.Event()
    spent = [0.0]

    async def asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                kind = message["type"].removeprefix("lifespan.")
                await send({"type": f"lifespan.{kind}.complete"})
                if kind == "shutdown":
                    return
        started = _cpu()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for _ in range(count):
            await send({"type": "http.response.body", "body": RECORD, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        spent[0] = _cpu() - started
        done.set()

    app: Any = asgi
    if stack == "quart":
        from quart import Response
        from quart_trio import QuartTrio

        quart_app = QuartTrio(__name__)

        @quart_app.get("/")
        async def stream() -> Response:
            async def records() -> Any:
                for _ in range(count):
                    yield RECORD

            response = Response(records(), content_type="text/event-stream")
            response.timeout = None
            return response

        async def timed(scope: dict[str, Any], receive: Any, send: Any) -> None:
            started = _cpu()
            await quart_app(scope, receive, send)  # type: ignore[arg-type]
            if scope["type"] == "http":
                spent[0] = _cpu() - started
                done.set()

        app = timed
    config = Config()
    config.bind = [f"fd://{listener.fileno()}"]
    config.accesslog = None
    config.errorlog = None

    async def finished() -> None:
        await done.wait()
        await trio.sleep(0.2)  # let the client read the last bytes

    await serve(app, config, shutdown_trigger=finished)
    return spent[0]


def serve_one(stack: str, count: int) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    client = subprocess.Popen([sys.executable, "-c", _CLIENT, str(port)])
    if stack == "raw":
        spent = trio.run(_raw, listener, count)
    else:
        if stack.endswith("-fastsend"):
            from benchmarks.hypercorn_fastsend import install

            install()
            stack = stack.removesuffix("-fastsend")
        spent = trio.run(_hypercorn, listener, count, stack)
    client.wait()
    print(json.dumps({"stack": stack, "us_per_send": 1e6 * spent / count}), flush=True)


_CLIENT = """
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
s.sendall(b"GET / HTTP/1.1\\r\\nHost: 127.0.0.1\\r\\n\\r\\n")
while True:
    data = s.recv(1 << 20)
    if not data or data.endswith(b"0\\r\\n\\r\\n"):
        break
"""


def measure(count: int = 100_000) -> dict[str, float]:
    """Server CPU microseconds per streamed write, for each stack."""
    out = {}
    for stack in STACKS:
        result = subprocess.run(
            [sys.executable, "-m", "benchmarks.send_cost", "--serve", stack, str(count)],
            capture_output=True,
            check=True,
        )
        out[stack] = float(json.loads(result.stdout.splitlines()[-1])["us_per_send"])
    return out


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--serve":
        serve_one(sys.argv[2], int(sys.argv[3]))
        return
    print(json.dumps(measure(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000)))


if __name__ == "__main__":
    main()
