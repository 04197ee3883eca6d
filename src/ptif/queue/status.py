"""The queue seen from outside: ``ptif status`` counts it, ``ptif retry`` re-queues failures.

Both read only the process store, so they work from any machine while workers run.
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
from ptif.queue.failures import requeued_marker
from ptif.queue.layout import CLAIMS_PREFIX, FAILED_PREFIX, HASHED_FOLDER
from ptif.queue.leases import Busy, Tries, read_claim
from ptif.queue.markers import create_marker
from ptif.stores.base import ObjectInfo, ObjectMissing, PreconditionFailed, Store

T = TypeVar("T")


@dataclass
class QueueStatus:
    pending: int = 0
    claimed: int = 0
    retrying: int = 0
    failed: int = 0
    failed_by_code: Counter[str] = field(default_factory=Counter)
    oldest_pending_age_s: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "pending": self.pending,
            "claimed": self.claimed,
            "retrying": self.retrying,
            "failed": self.failed,
            "failed_by_code": dict(sorted(self.failed_by_code.items())),
            "oldest_pending_age_s": self.oldest_pending_age_s,
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
    for record in _read_all(process, FAILED_PREFIX, _read_json):
        if record is not None:
            result.failed += 1
            result.failed_by_code[str(record.get("code") or "unknown")] += 1
    return result


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
