"""A resuming event-stream client for fault tests: reconnects at once with ``Last-Event-ID``.

It keeps what an EventSource keeps (the last complete event's ID) and nothing else, so a stream
cut anywhere, even inside an event, must still give every line exactly once.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import httpx
import trio

from logstream.sse import SSEParser


@dataclass
class ResumingClient:
    url: str
    ids: list[int] = field(default_factory=list)
    connections: int = 0
    failures: int = 0
    ended: bool = False
    progressed: trio.Event = field(default_factory=trio.Event)

    async def run(self, retry_s: float = 0.02) -> None:
        """Follow the job to its end event, reconnecting after every cut or refusal."""
        async with httpx.AsyncClient(timeout=httpx.Timeout(30.0)) as client:
            while not self.ended:
                self.connections += 1
                headers = {"Last-Event-ID": str(self.ids[-1])} if self.ids else {}
                try:
                    async with client.stream("GET", self.url, headers=headers) as response:
                        if response.status_code == 204:
                            self.ended = True
                            break
                        parser = SSEParser()
                        async for data in response.aiter_raw():
                            for event in parser.feed(data):
                                if event.id is not None and event.event != "end":
                                    self.ids.append(int(event.id))
                                elif event.event == "end":
                                    self.ended = True
                            self.progressed.set()
                            self.progressed = trio.Event()
                except httpx.HTTPError:
                    self.failures += 1
                    # The server is down (killed, restarting): wait as EventSource's retry would.
                    await trio.sleep(retry_s)
        self.progressed.set()

    async def wait_for_lines(self, count: int) -> None:
        while len(self.ids) < count and not self.ended:
            await self.progressed.wait()
