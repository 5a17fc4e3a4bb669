"""A slow job: one line a second (`python3 drip.py [SECONDS]`, default 30)."""

from __future__ import annotations

import sys
import time


def main() -> None:
    seconds = int(sys.argv[1]) if len(sys.argv) > 1 else 30
    for n in range(1, seconds + 1):
        print(f"drip {n}/{seconds}", flush=True)
        if n < seconds:
            time.sleep(1)


if __name__ == "__main__":
    main()
