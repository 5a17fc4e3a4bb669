"""A job's metadata: a frozen snapshot that every layer shares and nobody mutates."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any


def utc_now() -> str:
    """Now, as job timestamps are written: ISO 8601, milliseconds, ``Z``."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Job:
    """A job's metadata as stored and shown; a snapshot, replaced (never mutated) on change.

    ``lines`` is the line count when the snapshot was taken; the live count is the log's
    ``last`` (``JobLog.job`` always agrees with it).
    """

    id: str
    name: str
    command: Sequence[str]
    cwd: str = ""
    #: ``running``, then ``succeeded``, ``failed`` or ``cancelled``; ``interrupted`` when the
    #: runner went away without recording an end.
    status: str = "running"
    exit_code: int | None = None
    started_at: str = field(default_factory=utc_now)
    finished_at: str | None = None
    lines: int = 0
    #: The runner's process ID (on its own machine); not shown by the API.
    pid: int | None = None
    #: Free-form facts about the job (CI provider, commit, runner host...), shown as given.
    meta: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Callers may pass a list; the snapshot must not change under its readers.
        object.__setattr__(self, "command", tuple(self.command))

    @property
    def ended(self) -> bool:
        return self.status != "running"

    def with_lines(self, lines: int) -> Job:
        return self if lines == self.lines else replace(self, lines=lines)

    def ending(self, status: str, exit_code: int | None) -> Job:
        """This job as it ended now."""
        return replace(self, status=status, exit_code=exit_code, finished_at=utc_now())

    def to_json(self) -> bytes:
        stored = asdict(self)
        stored["command"] = list(self.command)
        stored["meta"] = dict(self.meta)
        return json.dumps(stored, indent=1).encode()

    @classmethod
    def from_json(cls, data: bytes | str) -> Job:
        """A job from its stored JSON; unknown fields (from a newer version) are ignored."""
        fields = json.loads(data)
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in fields.items() if k in known})
