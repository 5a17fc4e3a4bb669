"""Invoke tasks whose commands run as logstream jobs: each task's output is live at a URL.

Run from this folder (``pip install invoke logstream`` first)::

    invoke build            # the sample build: succeeds
    invoke tests            # the sample test run: fails, and so does invoke (exit 1)

Each task prints ``logstream: <task> live at http://127.0.0.1:<port>/jobs/<ID>`` on stderr,
then the command's output as usual. While it runs, open the URL in a browser or follow it with
``logstream tail URL`` from another machine (add ``host=`` and ``token=`` to ``open_server``).
Afterwards ``logstream serve`` shows every past run: the logs stay in the data directory.
"""

from __future__ import annotations

import sys
from pathlib import Path

import trio
from invoke.context import Context
from invoke.exceptions import Exit
from invoke.tasks import task

import logstream

SAMPLES = Path(__file__).resolve().parents[2] / "sample_jobs"


def run_live(command: list[str], *, name: str) -> logstream.JobResult:
    """Run ``command`` as a logstream job, its output copied here; wait for its end."""

    async def main() -> logstream.JobResult:
        async with logstream.open_server(port=0) as server:
            job = await server.start(command, name=name, tee=True)
            print(f"logstream: {name} live at {job.url}", file=sys.stderr, flush=True)
            return await job.wait()

    return trio.run(main)


def check(result: logstream.JobResult) -> None:
    """Fail the invoke task when the job failed, with the job's exit status."""
    if not result.ok:
        raise Exit(
            f"logstream: {result.name} {result.status} (exit status {result.exit_code})",
            code=result.exit_code,
        )


@task
def build(c: Context) -> None:
    """The sample build (coloured steps, warnings on stderr), live."""
    check(run_live([sys.executable, str(SAMPLES / "build.py")], name="build"))


@task
def tests(c: Context) -> None:
    """The sample test run, which has failures, live."""
    check(run_live([sys.executable, str(SAMPLES / "failing_tests.py")], name="tests"))
