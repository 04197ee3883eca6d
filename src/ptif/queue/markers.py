"""Markers: the queue contract. One small JSON object per source image that needs converting.

A marker lives at ``<queue prefix><source key>.json`` in the process store (``rbsc/`` by default,
as in the original system); keys too long for S3, or that could not be stored as a file, go to
``<queue prefix>_long/<sha256 of the key>.json`` (:func:`ptif.queue.layout.marker_key`). The
worker trusts the marker's ``key`` field, not its name, so markers the original system wrote
(named by basename) are processed too.

Writes are idempotent, and a queued marker never hides a version: a marker for another version
of the same key (another eTag or size) replaces the queued one unless the event proves it older,
and only S3's ``sequencer`` proves that (:func:`supersedes`). File times and LastModified
seconds tie and go backwards (``rsync -t``, ``cp -p``, two PUTs in one second), so they decide
nothing: a marker that names an older version costs at most a conversion found current, while
a refused one loses the version for good.

Reading one checks every field of the contract for its type (:data:`FIELD_TYPES`): anyone who
can write to the queue can write any JSON there, and a field of the wrong type would otherwise
raise at the same place on every run, for ever. Such a marker is a :class:`BadMarker`: the
worker files it under ``failed/_unreadable/`` with the code ``bad-marker`` at its first read,
and intake replaces it when an event for its key arrives.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ptif.errors import BAD_MARKER, PtifError
from ptif.queue.layout import marker_key
from ptif.stores.base import ObjectMissing, PreconditionFailed, Store
from ptif.timeutil import format_time, parse_time

log = logging.getLogger(__name__)

ORIGINS = ("s3-event", "watch", "mark", "reconcile", "retry")
WRITE_ATTEMPTS = 8
#: A marker is a few hundred bytes; one bigger than this is not read, but filed as bad.
MAX_MARKER_BYTES = 1 << 20


class BadMarker(PtifError):
    """A marker that is not JSON, has no usable ``key``, or has a field of the wrong type."""

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


def _text(value: object) -> bool:
    return isinstance(value, str)


def _count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _time_text(value: object) -> bool:
    if not isinstance(value, str):
        return False
    if not value:  # no time: such a marker is older than any other
        return True
    try:
        parse_time(value)
    except ValueError:
        return False
    return True


#: Each field of the contract a marker may hold, what it must be when present and not null,
#: and how an error message names that.
FIELD_TYPES: dict[str, tuple[Callable[[object], bool], str]] = {
    "path": (_text, "text"),
    "eTag": (_text, "text"),
    "bucket": (_text, "text"),
    "size": (_count, "a whole number ≥ 0"),
    "versionId": (_text, "text"),
    "sequencer": (_text, "text"),
    "eventTime": (_time_text, "an ISO 8601 time"),
    "origin": (_text, "text"),
    "attempts": (_count, "a whole number ≥ 0"),
    "lastError": (_text, "text"),
    "copyrightStatus": (_text, "text"),
}


def parse_marker(data: bytes, name: str) -> Marker:
    """The marker in ``data`` (found at ``name``); :class:`BadMarker` if it is not a JSON
    object with a ``key``, or any field of the contract has the wrong type."""
    try:
        fields = json.loads(data)
    except (ValueError, RecursionError) as error:  # bad UTF-8 or JSON, a huge number, nesting
        reason = " ".join(str(error).split())[:120] or type(error).__name__
        raise BadMarker(f"{name}: not a JSON marker ({reason})") from None
    if not isinstance(fields, dict) or not isinstance(fields.get("key"), str) or not fields["key"]:
        raise BadMarker(f"{name}: the marker has no 'key' field naming the source image")
    _check_key(fields["key"], name)
    for field, (valid, expected) in FIELD_TYPES.items():
        value = fields.get(field)
        if value is not None and not valid(value):
            raise BadMarker(f"{name}: the marker's {field!r} is {_shown(value)}, not {expected}")
    return Marker(fields)


def _check_key(key: str, name: str) -> None:
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:
        raise BadMarker(f"{name}: the marker's 'key' is not valid Unicode text") from None


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:37]}..."


def sequencer_order(value: str | None, width: int) -> str:
    """S3 sequencers differ in length: right-pad with zeros, then compare as strings."""
    return (value or "").upper().ljust(width, "0")


def same_version(candidate: Marker, current: Marker) -> bool:
    """Whether two markers name the same version of their key: the same eTag and, where both
    say it, the same size (markers without an eTag name the same unknown version)."""
    if candidate.etag != current.etag:
        return False
    new_size, old_size = candidate.fields.get("size"), current.fields.get("size")
    return new_size is None or old_size is None or new_size == old_size


def is_older(candidate: Marker, current: Marker) -> bool:
    """Whether ``candidate``'s event is proven no later than ``current``'s: both carry S3
    sequencers (which order the events of one key) and the candidate's is not greater."""
    new_seq, old_seq = candidate.fields.get("sequencer"), current.fields.get("sequencer")
    if not (new_seq and old_seq):
        return False
    width = max(len(new_seq), len(old_seq))
    return sequencer_order(new_seq, width) <= sequencer_order(old_seq, width)


def supersedes(candidate: Marker, current: Marker) -> bool:
    """Whether ``candidate`` should replace the queued ``current``: it names another version
    and is not proven older. The same version is a duplicate event; times prove nothing."""
    if is_older(candidate, current):
        return False
    return not same_version(candidate, current)


def write_marker(store: Store, marker: Marker, queue_prefix: str) -> bool:
    """Queue ``marker`` unless the queued one is for the same version or a proven newer event
    (:func:`supersedes`). True if written."""
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
        if current is not None and not supersedes(marker, current):
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


def is_queued(store: Store, source_key: str, queue_prefix: str) -> bool:
    """Whether a marker is queued for ``source_key``: what :func:`create_marker` would find,
    so that a dry run predicts the real one."""
    return store.head(marker_key(source_key, queue_prefix)) is not None


def _parse_or_none(data: bytes, key: str) -> Marker | None:
    try:
        return parse_marker(data, key)
    except BadMarker:
        log.warning("%s: replacing an unreadable marker", key)
        return None
