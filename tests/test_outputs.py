"""What an output records about its source, and how that is read back: keys with ``%``, accents
and plus signs, values written percent-encoded by earlier versions, and conflicts."""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import quote

import pytest

from ptif.queue.outputs import (
    SOURCE_KEY,
    OutputConflict,
    check_owner,
    output_key,
    output_metadata,
    recorded_source,
)
from ptif.stores.base import ObjectInfo

KEYS = ["a/x.jpg", "100% cotton/a+b.tif", "café/été 1.jpg", "%41%zz/x.png", "e\u0301/x.jpg"]


def info(metadata: dict[str, str]) -> ObjectInfo:
    return ObjectInfo("a/x.tif", 10, "etag", datetime.now(UTC), metadata)


@pytest.mark.parametrize(
    ("source", "output"),
    [("a/b/scan 1.jpeg", "a/b/scan 1.tif"), ("x", "x.tif"), (".hidden", ".hidden.tif")],
)
def test_output_key_swaps_the_extension(source: str, output: str) -> None:
    assert output_key(source) == output


@pytest.mark.parametrize("key", KEYS)
def test_source_key_reads_back(key: str) -> None:
    metadata = output_metadata({"width": "1"}, key, "etag")
    assert recorded_source(info(metadata)) == key
    check_owner(info(metadata), key)


@pytest.mark.parametrize("key", KEYS)
def test_percent_encoded_values_of_earlier_versions_read_back(key: str) -> None:
    assert recorded_source(info({SOURCE_KEY: quote(key, safe="/")})) == key


def test_accents_are_not_tripled() -> None:
    key = "é" * 500 + ".jpg"
    value = output_metadata({}, key, "etag")[SOURCE_KEY]
    assert len(value.encode()) == len(key.encode())


def test_another_source_is_a_conflict() -> None:
    metadata = output_metadata({}, "a/x.png", "etag")
    with pytest.raises(OutputConflict, match=r"a/x\.png") as caught:
        check_owner(info(metadata), "a/x.jpg")
    assert caught.value.code == "output-conflict" and caught.value.permanent
