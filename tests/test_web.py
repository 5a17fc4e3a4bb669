"""The HTTP API and the event stream (docs/protocol.md), over real sockets to a real hypercorn."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path

import httpx_sse
import pytest
import trio
import trio.lowlevel

from logstream import joblog, sse
from logstream.config import Settings
from logstream.job import Job
from logstream.joblog import Cursor, Read
from logstream.ring import Block
from logstream.sse import Event, SSEParser
from logstream.store import LogWriter, write_job

from .conftest import Server, running_server, with_settings

DEADLINE_S = 20


async def collect(
    server: Server,
    job_id: str,
    *,
    params: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
    until: Callable[[list[Event]], bool] | None = None,
    no_content_ok: bool = False,
) -> list[Event]:
    """Events of one connection, until the server closes it or ``until`` holds.

    With ``no_content_ok`` a 204 (nothing left: resumed at the end of a finished job) gives [].
    """
    events: list[Event] = []
    parser = SSEParser()
    with trio.fail_after(DEADLINE_S):
        async with (
            server.client() as client,
            client.stream(
                "GET", f"/api/jobs/{job_id}/events", params=params, headers=headers
            ) as response,
        ):
            if no_content_ok and response.status_code == 204:
                return []
            assert response.status_code == 200
            async for data in response.aiter_raw():
                events += parser.feed(data)
                if until is not None and until(events):
                    return events
    return events + parser.flush()


def line_ids(events: list[Event]) -> list[int]:
    return [int(e.id) for e in events if e.id is not None]


def texts(events: list[Event]) -> list[str]:
    return [sse.line_text(e.data) for e in events if e.event in ("message", "stderr")]


async def test_stream_headers_and_retry_come_first(server: Server) -> None:
    log = await server.new_job()
    log.append(["hello"])
    async with (
        server.client() as client,
        client.stream("GET", f"/api/jobs/{log.job.id}/events") as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
        assert response.headers["cache-control"] == "no-cache"
        assert response.headers["x-accel-buffering"] == "no"
        first = await response.aiter_raw().__anext__()
        assert first.startswith(b"retry: 1000\n\n")


async def test_lines_then_end_event_then_close(server: Server) -> None:
    log = await server.new_job()
    log.append(["out 1", "out 2"])
    log.append(["err 3"], stderr=True)
    log.append(["progress 10%\rprogress 100%", "<script>alert(1)</script>"])
    log.finish("failed", 3)
    events = await collect(server, log.job.id)
    lines = [e for e in events if e.event != "time"]
    assert [(e.id, e.event) for e in lines] == [
        ("1", "message"),
        ("2", "message"),
        ("3", "stderr"),
        ("4", "message"),
        ("5", "message"),
        (None, "end"),
    ]
    assert texts(events) == [
        "out 1",
        "out 2",
        "err 3",
        "progress 10%\rprogress 100%",
        "<script>alert(1)</script>",
    ]
    assert json.loads(lines[-1].data) == {"status": "failed", "exit_code": 3}


async def test_httpx_sse_client_sees_the_same_lines(server: Server) -> None:
    log = await server.new_job()
    log.append(["a", "b\rc"])
    log.finish("succeeded", 0)
    async with (
        server.client() as client,
        httpx_sse.aconnect_sse(client, "GET", f"/api/jobs/{log.job.id}/events") as source,
    ):
        events = [
            (e.event, e.id, e.data)
            async for e in source.aiter_sse()
            if e.event != "time" and e.retry is None
        ]
    # httpx-sse reports the last event ID seen with every event, as EventSource keeps it.
    assert events == [
        ("message", "1", "a"),
        ("message", "2", "b\nc"),
        ("end", "2", '{"status": "succeeded", "exit_code": 0}'),
    ]


async def test_live_lines_arrive_while_the_job_runs(server: Server) -> None:
    log = await server.new_job()
    async with trio.open_nursery() as nursery:

        async def produce() -> None:
            for i in range(1, 6):
                await trio.testing.wait_all_tasks_blocked()
                log.append([f"line {i}"])
            log.finish("succeeded", 0)

        nursery.start_soon(produce)
        events = await collect(server, log.job.id)
    assert texts(events) == [f"line {i}" for i in range(1, 6)]
    assert events[-1].event == "end"


async def test_resume_with_last_event_id_header_continues_at_the_next_line(server: Server) -> None:
    log = await server.new_job()
    log.append([f"l{i}" for i in range(1, 11)])
    log.finish("succeeded", 0)
    events = await collect(server, log.job.id, headers={"Last-Event-ID": "7"})
    assert line_ids(events) == [8, 9, 10]


async def test_resume_with_query_parameter(server: Server) -> None:
    log = await server.new_job()
    log.append([f"l{i}" for i in range(1, 11)])
    log.finish("succeeded", 0)
    events = await collect(server, log.job.id, params={"last_event_id": "4"})
    assert line_ids(events) == [5, 6, 7, 8, 9, 10]


async def test_header_wins_over_query_parameter(server: Server) -> None:
    log = await server.new_job()
    log.append([f"l{i}" for i in range(1, 11)])
    log.finish("succeeded", 0)
    events = await collect(
        server, log.job.id, params={"last_event_id": "2"}, headers={"Last-Event-ID": "8"}
    )
    assert line_ids(events) == [9, 10]


async def test_empty_resume_id_counts_as_absent(server: Server) -> None:
    log = await server.new_job()
    log.append(["a", "b", "c"])
    log.finish("succeeded", 0)
    events = await collect(
        server, log.job.id, headers={"Last-Event-ID": ""}, params={"last_event_id": "", "tail": "2"}
    )
    assert line_ids(events) == [2, 3]


async def test_tail_starts_with_the_last_n_lines(server: Server) -> None:
    log = await server.new_job()
    log.append([f"l{i}" for i in range(1, 101)])
    log.finish("succeeded", 0)
    assert line_ids(await collect(server, log.job.id, params={"tail": "3"})) == [98, 99, 100]
    assert len(line_ids(await collect(server, log.job.id, params={"tail": "1000"}))) == 100


@pytest.mark.parametrize("bad", ["+5", "1e3", "-1", "١٢", "abc", "5 ", "0x10", "1e309"])
async def test_resume_id_that_is_not_ascii_digits_is_400(server: Server, bad: str) -> None:
    log = await server.new_job()
    log.append(["a"])
    async with server.client() as client:
        by_param = await client.get(f"/api/jobs/{log.job.id}/events", params={"last_event_id": bad})
        by_tail = await client.get(f"/api/jobs/{log.job.id}/events", params={"tail": bad})
    for response in (by_param, by_tail):
        assert response.status_code == 400
        assert "error" in response.json()


async def test_resuming_a_finished_job_at_its_end_is_204(server: Server) -> None:
    log = await server.new_job()
    log.append(["a", "b"])
    log.finish("succeeded", 0)
    async with server.client() as client:
        for resume in ["2", "3", "99999999999999999999999999"]:
            response = await client.get(
                f"/api/jobs/{log.job.id}/events", headers={"Last-Event-ID": resume}
            )
            assert response.status_code == 204


async def test_resume_beyond_the_last_line_of_a_running_job_waits_for_it(server: Server) -> None:
    log = await server.new_job()
    log.append(["1", "2"])
    async with trio.open_nursery() as nursery:

        async def produce() -> None:
            await trio.testing.wait_all_tasks_blocked()
            for i in range(3, 8):
                log.append([str(i)])
            log.finish("succeeded", 0)

        nursery.start_soon(produce)
        events = await collect(server, log.job.id, headers={"Last-Event-ID": "5"})
    assert line_ids(events) == [6, 7]


async def test_keepalive_comment_while_nothing_happens(settings: Settings) -> None:
    async with running_server(with_settings(settings, keepalive_s=0.05)) as server:
        log = await server.new_job()
        log.append(["only line"])
        with trio.fail_after(DEADLINE_S):
            async with (
                server.client() as client,
                client.stream("GET", f"/api/jobs/{log.job.id}/events") as response,
            ):
                received = b""
                async for data in response.aiter_raw():
                    received += data
                    if received.count(b":\n\n") >= 2:
                        break
        assert b"data: only line" in received


async def test_stream_outlives_quarts_response_timeout(settings: Settings) -> None:
    """Quart cuts responses after RESPONSE_TIMEOUT (60 s) unless the stream opts out."""
    async with running_server(with_settings(settings, keepalive_s=0.05)) as server:
        server.app.config["RESPONSE_TIMEOUT"] = 0.1
        log = await server.new_job()

        chunks_seen = 0

        def late_line_after_keepalives(events: list[Event]) -> bool:
            # Each chunk is a keep-alive 0.05 s after the last: six take well over the 0.1 s
            # timeout. Then the job goes on, and the stream must still be there to carry it.
            nonlocal chunks_seen
            chunks_seen += 1
            if chunks_seen == 6:
                log.append(["late"])
                log.finish("succeeded", 0)
            return False

        events = await collect(server, log.job.id, until=late_line_after_keepalives)
    assert texts(events) == ["late"]


async def test_unknown_or_malformed_job_is_404_json(server: Server) -> None:
    async with server.client() as client:
        for path in [
            "/api/jobs/nope",
            "/api/jobs/nope/events",
            "/api/jobs/nope/log",
            "/api/jobs/..%2F..%2Fetc/events",
            "/api/jobs/" + "a" * 65,
            "/api/jobs/%C3%A9t%C3%A9",
            "/jobs/nope",
            "/no/such/route",
        ]:
            response = await client.get(path)
            assert response.status_code == 404, path
            assert response.headers["content-type"] == "application/json"
            assert "error" in response.json()


async def test_a_browser_gets_a_page_with_a_way_back_for_a_wrong_job(server: Server) -> None:
    browser = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}
    async with server.client(headers=browser) as client:
        for path in ["/jobs/nope", "/jobs/" + "a" * 65, "/no/such/page"]:
            response = await client.get(path)
            assert response.status_code == 404, path
            assert response.headers["content-type"] == "text/html; charset=utf-8"
            assert '<a id="back" href="/">' in response.text
        # The API answers JSON whatever the Accept header says.
        api = await client.get("/api/jobs/nope")
        assert (api.status_code, api.json()) == (404, {"error": "no such job"})


async def test_a_job_page_with_a_trailing_slash_redirects_to_the_page(server: Server) -> None:
    log = await server.new_job("make")
    async with server.client() as client:
        response = await client.get(f"/jobs/{log.job.id}/")
        assert response.status_code == 308
        assert response.headers["location"] == f"../{log.job.id}"
        followed = await client.get(f"/jobs/{log.job.id}/", follow_redirects=True)
        assert followed.status_code == 200 and followed.url.path == f"/jobs/{log.job.id}"
        assert (await client.get("/jobs/nope/")).status_code == 404


async def test_job_json_and_list(server: Server) -> None:
    log = await server.new_job("make")
    log.append(["a", "b"])
    async with server.client() as client:
        job = (await client.get(f"/api/jobs/{log.job.id}")).json()
        listed = (await client.get("/api/jobs")).json()["jobs"]
    assert job["id"] == log.job.id and job["name"] == "make" and job["command"] == ["make"]
    assert job["status"] == "running" and job["exit_code"] is None and job["lines"] == 2
    assert job["started_at"].endswith("Z") and job["finished_at"] is None
    assert [j["id"] for j in listed] == [log.job.id]


async def test_plain_log_is_the_text_one_line_per_line(server: Server) -> None:
    log = await server.new_job()
    log.append(["first", "a\rb"])
    log.append(["err"], stderr=True)
    async with server.client() as client:
        response = await client.get(f"/api/jobs/{log.job.id}/log")
    assert response.headers["content-type"] == "text/plain; charset=utf-8"
    assert response.content == b"first\na\rb\nerr\n"


async def test_healthz_and_metrics(server: Server) -> None:
    async with server.client() as client:
        assert (await client.get("/healthz")).status_code == 200
        metrics = await client.get("/metrics")
    assert "logstream_streams_open" in metrics.text


async def test_client_dropping_at_random_points_gets_every_line_once(server: Server) -> None:
    total = 100_000
    log = await server.new_job(ring_lines=5_000)
    received: list[int] = []
    rng = random.Random(1234)
    async with trio.open_nursery() as nursery:

        async def produce() -> None:
            seq = 1
            while seq <= total:
                count = min(rng.randint(1, 2000), total - seq + 1)
                log.append([f"line {n}" for n in range(seq, seq + count)])
                seq += count
                await trio.lowlevel.checkpoint()
            log.finish("succeeded", 0)

        nursery.start_soon(produce)
        drops = sorted(rng.sample(range(1, total), 50))
        last = ""
        while True:
            # Drop the connection once the client holds this many lines in total.
            drop_after = drops.pop(0) - len(received) if drops else None

            def reached_drop_point(events: list[Event], n: int | None = drop_after) -> bool:
                new = len(line_ids(events))
                return n is not None and new >= max(n, 1)

            headers = {"Last-Event-ID": last} if last else {}
            events = await collect(
                server, log.job.id, headers=headers, until=reached_drop_point, no_content_ok=True
            )
            ids = line_ids(events)
            received += ids
            if ids:
                last = str(ids[-1])
            if not events or events[-1].event == "end":
                break  # ended, or resumed after the last line of the finished job (204)
    assert received == list(range(1, total + 1))


async def test_catch_up_from_disk_then_live_without_gap_or_repeat(server: Server) -> None:
    log = await server.new_job(ring_lines=100)
    for first in range(1, 20_001, 500):
        log.append([f"l{seq}" for seq in range(first, first + 500)])
    # Once the writer has put everything on disk, the ring keeps only the newest lines.
    with trio.fail_after(DEADLINE_S):
        await log.wait_persisted(20_000)
    log.append(["evicts"])  # eviction happens as lines arrive
    assert log.ring.first > 10_000
    async with trio.open_nursery() as nursery:

        async def more() -> None:
            await trio.testing.wait_all_tasks_blocked()
            log.append(["live 2"])
            log.finish("succeeded", 0)

        nursery.start_soon(more)
        events = await collect(server, log.job.id, headers={"Last-Event-ID": "3"})
    assert line_ids(events) == list(range(4, 20_003))


async def test_gap_event_when_lines_are_truly_lost(server: Server) -> None:
    job_id, path = server.data_dir.new_job_dir()
    write_job(
        path, Job(id=job_id, name="x", command=["x"], status="succeeded", exit_code=0, lines=60)
    )
    writer = LogWriter(path)
    # Lines 1..49 were lost (e.g. the file was truncated by hand): only 50..60 remain.
    writer.write([Block(50, 60, sse.encode_lines(50, [str(i) for i in range(50, 61)]), 0)])
    writer.close(sse.encode_end("succeeded", 0))
    events = await collect(server, job_id, headers={"Last-Event-ID": "10"})
    gap = [e for e in events if e.event == "gap"]
    assert [json.loads(e.data) for e in gap] == [{"first": 50}]
    assert line_ids(events) == list(range(50, 61))


async def test_finished_job_on_disk_is_served_complete(server: Server, tmp_path: Path) -> None:
    log = await server.new_job()
    log.append([f"l{i}" for i in range(1, 1001)])
    log.finish("failed", 2)
    await log.wait_closed()
    # A fresh server on the same data dir knows the job only from disk.
    async with running_server(Settings(data_dir=server.data_dir.path, port=0)) as fresh:
        events = await collect(fresh, log.job.id)
        async with fresh.client() as client:
            job = (await client.get(f"/api/jobs/{log.job.id}")).json()
    assert line_ids(events) == list(range(1, 1001))
    assert json.loads(events[-1].data) == {"status": "failed", "exit_code": 2}
    assert job["status"] == "failed" and job["lines"] == 1000


async def test_idle_keepalive_connection_is_closed_after_the_timeout(settings: Settings) -> None:
    async with running_server(with_settings(settings, keep_alive_timeout_s=0.3)) as server:
        host, port = server.url.removeprefix("http://").split(":")
        stream = await trio.open_tcp_stream(host, int(port))
        await stream.send_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        received = b""
        with trio.fail_after(DEADLINE_S):
            while True:
                data = await stream.receive_some()
                if not data:
                    break  # the server closed the idle connection
                received += data
        assert received.startswith(b"HTTP/1.1 200")


async def test_lines_endpoint_pages_through_history(server: Server) -> None:
    log = await server.new_job()
    log.append(["a", "b\rc"])
    log.append(["e"], stderr=True)
    async with server.client() as client:
        page = (
            await client.get(f"/api/jobs/{log.job.id}/lines", params={"after": "1", "limit": "5"})
        ).json()
    assert page["lines"] == [[2, "o", "b\rc"], [3, "e", "e"]]
    assert page["last"] == 3 and page["ended"] is False
    assert page["times"] and page["times"][0][0] <= 2


async def test_search_finds_lines_ignoring_case_and_colours(server: Server) -> None:
    log = await server.new_job()
    log.append(["hello", "\x1b[31mERR\x1b[0mOR here", "nothing", "error again"])
    async with server.client() as client:
        found = (await client.get(f"/api/jobs/{log.job.id}/search", params={"q": "error"})).json()
    assert found == {"matches": [2, 4], "truncated": False}


async def test_shutdown_ends_a_waiting_stream_without_an_end_event(settings: Settings) -> None:
    async with running_server(settings) as server:
        log = await server.new_job()
        log.append(["one"])
        got: list[Event] = []

        async def follow() -> None:
            got.extend(await collect(server, log.job.id))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(follow)
            with trio.fail_after(DEADLINE_S):
                # Nothing signals "a stream is waiting": poll until it sent "one" and waits.
                while not server.state.waiting_streams:  # noqa: ASYNC110
                    await trio.sleep(0.01)
            server.state.shut_down()
        assert [e.data for e in got if e.id] == ["one"]
        assert not [e for e in got if e.event == "end"]


async def test_shutdown_during_a_read_still_ends_the_stream(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A long keep-alive: without the fix the stream would wait for it, past the deadline.
    async with running_server(with_settings(settings, keepalive_s=3600)) as server:
        log = await server.new_job()
        log.append(["one"])
        real_read_after = log.read_after
        reads = 0

        async def read_then_shut_down(cursor: Cursor, max_bytes: int = 1 << 20) -> Read:
            nonlocal reads
            reads += 1
            read = await real_read_after(cursor, max_bytes)
            if reads == 2:  # "one" is sent; this read finds nothing and the stream will wait
                server.state.shut_down()
            return read

        monkeypatch.setattr(log, "read_after", read_then_shut_down)
        events = await collect(server, log.job.id)
        assert [e.data for e in events if e.id] == ["one"]
        assert not [e for e in events if e.event == "end"]


async def test_lines_page_gives_each_time_mark_once(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(joblog, "TIME_MARK_EVERY_MS", 0)  # a mark before every block
    log = await server.new_job()
    log.append(["a", "b"])
    log.append(["c", "d"])
    async with server.client() as client:
        url = f"/api/jobs/{log.job.id}/lines"
        from_start = (await client.get(url)).json()
        from_third = (await client.get(url, params={"after": "2"})).json()
    assert [seq for seq, _ms in from_start["times"]] == [1, 3]
    assert from_third["times"] == from_start["times"][1:]
    assert [seq for seq, _stream, _text in from_third["lines"]] == [3, 4]


async def test_lines_page_of_limit_0_has_no_lines(server: Server) -> None:
    log = await server.new_job()
    log.append(["a", "b"])
    async with server.client() as client:
        page = (
            await client.get(f"/api/jobs/{log.job.id}/lines", params={"after": "0", "limit": "0"})
        ).json()
    assert page["lines"] == [] and page["times"] == []
    assert page["last"] == 2


async def test_tail_0_of_a_finished_job_is_a_stream_of_just_the_end(server: Server) -> None:
    log = await server.new_job()
    log.append(["a", "b"])
    log.finish("failed", 7)
    events = await collect(server, log.job.id, params={"tail": "0"})
    assert [e.event for e in events] == ["end"]
    assert json.loads(events[0].data) == {"status": "failed", "exit_code": 7}


async def test_search_matches_line_text_not_the_event_framing(server: Server) -> None:
    log = await server.new_job()
    log.append(["hello", "id: 2 is here", "Data: yes"])
    log.append(["warning"], stderr=True)
    async with server.client() as client:
        url = f"/api/jobs/{log.job.id}/search"
        found = {q: (await client.get(url, params={"q": q})).json() for q in ["data:", "id:", "4"]}
        limited = (await client.get(url, params={"q": "e", "limit": "2"})).json()
    assert found["data:"] == {"matches": [3], "truncated": False}
    assert found["id:"] == {"matches": [2], "truncated": False}
    assert found["4"] == {"matches": [], "truncated": False}
    assert limited == {"matches": [1, 2], "truncated": True}
