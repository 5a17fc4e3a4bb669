"""Counters for ``GET /metrics``, in the Prometheus text format."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


class LiveJob(Protocol):
    """What the metrics read of a job this process writes."""

    @property
    def last(self) -> int: ...

    @property
    def ended(self) -> bool: ...

    @property
    def ring_lines(self) -> int: ...


@dataclass
class Metrics:
    streams_total: int = 0
    streams_refused: int = 0
    bytes_sent: int = 0

    def render(self, live: Sequence[LiveJob], streams_open: int = 0) -> str:
        """The Prometheus text: these counters, ``streams_open``, and the jobs in ``live``."""
        lines_in = sum(log.last for log in live)
        ring_lines = sum(log.ring_lines for log in live)
        rows = [
            ("logstream_streams_open", "gauge", "Event streams open now.", streams_open),
            ("logstream_streams_total", "counter", "Event streams opened.", self.streams_total),
            (
                "logstream_streams_refused_total",
                "counter",
                "Streams refused over --max-streams.",
                self.streams_refused,
            ),
            ("logstream_sent_bytes_total", "counter", "Bytes of events sent.", self.bytes_sent),
            (
                "logstream_jobs_running",
                "gauge",
                "Jobs this process runs now.",
                sum(not log.ended for log in live),
            ),
            ("logstream_lines_total", "counter", "Lines read from this process's jobs.", lines_in),
            ("logstream_ring_lines", "gauge", "Lines held in ring buffers.", ring_lines),
        ]
        out = []
        for name, kind, help_text, value in rows:
            out.append(f"# HELP {name} {help_text}\n# TYPE {name} {kind}\n{name} {value}\n")
        return "".join(out)
