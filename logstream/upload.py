"""The runner's upload state machine: what the server has, what to send next, when to retry.

Theory of operation
-------------------
The runner keeps every line in its own data directory and uploads from there; this object only
decides. ``acked`` is the last line the server said it has: every answer of the server carries
it, a refused block (a gap) too, so after any failure the runner resumes exactly at the first
line the server lacks, and since the server ignores what it already has, sending a block twice
is harmless. One request is in flight at a time and it carries everything the runner has beyond
``acked`` (up to a byte budget): under a slow trickle every line leaves at once, under a flood
requests grow instead of multiplying.

Trouble (the server unreachable, a cut connection, no answer, a refusal, a server error) never
stops the job: the driver waits ``Backoff.next_delay()`` (exponential, with jitter so that a
hundred runners do not come back in step) and tries again, from a fresh job creation, which
tells it the server's ``acked``. Each kind of trouble is reported once (``notice``), not once per
retry; after trouble, the first success is reported once too.
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass, field

INITIAL_DELAY_S = 0.05
MAX_DELAY_S = 5.0


class Trouble(enum.Enum):
    """A kind of upload failure; each is reported once per job."""

    UNREACHABLE = "cannot reach the log server"
    CUT = "lost the connection to the log server"
    TIMEOUT = "the log server does not answer"
    REFUSED = "the log server refuses this runner"
    SERVER_ERROR = "the log server fails"
    REJECTED = "the log server rejects an upload"


class Step(enum.Enum):
    CREATE = "create"  # (re)create the job: learns what the server has
    SEND = "send"  # upload lines after ``acked``
    END = "end"  # record the end
    WAIT = "wait"  # wait for new lines or the end of the job
    DONE = "done"  # the server has every line and the end


@dataclass
class Backoff:
    """Exponential backoff with jitter: ``uniform(cap / 2, cap)``, ``cap = initial * 2**n``.

    The cap stops growing at ``max_s``. Never less than half the cap, so a server that just
    failed is not hit again at once.
    """

    initial_s: float = INITIAL_DELAY_S
    max_s: float = MAX_DELAY_S
    rng: random.Random = field(default_factory=random.Random)
    failures: int = 0

    def next_delay(self) -> float:
        cap = min(self.max_s, self.initial_s * 2**self.failures)
        self.failures = min(self.failures + 1, 32)
        return self.rng.uniform(cap / 2, cap)

    def reset(self) -> None:
        self.failures = 0


@dataclass
class UploadState:
    """What the server has of one job and what the runner does next."""

    backoff: Backoff = field(default_factory=Backoff)
    #: The last line the server has (as it last said).
    acked: int = 0
    created: bool = False
    ended: bool = False
    #: Kinds of trouble already reported.
    noticed: set[Trouble] = field(default_factory=set)
    _troubled: bool = False
    _recovery_noticed: bool = False

    def next_step(self, lines: int, job_ended: bool) -> Step:
        """The next thing to do, given the runner's ``lines`` and whether the job ended."""
        if self.ended:
            return Step.DONE
        if not self.created:
            return Step.CREATE
        if self.acked < lines:
            return Step.SEND
        return Step.END if job_ended else Step.WAIT

    def on_created(self, last: int, ended: bool = False) -> str | None:
        """The job exists on the server, which has lines up to ``last`` (and its end, maybe).

        The server records an end only once it has every line, so an ended job is done.
        """
        self.created = True
        self.acked = last
        self.ended = ended
        return self._succeeded()

    def on_acked(self, last: int) -> str | None:
        """The server answered an upload: it has lines up to ``last``."""
        self.acked = last
        return self._succeeded()

    def on_gap(self, last: int) -> None:
        """The server refused a block that would leave a hole: resume after its ``last``."""
        self.acked = last

    def on_ended(self) -> str | None:
        self.ended = True
        return self._succeeded()

    def on_trouble(self, kind: Trouble, detail: str) -> tuple[float, str | None]:
        """A request failed: the delay before the next try, and a notice the first time."""
        self.created = False  # the next try starts by asking the server what it has
        self._troubled = True
        notice = None
        if kind not in self.noticed:
            self.noticed.add(kind)
            notice = f"{kind.value} ({detail})"
        return self.backoff.next_delay(), notice

    def _succeeded(self) -> str | None:
        self.backoff.reset()
        if self._troubled and not self._recovery_noticed:
            self._troubled = False
            self._recovery_noticed = True
            return "uploading again"
        self._troubled = False
        return None
