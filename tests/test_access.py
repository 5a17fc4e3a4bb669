"""Access control, CORS, TLS and secret masking (docs/security.md)."""

from __future__ import annotations

import shutil
import signal
import ssl
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import trio

from logstream import sse
from logstream.config import Settings
from logstream.sse import SSEParser

from .conftest import running_server, with_settings
from .processes import start_logstream

PY = sys.executable
TOKEN = "s3cret-token-value"


async def test_public_bind_without_token_is_refused_for_serve_too(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    serving = await start_logstream(
        nursery, "serve", "--host", "0.0.0.0", "--port", "0", "--data-dir", str(tmp_path)
    )
    assert await serving.wait_exit() == 2
    assert serving.stderr.startswith(b"logstream: refusing to listen on 0.0.0.0 without a token")
    assert not (tmp_path / "jobs").exists()


async def test_token_by_bearer_query_or_cookie_and_401_reveals_nothing(settings: Settings) -> None:
    async with running_server(with_settings(settings, token=TOKEN)) as server:
        log = await server.new_job("secret-job-name")
        log.append(["secret line"])
        job = log.job.id
        async with server.client() as client:
            assert (await client.get("/healthz")).status_code == 200
            for path in [f"/api/jobs/{job}", f"/api/jobs/{job}/log", "/api/jobs", "/nope"]:
                for headers in [{}, {"Authorization": "Bearer wrong"}]:
                    denied = await client.get(path, headers=headers)
                    assert denied.status_code == 401
                    assert denied.json() == {"error": "authentication required"}
                    assert job not in denied.text and "secret" not in denied.text
            bearer = await client.get(
                f"/api/jobs/{job}/log", headers={"Authorization": f"Bearer {TOKEN}"}
            )
            assert bearer.text == "secret line\n"
            assert "set-cookie" not in bearer.headers
            by_query = await client.get(f"/api/jobs/{job}", params={"token": TOKEN})
            assert by_query.status_code == 200
            cookie = by_query.headers["set-cookie"]
            assert cookie == f"logstream_token={TOKEN}; HttpOnly; SameSite=Strict; Path=/"
        # A browser sends the cookie from then on, also with EventSource (no headers there).
        async with (
            server.client(cookies={"logstream_token": TOKEN}) as browser,
            browser.stream("GET", f"/api/jobs/{job}/events") as response,
        ):
            assert response.status_code == 200
            parser = SSEParser()
            async for data in response.aiter_raw():
                if any(e.id == "1" for e in parser.feed(data)):
                    break


async def test_tokens_never_appear_in_logstreams_output(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    running = await start_logstream(
        nursery,
        "run",
        "--port",
        "0",
        "--token",
        TOKEN,
        "--data-dir",
        str(tmp_path),
        "--linger",
        "60",
        "--",
        "echo",
        "hi",
    )
    job_id, url = await running.wait_for_url()
    assert TOKEN not in url
    base = url.split("/jobs/")[0]
    async with httpx.AsyncClient(timeout=30) as client:
        for token in [TOKEN, "wrong-token-guess"]:
            await client.get(f"{base}/api/jobs/{job_id}/log", params={"token": token})
            await client.get(
                f"{base}/api/jobs/{job_id}", headers={"Authorization": f"Bearer {token}"}
            )
            await client.get(f"{base}/api/jobs/nope/events", params={"token": token, "tail": "x"})
    running.signal(signal.SIGTERM)
    await running.wait_exit()
    output = bytes(running.stderr + running.stdout)
    assert TOKEN.encode() not in output and b"wrong-token-guess" not in output
    stored = b"".join(p.read_bytes() for p in tmp_path.rglob("*") if p.is_file())  # noqa: ASYNC240
    assert TOKEN.encode() not in stored


async def test_cors_is_off_by_default(settings: Settings) -> None:
    async with running_server(settings) as server, server.client() as client:
        response = await client.get("/api/jobs", headers={"Origin": "https://evil.example"})
        preflight = await client.options(
            "/api/jobs",
            headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"},
        )
    for answer in (response, preflight):
        assert not any(name.startswith("access-control-") for name in answer.headers)


async def test_cors_origin_allows_exactly_one_origin_with_preflight_before_the_token(
    settings: Settings,
) -> None:
    allowed = "https://ci.example"
    async with (
        running_server(with_settings(settings, cors_origin=allowed, token=TOKEN)) as server,
        server.client() as client,
    ):
        preflight = await client.options(
            "/api/jobs",
            headers={
                "Origin": allowed,
                "Access-Control-Request-Method": "GET",
                "Access-Control-Request-Headers": "authorization, last-event-id",
            },
        )
        assert preflight.status_code == 204
        assert preflight.headers["access-control-allow-origin"] == allowed
        assert "Authorization" in preflight.headers["access-control-allow-headers"]
        assert "Last-Event-ID" in preflight.headers["access-control-allow-headers"]
        ok = await client.get(
            "/api/jobs", headers={"Origin": allowed, "Authorization": f"Bearer {TOKEN}"}
        )
        assert ok.headers["access-control-allow-origin"] == allowed
        assert ok.headers.get_list("access-control-allow-origin") == [allowed]
        denied = await client.get("/api/jobs", headers={"Origin": allowed})
        assert denied.status_code == 401
        assert denied.headers["access-control-allow-origin"] == allowed
        for other in ["https://evil.example", "https://ci.example.evil", "null"]:
            answer = await client.get(
                "/api/jobs", headers={"Origin": other, "Authorization": f"Bearer {TOKEN}"}
            )
            assert "access-control-allow-origin" not in answer.headers
            other_preflight = await client.options(
                "/api/jobs", headers={"Origin": other, "Access-Control-Request-Method": "GET"}
            )
            assert "access-control-allow-origin" not in other_preflight.headers


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make a certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


@pytest.mark.parametrize("http2", [False, True])
async def test_tls_streams_over_https_and_http2_multiplexes_many_streams(
    settings: Settings, certificate: tuple[Path, Path], http2: bool
) -> None:
    cert, key = certificate
    tls = with_settings(settings, certfile=cert, keyfile=key, token=TOKEN)
    async with running_server(tls) as server:
        url = server.url.replace("http://", "https://")
        log = await server.new_job()
        log.append([f"l{i}" for i in range(1, 101)])
        log.finish("succeeded", 0)
        context = ssl.create_default_context(cafile=str(cert))
        async with httpx.AsyncClient(base_url=url, verify=context, http2=http2) as client:
            first = await client.get(f"/api/jobs/{log.job.id}", params={"token": TOKEN})
            assert first.http_version == ("HTTP/2" if http2 else "HTTP/1.1")
            assert first.headers["set-cookie"].endswith("; Secure")
            counts: list[int] = []

            async def follow() -> None:
                response = await client.get(f"/api/jobs/{log.job.id}/events")
                events = SSEParser().feed(response.content)
                counts.append(len([e for e in events if e.id and e.event != "end"]))

            # More streams than a browser opens per host over HTTP/1.1 (6).
            async with trio.open_nursery() as nursery:
                for _ in range(10 if http2 else 2):
                    nursery.start_soon(follow)
        assert set(counts) == {100}


async def test_masked_values_never_reach_disk_or_clients_even_split_across_reads(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    secret, other = "hunter2-the-password", "tok-987654321"
    script = (
        "import os, sys, time\n"
        "s = os.environ['API_SECRET']\n"
        "sys.stdout.write('before ' + s[:7]); sys.stdout.flush()\n"
        "time.sleep(0.3)\n"  # the command's own pace: the two halves arrive in two reads
        "sys.stdout.write(s[7:] + ' after\\n'); sys.stdout.flush()\n"
        "print('other', os.environ['OTHER_TOKEN'], file=sys.stderr, flush=True)\n"
    )
    data_dir = tmp_path / "data"
    running = await start_logstream(
        nursery,
        "run",
        "--quiet",
        "--port",
        "0",
        "--data-dir",
        str(data_dir),
        "--mask",
        "API_SECRET",
        "--name",
        f"deploy with {secret}",
        "--",
        PY,
        "-c",
        script,
        secret,
        env={"API_SECRET": secret, "OTHER_TOKEN": other, "LOGSTREAM_MASK": "OTHER_TOKEN"},
    )
    job_id, _ = await running.wait_for_url()
    assert await running.wait_exit() == 0
    stored = b"".join(p.read_bytes() for p in data_dir.rglob("*") if p.is_file())
    assert secret.encode() not in stored and other.encode() not in stored
    async with (
        running_server(Settings(data_dir=data_dir, port=0)) as server,
        server.client() as client,
    ):
        events = SSEParser().feed((await client.get(f"/api/jobs/{job_id}/events")).content)
        job = (await client.get(f"/api/jobs/{job_id}")).text
    lines = [sse.line_text(e.data) for e in events if e.id and e.event != "end"]
    assert sorted(lines) == ["before *** after", "other ***"]
    assert secret not in job and "***" in job
