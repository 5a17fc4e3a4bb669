"""Remote runners end to end: real `serve` and `run --server` processes, real faults.

The runner uploads each job's lines to a central server; whatever happens to the server or the
network, the command runs on with its own exit status, and the server ends up with every line
exactly once.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import sys
from pathlib import Path

import httpx
import trio

from logstream import sse

from .livejobs import read_events
from .processes import DEADLINE_S, start_logstream, start_runner, start_serve
from .sse_client import ResumingClient

PY = sys.executable


async def get_job(base: str, job_id: str, token: str | None = None) -> dict[str, object]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with httpx.AsyncClient(timeout=DEADLINE_S, headers=headers) as client:
        response = await client.get(f"{base}/api/jobs/{job_id}")
        assert response.status_code == 200, response.text
        job: dict[str, object] = response.json()
        return job


async def wait_for_job(base: str, job_id: str, **expected: object) -> dict[str, object]:
    """The job once its JSON shows ``expected`` (polled: nothing else tells the test)."""
    with trio.fail_after(DEADLINE_S):
        while True:
            try:
                job = await get_job(base, job_id)
            except AssertionError:
                job = {}
            if all(job.get(key) == value for key, value in expected.items()):
                return job
            await trio.sleep(0.05)


def line_ids(events: list[sse.Event]) -> list[int]:
    return [int(e.id) for e in events if e.id is not None]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def waits_for(marker: Path) -> str:
    return f"while not os.path.exists({str(marker)!r}): time.sleep(0.01)\n"


async def test_a_remote_run_shows_on_the_server_as_a_local_run_would(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    serving, base = await start_serve(nursery, tmp_path / "server", "--ingest-token", "runner-t")
    script = (
        "import os, sys\n"
        "print('one', flush=True)\n"
        "print('two', file=sys.stderr, flush=True)\n"
        "print('three\\rfour', flush=True)\n"
        "print('the secret is', os.environ['SECRET'], flush=True)\n"
        "print('token seen:', os.environ.get('LOGSTREAM_TOKEN'), flush=True)\n"
        "sys.exit(3)\n"
    )
    env = {
        "SECRET": "hunter2hunter2",
        "LOGSTREAM_TOKEN": "runner-t",
        "GITHUB_ACTIONS": "true",
        "GITHUB_SERVER_URL": "https://github.com",
        "GITHUB_REPOSITORY": "acme/rocket",
        "GITHUB_RUN_ID": "42",
        "GITHUB_SHA": "0123abc",
        "GITHUB_REF_NAME": "main",
        "GITHUB_STEP_SUMMARY": str(tmp_path / "summary.md"),
    }
    running, job_id = await start_runner(
        nursery,
        base,
        tmp_path / "runner",
        script,
        "--mask",
        "SECRET",
        "--name",
        "build hunter2hunter2",
        env=env,
    )
    assert await running.wait_exit() == 3
    # The terminal gets the command's output byte for byte (unmasked: it is the user's own).
    assert bytes(running.stdout) == (
        b"one\nthree\rfour\nthe secret is hunter2hunter2\ntoken seen: None\n"
    )
    assert bytes(running.stderr).split(b"\n")[1:] == [b"two", b""]
    events = (await read_events(base, job_id)).events
    lines = [(e.event, sse.line_text(e.data)) for e in events if e.id is not None]
    # Order is exact within each stream; between them it is the order the runner read them.
    assert [text for kind, text in lines if kind == "message"] == [
        "one",
        "three\rfour",
        "the secret is ***",
        "token seen: None",
    ]
    assert [text for kind, text in lines if kind == "stderr"] == ["two"]
    assert line_ids(events) == [1, 2, 3, 4, 5]
    assert json.loads(events[-1].data) == {"status": "failed", "exit_code": 3}
    job = await get_job(base, job_id)
    assert (job["status"], job["exit_code"], job["lines"], job["name"]) == (
        "failed",
        3,
        5,
        "build ***",
    )
    meta = job["meta"]
    assert isinstance(meta, dict)
    assert meta["host"] == socket.gethostname()
    assert meta["repository"] == "acme/rocket"
    assert meta["run_url"] == "https://github.com/acme/rocket/actions/runs/42"
    assert (meta["branch"], meta["commit"]) == ("main", "0123abc")
    assert "owner" not in job
    # Searched, paged and listed like a local job.
    async with httpx.AsyncClient(base_url=base, timeout=DEADLINE_S) as client:
        found = (await client.get(f"/api/jobs/{job_id}/search", params={"q": "FOUR"})).json()
        four = [int(e.id) for e in events if e.id is not None and "four" in e.data]
        assert found["matches"] == four
        listed = (await client.get("/api/jobs")).json()["jobs"]
        assert [j["id"] for j in listed] == [job_id]
        # The secret reaches neither the server's answers nor its disk.
        for path in ("/api/jobs", f"/api/jobs/{job_id}", f"/api/jobs/{job_id}/log"):
            assert b"hunter2" not in (await client.get(path)).content
    for file in (tmp_path / "server").rglob("*"):
        if file.is_file():
            content = file.read_bytes()
            assert b"hunter2" not in content and b"runner-t" not in content, file
    summary = (tmp_path / "summary.md").read_text()
    assert f"({base}/jobs/{job_id})" in summary
    serving.signal(signal.SIGTERM)
    assert await serving.wait_exit() == 0


async def test_the_server_down_at_start_gets_every_line_once_it_is_up(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    go = tmp_path / "go"
    script = (
        "import os, sys, time\n"
        "for n in range(1, 1001): print('early', n)\n"
        "sys.stdout.flush()\n" + waits_for(go) + "for n in range(1001, 2001): print('late', n)\n"
    )
    running, job_id = await start_runner(nursery, base, tmp_path / "runner", script)
    # The URL line came first, although nothing listens yet; the job runs meanwhile.
    with trio.fail_after(DEADLINE_S):
        while b"early 1000\n" not in running.stdout:
            await running.changed.wait()
    await running.wait_for(re.compile(rb"logstream: cannot reach the log server"))
    serving = await start_logstream(
        nursery, "serve", "--port", str(port), "--data-dir", str(tmp_path / "server")
    )
    await serving.wait_for_serving()
    go.touch()
    assert await running.wait_exit() == 0
    events = (await read_events(base, job_id)).events
    assert line_ids(events) == list(range(1, 2001))
    stderr = bytes(running.stderr)
    # One notice for the trouble, one for the recovery: not one per retry.
    assert stderr.count(b"logstream: ") == 3, stderr
    assert stderr.startswith(b"logstream: job ")
    assert b"logstream: uploading again" in stderr


async def test_a_wrong_token_never_fails_the_job_and_push_uploads_it_later(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    _serving, base = await start_serve(
        nursery, tmp_path / "server", "--token", "viewer-t", "--ingest-token", "runner-t"
    )
    script = "for n in range(1, 501): print('line', n)\n"
    runner_dir = tmp_path / "runner"
    for wrong in ("nope", "viewer-t"):  # the viewer token does not admit runners here
        running, job_id = await start_runner(
            nursery,
            base,
            runner_dir,
            script,
            "--token",
            wrong,
            "--upload-timeout",
            "0.5",
        )
        assert await running.wait_exit() == 0
        assert bytes(running.stdout).count(b"\n") == 500
        stderr = bytes(running.stderr).decode()
        assert stderr.count("logstream: the log server refuses this runner (HTTP 401") == 1
        assert (
            f"logstream: 500 of 500 lines (and the job's end) are not uploaded to {base}; "
            f"they are kept in {runner_dir / 'jobs' / job_id}; upload them with: "
            f"logstream push --server {base} {job_id}\n"
        ) in stderr
        assert "viewer-t" not in stderr and "nope" not in stderr
    # The ingest token does not open the viewer's routes.
    async with httpx.AsyncClient(timeout=DEADLINE_S) as client:
        refused = await client.get(f"{base}/api/jobs", headers={"Authorization": "Bearer runner-t"})
        assert refused.status_code == 401
    # Without IDs, push uploads every job whose upload is unfinished; twice is harmless.
    for _ in range(2):
        pushing = await start_logstream(
            nursery,
            "push",
            "--server",
            base,
            "--token",
            "runner-t",
            "--data-dir",
            str(runner_dir),
            *([] if _ == 0 else [job_id]),
        )
        assert await pushing.wait_exit() == 0, bytes(pushing.stderr)
    assert bytes(pushing.stderr).count(b" 500 lines at ") == 1
    job = await get_job(base, job_id, token="viewer-t")
    assert (job["status"], job["exit_code"], job["lines"]) == ("succeeded", 0, 500)
    events = (await read_events(base, job_id, token="viewer-t")).events
    assert line_ids(events) == list(range(1, 501))


async def test_two_runners_at_once_each_get_their_own_job(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    _serving, base = await start_serve(nursery, tmp_path / "server")
    script = (
        "import sys\n"
        "tag = sys.argv[1] if len(sys.argv) > 1 else 'x'\n"
        "for n in range(1, 20001): print('line', n, flush=n % 500 == 0)\n"
    )
    runs = [await start_runner(nursery, base, tmp_path / f"runner{n}", script) for n in range(2)]
    for running, _job_id in runs:
        assert await running.wait_exit() == 0
    assert runs[0][1] != runs[1][1]
    for _running, job_id in runs:
        events = (await read_events(base, job_id)).events
        assert line_ids(events) == list(range(1, 20001))
        assert sse.line_text(events[-2].data) == "line 20000"


async def test_a_quiet_runner_is_interrupted_and_resumes_where_it_stopped(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    _serving, base = await start_serve(nursery, tmp_path / "server", "--runner-timeout", "1")
    go = tmp_path / "go"
    # Quiet longer than the runner timeout: heartbeats come every 30 s, so it is interrupted.
    script = (
        "import os, time\n"
        "print('before', flush=True)\n" + waits_for(go) + "print('after', flush=True)\n"
    )
    running, job_id = await start_runner(nursery, base, tmp_path / "runner", script)
    job = await wait_for_job(base, job_id, status="interrupted")
    assert (job["exit_code"], job["lines"]) == (None, 1)
    # A viewer of the interrupted job gets what there is and the end, as for a dead runner.
    interrupted = await read_events(base, job_id)
    assert interrupted.end == {"status": "interrupted", "exit_code": None}
    go.touch()
    assert await running.wait_exit() == 0
    job = await wait_for_job(base, job_id, status="succeeded")
    events = (await read_events(base, job_id)).events
    texts = [sse.line_text(e.data) for e in events if e.id is not None]
    assert texts == ["before", "after"] and line_ids(events) == [1, 2]


async def test_kill_9_of_serve_mid_job_and_restart_lose_and_repeat_nothing(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    server_dir = tmp_path / "server"
    serving, base = await start_serve(nursery, server_dir)
    port = base.rsplit(":", 1)[1]
    go = [tmp_path / "go1", tmp_path / "go2"]
    script = (
        "import os, sys, time\n"
        "def part(first):\n"
        "    for start in range(first, first + 20000, 500):\n"
        "        sys.stdout.write(''.join(f'line {n}\\n' for n in range(start, start + 500)))\n"
        "        sys.stdout.flush()\n"
        "        time.sleep(0.002)\n"
        "part(1)\n"
        f"for marker, first in (({str(go[0])!r}, 20001), ({str(go[1])!r}, 40001)):\n"
        "    while not os.path.exists(marker): time.sleep(0.01)\n"
        "    part(first)\n"
    )
    running, job_id = await start_runner(nursery, base, tmp_path / "runner", script, "--quiet")
    follower = ResumingClient(f"{base}/api/jobs/{job_id}/events")
    with trio.fail_after(DEADLINE_S):
        async with trio.open_nursery() as reading:
            reading.start_soon(follower.run)
            for marker, seen in zip(go, (15_000, 35_000), strict=True):
                await follower.wait_for_lines(seen)
                serving.signal(signal.SIGKILL)
                assert await serving.wait_exit() == -signal.SIGKILL
                # The job goes on while the server is down.
                marker.touch()
                await trio.sleep(0.3)
                serving = await start_logstream(
                    nursery, "serve", "--port", port, "--data-dir", str(server_dir)
                )
                await serving.wait_for_serving()
            assert await running.wait_exit() == 0
    assert follower.ended
    assert follower.ids == list(range(1, 60001))
    events = (await read_events(base, job_id)).events
    assert line_ids(events) == list(range(1, 60001))
    assert json.loads(events[-1].data) == {"status": "succeeded", "exit_code": 0}
    assert bytes(running.stderr).count(b"logstream: lost the connection") <= 1
    os.kill(serving.pid, signal.SIGTERM)
    assert await serving.wait_exit() == 0


async def test_a_server_that_never_answers_holds_the_job_up_no_longer_than_the_upload_timeout(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    held: list[trio.SocketStream] = []

    async def black_hole(stream: trio.SocketStream) -> None:
        held.append(stream)  # accepted, never read, never answered
        await trio.sleep_forever()

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    nursery.start_soon(trio.serve_listeners, black_hole, listeners)
    base = f"http://127.0.0.1:{port}"
    script = "import sys\nfor n in range(1, 101): print('line', n)\nsys.exit(5)\n"
    running, job_id = await start_runner(
        nursery, base, tmp_path / "runner", script, "--upload-timeout", "1"
    )
    assert await running.wait_exit() == 5
    assert bytes(running.stdout).count(b"\n") == 100
    assert held, "the runner tried to upload"
    stderr = bytes(running.stderr).decode()
    assert f"100 of 100 lines (and the job's end) are not uploaded to {base}" in stderr
    assert f"logstream push --server {base} {job_id}" in stderr
