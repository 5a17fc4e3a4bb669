"""The /metrics text from counters and the live jobs, without a server."""

from __future__ import annotations

from dataclasses import dataclass

from logstream.metrics import Metrics


@dataclass
class FakeLive:
    last: int
    ended: bool
    ring_lines: int


def value(text: str, name: str) -> int:
    return next(int(line.split()[1]) for line in text.splitlines() if line.startswith(name + " "))


def test_metrics_count_lines_rings_and_running_jobs_of_this_process() -> None:
    metrics = Metrics(streams_total=7, streams_refused=2, bytes_sent=1234)
    live = [FakeLive(100, False, 60), FakeLive(50, True, 50)]
    text = metrics.render(live, streams_open=3)
    assert value(text, "logstream_streams_open") == 3
    assert value(text, "logstream_streams_total") == 7
    assert value(text, "logstream_streams_refused_total") == 2
    assert value(text, "logstream_sent_bytes_total") == 1234
    assert value(text, "logstream_jobs_running") == 1
    assert value(text, "logstream_lines_total") == 150
    assert value(text, "logstream_ring_lines") == 110
    assert "# TYPE logstream_lines_total counter" in text


def test_every_metric_has_help_and_type() -> None:
    text = Metrics().render([])
    names = [line.split()[0] for line in text.splitlines() if not line.startswith("#")]
    for name in names:
        assert f"# HELP {name} " in text and f"# TYPE {name} " in text
