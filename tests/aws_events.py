"""S3 notification payloads as AWS documents them (tests/events/*.json: plain, wrapped in SNS,
SQS or EventBridge, and the test event), handed out as fresh copies a test may change."""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

EVENTS = Path(__file__).parent / "events"


def event(name: str) -> dict[str, Any]:
    """A fresh copy of ``tests/events/<name>.json``."""
    return copy.deepcopy(json.loads((EVENTS / f"{name}.json").read_text()))


def s3_object(payload: Mapping[str, Any], index: int = 0) -> dict[str, Any]:
    obj: dict[str, Any] = payload["Records"][index]["s3"]["object"]
    return obj


#: Keys that each delivery encodes its own way, as the fixtures ``s3-special-keys`` (direct S3
#: notification: form-encoded, a space as ``+``) and ``eventbridge-special-keys-in-sqs`` (an
#: EventBridge rule's events in an SQS queue: the key as it is) carry them: a space, a plus and a
#: percent-encoded-looking plus, a colon, a per cent sign, letters outside ASCII.
SPECIAL_KEYS = (
    "scans/box 1/page one.jpg",
    "scans/c++ and c%2B%2B.jpg",
    "scans/2023-08-08T14:03:40.532432.jpg",
    "scans/100% cotton rag.jpg",
    "scans/Zürich/Ōsaka 写真 ß.jpg",
)


def eventbridge_events(name: str) -> list[dict[str, Any]]:
    """The EventBridge events in the SQS messages of fixture ``name``, as EventBridge would
    deliver each straight to a function."""
    return [json.loads(message["body"]) for message in event(name)["Records"]]
