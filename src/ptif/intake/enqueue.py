"""Queueing what intake noticed: one marker per object, whoever noticed it.

Three sources of news share this module: S3 notifications (:mod:`ptif.aws`), ``ptif watch``
(:mod:`ptif.intake.watch`) and ``ptif reconcile`` (:mod:`ptif.intake.reconcile`). Each decides
the same way what is worth queueing (:func:`ptif.intake.scope.is_candidate`) and writes markers
with :func:`ptif.queue.markers.write_marker`, so a repeated or late event never replaces the
marker of a newer one.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from enum import StrEnum

from ptif.intake.events import ObjectEvent
from ptif.intake.scope import SourceScope, is_candidate
from ptif.queue.markers import new_marker, write_marker
from ptif.stores.base import ObjectInfo, Store

log = logging.getLogger(__name__)


class Outcome(StrEnum):
    """What intake did with one object; the values appear in logs and reports."""

    MARKED = "marked"
    NOT_NEWER = "not-newer"  # a marker for this event, or a newer one, is queued already
    UP_TO_DATE = "up-to-date"
    NOT_IMAGE = "not-image"
    NOT_CREATED = "not-created"
    OUTSIDE = "outside-source"


@dataclass(frozen=True)
class Intake:
    """Writes markers for object-created events into the queue of ``process``."""

    process: Store
    queue_prefix: str
    extensions: tuple[str, ...]
    scope: SourceScope = field(default_factory=SourceScope)

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
