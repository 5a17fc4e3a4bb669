"""The Python API (``logstream.open_server``) and the invoke example built on it."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import httpx
import trio

import logstream
from logstream.store import DataDir

from .livejobs import DEADLINE_S, ROOT, cli_env, has_lines, read_events
from .processes import live_processes_in_group


async def test_run_returns_the_result_and_the_log_is_served(tmp_path: Path) -> None:
    async with logstream.open_server(data_dir=tmp_path / "data") as server:
        assert server.url.startswith("http://127.0.0.1:")
        with trio.fail_after(DEADLINE_S):
            result = await server.run(
                [sys.executable, "-c", "import sys; print('out'); sys.exit(4)"], name="four"
            )
        assert (result.status, result.exit_code, result.ok) == ("failed", 4, False)
        assert result.name == "four"
        assert result.url == f"{server.url}/jobs/{result.id}"
        async with httpx.AsyncClient() as client:
            shown = (await client.get(f"{server.url}/api/jobs/{result.id}")).json()
            assert (shown["status"], shown["exit_code"]) == ("failed", 4)
            log = await client.get(f"{server.url}/api/jobs/{result.id}/log")
            assert log.text == "out\n"
    assert DataDir(tmp_path / "data").read_job(result.id).exit_code == 4


async def test_a_string_command_runs_in_the_shell_with_env_and_cwd(tmp_path: Path) -> None:
    async with logstream.open_server(data_dir=tmp_path / "data") as server:
        with trio.fail_after(DEADLINE_S):
            result = await server.run('echo "$GREETING"; pwd', env={"GREETING": "hi"}, cwd=tmp_path)
            events = await read_events(server.url, result.id)
    assert result.ok
    assert events.lines == [("message", "hi"), ("message", str(tmp_path))]


async def test_start_returns_at_once_and_cancel_ends_the_job(tmp_path: Path) -> None:
    async with logstream.open_server(data_dir=tmp_path / "data") as server:
        job = await server.start("echo $$; sleep 300", grace_s=2)
        assert job.status == "running"
        with trio.fail_after(DEADLINE_S):
            pgid = int((await read_events(server.url, job.id, until=has_lines(1))).lines[0][1])
            job.cancel()
            result = await job.wait()
    assert (result.status, result.exit_code) == ("cancelled", 128 + signal.SIGTERM)
    assert live_processes_in_group(pgid) == []


async def test_timeout_cancels_and_leaving_the_block_cancels_running_jobs(tmp_path: Path) -> None:
    with trio.fail_after(DEADLINE_S):
        async with logstream.open_server(data_dir=tmp_path / "data") as server:
            slow = await server.run(["sleep", "300"], timeout_s=0.2)
            left = await server.start("echo $$; sleep 300")
            pgid = int((await read_events(server.url, left.id, until=has_lines(1))).lines[0][1])
    assert slow.status == "cancelled"
    data = DataDir(tmp_path / "data")
    assert data.read_job(left.id).status == "cancelled"
    assert live_processes_in_group(pgid) == []


async def test_start_defined_runs_a_job_of_the_jobs_file(tmp_path: Path) -> None:
    jobs_file = tmp_path / "jobs.toml"
    jobs_file.write_text('[jobs.greet]\ncommand = "echo hello"\n')
    async with logstream.open_server(data_dir=tmp_path / "data", jobs_file=jobs_file) as server:
        with trio.fail_after(DEADLINE_S):
            job = await server.start_defined("greet")
            result = await job.wait()
            events = await read_events(server.url, job.id)
    assert result.ok and events.lines == [("message", "hello")]


async def test_the_invoke_example_runs_tasks_as_live_jobs(tmp_path: Path) -> None:
    env = cli_env(SAMPLE_FAST="1", XDG_STATE_HOME=str(tmp_path / "state"))
    folder = ROOT / "examples" / "invoke_tasks"
    with trio.fail_after(DEADLINE_S):
        build = await trio.run_process(
            [sys.executable, "-m", "invoke", "build"],
            cwd=folder,
            env=env,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
        tests = await trio.run_process(
            [sys.executable, "-m", "invoke", "tests"],
            cwd=folder,
            env=env,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    assert build.returncode == 0, build.stderr
    assert build.stderr.startswith(b"logstream: build live at http://127.0.0.1:")
    assert b"build succeeded" in build.stdout
    assert tests.returncode == 1
    assert tests.stderr.startswith(b"logstream: tests live at http://127.0.0.1:")
    assert b"logstream: tests failed (exit status 1)" in tests.stderr
    jobs = DataDir(tmp_path / "state" / "logstream")
    assert [jobs.read_job(i).status for i in jobs.job_ids()] == ["failed", "succeeded"]
