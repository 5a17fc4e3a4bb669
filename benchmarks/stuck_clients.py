"""Memory with many stuck clients: N connections that request a job's stream and never read.

    python -m benchmarks.stuck_clients [CLIENTS] [LINES]

Runs `logstream run` on a firehose job (LINES lines at 200,000 lines/s), opens CLIENTS raw
sockets with a small receive buffer that send the request and then read nothing, lets the job
run to its end, and prints the server's peak RSS (VmHWM) and how long the job took. The job must
not slow down and memory must stay bounded whatever the clients do.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def peak_rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"VmHWM:\s+(\d+) kB", status)
    return int(match[1]) / 1024 if match else float("nan")


def main() -> None:
    clients = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    lines = int(sys.argv[2]) if len(sys.argv) > 2 else 1_000_000
    data_dir = Path(os.environ.get("TMPDIR", "/tmp")) / f"stuck-bench-{os.getpid()}"
    command = [
        sys.executable,
        "-m",
        "logstream",
        "run",
        "--quiet",
        "--port",
        "0",
        "--linger",
        "0",
        "--data-dir",
        str(data_dir),
        "--write-timeout",
        "600",
        "--",
        sys.executable,
        str(ROOT / "sample_jobs" / "firehose.py"),
        str(lines),
        "--rate",
        "200000",
    ]
    started = time.monotonic()
    server = subprocess.Popen(command, stderr=subprocess.PIPE)
    assert server.stderr is not None
    first = server.stderr.readline().decode()
    match = re.search(r"live at http://([\d.]+):(\d+)/jobs/(\S+)", first)
    assert match, first
    host, port, job_id = match[1], int(match[2]), match[3]
    request = f"GET /api/jobs/{job_id}/events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()
    sockets = []
    for _ in range(clients):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect((host, port))
        sock.sendall(request)
        sockets.append(sock)
    opened = time.monotonic() - started
    peak = 0.0
    while server.poll() is None:
        peak = max(peak, peak_rss_mb(server.pid))
        if time.monotonic() - started > 120:
            server.kill()
            break
        time.sleep(0.2)
    elapsed = time.monotonic() - started
    for sock in sockets:
        sock.close()
    print(
        f"{clients} stuck clients, {lines} lines at 200,000/s: job ran {elapsed:.1f} s "
        f"(clients opened after {opened:.1f} s), server peak RSS {peak:.0f} MB, "
        f"exit {server.returncode}"
    )
    subprocess.run(["rm", "-rf", str(data_dir)], check=False)


if __name__ == "__main__":
    main()
