"""Problem detection: which lines of a log report an error, a warning or a notice (pure).

No I/O, no async: ``Detector.feed`` takes a block of lines of one stream with the sequence
number of its first line and returns the problems they complete. The runner feeds every block
it stores, so problems are found as lines arrive, never by re-reading the log.

Theory of operation
-------------------
- Rules, in the order a line tries them: a GitHub workflow command (``::error file=F,line=L::msg``,
  ``::warning``, ``::notice``; ``::add-matcher::PATH`` and ``::remove-matcher owner=NAME::``
  change the rules from the next line on); the project's problem matchers (GitHub's JSON format,
  newest first); the built-in matchers (``matchers.BUILTIN_MATCHERS``, same format); "first line
  of a run" rules for tools that print one failure as several prefixed lines (pytest ``E   ``,
  ``npm ERR!``/``npm error``, Maven ``[ERROR]``); and Python tracebacks, reported once at their
  ``Traceback`` line with the exception line as title, when that line arrives.
- stdout and stderr keep separate state (a multi-line match or a traceback on stderr is not
  broken by stdout lines read in between), and share the rules.
- As on GitHub, ANSI colour codes are removed before matching, and a match resets the other
  matchers' multi-line state.
- Prefilter: a built-in rule only ever matches a line that holds one of its *signs*
  (``SIGNS``, ``_NEEDS``; a test checks each rule against them over the corpus). A block is
  joined once (the runner has it joined already) and a ``Scanner`` finds the lines holding
  signs: ``HyperscanScanner`` finds all signs in one SIMD pass and tells which each line holds,
  so the line tries only the rules those signs name; the ``re`` fallback (``Scanner``, where
  Hyperscan is missing) finds a superset with a few fast passes, and its lines try every rule.
  Lines while a traceback or a multi-line match is under way go through the rules too. A
  multi-line built-in match can only be completed by a `` --> `` line: in the exact case its
  rules are fed only those, after the last line they would have seen is replayed into their
  first patterns (``_Stream.unfed``). Project matchers may match anything, so while there are
  any every line tries every rule. The answer is the same with either scanner and with none,
  however the lines are cut into blocks (property tests).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, cast

from logstream.matchers import (
    BUILTIN_MATCHERS,
    Matcher,
    MatcherError,
    MatcherRun,
    matchers_from_json,
    parse_matchers,
    severity_named,
    severity_of,
)
from logstream.workflow import Command, parse_command

if TYPE_CHECKING:
    import hyperscan

# What every line a built-in rule can report holds (a test checks each rule against them): a
# few regular expressions, each beginning with one literal character so that ``re`` scans a
# block for it as fast as ``str.find`` (an alternation of different first characters would be
# scanned character by character, several times slower). Only the lines they find, a handful
# per thousand in ordinary output, go through the rules. Used when Hyperscan is missing.
PREFILTERS = tuple(
    re.compile(pattern)
    for pattern in (
        # workflow commands; gcc, clang, mypy, javac, tsc; flake8, ruff concise, Go
        r":(?::|\d+(?::\d+)?:? (?:- )?(?:fatal )?(?:error|warning)|\d+:\d+: "
        r"| (?:error|warning) TS)",
        r"-->",  # rustc, ruff: completes a match that the line before began
        r"\*\*\* ",  # make
        r"E(?:RR|   )",  # pytest ERROR and E blocks, Maven [ERROR], npm ERR!
        r"FAIL",  # pytest FAILED, go test --- FAIL, Gradle FAILURE
        r"WARNING",  # Maven [WARNING]
        r"Traceback \(",  # Python
        r"npm error",  # npm 10
    )
)
# Signs: what a line must hold for each built-in rule to match it, one bit each. With
# Hyperscan the whole block is scanned for all of them at once (in C, SIMD) and each line found
# carries the bits of the signs it holds, so it goes only through the rules those bits name
# (``_NEEDS``). A multi-line built-in rule can only complete at a `` --> `` line: it is fed
# that line, after the line before is replayed into its first pattern (``_Stream.unfed``). A
# test checks, over the corpus, that every line a rule matches holds one of that rule's signs.
SIGNS: tuple[tuple[str, str], ...] = (
    ("command", r"::"),
    ("compiler", r":\d+(?::\d+)?: (?:fatal )?(?:error|warning): "),
    ("tsc", r"(?:\(\d+,\d+\):|:\d+:\d+ -) (?:error|warning) TS"),
    ("python-path", r"\.py:\d+:\d+: "),
    ("go-path", r"\.go:\d+:\d+: "),
    ("arrow", r"-->"),
    ("make", r"\*\*\* "),
    ("FAIL", r"FAIL"),
    ("ERR", r"ERR"),
    ("E-block", r"E   "),
    ("WARNING", r"WARNING"),
    ("traceback", r"Traceback \("),
    ("npm-error", r"npm error"),
)
_BIT = {name: 1 << i for i, (name, _) in enumerate(SIGNS)}
ALL_SIGNS = (1 << len(SIGNS)) - 1


def _bits(*names: str) -> int:
    mask = 0
    for name in names:
        mask |= _BIT[name]
    return mask


#: The signs a line must hold for each built-in rule to match it (one of them at least).
_NEEDS: dict[str, int] = {
    "logstream-compiler": _bits("compiler"),
    "logstream-tsc": _bits("tsc"),
    "logstream-tsc-pretty": _bits("tsc"),
    "logstream-rustc": _bits("arrow"),  # completes at the arrow; see ``_Stream.unfed``
    "logstream-ruff": _bits("arrow"),
    "logstream-flake8-warning": _bits("python-path"),
    "logstream-flake8": _bits("python-path"),
    "logstream-go": _bits("go-path"),
    "logstream-pytest": _bits("FAIL", "ERR"),
    "logstream-go-test": _bits("FAIL"),
    "logstream-make": _bits("make"),
    "logstream-maven": _bits("ERR", "WARNING"),
    "logstream-gradle": _bits("FAIL"),
}
_ARROW = _bits("arrow")
_COMMAND = _bits("command")
_TRACEBACK_SIGN = _bits("traceback")
TITLE_CHARS = 200
_COLOR = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
# (name, regex, group for the title): the first line of each run of consecutive matching lines
# is an error.
_RUNS = (
    ("pytest", re.compile(r"E {3,}(\S.*)"), 1, _bits("E-block")),
    ("npm", re.compile(r"npm (?:ERR!|error)(?: +\S.*)?"), 0, _bits("ERR", "npm-error")),
    ("maven", re.compile(r"\[ERROR\](?: +\S.*| *$)"), 0, _bits("ERR")),
)
_RUN_SIGNS = _bits("E-block", "ERR", "npm-error")
_TRACEBACK = re.compile(r"([ \t]*)Traceback \(most recent call last\):\s*$")
_FRAME = re.compile(r'\s*File "([^"]+)", line (\d+)')
BUILTIN: tuple[Matcher, ...] = tuple(matchers_from_json(BUILTIN_MATCHERS))
_BUILTIN_BY_OWNER = {matcher.owner: matcher for matcher in BUILTIN}
# Literals without which a built-in single-line matcher cannot match a line: a few ``in`` tests
# spare most lines most regexes (a test checks every hint against the rules' matches).
_HINTS: dict[str, tuple[str, ...]] = {
    "logstream-compiler": ("error: ", "warning: "),
    "logstream-tsc": (" TS",),
    "logstream-tsc-pretty": (" TS",),
    "logstream-flake8-warning": (".py:",),
    "logstream-flake8": (".py:",),
    "logstream-go": (".go:",),
    "logstream-pytest": ("FAILED ", "ERROR "),
    "logstream-go-test": ("--- FAIL: ",),
    "logstream-make": ("*** ",),
    "logstream-maven": ("] ",),
    "logstream-gradle": ("FAILURE: ",),
}


class _OneLine:
    """A one-pattern matcher applied straight from its match's groups: what ``MatcherRun.feed``
    then ``_problem`` give, without the fields dict (one-pattern matchers keep no state)."""

    __slots__ = ("code", "default", "file", "line", "message", "regex", "severity")

    def __init__(self, matcher: Matcher) -> None:
        (pattern,) = matcher.patterns
        groups = dict(pattern.groups)
        self.regex = pattern.regex
        self.file = groups.get("file")
        self.line = groups.get("line")
        self.severity = groups.get("severity")
        self.message = groups.get("message")
        self.code = groups.get("code")
        self.default = matcher.severity

    def problem(self, match: re.Match[str], seq: int) -> Problem:
        group = match.group
        message = (group(self.message) or "") if self.message is not None else ""
        code = group(self.code) if self.code is not None else None
        if code and code not in message:
            message = f"{message} [{code}]"
        severity = self.default
        if self.severity is not None:
            severity = severity_named(group(self.severity) or "", severity)
        return Problem(
            seq,
            severity,
            _title(message),
            (group(self.file) or None) if self.file is not None else None,
            _number(group(self.line)) if self.line is not None else None,
            seq,
        )


@dataclass(frozen=True, slots=True)
class Problem:
    """A line (or the first line of a block) that reports a problem."""

    line: int
    severity: str
    title: str
    file: str | None = None
    line_in_file: int | None = None
    #: The line whose arrival completed the problem (the last of a traceback); not shown.
    found_at: int | None = field(default=None, compare=False)

    def to_json(self) -> dict[str, object]:
        return {
            "line": self.line,
            "severity": self.severity,
            "title": self.title,
            "file": self.file,
            "line_in_file": self.line_in_file,
        }

    @classmethod
    def from_json(cls, data: dict[str, object]) -> Problem:
        line_in_file = data.get("line_in_file")
        file = data.get("file")
        return cls(
            int(str(data["line"])),
            str(data["severity"]),
            str(data["title"]),
            file if isinstance(file, str) else None,
            line_in_file if isinstance(line_in_file, int) else None,
        )


def _title(text: str) -> str:
    first = text.strip().split("\n", 1)[0].strip()
    return first if len(first) <= TITLE_CHARS else first[: TITLE_CHARS - 1] + "…"


def _number(text: str | None) -> int | None:
    if text is None:
        return None
    text = text.strip()
    return int(text) if text.isascii() and text.isdigit() and len(text) < 10 else None


@dataclass
class _Traceback:
    line: int
    indent: str
    file: str | None = None
    line_in_file: int | None = None

    def problem(self, title: str, found_at: int) -> Problem:
        return Problem(self.line, "error", _title(title), self.file, self.line_in_file, found_at)


#: A rule as a line tries it: its run, the signs it needs, its hint, whether it keeps state
#: between lines, and (for a one-pattern matcher) the shortcut that applies it.
_Entry = tuple[MatcherRun, int, tuple[str, ...] | None, bool, "_OneLine | None"]


@dataclass
class _Stream:
    """What one stream's earlier lines left behind."""

    count: int = 0  # lines of this stream fed so far
    done_through: int = -1  # index (in this stream) of the last line that went through the rules
    last_text: str | None = None
    last_seq: int = 0
    runs: list[MatcherRun] = field(default_factory=list)
    #: Each run with the signs a line needs for it (``_NEEDS``), its hint, and whether it keeps
    #: state between lines.
    plan: list[_Entry] = field(default_factory=list)
    #: Signs -> (the entries of ``plan`` to try on a line holding them while no run is busy,
    #: whether some run that keeps state is left out).
    tries: dict[int, tuple[list[_Entry], bool, bool]] = field(default_factory=dict)
    multi: list[MatcherRun] = field(default_factory=list)  # the runs that keep state
    run_ends: dict[str, int] = field(default_factory=dict)  # run rule -> index of its last line
    traceback: _Traceback | None = None
    #: With an exact scanner: (text, number) of the last line that the rules that keep state
    #: were not fed (they were idle, it was no ``-->`` line) but would have been without the
    #: prefilter, if none were fed since. A ``-->`` line replays it into their first patterns
    #: before it is fed, so they complete as if they had seen every line.
    unfed: tuple[str, int] | None = None

    def busy(self) -> bool:
        return self.traceback is not None or self.runs_busy()

    def runs_busy(self) -> bool:
        # (A loop, not any() over a generator: this is asked for every line the rules see.)
        for run in self.multi:  # noqa: SIM110
            if run.busy:
                return True
        return False


class Detector:
    """Finds problems in a job's lines, fed in order, block by block.

    ``read_file`` reads the matcher file an ``::add-matcher::PATH`` line names (the runner
    passes one that reads relative to the job's folder); without it those lines are ignored.
    """

    def __init__(
        self,
        matchers: Iterable[Matcher] = (),
        *,
        read_file: Callable[[str], str] | None = None,
        prefilter: bool | Scanner = True,
    ) -> None:
        """``prefilter``: True for the fastest scanner available, False to try every rule on
        every line (the reference the tests compare with), or a given ``Scanner``."""
        self._user: list[Matcher] = []
        self._builtin = list(BUILTIN)
        self._read_file = read_file
        self._scanner: Scanner | None = (
            prefilter if isinstance(prefilter, Scanner) else best_scanner() if prefilter else None
        )
        self._streams = (_Stream(), _Stream())
        for matcher in reversed(list(matchers)):
            self._add(matcher)
        self._rebuild_runs()

    @property
    def matchers(self) -> list[Matcher]:
        return self._user + self._builtin

    def feed(
        self,
        first_seq: int,
        lines: Sequence[str],
        *,
        stderr: bool = False,
        joined: str | None = None,
    ) -> list[Problem]:
        """The problems that ``lines`` (numbered from ``first_seq``) complete.

        ``joined``: ``"\\n".join(lines)`` if the caller has it (spares the scan a join)."""
        found: list[Problem] = []
        if not lines:
            return found
        stream = self._streams[stderr]
        base = stream.count
        stream.count += len(lines)
        if self._scanner is None:
            for i, text in enumerate(lines):
                self._line(stream, first_seq + i, base + i, text, found, ALL_SIGNS, True)
        else:
            self._feed_candidates(self._scanner, stream, first_seq, base, lines, found, joined)
        stream.last_text = lines[-1]
        stream.last_seq = first_seq + len(lines) - 1
        return found

    @property
    def needs_every_line(self) -> bool:
        """Whether a line without any sign may matter now: project matchers are active, or a
        traceback or a multi-line match is under way."""
        return bool(self._user) or any(stream.busy() for stream in self._streams)

    def skip(self, count: int, last_text: str, last_seq: int, *, stderr: bool = False) -> None:
        """Lines that hold no sign (``holds_signs``), fed while not ``needs_every_line``:
        what ``feed`` would do with them (it counts them and remembers the last), without
        them. The detector process is told only this about such lines (``detectproc``)."""
        stream = self._streams[stderr]
        stream.count += count
        stream.last_text = last_text
        stream.last_seq = last_seq

    def flush(self) -> list[Problem]:
        """The job ended: a traceback cut short is still reported."""
        found = []
        for stream in self._streams:
            if stream.traceback is not None:
                last = max(s.last_seq for s in self._streams)
                found.append(stream.traceback.problem("Traceback (most recent call last)", last))
                stream.traceback = None
        return found

    def _feed_candidates(
        self,
        scanner: Scanner,
        stream: _Stream,
        first_seq: int,
        base: int,
        lines: Sequence[str],
        found: list[Problem],
        joined: str | None,
    ) -> None:
        indices: list[int] | None = None
        signs: list[int] = []
        i, n, k = 0, len(lines), 0
        exact = scanner.exact
        while i < n:
            # Project matchers (maybe added by the line before) may match any line.
            if self._user:
                self._line(stream, first_seq + i, base + i, lines[i], found, ALL_SIGNS, True)
                i += 1
                continue
            if indices is None:
                indices, signs = scanner.scan(lines, joined)
            while k < len(indices) and indices[k] < i:
                k += 1
            busy = stream.traceback is not None or stream.runs_busy()
            if busy:
                mask = (
                    ALL_SIGNS
                    if not exact
                    else signs[k]
                    if k < len(indices) and indices[k] == i
                    else 0
                )
            else:
                if k == len(indices):
                    return
                i, mask = indices[k], signs[k] if exact else ALL_SIGNS
                if base + i - 1 > stream.done_through:  # lines were skipped
                    before = lines[i - 1] if i else stream.last_text
                    if before is not None:
                        if exact:
                            stream.unfed = (before, first_seq + i - 1)
                        else:
                            self._replay(stream, before, first_seq + i - 1)
            self._line(stream, first_seq + i, base + i, lines[i], found, mask, busy)
            i += 1

    def _replay(self, stream: _Stream, text: str, seq: int) -> None:
        """Give a skipped line to the first patterns: it may begin a match the next completes."""
        if "\x1b" in text:
            text = _COLOR.sub("", text)
        for run in stream.runs:
            run.start(text, seq)

    def _line(
        self,
        stream: _Stream,
        seq: int,
        index: int,
        text: str,
        found: list[Problem],
        mask: int,
        busy: bool,
    ) -> None:
        """Every problem found here is found at ``seq`` (its ``found_at``).

        ``mask``: the signs the line holds (``ALL_SIGNS`` when not known): a rule whose signs it
        lacks cannot match it, so it is not tried (a run that keeps state still is while busy).
        ``busy``: whether the stream may be (else no traceback or multi-line match is under way).
        """
        stream.done_through = index
        if "\x1b" in text:
            text = _COLOR.sub("", text)
        if stream.traceback is not None and self._in_traceback(stream, seq, text, found):
            return
        if mask & _COMMAND:
            stripped = text.lstrip(" \t")
            if stripped.startswith("::"):
                command = parse_command(stripped)
                if command is not None:
                    self._command(command, seq, found)
                    return
        matched = unfed = False
        hinting = mask == ALL_SIGNS
        if not hinting and mask & _ARROW and stream.unfed is not None:
            self._replay(stream, *stream.unfed)
        if hinting or busy:
            plan: Iterable[_Entry] = stream.plan
            fed_state = True
        else:  # the usual case: only the rules the line's signs name (computed once per mask)
            tries = stream.tries.get(mask)
            if tries is None:
                tries = stream.tries[mask] = _tries(stream.plan, mask)
            plan, unfed, fed_state = tries
        for run, need, hint, keeps_state, one_line in plan:
            if hinting:
                if hint is not None and not any(literal in text for literal in hint):
                    continue  # (hinted matchers have one pattern: no state to update)
            elif not need & mask and not (keeps_state and run.busy):
                unfed = unfed or keeps_state
                continue
            if one_line is not None:
                one_match = one_line.regex.search(text)
                if one_match is None:
                    continue
                if fed_state:
                    for other in stream.multi:
                        other.reset()
                found.append(one_line.problem(one_match, seq))
                matched = True
                break
            match = run.feed(text, seq)
            if match is not None:
                if fed_state:  # (else every run that keeps state is idle)
                    for other in stream.multi:
                        if other is not run:
                            other.reset()
                found.append(_problem(run.matcher, match.fields, match.line, seq))
                matched = True
                break
        stream.unfed = (text, seq) if unfed and not matched else None
        if mask & _RUN_SIGNS:
            for name, regex, group, need in _RUNS:
                if not need & mask:
                    continue
                run_match = regex.match(text)
                if run_match is not None:
                    starts = stream.run_ends.get(name) != index - 1
                    stream.run_ends[name] = index
                    if starts and not matched:
                        found.append(
                            Problem(seq, "error", _title(run_match.group(group)), found_at=seq)
                        )
                    return
        if not matched and mask & _TRACEBACK_SIGN and "Traceback (" in text:
            start = _TRACEBACK.match(text)
            if start is not None:
                stream.traceback = _Traceback(seq, start.group(1))

    def _in_traceback(self, stream: _Stream, seq: int, text: str, found: list[Problem]) -> bool:
        """Whether ``text`` belongs to the traceback under way (its frames or its last line)."""
        traceback = stream.traceback
        assert traceback is not None
        indent = traceback.indent
        if text.startswith(indent) and text[len(indent) : len(indent) + 1] in (" ", "\t"):
            frame = _FRAME.match(text)
            if frame is not None:
                real = not frame.group(1).startswith("<")  # "<string>", "<stdin>"
                traceback.file = frame.group(1) if real else None
                traceback.line_in_file = int(frame.group(2)) if real else None
            return True
        stream.traceback = None
        if text.strip() and text.startswith(indent):
            found.append(traceback.problem(text, seq))
            return True
        found.append(traceback.problem("Traceback (most recent call last)", seq))
        return False

    def _command(self, command: Command, seq: int, found: list[Problem]) -> None:
        name, properties = command.name, command.properties
        if name in ("error", "warning", "notice"):
            title = properties.get("title") or command.message or name
            found.append(
                Problem(
                    seq,
                    name,
                    _title(title),
                    properties.get("file") or None,
                    _number(properties.get("line")),
                )
            )
        elif name == "add-matcher" and self._read_file is not None:
            path = command.message.strip()
            try:
                added = parse_matchers(self._read_file(path))
            except (OSError, UnicodeDecodeError, MatcherError) as error:
                reason = error.strerror if isinstance(error, OSError) else str(error)
                title = _title(f"problem matcher {path}: {reason}")
                found.append(Problem(seq, "warning", title, found_at=seq))
                return
            for matcher in reversed(added):
                self._add(matcher)
            self._rebuild_runs()
        elif name == "remove-matcher":
            owner = properties.get("owner", "").strip()
            self._user = [m for m in self._user if m.owner != owner]
            self._builtin = [m for m in self._builtin if m.owner != owner]
            self._rebuild_runs()

    def _add(self, matcher: Matcher) -> None:
        self._user = [matcher] + [m for m in self._user if m.owner != matcher.owner]
        self._builtin = [m for m in self._builtin if m.owner != matcher.owner]

    def _rebuild_runs(self) -> None:
        for stream in self._streams:
            kept = {run.matcher.owner: run for run in stream.runs}
            stream.runs = [
                kept[m.owner] if m.owner in kept and kept[m.owner].matcher is m else MatcherRun(m)
                for m in self.matchers
            ]
            stream.multi = [run for run in stream.runs if len(run.matcher.patterns) > 1]
            stream.plan = [
                (
                    run,
                    *_gate(run.matcher),
                    len(run.matcher.patterns) > 1,
                    _OneLine(run.matcher) if len(run.matcher.patterns) == 1 else None,
                )
                for run in stream.runs
            ]
            stream.tries = {}


def _tries(plan: list[_Entry], mask: int) -> tuple[list[_Entry], bool, bool]:
    """The entries of ``plan`` to try on a line with signs ``mask`` while no run is busy,
    whether a run that keeps state is left out, and whether one is tried."""
    tries = [entry for entry in plan if entry[1] & mask]
    leaves_out = any(entry[3] and not entry[1] & mask for entry in plan)
    return tries, leaves_out, any(entry[3] for entry in tries)


def _gate(matcher: Matcher) -> tuple[int, tuple[str, ...] | None]:
    """The signs a line needs for ``matcher`` and its hint: only for the built-in rules (a
    project's matcher may take a built-in owner and match anything)."""
    if _BUILTIN_BY_OWNER.get(matcher.owner) is not matcher:
        return ALL_SIGNS, None
    return _NEEDS.get(matcher.owner, ALL_SIGNS), _HINTS.get(matcher.owner)


def _problem(matcher: Matcher, fields: dict[str, str], line: int, found_at: int) -> Problem:
    message = fields.get("message", "")
    code = fields.get("code")
    if code and code not in message:
        message = f"{message} [{code}]"
    return Problem(
        line,
        severity_of(matcher, fields),
        _title(message),
        fields.get("file"),
        _number(fields.get("line")),
        found_at,
    )


class Scanner:
    """Finds the lines of a block that some built-in rule may match: ``scan(lines)`` returns
    their indices, in order, and for each the signs it holds (``SIGNS`` bits). A scanner that
    is not ``exact`` finds a superset of those lines and gives no signs (every rule is tried)."""

    exact = False

    def scan(self, lines: Sequence[str], joined: str | None = None) -> tuple[list[int], list[int]]:
        """A fast pass over the joined block per ``PREFILTERS`` regex (``re``, in C).

        ``joined``: ``"\\n".join(lines)``, if the caller has it."""
        joined = _joined(lines, joined)
        hits: list[int] = []
        for prefilter in PREFILTERS:
            hits.extend(hit.start() for hit in prefilter.finditer(joined))
        if not hits:
            return [], []
        hits.sort()
        indices: list[int] = []
        line, last = 0, 0
        for position in hits:
            line += joined.count("\n", last, position)
            last = position
            if not indices or indices[-1] != line:
                indices.append(line)
        return indices, [ALL_SIGNS] * len(indices)

    def any_sign(self, joined: str) -> bool:
        """Whether some line of ``joined`` (lines joined with ``"\\n"``) holds a sign."""
        joined = _joined((), joined)
        return any(prefilter.search(joined) for prefilter in PREFILTERS)


class HyperscanScanner(Scanner):
    """One Hyperscan pass over the block (UTF-8) for every sign at once."""

    exact = True

    def __init__(self) -> None:
        import hyperscan

        self._hyperscan = hyperscan
        self._database = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
        self._database.compile(
            expressions=[pattern.encode() for _, pattern in SIGNS],
            ids=list(range(len(SIGNS))),
            elements=len(SIGNS),
            flags=[hyperscan.HS_FLAG_MULTILINE] * len(SIGNS),
        )
        self._local = threading.local()  # scratch space: one per thread that scans

    def scan(self, lines: Sequence[str], joined: str | None = None) -> tuple[list[int], list[int]]:
        data = _joined(lines, joined).encode("utf-8", "surrogatepass")
        hits: list[tuple[int, int]] = []
        scratch = self._scratch()
        self._database.scan(data, match_event_handler=_on_match, context=hits, scratch=scratch)
        if not hits:
            return [], []
        hits.sort()  # by where each ends (no sign spans a "\n")
        indices: list[int] = []
        signs: list[int] = []
        line, last = 0, 0
        for end, sign in hits:
            line += data.count(b"\n", last, end)
            last = end
            if indices and indices[-1] == line:
                signs[-1] |= 1 << sign
            else:
                indices.append(line)
                signs.append(1 << sign)
        return indices, signs

    def _scratch(self) -> hyperscan.Scratch:
        """Hyperscan's scratch space for this thread (one per thread that scans)."""
        scratch = getattr(self._local, "scratch", None)
        if scratch is None:
            scratch = self._local.scratch = self._hyperscan.Scratch(self._database)
        return scratch

    def any_sign(self, joined: str) -> bool:
        data = _joined((), joined).encode("utf-8", "surrogatepass")
        scratch = self._scratch()
        try:
            self._database.scan(data, match_event_handler=_stop, scratch=scratch)
        except self._hyperscan.ScanTerminated:
            return True
        return False


def _stop(sign: int, start: int, end: int, flags: int, context: object) -> bool:
    return True  # the first sign is enough


def _on_match(sign: int, start: int, end: int, flags: int, hits: object) -> None:
    cast(list[tuple[int, int]], hits).append((end, sign))


def _joined(lines: Sequence[str], joined: str | None) -> str:
    if joined is None:
        joined = "\n".join(lines)
    if "\x1b" in joined:
        joined = _COLOR.sub("", joined)  # removes no "\n": line numbers stay
    return joined


_BEST: Scanner | None = None


def best_scanner() -> Scanner:
    """Hyperscan's where it installs and runs (x86-64), else ``re``'s."""
    global _BEST
    if _BEST is None:
        try:
            _BEST = HyperscanScanner()
        except Exception:  # not installed, or a CPU it does not support
            _BEST = Scanner()
    return _BEST


def holds_signs(joined: str) -> bool:
    """Whether a line of ``joined`` may report or complete a problem of a built-in rule."""
    return best_scanner().any_sign(joined)


def detect(lines: Sequence[str], matchers: Iterable[Matcher] = ()) -> list[Problem]:
    """The problems of a whole log, one stream of lines numbered from 1 (for tests and tools)."""
    detector = Detector(matchers)
    return detector.feed(1, lines) + detector.flush()
