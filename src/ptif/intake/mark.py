"""``ptif mark``, the rerun utility: queue existing sources for conversion.

The source listing streams and markers are written concurrently, so marking a million objects
needs neither a full listing in memory nor a million sequential requests. Markers already
queued are left as they are (they may carry fields, such as ``copyrightStatus``, that a fresh
marker would lose). With ``stale``, only sources whose output is not current are marked: it is
missing, was made from another eTag or with other settings, or holds another source's pyramid
(the worker then records the ``output-conflict``). Any recipe the profile can make counts as
current, as in ``watch`` and ``reconcile``: :func:`ptif.queue.outputs.compare_output` decides.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from ptif.bounded import run_bounded
from ptif.convert.profiles import Profile
from ptif.intake.scope import bucket_name, is_candidate
from ptif.queue.markers import create_marker, is_queued, new_marker
from ptif.queue.outputs import OutputState, output_state
from ptif.stores.base import ObjectInfo, Store

MARKED = "marked"
ALREADY_QUEUED = "already_queued"
UP_TO_DATE = "up_to_date"


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

    def count(self, name: str, key: str | None = None) -> None:
        setattr(self, name, getattr(self, name) + 1)
        if key is not None and name == MARKED and len(self.marked_keys) < 10_000:
            self.marked_keys.append(key)

    def to_dict(self) -> dict[str, Any]:
        return {
            "listed": self.listed,
            "marked": self.marked,
            "already_queued": self.already_queued,
            "up_to_date": self.up_to_date,
            "ignored": self.ignored,
            "marked_keys": self.marked_keys,
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
    """Mark what ``options`` select; the first error stops the listing and is raised once the
    requests in flight have finished. Counting and ``on_marked`` happen in the caller's thread."""
    report = MarkReport()
    recipes = frozenset(profile.recipe_hashes())
    marker = _Marker(source, process, images, queue_prefix, recipes, options)
    for info, outcome in run_bounded(marker.one, _candidates(source, options, report)):
        if isinstance(outcome, Exception):
            raise outcome
        report.count(outcome, info.key)
        if outcome == MARKED and on_marked:
            on_marked(info.key)
    return report


def _candidates(source: Store, options: MarkOptions, report: MarkReport) -> Iterator[ObjectInfo]:
    for prefix in options.prefixes:
        for info in source.list(prefix):
            report.count("listed")
            if is_candidate(info.key, options.extensions):
                yield info
            else:
                report.count("ignored")


@dataclass(frozen=True)
class _Marker:
    source: Store
    process: Store
    images: Store
    queue_prefix: str
    recipes: frozenset[str]
    options: MarkOptions

    def one(self, info: ObjectInfo) -> str:
        """Mark one source unless it needs none; which of the report's counts it adds to."""
        if self.options.stale and self._current(info):
            return UP_TO_DATE
        if self.options.dry_run:  # exactly what the real run would find
            queued = is_queued(self.process, info.key, self.queue_prefix)
            return ALREADY_QUEUED if queued else MARKED
        return MARKED if self._write(info) else ALREADY_QUEUED

    def _current(self, info: ObjectInfo) -> bool:
        return output_state(self.images, info, self.recipes) is OutputState.CURRENT

    def _write(self, info: ObjectInfo) -> bool:
        marker = new_marker(
            info.key,
            origin=self.options.origin,
            etag=info.etag,
            size=info.size,
            bucket=bucket_name(self.source),
        )
        return create_marker(self.process, marker, self.queue_prefix)
