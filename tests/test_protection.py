"""Scale-in protection: a following worker protects its ECS task while it holds claims.

The ECS agent is played by a small HTTP server on loopback that answers as the agent does
(``{"protection": {...}}`` or ``{"failure": {...}}``) and records every request."""

from __future__ import annotations

import contextlib
import json
import logging
import socketserver
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from store_helpers import (
    Bench,
    jpeg,
    live_claims,
    pending,
    put_source,
    run_ptif,
    start_ptif,
    verify_output,
    wait_for,
)

from ptif.queue import protection
from ptif.queue.protection import Protection


class Agent:
    """The agent endpoint: every PUT body it got, in order; ``refuse`` makes it answer as
    the agent does when the task role lacks the permission."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.paths: list[str] = []
        self.refuse = False
        agent = self

        class Handler(BaseHTTPRequestHandler):
            def do_PUT(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                agent.bodies.append(body)
                agent.paths.append(self.path)
                if agent.refuse:
                    answer: dict[str, Any] = {"failure": {"Reason": "AccessDeniedException"}}
                else:
                    answer = {"protection": {"ProtectionEnabled": body["ProtectionEnabled"]}}
                data = json.dumps(answer).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.uri = f"http://127.0.0.1:{self.server.server_address[1]}/api/task-id"

    def enabled(self) -> list[bool]:
        return [body["ProtectionEnabled"] for body in self.bodies]


@pytest.fixture
def agent() -> Iterator[Agent]:
    agent = Agent()
    thread = threading.Thread(target=agent.server.serve_forever, daemon=True)
    thread.start()
    yield agent
    agent.server.shutdown()
    agent.server.server_close()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_protected_while_busy_renewed_and_cleared_after_idle_ticks(agent: Agent) -> None:
    busy, clock = [True], Clock()
    guard = Protection(agent.uri, lambda: busy[0], clock)
    guard.tick()
    assert agent.paths == ["/api/task-id/task-protection/v1/state"]
    assert agent.bodies == [{"ProtectionEnabled": True, "ExpiresInMinutes": 30}]
    for _ in range(5):  # still busy, not yet due for renewal: no request
        clock.now += 60
        guard.tick()
    assert len(agent.bodies) == 1
    clock.now += protection.RENEW_SECONDS  # a long conversion: renewed before it expires
    guard.tick()
    assert agent.enabled() == [True, True]
    assert protection.RENEW_SECONDS < protection.PROTECT_MINUTES * 60
    busy[0] = False  # a gap between two claims does not clear it ...
    for _ in range(protection.IDLE_TICKS - 1):
        guard.tick()
    busy[0] = True
    guard.tick()
    assert agent.enabled() == [True, True]
    busy[0] = False  # ... an idle worker does
    for _ in range(protection.IDLE_TICKS):
        guard.tick()
    assert agent.enabled() == [True, True, False] and not guard.protected
    guard.tick()
    assert len(agent.bodies) == 3


def test_a_refused_or_unreachable_agent_is_logged_and_retried_slowly(
    agent: Agent, caplog: pytest.LogCaptureFixture
) -> None:
    agent.refuse = True
    clock = Clock()
    guard = Protection(agent.uri, lambda: True, clock)
    with caplog.at_level(logging.WARNING, logger="ptif.protection"):
        for _ in range(10):
            guard.tick()
            clock.now += protection.TICK_SECONDS
    assert len(agent.bodies) == 1 and not guard.protected
    assert "AccessDeniedException" in caplog.text and "SIGTERM" in caplog.text
    clock.now += protection.RETRY_SECONDS
    agent.refuse = False
    guard.tick()
    assert agent.enabled() == [True, True] and guard.protected

    gone = Protection("http://127.0.0.1:9", lambda: True, clock)  # nothing listens there
    gone.tick()
    assert not gone.protected and gone.failures == 1


def test_following_worker_on_ecs_protects_its_task_while_converting(
    bench: Bench, agent: Agent
) -> None:
    """``ptif process --follow`` with the agent's variable set: protection on while the big
    image is in hand, off once the worker has been idle, and the image converted."""
    size = (12000, 9000)
    put_source(bench.source, "big/scan.jpg", jpeg(*size, seed=5))
    assert run_ptif(bench, "mark").returncode == 0
    env = {**bench.env(), protection.AGENT_VARIABLE: agent.uri}
    worker = start_ptif(bench, "process", "--follow", "--poll", "0.5", "--workers", "1", "-q",
                        env=env)  # fmt: skip
    try:
        if not wait_for(lambda: True in agent.enabled(), 120, step=0.1):
            worker.terminate()
            raise AssertionError(worker.communicate(timeout=60)[1][-3000:])
        done = wait_for(lambda: bench.images.head("big/scan.tif") is not None, 300, step=0.2)
        assert done
        idle = protection.TICK_SECONDS * (protection.IDLE_TICKS + 3)
        assert wait_for(lambda: agent.enabled()[-1:] == [False], idle + 30, step=0.1)
    finally:
        worker.terminate()
        worker.communicate(timeout=60)
    assert worker.returncode == 0, worker.stderr
    verify_output(bench, "big/scan.jpg", size)
    assert pending(bench) == [] and live_claims(bench) == []
    assert agent.enabled()[0] is True and agent.enabled()[-1] is False


def test_a_worker_off_ecs_or_not_following_never_calls_the_agent(
    bench: Bench, agent: Agent
) -> None:
    put_source(bench.source, "one/small.jpg", jpeg(300, 200, seed=1))
    assert run_ptif(bench, "mark").returncode == 0
    env = {**bench.env(), protection.AGENT_VARIABLE: agent.uri}
    assert run_ptif(bench, "process", "-q", env=env).returncode == 0  # the daily task
    verify_output(bench, "one/small.jpg", (300, 200))
    assert agent.bodies == []


class Hostile:
    """An endpoint that is no ECS agent: each connection gets ``answer``'s bytes as they are
    (no HTTP, a body cut short, JSON nested past Python's recursion limit, a huge body)."""

    def __init__(self, answer: bytes) -> None:
        self.answer = answer
        self.requests = 0
        hostile = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                hostile.requests += 1
                self.rfile.readline()
                with contextlib.suppress(OSError):
                    self.wfile.write(hostile.answer)

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.uri = f"http://127.0.0.1:{self.server.server_address[1]}/api/task-id"


def _http(body: bytes, length: int | None = None) -> bytes:
    head = f"HTTP/1.1 200 OK\r\nContent-Length: {len(body) if length is None else length}\r\n"
    return head.encode() + b"Connection: close\r\n\r\n" + body


@pytest.mark.parametrize(
    "answer",
    [
        b"SSH-2.0-OpenSSH_9.6\r\n",  # the variable names some other service's port
        _http(b'{"protection": {', length=4096),  # cut short
        _http(b"[" * 200_000),  # nesting no JSON reader follows
        _http(b'{"failure": "' + b"x" * (64 << 20) + b'"}'),  # far more than any answer
    ],
    ids=["not-http", "cut-short", "deeply-nested", "huge"],
)
def test_an_endpoint_that_is_no_agent_is_a_refusal_logged_never_a_crash(
    answer: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    """Whatever answers at the agent's address, turning protection on or off is logged and
    retried later; it never raises, so the thread keeps ticking and a worker's exit (which
    clears protection) ends with its own report, not a traceback."""
    hostile = Hostile(answer)
    thread = threading.Thread(target=hostile.server.serve_forever, daemon=True)
    thread.start()
    try:
        clock = Clock()
        guard = Protection(hostile.uri, lambda: True, clock)
        with caplog.at_level(logging.WARNING, logger="ptif.protection"):
            guard.tick()
            guard.protected = True  # as if an earlier answer had been a good one
            guard.stop()
        assert hostile.requests == 2 and guard.failures == 2 and not guard.protected
        assert "could not turn task scale-in protection on" in caplog.text
        assert len(caplog.text) < 4000
    finally:
        hostile.server.shutdown()
        hostile.server.server_close()


def test_a_worker_leaving_is_not_held_by_an_endpoint_that_answers_a_byte_at_a_time() -> None:
    """An answer that trickles in (each byte within the socket timeout, never the whole) does
    not keep a stopping worker from exiting: clearing protection waits a bounded time."""
    trickling = threading.Event()

    class Handler(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            self.rfile.readline()
            trickling.set()
            with contextlib.suppress(OSError):
                for _ in range(600):
                    self.wfile.write(b"X")
                    self.wfile.flush()
                    time.sleep(1)

    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        guard = Protection(f"http://127.0.0.1:{server.server_address[1]}/api/t", lambda: True)
        guard.protected = True
        stopping = threading.Thread(target=guard.stop, daemon=True)
        stopping.start()
        assert trickling.wait(30)
        stopping.join(120)
        assert not stopping.is_alive()
    finally:
        server.shutdown()
        server.server_close()
