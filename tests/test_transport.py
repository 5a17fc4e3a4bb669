"""The write deadline on its own: real loopback sockets, virtual time (no waiting)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager

import trio
import trio.testing

from logstream.asgi import Message, Receive, Scope, Send
from logstream.transport import WriteDeadline, abort_connections

WRITE_TIMEOUT_S = 30.0


@contextmanager
def tcp_connection() -> Iterator[tuple[socket.socket, socket.socket]]:
    """(server side, client side) of a real TCP connection on 127.0.0.1."""
    listener = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(listener.getsockname())
    served, _ = listener.accept()
    listener.close()
    try:
        yield served, client
    finally:
        served.close()
        client.close()


def was_reset(client: socket.socket) -> bool:
    client.setblocking(False)
    try:
        return client.recv(1) == b""
    except ConnectionResetError:
        return True
    except BlockingIOError:
        return False


def scope_of(served: socket.socket) -> Scope:
    return {"type": "http", "server": served.getsockname(), "client": served.getpeername()}


async def receive() -> Message:
    return {"type": "http.request"}


def test_abort_connections_resets_exactly_the_named_connection() -> None:
    with tcp_connection() as (served, client), tcp_connection() as (_other, other_client):
        assert abort_connections([(served.getsockname(), served.getpeername())]) == 1
        assert was_reset(client)
        assert not was_reset(other_client)
        assert abort_connections([(None, None)]) == 0


def test_a_write_pending_past_the_deadline_gets_its_connection_cut() -> None:
    clock = trio.testing.MockClock(autojump_threshold=0)
    stuck_sends = trio.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"x", "more_body": True})

    async def stuck(message: Message) -> None:
        if message["type"] == "http.response.body":
            stuck_sends.set()
            await trio.sleep_forever()  # a client that reads nothing

    async def main() -> None:
        stop = trio.Event()
        deadline = WriteDeadline(app, WRITE_TIMEOUT_S, stop)
        with tcp_connection() as (served, client):
            async with trio.open_nursery() as nursery:
                await nursery.start(deadline.run_watchdog)
                nursery.start_soon(deadline, scope_of(served), receive, stuck)
                await stuck_sends.wait()
                started = trio.current_time()
                await trio.sleep(WRITE_TIMEOUT_S - 1)
                assert deadline.aborted == 0 and not was_reset(client)
                await trio.sleep(2)
                assert deadline.aborted == 1 and was_reset(client)
                assert trio.current_time() - started < WRITE_TIMEOUT_S + 2
                nursery.cancel_scope.cancel()

    trio.run(main, clock=clock)


def test_writes_that_finish_are_never_cut() -> None:
    clock = trio.testing.MockClock(autojump_threshold=0)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        for _ in range(100):
            await send({"type": "http.response.body", "body": b"x", "more_body": True})
            await trio.sleep(WRITE_TIMEOUT_S / 2)  # idle between writes is fine

    async def quick(message: Message) -> None:
        await trio.sleep(1)

    async def main() -> None:
        deadline = WriteDeadline(app, WRITE_TIMEOUT_S, trio.Event())
        with tcp_connection() as (served, client):
            async with trio.open_nursery() as nursery:
                await nursery.start(deadline.run_watchdog)
                await deadline(scope_of(served), receive, quick)
                assert deadline.aborted == 0 and not was_reset(client)
                nursery.cancel_scope.cancel()

    trio.run(main, clock=clock)
