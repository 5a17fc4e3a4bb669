"""The jobs file (docs/task-runner.md): parsing, and clear errors naming the line and the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from logstream.jobsfile import JobsFileError, load_jobs_file, parse_jobs_file

from .livejobs import ROOT, run_cli


def test_the_sample_jobs_file_defines_every_sample_job() -> None:
    jobs = load_jobs_file(ROOT / "sample_jobs" / "jobs.toml")
    assert jobs.names == ["build", "tests", "firehose", "drip", "nasty", "make-test"]
    build = jobs.get("build")
    assert build is not None
    assert build.command == ("python3", "build.py")
    assert build.cwd == (ROOT / "sample_jobs").resolve()
    assert jobs.get("firehose").max_running == 2  # type: ignore[union-attr]
    assert jobs.get("drip").timeout_s == 60.0  # type: ignore[union-attr]
    make = jobs.get("make-test")
    assert make is not None
    assert make.command == ("/bin/sh", "-c", "make test")
    assert make.environment({"PATH": "/bin"}) == {"PATH": "/bin", "SAMPLE_FAST": "1"}
    assert jobs.get("nope") is None


def test_cwd_is_relative_to_the_jobs_file(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    text = '[jobs.a]\ncommand = ["ls"]\ncwd = "sub"\n\n[jobs.b]\ncommand = ["ls"]\n'
    jobs = parse_jobs_file(text, tmp_path / "jobs.toml")
    assert jobs.get("a").cwd == (tmp_path / "sub").resolve()  # type: ignore[union-attr]
    assert jobs.get("b").cwd == tmp_path.resolve()  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[jobs.a]\ncommand = ["ls"\n', "jobs.toml: not valid TOML"),
        ("[jobs.a]\ncwd = '.'\n", "jobs.toml:1: jobs.a.command: required"),
        ("[jobs.a]\ncommand = []\n", "jobs.toml:2: jobs.a.command: required"),
        ('[jobs.a]\ncommand = ["ls", 1]\n', "jobs.toml:2: jobs.a.command: required"),
        ('[jobs.a]\ncommand = ["ls"]\nargs = ["-l"]\n', "jobs.toml:3: jobs.a.args: unknown field"),
        ('[jobs.a]\ncommand = ["ls"]\ntimeout_s = 0\n', "jobs.toml:3: jobs.a.timeout_s: must be"),
        ('[jobs.a]\ncommand = ["ls"]\ntimeout_s = "1"\n', "jobs.a.timeout_s: must be"),
        ('[jobs.a]\ncommand = ["ls"]\nmax_running = 0\n', "jobs.toml:3: jobs.a.max_running"),
        ('[jobs.a]\ncommand = ["ls"]\nmax_running = 1.5\n', "jobs.a.max_running"),
        ('[jobs.a]\ncommand = ["ls"]\nenv = { CI = true }\n', "jobs.toml:3: jobs.a.env: CI:"),
        ('[jobs.a]\ncommand = ["ls"]\nenv = "CI=1"\n', "jobs.a.env: must be a table"),
        ('[jobs.a]\ncommand = ["ls"]\ncwd = "missing"\n', "jobs.toml:3: jobs.a.cwd:"),
        ('[jobs."a b"]\ncommand = ["ls"]\n', "jobs.toml:1: jobs.a b: a job name may only"),
        ('[job.a]\ncommand = ["ls"]\n', "unknown top-level key 'job'"),
        ("# nothing\n", "defines no job"),
        ("jobs = 1\n", "defines no job"),
    ],
)
def test_a_bad_jobs_file_names_the_line_and_field(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(JobsFileError) as raised:
        parse_jobs_file(text, tmp_path / "jobs.toml")
    assert message in str(raised.value)


def test_an_unreadable_jobs_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(JobsFileError, match="cannot read"):
        load_jobs_file(tmp_path / "missing.toml")


async def test_serve_refuses_a_bad_jobs_file_with_status_2(tmp_path: Path) -> None:
    bad = tmp_path / "jobs.toml"
    bad.write_text('[jobs.a]\ncommand = ["ls"]\ntimeout_s = -1\n')
    done = await run_cli("serve", "--port", "0", "--jobs", str(bad))
    assert done.returncode == 2
    assert done.stderr == (
        f"logstream: {bad}:3: jobs.a.timeout_s: must be a positive number of seconds\n".encode()
    )
