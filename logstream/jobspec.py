"""What one job run is: a frozen ``JobSpec``, resolved from the settings in one place.

Pure: no trio, no I/O beyond reading the environment for masked values. ``run``, ``serve``'s
jobs file, the Python API and the launcher all describe a job with this one object, so an
option is spelled once and its default (the name, the masks, the ring size) is decided here.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from logstream.config import Settings
from logstream.mask import Masker
from logstream.matchers import Matcher
from logstream.ring import DEFAULT_RING_LINES

#: Between the stop signal and SIGKILL.
GRACE_S = 10.0
#: Columns and rows of the pseudo-terminals when there is no terminal of ours to follow: what
#: a terminal emulator opens with, and what CI agents that use a pty (Jenkins, Buildkite) give.
DEFAULT_PTY_SIZE = (80, 24)
NAME_MAX_CHARS = 200


def default_job_name(command: Sequence[str]) -> str:
    """The command as a shell would read it back (``shlex.join``), at most 200 characters."""
    return shlex.join(command)[:NAME_MAX_CHARS]


@dataclass(frozen=True)
class JobSpec:
    """One job to run: the command and everything about how it runs and is kept."""

    command: tuple[str, ...]
    name: str
    cwd: Path | None = None
    #: The command's whole environment (``None``: this process's).
    env: Mapping[str, str] | None = None
    #: A pseudo-terminal for stdout and another for stderr (line-buffered, colours kept).
    pty: bool = False
    #: Columns and rows of the pseudo-terminals.
    pty_size: tuple[int, int] = DEFAULT_PTY_SIZE
    #: Our own terminal: the pseudo-terminals take its size and follow its resizes.
    terminal_fd: int | None = None
    #: Copy the output to this process's stdout and stderr.
    tee: bool = False
    masker: Masker = field(default_factory=lambda: Masker(()), compare=False)
    ring_lines: int = DEFAULT_RING_LINES
    #: Cancel the job after this long; its log then ends with a ``timed out`` stderr line.
    timeout_s: float | None = None
    grace_s: float = GRACE_S
    #: Free-form facts stored with the job (CI provider, commit, ...).
    meta: Mapping[str, Any] = field(default_factory=dict)
    #: The job's ID when the caller chose it (a remote runner); else the backend makes one.
    job_id: str | None = None
    #: Problem matchers the job starts with, before the built-in rules (docs/problems.md).
    matchers: tuple[Matcher, ...] = ()
    #: Find problems on this process's event loop, not in the shared detector process
    #: (``detectproc``): for an embedding that must not start a child process.
    detect_in_process: bool = False

    def __post_init__(self) -> None:
        if not self.command:
            raise ValueError("empty command")
        object.__setattr__(self, "command", tuple(self.command))

    @classmethod
    def resolve(
        cls,
        settings: Settings,
        command: Sequence[str],
        *,
        name: str | None = None,
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
        environ: Mapping[str, str] = os.environ,
        **options: Any,
    ) -> JobSpec:
        """A spec with the server's defaults: masks and ring size from ``settings``, the
        name from the command. ``env`` replaces ``environ`` for the command; masked values
        are looked up in ``environ``. ``options``: the other fields."""
        return cls(
            command=tuple(command),
            name=name or default_job_name(command),
            cwd=cwd,
            env=env,
            masker=settings.job_masker(environ),
            ring_lines=settings.ring_lines,
            **{"matchers": settings.matchers, **options},
        )
