"""``ptif reconcile``: queue every source whose output is missing or stale, the net under intake.

Events get lost (a Lambda that failed past its retries, a watcher that was down, a notification
configured late). Reconcile compares the source store with the image store and queues every
image whose output is missing, was made from another eTag, or with a recipe the current profile
would not make; it reports how many of each it found.

How the two sides are joined, and why so: the source listing streams, and for each image the
output is looked up directly with a HEAD of its output key, sixteen at a time, with at most 64
sources in hand. A HEAD is needed anyway: listings carry no user metadata, and an output is
current only if its ``ptif-source-etag`` and ``ptif-recipe`` say so. A merge of the two listings
would therefore still HEAD every output that exists, and would add a second listing plus the
buffering that a merge needs, because sorting by source key and by output key differ (``a b.jpg``
< ``a.jpg`` < ``a/b.jpg`` but ``ab.s.jpg`` → ``ab.s.tif`` sorts before ``ab.tif`` while its source
sorts after ``ab.jpg``) and servers disagree on the order (SeaweedFS lists ``/`` first). Joining
by lookup is right whatever the order, and memory stays flat for a million objects. The price is
one request per source; at 16 in flight a million take minutes, not hours.

A source already queued keeps its marker (it may carry fields such as ``copyrightStatus``).
A source whose output belongs to another source (``a/x.png`` and ``a/x.jpg``) is reported as a
conflict, not queued: the worker would only fail it again. So is one whose current version
already failed (:func:`ptif.queue.failures.describes`): ``ptif retry`` is the way to try those
again. A failure of another version, or a ``source-missing`` one of a source that came back, is
the past: such a source is queued like any new upload.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ptif.bounded import run_bounded
from ptif.errors import ConfigError
from ptif.intake.scope import bucket_name, is_candidate
from ptif.queue.failures import describes
from ptif.queue.layout import failed_key, report_key
from ptif.queue.markers import create_marker, is_queued, new_marker
from ptif.queue.outputs import OutputState, output_state
from ptif.stores.base import ObjectInfo, ObjectMissing, Store
from ptif.timeutil import format_time

log = logging.getLogger(__name__)

#: Lists of keys in the report stop growing here; the counts stay exact.
MAX_LISTED = 10_000

MARKED = "marked"
WOULD_MARK = "would-mark"
ALREADY_QUEUED = "already-queued"
FAILED_BEFORE = "failed-before"
LEFT = "left"  # current, or a conflict: nothing to queue
ACTIONS = (MARKED, WOULD_MARK, ALREADY_QUEUED, FAILED_BEFORE)


@dataclass(frozen=True)
class ReconcileOptions:
    prefixes: tuple[str, ...] = ("",)
    extensions: tuple[str, ...] = ()
    dry_run: bool = False


@dataclass
class ReconcileReport:
    source: str
    images: str
    dry_run: bool = False
    started: datetime = field(default_factory=lambda: datetime.now(UTC))
    finished: datetime | None = None
    listed: int = 0
    not_images: int = 0
    states: dict[str, int] = field(default_factory=lambda: {s.value: 0 for s in OutputState})
    actions: dict[str, int] = field(default_factory=lambda: dict.fromkeys(ACTIONS, 0))
    errors: int = 0
    marked_keys: list[str] = field(default_factory=list)
    conflict_keys: list[str] = field(default_factory=list)
    error_messages: list[str] = field(default_factory=list)

    @property
    def marked(self) -> int:
        return self.actions[WOULD_MARK if self.dry_run else MARKED]

    def record(self, info: ObjectInfo, state: OutputState, action: str) -> None:
        self.states[state.value] += 1
        if action in self.actions:
            self.actions[action] += 1
        if action in (MARKED, WOULD_MARK):
            _add(self.marked_keys, info.key)
        if state is OutputState.CONFLICT:
            _add(self.conflict_keys, info.key)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "reconcile",
            "source": self.source,
            "images": self.images,
            "dry_run": self.dry_run,
            "started": format_time(self.started, "seconds"),
            "finished": format_time(self.finished, "seconds") if self.finished else None,
            "listed": self.listed,
            "not_images": self.not_images,
            "outputs": dict(self.states),
            "marked": self.marked,
            "already_queued": self.actions[ALREADY_QUEUED],
            "failed_before": self.actions[FAILED_BEFORE],
            "errors": self.errors,
            "marked_keys": self.marked_keys,
            "conflict_keys": self.conflict_keys,
            "error_messages": self.error_messages,
        }

    def summary(self) -> str:
        s = self.states
        verb = "would mark" if self.dry_run else "marked"
        return (
            f"{verb} {self.marked} of {self.listed - self.not_images} images: "
            f"{s['missing']} missing, {s['other-etag']} from another eTag, "
            f"{s['other-recipe']} from other settings, {s['current']} current, "
            f"{s['conflict']} conflicts; {self.actions[ALREADY_QUEUED]} already queued, "
            f"{self.actions[FAILED_BEFORE]} failed before (ptif retry), {self.errors} errors"
        )


@dataclass(frozen=True)
class Reconciler:
    source: Store
    process: Store
    images: Store
    queue_prefix: str
    recipes: frozenset[str]
    options: ReconcileOptions

    def run(self) -> ReconcileReport:
        report = ReconcileReport(self.source.url, self.images.url, self.options.dry_run)
        for info, result in run_bounded(self.check, self._images(report)):
            if isinstance(result, ConfigError):
                raise result  # a missing permission: every other source would fail the same way
            if isinstance(result, Exception):
                report.errors += 1
                _add(report.error_messages, f"{info.key}: {result}")
                log.error("%s: %s", info.key, result, extra={"key": info.key})
            else:
                report.record(info, *result)
        report.finished = datetime.now(UTC)
        return report

    def check(self, info: ObjectInfo) -> tuple[OutputState, str]:
        """Compare one source with its output, and queue it if the output is not current."""
        state = output_state(self.images, info, self.recipes)
        if state in (OutputState.CURRENT, OutputState.CONFLICT):
            return state, LEFT
        if self._failed_before(info):
            return state, FAILED_BEFORE
        if self.options.dry_run:  # exactly what the real run would find
            queued = is_queued(self.process, info.key, self.queue_prefix)
            return state, ALREADY_QUEUED if queued else WOULD_MARK
        return state, MARKED if self._queue(info) else ALREADY_QUEUED

    def _images(self, report: ReconcileReport) -> Iterator[ObjectInfo]:
        for prefix in self.options.prefixes:
            for info in self.source.list(prefix):
                report.listed += 1
                if is_candidate(info.key, self.options.extensions):
                    yield info
                else:
                    report.not_images += 1

    def _failed_before(self, info: ObjectInfo) -> bool:
        """Whether the source's current version failed (an older one's record is the past)."""
        try:
            data, _ = self.process.get_bytes(failed_key(info.key))
        except ObjectMissing:
            return False
        try:
            record = json.loads(data)
        except ValueError:
            return False
        return isinstance(record, dict) and describes(record, info)

    def _queue(self, info: ObjectInfo) -> bool:
        marker = new_marker(
            info.key,
            origin="reconcile",
            etag=info.etag,
            size=info.size,
            bucket=bucket_name(self.source),
            event_time=info.modified,
        )
        return create_marker(self.process, marker, self.queue_prefix)


def reconcile(
    source: Store,
    process: Store,
    images: Store,
    *,
    queue_prefix: str,
    recipes: Iterable[str],
    options: ReconcileOptions,
) -> ReconcileReport:
    """Queue what lacks a current output; write the report to ``reports/`` unless dry-running."""
    reconciler = Reconciler(source, process, images, queue_prefix, frozenset(recipes), options)
    report = reconciler.run()
    if not options.dry_run:
        save_report(process, report)
    return report


def save_report(process: Store, report: ReconcileReport) -> str:
    stamp = report.started.strftime("%Y%m%dT%H%M%S.%fZ")
    key = report_key(f"reconcile-{stamp}")
    body = json.dumps(report.to_dict(), ensure_ascii=False, indent=1).encode()
    process.put_bytes(key, body)
    return key


def _add(keys: list[str], key: str) -> None:
    if len(keys) < MAX_LISTED:
        keys.append(key)
