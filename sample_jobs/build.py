"""A coloured multi-step build: steps in groups, warnings on stderr, a \\r progress bar."""

from __future__ import annotations

import os
import sys
import time

FAST = os.environ.get("SAMPLE_FAST") == "1"

BOLD, GREEN, YELLOW, CYAN, RESET = "\x1b[1m", "\x1b[32m", "\x1b[33m", "\x1b[36m", "\x1b[0m"


def pause(seconds: float) -> None:
    if not FAST:
        time.sleep(seconds)


def step(name: str, files: list[str]) -> None:
    print(f"::group::{name}", flush=True)
    for path in files:
        print(f"  {CYAN}CC{RESET}  {path}", flush=True)
        pause(0.1)
        if path.endswith("util.c"):
            print(
                f"{YELLOW}warning:{RESET} {path}:42:7: unused variable 'tmp'",
                file=sys.stderr,
                flush=True,
            )
    print("::endgroup::", flush=True)


def progress(label: str) -> None:
    width = 30
    for done in range(0, 101, 10):
        filled = width * done // 100
        bar = "#" * filled + "." * (width - filled)
        sys.stdout.write(f"\r{label} [{bar}] {done:3d}%")
        sys.stdout.flush()
        pause(0.05)
    sys.stdout.write("\n")


def main() -> None:
    print(f"{BOLD}building sample project{RESET}", flush=True)
    step("Compile", ["src/main.c", "src/util.c", "src/parse.c", "src/net.c"])
    step("Link", ["build/app"])
    progress("packaging")
    print(f"{GREEN}{BOLD}build succeeded{RESET}", flush=True)


if __name__ == "__main__":
    main()
