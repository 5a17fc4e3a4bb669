"""One typed settings object for the server, passed explicitly (hypercorn's ``Config`` style).

Pure: no trio, no I/O."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from logstream.hosts import HostPolicy, is_loopback_name
from logstream.mask import Masker
from logstream.matchers import Matcher
from logstream.ring import DEFAULT_RING_LINES

DEFAULT_PORT = 8765
#: Event streams (job logs and the job list) one server keeps open at most by default. A
#: stream costs little, but one whose client stalls holds up to ``stream_chunk_bytes`` in
#: flight: unbounded, enough connections exhaust memory and file descriptors.
DEFAULT_MAX_STREAMS = 2000
#: Environment variables that carry logstream's own tokens: never passed on to a job.
TOKEN_VARIABLES = ("LOGSTREAM_TOKEN", "LOGSTREAM_INGEST_TOKEN")


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
    #: ``None``: no limit (only for tests and embedding; the command line always sets one).
    max_streams: int | None = DEFAULT_MAX_STREAMS
    #: Host names served besides loopback when there is no token (DNS rebinding defence).
    allow_hosts: tuple[str, ...] = ()
    #: Problem matchers every job starts with (``--matchers FILE``), before the built-in ones.
    matchers: tuple[Matcher, ...] = ()
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
    #: Most bytes an event stream sends in one write (at least one line: a larger block is
    #: cut at a record), to a client that keeps taking what it is sent (``EventStream``).
    stream_chunk_bytes: int = 256 * 1024
    #: What a new client, or one that made a write wait, gets per write; it doubles once
    #: 256 KiB went out since (``EventStream.written``). A
    #: stuck client holds one such piece (and hypercorn's framed copy of it); it is stuck
    #: when one write takes write_timeout_s.
    stream_min_chunk_bytes: int = 16 * 1024
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

    def job_masker(self, environ: Mapping[str, str] = os.environ) -> Masker:
        """A masker for one job: the ``--mask`` variables' values and every token value."""
        tokens = [
            self.token,
            self.ingest_token,
            *(environ.get(name) for name in TOKEN_VARIABLES),
        ]
        return Masker.from_env(self.masks, environ, secrets=tokens)

    def host_policy(self) -> HostPolicy:
        """Which ``Host`` and ``Origin`` values requests may carry (docs/security.md)."""
        return HostPolicy.build(
            bind_host=self.host,
            allow_hosts=self.allow_hosts,
            token=bool(self.token),
            cors_origin=self.cors_origin,
        )

    def check_exposure(self) -> None:
        """Refuse (``ValueError``) to serve logs beyond loopback without a token, unless
        ``no_auth`` says so: secure by default."""
        if not is_loopback(self.host) and not self.token and not self.no_auth:
            raise ValueError(f"refusing to listen on {self.host} without a token")


def is_loopback(host: str) -> bool:
    """Whether ``host`` is in 127.0.0.0/8 or ::1 (``localhost`` counts)."""
    return is_loopback_name(host.strip("[]"))
