"""What a runner may upload: the records check, cutting repeats, bodies, job specs, CI meta."""

from __future__ import annotations

import gzip

import pytest
from hypothesis import given
from hypothesis import strategies as st

from logstream import ingest, sse
from logstream.cimeta import ci_meta
from logstream.ingest import BodyTooLarge, IngestError, UnsupportedEncoding


def records(first: int, lines: list[str], *, stderr: bool = False) -> bytes:
    return sse.encode_lines(first, lines, stderr=stderr)


def test_records_of_both_streams_with_time_marks_and_carriage_returns_are_accepted() -> None:
    body = (
        sse.encode_time(1_700_000_000_123)
        + records(5, ["one", "two\rthree", ""])
        + records(8, ["oops"], stderr=True)
        + sse.encode_time(1_700_000_001_000)
        + records(9, ["é ✓ \x1b[31mred\x1b[0m"])
    )
    parsed = ingest.parse_records(body)
    assert (parsed.first, parsed.last, parsed.time_ms) == (5, 9, 1_700_000_000_123)
    assert parsed.payload == body


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"retry: 1\n\n" + records(1, ["a"]),
        records(1, ["a"]) + sse.encode_end("succeeded", 0),
        records(1, ["a"])[:-1],  # torn: no blank line
        b"id: 1\ndata: a\rb\n\n",  # a raw carriage return would split the line for viewers
        b"id: 1\nevent: message\ndata: a\n\n",
        b"id: 1\n\n",  # no data
        b"id: 1\ndata: a\nid: 2\n\n",
        b": comment\n\n" + records(1, ["a"]),
        b"id: 1\ndata: \xff\n\n",  # not UTF-8
        sse.encode_time(5),  # no line at all
        records(0, ["a"]),
        records(1, ["a"]) + records(3, ["c"]),
        records(2, ["b"]) + records(1, ["a"]),
        records(1, ["a"]) + records(1, ["a"]),
        b"id: -1\ndata: a\n\n",
        b"id: 1\r\ndata: a\r\n\r\n",
    ],
)
def test_anything_but_whole_consecutive_line_records_is_refused(body: bytes) -> None:
    with pytest.raises(IngestError):
        ingest.parse_records(body)


def test_text_that_looks_like_a_field_stays_text() -> None:
    # A line whose text is "event: time" must not be mistaken for a time mark.
    body = records(1, ["event: time", "data: 5", "id: 99"])
    parsed = ingest.parse_records(body)
    assert (parsed.first, parsed.last, parsed.time_ms) == (1, 3, 0)


def test_after_cuts_the_lines_the_server_has() -> None:
    body = records(1, ["a", "b"]) + sse.encode_time(42) + records(3, ["c", "d"])
    parsed = ingest.parse_records(body)
    assert parsed.after(0) is parsed
    assert parsed.after(4) is None
    assert parsed.after(9) is None
    rest = parsed.after(2)
    assert rest is not None
    assert (rest.first, rest.last) == (3, 4)
    assert rest.payload == records(3, ["c", "d"])
    rest = parsed.after(1)
    assert rest is not None and rest.time_ms == 42
    assert ingest.parse_records(rest.payload) == rest


@given(st.lists(st.text(alphabet=st.characters(blacklist_categories=["Cs"])), min_size=1))
def test_every_encoded_block_is_accepted_and_cut_anywhere(lines: list[str]) -> None:
    lines = [line.replace("\n", "") for line in lines]
    body = records(1, lines)
    parsed = ingest.parse_records(body)
    assert (parsed.first, parsed.last) == (1, len(lines))
    for have in range(len(lines)):
        rest = parsed.after(have)
        assert rest is not None
        assert rest.payload == records(have + 1, lines[have:])


def test_gzip_bodies_are_inflated_and_bombs_refused_early() -> None:
    payload = records(1, ["x" * 100] * 100)
    assert ingest.decompress(gzip.compress(payload), "gzip") == payload
    assert ingest.decompress(payload, None) == payload
    bomb = ingest.compress(b"\0" * (ingest.MAX_BODY_BYTES + 1))
    assert len(bomb) < 100_000
    with pytest.raises(BodyTooLarge):
        ingest.decompress(bomb, "gzip")
    with pytest.raises(BodyTooLarge):
        ingest.decompress(b"x" * 11, "identity", max_bytes=10)
    with pytest.raises(IngestError, match="truncated"):
        ingest.decompress(gzip.compress(payload)[:-10], "gzip")
    with pytest.raises(IngestError, match="corrupt"):
        ingest.decompress(b"not gzip at all", "gzip")
    with pytest.raises(UnsupportedEncoding):
        ingest.decompress(payload, "br")


def test_job_specs_are_checked() -> None:
    spec = ingest.parse_job_spec(
        {
            "name": "make test",
            "command": ["make", "test"],
            "started_at": "2026-12-04T18:25:00.000Z",
            "meta": {"host": "ci-7", "run_url": "https://ci.example/run/1"},
        }
    )
    assert spec.meta == {"host": "ci-7", "run_url": "https://ci.example/run/1"}
    assert ingest.parse_job_spec({"name": "x"}).command == []
    bad: list[object] = [
        [],
        {"name": ""},
        {"name": "x", "command": "make"},
        {"name": "x", "command": [1]},
        {"name": "x", "started_at": "yesterday"},
        {"name": "x", "meta": {"Host": "a"}},
        {"name": "x", "meta": {"host": 1}},
        {"name": "x", "meta": {"run_url": "javascript:alert(1)"}},
        {"name": "x", "meta": {f"k{n}": "v" for n in range(33)}},
    ]
    for body in bad:
        with pytest.raises(IngestError):
            ingest.parse_job_spec(body)


def test_ends_are_checked() -> None:
    end = ingest.parse_end({"status": "failed", "exit_code": 3, "lines": 10})
    assert (end.status, end.exit_code, end.lines) == ("failed", 3, 10)
    assert (
        ingest.parse_end({"status": "cancelled", "exit_code": None, "lines": 0}).exit_code is None
    )
    for body in (
        {"status": "running", "exit_code": 0, "lines": 1},
        {"status": "interrupted", "exit_code": None, "lines": 1},
        {"status": "failed", "exit_code": "1", "lines": 1},
        {"status": "failed", "exit_code": 1, "lines": -1},
        {"status": "failed", "exit_code": 1, "lines": True},
    ):
        with pytest.raises(IngestError):
            ingest.parse_end(body)


def test_github_actions_meta_links_back_to_the_run() -> None:
    env = {
        "GITHUB_ACTIONS": "true",
        "GITHUB_SERVER_URL": "https://github.com",
        "GITHUB_REPOSITORY": "acme/rocket",
        "GITHUB_RUN_ID": "123",
        "GITHUB_RUN_ATTEMPT": "2",
        "GITHUB_SHA": "abc123",
        "GITHUB_REF_NAME": "main",
        "GITHUB_WORKFLOW": "CI",
        "GITHUB_JOB": "test",
    }
    assert ci_meta(env, "runner-1") == {
        "host": "runner-1",
        "ci": "github",
        "repository": "acme/rocket",
        "branch": "main",
        "commit": "abc123",
        "ci_job": "CI / test",
        "repository_url": "https://github.com/acme/rocket",
        "run_url": "https://github.com/acme/rocket/actions/runs/123/attempts/2",
        "commit_url": "https://github.com/acme/rocket/commit/abc123",
    }


def test_gitlab_buildkite_and_jenkins_meta() -> None:
    gitlab = ci_meta(
        {
            "GITLAB_CI": "true",
            "CI_JOB_URL": "https://gitlab.example/acme/rocket/-/jobs/9",
            "CI_PROJECT_PATH": "acme/rocket",
            "CI_PROJECT_URL": "https://gitlab.example/acme/rocket",
            "CI_COMMIT_SHA": "def",
            "CI_COMMIT_REF_NAME": "feature",
            "CI_JOB_NAME": "unit",
        },
        "h",
    )
    assert gitlab["run_url"] == "https://gitlab.example/acme/rocket/-/jobs/9"
    assert gitlab["commit_url"] == "https://gitlab.example/acme/rocket/-/commit/def"
    assert (gitlab["ci"], gitlab["repository"], gitlab["branch"]) == (
        "gitlab",
        "acme/rocket",
        "feature",
    )
    buildkite = ci_meta(
        {
            "BUILDKITE": "true",
            "BUILDKITE_BUILD_URL": "https://buildkite.com/acme/rocket/builds/7",
            "BUILDKITE_JOB_ID": "j-1",
            "BUILDKITE_REPO": "git@github.com:acme/rocket.git",
            "BUILDKITE_COMMIT": "0f0",
            "BUILDKITE_BRANCH": "main",
        },
        "h",
    )
    assert buildkite["run_url"] == "https://buildkite.com/acme/rocket/builds/7#j-1"
    assert buildkite["commit"] == "0f0"
    jenkins = ci_meta(
        {
            "JENKINS_URL": "https://jenkins.example/",
            "BUILD_URL": "https://jenkins.example/job/rocket/5/",
            "GIT_COMMIT": "aaa",
            "GIT_BRANCH": "origin/main",
            "JOB_NAME": "rocket",
        },
        "h",
    )
    assert (jenkins["run_url"], jenkins["branch"]) == (
        "https://jenkins.example/job/rocket/5/",
        "main",
    )
    assert ci_meta({}, "laptop") == {"host": "laptop"}
    # A link that is not http(s) is dropped, never sent for a viewer to click.
    assert "run_url" not in ci_meta({"JENKINS_URL": "x", "BUILD_URL": "javascript:x"}, "h")
    for meta in (gitlab, buildkite, jenkins):
        assert ingest.parse_meta(meta) == meta
