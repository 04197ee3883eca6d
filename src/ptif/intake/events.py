"""S3 notifications as AWS delivers them, read record by record into plain values.

One reader for every wrapping: an S3 notification (``Records[].s3``, event structure 2.1 and
later), the same inside SNS (``Records[].Sns.Message``), inside SQS (``Records[].body``, which may
itself hold an SNS envelope or an EventBridge event) and EventBridge's ``Object Created`` events
(``detail.object``). ``s3:TestEvent``, which S3 sends when a notification is configured, holds no
object and is skipped.

Each record stands alone. :func:`read_records` never raises: a record it cannot read (a missing
field, a field of the wrong type, a key that is not percent-encoded UTF-8, a body that is not
JSON, envelopes nested deeper than AWS nests them) becomes a :class:`BadRecord` in its place,
and the records after it are read all the same. What AWS documents as a string must be a
string, a size an integer, a sequencer hexadecimal: a hostile value never reaches a marker,
where a ``sequencer`` that is not text would break the comparison of every later event for the
key. Keys longer than S3's 1,024 bytes are refused, since no such object can exist.

S3 notifications (direct, or through SNS or SQS) carry keys URL-encoded as in an HTML form:
``+`` is a space, ``%2B`` a plus, ``%25`` a per cent sign, ``%3A`` a colon, other bytes UTF-8
percent-encoded; they are decoded with ``unquote_plus``. EventBridge events carry the key as it
is (``detail.object.key``: AWS's own sample holds a raw ``:``), so it is taken as it is: decoding
it would turn a plus into a space and ``100%25`` into ``100%``. Either way a key is otherwise kept
as it is (NFC and NFD spellings of an accent are different keys in S3). docs/operations.md says
what this rests on.

This module reads JSON and nothing else; what to do with an event is
:mod:`ptif.intake.enqueue`'s job.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
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
#: Envelopes around a notification: SQS around SNS around S3 is the deepest AWS delivers.
MAX_DEPTH = 3
#: S3's limit on a key, in UTF-8 bytes.
MAX_KEY_BYTES = 1024
#: How much of an unreadable record a log line keeps.
EXCERPT_CHARS = 2000
_SEQUENCER = re.compile(r"[0-9A-Fa-f]{1,64}")


class BadEvent(PtifError):
    """A payload or record that is not an S3 notification in any wrapping ptif knows."""

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
    #: Where the record sat in the payload (``Records[2]``, ``body.Records[0]``), for logs.
    where: str = field(default="", compare=False)


@dataclass(frozen=True)
class BadRecord:
    """A record that could not be read, in the place of the event it would have given."""

    where: str
    reason: str
    #: The record's key as far as it could be read (for logs and errors), else "".
    key: str = ""
    record: Any = field(default=None, compare=False, repr=False)

    def excerpt(self) -> str:
        """The record as received, as JSON and shortened, for a log line."""
        record = self.record
        if isinstance(record, Mapping):
            record = {k: v for k, v in record.items() if k != "receiptHandle"}
        try:
            text = record if isinstance(record, str) else json.dumps(record, default=repr)
        except (TypeError, ValueError, RecursionError):
            text = repr(record)
        return _printable(text[:EXCERPT_CHARS])


def read_records(payload: Any, where: str = "") -> Iterator[ObjectEvent | BadRecord]:
    """Every object event in ``payload``, however it is wrapped, with a :class:`BadRecord` in
    place of each part that cannot be read. Never raises: one bad record hides no other."""
    return _read(payload, where, 0)


def is_sqs(payload: Any) -> bool:
    """Whether ``payload`` is a batch of SQS messages (whose failures are reported one by one)."""
    records = payload.get("Records") if isinstance(payload, Mapping) else None
    if not isinstance(records, list) or not records:
        return False
    return all(isinstance(r, Mapping) and r.get("eventSource") == "aws:sqs" for r in records)


def sqs_messages(payload: Mapping[str, Any]) -> Iterator[tuple[str, Any]]:
    """``(messageId, body)`` for each message of a batch :func:`is_sqs` accepted."""
    for record in payload["Records"]:
        yield str(record.get("messageId") or ""), record.get("body")


def _read(payload: Any, where: str, depth: int) -> Iterator[ObjectEvent | BadRecord]:
    try:
        payload = _envelope(payload, depth)
    except BadEvent as error:
        yield BadRecord(where or "event", str(error), record=payload)
        return
    if payload.get("Event") == TEST_EVENT:
        extra = {"outcome": "test-event", "bucket": _printable(str(payload.get("Bucket") or ""))}
        log.info("ignoring %s", TEST_EVENT, extra=extra)
    elif "Records" in payload:
        yield from _records(payload["Records"], _join(where, "Records"), depth)
    elif "detail-type" in payload and "detail" in payload:
        yield _one(_eventbridge, payload, where or "event")
    elif payload.get("Type") == "Notification" and "Message" in payload:
        yield from _read(payload["Message"], _join(where, "Message"), depth + 1)
    else:
        reason = f"not an S3 notification: keys {sorted(map(str, payload))[:8]}"
        yield BadRecord(where or "event", reason, record=payload)


def _envelope(payload: Any, depth: int) -> Mapping[str, Any]:
    if depth > MAX_DEPTH:
        raise BadEvent(f"envelopes nested deeper than {MAX_DEPTH}, more than AWS nests them")
    if isinstance(payload, str | bytes):
        payload = _json(payload)
    if not isinstance(payload, Mapping):
        raise BadEvent(f"expected a JSON object, got {type(payload).__name__}")
    return payload


def _records(records: Any, where: str, depth: int) -> Iterator[ObjectEvent | BadRecord]:
    if not isinstance(records, list):
        yield BadRecord(where, "'Records' is not a list", record=records)
        return
    for index, record in enumerate(records):
        yield from _record(record, f"{where}[{index}]", depth)


def _record(record: Any, where: str, depth: int) -> Iterator[ObjectEvent | BadRecord]:
    if not isinstance(record, Mapping):
        reason = f"a record of type {type(record).__name__}, not an object"
        yield BadRecord(where, reason, record=record)
    elif "s3" in record:
        yield _one(_s3_record, record, where)
    elif "Sns" in record:
        sns = record["Sns"]
        message = sns.get("Message") if isinstance(sns, Mapping) else None
        yield from _read(message, f"{where}.Sns.Message", depth + 1)
    elif "body" in record:
        yield from _read(record["body"], f"{where}.body", depth + 1)
    else:
        reason = f"a record that is neither S3, SNS nor SQS: keys {sorted(map(str, record))[:8]}"
        yield BadRecord(where, reason, record=record)


def _one(
    parse: Callable[[Mapping[str, Any], str], ObjectEvent], data: Mapping[str, Any], where: str
) -> ObjectEvent | BadRecord:
    """``parse(data)``, or the reason it could not be read: a bug in a parser is logged with its
    traceback and costs this record alone."""
    try:
        return parse(data, where)
    except BadEvent as error:
        return BadRecord(where, str(error), _shown_key(data), data)
    except Exception as error:
        log.exception("%s: unexpected failure reading the record", where)
        reason = f"unreadable ({type(error).__name__}: {error})"
        return BadRecord(where, reason, _shown_key(data), data)


def _s3_record(record: Mapping[str, Any], where: str) -> ObjectEvent:
    name = _text(record, "eventName").removeprefix("s3:")  # MinIO and Ceph write s3:ObjectCreated
    obj = _field(record, "s3", "object")
    return ObjectEvent(
        bucket=_text(record, "s3", "bucket", "name"),
        key=_key(obj, form_encoded=True),
        name=name,
        created=name in CREATED_NAMES,
        size=_size(obj.get("size")),
        etag=(_optional(obj, "eTag") or "").strip('"'),
        version_id=_optional(obj, "versionId"),
        sequencer=_sequencer(obj.get("sequencer")),
        event_time=_time(_optional(record, "eventTime")),
        where=where,
    )


def _eventbridge(payload: Mapping[str, Any], where: str) -> ObjectEvent:
    detail_type = _text(payload, "detail-type")
    reason = _optional(_field(payload, "detail"), "reason") or ""
    obj = _field(payload, "detail", "object")
    return ObjectEvent(
        bucket=_text(payload, "detail", "bucket", "name"),
        key=_key(obj, form_encoded=False),
        name=f"{detail_type}:{reason}" if reason else detail_type,
        created=detail_type == "Object Created" and (not reason or reason in CREATED_REASONS),
        size=_size(obj.get("size")),
        etag=(_optional(obj, "etag") or "").strip('"'),
        version_id=_optional(obj, "version-id"),
        sequencer=_sequencer(obj.get("sequencer")),
        event_time=_time(_optional(payload, "time")),
        where=where,
    )


def _field(data: Mapping[str, Any], *path: str) -> Any:
    value: Any = data
    for name in path:
        if not isinstance(value, Mapping) or name not in value:
            raise BadEvent(f"the event has no {'.'.join(path)}")
        value = value[name]
    return value


def _text(data: Mapping[str, Any], *path: str) -> str:
    value = _field(data, *path)
    if not isinstance(value, str) or not value:
        raise BadEvent(f"{'.'.join(path)} is {_kind(value)}, not a non-empty string")
    return _unicode(value, ".".join(path))


def _optional(data: Mapping[str, Any], name: str) -> str | None:
    """A string field that may be absent (or null, or empty): None then."""
    value = data.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise BadEvent(f"{name} is {_kind(value)}, not a string")
    return _unicode(value, name)


def _key(obj: Mapping[str, Any], *, form_encoded: bool) -> str:
    """The object's key: form-decoded from an S3 notification, as it is from EventBridge."""
    raw = obj.get("key")
    if not isinstance(raw, str) or not raw:
        raise BadEvent(f"the event names no object key (key is {_kind(raw)})")
    try:
        key = unquote_plus(raw, encoding="utf-8", errors="strict") if form_encoded else raw
    except UnicodeDecodeError as error:
        raise BadEvent(f"the key {raw[:200]!r} is not percent-encoded UTF-8") from error
    if len(_unicode(key, "the key").encode()) > MAX_KEY_BYTES:
        raise BadEvent(f"the key {key[:60]!r}… is longer than S3's {MAX_KEY_BYTES} bytes")
    return key


def _unicode(value: str, name: str) -> str:
    """``value``, if it is text S3 could have sent (JSON's ``\\ud800`` is not)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as error:
        raise BadEvent(f"{name} {value[:60]!r} is not valid Unicode") from error
    return value


def _shown_key(data: Mapping[str, Any]) -> str:
    """The key of a record that could not be read, as far as it can be shown."""
    for path in (("s3", "object", "key"), ("detail", "object", "key")):
        try:
            raw = _field(data, *path)
        except BadEvent:
            continue
        if isinstance(raw, str):
            shown = unquote_plus(raw, errors="replace") if path[0] == "s3" else raw
            return _printable(shown[:MAX_KEY_BYTES])
    return ""


def _size(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    raise BadEvent(f"size is {_kind(value)}, not a byte count")


def _sequencer(value: Any) -> str | None:
    if value is None or value == "":
        return None
    if isinstance(value, str) and _SEQUENCER.fullmatch(value):
        return value
    raise BadEvent(f"sequencer is {_kind(value)}, not a hexadecimal string")


def _time(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        return parse_time(value)
    except ValueError:
        return None


def _kind(value: Any) -> str:
    if isinstance(value, str):
        return f"{value[:40]!r}"
    return "missing" if value is None else f"of type {type(value).__name__}"


def _printable(text: str) -> str:
    """``text`` with what cannot be written as UTF-8 (lone surrogates) escaped."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _join(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


def _json(text: str | bytes) -> Any:
    try:
        return json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as error:
        raise BadEvent(f"not JSON: {str(error)[:200]}") from error
