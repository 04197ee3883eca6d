"""Intake: turning "this object arrived" into a marker, whoever noticed it.

Three sources of news share this module: S3 notifications (:mod:`ptif.aws`), ``ptif watch``
(:mod:`ptif.watch`) and ``ptif reconcile`` (:mod:`ptif.reconcile`). Each decides the same way
what is worth queueing (an image key, not a folder placeholder or a dot-file, see
:func:`ptif.mark.is_candidate`) and writes markers with :func:`ptif.markers.write_marker`, so a
repeated or late event never replaces the marker of a newer one.

Events name a bucket and a full key; the queue names keys relative to the source store, which
may be a prefix of a bucket. :class:`SourceScope` maps one to the other and turns away events of
other buckets, whose keys the workers could not fetch.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from enum import StrEnum
from typing import TypeVar
from urllib.parse import urlsplit

from ptif.events import ObjectEvent
from ptif.mark import is_candidate
from ptif.markers import new_marker, write_marker
from ptif.outputs import RECIPE, SOURCE_ETAG, output_key, recorded_source
from ptif.stores.base import ObjectInfo, Store

log = logging.getLogger(__name__)

CONCURRENCY = 16

T = TypeVar("T")
R = TypeVar("R")


class Outcome(StrEnum):
    """What intake did with one object; the values appear in logs and reports."""

    MARKED = "marked"
    NOT_NEWER = "not-newer"  # a marker for this event, or a newer one, is queued already
    UP_TO_DATE = "up-to-date"
    NOT_IMAGE = "not-image"
    NOT_CREATED = "not-created"
    OUTSIDE = "outside-source"


class OutputState(StrEnum):
    """How a source's output compares with the source and the current settings."""

    CURRENT = "current"
    MISSING = "missing"
    OTHER_ETAG = "other-etag"
    OTHER_RECIPE = "other-recipe"
    CONFLICT = "conflict"  # the output holds another source's pyramid


@dataclass(frozen=True)
class SourceScope:
    """The bucket and prefix of the source store (``bucket=None``: a folder, any bucket goes)."""

    bucket: str | None = None
    prefix: str = ""

    @classmethod
    def from_url(cls, url: str) -> SourceScope:
        if not url.strip().lower().startswith("s3://"):
            return cls()
        parts = urlsplit(url.strip())
        prefix = parts.path.strip("/")
        return cls(parts.netloc, f"{prefix}/" if prefix else "")

    def key_for(self, bucket: str, key: str) -> str | None:
        """The store key of ``bucket``/``key``, or None if the object is not in the store."""
        if self.bucket is not None and bucket != self.bucket:
            return None
        if not key.startswith(self.prefix) or key == self.prefix:
            return None
        return key[len(self.prefix) :]


@dataclass(frozen=True)
class Intake:
    """Writes markers for object-created events into the queue of ``process``."""

    process: Store
    queue_prefix: str
    extensions: tuple[str, ...]
    scope: SourceScope = SourceScope()

    def accept(self, event: ObjectEvent) -> Outcome:
        """Queue the object of ``event`` if it is a new image of the source store."""
        if not event.created:
            return Outcome.NOT_CREATED
        key = self.scope.key_for(event.bucket, event.key)
        if key is None:
            return Outcome.OUTSIDE
        if not is_candidate(key, self.extensions):
            return Outcome.NOT_IMAGE
        marker = new_marker(
            key,
            origin="s3-event",
            etag=event.etag,
            size=event.size,
            bucket=event.bucket,
            version_id=event.version_id,
            sequencer=event.sequencer,
            event_time=event.event_time,
        )
        written = write_marker(self.process, marker, self.queue_prefix)
        return Outcome.MARKED if written else Outcome.NOT_NEWER


def queue_object(
    process: Store, queue_prefix: str, info: ObjectInfo, *, origin: str, bucket: str = ""
) -> bool:
    """Queue a listed or watched object. Its modification time stands for the event's time, so
    seeing the same object again is a duplicate event (nothing is written), while a replaced
    object is a newer one. True if a marker was written."""
    marker = new_marker(
        info.key,
        origin=origin,
        etag=info.etag,
        size=info.size,
        bucket=bucket,
        event_time=info.modified,
    )
    return write_marker(process, marker, queue_prefix)


def output_state(images: Store, source: ObjectInfo, recipes: Iterable[str]) -> OutputState:
    """Whether the output of ``source`` is there, made from this eTag with a current recipe."""
    output = images.head(output_key(source.key))
    if output is None:
        return OutputState.MISSING
    owner = recorded_source(output)
    if owner is not None and owner != source.key:
        return OutputState.CONFLICT
    if output.metadata.get(SOURCE_ETAG) != source.etag:
        return OutputState.OTHER_ETAG
    if output.metadata.get(RECIPE) not in set(recipes):
        return OutputState.OTHER_RECIPE
    return OutputState.CURRENT


def run_bounded(
    work: Callable[[T], R], items: Iterable[T], workers: int = CONCURRENCY
) -> Iterator[tuple[T, R | Exception]]:
    """``(item, result or error)`` as each finishes, with at most ``4 * workers`` items taken
    from ``items`` and not yet answered: a listing of millions streams through in small memory.
    Results come back in the caller's thread, which needs no locks to count them."""
    running: dict[Future[R], T] = {}
    with ThreadPoolExecutor(workers, thread_name_prefix="ptif-intake") as pool:
        for item in items:
            if len(running) >= workers * 4:
                yield from _finished(running)
            running[pool.submit(work, item)] = item
        while running:
            yield from _finished(running)


def _finished(running: dict[Future[R], T]) -> Iterator[tuple[T, R | Exception]]:
    done, _ = wait(list(running), return_when=FIRST_COMPLETED)
    for future in done:
        item = running.pop(future)
        error = future.exception()
        if error is None:
            yield item, future.result()
        elif isinstance(error, Exception):
            yield item, error
        else:
            raise error
