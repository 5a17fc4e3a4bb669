"""The runner's upload state machine, and its driver against an in-memory server in virtual time."""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass, field
from typing import Any

import pytest
import trio
import trio.testing

from logstream import ingest, sse
from logstream.backends.protocol import Cursor, Read
from logstream.job import Job
from logstream.problemlog import ProblemList
from logstream.remote import HEARTBEAT_S, Gap, Uploader, UploadFailed
from logstream.ring import Block, Ring
from logstream.upload import INITIAL_DELAY_S, MAX_DELAY_S, Backoff, Step, Trouble, UploadState


def test_steps_follow_what_the_server_has() -> None:
    state = UploadState()
    assert state.next_step(0, False) is Step.CREATE
    state.on_created(0)
    assert state.next_step(0, False) is Step.WAIT
    assert state.next_step(5, False) is Step.SEND
    state.on_acked(5)
    assert state.next_step(5, False) is Step.WAIT
    assert state.next_step(5, True) is Step.END
    state.on_gap(2)  # the server lost lines 3-5 (a restart): send them again
    assert state.next_step(5, True) is Step.SEND
    state.on_acked(5)
    state.on_ended()
    assert state.next_step(5, True) is Step.DONE


def test_a_server_that_has_the_end_already_is_done() -> None:
    state = UploadState()
    state.on_created(7, ended=True)
    assert state.next_step(7, True) is Step.DONE


def test_each_kind_of_trouble_is_reported_once_and_recovery_once() -> None:
    state = UploadState(backoff=Backoff(rng=random.Random(1)))
    notices = []
    for kind in [Trouble.UNREACHABLE] * 5 + [Trouble.CUT] * 3 + [Trouble.UNREACHABLE]:
        _delay, notice = state.on_trouble(kind, "detail")
        notices.append(notice)
        assert state.next_step(10, False) is Step.CREATE
    assert [n for n in notices if n] == [
        "cannot reach the log server (detail)",
        "lost the connection to the log server (detail)",
    ]
    assert state.on_created(3) == "uploading again"
    state.on_trouble(Trouble.CUT, "again")
    assert state.on_created(3) is None


def test_backoff_grows_with_jitter_up_to_its_cap_and_resets() -> None:
    backoff = Backoff(initial_s=0.1, max_s=5.0, rng=random.Random(2))
    delays = [backoff.next_delay() for _ in range(12)]
    caps = [min(5.0, 0.1 * 2**n) for n in range(12)]
    for delay, cap in zip(delays, caps, strict=True):
        assert cap / 2 <= delay <= cap
    assert len(set(delays)) == len(delays)  # jittered: runners do not retry in step
    backoff.reset()
    assert backoff.next_delay() <= 0.1


class MemoryLog:
    """A job's log in memory, as the uploader reads it (the runner's LiveLog in production)."""

    interruptible_wait = False

    def __init__(self) -> None:
        self.ring = Ring(max_lines=10**9)
        self._job = Job(id="j", name="j", command=["j"])
        self._changed = trio.Event()

    @property
    def job(self) -> Job:
        return self._job

    @property
    def last(self) -> int:
        return self.ring.last

    def append(self, lines: list[str]) -> None:
        first = self.ring.last + 1
        payload = sse.encode_lines(first, lines)
        self.ring.append(Block(first, first + len(lines) - 1, payload, 0))
        self._wake()

    def finish(self, exit_code: int) -> None:
        self._job = self._job.ending("succeeded" if exit_code == 0 else "failed", exit_code)
        self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def read_problems(self) -> ProblemList:
        return ProblemList()

    async def read_after(self, cursor: Cursor, max_bytes: int = 1 << 20) -> Read:
        chunk = self.ring.read_after(cursor.seq, max_bytes)
        assert chunk is not None
        return Read(chunk, cursor.seq + 1, Cursor(chunk.last))

    async def refresh(self, max_age_s: float = 0.0) -> None:
        pass

    async def wait_beyond(self, seq: int) -> None:
        if self.ring.last <= seq and not self._job.ended:
            await self._changed.wait()


@dataclass
class MemoryServer:
    """The server's ingest rules, in memory: repeats ignored, holes refused, faults on demand."""

    server: str = "http://memory"
    lines: list[int] = field(default_factory=list)
    ended: tuple[str, int | None] | None = None
    #: Each request pops the next fault, if any, and fails with it.
    faults: list[Trouble] = field(default_factory=list)
    requests: list[tuple[float, str]] = field(default_factory=list)

    def _enter(self, what: str) -> None:
        self.requests.append((trio.current_time(), what))
        if self.faults:
            raise UploadFailed(self.faults.pop(0), "injected")

    async def create(self, job_id: str, spec: dict[str, Any]) -> tuple[int, bool]:
        await trio.sleep(0.001)
        self._enter("create")
        return len(self.lines), self.ended is not None

    async def send(self, job_id: str, records: bytes) -> int:
        await trio.sleep(0.001)
        self._enter("send")
        rest = ingest.parse_records(records).after(len(self.lines))
        if rest is not None:
            if rest.first != len(self.lines) + 1:
                raise Gap(len(self.lines))
            self.lines += range(rest.first, rest.last + 1)
        return len(self.lines)

    async def end(self, job_id: str, status: str, exit_code: int | None, lines: int) -> None:
        await trio.sleep(0.001)
        self._enter("end")
        if lines != len(self.lines):
            raise Gap(len(self.lines))
        self.ended = (status, exit_code)

    def forget_after(self, last: int) -> None:
        """A restart that lost what was not on disk yet."""
        del self.lines[last:]


@pytest.fixture
def clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


def uploader(server: MemoryServer, log: MemoryLog, notices: list[str]) -> Uploader:
    return Uploader(server, "j", {"name": "j"}, log, notify=notices.append, upload_bytes=4096)


async def test_trouble_is_retried_with_backoff_and_reported_once(
    clock: trio.testing.MockClock,
) -> None:
    server, log, notices = MemoryServer(), MemoryLog(), list[str]()
    server.faults = [Trouble.UNREACHABLE] * 8 + [Trouble.SERVER_ERROR] * 3
    log.append([f"line {n}" for n in range(1, 101)])
    log.finish(0)
    async with trio.open_nursery() as nursery:
        up = uploader(server, log, notices)
        nursery.start_soon(up.run)
        await up.wait_done()
    assert server.lines == list(range(1, 101))
    assert server.ended == ("succeeded", 0)
    assert notices == [
        "cannot reach the log server (injected); the job goes on and its lines are kept",
        "the log server fails (injected); the job goes on and its lines are kept",
        "uploading again to http://memory",
    ]
    times = [at for at, _what in server.requests]
    waits = [later - earlier for earlier, later in itertools.pairwise(times[:12])]
    # Waits grow (with jitter) and stop growing at the cap; each request itself takes 1 ms.
    for failures, wait in enumerate(waits):
        cap = min(MAX_DELAY_S, INITIAL_DELAY_S * 2**failures)
        assert cap / 2 <= wait - 0.001 <= cap + 1e-9, (failures, wait)
    assert waits[-1] >= MAX_DELAY_S / 2


async def test_a_server_that_lost_lines_gets_them_again_once(
    clock: trio.testing.MockClock,
) -> None:
    server, log, notices = MemoryServer(), MemoryLog(), list[str]()
    async with trio.open_nursery() as nursery:
        up = uploader(server, log, notices)
        nursery.start_soon(up.run)
        for first in range(1, 2001, 100):
            log.append([f"line {n}" for n in range(first, first + 100)])
            await trio.sleep(0.01)
            if first == 1001:
                server.forget_after(700)
                server.faults = [Trouble.CUT]
        log.finish(3)
        await up.wait_done()
    assert server.lines == list(range(1, 2001))
    assert server.ended == ("failed", 3)


async def test_a_quiet_command_keeps_its_runner_alive_with_heartbeats(
    clock: trio.testing.MockClock,
) -> None:
    server, log, notices = MemoryServer(), MemoryLog(), list[str]()
    async with trio.open_nursery() as nursery:
        up = uploader(server, log, notices)
        nursery.start_soon(up.run)
        await trio.sleep(HEARTBEAT_S * 3.5)
        log.append(["at last"])
        log.finish(0)
        await up.wait_done()
    creates = [at for at, what in server.requests if what == "create"]
    assert len(creates) == 4
    assert [round(b - a) for a, b in itertools.pairwise(creates)] == [30, 30, 30]
    assert server.lines == [1]
    assert notices == []
