"""The log of a job this process writes: a ring of recent lines in front of a backend writer.

Theory of operation
-------------------
``LiveLog`` belongs to a job whose lines reach this process: the runner's, or (through
``append_block``) the already numbered blocks of a runner elsewhere. ``append`` numbers and
encodes lines once into a ``Block``; ``append_block`` takes a block as numbered by its sender
and ignores the lines the log already has, so a re-sent block changes nothing. Neither blocks:
the block goes into the ring and is queued for the writer task, which hands queued blocks to
the backend's ``JobWriter`` at least every ``JobWriter.batch_interval_s`` (200 ms for a disk,
5 ms for Redis). Waiting clients are woken once per block: each wait uses the current
generation's ``trio.Event``, which appending sets and replaces.

Reads (``read_after(cursor)``) answer the records after the cursor as one chunk: from the ring
when it still holds the next line, else from the backend's stored log (``JobWriter.open_log``)
in large blocks. The ring never evicts a block before the backend has stored it, so every line
is always in one or the other. Jobs this process does not write are read straight from the
backend (``Backend.open_log``).
"""

from __future__ import annotations

import sys
import time
import traceback
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import trio

from logstream import logformat, sse
from logstream.backends.protocol import Cursor, Job, JobLog, JobWriter, Read
from logstream.detectproc import DetectorProcess
from logstream.errors import StorageError
from logstream.matchers import Matcher
from logstream.problemlog import Found, ProblemList, Row
from logstream.problems import Detector, Problem, holds_signs
from logstream.ring import DEFAULT_RING_LINES, Block, Ring
from logstream.wakeups import Changes

FLUSH_BYTES = 8 << 20
RELEASED: tuple[str, int | None] = ("released", None)  # ``_closing`` for a job given up
#: A block of at most this many lines with no sign of any rule skips the detector process.
SKIP_MAX_LINES = 64
MAX_PENDING_BYTES = 32 << 20  # beyond this the runner stops reading until the disk catches up
SYNC_INTERVAL_S = 5.0  # fsync of a running job's log: bounds what a power loss can take
TIME_MARK_EVERY_MS = 1000

__all__ = ["Cursor", "JobLog", "LiveLog", "Read"]


class LiveLog:
    """The log of a job this process writes (``JobLog`` for its readers)."""

    interruptible_wait = True

    def __init__(
        self,
        writer: JobWriter,
        ring_lines: int = DEFAULT_RING_LINES,
        max_pending_bytes: int = MAX_PENDING_BYTES,
        *,
        on_write_error: Callable[[str], None] | None = None,
    ) -> None:
        """``on_write_error`` hears, once, that the backend failed (whoever runs the job says
        where that goes: ``logstream run`` prints it on stderr)."""
        self.max_pending_bytes = max_pending_bytes
        self._writer = writer
        self._stored: JobLog | None = None  # opened at the first read the ring cannot answer
        self._job = writer.job
        stored = writer.last_stored  # more than 0 when a writer resumes a job
        self.ring = Ring(max_lines=ring_lines, last=stored, persisted_through=stored)
        self._on_write_error = on_write_error
        #: The first failure of the backend to store this job's lines, if any.
        self.write_error: Exception | None = None
        self._pending: list[Block] = []
        self._pending_bytes = 0
        self.changes = Changes()
        self._queued = trio.Event()
        self._closed = trio.Event()
        self._persisted = trio.Event()
        self._last_mark_ms = 0
        self._ended = False
        self._released = False
        self._writer_ran = False  # ``run_writer`` started: it releases or ends the writer
        #: Finds problems in each block as it is appended, on the event loop, unless
        #: ``detect_elsewhere`` hands that to the detector process (then this one takes over if
        #: that process is lost). Replace it before the first line to give project matchers.
        self.detector = Detector()
        self.problems = ProblemList()
        self._unwritten_problems: list[bytes] = []
        self._next = stored + 1  # the number of the next line appended
        # With the detector process: the blocks held until it answers, and the requests it has
        # not answered (what this process detects instead if it is lost).
        self._detection: DetectorProcess | None = None
        self._detection_key = 0
        self._held: deque[Block] = deque()
        self._held_bytes = 0
        self._unanswered: deque[tuple[int, bool, str, int]] = deque()
        #: Set by ``finish`` (status, exit code) or ``release``: no more lines are taken.
        self._closing: tuple[str, int | None] | None = None
        self._child_needs_every_line = False
        # Per stream (stdout, stderr): lines not sent to the detector process since its last
        # request (count, last text, last line's number).
        self._skipped: list[tuple[int, str, int] | None] = [None, None]

    @property
    def job(self) -> Job:
        return self._job.with_lines(self.ring.last).with_problems(self.problems.shown_counts())

    @property
    def last(self) -> int:
        """The last line readers can have (in the ring)."""
        return self.ring.last

    @property
    def received(self) -> int:
        """The last line taken: readers have it, or will once the detector process has
        answered for it (held blocks). What a remote runner is told the server has."""
        return self._next - 1

    @property
    def ended(self) -> bool:
        """The command ended (its end may not be stored yet)."""
        return self._ended

    @property
    def released(self) -> bool:
        """Given up without an end (``release``): no line will come from this log any more."""
        return self._released

    @property
    def ring_lines(self) -> int:
        """Lines held in memory now."""
        return self.ring.statistics().lines

    async def refresh(self, max_age_s: float = 0.0) -> None:
        """Nothing to do: this process knows its own job's state as it changes."""

    def detect_elsewhere(
        self, process: DetectorProcess, matchers: Sequence[Matcher] = (), cwd: str | None = None
    ) -> None:
        """Detect problems in ``process`` (``detectproc``), with these project matchers and
        ``::add-matcher::`` files read relative to ``cwd``. Before the first line."""
        key = process.open(self, matchers, cwd)
        if key is not None:
            self._detection, self._detection_key = process, key
            self._child_needs_every_line = bool(matchers)

    def append(self, lines: list[str], *, stderr: bool = False, joined: str | None = None) -> None:
        """Add lines read from the command. Never blocks: the runner calls it per read.

        ``joined``, if given, is ``"\\n".join(lines)`` (the runner has it: the detector need not
        join the block again)."""
        if not lines or self._closing is not None:
            return
        first = self._next
        payload = sse.encode_lines(first, lines, stderr=stderr)
        now_ms = time.time_ns() // 1_000_000
        if now_ms - self._last_mark_ms >= TIME_MARK_EVERY_MS:
            payload = sse.encode_time(now_ms) + payload
            self._last_mark_ms = now_ms
        block = Block(first, first + len(lines) - 1, payload, now_ms)
        self._next = block.last + 1
        if self._detection is not None:
            text = "\n".join(lines) if joined is None else joined
            if self._may_skip(len(lines), text):
                self._skip(stderr, len(lines), lines[-1], block.last)
                self._add(block)
                return
            self._detect_elsewhere(first, stderr, text, block.last)
            self._hold(block)
            return
        self._detect_here(first, lines, stderr, block.last, joined)
        self._add(block)

    def append_block(self, block: Block) -> int:
        """Add lines numbered by their sender; returns the last line the log has.

        Lines the log already has are ignored (a re-sent block), and a block that would leave
        a hole raises ``StorageError``. Never blocks.
        """
        expected = self._next
        if self._closing is not None or block.last < expected:
            return expected - 1
        if block.first > expected:
            raise StorageError(f"lines {expected}..{block.first - 1} are missing")
        block = block.after(expected - 1)
        self._next = block.last + 1
        # Numbered elsewhere (a remote runner): its lines are read back from the records, one
        # stream's run at a time, as the runner would have fed them.
        run: list[str] = []
        run_first, run_stderr = block.first, False
        for seq, stream, text in logformat.iter_lines(block.payload):
            if run and (stream == "e") != run_stderr:
                self._detect(run_first, run, run_stderr, seq - 1)
                run = []
            if not run:
                run_first, run_stderr = seq, stream == "e"
            run.append(text)
        if run:
            self._detect(run_first, run, run_stderr, block.last)
        if self._detection is not None:
            self._hold(block)
        else:
            self._add(block)
        return block.last

    def _detect(self, first: int, lines: list[str], stderr: bool, through: int) -> None:
        if self._detection is not None:
            self._detect_elsewhere(first, stderr, "\n".join(lines), through)
        else:
            self._detect_here(first, lines, stderr, through)

    def _detect_here(
        self, first: int, lines: list[str], stderr: bool, through: int, joined: str | None = None
    ) -> None:
        try:
            self._found(self.detector.feed(first, lines, stderr=stderr, joined=joined), through)
        except Exception:
            _rule_failed()

    def _may_skip(self, count: int, text: str) -> bool:
        """Whether these lines may skip the detector process (``detectproc``): few, with no
        sign, while nothing is held and the child said it needs no sign-less line."""
        return (
            count <= SKIP_MAX_LINES
            and not self._unanswered
            and not self._child_needs_every_line
            and not holds_signs(text)
        )

    def _skip(self, stderr: bool, count: int, last_text: str, last_seq: int) -> None:
        skipped = self._skipped[stderr]
        self._skipped[stderr] = (count + (skipped[0] if skipped else 0), last_text, last_seq)

    def _send_skipped(self) -> None:
        """Tell the detector process what it skipped, before the job's next request."""
        assert self._detection is not None
        for stderr, skipped in enumerate(self._skipped):
            if skipped is not None:
                self._detection.skip(self._detection_key, bool(stderr), *skipped)
        self._skipped = [None, None]

    def _detect_elsewhere(self, first: int, stderr: bool, text: str, through: int) -> None:
        assert self._detection is not None
        self._send_skipped()
        self._detection.feed(self._detection_key, first, stderr, text, through)
        self._unanswered.append((first, stderr, text, through))

    def _hold(self, block: Block) -> None:
        """Keep ``block`` until the detector process has its problems (``detected``)."""
        self._held.append(block)
        self._held_bytes += len(block.payload)

    def _release_held(self, through: int) -> None:
        while self._held and self._held[0].last <= through:
            block = self._held.popleft()
            self._held_bytes -= len(block.payload)
            self._add(block)

    def detected(
        self,
        through: int,
        rows: list[Row],
        records: list[bytes],
        last: bool,
        needs_every_line: bool,
    ) -> None:
        """The detector process answered the oldest request: its problems, then its lines."""
        self._child_needs_every_line = needs_every_line
        if last:
            self._detection = None
        else:
            self._unanswered.popleft()
        try:
            if rows:
                self.problems.add_rows(rows)
                self._unwritten_problems.extend(records)
        finally:  # whatever became of its problems, the lines go on
            self._release_held(self._next - 1 if last else through)
            if last:
                self._close()

    def detection_lost(self) -> None:
        """The detector process is gone: what it did not answer is detected here, then
        everything is (``detectproc``)."""
        self._detection = None
        unanswered, self._unanswered = self._unanswered, deque()
        for first, stderr, text, through in unanswered:
            self._detect(first, text.split("\n"), stderr, through)
            self._release_held(through)
        self._release_held(self._next - 1)
        if self._closing is not None and not self._stopping:
            self._close()

    def _add(self, block: Block) -> None:
        self.ring.append(block)
        self._pending.append(block)
        self._pending_bytes += len(block.payload)
        self._queued.set()
        self.changes.notify()

    def release(self) -> None:
        """Give the job up without an end: the writer task stores what is queued, then
        releases the backend's writer (readers see the job ``interrupted`` until someone
        resumes it, as a remote runner's next upload does)."""
        self._end_input(RELEASED)

    async def abandon(self) -> None:
        """Give the job up when it could not be started (``run_writer`` did not run): the
        backend's writer is released here, so the job is not locked out (its run lock, a
        Redis lease) until this process ends."""
        self.release()  # and the detector process forgets the job
        if not self._writer_ran:
            self._writer_ran = True
            await self._close_writer()

    def finish(self, status: str, exit_code: int | None) -> None:
        """The job ended: no more lines. The writer task records the end and stops (once
        the detector process has answered for every line)."""
        self._end_input((status, exit_code))

    def _end_input(self, closing: tuple[str, int | None]) -> None:
        if self._closing is not None:
            return
        self._closing = closing
        if self._detection is not None:
            self._send_skipped()
            self._detection.end(self._detection_key, flush=closing is not RELEASED)
        else:
            self._close()

    def _close(self) -> None:
        assert self._closing is not None
        if self._closing is RELEASED:
            self._released = True
        else:
            try:
                self._found(self.detector.flush(), self.ring.last)
            except Exception:
                _rule_failed()
            self._job = self._job.ending(*self._closing)
            self._ended = True
        self._queued.set()
        self.changes.notify()

    def _found(self, problems: list[Problem], block_last: int) -> None:
        if problems:
            found = [Found(problem, problem.found_at or block_last) for problem in problems]
            self.problems.add(found)
            self._unwritten_problems.extend(item.to_record() for item in found)

    async def read_problems(self) -> ProblemList:
        return self.problems

    async def wait_writable(self) -> None:
        """Wait while the backend is far behind: the command's only backpressure.

        Viewers never slow the command, but a disk slower than the command would otherwise make
        the queue of unwritten blocks (which the ring may not evict) grow without bound. Past
        ``max_pending_bytes`` the runner stops reading, the pipe fills and the command waits,
        just as it would writing to that disk itself.
        """
        while (
            self._pending_bytes + self._held_bytes > self.max_pending_bytes
            and not self._closed.is_set()
        ):
            await self._persisted.wait()

    async def wait_persisted(self, seq: int) -> None:
        """Wait until lines up to ``seq`` are stored by the backend."""
        while self.ring.persisted_through < seq:
            await self._persisted.wait()

    async def wait_closed(self) -> None:
        """Wait until the end is recorded by the backend."""
        await self._closed.wait()

    async def run_writer(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Hand queued blocks to the backend until the job ends, then record the end.

        Cancelled (its start was, or the server's stop ran out of time), it still stores what
        is queued and releases the backend's writer: the job must not stay locked."""
        self._writer_ran = True
        task_status.started()
        try:
            await self._write_until_closing()
        finally:
            await self._close_writer()

    async def _write_until_closing(self) -> None:
        next_sync = trio.current_time() + SYNC_INTERVAL_S
        while True:
            await self._queued.wait()
            if not self._stopping and self._pending_bytes < FLUSH_BYTES:
                # Let a batch build up: one write per interval, not one per read.
                with trio.move_on_after(self._writer.batch_interval_s):
                    while not self._stopping and self._pending_bytes < FLUSH_BYTES:
                        await self.changes.wait()
            self._queued = trio.Event()
            blocks, self._pending, self._pending_bytes = self._pending, [], 0
            sync = bool(blocks) and trio.current_time() >= next_sync
            if sync:
                next_sync = trio.current_time() + SYNC_INTERVAL_S
            # Shielded: a block taken from the queue must reach the backend.
            with trio.CancelScope(shield=True):
                await self._write_problems()
                await self._write_blocks(blocks, sync=sync)
            if self._stopping and not self._pending:
                return

    async def _close_writer(self) -> None:
        """Store what is still queued (only after a cancel), then record the end, or release
        the backend's writer if the job has none."""
        with trio.CancelScope(shield=True):
            blocks, self._pending, self._pending_bytes = self._pending, [], 0
            await self._write_problems()
            await self._write_blocks(blocks, sync=True)
            if self._ended:
                await self._write(self._writer.finish(self.job))
            else:
                await self._write(self._writer.release())
        self._closed.set()
        self._persisted.set()  # nobody waits for a writer that is gone

    async def _write_blocks(self, blocks: list[Block], *, sync: bool) -> None:
        if not blocks:
            return
        if self.write_error is None:
            await self._write(self._writer.append_blocks(blocks, sync=sync))
        self.ring.mark_persisted(blocks[-1].last)
        self._persisted.set()
        self._persisted = trio.Event()

    async def _write_problems(self) -> None:
        """Problems go to the backend before the lines that found them (docs/problems.md)."""
        found, self._unwritten_problems = self._unwritten_problems, []
        if found and self.write_error is None:
            with trio.CancelScope(shield=True):
                await self._write(self._writer.append_problems(found))

    async def _write(self, write: Awaitable[Any]) -> None:
        """Await a backend write; the first failure stops writing this job's lines.

        A full or failing disk must not kill the job or lose its exit status. The stored log
        keeps its whole records (a torn tail is ignored by readers); later lines are served
        from memory while the ring holds them, and a client that needs older ones gets a
        ``gap``. The end is still recorded when it can be.
        """
        try:
            await write
        except (OSError, StorageError) as error:
            if self.write_error is None:
                self.write_error = error
                if self._on_write_error is not None:
                    reason = error.strerror if isinstance(error, OSError) else error.message
                    self._on_write_error(
                        f"logstream: cannot write the log of job {self._job.id}: "
                        f"{reason}; later lines are kept in memory only"
                    )

    async def read_after(self, cursor: Cursor, max_bytes: int = 1 << 20) -> Read:
        chunk = self.ring.read_after(cursor.seq, max_bytes)
        if chunk is not None:
            return Read(chunk, cursor.seq + 1, Cursor(chunk.last) if chunk.payload else cursor)
        if self._stored is None:
            self._stored = self._writer.open_log()
        return await self._stored.read_after(cursor, max_bytes)

    async def wait_beyond(self, seq: int) -> None:
        if self.ring.last > seq or self._stopping:
            return
        await self.changes.wait()

    @property
    def _stopping(self) -> bool:
        return self._ended or self._released


def _rule_failed() -> None:
    """A bug in a rule must not stop the job's lines (as in the detector process): say it."""
    sys.stderr.write("logstream: problem detection failed (the job's lines are kept):\n")
    traceback.print_exc()
