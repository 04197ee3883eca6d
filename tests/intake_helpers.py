"""Shared by the intake tests (Lambda handler, watch, reconcile): the three stores of one kind
(folders under ``tmp_path``, or fresh buckets of the session's SeaweedFS), event fixtures, and
helpers that read what intake left in the stores. No pyvips, no worker: intake needs neither.

A test module imports the fixture it needs, and the S3 server's::

    from intake_helpers import stores_fixture  # noqa: F401
"""

from __future__ import annotations

import copy
import json
import os
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ptif.convert.profiles import PROFILES
from ptif.queue.layout import marker_key
from ptif.queue.outputs import RECIPE, output_key, output_metadata
from ptif.stores import Store, StoreError, open_store

EVENTS = Path(__file__).parent / "events"
QUEUE = "rbsc/"
KINDS = ("folder", "s3")
CURRENT_RECIPE = PROFILES["default"].recipe.hash
#: Variables that could point the code under test at other stores or settings.
FOREIGN = (
    "PTIF_SOURCE", "PTIF_PROCESS", "PTIF_IMAGES", "PTIF_ENDPOINT_URL", "PTIF_QUEUE_PREFIX",
    "PTIF_PROFILE", "PTIF_EXTENSIONS", "PTIF_CONFIG", "PTIF_WATCH_SETTLE", "PTIF_WATCH_INTERVAL",
    "RBSC_BUCKET", "PROCESS_BUCKET", "IMAGE_BUCKET", "AWS_ENDPOINT_URL",
    "AWS_LAMBDA_FUNCTION_NAME", "ECS_CONTAINER_METADATA_URI_V4", "AWS_EXECUTION_ENV",
)  # fmt: skip


@dataclass
class Stores:
    """SOURCE, PROCESS and IMAGES of one kind, opened."""

    kind: str
    root: Path
    urls: dict[str, str]
    endpoint_url: str | None = None

    def __post_init__(self) -> None:
        self.source = self.open("source")
        self.process = self.open("process")
        self.images = self.open("images")

    def open(self, name: str) -> Store:
        return open_store(self.urls[name], endpoint_url=self.endpoint_url)

    def env(self, **extra: str) -> dict[str, str]:
        """The environment of a process that should use these stores."""
        env = {k: v for k, v in os.environ.items() if k not in FOREIGN}
        env.update(
            PTIF_SOURCE=self.urls["source"],
            PTIF_PROCESS=self.urls["process"],
            PTIF_IMAGES=self.urls["images"],
        )
        if self.endpoint_url:
            env["PTIF_ENDPOINT_URL"] = self.endpoint_url
        env.update(extra)
        return env

    def setenv(self, monkeypatch: pytest.MonkeyPatch, **extra: str) -> None:
        for name in FOREIGN:
            monkeypatch.delenv(name, raising=False)
        for name, value in self.env(**extra).items():
            if os.environ.get(name) != value:
                monkeypatch.setenv(name, value)


def folder_stores(root: Path) -> Stores:
    return Stores("folder", root, {n: str(root / n) for n in ("source", "process", "images")})


def s3_stores(root: Path, server: Any) -> Stores:
    urls = {n: f"s3://{server.new_bucket(n[:4])}" for n in ("source", "process", "images")}
    return Stores("s3", root, urls, server.endpoint_url)


@pytest.fixture(params=KINDS, name="stores")
def stores_fixture(request: pytest.FixtureRequest, tmp_path: Path) -> Stores:
    if request.param == "folder":
        return folder_stores(tmp_path)
    return s3_stores(tmp_path, request.getfixturevalue("s3_server"))


# events ----------------------------------------------------------------------------------------


def event(name: str) -> dict[str, Any]:
    """A fresh copy of ``tests/events/<name>.json``."""
    return copy.deepcopy(json.loads((EVENTS / f"{name}.json").read_text()))


def s3_object(payload: Mapping[str, Any], index: int = 0) -> dict[str, Any]:
    obj: dict[str, Any] = payload["Records"][index]["s3"]["object"]
    return obj


# reading the stores ------------------------------------------------------------------------------


def markers(process: Store, prefix: str = QUEUE) -> dict[str, dict[str, Any]]:
    """Every queued marker, by its ``key`` field."""
    found = {}
    for info in process.list(prefix):
        fields = json.loads(process.get_bytes(info.key)[0])
        found[fields["key"]] = fields
    return found


def marker_etag(process: Store, source_key: str) -> str | None:
    """The store eTag of the marker object itself (changes whenever it is rewritten)."""
    info = process.head(marker_key(source_key, QUEUE))
    return info.etag if info else None


def put_source(source: Store, key: str, data: bytes = b"image bytes") -> str:
    return source.put_bytes(key, data)


def put_output(
    images: Store, source_key: str, source_etag: str, recipe: str = CURRENT_RECIPE
) -> None:
    """An output as the worker leaves it, as far as intake looks: the metadata."""
    conversion = {RECIPE: recipe, "width": "10", "height": "10"}
    metadata = output_metadata(conversion, source_key, source_etag)
    images.put_bytes(output_key(source_key), b"II*\0 a pyramid", metadata=metadata)


def consume(process: Store) -> None:
    """Delete every marker, as workers do once the pyramids are made."""
    for info in list(process.list(QUEUE)):
        process.delete(info.key)


def wait_for(condition: Callable[[], Any], timeout: float, step: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(step)


class FailingStore:
    """A store that behaves as ``inner`` but fails writes of keys containing ``needle``, as an
    unreachable server would (the error :class:`StoreError` after the retries)."""

    def __init__(self, inner: Store, needle: str) -> None:
        self.inner = inner
        self.needle = needle
        self.url = inner.url

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def put_bytes(self, key: str, data: bytes, **kwargs: Any) -> str:
        if self.needle in key:
            raise StoreError(f"{self.url}: put {key} failed: connection reset (injected)")
        return self.inner.put_bytes(key, data, **kwargs)


def keys(store: Store, prefix: str = "") -> list[str]:
    return sorted(info.key for info in store.list(prefix))


def iter_keys(store: Store, prefix: str = "") -> Iterator[str]:
    for info in store.list(prefix):
        yield info.key
