"""Problems over HTTP: the list, the counts in the job JSON, ``event: problem`` on the stream."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import httpx
import pytest
import trio

import logstream
from logstream.sse import SSEParser

from .conftest import Server
from .livejobs import DEADLINE_S, cli, cli_env, read_events, run_cli

FAILING = (
    "import sys\n"
    "print('compiling error_handler.c: 0 errors')\n"
    "print('src/a.c:3:5: warning: unused variable x', file=sys.stderr)\n"
    "print('::error file=app.py,line=7,title=Broken::it broke')\n"
    "print('Traceback (most recent call last):', file=sys.stderr)\n"
    "print('  File \"app.py\", line 7, in <module>', file=sys.stderr)\n"
    "print('ValueError: bad input', file=sys.stderr)\n"
    "sys.exit(1)\n"
)


async def test_a_job_s_problems_are_listed_counted_and_streamed(server: Server) -> None:
    log = await server.new_job()
    log.append(["build starts", "0 errors so far", "src/a.c:3:5: error: bad thing"])
    log.append(["Traceback (most recent call last):", '  File "x.py", line 2'], stderr=True)
    log.append(["::warning file=b.py,line=4::careful"])
    log.append(["KeyError: 'k'"], stderr=True)
    log.finish("failed", 1)
    await log.wait_closed()
    job_id = log.job.id
    expected = [
        {"line": 3, "severity": "error", "title": "bad thing", "file": "src/a.c"},
        {"line": 4, "severity": "error", "title": "KeyError: 'k'", "file": "x.py"},
        {"line": 6, "severity": "warning", "title": "careful", "file": "b.py"},
    ]
    for problem, line_in_file in zip(expected, (3, 2, 4), strict=True):
        problem["line_in_file"] = line_in_file
    async with server.client() as client:
        listed = (await client.get(f"/api/jobs/{job_id}/problems")).json()
        shown = (await client.get(f"/api/jobs/{job_id}")).json()
        jobs = (await client.get("/api/jobs")).json()["jobs"]
    assert listed == {"problems": expected}
    assert shown["problems"] == {"error": 2, "warning": 1}
    assert [job["problems"] for job in jobs if job["id"] == job_id] == [{"error": 2, "warning": 1}]
    # On the stream: each after the line that completed it (the traceback's at its last line).
    events = (await read_events(server.url, job_id)).events
    position = {e.id: n for n, e in enumerate(events) if e.id is not None}
    completed_by = {"bad thing": "3", "KeyError: 'k'": "7", "careful": "6"}
    problems = [(n, json.loads(e.data)) for n, e in enumerate(events) if e.event == "problem"]
    assert sorted((p for _, p in problems), key=lambda p: p["line"]) == expected
    assert all(n > position[completed_by[str(p["title"])]] for n, p in problems)
    assert all(e.id is None for e in events if e.event == "problem")
    assert events[-1].event == "end"


async def test_a_resumed_stream_sends_only_problems_found_after_its_position(
    server: Server,
) -> None:
    log = await server.new_job()
    log.append(["a.c:1: error: one", "ok", "b.c:2: error: two", "ok"])
    log.finish("failed", 1)
    await log.wait_closed()
    parser = SSEParser()
    async with (
        server.client() as client,
        client.stream(
            "GET", f"/api/jobs/{log.job.id}/events", headers={"Last-Event-ID": "2"}
        ) as response,
    ):
        events = [e for data in [await response.aread()] for e in parser.feed(data)]
    assert [json.loads(e.data)["title"] for e in events if e.event == "problem"] == ["two"]


async def test_problems_of_a_job_another_process_runs_come_from_its_data_dir(
    nursery: trio.Nursery, server: Server, tmp_path: Path
) -> None:
    script = tmp_path / "failing.py"
    script.write_text(FAILING)
    result = await run_cli(
        "run", "--quiet", "--port", "0", "--data-dir", str(server.data_dir.path), "--",
        sys.executable, str(script),
    )  # fmt: skip
    assert result.returncode == 1
    (job_id,) = server.data_dir.job_ids()
    async with server.client() as client:
        problems = (await client.get(f"/api/jobs/{job_id}/problems")).json()["problems"]
        shown = (await client.get(f"/api/jobs/{job_id}")).json()
    # stdout and stderr interleave as they are read: compare without the order.
    assert sorted((p["severity"], p["title"], p["file"], p["line_in_file"]) for p in problems) == [
        ("error", "Broken", "app.py", 7),
        ("error", "ValueError: bad input", "app.py", 7),
        ("warning", "unused variable x", "src/a.c", 3),
    ]
    assert [p["line"] for p in problems] == sorted(p["line"] for p in problems)
    assert shown["problems"] == {"error": 2, "warning": 1}
    events = (await read_events(server.url, job_id)).events
    assert len([e for e in events if e.event == "problem"]) == 3


async def test_matchers_from_the_command_line_and_from_the_log(tmp_path: Path) -> None:
    (tmp_path / "lint.json").write_text(
        json.dumps(
            {
                "problemMatcher": [
                    {
                        "owner": "lint",
                        "severity": "warning",
                        "pattern": [{"regexp": r"^LINT (\S+) (.+)$", "file": 1, "message": 2}],
                    }
                ]
            }
        )
    )
    (tmp_path / "late.json").write_text(
        '{"problemMatcher": [{"owner": "late", "pattern": [{"regexp": "^LATE (.+)$", '
        '"message": 1}]}]}'
    )
    code = "print('LINT a.py one'); print('::add-matcher::late.json'); print('LATE two')"
    data_dir = tmp_path / "data"
    with trio.fail_after(DEADLINE_S):
        result = await trio.run_process(
            cli("run", "--quiet", "--port", "0", "--data-dir", str(data_dir),
                "--matchers", str(tmp_path / "lint.json"), "--", sys.executable, "-c", code),
            cwd=tmp_path, capture_stdout=True, capture_stderr=True, env=cli_env(), check=False,
        )  # fmt: skip
    assert result.returncode == 0, result.stderr
    (job_dir,) = (data_dir / "jobs").iterdir()
    records = [json.loads(line) for line in (job_dir / "problems").read_text().splitlines()]
    assert [(r["line"], r["severity"], r["title"]) for r in records] == [
        (1, "warning", "one"),
        (3, "error", "two"),
    ]
    assert (job_dir / "problems").stat().st_mode & 0o777 == 0o600


async def test_a_bad_matchers_file_is_refused_before_anything_runs(tmp_path: Path) -> None:
    (tmp_path / "bad.json").write_text('{"problemMatcher": [{"owner": "x"}]}')
    marker = tmp_path / "ran"
    result = await run_cli(
        "run", "--port", "0", "--data-dir", str(tmp_path / "data"), "--matchers",
        str(tmp_path / "bad.json"), "--", "touch", str(marker),
    )  # fmt: skip
    assert result.returncode != 0
    assert b"--matchers" in result.stderr and b"pattern" in result.stderr
    assert not marker.exists()


async def test_a_huge_log_s_problems_are_not_found_by_rereading_it(server: Server) -> None:
    # 200,000 lines, problems at both ends: the list comes from the problems file alone.
    log = await server.new_job(ring_lines=1000)
    log.append(["src/first.c:1:1: error: first"])
    for start in range(0, 200_000, 10_000):
        log.append([f"line {n}" for n in range(start, start + 10_000)])
    log.append(["src/last.c:9:1: warning: last"])
    log.finish("failed", 1)
    await log.wait_closed()
    (server.data_dir.job_path(log.job.id) / "log").write_bytes(b"")  # the log is not read
    async with httpx.AsyncClient(base_url=server.url) as client:
        problems = (await client.get(f"/api/jobs/{log.job.id}/problems")).json()["problems"]
    assert [(p["line"], p["title"]) for p in problems] == [(1, "first"), (200_002, "last")]


@pytest.mark.parametrize("pty", [True, False], ids=["pty", "pipes"])
async def test_add_mask_hides_a_value_in_every_later_line_before_it_is_stored(
    tmp_path: Path, pty: bool
) -> None:
    secret = "fetched-t0ken-4242"
    code = (
        "import sys\n"
        f"s = {secret!r}\n"
        "print('early', s, flush=True)\n"
        "print('::add-mask::' + s, flush=True)\n"
        "print('late', s, flush=True)\n"
    )
    if not pty:
        # Under a pty per stream the two pseudo-terminals hand their output over on their own
        # schedules, so which is read first is not defined; through pipes stdout's lines,
        # written first, are read first.
        code += "print('on stderr', s, file=sys.stderr)\n"
    data_dir = tmp_path / "data"
    result = await run_cli(
        "run",
        "--quiet",
        "--pty" if pty else "--no-pty",
        "--port",
        "0",
        "--data-dir",
        str(data_dir),
        "--",
        sys.executable,
        "-c",
        code,
    )
    assert result.returncode == 0, result.stderr
    (job_dir,) = (data_dir / "jobs").iterdir()
    log = (job_dir / "log").read_bytes()
    # Only the line printed before the command shows it, as on GitHub Actions.
    assert log.count(secret.encode()) == 1, log
    assert b"data: early " + secret.encode() in log
    assert b"data: ::add-mask::***\n" in log
    assert b"data: late ***\n" in log
    if not pty:
        assert b"data: on stderr ***\n" in log
        assert log.index(b"early") < log.index(b"add-mask") < log.index(b"on stderr")


async def test_tail_ends_a_failed_job_with_where_it_failed(tmp_path: Path) -> None:
    async with logstream.open_server(data_dir=tmp_path / "data") as server:
        job = await server.start([sys.executable, "-c", FAILING], name="failing")
        done = await run_cli("tail", job.url)
        await job.wait()
        async with httpx.AsyncClient() as client:
            response = await client.get(f"{server.url}/api/jobs/{job.id}/problems")
    # Where stdout and stderr lines interleave depends on reads: take the numbers from the API.
    at = {p["title"]: p["line"] for p in response.json()["problems"]}
    assert done.returncode == 1
    notices = [line for line in done.stderr.decode().splitlines() if line.startswith("logstream:")]
    assert notices == [
        "logstream: 2 errors, 1 warning; the first:",
        f"logstream:   line {at['Broken']}: Broken (app.py:7)  {job.url}#L{at['Broken']}",
        f"logstream:   line {at['ValueError: bad input']}: ValueError: bad input (app.py:7)  "
        f"{job.url}#L{at['ValueError: bad input']}",
    ]


async def test_tail_of_a_job_that_succeeded_prints_no_summary(tmp_path: Path) -> None:
    async with logstream.open_server(data_dir=tmp_path / "data") as server:
        code = "print('a.c:1:1: warning: harmless')"
        job = await server.start([sys.executable, "-c", code], name="fine")
        done = await run_cli("tail", job.url)
        await job.wait()
    assert done.returncode == 0
    assert b"logstream:" not in done.stderr


async def test_the_job_list_counts_problems_of_a_job_another_process_is_still_running(
    server: Server, tmp_path: Path
) -> None:
    # A `logstream run` sharing the data directory: its job.json gets the counts only at the
    # end, so the list reads them from the job's problems file while it runs.
    go = tmp_path / "go"
    script = tmp_path / "slow.py"
    script.write_text(
        "import os, sys, time\n"
        "print('src/a.c:3:5: error: bad thing', flush=True)\n"
        "print('src/b.c:4:1: warning: careful', flush=True)\n"
        f"while not os.path.exists({str(go)!r}):\n"
        "    time.sleep(0.02)\n"
        "print('a.c:9: error: after', flush=True)\n"
        "sys.exit(1)\n"
    )

    async def listed() -> dict[str, object]:
        async with server.client() as client:
            (job,) = (await client.get("/api/jobs")).json()["jobs"]
        assert isinstance(job, dict)
        return job

    async with trio.open_nursery() as nursery:
        done = trio.Event()

        async def run() -> None:
            result = await run_cli(
                "run", "--quiet", "--port", "0", "--data-dir", str(server.data_dir.path), "--",
                sys.executable, str(script),
            )  # fmt: skip
            assert result.returncode == 1
            done.set()

        nursery.start_soon(run)
        counts = {"error": 1, "warning": 1}
        with trio.fail_after(DEADLINE_S):
            # (The list is polled: nothing notifies a change another process makes.)
            while not server.data_dir.job_ids() or (await listed())["problems"] != counts:  # noqa: ASYNC110
                await trio.sleep(0.05)
        assert (await listed())["status"] == "running"
        go.touch()
        with trio.fail_after(DEADLINE_S):
            await done.wait()
    job = await listed()
    assert (job["status"], job["problems"]) == ("failed", {"error": 2, "warning": 1})
