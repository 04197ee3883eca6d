"""Leases: who is converting which marker right now, and how often it was tried.

A lease is a small object under ``claims/`` named by a hash of the output key
(:func:`ptif.queue.layout.claim_key`), holding its owner and expiry. Taking one is a
create-if-absent; taking over an expired one, renewing and releasing are replace/delete-if-match,
so two workers never hold the same marker at once, on one machine or many. Leases are short and
renewed in the background while work goes on, so a crashed worker's markers are taken over within
minutes. Clocks of the workers are assumed to agree to within a few seconds (NTP), far less than
a lease's length.

The claim also counts the attempts at the marker it is for, and a transient failure leaves it
behind, released, with the error: the marker is never rewritten, so it keeps its age. The attempt
in hand is counted in the claim's first write (:func:`acquire`): the claim holds the earlier
attempts plus this one from the moment it is taken, before any byte of the source is fetched,
so an image that kills its worker every time is still counted, without a write of its own. A
conversion that succeeds needs no give-back: its claim is deleted. One that fails for a reason
that is not the image's (a store that fails, a full disk) is given back when the claim is
released (:meth:`Lease.release_noting` with ``counted=False``). What cannot be given back: an
item in hand (claimed, not yet released) when its worker died or the process store itself went
away, which no one can tell apart: each such item is counted once.

The claim also knows which sources of its output key have a failure record (``failedSources``):
a worker names the source in the claim before it files the record, and a claim that names one
is never deleted, only released, until that source converts (or is found current) and its
record is removed. So a conversion removes a failure record only where one may exist, and needs
no request for it otherwise. Any number of uploads may share one output key (``x.a``, ``x.b``):
a claim names at most :data:`MAX_NAMED_FAILURES` of them, then :data:`ANY_SOURCE`, after which
every conversion of that output removes its source's record, if any, as before.

Claims are ptif's own data, so one that is not what ptif writes (not JSON, a field of the
wrong type, an expiry further ahead than any lease may run) is garbage: it counts as expired,
and the next worker to claim its subject replaces it, with a warning.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Self

from ptif.errors import LEASE_LOST, STORE_UNREACHABLE, PtifError
from ptif.queue.layout import claim_key
from ptif.stores.base import ObjectMissing, PreconditionFailed, Store

log = logging.getLogger(__name__)

#: The longest lease a worker may take (``PTIF_LEASE_SECONDS``'s upper bound in ptif.config),
#: and how far apart the workers' clocks may be: a claim expiring later than that is garbage.
MAX_LEASE_SECONDS = 86_400.0
CLOCK_SLACK_SECONDS = 300.0
#: What a garbage claim is held by, for the record.
GARBAGE = "nobody (a claim ptif did not write)"


class LeaseLost(PtifError):
    """Another worker holds the marker now (ours expired, or the store lost track)."""

    code = LEASE_LOST


#: How many sources a claim names as having a failure record; it is read and written whole.
MAX_NAMED_FAILURES = 16
#: Named instead of more sources: any source of the output may have a failure record. No source
#: key holds a NUL.
ANY_SOURCE = "\0any"


@dataclass(frozen=True)
class Tries:
    """What the claim remembers of earlier attempts at one version of one marker, and which
    sources of its subject have a failure record (``failed``, whatever the marker)."""

    marker: str = ""
    marker_etag: str = ""
    attempts: int = 0
    last_error: str = ""
    last_error_code: str = ""
    failed: tuple[str, ...] = ()

    def of(self, marker: str, marker_etag: str) -> Tries:
        """These tries if they were at that marker's version, else none: a newer event that
        replaced the marker starts the count again. The failure records stay known."""
        if (self.marker, self.marker_etag) == (marker, marker_etag):
            return self
        return Tries(marker, marker_etag, failed=self.failed)

    def fields(self) -> dict[str, object]:
        fields: dict[str, object] = {"attempts": self.attempts}
        if self.marker:
            fields |= {"markerKey": self.marker, "markerETag": self.marker_etag}
        if self.last_error:
            fields |= {"lastError": self.last_error, "lastErrorCode": self.last_error_code}
        if self.failed:
            fields |= {"failedSources": list(self.failed)}
        return fields


@dataclass
class Lease:
    """``subject`` (an output key) held by this worker until ``expires`` (epoch seconds).

    The claim object also counts the attempts at the marker being worked on, the one in hand
    included from its first write, so an image that kills its worker every time is still
    counted, and it outlives a transient failure (released, with the error noted), so the
    marker itself is never rewritten and keeps the age of its event.
    """

    store: Store
    subject: str
    owner: str
    seconds: float
    tries: Tries = field(default_factory=Tries)
    etag: str = ""
    expires: float = 0.0
    lost: bool = field(default=False)
    #: Whether :attr:`tries` includes the attempt in hand (until it is released).
    counting: bool = field(default=True)
    #: Let go (released, or handed to the sweeper): a renewal that comes late writes nothing.
    ended: bool = field(default=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    @property
    def key(self) -> str:
        return claim_key(self.subject)

    @property
    def attempts(self) -> int:
        """Attempts counted so far, the one in hand included."""
        return self.tries.attempts

    @property
    def earlier(self) -> int:
        """Attempts counted before the one in hand."""
        return self.tries.attempts - int(self.counting)

    def _body(self) -> bytes:
        self.expires = time.time() + self.seconds
        return self._encode(self.owner, self.expires)

    def _encode(self, owner: str, expires: float) -> bytes:
        body = {"subject": self.subject, "owner": owner, "expires": expires}
        return json.dumps(body | self.tries.fields(), ensure_ascii=False).encode()

    def renew(self) -> None:
        """Push the expiry forward, unless the lease was let go meanwhile; raises
        :class:`LeaseLost` if someone else holds it."""
        with self._lock:
            if not self.ended:
                self._write(self._body())

    def end(self) -> str:
        """Let go of the lease without a write of its own (its claim is deleted with others):
        no renewal writes it again. The eTag of its last write."""
        with self._lock:
            self.ended = True
            return self.etag

    def _write(self, body: bytes) -> None:
        try:
            self.etag = self.store.put_bytes(self.key, body, if_match=self.etag)
        except (PreconditionFailed, ObjectMissing) as error:
            self.lost = True
            raise LeaseLost(f"{self.subject}: the lease was taken over") from error

    def done(self) -> bool:
        """Whether the claim has nothing to remember once released (it names no failure
        record), so deleting it is all its release needs."""
        return not self.tries.failed

    def note_failure(self, source_key: str) -> None:
        """Name ``source_key`` in the claim as having a failure record, before it is filed
        (and renew); raises :class:`LeaseLost` if someone else holds it."""
        with self._lock:
            if self.has_failure(source_key):
                return
            named = self.tries.failed
            failed = (
                (*named, source_key) if len(named) < MAX_NAMED_FAILURES else (*named, ANY_SOURCE)
            )
            self.tries = replace(self.tries, failed=failed)
            self._write(self._body())

    def has_failure(self, source_key: str) -> bool:
        """Whether ``source_key`` may have a failure record (the claim names it, or any)."""
        return source_key in self.tries.failed or ANY_SOURCE in self.tries.failed

    def forget_failure(self, source_key: str) -> None:
        """``source_key``'s failure record is gone; the release writes it down."""
        failed = tuple(key for key in self.tries.failed if key != source_key)
        self.tries = replace(self.tries, failed=failed)

    def release(self) -> None:
        """Give the subject back, forgetting the attempts; fine if it was taken over. A claim
        that names failure records stays, released, so they stay known."""
        if self.tries.failed:
            self.tries = replace(self.tries, attempts=0, last_error="", last_error_code="")
            self._release_keeping()
            return
        with self._lock:
            self.ended = True
            try:
                self.store.delete(self.key, if_match=self.etag)
            except (PreconditionFailed, ObjectMissing):
                log.info("%s: lease already gone when released", self.subject)

    def release_noting(self, code: str, message: str, *, counted: bool = True) -> None:
        """Give the subject back at once, keeping the attempts and the error for the next try.
        ``counted``: the attempt in hand is the image's (counted even if its conversion had not
        started: an unexpected failure may be the image's doing); else it is given back."""
        attempts = self.earlier + int(counted)
        self.tries = replace(
            self.tries, attempts=attempts, last_error=message, last_error_code=code
        )
        self._release_keeping()

    def release_untried(self) -> None:
        """Give the subject back as if the attempt in hand never began: earlier attempts and
        their error stay, and a claim with nothing to remember is deleted."""
        self.tries = replace(self.tries, attempts=self.earlier)
        self.counting = False
        if self.tries.attempts or self.tries.last_error or self.tries.failed:
            self._release_keeping()
        else:
            self.release()

    def _release_keeping(self) -> None:
        self.counting = False
        with self._lock:
            self.ended = True
            try:
                self.store.put_bytes(self.key, self._encode("", 0.0), if_match=self.etag)
            except (PreconditionFailed, ObjectMissing):
                log.info("%s: lease already gone when released", self.subject)


@dataclass(frozen=True)
class Busy:
    """The subject is held by someone else until ``expires``."""

    owner: str
    expires: float


def acquire(
    store: Store, subject: str, owner: str, seconds: float, *, marker: str = "", etag: str = ""
) -> Lease | Busy:
    """Take the lease of ``subject``, taking over an expired, released or garbage one, with
    the attempts counted so far at version ``etag`` of ``marker`` and the one in hand, counted
    in the same write; else say who holds it."""
    lease = Lease(store, subject, owner, seconds, Tries(marker, etag, 1))
    try:
        lease.etag = store.put_bytes(lease.key, lease._body(), if_none_match=True)
        return lease
    except PreconditionFailed:
        pass
    try:
        data, info = store.get_bytes(lease.key)
    except ObjectMissing:
        return acquire(store, subject, owner, seconds, marker=marker, etag=etag)
    try:
        holder, before = parse_claim(data)
    except BadClaim as garbage:
        log.warning("%s: replacing the claim %s: %s", subject, lease.key, garbage)
        holder, before = Busy(GARBAGE, 0.0), Tries(failed=_failed_sources(data))
    if holder.expires > time.time():
        return holder
    earlier = before.of(marker, etag)
    lease.tries = replace(earlier, attempts=earlier.attempts + 1)
    try:
        lease.etag = store.put_bytes(lease.key, lease._body(), if_match=info.etag)
    except (PreconditionFailed, ObjectMissing):
        return Busy("another worker", time.time() + seconds)
    if holder.owner and holder.owner != GARBAGE:
        log.info("%s: took over the expired lease of %s", subject, holder.owner)
    return lease


class BadClaim(ValueError):
    """A claim that is not what ptif writes."""


def read_claim(data: bytes) -> tuple[Busy, Tries]:
    """Who holds a claim until when, and the attempts it records; a garbage claim is held by
    nobody and records none."""
    try:
        return parse_claim(data)
    except BadClaim:
        return Busy(GARBAGE, 0.0), Tries()


#: A claim's text fields, each optional.
_CLAIM_TEXT = ("subject", "markerKey", "markerETag", "lastError", "lastErrorCode")


def parse_claim(data: bytes) -> tuple[Busy, Tries]:
    """The claim's holder and tries; :class:`BadClaim` if any field is missing or of the wrong
    type, or the expiry is further ahead than any lease may run."""
    try:
        body = json.loads(data)
    except (ValueError, RecursionError) as error:
        raise BadClaim(f"not JSON ({type(error).__name__})") from None
    if not isinstance(body, dict):
        raise BadClaim(f"a JSON {type(body).__name__}, not an object")
    owner, expires = body.get("owner"), _time(body.get("expires"))
    if not isinstance(owner, str):
        raise BadClaim(f"'owner' is {_shown(owner)}, not text")
    if expires is None:
        raise BadClaim(f"'expires' is {_shown(body.get('expires'))}, not a time")
    if expires > time.time() + MAX_LEASE_SECONDS + CLOCK_SLACK_SECONDS:
        raise BadClaim(f"'expires' is {expires}, further ahead than any lease may run")
    attempts = body.get("attempts", 0)
    if not _is_whole(attempts) or attempts < 0:
        raise BadClaim(f"'attempts' is {_shown(attempts)}, not a whole number ≥ 0")
    text = _text_fields(body)
    failed = body.get("failedSources", [])
    if not _are_sources(failed):
        raise BadClaim(f"'failedSources' is {_shown(failed)}, not a list of source keys")
    tries = Tries(
        text["markerKey"], text["markerETag"], attempts, text["lastError"],
        text["lastErrorCode"], tuple(failed),
    )  # fmt: skip
    return Busy(owner, expires), tries


def _text_fields(body: Mapping[str, Any]) -> dict[str, str]:
    found = {}
    for name in _CLAIM_TEXT:
        value = body.get(name)
        if value is not None and not isinstance(value, str):
            raise BadClaim(f"{name!r} is {_shown(value)}, not text")
        found[name] = value or ""
    return found


def _time(value: object) -> float | None:
    """Epoch seconds, if ``value`` is a finite number (not a boolean, not text)."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return None
    try:
        seconds = float(value)
    except OverflowError:
        return None
    return seconds if math.isfinite(seconds) else None


def _is_whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _are_sources(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(key, str) and key for key in value)


def _failed_sources(data: bytes) -> tuple[str, ...]:
    """What a garbage claim names as failed, if that field itself reads (a claim written by a
    worker whose clock ran ahead, say): those records stay known to whoever takes it over."""
    try:
        body = json.loads(data)
    except (ValueError, RecursionError):
        return ()
    failed = body.get("failedSources") if isinstance(body, dict) else None
    if not _are_sources(failed):
        return ()
    assert isinstance(failed, list)
    return tuple(failed) if len(failed) <= MAX_NAMED_FAILURES else (ANY_SOURCE,)


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:37]}..."


class _Periodic:
    """A background thread that calls :meth:`tick` every ``interval`` seconds while the
    ``with`` block runs."""

    def __init__(self, interval: float, name: str) -> None:
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self.tick()
            except Exception:  # a thread that died here would stop renewing leases for good
                log.exception("%s: one round failed; trying again next round", self._thread.name)

    def tick(self) -> None:
        raise NotImplementedError


class ClaimSweeper(_Periodic):
    """Deletes the claims of finished items several at a time: one batched delete for up to
    ``batch`` of them, and at least every ``seconds`` for what is waiting, each only if it is
    still the one written (delete-if-match), so one taken over meanwhile is left to its new
    holder.

    A claim waiting here is still held, until its expiry at the latest: its item is done and
    its marker gone, so nobody needs it; a new marker for its output waits for the sweep as it
    would for any held claim. If the worker dies first, the claims left expire and are taken
    over, or stay behind unused, as a crashed worker's do."""

    def __init__(self, store: Store, batch: int = 100, seconds: float = 5.0) -> None:
        super().__init__(seconds, "ptif-sweeper")
        self.store = store
        self.batch = batch
        self._waiting: list[tuple[str, str]] = []
        self._lock = threading.Lock()

    def __exit__(self, *exc: object) -> None:
        super().__exit__(*exc)
        self.sweep()

    def add(self, lease: Lease) -> None:
        """Delete ``lease``'s claim with the next sweep."""
        etag = lease.end()
        with self._lock:
            self._waiting.append((lease.key, etag))
            full = len(self._waiting) >= self.batch
        if full:
            self.sweep()

    def sweep(self) -> None:
        """Delete every claim waiting; one the store refuses now expires by itself."""
        with self._lock:
            waiting, self._waiting = self._waiting, []
        if not waiting:
            return
        try:
            left = self.store.delete_matching(waiting)
        except PtifError as error:
            log.debug("%d claims not deleted (%s); they expire by themselves", len(waiting), error)
            return
        for key in left:
            log.info("%s: claim already gone or taken over when deleted", key)

    def tick(self) -> None:
        self.sweep()


class LeaseKeeper(_Periodic):
    """Renews every held lease from one background thread, a third of a lease apart."""

    def __init__(self, seconds: float) -> None:
        super().__init__(seconds / 3, "ptif-leases")
        self._held: dict[str, Lease] = {}
        self._failing: set[str] = set()
        self._lock = threading.Lock()

    def hold(self, lease: Lease) -> None:
        with self._lock:
            self._held[lease.subject] = lease

    def drop(self, lease: Lease) -> None:
        with self._lock:
            self._held.pop(lease.subject, None)

    def held(self) -> list[Lease]:
        with self._lock:
            return list(self._held.values())

    def tick(self) -> None:
        for lease in self.held():
            self._renew(lease)

    def _renew(self, lease: Lease) -> None:
        try:
            lease.renew()
        except LeaseLost:
            log.warning("%s: lost the lease; another worker will finish it", lease.subject)
            self.drop(lease)
        except PtifError as error:
            # Once per lease, and not for a store that cannot be reached: the run stops on its
            # own if that lasts, and says so in one line.
            first = lease.subject not in self._failing
            self._failing.add(lease.subject)
            quiet = not first or error.code == STORE_UNREACHABLE
            level = logging.DEBUG if quiet else logging.WARNING
            log.log(level, "%s: could not renew the lease yet (%s)", lease.subject, error)
        else:
            self._failing.discard(lease.subject)
