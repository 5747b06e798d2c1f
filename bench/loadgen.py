"""A closed-loop HTTP/1.1 load generator that costs little CPU per request.

``N`` keep-alive connections, each with one request in flight: send pre-built request bytes,
read the answer (Content-Length or chunked), record its latency, send the next. One process,
one epoll loop, raw non-blocking sockets: no HTTP library on the hot path, so the generator's
own CPU (reported) stays a small share of the two cores it shares with the servers.

Requests are pre-built bytes. Paid requests each carry their own pre-signed payment and are
used once; the generator stops issuing when the list runs out (``exhausted``). Unpaid
requests can be cycled. Several servers (one port each, e.g. two gateways standing in for two
hosts) share the connections round-robin: connection i always talks to ``ports[i % len(ports)]``.
"""

from __future__ import annotations

import resource
import selectors
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

OVERHEAD_HEADER = b"\r\nx-inferpay-overhead-ms:"


def build_request(method: str, path: str, port: int, body: bytes, headers: dict[str, str] | None = None) -> bytes:
    lines = [
        f"{method} {path} HTTP/1.1",
        f"Host: 127.0.0.1:{port}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
    ]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


@dataclass
class LoadResult:
    connections: int
    window_seconds: float
    completed: int
    latencies_ms: list[float]
    statuses: dict[int, int]
    overheads_ms: list[float] = field(default_factory=list)  # the gateway's X-Inferpay-Overhead-Ms
    exhausted: bool = False
    reconnects: int = 0
    generator_cpu_seconds: float = 0.0
    first_error: str = ""

    @property
    def throughput(self) -> float:
        """Successful (2xx) answers per second in the measured window."""
        ok = self.completed - self.errors
        return ok / self.window_seconds if self.window_seconds > 0 else 0.0

    @property
    def errors(self) -> int:
        return sum(n for status, n in self.statuses.items() if not 200 <= status < 300)


class _Conn:
    __slots__ = ("sock", "port", "out", "buf", "started", "header_end", "body_len", "chunked", "status", "close_after")

    def __init__(self, sock: socket.socket, port: int) -> None:
        self.sock = sock
        self.port = port
        self.out = memoryview(b"")
        self.buf = bytearray()
        self.started = 0.0
        self.reset()

    def reset(self) -> None:
        self.buf.clear()
        self.header_end = -1
        self.body_len = -1
        self.chunked = False
        self.status = 0
        self.close_after = False


def _connect(host: str, port: int) -> socket.socket:
    sock = socket.create_connection((host, port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setblocking(False)
    return sock


def _parse_head(conn: _Conn) -> None:
    end = conn.buf.find(b"\r\n\r\n")
    if end < 0:
        return
    conn.header_end = end + 4
    head = bytes(conn.buf[:end]).lower()
    conn.status = int(head[9:12])
    marker = head.find(b"\r\ncontent-length:")
    if marker >= 0:
        stop = head.find(b"\r\n", marker + 2)
        conn.body_len = int(head[marker + 17 : stop if stop >= 0 else len(head)])
    elif b"\r\ntransfer-encoding: chunked" in head:
        conn.chunked = True
    else:
        conn.body_len = 0
    conn.close_after = b"\r\nconnection: close" in head


def _chunked_done(data: bytes) -> bool:
    pos = 0
    while True:
        line_end = data.find(b"\r\n", pos)
        if line_end < 0:
            return False
        size = int(data[pos:line_end].split(b";")[0], 16)
        if size == 0:
            return data.find(b"\r\n\r\n", line_end) >= 0 or data.endswith(b"\r\n", line_end + 2)
        pos = line_end + 2 + size + 2
        if pos > len(data):
            return False


def _complete(conn: _Conn) -> bool:
    if conn.header_end < 0:
        _parse_head(conn)
        if conn.header_end < 0:
            return False
    if conn.chunked:
        return _chunked_done(bytes(conn.buf[conn.header_end :]))
    return len(conn.buf) - conn.header_end >= conn.body_len


def _overhead(conn: _Conn) -> float | None:
    head = bytes(conn.buf[: conn.header_end]).lower()
    marker = head.find(OVERHEAD_HEADER)
    if marker < 0:
        return None
    stop = head.find(b"\r\n", marker + 2)
    try:
        return float(head[marker + len(OVERHEAD_HEADER) : stop])
    except ValueError:
        return None


def run_load(
    port: int | Sequence[int],
    requests: Sequence[bytes],
    *,
    connections: int,
    duration: float,
    warmup: float,
    cycle: bool,
    host: str = "127.0.0.1",
) -> LoadResult:
    """Keep ``connections`` requests in flight for ``warmup + duration`` seconds; measure the
    requests that start after the warm-up and finish before the end. ``port`` may be several
    ports: the connections are spread over them round-robin."""
    ports = [port] if isinstance(port, int) else list(port)
    selector = selectors.DefaultSelector()
    conns = [_Conn(_connect(host, ports[i % len(ports)]), ports[i % len(ports)]) for i in range(connections)]
    next_index = 0
    latencies: list[float] = []
    overheads: list[float] = []
    statuses: dict[int, int] = {}
    exhausted = False
    reconnects = 0
    first_error = ""
    in_flight = 0
    cpu_before = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    measure_from = start + warmup
    stop_at = measure_from + duration
    last_done = measure_from

    def issue(conn: _Conn) -> bool:
        nonlocal next_index, exhausted, in_flight
        if next_index >= len(requests):
            if not cycle:
                exhausted = True
                return False
            next_index = 0
        payload = requests[next_index]
        next_index += 1
        conn.reset()
        conn.started = time.perf_counter()
        sent = conn.sock.send(payload)
        conn.out = memoryview(payload)[sent:]
        selector.register(conn.sock, selectors.EVENT_WRITE if conn.out else selectors.EVENT_READ, conn)
        in_flight += 1
        return True

    for conn in conns:
        issue(conn)
    while in_flight:
        for key, events in selector.select(timeout=1.0):
            conn = key.data
            if events & selectors.EVENT_WRITE:
                sent = conn.sock.send(conn.out)
                conn.out = conn.out[sent:]
                if not conn.out:
                    selector.modify(conn.sock, selectors.EVENT_READ, conn)
                continue
            try:
                data = conn.sock.recv(65536)
            except ConnectionResetError:
                data = b""
            if not data:  # the server closed the connection: reconnect, count the request as failed
                selector.unregister(conn.sock)
                conn.sock.close()
                in_flight -= 1
                statuses[599] = statuses.get(599, 0) + 1
                first_error = first_error or "connection closed mid-request"
                reconnects += 1
                conn.sock = _connect(host, conn.port)
                if time.perf_counter() < stop_at:
                    issue(conn)
                continue
            conn.buf += data
            if not _complete(conn):
                continue
            now = time.perf_counter()
            selector.unregister(conn.sock)
            in_flight -= 1
            if conn.started >= measure_from and now <= stop_at:
                latencies.append((now - conn.started) * 1000)
                statuses[conn.status] = statuses.get(conn.status, 0) + 1
                last_done = now
                if not 200 <= conn.status < 300 and not first_error:
                    first_error = bytes(conn.buf[:600]).decode("latin-1", "replace")
                else:
                    value = _overhead(conn)
                    if value is not None:
                        overheads.append(value)
            if conn.close_after:
                conn.sock.close()
                conn.sock = _connect(host, conn.port)
                reconnects += 1
            if now < stop_at:
                issue(conn)
    cpu_after = resource.getrusage(resource.RUSAGE_SELF)
    for conn in conns:
        conn.sock.close()
    selector.close()
    end = min(stop_at, last_done) if exhausted else stop_at
    return LoadResult(
        connections=connections,
        window_seconds=max(0.0, end - measure_from),
        completed=len(latencies),
        latencies_ms=latencies,
        statuses=statuses,
        overheads_ms=overheads,
        exhausted=exhausted,
        reconnects=reconnects,
        generator_cpu_seconds=(cpu_after.ru_utime + cpu_after.ru_stime) - (cpu_before.ru_utime + cpu_before.ru_stime),
        first_error=first_error,
    )
