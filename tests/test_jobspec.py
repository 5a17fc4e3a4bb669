"""One JobSpec, its defaults decided in one place."""

from __future__ import annotations

from pathlib import Path

import pytest

from logstream.config import Settings
from logstream.jobspec import GRACE_S, JobSpec, default_job_name


def test_the_default_name_is_the_command_as_a_shell_reads_it_back() -> None:
    assert default_job_name(["echo", "a b", "c"]) == "echo 'a b' c"
    assert len(default_job_name(["x" * 500])) == 200


def test_resolve_takes_masks_and_ring_size_from_the_settings() -> None:
    settings = Settings(data_dir=Path("/tmp"), masks=("TOKEN",), ring_lines=123)
    spec = JobSpec.resolve(settings, ["make", "test"], environ={"TOKEN": "s3cret"}, pty=True)
    assert (spec.name, spec.ring_lines, spec.pty, spec.grace_s) == ("make test", 123, True, GRACE_S)
    assert spec.masker.mask("s3cret") == "***"
    assert spec.command == ("make", "test")


def test_an_empty_command_is_refused() -> None:
    with pytest.raises(ValueError):
        JobSpec((), "empty")
