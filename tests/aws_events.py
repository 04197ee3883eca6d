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
