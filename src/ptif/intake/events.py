"""S3 notifications as AWS delivers them, read into plain :class:`ObjectEvent` values.

One reader for every wrapping: an S3 notification (``Records[].s3``, event structure 2.1 and
later), the same inside SNS (``Records[].Sns.Message``), inside SQS (``Records[].body``, which may
itself hold an SNS envelope or an EventBridge event) and EventBridge's ``Object Created`` events
(``detail.object``). ``s3:TestEvent``, which S3 sends when a notification is configured, holds no
object and is skipped.

Keys arrive URL-encoded as in an HTML form: ``+`` is a space, ``%2B`` a plus, ``%25`` a per cent
sign, other bytes UTF-8 percent-encoded. They are decoded with ``unquote_plus``, and otherwise
kept as they are (NFC and NFD spellings of an accent are different keys in S3). EventBridge
events are decoded the same way.

This module reads JSON and nothing else; what to do with an event is
:mod:`ptif.intake.enqueue`'s job.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import unquote_plus

from ptif.errors import BAD_EVENT, PtifError
from ptif.timeutil import parse_time

log = logging.getLogger(__name__)

#: S3 notification event names that create an object (``s3:ObjectCreated:*``).
CREATED_NAMES = frozenset(
    {
        "ObjectCreated:Put",
        "ObjectCreated:Post",
        "ObjectCreated:Copy",
        "ObjectCreated:CompleteMultipartUpload",
    }
)
#: EventBridge ``Object Created`` reasons: the S3 API call that made the object.
CREATED_REASONS = frozenset({"PutObject", "POST Object", "CopyObject", "CompleteMultipartUpload"})
TEST_EVENT = "s3:TestEvent"


class BadEvent(PtifError):
    """A payload that is not an S3 notification in any wrapping ptif knows."""

    code = BAD_EVENT


@dataclass(frozen=True)
class ObjectEvent:
    """One thing that happened to one object; ``created`` only for the four creating calls."""

    bucket: str
    key: str
    name: str
    created: bool
    size: int | None = None
    etag: str = ""
    version_id: str | None = None
    sequencer: str | None = None
    event_time: datetime | None = None


def object_events(payload: Any) -> Iterator[ObjectEvent]:
    """Every object event in ``payload``, however it is wrapped. Raises :class:`BadEvent`."""
    if isinstance(payload, str | bytes):
        payload = _json(payload)
    if not isinstance(payload, Mapping):
        raise BadEvent(f"expected a JSON object, got {type(payload).__name__}")
    if payload.get("Event") == TEST_EVENT:
        extra = {"outcome": "test-event", "bucket": payload.get("Bucket")}
        log.info("ignoring %s", TEST_EVENT, extra=extra)
        return
    if "Records" in payload:
        for record in _records(payload):
            yield from _record_events(record)
    elif "detail-type" in payload and "detail" in payload:
        yield _eventbridge(payload)
    elif payload.get("Type") == "Notification" and "Message" in payload:
        yield from object_events(payload["Message"])
    else:
        raise BadEvent(f"not an S3 notification: keys {sorted(payload)[:8]}")


def is_sqs(payload: Any) -> bool:
    """Whether ``payload`` is a batch of SQS messages (whose failures are reported one by one)."""
    records = payload.get("Records") if isinstance(payload, Mapping) else None
    if not isinstance(records, list) or not records:
        return False
    return all(isinstance(r, Mapping) and r.get("eventSource") == "aws:sqs" for r in records)


def sqs_messages(payload: Mapping[str, Any]) -> Iterator[tuple[str, Any]]:
    """``(messageId, body)`` for each message of an SQS batch."""
    for record in _records(payload):
        yield str(record.get("messageId", "")), record.get("body", "")


def _records(payload: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    records = payload.get("Records")
    if not isinstance(records, list) or not all(isinstance(r, Mapping) for r in records):
        raise BadEvent("'Records' is not a list of objects")
    return records


def _record_events(record: Mapping[str, Any]) -> Iterator[ObjectEvent]:
    if "s3" in record:
        yield _s3_record(record)
    elif "Sns" in record:
        yield from object_events(_field(record, "Sns", "Message"))
    elif "body" in record:
        yield from object_events(record["body"])
    else:
        raise BadEvent(f"a record that is neither S3, SNS nor SQS: keys {sorted(record)[:8]}")


def _s3_record(record: Mapping[str, Any]) -> ObjectEvent:
    name = str(record.get("eventName", ""))
    name = name.removeprefix("s3:")  # MinIO and Ceph write s3:ObjectCreated:Put
    obj = _field(record, "s3", "object")
    return ObjectEvent(
        bucket=str(_field(record, "s3", "bucket", "name")),
        key=_key(obj),
        name=name,
        created=name in CREATED_NAMES,
        size=_size(obj.get("size")),
        etag=str(obj.get("eTag") or "").strip('"'),
        version_id=obj.get("versionId") or None,
        sequencer=obj.get("sequencer") or None,
        event_time=_time(record.get("eventTime")),
    )


def _eventbridge(payload: Mapping[str, Any]) -> ObjectEvent:
    detail_type = str(payload.get("detail-type", ""))
    reason = str(_field(payload, "detail").get("reason") or "")
    obj = _field(payload, "detail", "object")
    return ObjectEvent(
        bucket=str(_field(payload, "detail", "bucket", "name")),
        key=_key(obj),
        name=f"{detail_type}:{reason}" if reason else detail_type,
        created=detail_type == "Object Created" and (not reason or reason in CREATED_REASONS),
        size=_size(obj.get("size")),
        etag=str(obj.get("etag") or "").strip('"'),
        version_id=obj.get("version-id") or None,
        sequencer=obj.get("sequencer") or None,
        event_time=_time(payload.get("time")),
    )


def _field(data: Mapping[str, Any], *path: str) -> Any:
    value: Any = data
    for name in path:
        if not isinstance(value, Mapping) or name not in value:
            raise BadEvent(f"the event has no {'.'.join(path)}")
        value = value[name]
    return value


def _key(obj: Mapping[str, Any]) -> str:
    raw = obj.get("key")
    if not isinstance(raw, str) or not raw:
        raise BadEvent("the event names no object key")
    try:
        return unquote_plus(raw, encoding="utf-8", errors="strict")
    except UnicodeDecodeError as error:
        raise BadEvent(f"the key {raw!r} is not percent-encoded UTF-8") from error


def _size(value: Any) -> int | None:
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return parse_time(value)
    except ValueError:
        return None


def _json(text: str | bytes) -> Any:
    try:
        return json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise BadEvent(f"not JSON: {error}") from error
