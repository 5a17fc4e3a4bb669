"""An EXPERIMENT, not used by logstream: what a leaner send path in hypercorn itself would save.

hypercorn 0.18's trio worker writes every chunk of a response like this (``TCPServer.
protocol_send``): take the connection's ``trio.Lock`` (a checkpoint: one trip through the
scheduler), enter a shielded cancel scope, ``SocketStream.send_all`` (conflict detector,
error translation, a memoryview, ``socket.send`` wrapped in ``_try_sync`` and one more trip
through the scheduler). For an event stream that writes a few hundred bytes at a time, the
socket takes the bytes at once nearly always; the two scheduler trips and the layers around
the one ``send(2)`` are most of the cost.

``install()`` applies ``docs/upstream/hypercorn-trio-fast-send.patch``: when no other send of
the connection is in flight, ``protocol_send`` tries the write directly and yields once (the
checkpoint every trio operation owes); only what the socket does not take goes the old way,
under the lock. The bytes on the wire and their order are the same. It is the patch we would
offer upstream;
``python -m benchmarks.send_cost`` measures it (stacks ``*-fastsend``), and
``python -m benchmarks --hypercorn-fastsend`` applies it to the logstream servers the benchmarks
start (``harness.LOGSTREAM``), so the saving shows per write with 100 and 1,000 clients.
"""

from __future__ import annotations

import os
from typing import Any

import trio


def install() -> None:
    """Apply docs/upstream/hypercorn-trio-fast-send.patch to the imported hypercorn."""
    from hypercorn.events import RawData
    from hypercorn.trio.tcp_server import TCPServer

    original = TCPServer.protocol_send

    async def protocol_send(self: Any, event: Any) -> None:
        if (
            isinstance(event, RawData)
            and isinstance(self.stream, trio.SocketStream)
            and not self.send_lock.locked()
        ):
            try:
                sent = os.write(self.stream.socket.fileno(), event.data)
            except OSError:  # BlockingIOError, or broken: the old path reports it
                sent = 0
            if sent == len(event.data):
                await trio.lowlevel.cancel_shielded_checkpoint()
                return
            if sent:
                event = RawData(data=bytes(memoryview(event.data)[sent:]))
        await original(self, event)

    TCPServer.protocol_send = protocol_send  # type: ignore[method-assign]
