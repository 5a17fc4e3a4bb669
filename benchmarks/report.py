"""Markdown tables from a ``--json`` file of the suite: ``python -m benchmarks.report FILE``."""

from __future__ import annotations

import json
import sys
from typing import Any

FANOUT_COLUMNS = (
    ("events_per_s", "events/s"),
    ("p50_ms", "p50 ms"),
    ("p99_ms", "p99 ms"),
    ("max_ms", "max ms"),
    ("server_cpu_pct", "server CPU %"),
    ("lines_per_write", "lines/write"),
    ("server_us_per_write", "server µs/write"),
    ("server_rss_mb", "server RSS MB"),
    ("client_cpu_pct", "client CPU %"),
    ("load", "load"),
)


def number(value: float) -> str:
    if value != value:
        return "nan"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def cell(figure: dict[str, float]) -> str:
    """Median (min to max)."""
    if figure["min"] == figure["max"]:
        return number(figure["median"])
    return f"{number(figure['median'])} ({number(figure['min'])}\u2013{number(figure['max'])})"


def render(rows: dict[str, dict[str, Any]]) -> str:
    out = ["| scenario | " + " | ".join(t for _k, t in FANOUT_COLUMNS) + " |"]
    out.append("|---" * (len(FANOUT_COLUMNS) + 1) + "|")
    for name, figures in rows.items():
        if name.startswith("fanout "):
            shown = name.removeprefix("fanout ")
            out.append(
                f"| {shown} | " + " | ".join(cell(figures[k]) for k, _t in FANOUT_COLUMNS) + " |"
            )
    out.append("")
    for name, figures in rows.items():
        if not name.startswith("fanout "):
            shown = ", ".join(f"{key} {cell(value)}" for key, value in figures.items())
            out.append(f"- **{name}**: {shown}")
    return "\n".join(out) + "\n"


def main() -> None:
    with open(sys.argv[1]) as file:
        print(render(json.load(file)), end="")


if __name__ == "__main__":
    main()
