"""Failure records: what ``failed/`` holds about an image that will not convert. The worker
writes them; ``ptif status`` counts them and ``ptif retry`` turns them back into markers.

A failure record sits at :func:`~ptif.queue.layout.failed_key` of the source key. It holds the
marker's own fields plus :data:`FAILURE_FIELDS`: ``code`` (one of :mod:`ptif.errors`' codes, as
``undecodable`` or ``too-many-attempts``), ``message``, ``attempts``, ``failedAt``, ``markerKey``
(where the marker was), ``worker`` (who gave up) and, when earlier attempts failed for a
transient reason, ``lastError`` and ``lastErrorCode``, and ``sourceVersion``: the version of
the source that failed, ``{"eTag": …, "size": …}`` as the worker found it, or ``null`` when the
source was not there (``source-missing``). ``ptif retry`` removes exactly those fields, so the
marker it queues again is the one that failed, with its attempts back at zero.

A record describes the present only while the source is still that version
(:func:`describes`): ``reconcile`` leaves alone a source whose current version failed, and
queues one that changed or came back since. A conversion of the key removes its record, and
``ptif status`` does not count a record while a marker for another version of its key is
queued (:func:`superseded_by`).

A marker that is not JSON, or names no source, cannot be filed under its source key: its record
goes to :func:`~ptif.queue.layout.unreadable_key` of the marker's key, with the code, the message
and the marker's first bytes (``raw``). ``ptif retry`` counts those as not retryable.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ptif.errors import SOURCE_MISSING, PtifError
from ptif.queue.layout import failed_key, unreadable_key
from ptif.queue.leases import Tries
from ptif.queue.markers import Marker, same_version
from ptif.stores.base import ObjectInfo, ObjectMissing, Store

#: Fields a failure record adds to the marker's own; removed again when it is re-queued.
FAILURE_FIELDS = (
    "code", "message", "attempts", "failedAt", "markerKey", "worker", "lastError",
    "lastErrorCode", "lastAttemptAt", "sourceVersion",
)  # fmt: skip
#: The version a record names when the worker did not look at the source (no ``sourceVersion``).
UNSEEN = "unseen"
#: How much of an unreadable marker its record keeps, in bytes.
RAW_LIMIT = 4096


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class FailureRecord:
    """``marker`` (found at ``marker_key``), given up by ``worker`` after ``attempts`` with
    ``error``; ``earlier`` holds the tries before, whose last error the record keeps;
    ``source`` the version that failed (``None``: not there; :data:`UNSEEN`: not looked at)."""

    marker: Marker
    error: PtifError
    marker_key: str
    attempts: int
    worker: str
    earlier: Tries | None = None
    source: ObjectInfo | str | None = UNSEEN

    @property
    def key(self) -> str:
        return failed_key(self.marker.key)

    def fields(self) -> dict[str, Any]:
        tries = self.earlier
        last = (
            {"lastError": tries.last_error, "lastErrorCode": tries.last_error_code}
            if tries and tries.last_error
            else {}
        )
        seen = {} if self.source == UNSEEN else {"sourceVersion": _version(self.source)}
        return {
            **self.marker.fields,
            **last,
            **seen,
            "code": self.error.code,
            "message": str(self.error),
            "attempts": self.attempts,
            "failedAt": now_iso(),
            "markerKey": self.marker_key,
            "worker": self.worker,
        }

    def to_bytes(self) -> bytes:
        return json.dumps(self.fields(), ensure_ascii=False, sort_keys=True).encode()


def write_failure(store: Store, record: FailureRecord) -> str:
    """File ``record`` in ``failed/``, replacing an older one of its key; returns its key."""
    store.put_bytes(record.key, record.to_bytes())
    return record.key


def _version(source: object) -> dict[str, Any] | None:
    if not isinstance(source, ObjectInfo):
        return None
    return {"eTag": source.etag, "size": source.size}


def describes(record: Mapping[str, Any], source: ObjectInfo | None) -> bool:
    """Whether ``record`` is about ``source`` as it is now (``None``: not there). Records of
    earlier ptif versions name the marker's eTag, and a ``source-missing`` one no version."""
    if "sourceVersion" in record:
        version = record["sourceVersion"]
        if not isinstance(version, dict):
            return source is None
        size = version.get("size")
        return (
            source is not None
            and version.get("eTag") == source.etag
            and (size is None or size == source.size)
        )
    if record.get("code") == SOURCE_MISSING:
        return source is None
    etag = str(record.get("eTag") or "").strip('"')
    return source is not None and bool(etag) and etag == source.etag


def superseded_by(record: Mapping[str, Any], queued: Marker | None) -> bool:
    """Whether the ``queued`` marker of the record's key names another version than the one
    that failed (any version, after ``source-missing``): news the record predates, so it does
    not describe the present."""
    if queued is None:
        return False
    version = record.get("sourceVersion", UNSEEN)
    if version == UNSEEN:  # a record of an earlier ptif: the version its marker named
        failed = Marker({k: v for k, v in record.items() if k not in FAILURE_FIELDS})
    elif isinstance(version, dict):
        failed = Marker({"eTag": version.get("eTag") or "", "size": version.get("size")})
    else:
        return True
    return not same_version(queued, failed)


def remove_failure(store: Store, source_key: str) -> None:
    """Remove the failure record of ``source_key``, if there is one: its key converted."""
    with contextlib.suppress(ObjectMissing):
        store.delete(failed_key(source_key))


def unreadable_record(
    marker_key: str, data: bytes, error: PtifError, *, worker: str
) -> dict[str, Any]:
    """The record of the marker at ``marker_key`` whose bytes ``data`` could not be read."""
    return {
        "markerKey": marker_key,
        "code": error.code,
        "message": str(error),
        "raw": data[:RAW_LIMIT].decode("utf-8", "replace"),
        "failedAt": now_iso(),
        "worker": worker,
    }


def write_unreadable(
    store: Store, marker_key: str, data: bytes, error: PtifError, *, worker: str
) -> str:
    """File an unreadable marker in ``failed/_unreadable/``; returns the record's key."""
    record = unreadable_record(marker_key, data, error, worker=worker)
    key = unreadable_key(marker_key)
    store.put_bytes(key, json.dumps(record, ensure_ascii=False).encode())
    return key


def requeued_marker(record: Mapping[str, Any]) -> Marker:
    """The marker a failure record was made from, to queue again by ``ptif retry``."""
    fields = {k: v for k, v in record.items() if k not in FAILURE_FIELDS}
    return Marker({**fields, "origin": "retry"})
