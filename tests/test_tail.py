"""``logstream tail`` (docs/tail.md): the real CLI in a subprocess against real servers."""

from __future__ import annotations

import fcntl
import functools
import io
import os
import signal
import subprocess
import sys
import termios
from pathlib import Path

import pytest
import trio

import logstream
from logstream.sse import SSEParser
from logstream.tail import (
    EXIT_CANCELLED,
    EXIT_INTERRUPTED,
    EXIT_NO_SUCH_JOB,
    EXIT_UNAUTHORIZED,
    EXIT_USAGE,
    Output,
    Tail,
    TailError,
    exit_status,
    parse_target,
)

from .livejobs import DEADLINE_S, cli, cli_env, has_lines, read_events, run_cli

# Every kind of line: UTF-8, ANSI colours, a tab, a lone \r, an empty line, stderr lines, and a
# last line without its newline.
EXACT_SCRIPT = r"""
import sys
out, err = sys.stdout.buffer, sys.stderr.buffer
out.write(b"plain\n"); out.flush()
err.write(b"warn: \xc3\xa9t\xc3\xa9 \xe2\x9c\x93\n"); err.flush()
out.write(b"\x1b[32mgreen\x1b[0m\ttab\nprogress 10%\rprogress 100%\n\n"); out.flush()
err.write(b"last error line\n"); err.flush()
out.write(b"no newline at the end"); out.flush()
sys.exit(int(sys.argv[1]))
"""
EXACT_STDOUT = (
    b"plain\n\x1b[32mgreen\x1b[0m\ttab\nprogress 10%\rprogress 100%\n\nno newline at the end\n"
)
EXACT_STDERR = "warn: été ✓\nlast error line\n".encode()

# Lines 1..N/2, then it waits until the test writes to the FIFO, then the rest; every 7th
# line goes to stderr.
WAITING_SCRIPT = r"""
import sys
total = int(sys.argv[2])
def say(n):
    stream = sys.stderr if n % 7 == 0 else sys.stdout
    print(f"line {n}", file=stream, flush=True)
for n in range(1, total // 2 + 1):
    say(n)
with open(sys.argv[1]) as fifo:
    fifo.read()
for n in range(total // 2 + 1, total + 1):
    say(n)
"""


def expected_lines(numbers: range) -> tuple[bytes, bytes]:
    out = b"".join(b"line %d\n" % n for n in numbers if n % 7)
    err = b"".join(b"line %d\n" % n for n in numbers if n % 7 == 0)
    return out, err


def without_notices(stderr: bytes) -> bytes:
    return b"".join(
        line for line in stderr.splitlines(keepends=True) if not line.startswith(b"logstream: ")
    )


async def release(fifo: Path) -> None:
    await trio.to_thread.run_sync(fifo.write_text, "go")


@pytest.mark.parametrize("code", [0, 1, 3])
async def test_tail_prints_lines_byte_exact_and_exits_with_the_jobs_status(
    tmp_path: Path, code: int
) -> None:
    async with logstream.open_server(data_dir=tmp_path / "data") as server:
        job = await server.start([sys.executable, "-c", EXACT_SCRIPT, str(code)], name="exact")
        done = await run_cli("tail", job.url)
        result = await job.wait()
    assert result.exit_code == code
    assert done.stdout == EXACT_STDOUT
    assert done.stderr == EXACT_STDERR
    assert done.returncode == code


async def test_tail_follows_a_running_job_and_accepts_the_api_url(tmp_path: Path) -> None:
    fifo = tmp_path / "go"
    os.mkfifo(fifo)
    async with logstream.open_server(data_dir=tmp_path / "data") as server:
        job = await server.start([sys.executable, "-c", WAITING_SCRIPT, str(fifo), "40"])
        with trio.fail_after(DEADLINE_S):
            await read_events(server.url, job.id, until=has_lines(20))
            async with trio.open_nursery() as nursery:
                nursery.start_soon(release, fifo)
                done = await run_cli("tail", job.events_url)
    out, err = expected_lines(range(1, 41))
    assert (done.stdout, done.stderr, done.returncode) == (out, err, 0)


class Proxy:
    """A loopback TCP proxy whose connections the test can cut, or hold before they reach the
    server; it keeps everything the server sent to clients."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.connections: set[trio.CancelScope] = set()
        self.accepted = 0
        self.admitting = trio.Event()
        self.admitting.set()
        self.received = bytearray()
        self._changed = trio.Event()

    async def handle(self, client: trio.SocketStream) -> None:
        self.accepted += 1
        async with client:
            with trio.CancelScope() as scope:
                self.connections.add(scope)
                try:
                    await self.admitting.wait()
                    upstream = await trio.open_tcp_stream("127.0.0.1", self.upstream_port)
                    async with upstream, trio.open_nursery() as nursery:
                        nursery.start_soon(self._pump, client, upstream, nursery, False)
                        nursery.start_soon(self._pump, upstream, client, nursery, True)
                finally:
                    self.connections.discard(scope)

    async def _pump(
        self,
        source: trio.SocketStream,
        sink: trio.SocketStream,
        nursery: trio.Nursery,
        from_server: bool,
    ) -> None:
        try:
            while data := await source.receive_some(65536):
                if from_server:
                    self.received += data
                    self._changed.set()
                    self._changed = trio.Event()
                await sink.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        nursery.cancel_scope.cancel()

    async def wait_received(self, wanted: bytes) -> None:
        """Until the server has sent ``wanted`` to a client (through the proxy)."""
        while wanted not in self.received:
            await self._changed.wait()

    def cut(self) -> None:
        for scope in list(self.connections):
            scope.cancel()

    def hold(self) -> None:
        """Cut every connection; new ones wait, unanswered, until ``admit()``."""
        self.admitting = trio.Event()
        self.cut()

    def admit(self) -> None:
        self.admitting.set()


async def read_until(stream: trio.abc.ReceiveStream, buffer: bytearray, wanted: bytes) -> None:
    while wanted not in buffer:
        data = await stream.receive_some(65536)
        assert data, f"stream ended before {wanted!r}"
        buffer += data


async def read_all(stream: trio.abc.ReceiveStream, buffer: bytearray) -> None:
    while data := await stream.receive_some(65536):
        buffer += data


async def test_tail_resumes_exactly_after_the_connection_drops(tmp_path: Path) -> None:
    fifo = tmp_path / "go"
    os.mkfifo(fifo)
    async with (
        logstream.open_server(data_dir=tmp_path / "data") as server,
        trio.open_nursery() as nursery,
    ):
        job = await server.start([sys.executable, "-c", WAITING_SCRIPT, str(fifo), "400"])
        proxy = Proxy(int(server.url.rsplit(":", 1)[1]))
        listeners = await nursery.start(
            functools.partial(trio.serve_tcp, proxy.handle, 0, host="127.0.0.1")
        )
        proxy_port = listeners[0].socket.getsockname()[1]
        stdout, stderr = bytearray(), bytearray()
        with trio.fail_after(DEADLINE_S):
            process = await trio.lowlevel.open_process(
                cli("tail", f"http://127.0.0.1:{proxy_port}/jobs/{job.id}"),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=cli_env(),
            )
            assert process.stdout is not None and process.stderr is not None
            nursery.start_soon(read_all, process.stderr, stderr)
            await read_until(process.stdout, stdout, b"line 200\n")
            proxy.cut()  # mid-job, while tail waits for line 201
            nursery.start_soon(release, fifo)
            await read_all(process.stdout, stdout)
            returncode = await process.wait()
        nursery.cancel_scope.cancel()
    out, err = expected_lines(range(1, 401))
    assert bytes(stdout) == out
    assert without_notices(bytes(stderr)) == err
    assert b"logstream: connection lost" in stderr
    assert proxy.accepted >= 2
    assert returncode == 0


async def test_tail_n_cut_before_the_first_line_resumes_where_it_started(
    tmp_path: Path,
) -> None:
    # `--tail 0` on a job that is quiet after line 10: the connection is cut before any line
    # arrives, lines 11..20 are written while tail cannot reach the server, then it can again.
    # tail started after line 10, so it prints 11..20, each once (the server computing the
    # tail again from the job's new end would skip them).
    fifo = tmp_path / "go"
    os.mkfifo(fifo)
    async with (
        logstream.open_server(data_dir=tmp_path / "data") as server,
        trio.open_nursery() as nursery,
    ):
        job = await server.start([sys.executable, "-c", WAITING_SCRIPT, str(fifo), "20"])
        proxy = Proxy(int(server.url.rsplit(":", 1)[1]))
        listeners = await nursery.start(
            functools.partial(trio.serve_tcp, proxy.handle, 0, host="127.0.0.1")
        )
        proxy_port = listeners[0].socket.getsockname()[1]
        stdout, stderr = bytearray(), bytearray()
        with trio.fail_after(DEADLINE_S):
            await read_events(server.url, job.id, until=has_lines(10))
            process = await trio.lowlevel.open_process(
                cli("tail", "--tail", "0", f"http://127.0.0.1:{proxy_port}/jobs/{job.id}"),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=cli_env(),
            )
            assert process.stdout is not None and process.stderr is not None
            nursery.start_soon(read_all, process.stderr, stderr)
            nursery.start_soon(read_all, process.stdout, stdout)
            await proxy.wait_received(b"retry: ")  # the stream is open; no line can come yet
            proxy.hold()
            await release(fifo)
            assert (await read_events(server.url, job.id)).end is not None  # all 20 written
            proxy.admit()
            returncode = await process.wait()
        nursery.cancel_scope.cancel()
    out, err = expected_lines(range(11, 21))
    assert bytes(stdout) == out
    assert without_notices(bytes(stderr)) == err
    assert b"logstream: connection lost" in stderr
    assert proxy.accepted >= 2
    assert returncode == 0


async def test_from_tail_and_no_follow_on_a_finished_job(tmp_path: Path) -> None:
    script = "import sys\nfor n in range(1, 6): print(f'l{n}')\nsys.exit(3)"
    async with logstream.open_server(data_dir=tmp_path / "data") as server:
        result = await server.run([sys.executable, "-c", script])
        from_two = await run_cli("tail", "--from", "2", result.url)
        last_two = await run_cli("tail", "--tail", "2", result.url)
        more_than_all = await run_cli("tail", "--tail", "9", result.url)
        tail_none = await run_cli("tail", "--tail", "0", result.url)  # 204: nothing left
        at_end = await run_cli("tail", "--from", "5", result.url)  # 204: nothing left
        beyond = await run_cli("tail", "--from", "99", result.url)
        snapshot = await run_cli("tail", "--no-follow", result.url)
    assert (from_two.stdout, from_two.returncode) == (b"l3\nl4\nl5\n", 3)
    assert (last_two.stdout, last_two.returncode) == (b"l4\nl5\n", 3)
    assert (more_than_all.stdout, more_than_all.returncode) == (b"l1\nl2\nl3\nl4\nl5\n", 3)
    assert (tail_none.stdout, tail_none.stderr, tail_none.returncode) == (b"", b"", 3)
    assert (at_end.stdout, at_end.stderr, at_end.returncode) == (b"", b"", 3)
    assert (beyond.stdout, beyond.returncode) == (b"", 3)
    assert (snapshot.stdout, snapshot.returncode) == (b"l1\nl2\nl3\nl4\nl5\n", 3)


async def test_no_follow_on_a_running_job_prints_what_exists_and_exits_0(tmp_path: Path) -> None:
    fifo = tmp_path / "go"
    os.mkfifo(fifo)
    async with logstream.open_server(data_dir=tmp_path / "data") as server:
        job = await server.start([sys.executable, "-c", WAITING_SCRIPT, str(fifo), "20"])
        with trio.fail_after(DEADLINE_S):
            lines = (await read_events(server.url, job.id, until=has_lines(10))).lines
        everything = await run_cli("tail", "--no-follow", job.url)
        last_three = await run_cli("tail", "--no-follow", "--tail", "3", job.url)
        nothing_new = await run_cli("tail", "--no-follow", "--from", "10", job.url)
        assert job.status == "running"
        await release(fifo)
        assert (await job.wait()).ok
    out, err = expected_lines(range(1, 11))
    assert (everything.stdout, everything.stderr, everything.returncode) == (out, err, 0)
    # Lines are numbered in the order they were read: stderr's line 7 may come after line 10.
    last_out = "".join(f"{text}\n" for event, text in lines[-3:] if event == "message").encode()
    last_err = "".join(f"{text}\n" for event, text in lines[-3:] if event == "stderr").encode()
    assert (last_three.stdout, last_three.stderr) == (last_out, last_err)
    assert last_three.returncode == 0
    assert (nothing_new.stdout, nothing_new.returncode) == (b"", 0)


def cli_with_ctrl_c(*args: str) -> list[str]:
    """``cli(ARGS)`` with SIGINT as a terminal gives it, even if the tests run with it ignored."""
    reset = (
        "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
        "os.execv(sys.argv[1], sys.argv[1:])"
    )
    return [sys.executable, "-c", reset, *cli(*args)]


async def test_ctrl_c_stops_tail_with_130_and_no_traceback(tmp_path: Path) -> None:
    fifo = tmp_path / "go"
    os.mkfifo(fifo)
    async with (
        logstream.open_server(data_dir=tmp_path / "data") as server,
        trio.open_nursery() as nursery,
    ):
        job = await server.start([sys.executable, "-c", WAITING_SCRIPT, str(fifo), "20"])
        stdout, stderr = bytearray(), bytearray()
        with trio.fail_after(DEADLINE_S):
            process = await trio.lowlevel.open_process(
                cli_with_ctrl_c("tail", job.url),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=cli_env(),
            )
            assert process.stdout is not None and process.stderr is not None
            # Lines 1-10 are all shown: between stdout and stderr the job's order is the order
            # logstream read its pipes in, so the stderr line 7 may come after line 10.
            await read_until(process.stdout, stdout, b"line 10\n")
            await read_until(process.stderr, stderr, b"line 7\n")
            nursery.start_soon(read_all, process.stderr, stderr)
            process.send_signal(signal.SIGINT)
            returncode = await process.wait()
            await release(fifo)
    assert returncode == 130
    assert bytes(stderr) == b"line 7\n"


async def test_ctrl_c_again_stops_tail_when_its_output_is_stuck(tmp_path: Path) -> None:
    # Nobody reads tail's stdout (a paused pager): it blocks writing. The first Ctrl-C may
    # block again flushing what it has; the next one must end it at once.
    script = "import time\nfor n in range(200_000): print(n)\ntime.sleep(3600)"
    read_end, write_end = os.pipe()
    try:
        async with logstream.open_server(data_dir=tmp_path / "data") as server:
            job = await server.start([sys.executable, "-c", script])
            with trio.fail_after(DEADLINE_S):
                process = await trio.lowlevel.open_process(
                    cli_with_ctrl_c("tail", job.url),
                    stdout=write_end,
                    stderr=subprocess.PIPE,
                    env=cli_env(),
                )
                os.close(write_end)
                write_end = -1
                assert process.stderr is not None
                stderr = bytearray()
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(read_all, process.stderr, stderr)
                    # Nothing wakes a task as a pipe fills: poll it (under the deadline). Half
                    # full is enough: more than a megabyte follows and a pipe can block its
                    # writer before it holds its nominal size (a partly filled last page).
                    half = fcntl.fcntl(read_end, fcntl.F_GETPIPE_SZ) // 2
                    while pipe_holds(read_end) < half:  # noqa: ASYNC110
                        await trio.sleep(0.01)
                    while process.returncode is None:
                        process.send_signal(signal.SIGINT)
                        with trio.move_on_after(1):
                            await process.wait()
            job.cancel()
            await job.wait()
    finally:
        os.close(read_end)
        if write_end >= 0:
            os.close(write_end)
    assert process.returncode == 130
    assert bytes(stderr) == b""


def pipe_holds(fd: int) -> int:
    count = bytearray(4)
    fcntl.ioctl(fd, termios.FIONREAD, count)
    return int.from_bytes(count, sys.byteorder)


async def test_unknown_job_and_missing_token_have_clear_messages_and_statuses(
    tmp_path: Path,
) -> None:
    async with logstream.open_server(data_dir=tmp_path / "data", token="s3cret") as server:
        result = await server.run(["true"])
        unknown = await run_cli("tail", "--token", "s3cret", f"{server.url}/jobs/nope")
        no_token = await run_cli("tail", result.url)
        wrong = await run_cli("tail", "--token", "wrong", result.url)
        from_env = await run_cli("tail", result.url, env=cli_env(LOGSTREAM_TOKEN="s3cret"))
        from_url = await run_cli("tail", f"{result.url}?token=s3cret")
        # --tail asks GET /api/jobs/<ID> for its start: with the token too.
        tail_token = await run_cli("tail", "--tail", "1", "--token", "s3cret", result.url)
        tail_no_token = await run_cli("tail", "--tail", "1", result.url)
    assert unknown.returncode == EXIT_NO_SUCH_JOB
    assert unknown.stderr == f"logstream: no job nope at {server.url}\n".encode()
    assert no_token.returncode == EXIT_UNAUTHORIZED
    assert b"logstream: " in no_token.stderr and b"token is required" in no_token.stderr
    assert wrong.returncode == EXIT_UNAUTHORIZED
    assert b"token was refused" in wrong.stderr
    assert (from_env.returncode, from_url.returncode) == (0, 0)
    assert (tail_token.returncode, tail_token.stderr) == (0, b"")
    assert tail_no_token.returncode == EXIT_UNAUTHORIZED
    assert b"token is required" in tail_no_token.stderr


async def test_a_url_that_names_no_job_is_a_usage_error() -> None:
    done = await run_cli("tail", "http://127.0.0.1:1/somewhere")
    assert done.returncode == EXIT_USAGE
    assert done.stderr.startswith(b"logstream: not a job URL")


def test_parse_target_takes_page_and_api_urls() -> None:
    page = parse_target("http://h:8765/jobs/ab-1")
    assert (page.base, page.job_id, page.token) == ("http://h:8765", "ab-1", None)
    api = parse_target("https://h/logs/api/jobs/ab_2/events?token=t")
    assert (api.base, api.job_id, api.token) == ("https://h/logs", "ab_2", "t")
    assert parse_target("http://h:1/api/jobs/x").events_url == "http://h:1/api/jobs/x/events"
    for bad in ("ftp://h/jobs/x", "http://h/jobs/", "http://h/jobs/a/b", "jobs/x"):
        with pytest.raises(TailError):
            parse_target(bad)


def test_exit_status_follows_the_jobs_end() -> None:
    assert exit_status("succeeded", 0) == 0
    assert exit_status("failed", 3) == 3
    assert exit_status("failed", None) == 1
    assert exit_status("cancelled", 143) == 143
    assert exit_status("cancelled", 0) == EXIT_CANCELLED
    assert exit_status("interrupted", None) == EXIT_INTERRUPTED


def test_a_gap_is_reported_and_no_line_is_printed_twice() -> None:
    out, err = io.BytesIO(), io.BytesIO()
    tail = Tail(parse_target("http://h/jobs/x"), Output(out, err))
    stream = (
        b"retry: 1000\n\n"
        b"id: 1\ndata: one\n\n"
        b'event: gap\ndata: {"first": 5}\n\n'
        b"id: 5\ndata: five\n\n"
        b"id: 5\ndata: five again\n\n"  # a repeat is never printed
        b"id: 6\nevent: stderr\ndata: six\ndata: with a carriage return\n\n"
    )
    parser = SSEParser()
    # One byte at a time: events split anywhere are handled the same.
    events = [
        event
        for byte in range(len(stream))
        for event in tail._feed(parser, stream[byte : byte + 1])
    ]
    assert tail.retry_ms == 1000
    for event in events:
        assert tail._handle(event) is None
    tail.output.flush()
    assert out.getvalue() == b"one\nfive\n"
    assert err.getvalue() == (
        b"logstream: lines 2 to 4 are lost (the server no longer has them)\n"
        b"six\rwith a carriage return\n"
    )
    assert tail.last == 6
