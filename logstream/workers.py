"""``serve --workers N``: N node processes sharing one port, so one machine uses all its cores.

Theory of operation
-------------------
Python serves on one core per process; a node is cheap to multiply because every node keeps
its jobs in Redis and any node can serve any request. The parent binds the port first with
``SO_REUSEPORT`` (so ``--port 0`` and the default port's fallback resolve to one real port, and
nothing else can take it meanwhile), then starts N ``logstream serve`` children on that port,
each binding its own ``SO_REUSEPORT`` socket: the kernel spreads new connections over them.

The parent copies the children's stderr to its own, line by line, except their own "serving
at" lines: it prints a single one when every child listens. SIGINT/SIGTERM are passed to every
child and the parent exits once they have. A child that exits on its own (killed, crashed) is
reported and started again: its clients reconnect, to any node, and lose nothing.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Sequence

import trio

#: Set in a child's environment: bind with SO_REUSEPORT, do not print the "serving at" line.
WORKER_ENV = "LOGSTREAM_WORKER"
SERVING_PREFIX = b"logstream: serving at "
RESTART_DELAY_S = 1.0


def worker_argv(args: Sequence[str]) -> list[str]:
    """The arguments of ``logstream serve --workers N ...`` for one worker: without
    ``--workers`` and ``--port`` (the worker is given the port the parent holds)."""
    kept: list[str] = []
    skip = False
    for arg in args:
        if skip:
            skip = False
            continue
        if arg in ("--workers", "--port"):
            skip = True
            continue
        if arg.startswith(("--workers=", "--port=")):
            continue
        kept.append(arg)
    return kept


class Workers:
    """Runs ``count`` children of ``argv`` (``--port PORT`` appended) until a signal."""

    def __init__(
        self,
        count: int,
        argv: Sequence[str],
        port: int,
        url: str,
        say: Callable[[str], None],
    ) -> None:
        self.count = count
        self.argv = [*argv, "--port", str(port)]
        self.url = url
        self.say = say
        self._ready = 0
        self._all_ready = trio.Event()
        self._stopping = trio.Event()
        self._processes: list[trio.Process] = []

    async def run(self) -> int:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with trio.open_nursery() as nursery:
                for number in range(1, self.count + 1):
                    nursery.start_soon(self._keep_running, number)
                nursery.start_soon(self._announce)
                async for signum in signals:
                    self._stopping.set()
                    self.say("shutting down")
                    for process in self._processes:
                        if process.returncode is None:
                            process.send_signal(signum)
                    break
        return 0

    async def _announce(self) -> None:
        await self._all_ready.wait()
        self.say(f"serving at {self.url}/")

    async def _keep_running(self, number: int) -> None:
        first = True
        while not self._stopping.is_set():
            env = {**os.environ, WORKER_ENV: str(number)}
            process = await trio.lowlevel.open_process(
                self.argv, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env
            )
            self._processes.append(process)
            assert process.stderr is not None
            try:
                await self._copy_stderr(process.stderr, count_ready=first)
                code = await process.wait()
            finally:
                self._processes.remove(process)
            if self._stopping.is_set():
                return
            self.say(f"worker {number} exited with status {code}; starting it again")
            first = False
            await trio.sleep(RESTART_DELAY_S)

    async def _copy_stderr(self, stream: trio.abc.ReceiveStream, *, count_ready: bool) -> None:
        buffer = b""
        async with stream:
            while data := await stream.receive_some(65536):
                buffer += data
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    if line.startswith(SERVING_PREFIX):
                        if count_ready:
                            self._ready += 1
                            if self._ready == self.count:
                                self._all_ready.set()
                        continue
                    sys.stderr.buffer.write(line + b"\n")
                    sys.stderr.flush()
        if buffer:
            sys.stderr.buffer.write(buffer + b"\n")
            sys.stderr.flush()
