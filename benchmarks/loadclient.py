"""The load client: many SSE connections in one process, parsed incrementally and cheaply.

Run by the harness as ``python -m benchmarks.loadclient CONFIG_JSON``. It opens every
connection (raw non-blocking sockets, HTTP/1.1, one ``epoll`` loop), prints ``ready`` once all
have their response headers, reads until each stream ends, then prints one JSON line of results.

Why it is not the bottleneck: no per-line Python work. Each ``recv`` (up to 1 MiB) is
de-chunked (Python work per HTTP chunk, and the servers write big chunks), then counted with
``bytes.count``/``find``/``rfind``, which run in C:

- lines: the number of ``\\nid: `` markers; the first and last ``id:`` give the range, so a
  stream that skips or repeats a line shows as a mismatch;
- latency: lines printed by ``firehose.py --stamp`` carry their print time. The firehose prints
  in batches that share one stamp and stamps never decrease along a stream, so a buffer is
  bisected until each part holds one stamp; each part adds ``(receive time - stamp)`` weighted
  by its line count to a histogram of 10 microsecond buckets. Work is per distinct stamp, not
  per line, and the percentiles are exact to the bucket.
"""

from __future__ import annotations

import json
import resource
import selectors
import socket
import sys
import time
from dataclasses import dataclass, field
from typing import Any

ID_MARK = b"\nid: "
STAMP_MARK = b" firehose"
BUCKET_NS = 10_000
RECV_BYTES = 1 << 20


@dataclass
class Connection:
    index: int
    sock: socket.socket
    resume: int | None
    started: float
    headers_done: bool = False
    status: int = 0
    head: bytes = b""
    chunked: bool = True
    chunk_left: int = 0
    skip: int = 0
    size_line: bytes = b""
    carry: bytes = b""
    first_id: int | None = None
    last_id: int = 0
    lines: int = 0
    chunks: int = 0
    bytes_in: int = 0
    gaps: int = 0
    t_headers: float = 0.0
    t_first: float = 0.0
    t_target: float = 0.0
    t_end: float = 0.0
    ended: bool = False
    closed: bool = False


@dataclass
class Results:
    hist: dict[int, int] = field(default_factory=dict)

    def add_latency(self, latency_ns: int, count: int) -> None:
        bucket = max(0, latency_ns) // BUCKET_NS
        self.hist[bucket] = self.hist.get(bucket, 0) + count


def _stamp_before(buf: bytes, at: int) -> int:
    space = buf.rfind(b" ", max(0, at - 32), at)
    return int(buf[space + 1 : at])


def add_latencies(buf: bytes, start: int, end: int, now_ns: int, results: Results) -> None:
    """Add the latency of each stamped line in ``buf[start:end]`` (whole lines) to the histogram."""
    first = buf.find(STAMP_MARK, start, end)
    if first < 0:
        return
    last = buf.rfind(STAMP_MARK, start, end)
    stamp = _stamp_before(buf, first)
    if first == last or stamp == _stamp_before(buf, last):
        results.add_latency(now_ns - stamp, buf.count(STAMP_MARK, start, end))
        return
    # Cut after a "\n" between the two markers: each half holds one of them, so this ends.
    middle = buf.rfind(b"\n", first, (first + last) // 2 + 1)
    if middle < 0:
        middle = buf.find(b"\n", first)
    middle += 1
    add_latencies(buf, start, middle, now_ns, results)
    add_latencies(buf, middle, end, now_ns, results)


def _int_after(buf: bytes, at: int) -> int:
    end = buf.find(b"\n", at)
    return int(buf[at:] if end < 0 else buf[at:end])


class LoadClient:
    def __init__(self, config: dict[str, Any]) -> None:
        self.host: str = config["host"]
        self.port: int = config["port"]
        self.path: str = config["path"]
        self.resume_ids: list[int | None] = config.get("resume_ids") or [None] * config["clients"]
        self.target: int = config.get("target", 0)
        self.stamped: bool = config.get("stamped", False)
        self.timeout_s: float = config.get("timeout_s", 120.0)
        self.results = Results()
        self.selector = selectors.DefaultSelector()
        self.connections: list[Connection] = []
        self.open = 0

    def connect_all(self) -> None:
        for index, resume in enumerate(self.resume_ids):
            started = time.time()
            sock = socket.create_connection((self.host, self.port))
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            extra = f"Last-Event-ID: {resume}\r\n" if resume is not None else ""
            request = (
                f"GET {self.path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
                f"Accept: text/event-stream\r\n{extra}\r\n"
            )
            sock.sendall(request.encode())
            sock.setblocking(False)
            connection = Connection(index, sock, resume, started)
            self.connections.append(connection)
            self.selector.register(sock, selectors.EVENT_READ, connection)
            self.open += 1

    def run_until(self, condition: str) -> None:
        """Read until every connection has its headers (``"ready"``) or has ended (``"end"``)."""
        deadline = time.monotonic() + self.timeout_s
        while self.open and time.monotonic() < deadline:
            if condition == "ready" and all(c.headers_done or c.closed for c in self.connections):
                return
            for key, _mask in self.selector.select(timeout=0.5):
                self._read(key.data)

    def _read(self, connection: Connection) -> None:
        try:
            data = connection.sock.recv(RECV_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        now = time.time()
        if not data:
            self._close(connection, now)
            return
        connection.bytes_in += len(data)
        if not connection.headers_done:
            head = connection.head + data
            end = head.find(b"\r\n\r\n")
            if end < 0:
                connection.head = head
                return
            connection.head = b""
            status_line, _, headers = head[:end].partition(b"\r\n")
            connection.status = int(status_line.split()[1])
            connection.chunked = b"transfer-encoding: chunked" in headers.lower()
            connection.headers_done = True
            connection.t_headers = now
            data = head[end + 4 :]
            if connection.status != 200:
                self._close(connection, now)
                return
        payload = self._dechunk(connection, data) if connection.chunked else data
        if payload:
            self._body(connection, payload, now)

    def _dechunk(self, c: Connection, data: bytes) -> bytes:
        out: list[bytes] = []
        if c.size_line:
            # An unfinished size line (maybe ending in "\r") continues in this data.
            data, c.size_line = c.size_line + data, b""
        pos, size = 0, len(data)
        while pos < size:
            if c.chunk_left:
                take = min(c.chunk_left, size - pos)
                out.append(data[pos : pos + take])
                pos += take
                c.chunk_left -= take
                if not c.chunk_left:
                    c.skip = 2
            elif c.skip:
                take = min(c.skip, size - pos)
                pos += take
                c.skip -= take
            else:
                eol = data.find(b"\r\n", pos)
                if eol < 0:
                    c.size_line = data[pos:]
                    break
                line = data[pos:eol]
                pos = eol + 2
                c.chunk_left = int(line.split(b";")[0], 16)
                c.chunks += 1
                if not c.chunk_left:
                    break  # the last chunk: the body ends
        return b"".join(out)

    def _body(self, c: Connection, payload: bytes, now: float) -> None:
        text = c.carry + payload if c.carry else payload
        cut = text.rfind(b"\n")
        if cut < 0:
            c.carry = text
            return
        # Markers hold no "\n" but at their start, so none straddles the cut before a "\n".
        c.carry = text[cut:]
        whole = text[:cut]
        found = whole.count(ID_MARK)
        if found:
            if c.first_id is None:
                c.first_id = _int_after(whole, whole.find(ID_MARK) + 5)
                c.t_first = now
            c.last_id = _int_after(whole, whole.rfind(ID_MARK) + 5)
            c.lines += found
            if self.stamped:
                add_latencies(whole, 0, len(whole), time.time_ns(), self.results)
            if self.target and not c.t_target and c.last_id >= self.target:
                c.t_target = now
        if b"event: gap" in whole:
            c.gaps += whole.count(b"event: gap")
        if b"event: end" in whole:
            c.ended = True
            c.t_end = now
            self._close(c, now)

    def _close(self, c: Connection, now: float) -> None:
        if c.closed:
            return
        c.closed = True
        if not c.t_end:
            c.t_end = now
        self.selector.unregister(c.sock)
        c.sock.close()
        self.open -= 1

    def report(self) -> dict[str, Any]:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        cs = self.connections
        mismatched = sum(
            1 for c in cs if c.first_id is not None and c.lines != c.last_id - c.first_id + 1
        )
        wrong_start = sum(
            1 for c in cs if c.resume is not None and c.first_id not in (None, c.resume + 1)
        )
        return {
            "clients": len(cs),
            "ended": sum(c.ended for c in cs),
            "statuses": sorted({c.status for c in cs}),
            "lines": sum(c.lines for c in cs),
            "bytes": sum(c.bytes_in for c in cs),
            "chunks": sum(c.chunks for c in cs),
            "mismatched": mismatched,
            "wrong_start": wrong_start,
            "gaps": sum(c.gaps for c in cs),
            "started": [c.started for c in cs],
            "t_first": [c.t_first for c in cs],
            "t_target": [c.t_target for c in cs],
            "t_end": [c.t_end for c in cs],
            "hist": self.results.hist,
            "cpu_s": usage.ru_utime + usage.ru_stime,
        }


def main() -> None:
    config = json.loads(sys.argv[1])
    client = LoadClient(config)
    client.connect_all()
    client.run_until("ready")
    print("ready", flush=True)
    client.run_until("end")
    print(json.dumps(client.report()), flush=True)


if __name__ == "__main__":
    main()
