"""Leases: who is converting which marker right now.

A lease is a small object under ``claims/`` named by a hash of the marker's key, holding its
owner and expiry. Taking one is a create-if-absent; taking over an expired one, renewing and
releasing are replace/delete-if-match, so two workers never hold the same marker at once, on one
machine or many. Leases are short and renewed in the background while work goes on, so a crashed
worker's markers are taken over within minutes. Clocks of the workers are assumed to agree to
within a few seconds (NTP), far less than a lease's length.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from dataclasses import dataclass, field

from ptif.errors import PtifError
from ptif.markers import CLAIMS_PREFIX
from ptif.stores.base import ObjectMissing, PreconditionFailed, Store

log = logging.getLogger(__name__)


class LeaseLost(PtifError):
    """Another worker holds the marker now (ours expired, or the store lost track)."""

    code = "lease-lost"


def claim_key(marker_key: str) -> str:
    return f"{CLAIMS_PREFIX}{hashlib.sha256(marker_key.encode()).hexdigest()[:40]}.json"


@dataclass
class Lease:
    """A marker held by this worker until ``expires`` (epoch seconds)."""

    store: Store
    marker_key: str
    owner: str
    seconds: float
    etag: str = ""
    expires: float = 0.0
    lost: bool = field(default=False)

    @property
    def key(self) -> str:
        return claim_key(self.marker_key)

    def _body(self) -> bytes:
        self.expires = time.time() + self.seconds
        body = {"marker": self.marker_key, "owner": self.owner, "expires": self.expires}
        return json.dumps(body).encode()

    def renew(self) -> None:
        """Push the expiry forward; raises :class:`LeaseLost` if someone else holds it."""
        try:
            self.etag = self.store.put_bytes(self.key, self._body(), if_match=self.etag)
        except (PreconditionFailed, ObjectMissing) as error:
            self.lost = True
            raise LeaseLost(f"{self.marker_key}: the lease was taken over") from error

    def release(self) -> None:
        """Give the marker back; fine if it was already taken over."""
        try:
            self.store.delete(self.key, if_match=self.etag)
        except (PreconditionFailed, ObjectMissing):
            log.info("%s: lease already gone when released", self.marker_key)


@dataclass(frozen=True)
class Busy:
    """The marker is held by someone else until ``expires``."""

    owner: str
    expires: float


def acquire(store: Store, marker_key: str, owner: str, seconds: float) -> Lease | Busy:
    """Take the marker's lease, taking over an expired one; else say who holds it."""
    lease = Lease(store, marker_key, owner, seconds)
    try:
        lease.etag = store.put_bytes(lease.key, lease._body(), if_none_match=True)
        return lease
    except PreconditionFailed:
        pass
    try:
        data, info = store.get_bytes(lease.key)
    except ObjectMissing:
        return acquire(store, marker_key, owner, seconds)
    holder = _holder(data)
    if holder.expires > time.time():
        return holder
    try:
        lease.etag = store.put_bytes(lease.key, lease._body(), if_match=info.etag)
    except (PreconditionFailed, ObjectMissing):
        return Busy("another worker", time.time() + seconds)
    log.info("%s: took over the expired lease of %s", marker_key, holder.owner)
    return lease


def _holder(data: bytes) -> Busy:
    try:
        body = json.loads(data)
        return Busy(str(body["owner"]), float(body["expires"]))
    except (ValueError, KeyError, TypeError):
        return Busy("unknown (unreadable lease)", 0.0)


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
            self._held[lease.marker_key] = lease

    def drop(self, lease: Lease) -> None:
        with self._lock:
            self._held.pop(lease.marker_key, None)

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
            log.warning("%s: lost the lease; another worker will finish it", lease.marker_key)
            self.drop(lease)
        except PtifError as error:
            log.warning("%s: could not renew the lease yet (%s)", lease.marker_key, error)
