"""Serve the app with hypercorn's trio worker, inside the caller's ``trio.run``.

``serve_http`` binds the socket itself (so a taken default port can fall back to a free one and
the real port is known), then runs hypercorn until ``stop`` is set. Callers start it with
``await nursery.start(serve_http, ...)``, which returns the bound ``(host, port)``.

The ``Guard`` ASGI middleware sits in front of routing: it checks the token (docs/security.md),
so a 401 reveals nothing about which jobs exist, and it shields the final body send of every
response (hypercorn 0.18 with quart-trio sends it from a cancelled scope otherwise, and the
connection's keep-alive timer is never re-armed: idle keep-alive connections would stay open and
every shutdown would wait for the whole graceful timeout).
"""

from __future__ import annotations

import errno
import hmac
import socket
from http.cookies import SimpleCookie
from urllib.parse import parse_qs

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve

from logstream.asgi import ASGIApp, Message, Receive, Scope, Send, send_json
from logstream.config import DEFAULT_PORT, Settings
from logstream.cors import Cors
from logstream.transport import WriteDeadline, tune_listener

TOKEN_COOKIE = "logstream_token"
OPEN_PATHS = frozenset({"/healthz"})
INGEST_PREFIX = "/api/ingest/"
CHALLENGE = [(b"www-authenticate", b'Bearer realm="logstream"')]


class PortInUse(OSError):
    """The port given explicitly is taken."""


def bind_socket(host: str, port: int | None, *, reuse_port: bool = False) -> socket.socket:
    """A bound TCP socket; ``port=None``: the default port, or a free one when it is taken.

    ``reuse_port``: share the port with other processes that bind it the same way
    (``SO_REUSEPORT``; ``serve --workers``), the kernel spreading connections over them.
    """
    infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, _type, _proto, _name, address = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((address[0], DEFAULT_PORT if port is None else port, *address[2:]))
    except OSError as error:
        if error.errno != errno.EADDRINUSE:
            sock.close()
            raise
        if port is not None:
            sock.close()
            raise PortInUse(error.errno, f"port {port} on {host} is in use") from None
        sock.bind((address[0], 0, *address[2:]))
    return sock


def format_url(scheme: str, host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"{scheme}://{shown}:{port}"


async def serve_http(
    app: ASGIApp,
    settings: Settings,
    stop: trio.Event,
    sock: socket.socket | None = None,
    *,
    task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` until ``stop`` is set; report the bound ``(host, port)`` when listening.

    ``sock``: a socket from ``bind_socket``, for callers that must know the port is theirs
    before they do anything else; by default one is bound here.
    """
    if sock is None:
        sock = bind_socket(settings.host, settings.port)
    host, port = sock.getsockname()[:2]
    tune_listener(sock, settings.write_timeout_s)
    config = HypercornConfig()
    config.bind = [f"fd://{sock.detach()}"]
    config.errorlog = None
    config.accesslog = None
    config.keep_alive_timeout = settings.keep_alive_timeout_s
    config.graceful_timeout = settings.graceful_timeout_s
    config.h11_max_incomplete_size = 16 * 1024
    config.backlog = 1024
    if settings.certfile:
        config.certfile = str(settings.certfile)
        config.keyfile = str(settings.keyfile) if settings.keyfile else None
    # Outermost: the deadline measures hypercorn's own writes; CORS answers before the token.
    guard = Guard(app, settings.token, settings.ingest_token)
    guarded = WriteDeadline(Cors(guard, settings.cors_origin), settings.write_timeout_s, stop)

    async def started(
        *, task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED
    ) -> None:
        await serve(guarded, config, shutdown_trigger=stop.wait, task_status=task_status)  # type: ignore[arg-type]
        nursery.cancel_scope.cancel()  # every connection is closed: stop the watchdog

    async with trio.open_nursery() as nursery:
        await nursery.start(guarded.run_watchdog)
        await nursery.start(started)
        task_status.started((host, port))


class Guard:
    """ASGI middleware in front of routing: token check and a shielded final send.

    Runners (``/api/ingest/``) authenticate with the ingest token, else the viewer token, and
    only with an ``Authorization`` header (never the viewer's cookie: a page must not upload
    through a viewer's session). The token accepted goes to the ingest routes in
    ``scope["logstream.runner"]``. The ingest token opens nothing else.
    """

    def __init__(self, app: ASGIApp, token: str | None, ingest_token: str | None = None) -> None:
        self.app = app
        self.token = token.encode() if token else None
        self.ingest_token = ingest_token.encode() if ingest_token else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        send = _shield_final_send(send)
        if scope["path"].startswith(INGEST_PREFIX):
            await self._ingest(scope, receive, send)
            return
        if self.token is None or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        supplied, from_query = _supplied_token(scope)
        if supplied is None or not hmac.compare_digest(supplied, self.token):
            await send_json(send, 401, {"error": "authentication required"}, CHALLENGE)
            return
        if from_query:
            send = _set_cookie(send, self.token, secure=scope.get("scheme") == "https")
        await self.app(scope, receive, send)

    async def _ingest(self, scope: Scope, receive: Receive, send: Send) -> None:
        expected = self.ingest_token or self.token
        if expected is not None:
            supplied = _bearer_token(scope)
            if supplied is None or not hmac.compare_digest(supplied, expected):
                await send_json(send, 401, {"error": "a runner token is required"}, CHALLENGE)
                return
        scope["logstream.runner"] = expected
        await self.app(scope, receive, send)


def _bearer_token(scope: Scope) -> bytes | None:
    for name, value in scope["headers"]:
        if name == b"authorization" and value[:7].lower() == b"bearer ":
            return bytes(value[7:].strip())
    return None


def _supplied_token(scope: Scope) -> tuple[bytes | None, bool]:
    """The token the request carries: Bearer header, then ``?token=``, then the cookie."""
    cookie_header = b""
    for name, value in scope["headers"]:
        if name == b"authorization" and value[:7].lower() == b"bearer ":
            return value[7:].strip(), False
        if name == b"cookie":
            cookie_header = value
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    if "token" in query:
        return query["token"][0].encode("latin-1"), True
    if cookie_header:
        cookies = SimpleCookie()
        try:
            cookies.load(cookie_header.decode("latin-1"))
        except Exception:
            return None, False
        if TOKEN_COOKIE in cookies:
            return cookies[TOKEN_COOKIE].value.encode("latin-1"), False
    return None, False


def _set_cookie(send: Send, token: bytes, *, secure: bool) -> Send:
    cookie = TOKEN_COOKIE.encode() + b"=" + token + b"; HttpOnly; SameSite=Strict; Path=/"
    if secure:
        cookie += b"; Secure"

    async def send_with_cookie(message: Message) -> None:
        if message["type"] == "http.response.start":
            message["headers"] = [*message.get("headers", []), (b"set-cookie", cookie)]
        await send(message)

    return send_with_cookie


def _shield_final_send(send: Send) -> Send:
    async def shielded(message: Message) -> None:
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            with trio.CancelScope(shield=True):
                await send(message)
        else:
            await send(message)

    return shielded
