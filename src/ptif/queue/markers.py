"""Markers: the queue contract. One small JSON object per source image that needs converting.

A marker lives at ``<queue prefix><source key>.json`` in the process store (``rbsc/`` by default,
as in the original system); keys too long for S3, or that could not be stored as a file, go to
``<queue prefix>_long/<sha256 of the key>.json``. The worker trusts the marker's ``key`` field,
not its name, so markers the original system wrote (named by basename) are processed too.

Writes are idempotent and the newer event wins: a marker is replaced only by one whose S3
``sequencer`` (else ``eventTime``) is later.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ptif.errors import BAD_MARKER, PtifError
from ptif.stores.base import ObjectMissing, PreconditionFailed, Store, key_problem
from ptif.timeutil import format_time, parse_time

log = logging.getLogger(__name__)

S3_KEY_LIMIT = 1024
#: Longest folder or file name most filesystems (and SeaweedFS) accept.
SEGMENT_LIMIT = 255
HASHED_FOLDER = "_long/"
FAILED_PREFIX = "failed/"
CLAIMS_PREFIX = "claims/"
REPORTS_PREFIX = "reports/"
ORIGINS = ("s3-event", "watch", "mark", "reconcile", "retry")
WRITE_ATTEMPTS = 8


class BadMarker(PtifError):
    """A marker that is not JSON, or has no usable ``key``."""

    code = BAD_MARKER


@dataclass(frozen=True)
class Marker:
    """One unit of work: the source key and what is known about the object."""

    fields: Mapping[str, Any]

    @property
    def key(self) -> str:
        return str(self.fields["key"])

    @property
    def etag(self) -> str:
        return str(self.fields.get("eTag") or "").strip('"')

    @property
    def attempts(self) -> int:
        return int(self.fields.get("attempts") or 0)

    def with_fields(self, **changes: Any) -> Marker:
        return Marker({**self.fields, **changes})

    def to_bytes(self) -> bytes:
        return json.dumps(dict(self.fields), ensure_ascii=False, sort_keys=True).encode()


def new_marker(
    key: str,
    *,
    origin: str,
    etag: str = "",
    size: int | None = None,
    bucket: str = "",
    version_id: str | None = None,
    sequencer: str | None = None,
    event_time: datetime | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Marker:
    """A marker with the fields of the contract (``path`` is the key's folder, with ``/``)."""
    folder = key.rpartition("/")[0]
    fields: dict[str, Any] = {
        **(extra or {}),
        "key": key,
        "path": f"{folder}/" if folder else "",
        "eTag": etag.strip('"'),
        "bucket": bucket,
        "size": size,
        "versionId": version_id,
        "sequencer": sequencer,
        "eventTime": format_time(event_time or datetime.now(UTC)),
        "origin": origin,
    }
    return Marker(fields)


def parse_marker(data: bytes, name: str) -> Marker:
    try:
        fields = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise BadMarker(f"{name}: not a JSON marker ({error})") from error
    if not isinstance(fields, dict) or not isinstance(fields.get("key"), str) or not fields["key"]:
        raise BadMarker(f"{name}: the marker has no 'key' field naming the source image")
    return Marker(fields)


def _needs_hashing(key: str, prefix: str) -> bool:
    name = f"{prefix}{key}.json"
    unsafe = key_problem(key) is not None  # the stores' own rule: no store could hold the name
    too_long = len(name.encode()) > S3_KEY_LIMIT
    long_segment = any(len(s.encode()) > SEGMENT_LIMIT for s in name.split("/"))
    return unsafe or too_long or long_segment or key.startswith(HASHED_FOLDER)


def record_key(source_key: str, prefix: str) -> str:
    """Where the object about ``source_key`` lives under ``prefix`` (queue or ``failed/``)."""
    if _needs_hashing(source_key, prefix):
        digest = hashlib.sha256(source_key.encode("utf-8", "surrogatepass")).hexdigest()
        return f"{prefix}{HASHED_FOLDER}{digest}.json"
    return f"{prefix}{source_key}.json"


def marker_key(source_key: str, queue_prefix: str) -> str:
    return record_key(source_key, queue_prefix)


def failed_key(source_key: str) -> str:
    return record_key(source_key, FAILED_PREFIX)


def sequencer_order(value: str | None, width: int) -> str:
    """S3 sequencers differ in length: right-pad with zeros, then compare as strings."""
    return (value or "").upper().ljust(width, "0")


def is_newer(candidate: Marker, current: Marker) -> bool:
    """Whether ``candidate`` describes a later event than ``current`` (ties are not newer)."""
    new_seq, old_seq = candidate.fields.get("sequencer"), current.fields.get("sequencer")
    if new_seq and old_seq:
        width = max(len(new_seq), len(old_seq))
        return sequencer_order(new_seq, width) > sequencer_order(old_seq, width)
    return _event_time(candidate) > _event_time(current)


def _event_time(marker: Marker) -> datetime:
    text = str(marker.fields.get("eventTime") or "")
    try:
        return parse_time(text)
    except ValueError:
        return datetime.min.replace(tzinfo=UTC)


def write_marker(store: Store, marker: Marker, queue_prefix: str) -> bool:
    """Queue ``marker`` unless a marker for a newer event is there. True if written."""
    key = marker_key(marker.key, queue_prefix)
    for _ in range(WRITE_ATTEMPTS):
        try:
            store.put_bytes(key, marker.to_bytes(), if_none_match=True)
            return True
        except PreconditionFailed:
            pass
        try:
            data, info = store.get_bytes(key)
        except ObjectMissing:
            continue
        current = _parse_or_none(data, key)
        if current is not None and not is_newer(marker, current):
            return False
        try:
            store.put_bytes(key, marker.to_bytes(), if_match=info.etag)
            return True
        except (PreconditionFailed, ObjectMissing):
            continue
    raise PtifError(f"{key}: the marker kept changing while it was written; try again")


def create_marker(store: Store, marker: Marker, queue_prefix: str) -> bool:
    """Queue ``marker`` only if nothing is queued for its key: a queued marker may carry fields
    (such as ``copyrightStatus``) that this one would lose. True if written."""
    try:
        store.put_bytes(marker_key(marker.key, queue_prefix), marker.to_bytes(), if_none_match=True)
    except PreconditionFailed:
        return False
    return True


def _parse_or_none(data: bytes, key: str) -> Marker | None:
    try:
        return parse_marker(data, key)
    except BadMarker:
        log.warning("%s: replacing an unreadable marker", key)
        return None
