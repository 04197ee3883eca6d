"""A misbehaving network between a client and an S3 endpoint, for testing retries and timeouts.

:class:`FaultProxy` listens on loopback; a client uses its address as the endpoint URL and every
request goes through to the upstream server unchanged (the Host header too, so SigV4 signatures
still match), except those a :class:`Rule` picks. Rules are checked in order, each with a
predicate, a probability and optionally a cap on how many matching requests it hits ("fail the
first N PUTs"); the random draws come from one seeded generator, so a test that sends its
requests in a fixed order sees the same faults every run.

Faults: a ``503 SlowDown`` with S3's XML error body; a connection reset without an answer (the
request never reached the server); a reset after the server did the work (the answer is lost);
a hang-up halfway through the response body; a stall that outlasts a short client read
timeout, then a reset; a body with one byte changed (at a seeded random place) and its length
kept, as a bad link or a bad disk delivers it; and an answer whose ``ETag`` is some other 32 hex
digits, as S3 gives for an object encrypted with SSE-KMS (an eTag that is not its MD5).
Stalls are bounded and end when the proxy stops; the proxy serves a bounded number of
requests, never listens beyond 127.0.0.1, and only forwards to loopback.

:class:`HeadersOnlyProxy` is a blunter one: it passes a PUT's headers on, then drops both
connections, as a client killed between the headers and the body would.
"""

from __future__ import annotations

import enum
import http.client
import random
import socket
import socketserver
import struct
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

LOOPBACK = {"127.0.0.1", "localhost", "::1"}
HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "expect",
}
MAX_REQUESTS = 50_000
MAX_STALL = 30.0
#: The eTag of :attr:`Fault.OTHER_ETAG`: the shape of an MD5, the MD5 of nothing served here.
OTHER_ETAG = '"0123456789abcdef0123456789abcdef"'
CHUNK = 1 << 20
SLOWDOWN_BODY = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
    b"<Message>Please reduce your request rate.</Message>"
    b"<RequestId>FAULTPROXY</RequestId></Error>"
)


class Fault(enum.Enum):
    SLOWDOWN = "503-slowdown"
    RESET = "reset"
    LOST_ANSWER = "reset-after-upstream"
    RESET_MID_BODY = "reset-mid-body"
    STALL = "stall"
    CORRUPT_BODY = "corrupt-body"
    OTHER_ETAG = "other-etag"


@dataclass(frozen=True)
class Request:
    """What a rule sees of a request."""

    method: str
    path: str
    query: str
    headers: Mapping[str, str]

    def has_query(self, name: str) -> bool:
        return any(p.split("=", 1)[0] == name for p in self.query.split("&") if p)


def anything(_: Request) -> bool:
    return True


@dataclass
class Rule:
    """Inject ``fault`` into requests matching ``match``: each with ``probability``, and at most
    the first ``first`` of them when given."""

    fault: Fault
    match: Callable[[Request], bool] = anything
    probability: float = 1.0
    first: int | None = None
    stall: float = 3.0
    seen: int = field(default=0, init=False)

    def applies(self, request: Request, rng: random.Random) -> bool:
        if not self.match(request):
            return False
        self.seen += 1
        if self.first is not None and self.seen > self.first:
            return False
        return rng.random() < self.probability


@dataclass
class Event:
    """One request the proxy saw: what it asked for, the fault injected, and the status the
    client was answered with (``None`` when the connection was cut instead)."""

    method: str
    target: str
    fault: Fault | None
    status: int | None = None


class FaultProxy:
    """Start with :meth:`start` (or ``with``); ``endpoint_url`` is what the client uses."""

    def __init__(self, upstream: str, rules: Sequence[Rule] = (), *, seed: int = 0):
        parts = urlsplit(upstream)
        if parts.hostname not in LOOPBACK or parts.port is None:
            raise ValueError(f"{upstream}: the proxy forwards to a loopback host:port only")
        self.upstream = (parts.hostname, parts.port)
        self.rules = list(rules)
        self.events: list[Event] = []
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._connections: set[socket.socket] = set()
        self._server = _Server(("127.0.0.1", 0), _Handler, self)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def endpoint_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> FaultProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening, wake stalled handlers and cut open connections."""
        self._stopping.set()
        self._server.shutdown()
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            _reset(conn)
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    def set_rules(self, rules: Sequence[Rule]) -> None:
        with self._lock:
            self.rules = list(rules)

    def injected(self, fault: Fault | None = None) -> int:
        """How many requests got ``fault`` (any fault when ``None``)."""
        with self._lock:
            return sum(1 for e in self.events if e.fault and (fault is None or e.fault is fault))

    def requests(self, method: str | None = None) -> list[Event]:
        with self._lock:
            return [e for e in self.events if method is None or e.method == method]

    def decide(self, request: Request) -> Rule | None:
        return self.judge(request)[0]

    def judge(self, request: Request) -> tuple[Rule | None, Event]:
        """The rule that picks ``request`` (if any), and its event, recorded."""
        with self._lock:
            if len(self.events) >= MAX_REQUESTS:
                raise RuntimeError("fault proxy: request budget exhausted")
            rule = next((r for r in self.rules if r.applies(request, self._rng)), None)
            target = request.path + (f"?{request.query}" if request.query else "")
            event = Event(request.method, target, rule.fault if rule else None)
            self.events.append(event)
            return rule, event

    def position(self, length: int) -> int:
        """Where :attr:`Fault.CORRUPT_BODY` changes a body of ``length`` bytes."""
        with self._lock:
            return self._rng.randrange(length)

    def stall(self, seconds: float) -> None:
        self._stopping.wait(min(seconds, MAX_STALL))

    @contextmanager
    def tracked(self, conn: socket.socket) -> Iterator[None]:
        with self._lock:
            self._connections.add(conn)
        try:
            yield
        finally:
            with self._lock:
                self._connections.discard(conn)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type[_Handler], proxy: FaultProxy):
        super().__init__(address, handler)
        self.proxy = proxy


class _Handler(BaseHTTPRequestHandler):
    """One client connection (kept alive across requests, as S3 clients expect)."""

    protocol_version = "HTTP/1.1"
    timeout = 60
    server: _Server
    _upstream: http.client.HTTPConnection | None = None

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: the proxy's events are the log."""

    def handle(self) -> None:
        with self.server.proxy.tracked(self.connection):
            try:
                super().handle()
            except (OSError, http.client.HTTPException):
                self.close_connection = True
            finally:
                self._drop_upstream()

    def do_any(self) -> None:
        proxy = self.server.proxy
        body = self._read_body()
        path, _, query = self.path.partition("?")
        request = Request(self.command, path, query, dict(self.headers.items()))
        rule, event = proxy.judge(request)
        fault = rule.fault if rule else None
        if fault is Fault.SLOWDOWN:
            event.status = 503
            self._answer(503, "Slow Down", SLOWDOWN_BODY)
        elif fault is Fault.RESET:
            self._cut()
        elif fault is Fault.STALL:
            proxy.stall(rule.stall if rule else 0)
            self._cut()
        else:
            self._forward(body, fault, event)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = do_any

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            raise ConnectionError("fault proxy: chunked request bodies are not supported")
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _answer(self, status: int, reason: str, body: bytes) -> None:
        self.send_response_only(status, reason)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _cut(self) -> None:
        _reset(self.connection)
        self.close_connection = True

    def _hang_up(self) -> None:
        """Close with FIN, so the client reads what was sent and then finds the body short (an
        RST could make it drop the unread part, headers included)."""
        with suppress(OSError):
            self.connection.shutdown(socket.SHUT_WR)
        self.close_connection = True

    def _forward(self, body: bytes, fault: Fault | None, event: Event) -> None:
        try:
            response = self._send_upstream(body)
        except (OSError, http.client.HTTPException):
            self._drop_upstream()
            self._cut()
            return
        if fault is Fault.LOST_ANSWER:
            response.read()
            self._cut()
            return
        event.status = response.status
        self._relay(response, fault)

    def _send_upstream(self, body: bytes) -> http.client.HTTPResponse:
        """A fresh upstream connection per request: reusing one that the server has meanwhile
        closed would fail at random and look like an injected fault."""
        self._drop_upstream()
        conn = self._upstream = http.client.HTTPConnection(*self.server.proxy.upstream, timeout=60)
        conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
        for name, value in self.headers.items():
            if name.lower() not in HOP_BY_HOP:
                conn.putheader(name, value)
        conn.endheaders(body or None)
        return conn.getresponse()

    def _relay(self, response: http.client.HTTPResponse, fault: Fault | None) -> None:
        body = b"" if self.command == "HEAD" else response.read()
        if fault is Fault.CORRUPT_BODY and body:
            changed = bytearray(body)
            changed[self.server.proxy.position(len(body))] ^= 0xFF
            body = bytes(changed)
        self.send_response_only(response.status, response.reason)
        for name, value in response.getheaders():
            if name.lower() == "etag" and fault is Fault.OTHER_ETAG:
                value = OTHER_ETAG
            if name.lower() not in HOP_BY_HOP and name.lower() != "content-length":
                self.send_header(name, value)
        length = response.getheader("Content-Length") if self.command == "HEAD" else len(body)
        self.send_header("Content-Length", str(length or 0))
        self.end_headers()
        if fault is Fault.RESET_MID_BODY:
            self.wfile.write(body[: len(body) // 2])
            self._hang_up()
            return
        for start in range(0, len(body), CHUNK):
            self.wfile.write(body[start : start + CHUNK])

    def _drop_upstream(self) -> None:
        if self._upstream is not None:
            self._upstream.close()
            self._upstream = None


def _reset(conn: socket.socket) -> None:
    """Close with RST rather than FIN, as a dropped connection looks to the client."""
    try:
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()
    except OSError:
        pass


class HeadersOnlyProxy:
    """Between a client and a loopback S3 endpoint: other requests go through (one upstream
    connection each), but a PUT has only its headers passed on before both connections drop at
    once, which is what the server sees when a client is killed between headers and body."""

    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        assert parts.hostname in ("127.0.0.1", "localhost") and parts.port
        self.upstream = (parts.hostname, parts.port)
        self.cut = 0
        self._server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _CuttingHandler)
        self._server.daemon_threads = True
        self._server.proxy = self  # type: ignore[attr-defined]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def endpoint_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def __enter__(self) -> HeadersOnlyProxy:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._server.shutdown()
        self._server.server_close()


class _CuttingHandler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        proxy: HeadersOnlyProxy = self.server.proxy  # type: ignore[attr-defined]
        while head := _read_head(self.rfile):
            body = self.rfile.read(_content_length(head))
            with socket.create_connection(proxy.upstream, timeout=10) as upstream:
                if head.startswith(b"PUT "):
                    upstream.sendall(head)
                    proxy.cut += 1
                    self.connection.setsockopt(
                        socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                    )
                    return
                upstream.sendall(head + body)
                self.wfile.write(_read_response(upstream.makefile("rb"), head))


def _read_head(stream: Any) -> bytes:
    lines = []
    while (line := stream.readline()) not in (b"\r\n", b"\n", b""):
        lines.append(line)
    return b"".join(lines) + b"\r\n" if lines else b""


def _content_length(head: bytes) -> int:
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 0


def _read_response(stream: Any, request: bytes) -> bytes:
    head = _read_head(stream)
    assert b"chunked" not in head.lower(), "the proxy reads bodies by Content-Length only"
    no_body = request.startswith(b"HEAD ") or head.split(b" ", 2)[1] in (b"204", b"304")
    return head + (b"" if no_body else stream.read(_content_length(head)))
