"""The security review's probes, on real servers over real sockets (docs/security.md).

DNS rebinding (Host and Origin), secrets in the log (cut lines, escapes, the job's
environment, the jobs file), bounded pages, streams and searches, file modes, the cookie,
WebSocket upgrades and the security headers of error answers.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import stat
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import trio

import logstream
from logstream.config import Settings
from logstream.job import Job
from logstream.sse import SSEParser
from logstream.store import DataDir, write_job
from logstream.web import MAX_PAGE_BYTES, MAX_SEARCHES, MAX_SEARCHES_WAITING

from .conftest import Server, running_server, with_settings
from .livejobs import DEADLINE_S, run_cli
from .processes import start_logstream

PY = sys.executable
TOKEN = "the-t0ken-of-this-server"
SECRET = "hunter2-s3cret-value"
JSON = {"Content-Type": "application/json"}
JOBS = f"""
[jobs.hello]
command = ["{PY}", "-c", "print('hello')", "--password=hunter2-s3cret-value"]
"""


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/")[0])


async def raw_request(url: str, request: bytes) -> bytes:
    """Send ``request`` as is and read the answer until the server closes or it is whole."""
    host, port = url.removeprefix("http://").split("/")[0].rsplit(":", 1)
    stream = await trio.open_tcp_stream(host, int(port))
    async with stream:
        await stream.send_all(request)
        answer = b""
        with trio.fail_after(DEADLINE_S):
            while b"\r\n\r\n" not in answer or not _complete(answer):
                data = await stream.receive_some(65536)
                if not data:
                    break
                answer += data
    return answer


def _complete(answer: bytes) -> bool:
    head, _, body = answer.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return len(body) >= int(line.split(b":")[1])
    return False


# ---- DNS rebinding: Host and Origin ---------------------------------------------------------


async def test_without_a_token_a_foreign_host_is_refused_and_loopback_names_are_served(
    server: Server,
) -> None:
    log = await server.new_job("private")
    log.append(["a private line"])
    port = port_of(server.url)
    async with server.client() as client:
        for host in [f"evil.example:{port}", "evil.example", f"127.0.0.1.evil.example:{port}"]:
            refused = await client.get("/api/jobs", headers={"Host": host})
            assert refused.status_code == 403, host
            assert "private" not in refused.text
            assert "Host" in refused.json()["error"] and "--allow-host" in refused.json()["error"]
            log_page = await client.get(f"/api/jobs/{log.job.id}/log", headers={"Host": host})
            assert log_page.status_code == 403 and "private line" not in log_page.text
        for host in [f"localhost:{port}", f"127.0.0.1:{port}", "127.8.9.10", f"[::1]:{port}"]:
            assert (await client.get("/api/jobs", headers={"Host": host})).status_code == 200
        # A health check names nothing: a load balancer may probe with any Host.
        assert (await client.get("/healthz", headers={"Host": "10.0.0.5"})).status_code == 200


async def test_without_a_token_the_ingest_routes_refuse_a_foreign_host_too(
    server: Server,
) -> None:
    port = port_of(server.url)
    async with server.client() as client:
        refused = await client.put(
            "/api/ingest/jobs/rebound-job",
            json={"name": "rebound", "command": ["true"]},
            headers={"Host": f"evil.example:{port}"},
        )
        assert refused.status_code == 403
        assert "Host" in refused.json()["error"]
        assert refused.headers["x-frame-options"] == "DENY"
        jobs = (await client.get("/api/jobs")).json()["jobs"]
        assert all(job["id"] != "rebound-job" for job in jobs)


async def test_allow_host_serves_that_name_from_the_command_line(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    serving = await start_logstream(
        nursery,
        "serve",
        "--port",
        "0",
        "--data-dir",
        str(tmp_path / "data"),
        "--allow-host",
        "logs.example",
        "--allow-host",
        "ci.example",
    )
    url = await serving.wait_for_serving()
    port = port_of(url)
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        for host in [f"logs.example:{port}", "ci.example", f"LOGS.example.:{port}"]:
            assert (await client.get("/api/jobs", headers={"Host": host})).status_code == 200
        other = await client.get("/api/jobs", headers={"Host": f"evil.example:{port}"})
        assert other.status_code == 403
    serving.signal(signal.SIGTERM)
    assert await serving.wait_exit() == 0


async def test_origin_is_checked_against_the_fixed_set_never_the_requests_own_host(
    tmp_path: Path,
) -> None:
    jobs_file = tmp_path / "jobs.toml"
    jobs_file.write_text(JOBS)
    # With a token every Host is served (the token is the defence), but a page's Origin must
    # still be one of ours: the same evil name in Host and Origin used to pass.
    async with (
        logstream.open_server(
            data_dir=tmp_path / "data", jobs_file=jobs_file, token=TOKEN, allow_hosts=["ci.lan"]
        ) as srv,
        httpx.AsyncClient(
            base_url=srv.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30
        ) as client,
    ):
        port = port_of(srv.url)
        rebound = {"Host": f"evil.example:{port}", "Origin": f"http://evil.example:{port}"}
        refused = await client.post(
            "/api/jobs", json={"name": "hello"}, headers={**JSON, **rebound}
        )
        assert refused.status_code == 403
        assert "Origin" in refused.json()["error"]
        for origin in [f"http://127.0.0.1:{port}", f"http://localhost:{port}", "http://ci.lan:80"]:
            started = await client.post(
                "/api/jobs", json={"name": "hello"}, headers={**JSON, "Origin": origin}
            )
            assert started.status_code == 201, origin
        assert srv.settings.token == TOKEN


async def test_without_a_token_a_rebound_page_can_neither_list_nor_start_jobs(
    tmp_path: Path,
) -> None:
    jobs_file = tmp_path / "jobs.toml"
    jobs_file.write_text(JOBS)
    async with (
        logstream.open_server(data_dir=tmp_path / "data", jobs_file=jobs_file) as srv,
        httpx.AsyncClient(base_url=srv.url, timeout=30) as client,
    ):
        port = port_of(srv.url)
        rebound = {"Host": f"evil.example:{port}", "Origin": f"http://evil.example:{port}"}
        assert (await client.get("/api/jobs", headers=rebound)).status_code == 403
        start = await client.post("/api/jobs", json={"name": "hello"}, headers={**JSON, **rebound})
        assert start.status_code == 403
        assert (await client.get("/api/jobs")).json()["jobs"] == []


# ---- Secrets in the log ---------------------------------------------------------------------


async def run_job(tmp_path: Path, script: str, *options: str, **env: str) -> tuple[str, bytes]:
    """Run ``python -c script`` under ``logstream run``; its ID and every stored byte."""
    data_dir = tmp_path / "data"
    result = await run_cli(
        "run", "--quiet", "--port", "0", "--data-dir", str(data_dir), *options, "--", PY, "-c",
        script,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **env},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    job_id = result.stderr.split(b"logstream: job ")[1].split()[0].decode()
    stored = b"".join(p.read_bytes() for p in data_dir.rglob("*") if p.is_file())
    return job_id, stored


async def test_secrets_cut_by_the_line_limit_or_broken_by_escapes_are_masked(
    tmp_path: Path,
) -> None:
    script = (
        "import os\n"
        "s = os.environ['API_SECRET']\n"
        "print('A' * 65530 + s)\n"  # the secret straddles the 64 KiB cut
        "print(s[:6] + '\\x1b[0m' + s[6:])\n"  # an ANSI reset inside the secret
        "print('B' * 140000 + s + 'C' * 10)\n"  # cut while the line still arrives
    )
    _job, stored = await run_job(tmp_path, script, "--mask", "API_SECRET", API_SECRET=SECRET)
    for fragment in [SECRET, SECRET[:6], SECRET[6:], SECRET[:10], SECRET[10:]]:
        assert fragment.encode() not in stored, fragment
    assert stored.count(b"***") == 3


async def test_overlapping_secrets_leave_no_fragment_in_the_log(tmp_path: Path) -> None:
    first, second = "abcdefXYZ1234", "XYZ1234ghijklmn"
    script = "import os; print('<' + os.environ['FIRST'][:-7] + os.environ['SECOND'] + '>')"
    _job, stored = await run_job(
        tmp_path, script, "--mask", "FIRST", "--mask", "SECOND", FIRST=first, SECOND=second
    )
    assert b"<***>" in stored
    assert b"ghijklmn" not in stored and b"abcdef" not in stored


async def test_the_jobs_files_commands_are_masked_in_the_job_list(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DEPLOY_PASSWORD", SECRET)
    jobs_file = tmp_path / "jobs.toml"
    jobs_file.write_text(JOBS)
    async with (
        logstream.open_server(
            data_dir=tmp_path / "data", jobs_file=jobs_file, masks=["DEPLOY_PASSWORD"]
        ) as srv,
        httpx.AsyncClient(base_url=srv.url, timeout=30) as client,
    ):
        listing = await client.get("/api/jobs")
    assert listing.json()["defined"][0]["command"][-1] == "--password=***"
    assert SECRET not in listing.text


async def test_the_token_never_reaches_the_job_and_is_masked(tmp_path: Path) -> None:
    ingest = "ingest-t0ken-value"
    script = (
        "import os\n"
        "for name, value in sorted(os.environ.items()): print(name + '=' + value)\n"
        f"print('echoed {TOKEN} and {ingest}')\n"  # a job that has the values some other way
    )
    job_id, stored = await run_job(
        tmp_path, script, LOGSTREAM_TOKEN=TOKEN, LOGSTREAM_INGEST_TOKEN=ingest
    )
    assert TOKEN.encode() not in stored and ingest.encode() not in stored
    assert b"LOGSTREAM_TOKEN=" not in stored and b"LOGSTREAM_INGEST_TOKEN=" not in stored
    assert b"echoed *** and ***" in stored
    assert b"LOGSTREAM_JOB_ID=" + job_id.encode() in stored  # the environment was printed


async def test_token_file_keeps_the_token_off_the_command_line(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    running = await start_logstream(
        nursery,
        "run",
        "--port",
        "0",
        "--data-dir",
        str(tmp_path / "data"),
        "--token-file",
        str(token_file),
        "--",
        "sleep",
        "600",
    )
    job_id, url = await running.wait_for_url()
    cmdline = (await trio.Path(f"/proc/{running.pid}/cmdline").read_bytes()).replace(b"\0", b" ")
    assert TOKEN.encode() not in cmdline and b"--token-file" in cmdline
    base = url.split("/jobs/")[0]
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        assert (await client.get(f"/api/jobs/{job_id}")).status_code == 401
        auth = {"Authorization": f"Bearer {TOKEN}"}
        assert (await client.get(f"/api/jobs/{job_id}", headers=auth)).status_code == 200
    running.signal(signal.SIGTERM)
    assert await running.wait_exit() == 128 + signal.SIGTERM


async def test_tail_reads_the_token_from_a_file(settings: Settings, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    async with running_server(with_settings(settings, token=TOKEN)) as server:
        log = await server.new_job()
        log.append(["first", "second"])
        log.finish("succeeded", 0)
        url = f"{server.url}/jobs/{log.job.id}"
        with trio.fail_after(DEADLINE_S):
            followed = await trio.run_process(
                [PY, "-m", "logstream", "tail", "--token-file", str(token_file), url],
                capture_stdout=True,
                capture_stderr=True,
                check=False,
            )
            refused = await trio.run_process(
                [PY, "-m", "logstream", "tail", url],
                capture_stdout=True,
                capture_stderr=True,
                check=False,
            )
    assert (followed.returncode, followed.stdout) == (0, b"first\nsecond\n")
    assert refused.returncode == 77  # token missing


async def test_a_bad_token_file_or_both_token_options_are_usage_errors(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.write_text("\n")
    data = str(tmp_path / "data")
    for options, message in [
        (["--token-file", str(empty)], b"is empty"),
        (["--token-file", str(tmp_path / "missing")], b"cannot read the token file"),
        (["--token", "x", "--token-file", str(empty)], b"not both"),
    ]:
        result = await run_cli("serve", "--port", "0", "--data-dir", data, *options)
        assert result.returncode == 2 and message in result.stderr, result.stderr
    # ``push`` reads its runner token the same way (nothing is uploaded on a bad file).
    server = "http://127.0.0.1:9"
    result = await run_cli(
        "push", "--server", server, "--data-dir", data, "--token-file", str(empty)
    )
    assert result.returncode == 2 and b"is empty" in result.stderr, result.stderr


# ---- Bounded pages, streams and searches ----------------------------------------------------


def peak_rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        return int(next(line for line in status if line.startswith("VmHWM")).split()[1])


async def test_pages_of_long_lines_are_capped_by_bytes_and_memory_stays_bounded(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    data_dir = str(tmp_path / "data")
    count = 600
    script = (
        f"import sys\nline = 'x' * 65535 + '\\n'\nfor _ in range({count}): sys.stdout.write(line)\n"
    )
    job_id, _stored = await run_job(tmp_path, script)
    serving = await start_logstream(nursery, "serve", "--port", "0", "--data-dir", data_dir)
    url = await serving.wait_for_serving()
    before = peak_rss_kb(serving.pid)
    pages: list[dict[str, object]] = []
    async with httpx.AsyncClient(base_url=url, timeout=120) as client:

        async def page() -> None:
            answer = await client.get(f"/api/jobs/{job_id}/lines", params={"limit": 10000})
            pages.append(answer.json())

        # Four at once, as the review did: 600 lines of 64 KiB were ~40 MB per page.
        async with trio.open_nursery() as requests:
            for _ in range(4):
                requests.start_soon(page)
        grown_mb = (peak_rss_kb(serving.pid) - before) / 1024
        for shown in pages:
            lines = shown["lines"]
            assert isinstance(lines, list)
            assert 1 <= len(lines) < count
            assert sum(len(text) for _seq, _stream, text in lines) <= MAX_PAGE_BYTES + 65536
        # The client pages on from the last line it got, to the end.
        after, seen = 0, 0
        while after < count:
            next_page = (
                await client.get(f"/api/jobs/{job_id}/lines", params={"after": after})
            ).json()
            assert next_page["lines"][0][0] == after + 1
            after = next_page["lines"][-1][0]
            seen += len(next_page["lines"])
        assert seen == count
    print(f"\n4 concurrent /lines pages of 64 KiB lines: peak RSS grew {grown_mb:.0f} MiB")
    assert grown_mb < 150, grown_mb
    serving.signal(signal.SIGTERM)
    await serving.wait_exit()


async def test_job_list_streams_count_toward_max_streams(settings: Settings) -> None:
    async with (
        running_server(with_settings(settings, max_streams=3, busy_retry_ms=7000)) as server,
        server.client() as client,
        client.stream("GET", "/api/events") as first,
        client.stream("GET", "/api/events") as second,
        client.stream("GET", "/api/events") as third,
    ):
        for stream in (first, second, third):
            assert stream.status_code == 200
        # An uncounted stream would never end: the deadline turns that into a failure.
        with trio.fail_after(DEADLINE_S):
            refused = await client.get("/api/events")
            assert refused.text == "retry: 7000\n\n"
            assert refused.headers["retry-after"] == "7"
            log = await server.new_job()
            events = await client.get(f"/api/jobs/{log.job.id}/events")
            assert events.text == "retry: 7000\n\n"
        metrics = (await client.get("/metrics")).text
        assert "logstream_streams_refused_total 2" in metrics
        assert "logstream_streams_open 3" in metrics


def test_the_default_max_streams_is_bounded() -> None:
    assert Settings(data_dir=Path("/nonexistent")).max_streams == 2000


async def test_many_job_list_streams_share_one_reader_of_the_job_list(server: Server) -> None:
    reads = 0
    jobs = server.catalog.jobs

    async def counting_jobs(limit: int = 500) -> list[Job]:
        nonlocal reads
        reads += 1
        return await jobs(limit)

    # Jobs of another process sharing the data directory appear only on disk.
    for index in range(100):
        job_id, path = server.data_dir.new_job_dir()
        write_job(path, Job(id=job_id, name=f"old {index}", command=["true"], status="succeeded"))
    server.catalog.jobs = counting_jobs  # type: ignore[method-assign]
    streams = 40
    seen = [False] * streams
    opened = 0
    all_open = trio.Event()
    newcomer = "written by another process"

    async def follow(index: int, client: httpx.AsyncClient) -> None:
        nonlocal opened
        parser = SSEParser()
        async with client.stream("GET", "/api/events") as response:
            async for data in response.aiter_raw():
                for event in parser.feed(data):
                    if event.event == "jobs":
                        opened += 1
                        if opened == streams:
                            all_open.set()
                    if event.event == "job" and json.loads(event.data)["name"] == newcomer:
                        seen[index] = True
                        return

    with trio.fail_after(DEADLINE_S):
        async with server.client() as client, trio.open_nursery() as nursery:
            for index in range(streams):
                nursery.start_soon(follow, index, client)
            await all_open.wait()
            reads_before = reads
            job_id, path = server.data_dir.new_job_dir()
            write_job(path, Job(id=job_id, name=newcomer, command=["true"], status="failed"))
    assert all(seen)
    # Each stream used to read every job.json every second on its own: 40 reads at least.
    assert reads - reads_before <= 10, reads - reads_before


async def test_searches_are_bounded_and_the_overflow_is_told_to_come_back(
    server: Server,
) -> None:
    log = await server.new_job()
    log.append([f"line {i} needle" for i in range(1000)])
    holders = [object() for _ in range(MAX_SEARCHES)]
    for holder in holders:
        server.state.search_limiter.acquire_on_behalf_of_nowait(holder)
    answers: list[httpx.Response] = []
    with trio.fail_after(DEADLINE_S):
        async with server.client() as client, trio.open_nursery() as nursery:

            async def search() -> None:
                answers.append(
                    await client.get(f"/api/jobs/{log.job.id}/search", params={"q": "needle"})
                )

            for _ in range(MAX_SEARCHES_WAITING):
                nursery.start_soon(search)
            # The requests arrive over sockets; no event tells when all are queued: poll.
            while server.state.searches_waiting < MAX_SEARCHES_WAITING:  # noqa: ASYNC110
                await trio.sleep(0.01)
            overflow = await client.get(f"/api/jobs/{log.job.id}/search", params={"q": "needle"})
            assert overflow.status_code == 503
            assert "too many searches" in overflow.json()["error"]
            assert answers == []  # the others wait their turn
            for holder in holders:
                server.state.search_limiter.release_on_behalf_of(holder)
    assert [a.status_code for a in answers] == [200] * MAX_SEARCHES_WAITING
    assert all(len(a.json()["matches"]) == 1000 for a in answers)


# ---- Files ----------------------------------------------------------------------------------


@pytest.fixture
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def modes(root: Path) -> dict[str, int]:
    return {
        str(path.relative_to(root)): stat.S_IMODE(path.lstat().st_mode)
        for path in [root, *root.rglob("*")]
    }


@pytest.mark.usefixtures("umask_022")
async def test_the_data_directory_is_private_under_umask_022(tmp_path: Path) -> None:
    await run_job(tmp_path, "print('private')")
    found = modes(tmp_path / "data")
    folders = {name: mode for name, mode in found.items() if (tmp_path / "data" / name).is_dir()}
    files = {name: mode for name, mode in found.items() if name not in folders}
    assert set(folders.values()) == {0o700}, folders
    assert {name.rsplit("/", 1)[1] for name in files} == {"job.json", "log", "index", "lock"}
    assert set(files.values()) == {0o600}, files


@pytest.mark.usefixtures("umask_022")
async def test_a_group_shared_data_directory_stays_shared(tmp_path: Path) -> None:
    shared = tmp_path / "data"
    shared.mkdir()
    os.chmod(shared, 0o2770)
    await run_job(tmp_path, "print('shared')")
    found = modes(shared)
    assert found["."] == 0o2770
    job_dir = next(name for name in found if name.count("/") == 1)
    assert found["jobs"] & 0o070 == 0o070 and found[job_dir] & 0o070 == 0o070
    assert found[f"{job_dir}/log"] & 0o044 == 0o040  # the group reads, others nothing


async def test_symlinked_job_folders_are_neither_served_nor_counted_by_gc(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    outside = DataDir(tmp_path / "elsewhere")
    outside.create()
    job_id, path = outside.new_job_dir()
    write_job(path, Job(id=job_id, name="not ours", command=["true"], status="succeeded"))
    data = DataDir(tmp_path / "data")
    data.create()
    os.symlink(path, data.jobs_path / job_id)
    serving = await start_logstream(
        nursery, "serve", "--port", "0", "--data-dir", str(tmp_path / "data")
    )
    url = await serving.wait_for_serving()
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        assert (await client.get("/api/jobs")).json()["jobs"] == []
        assert (await client.get(f"/api/jobs/{job_id}")).status_code == 404
    serving.signal(signal.SIGTERM)
    await serving.wait_exit()
    gc = await run_cli("gc", "--data-dir", str(tmp_path / "data"), "--keep-jobs", "0")
    assert b"removed 0 jobs" in gc.stderr
    assert (path / "job.json").exists()


# ---- Cookie, WebSocket, headers -------------------------------------------------------------


async def test_the_cookie_sent_to_another_port_carries_no_token(settings: Settings) -> None:
    received = bytearray()
    got_request = trio.Event()

    async def other_service(stream: trio.SocketStream) -> None:
        async with stream:
            while b"\r\n\r\n" not in received:
                received.extend(await stream.receive_some(65536))
            got_request.set()
            await stream.send_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            functools.partial(trio.serve_tcp, other_service, 0, host="127.0.0.1")
        )
        other_port = listeners[0].socket.getsockname()[1]
        async with running_server(with_settings(settings, token=TOKEN)) as server:
            async with httpx.AsyncClient(timeout=30) as browser:
                answer = await browser.get(f"{server.url}/api/jobs", params={"token": TOKEN})
                assert answer.status_code == 200
                # The cookie alone logs the browser in here...
                assert (await browser.get(f"{server.url}/api/jobs")).status_code == 200
                # ...and goes along to every other port of the host, as cookies do.
                await browser.get(f"http://127.0.0.1:{other_port}/")
                await got_request.wait()
            async with running_server(with_settings(settings, token="another-token")) as other:
                # Another instance on this host has a cookie of its own name.
                head = bytes(received).decode("latin-1")
                cookie = head.lower().split("\r\ncookie: ")[1].split("\r\n")[0]
                async with httpx.AsyncClient(timeout=30) as client:
                    answer = await client.get(f"{other.url}/api/jobs", headers={"Cookie": cookie})
                    assert answer.status_code == 401
        nursery.cancel_scope.cancel()
    assert b"cookie: logstream_" in received.lower()
    assert TOKEN.encode() not in received


@pytest.mark.parametrize("token", [None, TOKEN])
async def test_websocket_upgrades_are_refused_before_routing(
    settings: Settings, token: str | None
) -> None:
    async with running_server(with_settings(settings, token=token)) as server:
        log = await server.new_job("secret-name")
        for path in [f"/api/jobs/{log.job.id}/events", "/api/jobs", "/nope"]:
            answer = await raw_request(
                server.url,
                f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n".encode(),
            )
            assert answer.startswith(b"HTTP/1.1 403"), answer[:100]
            assert b"WebSocket is not served" in answer
            assert log.job.id.encode() not in answer and b"secret-name" not in answer


async def test_error_answers_carry_the_security_headers(tmp_path: Path, settings: Settings) -> None:
    answers: dict[int, httpx.Response] = {}
    async with running_server(with_settings(settings, token=TOKEN)) as server:
        async with server.client() as client:
            answers[401] = await client.get("/api/jobs")
        auth = {"Authorization": f"Bearer {TOKEN}"}
        async with server.client(headers=auth) as client:
            log = await server.new_job()
            answers[404] = await client.get("/api/jobs/nope")
            answers[405] = await client.delete("/api/jobs")
            answers[400] = await client.get(f"/api/jobs/{log.job.id}/events", params={"tail": "x"})
            answers[200] = await client.get("/")
    async with running_server(settings) as server, server.client() as client:
        answers[403] = await client.get("/api/jobs", headers={"Host": "evil.example"})
    jobs_file = tmp_path / "jobs.toml"
    jobs_file.write_text(JOBS)
    async with (
        logstream.open_server(data_dir=tmp_path / "tasks", jobs_file=jobs_file) as srv,
        httpx.AsyncClient(timeout=30) as client,
    ):
        answers[413] = await client.post(
            f"{srv.url}/api/jobs", content=b"{" + b" " * 100_000 + b"}", headers=JSON
        )
    for status, answer in answers.items():
        assert answer.status_code == status
        assert answer.headers["x-frame-options"] == "DENY", status
        assert answer.headers["x-content-type-options"] == "nosniff", status
        assert "frame-ancestors 'none'" in answer.headers["content-security-policy"], status
        assert answer.headers["referrer-policy"] == "no-referrer", status
        assert len(answer.headers.get_list("content-security-policy")) == 1, status
