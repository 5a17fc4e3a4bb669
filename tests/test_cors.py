"""The CORS middleware on its own: exactly one origin, preflights answered before the token."""

from __future__ import annotations

from logstream.asgi import Message, Receive, Scope, Send
from logstream.cors import Cors


async def call(app: Cors, method: str, headers: dict[bytes, bytes]) -> list[Message]:
    sent: list[Message] = []
    scope: Scope = {
        "type": "http",
        "method": method,
        "path": "/api/jobs",
        "headers": [*headers.items()],
    }

    async def receive() -> Message:
        return {"type": "http.request", "body": b""}

    async def send(message: Message) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent


def headers_of(sent: list[Message]) -> dict[bytes, bytes]:
    return dict(sent[0]["headers"])


async def inner(scope: Scope, receive: Receive, send: Send) -> None:
    """The app behind: refuses, as the token check would."""
    await send({"type": "http.response.start", "status": 401, "headers": []})
    await send({"type": "http.response.body", "body": b"{}"})


async def test_the_allowed_origin_gets_allow_origin_even_on_a_401() -> None:
    sent = await call(Cors(inner, "https://ci.example"), "GET", {b"origin": b"https://ci.example"})
    assert sent[0]["status"] == 401
    assert headers_of(sent)[b"access-control-allow-origin"] == b"https://ci.example"
    assert headers_of(sent)[b"vary"] == b"Origin"


async def test_another_origin_gets_no_allow_origin() -> None:
    sent = await call(
        Cors(inner, "https://ci.example"), "GET", {b"origin": b"https://evil.example"}
    )
    assert b"access-control-allow-origin" not in headers_of(sent)


async def test_a_preflight_of_the_allowed_origin_is_answered_without_the_app() -> None:
    request = {b"origin": b"https://ci.example", b"access-control-request-method": b"POST"}
    sent = await call(Cors(inner, "https://ci.example"), "OPTIONS", request)
    assert sent[0]["status"] == 204
    assert headers_of(sent)[b"access-control-allow-methods"] == b"GET, POST"
    assert b"authorization" in headers_of(sent)[b"access-control-allow-headers"].lower()


async def test_without_an_origin_configured_nothing_is_added() -> None:
    sent = await call(Cors(inner, None), "GET", {b"origin": b"https://ci.example"})
    assert headers_of(sent) == {}
