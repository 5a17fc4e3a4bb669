"""When ``tail`` reconnects, what it tells the user, and when it gives up: a pure state object.

Theory of operation
-------------------
The async loop in ``tail`` opens a stream (``attempt_started(now)``) and, when it drops, reports
how it went (``dropped(now, reason, connected=..., progressed=...)``); the answer says what to
print, how long to wait, or that it is time to give up. No I/O and no clock of its own: times
are passed in, so every rule is tested without sockets or sleeping.

- The wait is at least the server's ``retry:`` delay and doubles with each failed attempt, up
  to ``MAX_BACKOFF_S`` (never below the server's delay), times a jitter of 1.0-1.1 that
  spreads clients that lost the same server.
- A stream that delivered a line, or stayed open ``HEALTHY_S``, was healthy: the doubling
  starts over.
- One notice per outage: "connection lost" when the server had answered, "cannot reach"
  when it never did.
- Give up once the server has been unreachable for ``reconnect_for_s`` (0: never), counted
  from the last time it answered.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

MAX_BACKOFF_S = 30.0
#: A connection that stayed open this long was healthy: the backoff starts over.
HEALTHY_S = 10.0


@dataclass(frozen=True)
class Retry:
    """What to do after a dropped stream: print ``notice`` (if any), wait ``delay_s``, retry;
    or, with ``give_up``, stop with that message."""

    delay_s: float
    notice: str | None = None
    give_up: str | None = None


@dataclass
class Reconnect:
    """The reconnect rules of one ``tail`` (see the module's doc)."""

    #: The server, as named in messages.
    server: str
    reconnect_for_s: float
    #: The server's ``retry:`` delay, in milliseconds.
    retry_ms: int
    #: Returns a factor in [1.0, 1.1]; fixed in tests.
    jitter: Callable[[], float] = field(default=lambda: random.uniform(1.0, 1.1))
    failures: int = 0
    _reachable_at: float | None = None
    _connected_at: float = 0.0
    _outage: str | None = None

    def attempt_started(self, now: float) -> None:
        if self._reachable_at is None:
            self._reachable_at = now
        self._connected_at = now

    def dropped(self, now: float, reason: str, *, connected: bool, progressed: bool) -> Retry:
        """The stream begun at the last ``attempt_started`` ended without the job's end."""
        notice = None
        if connected:
            self._reachable_at = now
            if self._outage is None:
                notice = f"connection lost ({reason}); reconnecting"
        elif self._outage is None:
            notice = f"cannot reach {self.server} ({reason}); retrying"
        self._outage = self._outage or reason
        if progressed or now - self._connected_at >= HEALTHY_S:
            self.failures = 0
        reachable_at = now if self._reachable_at is None else self._reachable_at
        if now - reachable_at >= self.reconnect_for_s > 0:
            give_up = (
                f"giving up: {self.server} unreachable for {self.reconnect_for_s:g} s ({reason})"
            )
            return Retry(0.0, notice, give_up)
        delay = self.backoff_s()
        self.failures += 1
        return Retry(delay, notice)

    def backoff_s(self) -> float:
        base = self.retry_ms / 1000
        delay = min(max(base, base * 2.0**self.failures), max(MAX_BACKOFF_S, base))
        return delay * self.jitter()
