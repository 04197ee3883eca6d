"""What an output records about its source, and how that is read back: keys with ``%``, accents
and plus signs, values written percent-encoded by earlier versions, and conflicts."""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import quote

import pytest

from ptif.queue.outputs import (
    RECIPE,
    SOURCE_KEY,
    OutputConflict,
    OutputState,
    check_owner,
    compare_output,
    output_key,
    output_metadata,
    recorded_source,
)
from ptif.stores.base import ObjectInfo

KEYS = ["a/x.jpg", "100% cotton/a+b.tif", "café/été 1.jpg", "%41%zz/x.png", "e\u0301/x.jpg",
        "%%41%2541%%%/x%", "%C3%A9%ff/%"]  # fmt: skip


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


def test_per_cent_signs_are_not_tripled() -> None:
    """Only a ``%`` that reads as an escape is escaped: ``%%%…`` stays within S3's 2 KB."""
    key = "%" * 1020 + ".jpg"
    assert output_metadata({}, key, "etag")[SOURCE_KEY] == key


def test_another_source_is_a_conflict() -> None:
    metadata = output_metadata({}, "a/x.png", "etag")
    with pytest.raises(OutputConflict, match=r"a/x\.png") as caught:
        check_owner(info(metadata), "a/x.jpg")
    assert caught.value.code == "output-conflict" and caught.value.permanent


ETAG = "0123abcd"
RECIPES = frozenset({"recipe-1", "recipe-2"})


def made(source_key: str, source_etag: str, recipe: str = "recipe-1") -> ObjectInfo:
    return info(output_metadata({RECIPE: recipe}, source_key, source_etag))


@pytest.mark.parametrize(
    ("output", "etag", "state"),
    [
        (None, ETAG, OutputState.MISSING),
        (made("a/x.jpg", ETAG), ETAG, OutputState.CURRENT),
        (made("a/x.jpg", ETAG, "recipe-2"), ETAG, OutputState.CURRENT),
        (made("a/x.jpg", "older"), ETAG, OutputState.OTHER_ETAG),
        (made("a/x.jpg", ETAG, "recipe-0"), ETAG, OutputState.OTHER_RECIPE),
        (info({RECIPE: "recipe-1"}), ETAG, OutputState.OTHER_ETAG),  # made by something else
        # Another source's pyramid is never current, even from identical bytes (one eTag).
        (made("a/x.png", ETAG), ETAG, OutputState.CONFLICT),
        (made("a/x.png", "older"), ETAG, OutputState.CONFLICT),
        # An empty eTag proves no version: the worker always redid these; now intake agrees.
        (made("a/x.jpg", ""), "", OutputState.OTHER_ETAG),
    ],
)
def test_the_freshness_rule(output: ObjectInfo | None, etag: str, state: OutputState) -> None:
    assert compare_output(output, "a/x.jpg", etag, RECIPES) is state
