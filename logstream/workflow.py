"""GitHub Actions workflow commands in a log line (pure: no I/O, no async).

A workflow command is a line ``::name key=value,key=value::message`` (leading blanks allowed, as
GitHub allows them). Property values escape ``%`` ``\\r`` ``\\n`` ``:`` ``,`` as ``%25`` ``%0D``
``%0A`` ``%3A`` ``%2C``; the message escapes the first three. docs/problems.md lists the
commands logstream acts on: ``error``/``warning``/``notice`` (problems), ``add-matcher``,
``remove-matcher``, ``add-mask``, ``group``/``endgroup``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_COMMAND = re.compile(r"[ \t]*::([A-Za-z][A-Za-z0-9_-]*)(?:[ \t]+([^\n]*?))?::(.*)", re.DOTALL)
_MESSAGE_ESCAPES = (("%0D", "\r"), ("%0A", "\n"), ("%25", "%"))
_PROPERTY_ESCAPES = (("%0D", "\r"), ("%0A", "\n"), ("%3A", ":"), ("%2C", ","), ("%25", "%"))


@dataclass(frozen=True, slots=True)
class Command:
    """One parsed workflow command: its name, properties and (unescaped) message."""

    name: str
    properties: dict[str, str] = field(default_factory=dict)
    message: str = ""


def _unescape(text: str, escapes: tuple[tuple[str, str], ...]) -> str:
    if "%" not in text:
        return text
    for escaped, plain in escapes:
        text = text.replace(escaped, plain)
    return text


def parse_command(line: str) -> Command | None:
    """The workflow command ``line`` holds, or None when it holds none."""
    match = _COMMAND.match(line)
    if match is None:
        return None
    name, raw_properties, message = match.groups()
    properties: dict[str, str] = {}
    if raw_properties:
        for item in raw_properties.split(","):
            key, sep, value = item.partition("=")
            if sep and key.strip():
                properties[key.strip()] = _unescape(value, _PROPERTY_ESCAPES)
    return Command(name.lower(), properties, _unescape(message, _MESSAGE_ESCAPES))


def add_mask_value(line: str) -> str | None:
    """The value an ``::add-mask::VALUE`` line asks to mask, or None for any other line."""
    if "::add-mask::" not in line:
        return None
    command = parse_command(line)
    if command is None or command.name != "add-mask":
        return None
    value = command.message.strip()
    return value or None
