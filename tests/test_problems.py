"""Problem detection, pure: real tool output in tests/problem_corpus (as the tools print it).

Each ``NAME.txt`` there is a tool's output and ``NAME.json`` the problems a user should see in
it; ``clean.txt`` holds lines that merely contain the words (none may be a problem).
"""

from __future__ import annotations

import json
import platform
import random
import re
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from logstream.lines import LineSplitter
from logstream.matchers import MatcherError, MatcherRun, parse_matchers
from logstream.problemlog import Found
from logstream.problems import _HINTS as HINTS
from logstream.problems import (
    _NEEDS,
    _RUNS,
    BUILTIN,
    PREFILTERS,
    SIGNS,
    Detector,
    HyperscanScanner,
    Problem,
    Scanner,
    _OneLine,
    _problem,
    best_scanner,
    detect,
)
from logstream.workflow import add_mask_value, parse_command

CORPUS = Path(__file__).parent / "problem_corpus"
CASES = sorted(path.stem for path in CORPUS.glob("*.txt"))


def corpus_lines(name: str) -> list[str]:
    return LineSplitter().feed((CORPUS / f"{name}.txt").read_bytes())


def expected(name: str) -> list[dict[str, object]]:
    data: list[dict[str, object]] = json.loads((CORPUS / f"{name}.json").read_text())
    return data


def shown(problems: list[Problem]) -> list[dict[str, object]]:
    return [problem.to_json() for problem in problems]


@pytest.mark.parametrize("name", CASES)
def test_corpus_gives_the_expected_problems(name: str) -> None:
    assert shown(detect(corpus_lines(name))) == expected(name)


def test_corpus_covers_every_tool_the_contract_names() -> None:
    assert set(CASES) >= {
        "gcc", "clang", "mypy", "ruff", "flake8", "rustc", "go-build", "go-test", "pytest",
        "make", "npm", "npm10", "maven", "gradle", "tsc", "python-traceback",
        "github-commands", "clean",
    }  # fmt: skip


def test_lines_that_merely_contain_the_word_are_no_problem() -> None:
    lines = corpus_lines("clean")
    assert any("0 errors" in line for line in lines)
    assert any("error_handler.c" in line for line in lines)
    assert any("--fail-fast" in line for line in lines)
    assert detect(lines) == []


def test_a_traceback_is_one_problem_at_its_first_line_titled_with_the_exception() -> None:
    problems = detect(corpus_lines("python-traceback"))
    assert problems[0] == Problem(
        2, "error", "config.ConfigError: no such file: /etc/demo.toml",
        "/home/ci/project/config.py", 12,
    )  # fmt: skip
    assert [p.line for p in problems] == [2, 12, 18]


def test_rustc_error_is_reported_at_its_first_line_with_the_location_of_the_next() -> None:
    problems = detect(["error[E0308]: mismatched types", "  --> src/lib.rs:12:18"])
    assert problems == [Problem(1, "error", "mismatched types [E0308]", "src/lib.rs", 12)]
    assert detect(["error[E0308]: mismatched types", "no location here"]) == []


def test_workflow_commands_unescape_properties_and_messages() -> None:
    command = parse_command("::error file=a%3Ab%2Cc.py,line=3,title=T%25::one%0Atwo")
    assert command is not None
    assert command.name == "error"
    assert command.properties == {"file": "a:b,c.py", "line": "3", "title": "T%"}
    assert command.message == "one\ntwo"
    assert parse_command("error: no command") is None
    assert parse_command(":: not a command") is None


def test_add_mask_value_is_found_only_in_an_add_mask_command() -> None:
    assert add_mask_value("::add-mask::s3cr3t") == "s3cr3t"
    assert add_mask_value("  ::add-mask::  s3cr3t  ") == "s3cr3t"
    assert add_mask_value("::add-mask::") is None
    assert add_mask_value("echo ::add-mask::x is how you mask") is None
    assert add_mask_value("::warning::add-mask::x") is None


def test_stdout_lines_do_not_break_a_traceback_on_stderr() -> None:
    detector = Detector()
    found = detector.feed(1, ["Traceback (most recent call last):"], stderr=True)
    found += detector.feed(2, ["progress 50%"])
    found += detector.feed(3, ['  File "x.py", line 3, in <module>'], stderr=True)
    found += detector.feed(4, ["ValueError: bad"], stderr=True)
    assert found == [Problem(1, "error", "ValueError: bad", "x.py", 3)]


def test_a_traceback_cut_short_is_reported_at_the_end() -> None:
    detector = Detector()
    assert detector.feed(7, ["Traceback (most recent call last):", '  File "x.py", line 1']) == []
    assert detector.flush() == [Problem(7, "error", "Traceback (most recent call last)", "x.py", 1)]


ESLINT_STYLISH = {
    "problemMatcher": [
        {
            "owner": "eslint-stylish",
            "pattern": [
                {"regexp": r"^([^\s].*)$", "file": 1},
                {
                    "regexp": r"^\s+(\d+):(\d+)\s+(error|warning|info)\s+(.*)\s\s+(.*)$",
                    "line": 1,
                    "column": 2,
                    "severity": 3,
                    "message": 4,
                    "code": 5,
                    "loop": True,
                },
            ],
        }
    ]
}


def test_a_looping_github_matcher_reports_each_line_of_a_file_block() -> None:
    matchers = parse_matchers(json.dumps(ESLINT_STYLISH))
    lines = [
        "/src/app.js",
        "  1:10  error  'x' is defined but never used  no-unused-vars",
        "  3:1   warning  Unexpected console statement  no-console",
        "",
        "✖ 2 problems",
    ]
    assert detect(lines, matchers) == [
        Problem(2, "error", "'x' is defined but never used [no-unused-vars]", "/src/app.js", 1),
        Problem(3, "warning", "Unexpected console statement [no-console]", "/src/app.js", 3),
    ]


def test_dotnet_named_groups_are_accepted() -> None:
    (matcher,) = parse_matchers(
        json.dumps(
            {
                "problemMatcher": [
                    {"owner": "n", "pattern": [{"regexp": r"^BAD (?<what>.+)$", "message": 1}]}
                ]
            }
        )
    )
    assert detect(["BAD thing"], [matcher]) == [Problem(1, "error", "thing")]


@pytest.mark.parametrize(
    ("document", "complaint"),
    [
        ("{", "not JSON"),
        ("[]", "problemMatcher"),
        ('{"problemMatcher": [{"pattern": [{"regexp": "x", "message": 0}]}]}', "owner"),
        ('{"problemMatcher": [{"owner": "o", "pattern": []}]}', "non-empty"),
        ('{"problemMatcher": [{"owner": "o", "pattern": [{"regexp": "("}]}]}', "bad regexp"),
        ('{"problemMatcher": [{"owner": "o", "pattern": [{"regexp": "x"}]}]}', "message"),
        (
            '{"problemMatcher": [{"owner": "o", "pattern": [{"regexp": "x", "message": 2}]}]}',
            "group",
        ),
        (
            '{"problemMatcher": [{"owner": "o", "pattern": '
            '[{"regexp": "x", "message": 0, "loop": true}]}]}',
            "loop",
        ),
        (
            '{"problemMatcher": [{"owner": "o", "severity": "fatal", '
            '"pattern": [{"regexp": "x", "message": 0}]}]}',
            "severity",
        ),
    ],
)
def test_bad_matcher_files_get_a_clear_error(document: str, complaint: str) -> None:
    with pytest.raises(MatcherError, match=re.escape(complaint)):
        parse_matchers(document)


def test_add_matcher_and_remove_matcher_commands_change_the_rules_from_the_next_line() -> None:
    files = {
        "lint.json": json.dumps(
            {
                "problemMatcher": [
                    {
                        "owner": "lint",
                        "severity": "warning",
                        "pattern": [{"regexp": r"^LINT (\S+) (.+)$", "file": 1, "message": 2}],
                    }
                ]
            }
        )
    }

    def read_file(path: str) -> str:
        if path not in files:
            raise FileNotFoundError(2, "No such file or directory")
        return files[path]

    detector = Detector(read_file=read_file)
    lines = [
        "LINT a.py before",
        "::add-matcher::lint.json",
        "LINT b.py during",
        "::remove-matcher owner=lint::",
        "LINT c.py after",
        "::add-matcher::missing.json",
        "::remove-matcher owner=logstream-make::",
        "make: *** [all] Error 2",
    ]
    assert detector.feed(1, lines) == [
        Problem(3, "warning", "during", "b.py"),
        Problem(6, "warning", "problem matcher missing.json: No such file or directory"),
    ]


def test_matchers_given_from_the_start_come_before_the_built_in_rules() -> None:
    matchers = parse_matchers(
        json.dumps(
            {
                "problemMatcher": [
                    {
                        "owner": "quiet-gcc",
                        "severity": "notice",
                        "pattern": [{"regexp": r"^(\S+):(\d+):\d+: warning: (.+)$",
                                     "file": 1, "line": 2, "message": 3}],
                    }
                ]
            }
        )
    )  # fmt: skip
    assert detect(["a.c:1:2: warning: meh"], matchers) == [Problem(1, "notice", "meh", "a.c", 1)]


def test_ansi_colours_are_ignored() -> None:
    lines = [
        "\x1b[1m\x1b[31mFAILED\x1b[0m tests/test_a.py::test_b - assert 1 == 2",
        "\x1b[01m\x1b[Ka.c:3:5:\x1b[m\x1b[K \x1b[01;31m\x1b[Kerror: \x1b[m\x1b[Kbad",
    ]
    assert [(p.line, p.title) for p in detect(lines)] == [
        (1, "tests/test_a.py::test_b - assert 1 == 2"),
        (2, "bad"),
    ]


def test_every_hint_is_in_every_line_its_matcher_matches() -> None:
    hinted = {m.owner: m for m in BUILTIN if m.owner in HINTS}
    assert all(len(m.patterns) == 1 for m in hinted.values())
    for name in CASES:
        for line in corpus_lines(name):
            bare = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", line)
            for owner, matcher in hinted.items():
                if matcher.patterns[0].regex.search(bare):
                    assert any(h in bare for h in HINTS[owner]), (name, owner, line)


def test_the_prefilter_finds_every_line_a_rule_reports_or_completes() -> None:
    # The prefilter relies on it: a problem's first or completing line must be found.
    for name in CASES:
        lines = corpus_lines(name)
        reference = Detector(prefilter=False)
        for n, line in enumerate(lines, start=1):
            for problem in reference.feed(n, [line]):
                completing = lines[problem.found_at - 1] if problem.found_at else line
                bare = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", completing)
                first = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", lines[problem.line - 1])
                # A traceback is found at its first line, a rustc error at its last.
                assert any(p.search(first) or p.search(bare) for p in PREFILTERS), (name, line)


ALL_LINES = [line for name in CASES for line in corpus_lines(name)]


def blocks(lines: list[str], cuts: list[int]) -> Iterator[tuple[int, list[str]]]:
    """``lines`` cut at ``cuts`` (modulo their count): each block with its first line's number."""
    start = 0
    for cut in [*sorted({c % (len(lines) + 1) for c in cuts}), len(lines)]:
        if cut > start:
            yield start + 1, lines[start:cut]
            start = cut


def run_in_blocks(lines: list[str], cuts: list[int], prefilter: bool | Scanner) -> list[Problem]:
    detector = Detector(prefilter=prefilter)
    found: list[Problem] = []
    for first, block in blocks(lines, cuts):
        found += detector.feed(first, block)
    return found + detector.flush()


# pyproject.toml installs Hyperscan on Linux x86-64 only; elsewhere the re scanner is the one.
HYPERSCAN_HERE = sys.platform == "linux" and platform.machine() == "x86_64"
needs_hyperscan = pytest.mark.skipif(not HYPERSCAN_HERE, reason="Hyperscan: Linux x86-64 only")
SCANNERS = [Scanner(), *([HyperscanScanner()] if HYPERSCAN_HERE else [])]


def one_line_at_a_time(lines: list[str]) -> list[Problem]:
    reference = Detector(prefilter=False)
    problems: list[Problem] = []
    for n, line in enumerate(lines, start=1):
        problems += reference.feed(n, [line])
    return problems + reference.flush()


@pytest.mark.parametrize("scanner", SCANNERS, ids=lambda s: type(s).__name__)
@settings(max_examples=150, deadline=None)
@given(
    picks=st.lists(st.integers(0, len(ALL_LINES) - 1), min_size=1, max_size=80),
    cuts=st.lists(st.integers(0, 200), max_size=12),
)
def test_any_cutting_into_blocks_gives_the_same_problems_as_every_line_alone(
    scanner: Scanner, picks: list[int], cuts: list[int]
) -> None:
    # Random mixes of real lines (so multi-line rules begin and break anywhere), fed in random
    # blocks with the prefilter, against one line at a time with every line through every rule.
    lines = [ALL_LINES[i] for i in picks]
    expected_problems = one_line_at_a_time(lines)
    assert run_in_blocks(lines, cuts, prefilter=scanner) == expected_problems
    assert run_in_blocks(lines, cuts, prefilter=False) == expected_problems


def run_skipping(lines: list[str], cuts: list[int], scanner: Scanner) -> list[Problem]:
    """As the detector process is fed: a small block with no sign, while the detector does not
    need every line, is only counted (``Detector.skip``)."""
    detector = Detector(prefilter=scanner)
    found: list[Problem] = []
    for first, block in blocks(lines, cuts):
        if not detector.needs_every_line and not scanner.any_sign("\n".join(block)):
            detector.skip(len(block), block[-1], first + len(block) - 1)
        else:
            found += detector.feed(first, block)
    return found + detector.flush()


@pytest.mark.parametrize("scanner", SCANNERS, ids=lambda s: type(s).__name__)
@settings(max_examples=200, deadline=None)
@given(
    picks=st.lists(st.integers(0, len(ALL_LINES) - 1), min_size=1, max_size=80),
    cuts=st.lists(st.integers(0, 200), max_size=30),
)
def test_blocks_without_signs_may_be_skipped_while_nothing_is_under_way(
    scanner: Scanner, picks: list[int], cuts: list[int]
) -> None:
    lines = [ALL_LINES[i] for i in picks] + ["plain"] * (len(picks) // 2)
    random.Random(len(cuts)).shuffle(lines)
    assert run_skipping(lines, cuts, scanner) == one_line_at_a_time(lines)


# Lines that begin, complete, interrupt or reset the multi-line rules (rustc, ruff), in any order.
TRICKY = [
    "error[E0308]: mismatched types",
    "warning: unused variable: `x`",
    "F401 [*] `os` imported but unused",
    "E501 Line too long (120 > 88)",
    "  --> src/lib.rs:12:18",
    " --> x.py:1:8",
    "::notice::between",
    "::error file=a.py,line=1::boom",
    "Traceback (most recent call last):",
    '  File "a.py", line 1, in <module>',
    "ValueError: bad",
    "a.c:1:2: error: e",
    "E   assert 1 == 2",
    "--- FAIL: TestX (0.00s)",
    "plain line",
    "",
]


@pytest.mark.parametrize("scanner", SCANNERS, ids=lambda s: type(s).__name__)
@settings(max_examples=300, deadline=None)
@given(
    picks=st.lists(st.integers(0, len(TRICKY) - 1), min_size=1, max_size=40),
    cuts=st.lists(st.integers(0, 60), max_size=10),
)
def test_multi_line_rules_complete_as_without_the_prefilter_whatever_comes_between(
    scanner: Scanner, picks: list[int], cuts: list[int]
) -> None:
    lines = [TRICKY[i] for i in picks]
    assert run_in_blocks(lines, cuts, prefilter=scanner) == one_line_at_a_time(lines)


@needs_hyperscan
def test_hyperscan_is_the_scanner_where_it_installs() -> None:
    assert isinstance(best_scanner(), HyperscanScanner)


@needs_hyperscan
def test_every_line_a_built_in_rule_matches_holds_one_of_its_signs() -> None:
    # The exact scanner relies on it: a rule is tried only on lines holding one of its signs.
    scanner = HyperscanScanner()
    signs = {name: 1 << i for i, (name, _) in enumerate(SIGNS)}
    rules = [(m.owner, m.patterns[-1].regex, _NEEDS[m.owner]) for m in BUILTIN]
    rules += [(name, regex, need) for name, regex, _, need in _RUNS]
    rules += [("command", re.compile(r"\s*::"), signs["command"])]
    rules += [("traceback", re.compile(r"\s*Traceback \("), signs["traceback"])]
    for name in CASES:
        lines = [re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", line) for line in corpus_lines(name)]
        indices, found = scanner.scan(lines)
        held = dict(zip(indices, found, strict=True))
        for index, line in enumerate(lines):
            for owner, regex, need in rules:
                if regex.match(line):
                    assert held.get(index, 0) & need, (name, owner, line)


@settings(max_examples=50, deadline=None)
@given(sizes=st.lists(st.integers(1, 300), min_size=1, max_size=40))
def test_bytes_in_any_chunks_give_the_same_problems(sizes: list[int]) -> None:
    data = b"".join((CORPUS / f"{name}.txt").read_bytes() for name in CASES)
    whole = detect(LineSplitter().feed(data))
    splitter, detector, found, seq, position = LineSplitter(), Detector(), [], 1, 0
    while position < len(data):
        for size in sizes:
            lines = splitter.feed(data[position : position + size])
            found += detector.feed(seq, lines)
            seq += len(lines)
            position += size
    found += detector.feed(seq, splitter.flush()) + detector.flush()
    assert found == whole


def test_built_in_rules_apply_again_in_the_same_block_once_project_matchers_are_gone() -> None:
    matcher = json.dumps(
        {"problemMatcher": [{"owner": "x", "pattern": [{"regexp": "^X (.+)$", "message": 1}]}]}
    )
    detector = Detector(read_file=lambda path: matcher)
    lines = [
        "::add-matcher::x.json",
        "X one",
        "::remove-matcher owner=x::",
        "X two",
        "a.c:1: error: e",
    ]
    assert [p.line for p in detector.feed(1, lines)] == [2, 5]


@given(
    title=st.text(max_size=30),
    file=st.none() | st.text(max_size=10),
    line_in_file=st.none() | st.integers(1, 10**6),
)
def test_a_problem_record_is_the_json_of_its_object(
    title: str, file: str | None, line_in_file: int | None
) -> None:
    problem = Problem(12, "warning", title, file, line_in_file)
    data = problem.to_json() | {"found_at": 14}
    record = Found(problem, 14).to_record()
    assert record == json.dumps(data, ensure_ascii=False).encode("utf-8", "surrogatepass") + b"\n"


def test_one_pattern_matchers_applied_directly_give_what_their_run_gives() -> None:
    matchers = [*BUILTIN, *parse_matchers(json.dumps(ESLINT_STYLISH))]
    matchers += parse_matchers(
        json.dumps(
            {
                "problemMatcher": [
                    {
                        "owner": "all-groups",
                        "severity": "warning",
                        "pattern": [
                            {
                                "regexp": r"^(\S*):(\d*):(\w*):(\w*)? (.*)$",
                                "file": 1,
                                "line": 2,
                                "severity": 3,
                                "code": 4,
                                "message": 5,
                            }
                        ],
                    }
                ]
            }
        )
    )
    lines = [*ALL_LINES, "a.c:3:err:E1 boom", ":x:info: E1 here", "::: ", "f:1:warn:C7 C7 twice"]
    one_pattern = [m for m in matchers if len(m.patterns) == 1]
    assert len(one_pattern) > 10
    for matcher in one_pattern:
        for line in lines:
            match = MatcherRun(matcher).feed(line, 5)
            direct = _OneLine(matcher)
            found = direct.regex.search(line)
            if match is None:
                assert found is None
            else:
                assert found is not None
                via_run = _problem(matcher, match.fields, match.line, 5)
                assert direct.problem(found, 5) == via_run, (matcher.owner, line)


@needs_hyperscan
def test_the_hyperscan_scanner_can_scan_from_several_threads_at_once() -> None:
    scanner = best_scanner()
    lines = ALL_LINES * 20
    expected = scanner.scan(lines)
    results: list[tuple[list[int], list[int]]] = []

    def scan_often() -> None:
        for _ in range(20):
            results.append(scanner.scan(lines))

    threads = [threading.Thread(target=scan_often) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [expected] * 80
