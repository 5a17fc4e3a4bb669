"""An EXPERIMENT, not used by logstream: what a leaner send path in hypercorn itself would save.

hypercorn 0.18's trio worker writes every chunk of a response like this (``TCPServer.
protocol_send``): take the connection's ``trio.Lock`` (a checkpoint: one trip through the
scheduler), enter a shielded cancel scope, ``SocketStream.send_all`` (conflict detector,
error translation, a memoryview, ``socket.send`` wrapped in ``_try_sync`` and one more trip
through the scheduler). For an event stream that writes a few hundred bytes at a time, the
socket takes the bytes at once nearly always; the two scheduler trips and the layers around
the one ``send(2)`` are most of the cost.

``install()`` replaces ``protocol_send`` with a version that, when no other send of the
connection is in flight, tries the ``send(2)`` directly and yields once (the checkpoint every
trio operation owes); only what the socket does not take goes the old way, under the lock.
The bytes on the wire and their order are the same. It is the patch we would offer upstream;
``python -m benchmarks.send_cost`` measures it (stacks ``*-fastsend``), and
``python -m benchmarks --hypercorn-fastsend`` applies it to the logstream servers the benchmarks
start (``harness.LOGSTREAM``), so the saving shows per write with 100 and 1,000 clients.
"""

from __future__ import annotations

from typing import Any

import trio


def install() -> None:
    from hypercorn.events import Closed, RawData
    from hypercorn.trio.tcp_server import TCPServer

    original = TCPServer.protocol_send

    async def protocol_send(self: Any, event: Any) -> None:
        if not isinstance(event, RawData) or self.send_lock.locked():
            await original(self, event)
            return
        data = event.data
        try:
            sent = self.stream.socket._sock.send(data)
        except BlockingIOError:
            sent = 0
        except OSError:
            await original(self, event)  # let the old path report the broken connection
            return
        if sent == len(data):
            await trio.lowlevel.cancel_shielded_checkpoint()
            return
        try:
            async with self.send_lock:
                with trio.CancelScope(shield=True):
                    await self.stream.send_all(memoryview(data)[sent:])
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            await self.protocol.handle(Closed())

    TCPServer.protocol_send = protocol_send  # type: ignore[method-assign]
