"""logstream: live build logs over Server-Sent Events.

The Python API (``logstream.open_server`` and friends, see ``logstream.api``) is loaded on first
use, so importing a pure module such as ``logstream.sse`` does not pull in trio or quart.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["JobResult", "RunningJob", "Server", "open_server"]

if TYPE_CHECKING:
    from logstream.api import JobResult, RunningJob, Server, open_server


def __getattr__(name: str) -> Any:
    if name in __all__:
        from logstream import api

        return getattr(api, name)
    raise AttributeError(f"module 'logstream' has no attribute {name!r}")
