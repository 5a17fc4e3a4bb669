"""`logstream run` end to end: a real logstream process running a real command."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import trio

from .processes import (
    DEADLINE_S,
    URL_LINE,
    Logstream,
    is_running,
    live_processes_in_group,
    start_logstream,
)

PY = sys.executable


async def run_to_end(nursery: trio.Nursery, *args: str) -> tuple[Logstream, int]:
    running = await start_logstream(nursery, "run", "--port", "0", *args)
    return running, await running.wait_exit()


async def test_url_line_first_then_output_copied_byte_for_byte(nursery: trio.Nursery) -> None:
    script = (
        "import sys\n"
        "sys.stdout.buffer.write(b'out \\xff\\x00 one\\r\\nprogress\\rdone\\n')\n"
        "sys.stdout.flush()\n"
        "sys.stderr.buffer.write(b'err \\xe2\\x82\\n'); sys.stderr.flush()\n"
        "sys.stdout.buffer.write(b'no final newline')\n"
    )
    running, code = await run_to_end(nursery, "--", PY, "-c", script)
    assert code == 0
    assert bytes(running.stdout) == b"out \xff\x00 one\r\nprogress\rdone\nno final newline"
    first, rest = bytes(running.stderr).split(b"\n", 1)
    assert URL_LINE.match(first + b"\n")
    assert rest == b"err \xe2\x82\n"


@pytest.mark.parametrize("exit_code", [0, 1, 3])
async def test_exit_status_is_the_commands(nursery: trio.Nursery, exit_code: int) -> None:
    _, code = await run_to_end(nursery, "--", "sh", "-c", f"exit {exit_code}")
    assert code == exit_code


async def test_death_by_signal_exits_128_plus_n(nursery: trio.Nursery) -> None:
    _, code = await run_to_end(nursery, "--", "sh", "-c", "kill -TERM $$")
    assert code == 128 + signal.SIGTERM


async def test_job_status_and_lines_are_recorded(nursery: trio.Nursery, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    running, code = await run_to_end(
        nursery,
        "--data-dir",
        str(data_dir),
        "--name",
        "tests",
        "--",
        "sh",
        "-c",
        "echo a; echo b >&2; exit 1",
    )
    assert code == 1
    job_id = URL_LINE.match(bytes(running.stderr))["id"].decode()  # type: ignore[index]
    job = json.loads((data_dir / "jobs" / job_id / "job.json").read_text())
    assert (job["name"], job["status"], job["exit_code"], job["lines"]) == ("tests", "failed", 1, 2)


async def test_a_leftover_background_process_neither_hangs_nor_outlives_logstream(
    nursery: trio.Nursery,
) -> None:
    # The shell exits at once; `sleep` keeps the output pipes open and would hold a naive reader.
    running, code = await run_to_end(
        nursery, "--", "sh", "-c", "echo pgid $$; sleep 1000 & echo started"
    )
    assert code == 0
    pgid = int(bytes(running.stdout).split()[1])
    assert b"started" in running.stdout
    assert live_processes_in_group(pgid) == []


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
async def test_ctrl_c_or_sigterm_stops_the_whole_job(
    nursery: trio.Nursery, signum: signal.Signals
) -> None:
    # Background jobs of a non-interactive shell ignore SIGINT: only the cleanup gets them.
    running = await start_logstream(
        nursery,
        "run",
        "--port",
        "0",
        "--",
        "sh",
        "-c",
        "echo pgid $$; sleep 1000 & sleep 1000 & echo ready; wait",
    )
    await running.wait_for(URL_LINE)
    with trio.fail_after(DEADLINE_S):
        while b"ready" not in running.stdout:
            await running.changed.wait()
    pgid = int(bytes(running.stdout).split()[1])
    running.signal(signum)
    code = await running.wait_exit()
    assert code == 128 + signum
    assert live_processes_in_group(pgid) == []


async def test_pty_mode_gives_the_command_a_terminal(nursery: trio.Nursery) -> None:
    script = "import os, sys; print(sys.stdout.isatty(), os.get_terminal_size().columns > 0)"
    running, code = await run_to_end(nursery, "--pty", "--", PY, "-c", script)
    assert code == 0
    assert bytes(running.stdout) == b"True True\n"  # ONLCR off: no \r\n


async def test_explicit_port_in_use_is_a_clear_error(nursery: trio.Nursery, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        marker = tmp_path / "ran"
        running = await start_logstream(
            nursery, "run", "--port", str(port), "--", "touch", str(marker)
        )
        code = await running.wait_exit()
    assert code == 2
    assert b"--port" in running.stderr and str(port).encode() in running.stderr
    assert not marker.exists()


async def test_default_port_falls_back_to_a_free_one(nursery: trio.Nursery) -> None:
    with socket.socket() as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            taken.bind(("127.0.0.1", 8765))
            taken.listen()
        except OSError:
            pass  # something else holds 8765 already: the fallback is needed all the same
        running = await start_logstream(nursery, "run", "--", "true")
        match = await running.wait_for(URL_LINE)
        assert await running.wait_exit() == 0
    assert ":8765/" not in match["url"].decode()


async def test_public_address_without_token_is_refused_before_running(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    marker = tmp_path / "ran"
    running = await start_logstream(
        nursery, "run", "--host", "0.0.0.0", "--port", "0", "--", "touch", str(marker)
    )
    assert await running.wait_exit() == 2
    assert b"token" in running.stderr
    assert not marker.exists()


async def test_logstream_waits_until_a_connected_viewer_has_the_end_event(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    go = tmp_path / "go"
    # The job waits for the test's viewer to be connected before it ends.
    script = (
        "import os, time\n"
        "print('hi', flush=True)\n"
        f"while not os.path.exists({str(go)!r}): time.sleep(0.01)\n"
    )
    running = await start_logstream(nursery, "run", "--port", "0", "--", PY, "-c", script)
    job_id, url = await running.wait_for_url()
    events_url = url.replace(f"/jobs/{job_id}", f"/api/jobs/{job_id}/events")
    received = b""
    with trio.fail_after(DEADLINE_S):
        async with (
            httpx.AsyncClient(timeout=DEADLINE_S) as client,
            client.stream("GET", events_url) as response,
        ):
            async for data in response.aiter_raw():
                received += data
                if b"data: hi\n\n" in received and not go.exists():
                    go.touch()
    assert received.endswith(b'event: end\ndata: {"status": "succeeded", "exit_code": 0}\n\n')
    assert await running.wait_exit() == 0


async def test_the_log_does_not_wait_for_a_terminal_that_reads_nothing(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    """The copy to a stuck terminal is buffered apart: the job ends and its log is complete."""
    data_dir = tmp_path / "data"
    lines = 15_000  # ~900 KB: more than a pipe holds, less than the terminal copy's buffer
    script = f"for n in range({lines}): print(f'line {{n:07d}} ' + 'x' * 45)"
    process = await trio.lowlevel.open_process(
        [
            PY,
            "-m",
            "logstream",
            "run",
            "--port",
            "0",
            "--data-dir",
            str(data_dir),
            "--",
            PY,
            "-c",
            script,
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    nursery.start_soon(process.wait)
    assert process.stdout is not None
    # Nobody reads logstream's stdout until the job has ended (no event tells when another
    # process's file changes: poll it).
    with trio.fail_after(DEADLINE_S):
        while not (job := _only_job(data_dir)) or job["status"] == "running":  # noqa: ASYNC110
            await trio.sleep(0.05)
    assert (job["status"], job["lines"]) == ("succeeded", lines)
    received = bytearray()
    with trio.fail_after(DEADLINE_S):
        while data := await process.stdout.receive_some(65536):
            received += data
        assert await process.wait() == 0
    assert received.count(b"\n") == lines


async def test_ctrl_c_exits_promptly_even_when_our_stdout_is_stuck(nursery: trio.Nursery) -> None:
    process = await trio.lowlevel.open_process(
        [PY, "-m", "logstream", "run", "--port", "0", "--", "yes"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    nursery.start_soon(process.wait)
    assert process.stderr is not None
    stderr = b""
    with trio.fail_after(DEADLINE_S):
        while b" live at " not in stderr:
            stderr += await process.stderr.receive_some()
    # stdout is never read: `yes` fills the pipe and the terminal copy's buffer, then blocks.
    process.send_signal(signal.SIGINT)
    with trio.fail_after(15):  # run exits within 15 s of the first signal
        code = await process.wait()
    assert code == 128 + signal.SIGINT


async def test_a_process_that_left_the_group_with_setsid_is_stopped_too(
    nursery: trio.Nursery,
) -> None:
    running, code = await run_to_end(
        nursery, "--", "sh", "-c", "setsid sleep 1000 & echo escaped $!"
    )
    assert code == 0
    pid = int(bytes(running.stdout).split()[1])
    assert not is_running(pid)


async def test_closed_stdout_or_a_full_disk_behind_it_keeps_the_exit_status(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    command = f"{PY} -m logstream run --port 0 -- sh -c 'echo hi; exit 3'"
    for redirect, notice in [(">&-", b""), ("> /dev/full", b"No space left on device")]:
        result = await trio.run_process(
            ["sh", "-c", f"{command} {redirect}"], capture_stderr=True, check=False
        )
        assert result.returncode == 3, result.stderr
        assert b"Traceback" not in result.stderr
        assert all(line.startswith(b"logstream: ") for line in result.stderr.splitlines())
        assert notice in result.stderr


async def test_an_unusable_data_dir_is_a_usage_error(nursery: trio.Nursery, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    running = await start_logstream(
        nursery, "run", "--port", "0", "--data-dir", "/dev/null/logs", "--", "touch", str(marker)
    )
    assert await running.wait_exit() == 2
    assert b"cannot use the data directory /dev/null/logs" in running.stderr
    assert b"Traceback" not in running.stderr
    assert not marker.exists()


def _only_job(data_dir: Path) -> dict[str, object] | None:
    try:
        (job_dir,) = (data_dir / "jobs").iterdir()
        return json.loads((job_dir / "job.json").read_text())  # type: ignore[no-any-return]
    except (FileNotFoundError, ValueError):
        return None


async def test_a_full_data_dir_keeps_the_job_running_and_its_exit_status(tmp_path: Path) -> None:
    small = tmp_path / "small"
    small.mkdir()
    mounted = await trio.run_process(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(small)],
        check=False,
        capture_stderr=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr!r}")
    try:
        firehose = Path(__file__).parent.parent / "sample_jobs" / "firehose.py"
        result = await trio.run_process(
            [
                PY,
                "-m",
                "logstream",
                "run",
                "--port",
                "0",
                "--data-dir",
                str(small),
                "--",
                "sh",
                "-c",
                f"{PY} {firehose} 100000; exit 5",
            ],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    finally:
        await trio.run_process(["umount", "-l", str(small)], check=False)
    assert result.returncode == 5
    assert result.stdout.count(b"\n") == 100_000  # the terminal copy is complete
    assert b"No space left on device; later lines are kept in memory only" in result.stderr
    assert b"Traceback" not in result.stderr


async def test_a_second_ctrl_c_kills_a_job_that_ignores_the_first(nursery: trio.Nursery) -> None:
    running = await start_logstream(
        nursery,
        "run",
        "--port",
        "0",
        "--",
        "sh",
        "-c",
        "trap 'echo got it' INT TERM; echo ready; while :; do sleep 1; done",
    )
    for expected in (b"ready", b"got it"):
        with trio.fail_after(DEADLINE_S):
            while expected not in running.stdout:
                await running.changed.wait()
        running.signal(signal.SIGINT)  # the job shrugs off the first one
    with trio.fail_after(8):  # well within the 10 s grace the first Ctrl-C alone would take
        code = await running.process.wait()
    assert code == 128 + signal.SIGKILL
