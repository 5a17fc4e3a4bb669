"""The data dir as the source of truth (docs/data-dir.md): `serve` beside `run`, crashes, gc."""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import httpx
import trio

from logstream import sse
from logstream.sse import Event, SSEParser

from .processes import DEADLINE_S, URL_LINE, live_processes_in_group, start_logstream

PY = sys.executable


async def read_stream(url: str, headers: dict[str, str] | None = None) -> list[Event]:
    events: list[Event] = []
    parser = SSEParser()
    with trio.fail_after(DEADLINE_S):
        async with (
            httpx.AsyncClient(timeout=DEADLINE_S) as client,
            client.stream("GET", url, headers=headers) as response,
        ):
            assert response.status_code == 200
            async for data in response.aiter_raw():
                events += parser.feed(data)
    return events + parser.flush()


async def read_stream_until(url: str, lines: int) -> list[Event]:
    """The events of a stream until it has sent ``lines`` lines (then the test hangs up)."""
    events: list[Event] = []
    parser = SSEParser()
    with trio.fail_after(DEADLINE_S):
        async with (
            httpx.AsyncClient(timeout=DEADLINE_S) as client,
            client.stream("GET", url) as response,
        ):
            assert response.status_code == 200
            async for data in response.aiter_raw():
                events += parser.feed(data)
                if len(line_ids(events)) >= lines:
                    break
    return events


def line_ids(events: list[Event]) -> list[int]:
    return [int(e.id) for e in events if e.id is not None]


async def test_serve_follows_a_job_that_another_process_runs(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    data_dir = str(tmp_path / "data")
    serving = await start_logstream(nursery, "serve", "--port", "0", "--data-dir", data_dir)
    base = await serving.wait_for_serving()
    go = tmp_path / "go"
    script = (
        "import os, sys, time\n"
        "print('one', flush=True); print('two', file=sys.stderr, flush=True)\n"
        "print('three', flush=True)\n"
        f"while not os.path.exists({str(go)!r}): time.sleep(0.01)\n"
        "print('four\\rfive', flush=True)\n"
        "sys.exit(4)\n"
    )
    running = await start_logstream(
        nursery, "run", "--port", "0", "--data-dir", data_dir, "--", PY, "-c", script
    )
    job_id, _ = await running.wait_for_url()
    events: list[Event] = []
    parser = SSEParser()
    with trio.fail_after(DEADLINE_S):
        async with httpx.AsyncClient(timeout=DEADLINE_S) as client:
            listed = (await client.get(f"{base}/api/jobs")).json()["jobs"]
            assert [job["id"] for job in listed] == [job_id]
            assert listed[0]["status"] == "running"
            async with client.stream("GET", f"{base}/api/jobs/{job_id}/events") as response:
                async for data in response.aiter_raw():
                    events += parser.feed(data)
                    if len(line_ids(events)) == 3 and not go.exists():
                        go.touch()  # the job goes on only once serve has shown its first lines
    assert await running.wait_exit() == 4
    assert line_ids(events) == [1, 2, 3, 4]
    # Order is exact within each stream; between them it is the order logstream read them in.
    lines = [(e.event, sse.line_text(e.data)) for e in events if e.id is not None]
    assert [text for kind, text in lines if kind == "message"] == ["one", "three", "four\rfive"]
    assert [text for kind, text in lines if kind == "stderr"] == ["two"]
    assert json.loads(events[-1].data) == {"status": "failed", "exit_code": 4}
    serving.signal(signal.SIGTERM)
    assert await serving.wait_exit() == 0


async def test_kill_9_of_run_loses_nothing_printed_a_second_before(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    data_dir = str(tmp_path / "data")
    # Print numbered lines steadily until killed; the job then dies of SIGPIPE or is cleaned up.
    script = (
        "import os, time\n"
        "print('pgid', os.getpgrp(), flush=True)\n"
        "n = 0\n"
        "while True:\n"
        "    n += 1\n"
        "    print('line', n, 'x' * 50, flush=n % 100 == 0)\n"
        "    if n % 1000 == 0: time.sleep(0.01)\n"
    )
    running = await start_logstream(
        nursery, "run", "--port", "0", "--data-dir", data_dir, "--", PY, "-c", script
    )
    job_id, _ = await running.wait_for_url()
    with trio.fail_after(DEADLINE_S):
        while b"line 5000 " not in running.stdout:
            await running.changed.wait()
    printed = bytes(running.stdout).count(b"\n")
    pgid = int(bytes(running.stdout).split(b"\n", 1)[0].split()[1])
    await trio.sleep(1.2)  # the guarantee under test is about time: flushed within a second
    running.signal(signal.SIGKILL)
    await running.wait_exit()
    os.killpg(pgid, signal.SIGKILL)

    # Simulate a torn write: half a record at the end of the file, as a crash mid-write leaves.
    log_file = tmp_path / "data" / "jobs" / job_id / "log"
    with log_file.open("ab") as torn:
        torn.write(b"id: 99999999\ndata: half a rec")

    serving = await start_logstream(nursery, "serve", "--port", "0", "--data-dir", data_dir)
    base = await serving.wait_for_serving()
    async with httpx.AsyncClient(timeout=DEADLINE_S) as client:
        job = (await client.get(f"{base}/api/jobs/{job_id}")).json()
    assert job["status"] == "interrupted" and job["exit_code"] is None
    events = await read_stream(f"{base}/api/jobs/{job_id}/events")
    ids = line_ids(events)
    assert ids == list(range(1, len(ids) + 1))
    assert len(ids) >= printed
    assert job["lines"] == len(ids)
    texts = [sse.line_text(e.data) for e in events if e.id is not None]
    assert texts[0].startswith("pgid ")
    assert all(t == f"line {n} {'x' * 50}" for n, t in enumerate(texts[1:], 1))
    assert events[-1].event == "end"
    assert json.loads(events[-1].data) == {"status": "interrupted", "exit_code": None}
    assert live_processes_in_group(pgid) == []
    serving.signal(signal.SIGINT)
    assert await serving.wait_exit() == 0


async def test_a_finished_job_is_served_complete_after_a_restart(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    data_dir = str(tmp_path / "data")
    running = await start_logstream(
        nursery,
        "run",
        "--quiet",
        "--port",
        "0",
        "--data-dir",
        data_dir,
        "--",
        PY,
        str(Path(__file__).parent.parent / "sample_jobs" / "firehose.py"),
        "200000",
    )
    job_id, _ = await running.wait_for_url()
    assert await running.wait_exit() == 0
    assert running.stdout == b""  # --quiet
    serving = await start_logstream(nursery, "serve", "--port", "0", "--data-dir", data_dir)
    base = await serving.wait_for_serving()
    events = await read_stream(
        f"{base}/api/jobs/{job_id}/events", headers={"Last-Event-ID": "123456"}
    )
    assert line_ids(events) == list(range(123_457, 200_001))
    assert sse.line_text(events[-2].data) == "line 200000 of the firehose"
    async with httpx.AsyncClient(timeout=DEADLINE_S) as client:
        text = (await client.get(f"{base}/api/jobs/{job_id}/log")).text
    assert text.count("\n") == 200_000
    serving.signal(signal.SIGTERM)
    assert await serving.wait_exit() == 0


async def test_gc_command_keeps_the_newest_jobs(nursery: trio.Nursery, tmp_path: Path) -> None:
    data_dir = str(tmp_path / "data")
    ids = []
    for n in range(3):
        running = await start_logstream(
            nursery, "run", "--port", "0", "--data-dir", data_dir, "--", "echo", str(n)
        )
        ids.append((await running.wait_for_url())[0])
        assert await running.wait_exit() == 0
    gc = await start_logstream(nursery, "gc", "--data-dir", data_dir, "--keep-jobs", "1")
    assert await gc.wait_exit() == 0
    assert b"removed 2 jobs" in gc.stderr
    assert sorted(p.name for p in (tmp_path / "data" / "jobs").iterdir()) == [ids[-1]]


def test_pure_core_imports_no_async_framework() -> None:
    code = (
        "import sys\n"
        "import logstream.lines, logstream.ring, logstream.sse\n"
        "import logstream.logformat, logstream.mask, logstream.config, logstream.jobsfile\n"
        "import logstream.jobspec, logstream.job, logstream.routes, logstream.errors\n"
        "import logstream.backends.protocol, logstream.metrics, logstream.asgi\n"
        "import logstream.fdio, logstream.cors, logstream.reconnect\n"
        "import logstream.eventstream, logstream.hosts\n"
        "import logstream.ingest, logstream.upload, logstream.cimeta\n"
        "import logstream.problems, logstream.matchers, logstream.workflow, logstream.problemlog\n"
        "import logstream.redisformat\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & "
        "{'trio', 'anyio', 'quart', 'quart_trio', 'hypercorn', 'httpx', 'asyncio'}))\n"
    )
    import subprocess

    result = subprocess.run([PY, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_url_line_pattern_matches_the_contract() -> None:
    assert URL_LINE.match(
        b"logstream: job 20261129T013704255619Z-4334 live at "
        b"http://127.0.0.1:8765/jobs/20261129T013704255619Z-4334\n"
    )


async def test_serve_shows_the_current_state_of_a_job_another_process_runs(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    # Requests made while the job runs leave a cached reader behind; every later answer
    # must still show the job as it is now, not as it was then. A second server tells the
    # test when lines are on disk, without touching the first one's reader.
    data_dir = str(tmp_path / "data")
    serving = await start_logstream(nursery, "serve", "--port", "0", "--data-dir", data_dir)
    observing = await start_logstream(nursery, "serve", "--port", "0", "--data-dir", data_dir)
    base = await serving.wait_for_serving()
    observer = await observing.wait_for_serving()
    go = [tmp_path / "go1", tmp_path / "go2"]
    script = (
        "import os, time\n"
        "def wait(path):\n"
        "    while not os.path.exists(path): time.sleep(0.01)\n"
        "for n in range(1, 11):\n"
        f"    if n == 3: wait({str(go[0])!r})\n"
        f"    if n == 7: wait({str(go[1])!r})\n"
        "    print(f'n{n}', flush=True)\n"
        "raise SystemExit(3)\n"
    )
    running = await start_logstream(
        nursery, "run", "-q", "--port", "0", "--data-dir", data_dir, "--", PY, "-c", script
    )
    job_id, _ = await running.wait_for_url()
    api = f"{base}/api/jobs/{job_id}"

    async def wait_until_on_disk(last: int) -> None:
        url = f"{observer}/api/jobs/{job_id}/events?last_event_id={last - 1}"
        assert line_ids(await read_stream_until(url, lines=1)) == [last]

    async with httpx.AsyncClient(timeout=DEADLINE_S) as client:
        await wait_until_on_disk(2)
        job = (await client.get(api)).json()
        assert (job["status"], job["lines"]) == ("running", 2)

        go[0].touch()
        await wait_until_on_disk(6)
        job = (await client.get(api)).json()
        assert (job["status"], job["lines"]) == ("running", 6)
        page = (await client.get(f"{api}/lines")).json()
        assert (page["last"], page["ended"], len(page["lines"])) == (6, False, 6)
        events = await read_stream_until(f"{api}/events?tail=2", lines=2)
        assert line_ids(events) == [5, 6]

        go[1].touch()
        assert await running.wait_exit() == 3
        job = (await client.get(api)).json()
        assert (job["status"], job["exit_code"], job["lines"]) == ("failed", 3, 10)
        assert job["finished_at"] is not None
        page = (await client.get(f"{api}/lines")).json()
        assert (page["last"], page["ended"], len(page["lines"])) == (10, True, 10)
        events = await read_stream(f"{api}/events?tail=2")
        assert line_ids(events) == [9, 10]
        assert json.loads(events[-1].data) == {"status": "failed", "exit_code": 3}
        events = await read_stream(f"{api}/events?tail=0")
        assert [e.event for e in events] == ["end"]

    tail = await start_logstream(nursery, "tail", "--no-follow", f"{base}/jobs/{job_id}")
    assert await tail.wait_exit() == 3
    assert tail.stdout == b"".join(b"n%d\n" % n for n in range(1, 11))
    for server in (serving, observing):
        server.signal(signal.SIGTERM)
        assert await server.wait_exit() == 0


async def test_the_list_and_the_job_agree_on_a_running_jobs_line_count(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    data_dir = str(tmp_path / "data")
    release = tmp_path / "release"
    script = (
        "import os, sys, time\n"
        "print('one'); print('two', file=sys.stderr); sys.stdout.flush()\n"
        f"while not os.path.exists({str(release)!r}): time.sleep(0.01)\n"
    )
    running = await start_logstream(
        nursery, "run", "--port", "0", "--quiet", "--data-dir", data_dir, "--", PY, "-c", script
    )
    job_id, _ = await running.wait_for_url()
    serving = await start_logstream(nursery, "serve", "--port", "0", "--data-dir", data_dir)
    base = await serving.wait_for_serving()
    await read_stream_until(f"{base}/api/jobs/{job_id}/events", 2)  # both are on disk
    async with httpx.AsyncClient(timeout=DEADLINE_S) as client:
        listed = (await client.get(f"{base}/api/jobs")).json()["jobs"]
        job = (await client.get(f"{base}/api/jobs/{job_id}")).json()
    (entry,) = [shown for shown in listed if shown["id"] == job_id]
    assert (entry["status"], entry["lines"]) == (job["status"], job["lines"]) == ("running", 2)
    await trio.Path(release).touch()
    assert await running.wait_exit() == 0
    serving.signal(signal.SIGTERM)
    assert await serving.wait_exit() == 0


async def test_a_job_removed_by_gc_is_404_everywhere_on_a_serve_that_had_opened_it(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    data_dir = str(tmp_path / "data")
    ids = []
    for n in range(2):
        running = await start_logstream(
            nursery, "run", "--port", "0", "--data-dir", data_dir, "--", "echo", str(n)
        )
        ids.append((await running.wait_for_url())[0])
        assert await running.wait_exit() == 0
    old = ids[0]
    serving = await start_logstream(nursery, "serve", "--port", "0", "--data-dir", data_dir)
    base = await serving.wait_for_serving()
    paths = [f"/api/jobs/{old}", f"/api/jobs/{old}/events", f"/api/jobs/{old}/log", f"/jobs/{old}"]
    async with httpx.AsyncClient(timeout=DEADLINE_S) as client:
        for path in paths:  # the server opens the job and keeps it
            assert (await client.get(f"{base}{path}")).status_code == 200
        gc = await start_logstream(nursery, "gc", "--data-dir", data_dir, "--keep-jobs", "1")
        assert await gc.wait_exit() == 0
        listed = [job["id"] for job in (await client.get(f"{base}/api/jobs")).json()["jobs"]]
        assert listed == [ids[1]]
        for path in paths:
            response = await client.get(f"{base}{path}")
            assert response.status_code == 404, path
            assert response.json() == {"error": "no such job"}
    serving.signal(signal.SIGTERM)
    assert await serving.wait_exit() == 0
