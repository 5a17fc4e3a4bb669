"""What the benchmarks read about processes from ``/proc`` (Linux only): CPU time, RSS, load.

Reading ``/proc`` directly keeps the load client and the harness free of dependencies and
cheap to sample. CPU figures are user + system seconds of the process itself (its threads
included, its children excluded).
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` itself (0.0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as file:
            stat = file.read()
    except OSError:
        return 0.0
    fields = stat[stat.rfind(b")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def children_cpu_seconds(pid: int) -> float:
    """CPU seconds of the children ``pid`` has waited for."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as file:
            stat = file.read()
    except OSError:
        return 0.0
    fields = stat[stat.rfind(b")") + 2 :].split()
    return (int(fields[13]) + int(fields[14])) / CLOCK_TICKS


def rss_bytes(pid: int) -> int:
    """Resident set size of ``pid`` (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/statm", "rb") as file:
            return int(file.read().split()[1]) * PAGE_BYTES
    except (OSError, IndexError):
        return 0


def load_average() -> tuple[float, float, float]:
    return os.getloadavg()


def wait_exited(pid: int) -> None:
    """Wait until ``pid`` exits but leave it unreaped, so its final CPU times stay readable."""
    os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)


@dataclass
class RssSampler:
    """Samples a process's RSS every ``interval_s`` in a thread: ``(monotonic_s, bytes)``."""

    pid: int
    interval_s: float = 0.05
    samples: list[tuple[float, int]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> RssSampler:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    @property
    def peak(self) -> int:
        return max((rss for _t, rss in self.samples), default=0)

    def _run(self) -> None:
        while not self._stop.is_set():
            rss = rss_bytes(self.pid)
            if rss:
                self.samples.append((time.monotonic(), rss))
            self._stop.wait(self.interval_s)
