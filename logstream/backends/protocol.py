"""The storage seam: where a job's metadata, lines and state live.

Theory of operation
-------------------
Everything above this seam (the runner, the launcher, the catalog, the web app, the CLI) talks
to a ``Backend`` and never learns which one it has. The data directory (``datadir``) is the
default implementation; another (Redis Streams, a central server fed by remote runners) fits
by implementing these protocols, with no branch on its kind anywhere else.

Three roles:

- ``Backend``: the job store as a whole. ``create_job`` makes a job and returns its
  ``JobWriter``; ``open_log`` returns a ``JobLog`` to read a job someone else writes (or wrote);
  ``list_jobs`` and ``wait_changed`` feed the job list; ``runner_alive`` says whether a running
  job's writer is still there (a file lock, a lease, an upload deadline).
- ``JobWriter``: the single writer of one job. Lines arrive already numbered, as ``Block``s
  (``ring.Block``: lines ``first..last`` encoded once as SSE records). ``append_blocks`` is
  idempotent: lines at or below ``last_stored`` are skipped, so a runner may re-send a block
  after a lost acknowledgement. ``finish`` records the end; ``release`` gives the job up
  without an end (readers then see it ``interrupted``, as after ``kill -9``).
- ``JobLog``: a job as readers see it. ``job`` and ``last`` are a snapshot that ``refresh``
  renews; ``read_after(cursor)`` answers the records after the cursor as one chunk, with the
  cursor to continue from; ``wait_beyond(seq)`` waits for more.

Positions are opaque: a ``Cursor`` carries the last sequence number the reader has and a
``position`` only the backend that produced it understands (a file offset, a stream entry ID).
A position of ``None`` means "not known": the backend finds line ``seq + 1`` itself.

Ownership of sequence numbers: whoever runs the command numbers its lines from 1 without gaps
(``LiveLog`` in this process, or a remote runner); a backend stores them as given and refuses a
block that would leave a hole (``StorageError``), never renumbers.

Every method that may wait or do I/O is async; implementations keep blocking work off the event
loop (worker threads for files). Errors: ``errors.UnknownJob`` for an ID that does not exist,
``errors.JobExists`` when a caller-chosen ID is taken, ``OSError`` or ``errors.StorageError``
when storage fails.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from logstream.job import Job
from logstream.problemlog import ProblemList
from logstream.ring import Block, Chunk

__all__ = ["Backend", "Cursor", "Job", "JobLog", "JobWriter", "Position", "Read"]

#: Where a reader is in a job's stored log, as only the backend that produced it understands.
Position = object


@dataclass(frozen=True, slots=True)
class Cursor:
    """A reader's place in a log: the last line it has, and an opaque backend ``position``."""

    seq: int
    position: Position = None


@dataclass(frozen=True, slots=True)
class Read:
    """What ``read_after`` found: the chunk, the first line in it (> cursor+1: a gap), and
    the cursor to continue from (past the chunk)."""

    chunk: Chunk
    first: int
    next: Cursor


class JobLog(Protocol):
    """A job's log as readers see it, whichever backend stores it."""

    #: ``wait_beyond`` parks in a ``wakeups.Changes``, so ``wakeups.interrupt`` can end the
    #: wait early (keep-alive, shutdown) without a cancel scope around every wait.
    interruptible_wait: bool

    @property
    def job(self) -> Job:
        """The job as of the last ``refresh`` (``lines`` equals ``last``)."""
        ...

    @property
    def last(self) -> int:
        """The last line's sequence number known (0: none yet)."""
        ...

    async def refresh(self, max_age_s: float = 0.0) -> None:
        """Make ``job`` and ``last`` come from a read begun at most ``max_age_s`` ago."""
        ...

    async def read_after(self, cursor: Cursor, max_bytes: int = ...) -> Read:
        """The records after ``cursor`` (about ``max_bytes`` at most, at least one line when
        there is one); an empty chunk when nothing newer is stored yet."""
        ...

    async def wait_beyond(self, seq: int) -> None:
        """Return once a line after ``seq`` exists or the job ended (may return early)."""
        ...

    async def read_problems(self) -> ProblemList:
        """The job's problems stored so far, in the order they were found (docs/problems.md)."""
        ...


class JobWriter(Protocol):
    """The single writer of one job's lines and state."""

    @property
    def job(self) -> Job:
        """The job as created (or as last recorded by ``finish``)."""
        ...

    @property
    def last_stored(self) -> int:
        """The last line durably stored (0: none)."""
        ...

    @property
    def batch_interval_s(self) -> float:
        """How long the job's ``LiveLog`` may collect blocks before handing them over: long
        for a disk (one write per interval), short when other nodes read the lines live."""
        ...

    async def append_blocks(self, blocks: Sequence[Block], *, sync: bool = False) -> int:
        """Store ``blocks`` in order; returns ``last_stored``.

        Lines at or below ``last_stored`` are skipped (a re-sent block is ignored); a block
        that starts after ``last_stored + 1`` raises ``StorageError`` (a hole). With ``sync``
        the lines must survive a power loss when this returns; without, a crash of this
        process must not lose them.
        """
        ...

    async def append_problems(self, records: Sequence[bytes]) -> None:
        """Store problems found in the job's lines, one record each (``Found.to_record``);
        called before the blocks holding the lines that completed them are appended, so a
        reader that has a line has its problems."""
        ...

    async def finish(self, job: Job) -> None:
        """Record the job's end (``job`` has its final status, exit code and line count) and
        give up the writer role. Idempotent."""
        ...

    async def release(self) -> None:
        """Stop being the job's writer without an end: readers see it ``interrupted``."""
        ...

    def open_log(self) -> JobLog:
        """A reader of what this writer stored (older lines than a ring holds)."""
        ...


class Backend(Protocol):
    """A store of jobs: their metadata, lines and state."""

    def new_job_id(self) -> str:
        """A fresh, unique, time-ordered, URL-safe job ID."""
        ...

    async def create_job(
        self,
        name: str,
        command: Sequence[str],
        *,
        job_id: str | None = None,
        cwd: str = "",
        pid: int | None = None,
        meta: Mapping[str, Any] | None = None,
        owner: str | None = None,
        started_at: str | None = None,
    ) -> JobWriter:
        """A new running job with no lines, visible to ``list_jobs`` when this returns.

        ``job_id``: chosen by the caller (a remote runner's), else ``new_job_id()``; raises
        ``JobExists`` when taken. The caller is the job's writer until ``finish``/``release``.
        ``owner``: for a remote runner's job, who may append to it (``Job.owner``);
        ``started_at``: when the runner started it (default: now).
        """
        ...

    async def resume_job(self, job_id: str) -> JobWriter:
        """Become the writer of an existing running job again (a remote runner's uploads
        after this server restarted, or on another node). Raises ``UnknownJob``, ``Conflict``
        when the job has ended, ``WriterElsewhere`` (a 503: try again shortly) while another
        writer holds it."""
        ...

    async def open_log(self, job_id: str) -> JobLog:
        """The job's log, refreshed; raises ``UnknownJob``."""
        ...

    async def list_jobs(self, limit: int = 500) -> list[Job]:
        """The newest jobs first."""
        ...

    async def wait_changed(self) -> None:
        """Return when some job may have been created, changed or removed.

        May return early (a polling backend returns after its poll interval); never the
        only way to learn of a change made by this process (the catalog notifies those).
        """
        ...

    async def runner_alive(self, job_id: str) -> bool:
        """Whether a running job's writer is still there."""
        ...

    async def runner_seen(self, job_id: str, for_s: float) -> None:
        """A remote runner was heard from (best effort): on a backend shared by nodes, its job
        reads as running for ``for_s`` even when the node writing it dies meanwhile, since
        the runner resumes it on another node. A single server keeps this in memory."""
        ...

    async def changed_at(self, job_id: str) -> float:
        """Unix time of the job's last stored change (lines, state): how long a remote
        runner has been quiet, when this server cannot have heard from it (a restart)."""
        ...

    async def remove_old_jobs(self, keep_days: float | None, keep_jobs: int | None) -> list[str]:
        """Remove ended jobs older than ``keep_days`` or beyond the newest ``keep_jobs``."""
        ...

    def check_health(self) -> None:
        """Raise ``StorageError`` when the backend cannot serve now (``/healthz``).

        Answers from what the backend already knows (no I/O): a load balancer may ask often.
        """
        ...
