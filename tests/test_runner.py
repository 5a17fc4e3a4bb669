"""The runner on its own: a real subprocess into a LiveLog, no server."""

from __future__ import annotations

import sys
from pathlib import Path

import trio

from logstream import logformat
from logstream.backends.datadir import DataDirBackend
from logstream.backends.protocol import Cursor
from logstream.joblog import LiveLog
from logstream.jobspec import JobSpec
from logstream.mask import Masker
from logstream.runner import JobRunner, RunOutcome

PY = sys.executable


async def run(tmp_path: Path, spec: JobSpec) -> tuple[RunOutcome, list[tuple[int, str, str]]]:
    log = LiveLog(await DataDirBackend(tmp_path).create_job(spec.name, spec.command))
    async with trio.open_nursery() as nursery:
        await nursery.start(log.run_writer)
        with trio.fail_after(30):
            outcome = await JobRunner(log, spec).run()
            await log.wait_closed()
    lines = list(logformat.iter_lines((await log.read_after(Cursor(0))).chunk.payload))
    return outcome, lines


async def test_secrets_are_masked_in_every_line(tmp_path: Path) -> None:
    script = "print('token s3cret'); import sys; print('again s3cret', file=sys.stderr)"
    spec = JobSpec((PY, "-c", script), "x", masker=Masker(["s3cret"]))
    _, lines = await run(tmp_path, spec)
    assert sorted(text for _, _, text in lines) == ["again ***", "token ***"]


async def test_a_command_killed_by_a_signal_exits_128_plus_n(tmp_path: Path) -> None:
    spec = JobSpec((PY, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"), "x")
    outcome, _ = await run(tmp_path, spec)
    assert (outcome.status, outcome.exit_code) == ("failed", 137)


async def test_under_a_pty_both_streams_are_one_and_colours_are_kept(tmp_path: Path) -> None:
    script = "import sys; print('\\x1b[31mred\\x1b[0m'); print('err', file=sys.stderr)"
    outcome, lines = await run(tmp_path, JobSpec((PY, "-c", script), "x", pty=True))
    assert outcome.exit_code == 0
    assert lines == [(1, "o", "\x1b[31mred\x1b[0m"), (2, "o", "err")]


async def test_a_background_child_holding_the_pipes_does_not_hold_the_job(tmp_path: Path) -> None:
    # The shell exits at once; its child keeps stdout open and sleeps for a minute.
    script = "echo started; sleep 60 &"
    spec = JobSpec(("/bin/sh", "-c", script), "x", grace_s=1)
    outcome, lines = await run(tmp_path, spec)
    assert outcome.exit_code == 0
    assert lines == [(1, "o", "started")]
