"""GitHub problem matchers: the JSON format, its line-by-line state machine, our built-in rules.

Pure: no I/O, no async. The format is GitHub Actions' own (docs/problems.md), so matcher files
that projects keep for GitHub Actions work unchanged::

    {"problemMatcher": [{"owner": "NAME", "severity": "error"?, "pattern": [
        {"regexp": "...", "file": 1, "line": 2, "column": 3, "severity": 4, "message": 5,
         "code": 6, "loop": false}, ...]}]}

Theory of operation, as GitHub runs a matcher: a one-pattern matcher reports every line its
regexp matches. A matcher of N patterns reports when N consecutive lines match the patterns in
order, with the groups of all of them; ``loop`` on the last pattern reports each further line
that matches it, keeping the earlier lines' groups. Each pattern is tried, last first, against
the state the previous line left, so a line may end one attempt and begin the next. Severity
comes from the ``severity`` group, else the matcher's ``severity``, else ``error``. .NET named
groups ``(?<name>...)`` are accepted and read as Python's ``(?P<name>...)``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

SEVERITIES = ("error", "warning", "notice")
_GROUP_FIELDS = ("file", "line", "column", "severity", "message", "code")
_DOTNET_NAMED_GROUP = re.compile(r"\(\?<(?![=!])")


class MatcherError(ValueError):
    """A problem-matcher file that is not valid JSON or not in GitHub's matcher format."""


@dataclass(frozen=True, slots=True)
class Pattern:
    regex: re.Pattern[str]
    groups: tuple[tuple[str, int], ...]  # (field, group number) for the fields this pattern sets
    loop: bool = False


@dataclass(frozen=True, slots=True)
class Matcher:
    owner: str
    patterns: tuple[Pattern, ...]
    severity: str = "error"


@dataclass(frozen=True, slots=True)
class Match:
    """What a matcher found: the fields of its patterns' groups, and the line to report it at.

    That line is the first of a multi-line match (where the block begins), or, for each line a
    ``loop`` pattern adds, that line.
    """

    fields: dict[str, str]
    line: int


def parse_matchers(text: str) -> list[Matcher]:
    """The matchers of a GitHub problem-matcher JSON document; raises ``MatcherError``."""
    try:
        document = json.loads(text)
    except ValueError as error:
        raise MatcherError(f"not JSON: {error}") from None
    return matchers_from_json(document)


def matchers_from_json(document: Any) -> list[Matcher]:
    if not isinstance(document, dict) or not isinstance(document.get("problemMatcher"), list):
        raise MatcherError('expected an object with a "problemMatcher" list')
    return [_matcher(item) for item in document["problemMatcher"]]


def _matcher(item: Any) -> Matcher:
    if not isinstance(item, dict):
        raise MatcherError("each problem matcher must be an object")
    owner = item.get("owner")
    if not isinstance(owner, str) or not owner:
        raise MatcherError('each problem matcher needs an "owner" string')
    severity = item.get("severity", "error")
    if severity not in SEVERITIES:
        raise MatcherError(f"matcher {owner}: severity must be one of {', '.join(SEVERITIES)}")
    raw_patterns = item.get("pattern")
    if isinstance(raw_patterns, dict):
        raw_patterns = [raw_patterns]
    if not isinstance(raw_patterns, list) or not raw_patterns:
        raise MatcherError(f'matcher {owner}: "pattern" must be a non-empty list')
    patterns = tuple(_pattern(owner, raw) for raw in raw_patterns)
    if any(p.loop for p in patterns[:-1]):
        raise MatcherError(f"matcher {owner}: only the last pattern may loop")
    if patterns[-1].loop and len(patterns) == 1:
        raise MatcherError(f"matcher {owner}: a loop needs at least two patterns")
    if not any(name == "message" for p in patterns for name, _ in p.groups):
        raise MatcherError(f'matcher {owner}: some pattern must set "message"')
    return Matcher(owner, patterns, severity)


def _pattern(owner: str, raw: Any) -> Pattern:
    if not isinstance(raw, dict) or not isinstance(raw.get("regexp"), str):
        raise MatcherError(f'matcher {owner}: each pattern needs a "regexp" string')
    try:
        regex = re.compile(_DOTNET_NAMED_GROUP.sub("(?P<", raw["regexp"]))
    except re.error as error:
        raise MatcherError(f"matcher {owner}: bad regexp {raw['regexp']!r}: {error}") from None
    groups = []
    for name in _GROUP_FIELDS:
        number = raw.get(name)
        if number is None:
            continue
        if not isinstance(number, int) or isinstance(number, bool) or number < 0:
            raise MatcherError(f"matcher {owner}: {name} must be a group number")
        if number > regex.groups:
            raise MatcherError(f"matcher {owner}: {name} names group {number}, which is missing")
        groups.append((name, number))
    return Pattern(regex, tuple(groups), bool(raw.get("loop", False)))


def _fields(pattern: Pattern, match: re.Match[str], into: dict[str, str]) -> dict[str, str]:
    found = dict(into)
    for name, number in pattern.groups:
        value = match.group(number)
        if value:
            found[name] = value
    return found


class MatcherRun:
    """One matcher's state on one stream of lines."""

    __slots__ = ("_state", "matcher")

    def __init__(self, matcher: Matcher) -> None:
        self.matcher = matcher
        # After each pattern but the last: (first line, fields so far) of a match under way.
        self._state: list[tuple[int, dict[str, str]] | None] = [None] * (len(matcher.patterns) - 1)

    @property
    def busy(self) -> bool:
        """Whether an earlier line began a multi-line match (so the next line matters)."""
        return self._state.count(None) != len(self._state)

    def reset(self) -> None:
        state = self._state
        for i in range(len(state)):
            state[i] = None

    def start(self, text: str, line: int) -> None:
        """Feed a line to the first pattern only (the detector replays a skipped line so)."""
        if self._state:
            first = self.matcher.patterns[0]
            found = first.regex.search(text)
            self._state[0] = (line, _fields(first, found, {})) if found else None

    def feed(self, text: str, line: int) -> Match | None:
        patterns = self.matcher.patterns
        last = len(patterns) - 1
        if last == 0:
            found = patterns[0].regex.search(text)
            return Match(_fields(patterns[0], found, {}), line) if found else None
        state = self._state
        for i in range(last, -1, -1):
            pattern = patterns[i]
            if i == 0:
                found = pattern.regex.search(text)
                state[0] = (line, _fields(pattern, found, {})) if found else None
                continue
            running = state[i - 1]
            if running is None:
                continue
            found = pattern.regex.search(text)
            if i < last:
                state[i] = (running[0], _fields(pattern, found, running[1])) if found else None
                state[i - 1] = None
                continue
            if found is None:
                state[i - 1] = None
                continue
            fields = _fields(pattern, found, running[1])
            self.reset()
            if pattern.loop:
                state[i - 1] = running
                return Match(fields, line)
            return Match(fields, running[0])
        return None


def severity_of(matcher: Matcher, fields: dict[str, str]) -> str:
    """The severity of a match: its ``severity`` group if it names one, else the matcher's."""
    return severity_named(fields.get("severity", ""), matcher.severity)


def severity_named(word: str, default: str) -> str:
    """The severity a ``severity`` group's text names, else ``default``."""
    word = word.strip().lower()
    if word.startswith(("err", "fatal")):
        return "error"
    if word.startswith("warn"):
        return "warning"
    if word.startswith(("note", "notice", "info")):
        return "notice"
    return default


_PATH = r"([^\s:(\[][^\s:(]*)"  # a path: no blanks, no ':' (so "12:03:04" is no file)

#: The built-in rules that fit GitHub's format, in it. Each rule's lines contain one of
#: ``problems.PREFILTER`` finds (the detector's prefilter relies on it; a test checks this).
BUILTIN_MATCHERS: dict[str, Any] = {
    "problemMatcher": [
        {
            # gcc, clang, mypy, javac, swiftc, Go vet -- "path:line[:col]: error|warning: msg"
            "owner": "logstream-compiler",
            "pattern": [
                {
                    "regexp": r"^"
                    + _PATH
                    + r":(\d+):(?:(\d+):)? (?:fatal )?(error|warning): (.+)$",
                    "file": 1,
                    "line": 2,
                    "column": 3,
                    "severity": 4,
                    "message": 5,
                }
            ],
        },
        {
            # TypeScript: "a.ts(3,7): error TS2322: msg"
            "owner": "logstream-tsc",
            "pattern": [
                {
                    "regexp": r"^" + _PATH + r"\((\d+),(\d+)\): (error|warning) (TS\d+): (.+)$",
                    "file": 1,
                    "line": 2,
                    "column": 3,
                    "severity": 4,
                    "code": 5,
                    "message": 6,
                }
            ],
        },
        {
            # TypeScript, --pretty: "a.ts:3:7 - error TS2322: msg"
            "owner": "logstream-tsc-pretty",
            "pattern": [
                {
                    "regexp": r"^" + _PATH + r":(\d+):(\d+) - (error|warning) (TS\d+): (.+)$",
                    "file": 1,
                    "line": 2,
                    "column": 3,
                    "severity": 4,
                    "code": 5,
                    "message": 6,
                }
            ],
        },
        {
            # rustc and cargo: "error[E0308]: msg" then " --> src/main.rs:2:18"
            "owner": "logstream-rustc",
            "pattern": [
                {
                    "regexp": r"^(error|warning)(?:\[(E\d+)\])?: (.+)$",
                    "severity": 1,
                    "code": 2,
                    "message": 3,
                },
                {
                    "regexp": r"^\s*--> " + _PATH + r":(\d+):(\d+)$",
                    "file": 1,
                    "line": 2,
                    "column": 3,
                },
            ],
        },
        {
            # ruff's full output: "F401 [*] `os` imported but unused" then " --> x.py:1:8"
            "owner": "logstream-ruff",
            "pattern": [
                {"regexp": r"^([A-Z]+[0-9]+) (?:\[\*\] )?(.+)$", "code": 1, "message": 2},
                {
                    "regexp": r"^\s*--> " + _PATH + r":(\d+):(\d+)$",
                    "file": 1,
                    "line": 2,
                    "column": 3,
                },
            ],
        },
        {
            # flake8 and ruff --output-format=concise: "x.py:1:1: W291 msg" (W: a warning)
            "owner": "logstream-flake8-warning",
            "severity": "warning",
            "pattern": [
                {
                    "regexp": r"^([^\s:]+\.py):(\d+):(\d+): (W[0-9]+) (?:\[\*\] )?(.+)$",
                    "file": 1,
                    "line": 2,
                    "column": 3,
                    "code": 4,
                    "message": 5,
                }
            ],
        },
        {
            "owner": "logstream-flake8",
            "pattern": [
                {
                    "regexp": r"^([^\s:]+\.py):(\d+):(\d+): ([A-Z]+[0-9]+) (?:\[\*\] )?(.+)$",
                    "file": 1,
                    "line": 2,
                    "column": 3,
                    "code": 4,
                    "message": 5,
                }
            ],
        },
        {
            # The Go compiler: "./main.go:8:2: undefined: x"
            "owner": "logstream-go",
            "pattern": [
                {
                    "regexp": r"^([^\s:]+\.go):(\d+):(\d+): (.+)$",
                    "file": 1,
                    "line": 2,
                    "column": 3,
                    "message": 4,
                }
            ],
        },
        {
            # pytest's summary: "FAILED tests/test_x.py::test_a - assert 1 == 2"
            "owner": "logstream-pytest",
            "pattern": [
                {
                    "regexp": r"^(?:FAILED|ERROR) (([^\s:]+\.py)(?:::\S+)?(?: - .*)?)$",
                    "file": 2,
                    "message": 1,
                }
            ],
        },
        {
            # go test: "--- FAIL: TestAdd (0.00s)"
            "owner": "logstream-go-test",
            "pattern": [{"regexp": r"^\s*--- (FAIL: \S+)", "message": 1}],
        },
        {
            # make: "make: *** [Makefile:3: test] Error 2", "make[1]: *** [all] Error 1"
            "owner": "logstream-make",
            "pattern": [{"regexp": r"^g?make(?:\[\d+\])?: \*\*\* (.*Error \d+.*)$", "message": 1}],
        },
        {
            # Maven: "[ERROR] /src/App.java:[5,9] cannot find symbol", also [WARNING]
            "owner": "logstream-maven",
            "pattern": [
                {
                    "regexp": r"^\[(ERROR|WARNING)\] (?:file:)?([^\s:\[][^:\[]*):\[(\d+),(\d+)\] "
                    r"(.+)$",
                    "severity": 1,
                    "file": 2,
                    "line": 3,
                    "column": 4,
                    "message": 5,
                }
            ],
        },
        {
            # Gradle: "FAILURE: Build failed with an exception."
            "owner": "logstream-gradle",
            "pattern": [{"regexp": r"^(FAILURE: .+)$", "message": 1}],
        },
    ]
}
