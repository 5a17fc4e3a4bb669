"""A job's problems, kept next to its log: ``<job dir>/problems``, one JSON object per line.

Theory of operation
-------------------
The process that runs a job feeds every block of lines it stores to a ``problems.Detector`` and
keeps what it finds in a ``ProblemList`` (detection order). Its log writer appends the new
records to ``problems`` *before* the log blocks of the same batch, so a reader that has a line
also finds every problem that line completed. Each record is the API's problem object plus
``found_at``: the line whose arrival completed the problem (the last line of a traceback, the
``-->`` line after a rustc error); the event stream sends a problem right after that line, so
a stream resumed after line N has had exactly the problems with ``found_at`` <= N.

Pure: the records' format and the list; ``store`` reads and writes the file. Readers of a job
another process runs read the file incrementally from where they stopped
(``store.ProblemReader``); a torn last record (a crash mid-write) is left for the next read,
which finds it whole or never. Nothing re-reads the log.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from operator import itemgetter

from logstream.problems import Problem

PROBLEMS_FILE = "problems"
_string = json.encoder.encode_basestring  # a JSON string, non-ASCII kept (C)
SHOWN_SEVERITIES = ("error", "warning")


#: A problem as the detector process sends it (``detectproc``): ``(line, severity, title, file,
#: line_in_file, found_at)``, plain values that cross a pipe at C speed.
Row = tuple[int, str, str, str | None, int | None, int]


@dataclass(frozen=True, slots=True)
class Found:
    """A problem and the line whose arrival completed it."""

    problem: Problem
    found_at: int

    def to_record(self) -> bytes:
        """The JSON object of ``json.dumps(problem.to_json() | {"found_at": ...})``, written
        out directly: the runner writes one per problem (docs/benchmarks.md)."""
        problem = self.problem
        file = "null" if problem.file is None else _string(problem.file)
        line_in_file = "null" if problem.line_in_file is None else int(problem.line_in_file)
        return (
            f'{{"line": {int(problem.line)}, "severity": {_string(problem.severity)}, '
            f'"title": {_string(problem.title)}, "file": {file}, '
            f'"line_in_file": {line_in_file}, "found_at": {int(self.found_at)}}}\n'
        ).encode()

    def to_row(self) -> Row:
        problem = self.problem
        return (
            problem.line,
            problem.severity,
            problem.title,
            problem.file,
            problem.line_in_file,
            self.found_at,
        )

    @classmethod
    def from_row(cls, row: Row) -> Found:
        line, severity, title, file, line_in_file, found_at = row
        return cls(Problem(line, severity, title, file, line_in_file, found_at), found_at)


def decode_records(data: bytes) -> tuple[list[Found], int]:
    """The whole records at the start of ``data`` and how many bytes they take."""
    end = data.rfind(b"\n") + 1
    found = []
    for raw in data[:end].splitlines():
        try:
            record = json.loads(raw)
            found.append(Found(Problem.from_json(record), int(record["found_at"])))
        except (ValueError, KeyError, TypeError):
            continue  # not ours (a newer version's record?): skip it, keep the rest
    return found, end


class ProblemList:
    """A job's problems in the order they were found, with counts per severity.

    Rows from the detector process (``add_rows``) become ``Found`` objects only when someone
    reads ``found``: the runner's path does no work per problem (docs/problems.md)."""

    def __init__(self) -> None:
        self._found: list[Found] = []
        self._rows: list[Row] = []
        self.counts: dict[str, int] = dict.fromkeys(SHOWN_SEVERITIES, 0)

    @property
    def found(self) -> list[Found]:
        if self._rows:
            rows, self._rows = self._rows, []
            self._found.extend(map(Found.from_row, rows))
        return self._found

    def add(self, found: list[Found]) -> None:
        self.found.extend(found)
        for item in found:
            severity = item.problem.severity
            self.counts[severity] = self.counts.get(severity, 0) + 1

    def add_rows(self, rows: list[Row]) -> None:
        self._rows.extend(rows)
        for severity, count in Counter(map(itemgetter(1), rows)).items():
            self.counts[severity] = self.counts.get(severity, 0) + count

    def shown_counts(self) -> dict[str, int]:
        """The counts the job JSON shows: ``{"error": n, "warning": n}``."""
        return {severity: self.counts.get(severity, 0) for severity in SHOWN_SEVERITIES}

    def in_line_order(self) -> list[dict[str, object]]:
        return [item.problem.to_json() for item in sorted(self.found, key=_by_line)]


def _by_line(item: Found) -> int:
    return item.problem.line
