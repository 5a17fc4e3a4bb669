"""A real nginx of the test's own: config, pid, logs and temp files in a temp dir.

Tests take an ```nginx block from the docs as it is (``documented_block``), swap what only a
real deployment has (addresses, TLS) and run it with Debian's nginx, never the system's service.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

ROOT = Path(__file__).resolve().parents[1]
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
START_DEADLINE_S = 60

needs_nginx = pytest.mark.skipif(
    not os.path.exists(NGINX), reason="nginx is not installed (scripts/test.sh installs it)"
)


def documented_block(doc: str) -> str:
    """The one ```nginx block of ``docs/<doc>``."""
    blocks = re.findall(r"```nginx\n(.*?)```", (ROOT / "docs" / doc).read_text(), re.DOTALL)
    assert len(blocks) == 1, f"docs/{doc} has one nginx configuration"
    return str(blocks[0])


def replace_all(block: str, replacements: dict[str, str]) -> str:
    for old, new in replacements.items():
        assert old in block, old
        block = block.replace(old, new)
    return block


def without_tls(block: str, listen_port: int) -> str:
    """The block listening on loopback in plain HTTP instead of TLS."""
    block = replace_all(block, {"listen 443 ssl http2;": f"listen 127.0.0.1:{listen_port};"})
    return "\n".join(line for line in block.splitlines() if "ssl_certificate" not in line)


def main_config(tmp: Path, http_block: str) -> str:
    temp_paths = "\n".join(
        f"    {kind}_temp_path {tmp}/{kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    # As root (CI) nginx's workers would switch to "nobody", who cannot enter the temp dir.
    user = "user root root;\n" if os.geteuid() == 0 else ""
    return (
        f"{user}worker_processes 1;\n"
        f"pid {tmp}/nginx.pid;\n"
        f"error_log {tmp}/error.log warn;\n"
        "events { worker_connections 256; }\n"
        "http {\n"
        "    access_log off;\n"
        f"{temp_paths}\n"
        f"{http_block}\n"
        "}\n"
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def wait_listening(port: int, nginx: trio.Process, log: Path) -> None:
    with trio.fail_after(START_DEADLINE_S):
        while True:
            if nginx.returncode is not None:
                raise AssertionError(f"nginx exited: {log.read_text()}")  # noqa: ASYNC240
            try:
                stream = await trio.open_tcp_stream("127.0.0.1", port)
            except OSError:
                await trio.sleep(0.05)  # nginx tells nobody when it listens: try again
                continue
            await stream.aclose()
            return


@asynccontextmanager
async def running_nginx(conf_dir: Path, http_block: str, listen_port: int) -> AsyncIterator[str]:
    """nginx serving ``http_block`` (which listens on ``listen_port``); its base URL."""
    conf_dir.mkdir()  # noqa: ASYNC240 (a test's temp dir: instant)
    conf = conf_dir / "nginx.conf"
    conf.write_text(main_config(conf_dir, http_block))
    nginx = await trio.lowlevel.open_process(
        [NGINX, "-p", str(conf_dir), "-c", str(conf), "-g", "daemon off;"],
        stdin=subprocess.DEVNULL,
    )
    try:
        await wait_listening(listen_port, nginx, conf_dir / "error.log")
        yield f"http://127.0.0.1:{listen_port}"
    finally:
        nginx.send_signal(signal.SIGQUIT)
        with trio.move_on_after(10):
            await nginx.wait()
        if nginx.returncode is None:
            nginx.kill()
            await nginx.wait()
