"""One typed settings object for the server, passed explicitly (hypercorn's ``Config`` style).

Pure: no trio, no I/O."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

from logstream.matchers import Matcher
from logstream.ring import DEFAULT_RING_LINES

DEFAULT_PORT = 8765


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    host: str = "127.0.0.1"
    #: ``None``: the default port, or any free port when it is taken.
    port: int | None = None
    ring_lines: int = DEFAULT_RING_LINES
    token: str | None = None
    #: The token remote runners send (``None``: the viewer token admits runners too).
    ingest_token: str | None = None
    #: A remote job whose runner sends nothing for this long shows as interrupted.
    runner_timeout_s: float = 120.0
    no_auth: bool = False
    masks: tuple[str, ...] = ()
    #: Problem matchers every job starts with (``--matchers FILE``), before the built-in ones.
    matchers: tuple[Matcher, ...] = ()
    max_streams: int | None = None
    cors_origin: str | None = None
    certfile: Path | None = None
    keyfile: Path | None = None
    keepalive_s: float = 15.0
    retry_ms: int = 1000
    #: ``retry:`` sent to a stream refused because ``max_streams`` are open.
    busy_retry_ms: int = 10_000
    #: A client whose connection takes no data for this long is disconnected (it resumes
    #: later from disk); also the TCP user timeout that finds vanished peers.
    write_timeout_s: float = 30.0
    #: Most bytes an event stream sends in one write (at least one block of the ring). A stuck
    #: client holds one such write, and a client is stuck when one write takes write_timeout_s.
    stream_chunk_bytes: int = 128 * 1024
    keep_alive_timeout_s: float = 5.0
    graceful_timeout_s: float = 3.0
    #: Keep every job in the Redis at this URL (many nodes) instead of the data directory.
    redis_url: str | None = None
    #: With Redis: a job whose node stops renewing its lease for this long reads as
    #: interrupted on every node.
    lease_s: float = 10.0
    #: ``SO_REUSEPORT`` on the listening socket: other processes serve the same port.
    reuse_port: bool = False

    @property
    def scheme(self) -> str:
        return "https" if self.certfile else "http"

    def check_exposure(self) -> None:
        """Refuse (``ValueError``) to serve logs beyond loopback without a token, unless
        ``no_auth`` says so: secure by default."""
        if not is_loopback(self.host) and not self.token and not self.no_auth:
            raise ValueError(f"refusing to listen on {self.host} without a token")


def is_loopback(host: str) -> bool:
    """Whether ``host`` is in 127.0.0.0/8 or ::1 (``localhost`` counts)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
