"""A real ``redis-server`` of the test's own: a temporary directory, a unix socket, killed after.

Never a system service: each test that needs Redis starts one here (Debian's ``redis-server``,
which ``scripts/test.sh`` installs when missing). ``kill`` (SIGKILL) and ``start`` again on the
same directory and socket let a test restart Redis mid-job; with ``appendonly`` the restarted
server reloads everything its append-only file holds.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
READY_DEADLINE_S = 30.0


class RedisServer:
    """One ``redis-server`` process; ``url`` reaches it over its unix socket."""

    def __init__(self, appendonly: bool = False, *, fsync: str = "always") -> None:
        # A short path: unix socket paths are limited to 108 bytes, pytest's tmp_path may not be.
        self.dir = Path(tempfile.mkdtemp(prefix="lsredis-"))
        self.socket = self.dir / "redis.sock"
        self.appendonly = appendonly
        self.fsync = fsync
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def start(self) -> None:
        """Start (or restart) the server and return once it answers."""
        assert self.process is None or self.process.poll() is not None
        with open(self.dir / "redis.log", "ab") as log:
            options = {
                "port": "0",
                "unixsocket": str(self.socket),
                "unixsocketperm": "700",
                "dir": str(self.dir),
                "save": "",
                "appendonly": "yes" if self.appendonly else "no",
                "appendfsync": self.fsync,
                "maxmemory-policy": "noeviction",
                "daemonize": "no",
            }
            self.process = subprocess.Popen(
                [
                    REDIS_SERVER,
                    *(arg for name, value in options.items() for arg in (f"--{name}", value)),
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.wait_ready()

    def wait_ready(self) -> None:
        deadline = time.monotonic() + READY_DEADLINE_S
        while True:
            assert self.process is not None
            if self.process.poll() is not None:
                log = (self.dir / "redis.log").read_text(errors="replace")
                raise AssertionError(f"redis-server exited {self.process.returncode}: {log}")
            if self._answers_ping():
                return
            if time.monotonic() > deadline:
                raise AssertionError("redis-server did not answer in time")
            time.sleep(0.01)  # polling a process we do not control; bounded by the deadline

    def _answers_ping(self) -> bool:
        try:
            with socket.socket(socket.AF_UNIX) as client:
                client.settimeout(1.0)
                client.connect(str(self.socket))
                client.sendall(b"PING\r\n")
                return client.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def kill(self) -> None:
        """SIGKILL: whatever Redis had not written to its append-only file is gone."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()
        # A dead server leaves its socket file: remove it so clients fail to connect at once.
        self.socket.unlink(missing_ok=True)

    def close(self) -> None:
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


def redis_available() -> bool:
    return os.access(REDIS_SERVER, os.X_OK)


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A fresh ``redis-server`` (no persistence) for one test."""
    server = RedisServer()
    server.start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def redis_aof() -> Iterator[RedisServer]:
    """A fresh ``redis-server`` with the append-only file fsynced on every write."""
    server = RedisServer(appendonly=True)
    server.start()
    try:
        yield server
    finally:
        server.close()
