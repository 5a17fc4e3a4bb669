"""Print N short lines as fast as possible: `python3 firehose.py 1000000`.

With `--stamp` each line carries the time it was printed (``time.time_ns()``) so a benchmark
client can measure print-to-receive latency: ``<n> <ns> <padding>``. With `--flush line` every
line is written and flushed on its own, as a line-buffered tool (or anything under a pty) does:
one write per line, each stamped just before its own write. The default (`--flush batch`)
writes a batch per 10 ms tick when paced and 10,000 lines per write when not.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import BinaryIO


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("lines", type=int, help="how many lines to print")
    parser.add_argument("--rate", type=float, default=0, help="lines per second (0: unlimited)")
    parser.add_argument("--stamp", action="store_true", help="put the print time in each line")
    parser.add_argument(
        "--flush", choices=("batch", "line"), default="batch", help="write a batch or each line"
    )
    args = parser.parse_args()
    out = sys.stdout.buffer
    total: int = args.lines
    if args.flush == "line":
        _line_by_line(out, total, args.rate)
        return
    if not args.rate and not args.stamp:
        batch = 10_000
        for start in range(1, total + 1, batch):
            stop = min(start + batch, total + 1)
            out.write(b"".join(b"line %d of the firehose\n" % n for n in range(start, stop)))
        out.flush()
        return
    # Paced: a batch every tick, so the rate holds without a sleep per line.
    tick_s = 0.01
    per_tick = max(1, round(args.rate * tick_s)) if args.rate else 1000
    started = time.monotonic()
    n = 1
    while n <= total:
        stop = min(n + per_tick, total + 1)
        now = time.time_ns()
        out.write(b"".join(b"%d %d firehose\n" % (i, now) for i in range(n, stop)))
        out.flush()
        n = stop
        if args.rate:
            due = started + (n - 1) / args.rate
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)


def _line_by_line(out: BinaryIO, total: int, rate: float) -> None:
    """One write per line, stamped just before it; paced to ``rate`` by the clock (a line
    that is due is written at once, so a late wake-up catches up without drifting)."""
    fd = out.fileno()
    started = time.monotonic()
    for n in range(1, total + 1):
        if rate:
            delay = started + (n - 1) / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        os.write(fd, b"%d %d firehose\n" % (n, time.time_ns()))


if __name__ == "__main__":
    main()
