"""CORS for one configured origin (``--cors-origin``), as ASGI middleware in front of the token.

Off by default: without ``--cors-origin`` no response carries ``Access-Control-Allow-*``, so a
page on another origin cannot read anything. With it, requests whose ``Origin`` is exactly that
origin get ``Access-Control-Allow-Origin`` on every answer, 401s included (so the page can tell
"wrong token" from "network error"), and preflight ``OPTIONS`` requests are answered here, before
the token check: browsers never send credentials with a preflight, and the answer names no job.
No ``Access-Control-Allow-Credentials``: the token cookie is ``SameSite=Strict`` and never goes
cross-site anyway; a page on the allowed origin sends ``Authorization: Bearer``.
"""

from __future__ import annotations

from logstream.asgi import ASGIApp, Message, Receive, Scope, Send

ALLOW_METHODS = b"GET, POST"
ALLOW_HEADERS = b"Authorization, Last-Event-ID, Content-Type"
MAX_AGE_S = b"600"


class Cors:
    """Allow exactly ``origin`` (``None``: CORS off, the app is called as is)."""

    def __init__(self, app: ASGIApp, origin: str | None) -> None:
        self.app = app
        self.origin = origin.encode() if origin else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.origin is None or scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        allowed = headers.get(b"origin") == self.origin
        if allowed and scope["method"] == "OPTIONS" and b"access-control-request-method" in headers:
            await self._preflight(send)
            return

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                added = []
                if allowed and b"access-control-allow-origin" not in present:
                    added.append((b"access-control-allow-origin", self.origin))
                if b"vary" not in present:
                    added.append((b"vary", b"Origin"))
                message["headers"] = [*message.get("headers", []), *added]
            await send(message)

        await self.app(scope, receive, send_with_cors)

    async def _preflight(self, send: Send) -> None:
        assert self.origin is not None
        headers = [
            (b"access-control-allow-origin", self.origin),
            (b"access-control-allow-methods", ALLOW_METHODS),
            (b"access-control-allow-headers", ALLOW_HEADERS),
            (b"access-control-max-age", MAX_AGE_S),
            (b"vary", b"Origin"),
            (b"content-length", b"0"),
        ]
        await send({"type": "http.response.start", "status": 204, "headers": headers})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
