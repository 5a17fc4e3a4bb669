"""Connection-level defences: a write deadline for stuck clients, TCP options for dead peers.

Theory of operation
-------------------
A stream never holds more than one chunk of its own: it reads the log after its cursor and
sends that, and ASGI ``send`` returns only once hypercorn has written the bytes to the socket.
A client that reads slowly is therefore served at its own pace, from the ring or from disk,
and costs one chunk. A client that stops reading costs one chunk too, but it would hold its
task, its socket and its ``--max-streams`` slot forever: hypercorn's trio worker writes in a
cancel-shielded scope, so no timeout around ``send`` can free it.

``WriteDeadline`` (ASGI middleware, outermost) records when each ``send`` starts. One watchdog
task looks at the oldest unfinished send: sends start in time order and all get the same
deadline, so a FIFO is enough, and the watchdog sleeps until exactly the next deadline. A send
still unfinished at its deadline (``write_timeout_s``) means a stuck client: the watchdog
finds that connection's socket by its two addresses and aborts it (``SO_LINGER`` 0, then
``shutdown``). The blocked write then fails, hypercorn closes the connection, the app sees a
disconnect and the stream's slot is free. The client resumes from disk when it comes back.

When the server stops, pending sends get ``SHUTDOWN_GRACE_S`` more and are aborted after it,
so a stuck client cannot hold a shutdown; the watchdog is shielded for that bounded time.

A peer that vanished without a FIN or RST (a laptop that lost Wi-Fi) accepts no data: the
kernel sees the keep-alive comments go unacknowledged, and ``TCP_USER_TIMEOUT`` (set on the
listening socket, inherited by every accepted one) closes the connection after the same
``write_timeout_s``. TCP keep-alive probes find dead peers on connections that send nothing.
"""

from __future__ import annotations

import contextlib
import os
import socket
import stat
import struct
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import trio

from logstream.asgi import ASGIApp, Message, Receive, Scope, Send
from logstream.trioutil import wait_any

#: After the server is told to stop, a pending write gets this long before its connection is cut.
SHUTDOWN_GRACE_S = 1.0
#: TCP keep-alive: first probe after this much silence, then every interval, this many times.
KEEPALIVE_IDLE_S = 30
KEEPALIVE_INTERVAL_S = 10
KEEPALIVE_PROBES = 3

Address = tuple[str, int]


def tune_listener(sock: socket.socket, write_timeout_s: float) -> None:
    """TCP options for every connection ``sock`` accepts (Linux copies them to each one)."""
    if sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    options = [
        ("TCP_KEEPIDLE", KEEPALIVE_IDLE_S),
        ("TCP_KEEPINTVL", KEEPALIVE_INTERVAL_S),
        ("TCP_KEEPCNT", KEEPALIVE_PROBES),
        # Unacknowledged data (a vanished peer) or a window closed this long: abort.
        ("TCP_USER_TIMEOUT", max(1, int(write_timeout_s * 1000))),
    ]
    for name, value in options:
        if hasattr(socket, name):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, name), value)


@dataclass(eq=False, slots=True)
class _Write:
    started: float
    local: Address | None
    peer: Address | None
    done: bool = False


class WriteDeadline:
    """ASGI middleware: a connection whose write is pending ``write_timeout_s`` is aborted."""

    def __init__(self, app: ASGIApp, write_timeout_s: float, stop: trio.Event) -> None:
        self.app = app
        self.write_timeout_s = write_timeout_s
        self.stop = stop
        self.aborted = 0
        self._pending: deque[_Write] = deque()
        self._added = trio.Event()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        local = _address(scope.get("server"))
        peer = _address(scope.get("client"))

        async def send_with_deadline(message: Message) -> None:
            write = _Write(trio.current_time(), local, peer)
            self._pending.append(write)
            self._added.set()
            try:
                await send(message)
            finally:
                write.done = True

        await self.app(scope, receive, send_with_deadline)

    async def run_watchdog(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Abort stuck connections; run until cancelled (start it beside the server)."""
        task_status.started()
        try:
            await self._watch(final=False)
        finally:
            # Cancelled: the server is going down, but stuck writes are shielded from that
            # cancellation. Cut their connections after the grace period, shielded too.
            deadline = trio.current_time() + 2 * SHUTDOWN_GRACE_S
            with trio.CancelScope(shield=True, deadline=deadline):
                await self._watch(final=True)

    async def _watch(self, *, final: bool) -> None:
        stop_at = trio.current_time() + SHUTDOWN_GRACE_S if final else None
        while True:
            while self._pending and self._pending[0].done:
                self._pending.popleft()
            if stop_at is None and self.stop.is_set():
                stop_at = trio.current_time() + SHUTDOWN_GRACE_S
            if not self._pending:
                if final:
                    return
                self._added = trio.Event()
                if stop_at is None:
                    await wait_any(self._added.wait, self.stop.wait)
                else:
                    await self._added.wait()
                continue
            deadline = self._pending[0].started + self.write_timeout_s
            if stop_at is not None:
                deadline = min(deadline, stop_at)
            if trio.current_time() < deadline:
                if stop_at is None:
                    with trio.move_on_at(deadline):
                        await self.stop.wait()
                else:
                    await trio.sleep_until(deadline)
                continue
            now = trio.current_time()
            expired = []
            while self._pending and (
                self._pending[0].done
                or self._pending[0].started + self.write_timeout_s <= now
                or (stop_at is not None and stop_at <= now)
            ):
                write = self._pending.popleft()
                if not write.done:
                    expired.append(write)
            self.aborted += abort_connections((w.local, w.peer) for w in expired)
            await trio.lowlevel.checkpoint()


def _address(value: Any) -> Address | None:
    if not value or len(value) < 2:
        return None
    return (str(value[0]), int(value[1]))


def abort_connections(connections: Iterable[tuple[Address | None, Address | None]]) -> int:
    """Reset the TCP connections of this process with these (local, peer) addresses.

    ASGI does not hand the app its socket, but the two addresses name a connection exactly:
    look them up among this process's socket descriptors. The socket is shut down, not closed
    (hypercorn owns the descriptor and closes it); ``SO_LINGER`` 0 makes that close a reset,
    which frees the kernel's send buffer at once instead of probing a closed window for minutes.
    """
    wanted = {(local, peer) for local, peer in connections if local and peer}
    if not wanted:
        return 0
    aborted = 0
    for fd in _descriptors():
        try:
            if not stat.S_ISSOCK(os.fstat(fd).st_mode):
                continue
            sock = socket.socket(fileno=fd)
        except OSError:
            continue
        try:
            if sock.family not in (socket.AF_INET, socket.AF_INET6):
                continue
            key = (_address(sock.getsockname()), _address(sock.getpeername()))
            if key not in wanted:
                continue
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.shutdown(socket.SHUT_RDWR)
            aborted += 1
            wanted.discard(key)
        except OSError:
            continue
        finally:
            sock.detach()  # the descriptor stays hypercorn's
        if not wanted:
            break
    return aborted


def _descriptors() -> list[int]:
    for folder in ("/proc/self/fd", "/dev/fd"):
        with contextlib.suppress(OSError):
            return sorted(int(name) for name in os.listdir(folder) if name.isdigit())
    return list(range(3, 1024))
