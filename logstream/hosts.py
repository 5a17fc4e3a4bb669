"""Which ``Host`` and ``Origin`` a server answers (pure: no I/O, no async).

DNS rebinding: a web page on ``evil.example`` can make its own name resolve to 127.0.0.1, and
the browser then lets it read whatever a loopback server answers, because to the browser it is
the same origin. The server sees it only in the ``Host`` header (``evil.example:8765``). So a
server without a token answers only requests addressed to a loopback name or address
(``localhost``, ``127.0.0.0/8``, ``[::1]``, any port), to the address it was told to bind, or to
a name the operator allowed (``--allow-host``). An address literal can never be rebound, but
names other than these can.

``Origin`` (a browser's claim of which page sent a request) is checked against the same fixed
set, plus the one ``--cors-origin``: never against the request's own ``Host``, which under
rebinding is the attacker's name.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

WILDCARDS = frozenset({"", "0.0.0.0", "::"})


def host_name(authority: str) -> str | None:
    """The host of a ``Host`` header or URL authority, lower-cased, without port or brackets.

    ``None`` when it is malformed (a port that is not a number, an unclosed bracket, ...).
    """
    authority = authority.strip().lower()
    if "@" in authority or "/" in authority or not authority:
        return None
    if authority.startswith("["):
        end = authority.find("]")
        if end < 0:
            return None
        name, rest = authority[1:end], authority[end + 1 :]
        if rest and not (rest.startswith(":") and rest[1:].isdigit()):
            return None
        return name or None
    name, colon, port = authority.partition(":")
    if colon and not port.isdigit():
        return None
    # A fully qualified name may end with a dot (``localhost.``): the same host.
    return name.removesuffix(".") or None


def is_loopback_name(name: str) -> bool:
    """``localhost`` or an address in 127.0.0.0/8 or ::1."""
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class HostPolicy:
    """The ``Host`` names a server answers and the ``Origin`` values it trusts."""

    #: Names and addresses allowed besides loopback (lower-cased, no port, no brackets).
    allowed: frozenset[str] = frozenset()
    #: Whether ``Host`` is checked at all (not with a token: the token is the defence then).
    check_host: bool = True
    #: The ``--cors-origin`` origin, trusted like our own.
    cors_origin: str | None = None

    @classmethod
    def build(
        cls,
        *,
        bind_host: str,
        allow_hosts: Iterable[str] = (),
        token: bool = False,
        cors_origin: str | None = None,
    ) -> HostPolicy:
        names = {host_name(name) or name.lower() for name in allow_hosts}
        bound = bind_host.strip("[]").lower()
        if bound not in WILDCARDS:
            names.add(bound)  # the operator chose this address for us
        origin = cors_origin.rstrip("/").lower() if cors_origin else None
        return cls(frozenset(names), check_host=not token, cors_origin=origin)

    def name_allowed(self, name: str) -> bool:
        return is_loopback_name(name) or name in self.allowed

    def host_allowed(self, host_header: str | None) -> bool:
        """Whether a request with this ``Host`` header is served."""
        if not self.check_host:
            return True
        if host_header is None:
            return False  # HTTP/1.1 requires it; h2 carries it as ``:authority``
        name = host_name(host_header)
        return name is not None and self.name_allowed(name)

    def origin_allowed(self, origin: str) -> bool:
        """Whether a request from a page on ``origin`` may change state here."""
        origin = origin.strip().rstrip("/").lower()
        if self.cors_origin is not None and origin == self.cors_origin:
            return True
        scheme, sep, authority = origin.partition("://")
        if not sep or scheme not in ("http", "https"):
            return False  # "null" (a sandboxed frame, a file) and anything odd
        name = host_name(authority)
        return name is not None and self.name_allowed(name)
