"""Task-runner mode (docs/task-runner.md): start and cancel defined jobs over HTTP, for real."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

import logstream
from logstream.store import DataDir

from .livejobs import DEADLINE_S, cli, cli_env, has_lines, read_events
from .processes import live_processes_in_group

JSON = {"Content-Type": "application/json"}
JOBS = f"""
[jobs.hello]
command = ["{sys.executable}", "-c", "import os; print('hello', os.environ['GREETING'])"]
env = {{ GREETING = "from the jobs file" }}

[jobs.sleeper]
# Prints its process group, then waits with a background child: cancel must end both.
command = "sleep 300 & echo $$; wait"
max_running = 1

[jobs.slow]
command = ["sleep", "300"]
timeout_s = 0.5
"""


@asynccontextmanager
async def task_server(
    tmp_path: Path, **options: Any
) -> AsyncIterator[tuple[logstream.Server, httpx.AsyncClient]]:
    jobs_file = tmp_path / "jobs.toml"
    jobs_file.write_text(JOBS)
    token = options.get("token")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with (
        logstream.open_server(data_dir=tmp_path / "data", jobs_file=jobs_file, **options) as srv,
        httpx.AsyncClient(base_url=srv.url, headers=headers, timeout=30) as client,
    ):
        with trio.fail_after(DEADLINE_S):
            yield srv, client


async def start(client: httpx.AsyncClient, name: str, **headers: str) -> httpx.Response:
    return await client.post("/api/jobs", json={"name": name}, headers={**JSON, **headers})


async def test_post_starts_a_defined_job_with_201_location_and_the_job(tmp_path: Path) -> None:
    async with task_server(tmp_path) as (server, client):
        response = await start(client, "hello")
        assert response.status_code == 201
        job = response.json()
        assert response.headers["Location"] == f"/api/jobs/{job['id']}"
        assert job["name"] == "hello" and job["status"] == "running"
        assert job["command"][1:] == ["-c", "import os; print('hello', os.environ['GREETING'])"]
        events = await read_events(server.url, job["id"])
        assert events.lines == [("message", "hello from the jobs file")]
        assert events.end == {"status": "succeeded", "exit_code": 0}
        shown = (await client.get(f"/api/jobs/{job['id']}")).json()
        assert shown["status"] == "succeeded"


async def test_get_jobs_lists_the_defined_jobs_with_running_counts(tmp_path: Path) -> None:
    async with task_server(tmp_path) as (_server, client):
        assert (await start(client, "sleeper")).status_code == 201
        listing = (await client.get("/api/jobs")).json()
        assert listing["defined"] == [
            {"name": "hello", "command": listing["defined"][0]["command"], "running": 0,
             "max_running": None},
            {"name": "sleeper", "command": ["/bin/sh", "-c", "sleep 300 & echo $$; wait"],
             "running": 1, "max_running": 1},
            {"name": "slow", "command": ["sleep", "300"], "running": 0, "max_running": None},
        ]  # fmt: skip
        assert [job["name"] for job in listing["jobs"]] == ["sleeper"]


async def test_without_a_jobs_file_nothing_is_defined_and_nothing_starts(tmp_path: Path) -> None:
    async with (
        logstream.open_server(data_dir=tmp_path / "data") as server,
        httpx.AsyncClient(base_url=server.url) as client,
    ):
        assert (await client.get("/api/jobs")).json() == {"jobs": [], "defined": []}
        assert (await start(client, "hello")).status_code == 404


@pytest.mark.parametrize(
    "body",
    [
        {"name": "hello", "command": ["rm", "-rf", "/"]},
        {"name": "hello", "args": ["--force"]},
        {"name": "hello", "env": {"GREETING": "x"}},
        {"name": "hello", "cwd": "/"},
    ],
)
async def test_fields_besides_the_name_are_refused_with_400(
    tmp_path: Path, body: dict[str, object]
) -> None:
    async with task_server(tmp_path) as (server, client):
        response = await client.post("/api/jobs", json=body, headers=JSON)
        assert response.status_code == 400
        assert "unknown field" in response.json()["error"]
        assert DataDir(server.data_dir).job_ids() == []


async def test_unknown_names_and_bad_bodies(tmp_path: Path) -> None:
    async with task_server(tmp_path) as (server, client):
        unknown = await start(client, "rm")
        assert (unknown.status_code, unknown.json()) == (
            404,
            {"error": "no job named 'rm' is defined"},
        )
        not_json = await client.post("/api/jobs", content=b"{", headers=JSON)
        assert not_json.status_code == 400
        no_name = await client.post("/api/jobs", json={}, headers=JSON)
        assert no_name.status_code == 400
        a_list = await client.post("/api/jobs", json=["hello"], headers=JSON)
        assert a_list.status_code == 400
        assert DataDir(server.data_dir).job_ids() == []


async def test_max_running_refuses_with_409_until_one_ends(tmp_path: Path) -> None:
    async with task_server(tmp_path) as (server, client):
        first = (await start(client, "sleeper")).json()
        refused = await start(client, "sleeper")
        assert refused.status_code == 409
        assert "max_running" in refused.json()["error"]
        assert (
            await client.post(f"/api/jobs/{first['id']}/cancel", headers=JSON)
        ).status_code == 202
        assert (await read_events(server.url, first["id"])).end is not None
        assert (await start(client, "sleeper")).status_code == 201


async def test_cancel_ends_the_job_cancelled_and_leaves_no_process(tmp_path: Path) -> None:
    async with task_server(tmp_path) as (server, client):
        job = (await start(client, "sleeper")).json()
        first = await read_events(server.url, job["id"], until=has_lines(1))
        pgid = int(first.lines[0][1])
        assert live_processes_in_group(pgid)
        response = await client.post(f"/api/jobs/{job['id']}/cancel", headers=JSON)
        assert response.status_code == 202
        assert response.json()["id"] == job["id"]
        events = await read_events(server.url, job["id"])
        assert events.end == {"status": "cancelled", "exit_code": 128 + signal.SIGTERM}
        assert live_processes_in_group(pgid) == []
        again = await client.post(f"/api/jobs/{job['id']}/cancel", headers=JSON)
        assert again.status_code == 409
        assert "already ended" in again.json()["error"]
        unknown = await client.post("/api/jobs/nope/cancel", headers=JSON)
        assert unknown.status_code == 404


async def test_timeout_cancels_the_job_and_says_so_in_its_log(tmp_path: Path) -> None:
    async with task_server(tmp_path) as (server, client):
        job = (await start(client, "slow")).json()
        events = await read_events(server.url, job["id"])
        assert events.end == {"status": "cancelled", "exit_code": 128 + signal.SIGTERM}
        assert events.lines[-1] == ("stderr", "logstream: timed out after 0.5 s")


async def test_starting_and_cancelling_need_the_token(tmp_path: Path) -> None:
    async with task_server(tmp_path, token="s3cret") as (server, client):
        async with httpx.AsyncClient(base_url=server.url) as anonymous:
            refused = await anonymous.post("/api/jobs", json={"name": "hello"}, headers=JSON)
            assert refused.status_code == 401
            assert (await anonymous.post("/api/jobs/x/cancel", headers=JSON)).status_code == 401
        assert (await start(client, "hello")).status_code == 201


async def test_cross_site_requests_are_refused(tmp_path: Path) -> None:
    async with task_server(tmp_path, cors_origin="https://dash.example") as (server, client):
        evil = await start(client, "hello", Origin="https://evil.example")
        assert evil.status_code == 403
        form = await client.post("/api/jobs", data={"name": "hello"})  # an HTML form's POST
        assert form.status_code == 415
        plain = await client.post(
            "/api/jobs", content=b'{"name": "hello"}', headers={"Content-Type": "text/plain"}
        )
        assert plain.status_code == 415
        fetch_metadata = await start(client, "hello", **{"Sec-Fetch-Site": "cross-site"})
        assert fetch_metadata.status_code == 403
        assert DataDir(server.data_dir).job_ids() == []
        assert (await start(client, "hello", Origin=server.url)).status_code == 201
        assert (await start(client, "hello", Origin="https://dash.example")).status_code == 201
        job = (await start(client, "sleeper")).json()
        cancel = await client.post(
            f"/api/jobs/{job['id']}/cancel", headers={**JSON, "Origin": "https://evil.example"}
        )
        assert cancel.status_code == 403


async def read_line(stream: trio.abc.ReceiveStream) -> bytes:
    data = b""
    while not data.endswith(b"\n"):
        chunk = await stream.receive_some(1)
        assert chunk, data
        data += chunk
    return data


async def test_serve_cancels_running_jobs_and_finishes_their_logs_on_sigterm(
    tmp_path: Path,
) -> None:
    jobs_file = tmp_path / "jobs.toml"
    jobs_file.write_text(JOBS)
    data = tmp_path / "data"
    with trio.fail_after(DEADLINE_S):
        process = await trio.lowlevel.open_process(
            cli("serve", "--port", "0", "--data-dir", str(data), "--jobs", str(jobs_file)),
            stderr=subprocess.PIPE,
            env=cli_env(),
        )
        assert process.stderr is not None
        first = await read_line(process.stderr)
        assert first.startswith(b"logstream: serving at http://127.0.0.1:")
        url = first.decode().split(" at ")[1].strip().rstrip("/")
        async with httpx.AsyncClient(base_url=url) as client:
            job = (await start(client, "sleeper")).json()
        pgid = int((await read_events(url, job["id"], until=has_lines(1))).lines[0][1])
        process.send_signal(signal.SIGTERM)
        assert await process.wait() == 0
    finished = DataDir(data).read_job(job["id"])
    assert (finished.status, finished.exit_code) == ("cancelled", 128 + signal.SIGTERM)
    assert live_processes_in_group(pgid) == []
