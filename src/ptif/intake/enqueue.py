"""Queueing what intake noticed: one marker per object, whoever noticed it.

Three sources of news share this module: S3 notifications (:mod:`ptif.aws`), ``ptif watch``
(:mod:`ptif.intake.watch`) and ``ptif reconcile`` (:mod:`ptif.intake.reconcile`). Each decides
the same way what is worth queueing (:func:`ptif.intake.scope.is_candidate`) and writes markers
with :func:`ptif.queue.markers.write_marker`: a repeated event leaves the queued marker as it is,
and a marker for another version of the key replaces it unless S3's sequencer proves the event
older (times do not: ``rsync -t`` dates a new version in the past).

A notification carries several records, and each stands alone: :meth:`Intake.accept_record`
never raises, so whatever becomes of one record (unreadable, refused by the store) its siblings
are queued. It returns a :class:`RecordResult` that says what happened and, for a failure,
whether another attempt could succeed; the caller decides how to report it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from enum import StrEnum

from ptif.errors import INTERNAL, PtifError, failure_code
from ptif.intake.events import BadEvent, BadRecord, ObjectEvent
from ptif.intake.scope import SourceScope, is_candidate
from ptif.queue.markers import new_marker, write_marker
from ptif.stores.base import ObjectInfo, Store

log = logging.getLogger(__name__)


class Outcome(StrEnum):
    """What intake did with one object; the values appear in logs and reports."""

    MARKED = "marked"
    #: a marker for this version, or for a newer event (by sequencer), is queued already
    NOT_NEWER = "not-newer"
    UP_TO_DATE = "up-to-date"
    NOT_IMAGE = "not-image"
    NOT_CREATED = "not-created"
    OUTSIDE = "outside-source"


@dataclass(frozen=True)
class RecordResult:
    """What became of one record of a notification: an outcome, or the error that stopped it."""

    item: ObjectEvent | BadRecord
    outcome: Outcome | None = None
    error: Exception | None = None

    @property
    def failed(self) -> bool:
        return self.outcome is None

    @property
    def key(self) -> str:
        return self.item.key

    @property
    def where(self) -> str:
        return self.item.where

    @property
    def code(self) -> str:
        """The failure code (``bad-event``, ``store-unreachable``…); "" if it did not fail."""
        if self.error is None:
            return ""
        return self.error.code if isinstance(self.error, PtifError) else INTERNAL

    @property
    def reason(self) -> str:
        return str(self.error) if self.error is not None else ""

    @property
    def retryable(self) -> bool:
        """Whether another attempt could succeed: a store error yes, an unreadable record no."""
        return self.failed and not failure_code(self.code).permanent


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

    def accept_record(self, item: ObjectEvent | BadRecord) -> RecordResult:
        """:meth:`accept` for one record of a notification, which may not have been readable.
        Never raises: the error is in the result, for the caller to log and report."""
        if isinstance(item, BadRecord):
            return RecordResult(item, error=BadEvent(item.reason))
        try:
            return RecordResult(item, self.accept(item))
        except Exception as error:  # kept in the result: it costs this record alone
            return RecordResult(item, error=error)


def queue_object(
    process: Store, queue_prefix: str, info: ObjectInfo, *, origin: str, bucket: str = ""
) -> bool:
    """Queue a listed or watched object. Seeing the same version again (same eTag and size)
    writes nothing; another version replaces the queued marker whatever its modification
    time, which may lie in the past. True if a marker was written."""
    marker = new_marker(
        info.key,
        origin=origin,
        etag=info.etag,
        size=info.size,
        bucket=bucket,
        event_time=info.modified,
    )
    return write_marker(process, marker, queue_prefix)
