"""Serve the app with hypercorn's trio worker, inside the caller's ``trio.run``.

``serve_http`` binds the socket itself (so a taken default port can fall back to a free one and
the real port is known), then runs hypercorn until ``stop`` is set. Callers start it with
``await nursery.start(serve_http, ...)``, which returns the bound ``(host, port)``.

The ``Guard`` ASGI middleware sits in front of routing: it checks the ``Host`` (DNS rebinding)
and the token (docs/security.md), so a 401 reveals nothing about which jobs exist, adds the
security headers to every answer, and it shields the final body send of every
response (hypercorn 0.18 with quart-trio sends it from a cancelled scope otherwise, and the
connection's keep-alive timer is never re-armed: idle keep-alive connections would stay open and
every shutdown would wait for the whole graceful timeout).
"""

from __future__ import annotations

import errno
import hashlib
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
from logstream.hosts import HostPolicy
from logstream.transport import WriteDeadline, tune_listener

OPEN_PATHS = frozenset({"/healthz"})
INGEST_PREFIX = "/api/ingest/"
CHALLENGE = [(b"www-authenticate", b'Bearer realm="logstream"')]
CSP = (
    b"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    b"connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
SECURITY_HEADERS = (
    (b"content-security-policy", CSP),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
)


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
    guard = Guard(app, settings.token, settings.host_policy(), settings.ingest_token)
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
    """ASGI middleware in front of routing: Host, token, security headers, a shielded final send.

    Without a token only requests addressed to an allowed ``Host`` are served (DNS rebinding,
    ``hosts.HostPolicy``). With one, every path but ``OPEN_PATHS`` needs it; the ``?token=``
    form sets a cookie whose name is this server's own and whose value is derived from the
    token, never the token itself (cookies are not scoped to a port: every other service on
    the host receives them). WebSocket requests are refused: no route speaks WebSocket, and
    none may be probed. Every answer, errors included, carries the security headers.

    Runners (``/api/ingest/``) authenticate with the ingest token, else the viewer token, and
    only with an ``Authorization`` header (never the viewer's cookie: a page must not upload
    through a viewer's session). The token accepted goes to the ingest routes in
    ``scope["logstream.runner"]``. The ingest token opens nothing else.
    """

    def __init__(
        self,
        app: ASGIApp,
        token: str | None,
        hosts: HostPolicy | None = None,
        ingest_token: str | None = None,
    ) -> None:
        self.app = app
        self.token = token.encode() if token else None
        self.ingest_token = ingest_token.encode() if ingest_token else None
        self.hosts = hosts or HostPolicy(check_host=token is None)
        self.cookie_name, self.session = session_cookie(self.token) if self.token else (b"", b"")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await self.app(scope, receive, send)
            return
        if kind != "http":
            # Answered before the Host or token check, and the same for every path.
            await _refuse_websocket(send, kind)
            return
        send = _guarded_send(send)
        if scope["path"] in OPEN_PATHS:
            # A health check names no job and shows no line: any Host, no token (a load
            # balancer probes an address of its own).
            await self.app(scope, receive, send)
            return
        raw_host = _header(scope, b"host")
        host = raw_host.decode("latin-1") if raw_host is not None else None
        if not self.hosts.host_allowed(host):
            shown = (host or "")[:100]
            message = (
                f"Host {shown!r} is not served: without a token only loopback names "
                "(localhost, 127.0.0.1, [::1]) and names given with --allow-host are "
                "(DNS rebinding defence)"
            )
            await send_json(send, 403, {"error": message})
            return
        if scope["path"].startswith(INGEST_PREFIX):
            await self._ingest(scope, receive, send)
            return
        if self.token is None:
            await self.app(scope, receive, send)
            return
        supplied, from_query = self._supplied_token(scope)
        if not supplied:
            await send_json(send, 401, {"error": "authentication required"}, CHALLENGE)
            return
        if from_query:
            send = _set_cookie(
                send, self.cookie_name, self.session, secure=scope.get("scheme") == "https"
            )
        await self.app(scope, receive, send)

    def _supplied_token(self, scope: Scope) -> tuple[bool, bool]:
        """Whether the request carries the token (Bearer, ``?token=``, our cookie), and
        whether it came as ``?token=``. Compared in constant time."""
        assert self.token is not None
        cookie_header = b""
        for name, value in scope["headers"]:
            if name == b"authorization" and value[:7].lower() == b"bearer ":
                return hmac.compare_digest(value[7:].strip(), self.token), False
            if name == b"cookie":
                cookie_header = value
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        if "token" in query:
            return hmac.compare_digest(query["token"][0].encode("latin-1"), self.token), True
        if cookie_header:
            cookies = SimpleCookie()
            try:
                cookies.load(cookie_header.decode("latin-1"))
            except Exception:
                return False, False
            cookie = cookies.get(self.cookie_name.decode())
            if cookie is not None:
                return hmac.compare_digest(cookie.value.encode("latin-1"), self.session), False
        return False, False

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


def session_cookie(token: bytes) -> tuple[bytes, bytes]:
    """The cookie name of the server holding ``token``, and the value that proves it.

    Both are HMACs of the token: the name differs between servers with different tokens on
    one host (so they do not overwrite each other's), and neither reveals the token.
    """
    name = hmac.new(token, b"logstream cookie name", hashlib.sha256).hexdigest()[:16]
    value = hmac.new(token, b"logstream session", hashlib.sha256).hexdigest()
    return b"logstream_" + name.encode(), value.encode()


def _header(scope: Scope, wanted: bytes) -> bytes | None:
    for name, value in scope["headers"]:
        if name == wanted:
            return bytes(value)
    return None


def _set_cookie(send: Send, name: bytes, value: bytes, *, secure: bool) -> Send:
    cookie = name + b"=" + value + b"; HttpOnly; SameSite=Strict; Path=/"
    if secure:
        cookie += b"; Secure"

    async def send_with_cookie(message: Message) -> None:
        if message["type"] == "http.response.start":
            message["headers"] = [*message.get("headers", []), (b"set-cookie", cookie)]
        await send(message)

    return send_with_cookie


def _guarded_send(send: Send) -> Send:
    """``send`` that adds the security headers a response does not set itself (the
    framework's errors too) and shields the final body send (see the module's docstring).

    One wrapper, and a body that is not the last goes straight through: every write of an
    event stream passes here.
    """

    async def guarded(message: Message) -> None:
        if message["type"] == "http.response.body":
            if message.get("more_body", False):
                await send(message)
                return
            with trio.CancelScope(shield=True):
                await send(message)
            return
        if message["type"] == "http.response.start":
            headers = list(message.get("headers", []))
            present = {name.lower() for name, _ in headers}
            headers += [(n, v) for n, v in SECURITY_HEADERS if n not in present]
            message["headers"] = headers
        await send(message)

    return guarded


async def _refuse_websocket(send: Send, kind: str) -> None:
    """Refuse a WebSocket handshake (or any other non-HTTP request) with a 403."""
    body = b'{"error": "WebSocket is not served here"}'
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *SECURITY_HEADERS,
    ]
    prefix = "websocket.http.response" if kind == "websocket" else "http.response"
    await send({"type": f"{prefix}.start", "status": 403, "headers": headers})
    await send({"type": f"{prefix}.body", "body": body, "more_body": False})
