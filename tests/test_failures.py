"""Failure records: the shape the worker writes is the one ``ptif retry`` undoes, and an
unreadable marker is filed apart, with its first bytes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ptif.errors import PtifError
from ptif.queue.failures import (
    FAILURE_FIELDS,
    RAW_LIMIT,
    FailureRecord,
    requeued_marker,
    write_failure,
    write_unreadable,
)
from ptif.queue.layout import failed_key, unreadable_key
from ptif.queue.leases import Tries
from ptif.queue.markers import BadMarker, new_marker
from ptif.queue.status import retry
from ptif.stores import FolderStore

MARKER_KEY = "rbsc/a/x.jpg.json"


@pytest.fixture
def process(tmp_path: Path) -> FolderStore:
    return FolderStore(tmp_path / "process")


def read(store: FolderStore, key: str) -> dict[str, object]:
    data, _ = store.get_bytes(key)
    record: dict[str, object] = json.loads(data)
    return record


@pytest.mark.parametrize("last_error", ["", "timed out"])
def test_a_failure_record_goes_back_in_the_queue_as_the_marker_it_was(
    process: FolderStore, last_error: str
) -> None:
    marker = new_marker("a/x.jpg", origin="s3-event", etag="e1", extra={"copyrightStatus": "c"})
    tries = Tries(MARKER_KEY, "m1", 5, last_error, "store-unreachable" if last_error else "")
    error = PtifError("a/x.jpg: gave up after 5 attempts", code="too-many-attempts")
    key = write_failure(process, FailureRecord(marker, error, MARKER_KEY, 5, "host:1", tries))
    record = read(process, key)

    assert key == failed_key("a/x.jpg")
    assert set(record) - set(marker.fields) <= set(FAILURE_FIELDS)
    assert record["code"] == "too-many-attempts" and record["attempts"] == 5
    assert record["markerKey"] == MARKER_KEY and record["worker"] == "host:1"
    assert record.get("lastError") == (last_error or None)
    assert requeued_marker(record).fields == {**marker.fields, "origin": "retry"}


def test_an_unreadable_marker_is_filed_by_the_marker_key(process: FolderStore) -> None:
    data = b"\xff not json " * 1000
    error = BadMarker(f"{MARKER_KEY}: not a JSON marker")
    key = write_unreadable(process, MARKER_KEY, data, error, worker="host:1")
    record = read(process, key)

    assert key == unreadable_key(MARKER_KEY)
    assert record["code"] == "bad-marker" and record["markerKey"] == MARKER_KEY
    assert record["raw"] == data[:RAW_LIMIT].decode("utf-8", "replace")
    report = retry(process, "rbsc/")
    assert (report.requeued, report.not_retryable) == (0, 1)
    assert list(process.list("rbsc/")) == [] and process.head(key) is not None
