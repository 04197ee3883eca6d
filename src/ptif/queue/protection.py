"""Scale-in protection for a ``--follow`` worker that runs as a task of an ECS service.

When a service scales in, ECS stops tasks over the desired count, and without more to go on it
may stop a task that is half-way through a gigapixel scan while an idle one runs on. SIGTERM
then releases the work (nothing is lost) but the conversion starts again elsewhere. The ECS
agent gives every task an endpoint, ``$ECS_AGENT_URI/task-protection/v1/state``, where the task
can say it must not be stopped for now; ECS then stops unprotected (idle) tasks first and waits
for protected ones to clear their flag or let it expire.

A worker protects its task as soon as it takes a claim, keeps the protection while it holds any,
and clears it once it has held none for :data:`IDLE_TICKS` ticks in a row, so a busy queue,
where claims follow each other with short gaps, does not flip it on every image. Protection is
renewed while the work lasts and expires on its own after :data:`PROTECT_MINUTES` if the worker
stops renewing it (a crashed or frozen process never pins a task). The endpoint needs
``ecs:UpdateTaskProtection`` on the task's role (the CDK app grants it in its service modes). It
is a convenience: when the agent refuses or cannot be reached, the worker logs it and carries
on, and SIGTERM still releases the work in hand.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable

log = logging.getLogger("ptif.protection")

AGENT_VARIABLE = "ECS_AGENT_URI"
PATH = "/task-protection/v1/state"
#: How long one request protects the task; renewed every :data:`RENEW_SECONDS` while busy.
PROTECT_MINUTES = 30
RENEW_SECONDS = 10 * 60
#: Seconds between looks at the worker's claims.
TICK_SECONDS = 2.0
#: Ticks without a claim before the protection is cleared.
IDLE_TICKS = 3
REQUEST_TIMEOUT_S = 5.0
#: After a refused or failed request, the next try waits this long.
RETRY_SECONDS = 60.0
#: The agent answers in a few hundred bytes; a longer answer is read no further.
MAX_ANSWER_BYTES = 64 * 1024


class Protection:
    """Keeps the task's protection in step with ``busy()``: on while it holds claims, off once
    it has held none for a while. :meth:`tick` does one step (tests drive it with their own
    clock); :meth:`start` runs it every :data:`TICK_SECONDS` on a daemon thread."""

    def __init__(
        self,
        agent_uri: str,
        busy: Callable[[], bool],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = agent_uri.rstrip("/") + PATH
        self.busy = busy
        self.clock = clock
        self.protected = False
        self.renewed_at = 0.0
        self.idle_ticks = 0
        self.failures = 0
        self.retry_at = float("-inf")
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def from_environment(cls, busy: Callable[[], bool]) -> Protection | None:
        """Protection for this task, or ``None`` outside ECS (no agent endpoint)."""
        uri = os.environ.get(AGENT_VARIABLE, "").strip()
        return cls(uri, busy) if uri else None

    def tick(self) -> None:
        now = self.clock()
        if self.busy():
            self.idle_ticks = 0
            due = not self.protected or now - self.renewed_at >= RENEW_SECONDS
            if due and now >= self.retry_at:
                self._set(True)
            return
        self.idle_ticks += 1
        if self.protected and self.idle_ticks >= IDLE_TICKS:
            self._set(False)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="ptif-protection", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop ticking and clear the protection: the worker is leaving."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(REQUEST_TIMEOUT_S * 2)
        if self.protected:
            # An answer that trickles in never times out: the worker leaves without it, and
            # the protection expires by itself.
            clearing = threading.Thread(target=self._set, args=(False,), daemon=True)
            clearing.start()
            clearing.join(REQUEST_TIMEOUT_S * 2)

    def poke(self) -> None:
        """A claim was just taken: look now rather than at the next tick, so that protection
        starts with the work, even work shorter than a tick."""
        self._wake.set()

    def _run(self) -> None:
        while True:
            self._wake.wait(TICK_SECONDS)
            self._wake.clear()
            if self._stop.is_set():
                return
            self.tick()

    def _set(self, enabled: bool) -> None:
        body: dict[str, object] = {"ProtectionEnabled": enabled}
        if enabled:
            body["ExpiresInMinutes"] = PROTECT_MINUTES
        request = urllib.request.Request(
            self.url,
            data=json.dumps(body).encode(),
            method="PUT",
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT_S) as response:
                data = response.read(MAX_ANSWER_BYTES + 1)
            if len(data) > MAX_ANSWER_BYTES:
                raise ValueError(f"an answer of more than {MAX_ANSWER_BYTES:,} bytes")
            answer = json.loads(data or b"{}")
        # URLError, HTTPError and timeouts are OSErrors; whatever else answers there (no HTTP,
        # a body cut short, JSON nested past the recursion limit) is refused the same way
        except (OSError, ValueError, http.client.HTTPException, RecursionError) as error:
            self._failed(enabled, _reason(error))
            return
        refused = answer.get("failure") or answer.get("error") if isinstance(answer, dict) else None
        if refused:
            self._failed(enabled, json.dumps(refused, ensure_ascii=False)[:300])
            return
        self.protected, self.failures = enabled, 0
        self.renewed_at = self.clock()
        log.info("task scale-in protection %s", "on" if enabled else "off")

    def _failed(self, enabled: bool, reason: str) -> None:
        """Logged, never raised: the first failure and then every tenth, to keep the log
        readable when the role lacks ``ecs:UpdateTaskProtection``."""
        self.failures += 1
        self.retry_at = self.clock() + RETRY_SECONDS
        if self.failures == 1 or self.failures % 10 == 0:
            log.warning(
                "could not turn task scale-in protection %s (%s): %s; SIGTERM still releases "
                "the work in hand",
                "on" if enabled else "off",
                self.url,
                reason,
            )
        if not enabled:
            self.protected = False  # it expires by itself; do not retry every tick


def _reason(error: BaseException) -> str:
    if isinstance(error, urllib.error.HTTPError):
        return f"HTTP {error.code} {error.reason}"
    if isinstance(error, urllib.error.URLError):
        return str(error.reason)
    return (str(error) or type(error).__name__)[:300]
