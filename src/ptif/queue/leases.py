"""Leases: who is converting which marker right now, and how often it was tried.

A lease is a small object under ``claims/`` named by a hash of the output key
(:func:`ptif.queue.layout.claim_key`), holding its owner and expiry. Taking one is a
create-if-absent; taking over an expired one, renewing and releasing are replace/delete-if-match,
so two workers never hold the same marker at once, on one machine or many. Leases are short and
renewed in the background while work goes on, so a crashed worker's markers are taken over within
minutes. Clocks of the workers are assumed to agree to within a few seconds (NTP), far less than
a lease's length.

The claim also counts the attempts at the marker it is for, and a transient failure leaves it
behind, released, with the error: the marker is never rewritten, so it keeps its age.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass, field, replace

from ptif.errors import LEASE_LOST, PtifError
from ptif.queue.layout import claim_key
from ptif.stores.base import ObjectMissing, PreconditionFailed, Store

log = logging.getLogger(__name__)


class LeaseLost(PtifError):
    """Another worker holds the marker now (ours expired, or the store lost track)."""

    code = LEASE_LOST


@dataclass(frozen=True)
class Tries:
    """What the claim remembers of earlier attempts at one version of one marker."""

    marker: str = ""
    marker_etag: str = ""
    attempts: int = 0
    last_error: str = ""
    last_error_code: str = ""

    def of(self, marker: str, marker_etag: str) -> Tries:
        """These tries if they were at that marker's version, else none: a newer event that
        replaced the marker starts the count again."""
        if (self.marker, self.marker_etag) == (marker, marker_etag):
            return self
        return Tries(marker, marker_etag)

    def fields(self) -> dict[str, object]:
        fields: dict[str, object] = {"attempts": self.attempts}
        if self.marker:
            fields |= {"markerKey": self.marker, "markerETag": self.marker_etag}
        if self.last_error:
            fields |= {"lastError": self.last_error, "lastErrorCode": self.last_error_code}
        return fields


@dataclass
class Lease:
    """``subject`` (an output key) held by this worker until ``expires`` (epoch seconds).

    The claim object also counts the attempts at the marker being worked on. It is written when
    the lease is taken, so an image that kills its worker every time is still counted, and it
    outlives a transient failure (released, with the error noted), so the marker itself is never
    rewritten and keeps the age of its event.
    """

    store: Store
    subject: str
    owner: str
    seconds: float
    tries: Tries = field(default_factory=Tries)
    etag: str = ""
    expires: float = 0.0
    lost: bool = field(default=False)

    @property
    def key(self) -> str:
        return claim_key(self.subject)

    @property
    def attempts(self) -> int:
        return self.tries.attempts

    def _body(self) -> bytes:
        self.expires = time.time() + self.seconds
        return self._encode(self.owner, self.expires)

    def _encode(self, owner: str, expires: float) -> bytes:
        body = {"subject": self.subject, "owner": owner, "expires": expires}
        return json.dumps(body | self.tries.fields(), ensure_ascii=False).encode()

    def renew(self) -> None:
        """Push the expiry forward; raises :class:`LeaseLost` if someone else holds it."""
        try:
            self.etag = self.store.put_bytes(self.key, self._body(), if_match=self.etag)
        except (PreconditionFailed, ObjectMissing) as error:
            self.lost = True
            raise LeaseLost(f"{self.subject}: the lease was taken over") from error

    def release(self) -> None:
        """Give the subject back, forgetting the attempts; fine if it was taken over."""
        try:
            self.store.delete(self.key, if_match=self.etag)
        except (PreconditionFailed, ObjectMissing):
            log.info("%s: lease already gone when released", self.subject)

    def release_noting(self, code: str, message: str) -> None:
        """Give the subject back at once, keeping the attempts and the error for the next try."""
        self.tries = replace(self.tries, last_error=message, last_error_code=code)
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
    """Take the lease of ``subject``, taking over an expired or released one, and count one
    more attempt at version ``etag`` of ``marker``; else say who holds it."""
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
    holder, before = read_claim(data)
    if holder.expires > time.time():
        return holder
    before = before.of(marker, etag)
    lease.tries = replace(before, attempts=before.attempts + 1)
    try:
        lease.etag = store.put_bytes(lease.key, lease._body(), if_match=info.etag)
    except (PreconditionFailed, ObjectMissing):
        return Busy("another worker", time.time() + seconds)
    if holder.owner:
        log.info("%s: took over the expired lease of %s", subject, holder.owner)
    return lease


def read_claim(data: bytes) -> tuple[Busy, Tries]:
    """Who holds a claim until when, and the attempts it records."""
    try:
        body = json.loads(data)
        holder = Busy(str(body["owner"]), float(body["expires"]))
    except (ValueError, KeyError, TypeError):
        return Busy("unknown (unreadable lease)", 0.0), Tries()
    try:
        tries = Tries(
            str(body.get("markerKey") or ""),
            str(body.get("markerETag") or ""),
            int(body.get("attempts") or 0),
            str(body.get("lastError") or ""),
            str(body.get("lastErrorCode") or ""),
        )
    except (ValueError, TypeError):
        tries = Tries()
    return holder, tries


class LeaseKeeper:
    """Renews every held lease from one background thread, a third of a lease apart."""

    def __init__(self, seconds: float) -> None:
        self._interval = seconds / 3
        self._held: dict[str, Lease] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ptif-leases", daemon=True)

    def __enter__(self) -> LeaseKeeper:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def hold(self, lease: Lease) -> None:
        with self._lock:
            self._held[lease.subject] = lease

    def drop(self, lease: Lease) -> None:
        with self._lock:
            self._held.pop(lease.subject, None)

    def held(self) -> list[Lease]:
        with self._lock:
            return list(self._held.values())

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            for lease in self.held():
                self._renew(lease)

    def _renew(self, lease: Lease) -> None:
        try:
            lease.renew()
        except LeaseLost:
            log.warning("%s: lost the lease; another worker will finish it", lease.subject)
            self.drop(lease)
        except PtifError as error:
            log.warning("%s: could not renew the lease yet (%s)", lease.subject, error)
