"""The jobs file of task-runner mode (docs/task-runner.md): TOML in, frozen job definitions out.

Pure: no trio, no HTTP. Every mistake is a ``JobsFileError`` naming the file, the line when it
can be found, and the field (``jobs.build.timeout_s: ...``), so ``serve --jobs`` can refuse a
bad file at start rather than fail on the first request.

```toml
[jobs.build]                      # the job's name: [A-Za-z0-9_-]+
command = ["make", "build"]       # a list is run as is; a string is run by /bin/sh -c
cwd = "."                         # relative to the jobs file; default: its folder
env = { CI = "true" }             # added to the server's environment
timeout_s = 600                   # optional; the job is cancelled after it
max_running = 1                   # optional; more starts than this are refused (409)
```
"""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

NAME = re.compile(r"[A-Za-z0-9_-]+")
FIELDS = frozenset({"command", "cwd", "env", "timeout_s", "max_running"})
SHELL = "/bin/sh"


class JobsFileError(ValueError):
    """The jobs file cannot be read or does not define jobs correctly."""


@dataclass(frozen=True)
class JobDefinition:
    """One named job: what runs, where, with which environment and limits."""

    name: str
    #: The command as run: a string from the file becomes ``/bin/sh -c STRING``.
    command: tuple[str, ...]
    cwd: Path
    #: Added to the server's environment when the job starts.
    env: tuple[tuple[str, str], ...] = ()
    timeout_s: float | None = None
    max_running: int | None = None

    def environment(self, base: Mapping[str, str]) -> dict[str, str]:
        """``base`` (the server's environment) with this job's variables added."""
        return {**base, **dict(self.env)}


@dataclass(frozen=True)
class JobsFile:
    path: Path
    jobs: tuple[JobDefinition, ...]

    def get(self, name: str) -> JobDefinition | None:
        return next((job for job in self.jobs if job.name == name), None)

    @property
    def names(self) -> list[str]:
        return [job.name for job in self.jobs]


def load_jobs_file(path: Path) -> JobsFile:
    """Read and check a jobs file; raises ``JobsFileError``."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise JobsFileError(f"{path}: cannot read: {error}") from None
    return parse_jobs_file(text, path)


def parse_jobs_file(text: str, path: Path) -> JobsFile:
    """Check the TOML ``text`` of the jobs file at ``path`` (relative ``cwd``s start there)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise JobsFileError(f"{path}: not valid TOML: {error}") from None
    folder = path.parent
    extra = sorted(set(data) - {"jobs"})
    if extra:
        raise JobsFileError(
            f"{path}:{_line_of(text, extra[0])}: unknown top-level key {extra[0]!r}; "
            "define jobs as [jobs.NAME] tables"
        )
    tables = data.get("jobs")
    if not isinstance(tables, dict) or not tables:
        raise JobsFileError(f"{path}: defines no job; add a [jobs.NAME] table")
    jobs = [_definition(text, path, folder, name, table) for name, table in tables.items()]
    return JobsFile(path, tuple(jobs))


def _definition(text: str, path: Path, folder: Path, name: str, table: object) -> JobDefinition:
    def fail(key: str | None, message: str) -> JobsFileError:
        # A missing field: the line of the job's table.
        line = _line_of(text, key, name) or _line_of(text, None, name)
        where = f"{path}:{line}" if line else str(path)
        field = f"jobs.{name}.{key}" if key else f"jobs.{name}"
        return JobsFileError(f"{where}: {field}: {message}")

    if not NAME.fullmatch(name):
        raise fail(None, "a job name may only hold letters, digits, '_' and '-'")
    if not isinstance(table, dict):
        raise fail(None, "must be a table ([jobs.NAME] with a command)")
    unknown = sorted(set(table) - FIELDS)
    if unknown:
        raise fail(unknown[0], f"unknown field; known fields: {', '.join(sorted(FIELDS))}")

    command = table.get("command")
    argv: tuple[str, ...]
    if isinstance(command, str) and command.strip():
        argv = (SHELL, "-c", command)
    elif (
        isinstance(command, list)
        and command
        and all(isinstance(arg, str) for arg in command)
        and command[0]
    ):
        argv = tuple(command)
    else:
        raise fail("command", "required: a non-empty list of strings, or a shell command string")

    cwd_value = table.get("cwd", ".")
    if not isinstance(cwd_value, str) or not cwd_value:
        raise fail("cwd", "must be a folder (a string; relative to the jobs file)")
    cwd = (folder / cwd_value).resolve()
    if not cwd.is_dir():
        raise fail("cwd", f"{cwd} is not a folder")

    env_value = table.get("env", {})
    if not isinstance(env_value, dict):
        raise fail("env", 'must be a table of strings, e.g. env = { CI = "true" }')
    for key, value in env_value.items():
        if not isinstance(value, str):
            raise fail("env", f'{key}: values must be strings (quote them: {key} = "{value}")')
    env = tuple(sorted(env_value.items()))

    timeout = table.get("timeout_s")
    if timeout is not None and (
        isinstance(timeout, bool)
        or not isinstance(timeout, int | float)
        or not math.isfinite(timeout)
        or timeout <= 0
    ):
        raise fail("timeout_s", "must be a positive number of seconds")

    max_running = table.get("max_running")
    if max_running is not None and (
        isinstance(max_running, bool) or not isinstance(max_running, int) or max_running < 1
    ):
        raise fail("max_running", "must be a whole number, at least 1")

    return JobDefinition(
        name=name,
        command=argv,
        cwd=cwd,
        env=env,
        timeout_s=float(timeout) if timeout is not None else None,
        max_running=max_running,
    )


def _line_of(text: str, key: str | None, job: str | None = None) -> int | None:
    """The line (from 1) where ``key`` is set, in the ``[jobs.<job>]`` table when given.

    Best effort for the usual layout; None when the file is written another way.
    """
    lines = text.splitlines()
    start = 0
    if job is not None:
        header = re.compile(rf"\s*\[\s*jobs\s*\.\s*(?:{re.escape(job)}|\"{re.escape(job)}\")\s*\]")
        found = next((i for i, line in enumerate(lines) if header.match(line)), None)
        if found is None:
            return None
        if key is None:
            return found + 1
        start = found + 1
    if key is None:
        return None
    setting = re.compile(rf"\s*\"?{re.escape(key)}\"?\s*[=.]")
    for number in range(start, len(lines)):
        if job is not None and lines[number].lstrip().startswith("["):
            return None
        if setting.match(lines[number]):
            return number + 1
    return None
