"""``ptif mark``, the rerun utility: queue existing sources for conversion.

The source listing streams and markers are written concurrently, so marking a million objects
needs neither a full listing in memory nor a million sequential requests. Markers already
queued are left as they are (they may carry fields, such as ``copyrightStatus``, that a fresh
marker would lose). With ``stale``, only sources whose output is missing or was made from another
eTag or with other settings are marked.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from ptif.convert.profiles import Profile
from ptif.intake.scope import bucket_name, is_candidate
from ptif.queue.markers import create_marker, new_marker
from ptif.queue.outputs import RECIPE, SOURCE_ETAG, output_key
from ptif.stores.base import ObjectInfo, Store

CONCURRENCY = 16


@dataclass(frozen=True)
class MarkOptions:
    prefixes: tuple[str, ...] = ("",)
    extensions: tuple[str, ...] = ()
    dry_run: bool = False
    stale: bool = False
    origin: str = "mark"


@dataclass
class MarkReport:
    listed: int = 0
    marked: int = 0
    already_queued: int = 0
    up_to_date: int = 0
    ignored: int = 0
    marked_keys: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def count(self, name: str, key: str | None = None) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + 1)
            if key is not None and name == "marked" and len(self.marked_keys) < 10_000:
                self.marked_keys.append(key)

    def to_dict(self) -> dict[str, int]:
        return {
            "listed": self.listed,
            "marked": self.marked,
            "already_queued": self.already_queued,
            "up_to_date": self.up_to_date,
            "ignored": self.ignored,
        }


def mark(
    source: Store,
    process: Store,
    images: Store,
    *,
    queue_prefix: str,
    profile: Profile,
    options: MarkOptions,
    on_marked: Callable[[str], None] | None = None,
) -> MarkReport:
    report = MarkReport()
    marker = _Marker(source, process, images, queue_prefix, profile, options, report, on_marked)
    window = threading.BoundedSemaphore(CONCURRENCY * 4)
    errors: list[BaseException] = []

    def settle(future: Future[None]) -> None:
        window.release()
        if future.exception() is not None:
            errors.append(future.exception())  # type: ignore[arg-type]

    with ThreadPoolExecutor(CONCURRENCY, thread_name_prefix="ptif-mark") as pool:
        for info in _candidates(source, options, report):
            if errors:
                break
            window.acquire()
            pool.submit(marker.one, info).add_done_callback(settle)
    if errors:
        raise errors[0]
    return report


def _candidates(source: Store, options: MarkOptions, report: MarkReport) -> Iterator[ObjectInfo]:
    for prefix in options.prefixes:
        for info in source.list(prefix):
            report.count("listed")
            if is_candidate(info.key, options.extensions):
                yield info
            else:
                report.count("ignored")


@dataclass
class _Marker:
    source: Store
    process: Store
    images: Store
    queue_prefix: str
    profile: Profile
    options: MarkOptions
    report: MarkReport
    on_marked: Callable[[str], None] | None

    def one(self, info: ObjectInfo) -> None:
        if self.options.stale and self._up_to_date(info):
            self.report.count("up_to_date")
            return
        if not self.options.dry_run and not self._write(info):
            self.report.count("already_queued")
            return
        self.report.count("marked", info.key)
        if self.on_marked:
            self.on_marked(info.key)

    def _up_to_date(self, info: ObjectInfo) -> bool:
        existing = self.images.head(output_key(info.key))
        if existing is None or existing.metadata.get(SOURCE_ETAG) != info.etag:
            return False
        return existing.metadata.get(RECIPE) in self.profile.recipe_hashes()

    def _write(self, info: ObjectInfo) -> bool:
        marker = new_marker(
            info.key,
            origin=self.options.origin,
            etag=info.etag,
            size=info.size,
            bucket=bucket_name(self.source),
        )
        return create_marker(self.process, marker, self.queue_prefix)
