"""What a run did: counts, bytes, failures and times, for people, for the store and for CloudWatch.

A :class:`RunReport` is filled in as items finish (from several threads), written as JSON to
``reports/`` in the process store, summarised on stderr, and, when ptif runs in AWS, turned into
one CloudWatch embedded-metric-format line so alarms need no extra code.
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum
from typing import Any

from ptif import __version__
from ptif.queue.layout import report_key
from ptif.timeutil import format_time

#: Lists of keys in a report stop growing here; the counts stay exact.
MAX_LISTED = 100_000


class Outcome(Enum):
    CONVERTED = "converted"
    SKIPPED = "skipped"
    FAILED = "failed"
    RETRY = "retry-later"
    REPLACED = "replaced"
    #: converted, but the source changed meanwhile: its marker stays queued for the new version
    REQUEUED = "requeued"
    BUSY = "busy"
    GONE = "gone"
    YOUNG = "too-young"
    OUT_OF_SCOPE = "out-of-scope"
    NOT_STARTED = "not-started"  # the run stopped before taking it; left as it was


#: Outcomes that mean some image is not done, for the exit code.
UNFINISHED = (Outcome.FAILED, Outcome.RETRY)


@dataclass
class ItemResult:
    """What happened to one marker in this run."""

    marker_key: str
    outcome: Outcome
    source_key: str | None = None
    code: str | None = None
    message: str | None = None
    bytes_in: int = 0
    bytes_out: int = 0
    seconds: float = 0.0
    busy_until: float | None = None
    #: The source's pages, and how many of them got a pyramid.
    pages: int = 1
    pages_done: int = 1
    #: How its tiles were encoded (page 1's): ``jpeg-q85-420``, ``jpeg-q90-rgb``, ``deflate``...
    encoding: str | None = None


def _now() -> str:
    return format_time(datetime.now(UTC), "seconds")


@dataclass
class RunReport:
    owner: str
    run_id: str = field(default_factory=lambda: os.urandom(4).hex())
    started_at: str = field(default_factory=_now)
    finished_at: str | None = None
    counts: dict[str, int] = field(default_factory=lambda: {o.value: 0 for o in Outcome})
    bytes_in: int = 0
    bytes_out: int = 0
    convert_seconds: float = 0.0
    wall_seconds: float = 0.0
    oldest_pending_age_s: float | None = None
    converted: list[str] = field(default_factory=list)
    requeued: list[str] = field(default_factory=list)
    failures: list[dict[str, Any]] = field(default_factory=list)
    retry_later: list[dict[str, Any]] = field(default_factory=list)
    #: Multi-page sources converted without ``all_pages``: key, pages, left_out.
    pages_left_out: list[dict[str, Any]] = field(default_factory=list)
    left_out_count: int = 0
    left_out_pages: int = 0
    #: Converted images by encoding (a quality floor chooses one per image).
    encodings: dict[str, int] = field(default_factory=dict)
    _clock: float = field(default_factory=time.monotonic, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, item: ItemResult) -> None:
        with self._lock:
            self.counts[item.outcome.value] += 1
            self.bytes_in += item.bytes_in
            self.bytes_out += item.bytes_out
            if item.outcome is Outcome.CONVERTED:
                self.convert_seconds += item.seconds
                _append(self.converted, item.source_key or item.marker_key)
                if item.encoding:
                    self.encodings[item.encoding] = self.encodings.get(item.encoding, 0) + 1
                if item.pages_done < item.pages:
                    self._left_out(item)
            elif item.outcome is Outcome.REQUEUED:
                _append(self.requeued, item.source_key or item.marker_key)
            elif item.outcome in UNFINISHED:
                target = self.failures if item.outcome is Outcome.FAILED else self.retry_later
                _append(target, _problem(item))

    def _left_out(self, item: ItemResult) -> None:
        left_out = item.pages - item.pages_done
        self.left_out_count += 1
        self.left_out_pages += left_out
        key = item.source_key or item.marker_key
        _append(self.pages_left_out, {"key": key, "pages": item.pages, "left_out": left_out})

    def saw_pending(self, modified: datetime) -> None:
        age = max(0.0, (datetime.now(UTC) - modified).total_seconds())
        with self._lock:
            if self.oldest_pending_age_s is None or age > self.oldest_pending_age_s:
                self.oldest_pending_age_s = age

    def absorb(self, other: RunReport) -> None:
        """Add another pass's figures to these."""
        with self._lock:
            for name, count in other.counts.items():
                self.counts[name] += count
            self.bytes_in += other.bytes_in
            self.bytes_out += other.bytes_out
            self.convert_seconds += other.convert_seconds
            _extend(self.converted, other.converted)
            _extend(self.requeued, other.requeued)
            _extend(self.failures, other.failures)
            _extend(self.retry_later, other.retry_later)
            _extend(self.pages_left_out, other.pages_left_out)
            self.left_out_count += other.left_out_count
            self.left_out_pages += other.left_out_pages
            for label, count in other.encodings.items():
                self.encodings[label] = self.encodings.get(label, 0) + count
            ages = [
                a for a in (self.oldest_pending_age_s, other.oldest_pending_age_s) if a is not None
            ]
            self.oldest_pending_age_s = max(ages, default=None)

    @property
    def handled(self) -> int:
        """Markers this report accounts for (work done, skipped or failed)."""
        return sum(self.counts.values())

    def finish(self) -> None:
        self.finished_at = _now()
        self.wall_seconds = time.monotonic() - self._clock

    @property
    def unfinished(self) -> int:
        return sum(self.counts[o.value] for o in UNFINISHED)

    @property
    def name(self) -> str:
        stamp = self.started_at.replace("-", "").replace(":", "")
        return report_key(f"{stamp}-{self.run_id}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "owner": self.owner,
            "ptif_version": __version__,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "wall_seconds": round(self.wall_seconds, 3),
            "convert_seconds": round(self.convert_seconds, 3),
            "counts": dict(self.counts),
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "oldest_pending_age_s": self.oldest_pending_age_s,
            "converted": self.converted,
            "encodings": dict(sorted(self.encodings.items())),
            "requeued": self.requeued,
            "failures": self.failures,
            "retry_later": self.retry_later,
            "pages_left_out": {
                "sources": self.left_out_count,
                "pages": self.left_out_pages,
                "list": self.pages_left_out,
            },
        }

    def to_bytes(self) -> bytes:
        return json.dumps(self.to_dict(), ensure_ascii=False, indent=1).encode()

    def summary(self) -> str:
        c = self.counts
        line = (
            f"{c['converted']} converted, {c['skipped']} up to date, {c['failed']} failed, "
            f"{c['retry-later']} to retry later"
        )
        extra = [
            f"{c[o.value]} {o.value}"
            for o in (Outcome.REPLACED, Outcome.REQUEUED, Outcome.BUSY, Outcome.YOUNG)
        ]
        extra = [e for e in extra if not e.startswith("0 ")]
        moved = f"{self.bytes_in / 1e6:,.1f} MB in, {self.bytes_out / 1e6:,.1f} MB out"
        tail = f" ({', '.join(extra)})" if extra else ""
        pages = (
            f"; {self.left_out_pages} page(s) of {self.left_out_count} multi-page source(s) "
            "left out (all_pages is off)"
            if self.left_out_count
            else ""
        )
        return f"{line}{tail}; {moved}; {self.wall_seconds:.1f} s{pages}"

    def emf(self, namespace: str = "ptif") -> str:
        """One CloudWatch embedded-metric-format line with the run's figures."""
        metrics = {
            "Processed": self.counts["converted"],
            "Failed": self.counts["failed"],
            "Skipped": self.counts["skipped"],
            "RetryLater": self.counts["retry-later"],
            "BytesIn": self.bytes_in,
            "BytesOut": self.bytes_out,
            "OldestPendingAgeSeconds": self.oldest_pending_age_s or 0.0,
        }
        units = {"BytesIn": "Bytes", "BytesOut": "Bytes", "OldestPendingAgeSeconds": "Seconds"}
        body = {
            "_aws": {
                "Timestamp": int(time.time() * 1000),
                "CloudWatchMetrics": [
                    {
                        "Namespace": namespace,
                        "Dimensions": [["Stage"]],
                        "Metrics": [{"Name": k, "Unit": units.get(k, "Count")} for k in metrics],
                    }
                ],
            },
            "Stage": "process",
            "run_id": self.run_id,
            **metrics,
        }
        return json.dumps(body)


def _extend(target: list[Any], values: list[Any]) -> None:
    target.extend(values[: max(0, MAX_LISTED - len(target))])


def _append(target: list[Any], value: Any) -> None:
    if len(target) < MAX_LISTED:
        target.append(value)


def _problem(item: ItemResult) -> dict[str, Any]:
    return {"key": item.source_key or item.marker_key, "code": item.code, "message": item.message}
