"""How ``logstream run`` finds a ``logstream serve`` running on the same data directory.

Theory of operation
-------------------
``serve`` writes ``<data-dir>/servers/<pid>.json`` (``{"url": ..., "pid": ...}``) once it
listens, holds an exclusive ``flock`` on it for as long as it runs, and removes it on exit. The
kernel drops the lock when the process dies, even by ``kill -9``, so a file whose lock is free is
stale: ``running_server_url`` skips it and removes it. A ``run`` that finds a live one names that
server's page for its job, which outlives the run, and needs no port of its own: the server
follows the job's files like those of any other process.

The data directory is private to its user (0700), so nobody else can plant a file here.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from pathlib import Path

SERVERS = "servers"


@contextlib.contextmanager
def announce_server(data_dir: Path, url: str) -> Iterator[Path]:
    """Say that a server for ``data_dir`` listens at ``url`` while the block runs."""
    folder = data_dir / SERVERS
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = folder / f"{os.getpid()}.json"
    # Locked and written under another name first: a reader never sees it unlocked or empty.
    temporary = folder / f".{os.getpid()}.tmp"
    fd = os.open(temporary, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, json.dumps({"url": url, "pid": os.getpid()}).encode())
        os.replace(temporary, path)
        yield path
    finally:
        with contextlib.suppress(OSError):
            path.unlink()
        os.close(fd)


def running_server_url(data_dir: Path) -> str | None:
    """The URL of a live ``serve`` on ``data_dir`` (the newest one), or ``None``."""
    folder = data_dir / SERVERS
    try:
        paths = sorted(folder.glob("*.json"), key=_mtime, reverse=True)
    except OSError:
        return None
    for path in paths:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                url = _read_url(fd)  # locked: its server runs
                if url:
                    return url
                continue
            # Nobody holds the lock: that server is gone without cleaning up.
            with contextlib.suppress(OSError):
                path.unlink()
        finally:
            os.close(fd)
    return None


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def _read_url(fd: int) -> str | None:
    try:
        data = json.loads(os.read(fd, 64 * 1024))
    except (OSError, ValueError):
        return None
    url = data.get("url") if isinstance(data, dict) else None
    return url if isinstance(url, str) and url.startswith(("http://", "https://")) else None
