"""Connection-level defences: a write deadline for stuck clients, TCP options for dead peers.

Theory of operation
-------------------
A stream never holds more than one chunk of its own: it reads the log after its cursor and
sends that, and ASGI ``send`` returns only once hypercorn has written the bytes to the socket.
A client that reads slowly is therefore served at its own pace, from the ring or from disk,
and costs one chunk. A client that stops reading costs one chunk too, but it would hold its
task, its socket and its ``--max-streams`` slot forever: hypercorn's trio worker writes in a
cancel-shielded scope, so no timeout around ``send`` can free it.

``WriteDeadline`` (ASGI middleware, outermost) notes on each connection when its pending
``send`` started. One watchdog task sleeps until the oldest pending send's deadline
(``write_timeout_s`` after it started: sends start in time order and share the timeout, so
that is the next to expire), then walks the open connections once. A send still unfinished at
its deadline means a stuck client: the watchdog finds that connection's socket by its two
addresses and aborts it (``SO_LINGER`` 0, then ``shutdown``). The blocked write then fails,
hypercorn closes the connection, the app sees a disconnect and the stream's slot is free. The
client resumes from disk when it comes back.

When the server stops, pending sends get ``SHUTDOWN_GRACE_S`` more and are aborted after it,
so a stuck client cannot hold a shutdown; the watchdog is shielded for that bounded time.

A peer that vanished without a FIN or RST (a laptop that lost Wi-Fi) accepts no data: the
kernel sees the keep-alive comments go unacknowledged, and ``TCP_USER_TIMEOUT`` (set on the
listening socket, inherited by every accepted one) closes the connection after the same
``write_timeout_s``. TCP keep-alive probes find dead peers on connections that send nothing.
"""

from __future__ import annotations

import contextlib
import math
import os
import socket
import stat
import struct
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
class _Connection:
    """One HTTP request's connection, as the watchdog sees it."""

    local: Address | None
    peer: Address | None
    #: When the pending ``send`` started (``None``: none is pending).
    sending_since: float | None = None


class WriteDeadline:
    """ASGI middleware: a connection whose write is pending ``write_timeout_s`` is aborted.

    A send costs two attribute stores and a clock read: nothing is allocated per write (a
    record per send, kept until the watchdog's next wake-up, once held tens of thousands of
    objects that every full garbage collection walked).
    """

    def __init__(self, app: ASGIApp, write_timeout_s: float, stop: trio.Event) -> None:
        self.app = app
        self.write_timeout_s = write_timeout_s
        self.stop = stop
        self.aborted = 0
        self._connections: set[_Connection] = set()
        #: The watchdog waits for a first send (no send was pending when it last looked).
        self._idle = False
        self._send_started = trio.Event()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        connection = _Connection(_address(scope.get("server")), _address(scope.get("client")))

        async def send_with_deadline(message: Message) -> None:
            connection.sending_since = trio.current_time()
            if self._idle:
                self._idle = False
                self._send_started.set()
            try:
                await send(message)
            finally:
                connection.sending_since = None

        self._connections.add(connection)
        try:
            await self.app(scope, receive, send_with_deadline)
        finally:
            self._connections.discard(connection)

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
        """Sleep until the oldest pending send's deadline, then cut what is overdue.

        Sends start in time order and all get the same deadline, so the next one to expire
        is the oldest pending; finding it walks the open connections once per wake-up (about
        once per ``write_timeout_s`` while writes keep finishing in time).
        """
        stop_at = trio.current_time() + SHUTDOWN_GRACE_S if final else None
        while True:
            if stop_at is None and self.stop.is_set():
                stop_at = trio.current_time() + SHUTDOWN_GRACE_S
            now = trio.current_time()
            overdue: list[_Connection] = []
            next_deadline = math.inf
            for connection in self._connections:
                since = connection.sending_since
                if since is None:
                    continue
                deadline = since + self.write_timeout_s
                if stop_at is not None:
                    deadline = min(deadline, stop_at)
                if deadline <= now:
                    overdue.append(connection)
                else:
                    next_deadline = min(next_deadline, deadline)
            if overdue:
                self.aborted += abort_connections((c.local, c.peer) for c in overdue)
                for connection in overdue:
                    connection.sending_since = None  # cut: its send fails, or is gone
                await trio.lowlevel.checkpoint()
                continue
            if next_deadline == math.inf:
                if final:
                    return
                self._send_started = trio.Event()
                self._idle = True
                if stop_at is None:
                    await wait_any(self._send_started.wait, self.stop.wait)
                else:
                    await self._send_started.wait()
                continue
            if stop_at is None:
                with trio.move_on_at(next_deadline):
                    await self.stop.wait()
            else:
                await trio.sleep_until(next_deadline)


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
