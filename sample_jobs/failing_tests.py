"""A test run with failures: exits 1, like pytest or make check when a test fails."""

from __future__ import annotations

import sys

RED, GREEN, RESET = "\x1b[31m", "\x1b[32m", "\x1b[0m"
RESULTS = [
    ("test_parse_empty", True),
    ("test_parse_unicode", True),
    ("test_resume_after_disconnect", False),
    ("test_ring_eviction", True),
    ("test_timeout_is_reported", False),
]


def main() -> None:
    failed = 0
    for name, ok in RESULTS:
        if ok:
            print(f"tests/test_sample.py::{name} {GREEN}PASSED{RESET}", flush=True)
        else:
            failed += 1
            print(f"tests/test_sample.py::{name} {RED}FAILED{RESET}", flush=True)
            print(f"E   AssertionError: {name} expected 3, got 4", file=sys.stderr, flush=True)
    passed = len(RESULTS) - failed
    print(f"{RED}{failed} failed{RESET}, {GREEN}{passed} passed{RESET}", flush=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
