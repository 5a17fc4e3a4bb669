"""The detector process: frames, its shared memory, and jobs that lose it (killed, stuck,
never started) without losing a line or a problem found after the loss."""

from __future__ import annotations

import contextlib
import errno
import os
import random
import signal
import sys
from pathlib import Path
from typing import NoReturn

import httpx
import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from logstream import detectproc, logformat, sse
from logstream.backends.datadir import DataDirBackend
from logstream.catalog import Catalog
from logstream.detectchild import frame, unframe
from logstream.detectproc import SHARED_BYTES, DetectorProcess, shared_process
from logstream.errors import Unavailable
from logstream.ingest import JobEnd, RemoteJobSpec, parse_records
from logstream.joblog import LiveLog
from logstream.problemlog import ProblemList, Row, decode_records
from logstream.problems import Detector
from logstream.remotejobs import RemoteJobs

from .conftest import Server

DEADLINE_S = 30

messages = st.lists(
    st.tuples(st.sampled_from(["feed", "end"]), st.integers(0, 10**9), st.text(max_size=300)),
    max_size=8,
)


@settings(max_examples=200, deadline=None)
@given(sent=messages, cuts=st.lists(st.integers(1, 500), max_size=20))
def test_frames_come_out_whole_however_the_pipe_cuts_them(
    sent: list[tuple[str, int, str]], cuts: list[int]
) -> None:
    data = b"".join(frame(message) for message in sent)
    buffer, position = bytearray(), 0
    received: list[object] = []
    for cut in [*cuts, len(data)]:
        buffer += data[position : position + cut]
        position += cut
        received.extend(unframe(buffer))
    assert received == sent
    assert not buffer


def test_shared_memory_is_a_ring_whose_regions_in_use_never_overlap() -> None:
    process = DetectorProcess()
    rng = random.Random(7)
    in_use: list[tuple[int, int]] = []
    inline = 0
    for _ in range(20_000):
        if in_use and rng.random() < 0.5:
            in_use.pop(0)  # answers come in order: the oldest region is freed first
            process._regions.popleft()
            continue
        size = rng.choice([1, 100, 65_536, SHARED_BYTES // 3, SHARED_BYTES])
        region = process._place(size)
        if region is None:
            inline += 1
            continue
        start, end = region
        assert end - start == size and start >= 0 and end <= SHARED_BYTES
        assert all(end <= a or start >= b for a, b in in_use)
        in_use.append(region)
    assert inline  # a full ring sends the text in the request instead
    assert process._place(SHARED_BYTES + 1) is None


async def job(data_dir: Path) -> tuple[LiveLog, Path]:
    writer = await DataDirBackend(data_dir).create_job("job", ["job"])
    return LiveLog(writer), writer.path


def stored(path: Path) -> tuple[list[int], list[tuple[int, str]]]:
    """The line numbers in the job's log file, and its problems (line, title)."""
    seqs = [seq for seq, _stream, _text in logformat.iter_lines((path / "log").read_bytes())]
    found, _ = decode_records((path / "problems").read_bytes())
    return seqs, [(item.problem.line, item.problem.title) for item in found]


def error_block(n: int) -> list[str]:
    return [f"line {n}.{k}" for k in range(50)] + [f"src/f{n}.c:1:2: error: e{n}"]


async def append_blocks(log: LiveLog, blocks: range) -> None:
    for n in blocks:
        log.append(error_block(n))
        await trio.lowlevel.checkpoint()


async def wait_for_line(log: LiveLog, seq: int) -> None:
    """Until the log lets readers have line ``seq``."""
    with trio.fail_after(DEADLINE_S):
        while log.last < seq:
            await log.wait_beyond(log.last)


async def test_a_job_detects_in_the_child_and_stores_problems_before_their_lines(
    tmp_path: Path,
) -> None:
    log, path = await job(tmp_path)
    process = shared_process()
    log.detect_elsewhere(process)
    async with trio.open_nursery() as nursery:
        await nursery.start(log.run_writer)
        await append_blocks(log, range(20))
        log.append(["Traceback (most recent call last):", '  File "a.py", line 1'])
        log.finish("failed", 1)  # the cut-short traceback is still reported, by the child
        with trio.fail_after(DEADLINE_S):
            await log.wait_closed()
    assert process.pid is not None and not process.lost
    seqs, problems = stored(path)
    assert seqs == list(range(1, 20 * 51 + 3))
    assert problems == [(51 * (n + 1), f"e{n}") for n in range(20)] + [
        (20 * 51 + 1, "Traceback (most recent call last)")
    ]
    assert log.job.problems == {"error": 21, "warning": 0}


@pytest.mark.parametrize("fault", ["kill", "stop"])
async def test_a_child_killed_or_stuck_loses_no_line_and_later_problems_are_found_here(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fault: str
) -> None:
    monkeypatch.setattr(detectproc, "STALL_S", 0.5)
    log, path = await job(tmp_path)
    process = shared_process()
    with trio.fail_after(DEADLINE_S):
        await process.ready.wait()
    assert process.pid is not None
    log.detect_elsewhere(process)
    async with trio.open_nursery() as nursery:
        await nursery.start(log.run_writer)
        await append_blocks(log, range(10))
        await wait_for_line(log, 10 * 51)  # the child answered for these
        os.kill(process.pid, signal.SIGKILL if fault == "kill" else signal.SIGSTOP)
        try:
            await append_blocks(log, range(10, 20))  # sent to the child, never answered
            await wait_for_line(log, 20 * 51)  # released once the child is found lost
            assert process.lost
            await append_blocks(log, range(20, 30))  # detected here
            log.finish("failed", 1)
            with trio.fail_after(DEADLINE_S):
                await log.wait_closed()
        finally:
            if fault == "stop":
                with contextlib.suppress(ProcessLookupError):  # killed by then
                    os.kill(process.pid, signal.SIGCONT)
    seqs, problems = stored(path)
    assert seqs == list(range(1, 30 * 51 + 1))  # every line, once, in order
    assert problems == [(51 * (n + 1), f"e{n}") for n in range(30)]
    replacement = shared_process()
    assert replacement is not process
    with trio.fail_after(DEADLINE_S):
        await replacement.ready.wait()
    assert not replacement.lost and replacement.pid != process.pid


async def test_a_child_that_cannot_start_leaves_detection_here(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "executable", str(tmp_path / "no-such-python"))
    log, path = await job(tmp_path)
    process = shared_process()
    log.detect_elsewhere(process)
    async with trio.open_nursery() as nursery:
        await nursery.start(log.run_writer)
        await append_blocks(log, range(3))
        log.finish("failed", 1)
        with trio.fail_after(DEADLINE_S):
            await log.wait_closed()
    assert process.lost
    assert stored(path) == (list(range(1, 3 * 51 + 1)), [(51 * (n + 1), f"e{n}") for n in range(3)])


FAILING_PYTHONS = {
    "failing": "echo 'cannot import' >&2\nexit 1",  # starts, then fails before its first answer
    "crashing": "kill -ABRT $$",  # a broken extension module, say
}


@pytest.mark.parametrize("python", ["missing", "none", *FAILING_PYTHONS])
async def test_the_child_is_not_started_again_for_every_job_when_it_cannot_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, python: str
) -> None:
    executable: str | None = None  # (Python allows that: it could not find itself)
    if python == "missing":
        executable = str(tmp_path / "no-such-python")
    elif python in FAILING_PYTHONS:
        executable = str(tmp_path / "python")
        await trio.Path(executable).write_text(f"#!/bin/sh\n{FAILING_PYTHONS[python]}\n")
        await trio.Path(executable).chmod(0o755)
    monkeypatch.setattr(sys, "executable", executable)
    process = shared_process()
    with trio.fail_after(DEADLINE_S):
        await process.ready.wait()  # (set when it is lost, too)
    assert process.lost and process.failed_to_start and not process.started
    assert shared_process() is process  # the next job detects in process at once


async def test_a_child_stuck_before_its_first_answer_is_tried_again_with_the_next_job(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Stuck, not failed: on a loaded machine a healthy child may only be slow to start.
    monkeypatch.setattr(detectproc, "STALL_S", 0.5)
    stuck = tmp_path / "python"
    await trio.Path(stuck).write_text("#!/bin/sh\nkill -STOP $$\n")
    await trio.Path(stuck).chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(stuck))
    log, path = await job(tmp_path)
    process = shared_process()
    log.detect_elsewhere(process)
    async with trio.open_nursery() as nursery:
        await nursery.start(log.run_writer)
        await append_blocks(log, range(2))  # requests: the watchdog counts from these
        log.finish("failed", 1)
        with trio.fail_after(DEADLINE_S):
            await log.wait_closed()
    assert process.lost and not process.started and not process.failed_to_start
    assert stored(path) == ([*range(1, 2 * 51 + 1)], [(51, "e0"), (102, "e1")])
    monkeypatch.undo()
    replacement = shared_process()
    assert replacement is not process
    with trio.fail_after(DEADLINE_S):
        await replacement.ready.wait()
    assert replacement.started and not replacement.lost


async def test_with_no_memory_to_share_blocks_go_to_the_child_by_pipe(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_more_files(*args: object) -> NoReturn:
        raise OSError(errno.EMFILE, "Too many open files")

    monkeypatch.setattr(os, "memfd_create", no_more_files)
    log, path = await job(tmp_path)
    process = shared_process()
    log.detect_elsewhere(process)
    async with trio.open_nursery() as nursery:
        await nursery.start(log.run_writer)
        await append_blocks(log, range(3))
        log.finish("failed", 1)
        with trio.fail_after(DEADLINE_S):
            await log.wait_closed()
    assert process.started and not process.lost
    assert stored(path) == (list(range(1, 3 * 51 + 1)), [(51 * (n + 1), f"e{n}") for n in range(3)])


async def test_a_job_that_fails_to_take_an_answer_still_gets_every_line_and_its_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    # A bug while the job takes the child's answer to its end (the cut-short traceback's
    # problem): the job must still close, with every line, detecting in process.
    take = ProblemList.add_rows

    def failing_at_the_end(self: ProblemList, rows: list[Row]) -> None:
        if any(row[2] == "Traceback (most recent call last)" for row in rows):
            raise RuntimeError("a bug taking the answer")
        take(self, rows)

    monkeypatch.setattr(ProblemList, "add_rows", failing_at_the_end)
    log, path = await job(tmp_path)
    process = shared_process()
    log.detect_elsewhere(process)
    async with trio.open_nursery() as nursery:
        await nursery.start(log.run_writer)
        await append_blocks(log, range(2))
        log.append(["Traceback (most recent call last):", '  File "a.py", line 1'])
        log.finish("failed", 1)
        with trio.fail_after(DEADLINE_S):
            await log.wait_closed()
    assert not process.lost  # the other jobs keep it
    assert stored(path) == (list(range(1, 2 * 51 + 3)), [(51, "e0"), (102, "e1")])
    assert log.job.status == "failed"
    assert "a bug taking the answer" in capfd.readouterr().err


async def test_the_servers_folder_and_settings_do_not_reach_the_child(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A project's own json.py, struct.py or logstream/ in the folder the server runs in must
    # not shadow the standard library or logstream in the child; its tokens stay out of it.
    for name in ["json.py", "struct.py", "pickle.py", "logstream/__init__.py"]:
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text("raise SystemExit('shadowed')\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LOGSTREAM_TOKEN", "viewer-secret")
    monkeypatch.setenv("LOGSTREAM_INGEST_TOKEN", "runner-secret")
    log, path = await job(tmp_path / "data")
    process = shared_process()
    log.detect_elsewhere(process)
    async with trio.open_nursery() as nursery:
        await nursery.start(log.run_writer)
        with trio.fail_after(DEADLINE_S):
            await process.ready.wait()
        assert process.started and not process.lost and process.pid is not None
        environ = await trio.Path(f"/proc/{process.pid}/environ").read_bytes()
        assert b"secret" not in environ and b"LOGSTREAM_" not in environ
        await append_blocks(log, range(2))
        log.finish("failed", 1)
        with trio.fail_after(DEADLINE_S):
            await log.wait_closed()
    assert not process.lost
    assert stored(path) == (list(range(1, 2 * 51 + 1)), [(51, "e0"), (102, "e1")])


async def test_a_rule_that_raises_here_after_the_child_is_lost_loses_no_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    # Detection falls back to this process inside the detector's own task: a bug in a rule
    # there must neither end the server (a system task that raises does) nor hold lines.
    def broken(*args: object, **kwargs: object) -> NoReturn:
        raise RuntimeError("a broken rule")

    log, path = await job(tmp_path)
    process = shared_process()
    with trio.fail_after(DEADLINE_S):
        await process.ready.wait()
    assert process.pid is not None
    log.detect_elsewhere(process)
    monkeypatch.setattr(Detector, "feed", broken)  # here only: the child has its own
    monkeypatch.setattr(Detector, "flush", broken)
    async with trio.open_nursery() as nursery:
        await nursery.start(log.run_writer)
        os.kill(process.pid, signal.SIGSTOP)
        await append_blocks(log, range(3))  # held: the child cannot answer
        assert log.last == 0 and log.received == 3 * 51
        os.kill(process.pid, signal.SIGKILL)
        await wait_for_line(log, 3 * 51)  # detected here (and failed), released all the same
        assert process.lost
        await append_blocks(log, range(3, 5))
        log.finish("failed", 1)
        with trio.fail_after(DEADLINE_S):
            await log.wait_closed()
    seqs = [seq for seq, _stream, _text in logformat.iter_lines((path / "log").read_bytes())]
    assert seqs == list(range(1, 5 * 51 + 1))
    assert log.job.status == "failed"
    err = capfd.readouterr().err
    assert "problem detection failed (the job's lines are kept)" in err and "a broken rule" in err


async def test_a_runner_may_end_its_job_while_the_child_still_holds_its_lines(
    server: Server,
) -> None:
    # The server has the lines (it answered so) even while the detector process holds them
    # from readers: an end right after them waits for them, it is not refused.
    process = shared_process()
    with trio.fail_after(DEADLINE_S):
        await process.ready.wait()
    assert process.pid is not None
    ended: list[httpx.Response] = []
    async with server.client() as client, trio.open_nursery() as nursery:
        spec = {"name": "held", "command": ["make"]}
        created = await client.put("/api/ingest/jobs/held-job", json=spec)
        assert created.status_code == 201
        os.kill(process.pid, signal.SIGSTOP)
        try:
            sent = await client.post(
                "/api/ingest/jobs/held-job/lines",
                content=sse.encode_lines(1, error_block(0)),
                headers={"Content-Type": "text/event-stream"},
            )
            assert sent.json() == {"last": 51}
            again = await client.put("/api/ingest/jobs/held-job", json=spec)
            assert again.json()["last"] == 51  # nothing to send again

            async def end() -> None:
                body = {"status": "failed", "exit_code": 2, "lines": 51}
                ended.append(await client.post("/api/ingest/jobs/held-job/end", json=body))

            nursery.start_soon(end)
            await trio.testing.wait_all_tasks_blocked(0.05)  # the server has the end request
            assert not ended  # it waits for the held lines
        finally:
            os.kill(process.pid, signal.SIGCONT)
    assert ended[0].status_code == 200, ended[0].text
    assert not process.lost  # answered by the child, not by its loss
    async with server.client() as client:
        job = (await client.get("/api/jobs/held-job")).json()
    assert (job["status"], job["lines"], job["problems"]["error"]) == ("failed", 51, 1)


async def test_a_runner_ending_its_job_as_the_server_stops_is_told_to_come_back(
    tmp_path: Path,
) -> None:
    # The server stops while the child holds a job's lines: an end that comes meanwhile must
    # not be answered "ended" while the job is stored as given up.
    backend = DataDirBackend(tmp_path)
    remote_jobs = RemoteJobs(Catalog(backend))
    process = shared_process()
    with trio.fail_after(DEADLINE_S):
        await process.ready.wait()
    assert process.pid is not None
    async with trio.open_nursery() as nursery:
        await nursery.start(remote_jobs.run)
        await remote_jobs.create("held-job", RemoteJobSpec("held", ["make"], None, {}), "me")
        os.kill(process.pid, signal.SIGSTOP)
        try:
            records = parse_records(sse.encode_lines(1, error_block(0)))
            assert await remote_jobs.append("held-job", records, "me") == 51
            nursery.start_soon(remote_jobs.close)
            await trio.testing.wait_all_tasks_blocked()  # it waits for the held lines
        finally:
            os.kill(process.pid, signal.SIGCONT)
        with pytest.raises(Unavailable):
            await remote_jobs.end("held-job", JobEnd("failed", 2, 51), "me")
    stored_job = (await backend.open_log("held-job")).job
    assert (stored_job.status, stored_job.lines) == ("interrupted", 51)  # the runner comes back


async def test_lines_with_no_sign_skip_the_child_unless_a_problem_is_under_way(
    tmp_path: Path,
) -> None:
    log, path = await job(tmp_path)
    process = shared_process()
    with trio.fail_after(DEADLINE_S):
        await process.ready.wait()
    log.detect_elsewhere(process)
    async with trio.open_nursery() as nursery:
        await nursery.start(log.run_writer)
        log.append(["compiling a.c"])
        assert log.last == 1  # no sign, nothing under way: readers have it at once
        log.append(["Traceback (most recent call last):"])
        log.append(['  File "a.py", line 3, in <module>'])  # no sign, but after one: held
        assert log.last == 1
        await wait_for_line(log, 3)
        log.append(["ValueError: bad"])  # the child said a traceback is under way: sent
        assert log.last == 3
        await wait_for_line(log, 4)
        log.append(["done"])
        assert log.last == 5  # the traceback is over: skipped again
        log.finish("failed", 1)
        with trio.fail_after(DEADLINE_S):
            await log.wait_closed()
    assert stored(path) == ([1, 2, 3, 4, 5], [(2, "ValueError: bad")])
