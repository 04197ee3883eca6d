"""The queue seen from outside: ``ptif status`` counts it, ``ptif retry`` re-queues failures.

Both read only the process store, so they work from any machine while workers run.

``failed`` counts the failures that describe the present: a record whose key has a marker for
another version queued (a new upload since, or a source that came back after ``source-missing``)
is ``superseded``, counted apart; the worker removes it when the key converts.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from ptif.bounded import run_bounded
from ptif.queue.failures import requeued_marker, superseded_by
from ptif.queue.layout import CLAIMS_PREFIX, FAILED_PREFIX, HASHED_FOLDER, PAGES_PREFIX, marker_key
from ptif.queue.leases import Busy, Tries, read_claim
from ptif.queue.markers import BadMarker, Marker, create_marker, parse_marker
from ptif.stores.base import ObjectInfo, ObjectMissing, PreconditionFailed, Store

T = TypeVar("T")


@dataclass
class QueueStatus:
    pending: int = 0
    claimed: int = 0
    retrying: int = 0
    failed: int = 0
    superseded: int = 0
    failed_by_code: Counter[str] = field(default_factory=Counter)
    oldest_pending_age_s: float | None = None
    #: Multi-page sources converted without ``all_pages``: key, pages, left_out each.
    left_out: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "pending": self.pending,
            "claimed": self.claimed,
            "retrying": self.retrying,
            "failed": self.failed,
            "superseded": self.superseded,
            "failed_by_code": dict(sorted(self.failed_by_code.items())),
            "oldest_pending_age_s": self.oldest_pending_age_s,
            "pages_left_out": {
                "sources": len(self.left_out),
                "pages": sum(note["left_out"] for note in self.left_out),
                "list": self.left_out,
            },
        }


def _read_json(store: Store, key: str) -> dict[str, Any] | None:
    try:
        data, _ = store.get_bytes(key)
        body = json.loads(data)
    except (ObjectMissing, ValueError):
        return None
    return body if isinstance(body, dict) else None


def _read_claim(store: Store, key: str) -> tuple[Busy, Tries]:
    try:
        data, _ = store.get_bytes(key)
    except ObjectMissing:
        return Busy("", 0.0), Tries()
    return read_claim(data)


def _json_objects(store: Store, prefix: str) -> Iterator[ObjectInfo]:
    return (info for info in store.list(prefix) if info.key.endswith(".json"))


def _read_all(store: Store, prefix: str, read: Callable[[Store, str], T]) -> Iterator[T]:
    """``read`` of every JSON object under ``prefix``, many at a time, with few in memory;
    the first error is raised."""

    def work(info: ObjectInfo) -> T:
        return read(store, info.key)

    for _, result in run_bounded(work, _json_objects(store, prefix)):
        if isinstance(result, Exception):
            raise result
        yield result


def status(process: Store, queue_prefix: str) -> QueueStatus:
    result = QueueStatus()
    now = datetime.now(UTC)
    for info in _json_objects(process, queue_prefix):
        result.pending += 1
        age = (now - info.modified).total_seconds()
        if result.oldest_pending_age_s is None or age > result.oldest_pending_age_s:
            result.oldest_pending_age_s = max(0.0, age)
    for holder, tries in _read_all(process, CLAIMS_PREFIX, _read_claim):
        if holder.expires > time.time():
            result.claimed += 1
        elif tries.last_error_code:
            result.retrying += 1
    for record, queued in _read_all(process, FAILED_PREFIX, _failure_reader(queue_prefix)):
        if record is None:
            continue
        if superseded_by(record, queued):
            result.superseded += 1
        else:
            result.failed += 1
            result.failed_by_code[str(record.get("code") or "unknown")] += 1
    for note in _read_all(process, PAGES_PREFIX, _read_json):
        if note is not None and isinstance(note.get("key"), str):
            pages, left_out = note.get("pages"), note.get("left_out")
            if isinstance(pages, int) and isinstance(left_out, int):
                result.left_out.append({"key": note["key"], "pages": pages, "left_out": left_out})
    return result


#: What ``ptif status --failed`` shows of each failure record (``failedAt`` as ``failed_at``).
FAILURE_SUMMARY = ("key", "code", "message", "attempts", "failedAt")


def failure_list(process: Store, prefix: str = "") -> Iterator[dict[str, Any]]:
    """Each failure record under ``failed/<prefix>`` (and every hashed and unreadable one), as
    key, code, message, attempts and when; an unreadable marker's record is named by where the
    marker was, and a record that is itself unreadable by its own key, with code ``unknown``."""
    for info in _json_objects(process, FAILED_PREFIX + prefix):
        record = _read_json(process, info.key) or {"message": "this record is not JSON"}
        row = {_snake(name): record.get(name) for name in FAILURE_SUMMARY}
        row["key"] = (
            row["key"] if isinstance(row["key"], str) else (record.get("markerKey") or info.key)
        )
        row["code"] = row["code"] or "unknown"
        row["record"] = info.key
        yield row


def _snake(name: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name)


def _failure_reader(
    queue_prefix: str,
) -> Callable[[Store, str], tuple[dict[str, Any] | None, Marker | None]]:
    """Reads a failure record and the marker queued for its key, if any."""

    def read(store: Store, key: str) -> tuple[dict[str, Any] | None, Marker | None]:
        record = _read_json(store, key)
        source_key = record.get("key") if record else None
        if not isinstance(source_key, str) or not source_key:
            return record, None
        return record, _queued(store, marker_key(source_key, queue_prefix))

    return read


def _queued(store: Store, key: str) -> Marker | None:
    try:
        data, _ = store.get_bytes(key)
        return parse_marker(data, key)
    except (ObjectMissing, BadMarker):
        return None


@dataclass
class RetryReport:
    requeued: int = 0
    skipped: int = 0
    not_retryable: int = 0
    keys: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "requeued": self.requeued,
            "skipped": self.skipped,
            "not_retryable": self.not_retryable,
            "keys": self.keys,
        }


def retry(
    process: Store,
    queue_prefix: str,
    *,
    codes: tuple[str, ...] = (),
    prefix: str = "",
    dry_run: bool = False,
) -> RetryReport:
    """Put failure records back in the queue (attempts start again from zero)."""
    report = RetryReport()
    prefixes = [FAILED_PREFIX + prefix] + ([FAILED_PREFIX + HASHED_FOLDER] if prefix else [])
    for listed in prefixes:
        for info in _json_objects(process, listed):
            _retry_one(process, queue_prefix, info, codes, prefix, dry_run, report)
    return report


def _retry_one(
    process: Store,
    queue_prefix: str,
    info: ObjectInfo,
    codes: tuple[str, ...],
    prefix: str,
    dry_run: bool,
    report: RetryReport,
) -> None:
    record = _read_json(process, info.key)
    key = record.get("key") if record else None
    if not record or not isinstance(key, str):
        report.not_retryable += 1
        return
    if (codes and record.get("code") not in codes) or not key.startswith(prefix):
        report.skipped += 1
        return
    if not dry_run:
        # A marker already queued for the source is newer than this record: keep it.
        create_marker(process, requeued_marker(record), queue_prefix)
        with contextlib.suppress(PreconditionFailed, ObjectMissing):
            process.delete(info.key, if_match=info.etag)
    report.requeued += 1
    report.keys.append(key)
