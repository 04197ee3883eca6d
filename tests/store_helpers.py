"""Three stores of one kind, for the queue and intake tests, and what those tests do with them.

A :class:`Bench` is SOURCE, PROCESS and IMAGES as folders under ``tmp_path`` or as fresh buckets
of the session's SeaweedFS; conftest.py's ``bench`` fixture gives one of each kind. The helpers
below write sources, markers and outputs as intake and the worker would, read back what a run
left (markers, claims, failure records, reports, pyramids), run the ``ptif`` command line as a
subprocess that sees only the test's stores, and wait for a condition.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
from corpus import jpeg
from pyramids import read_pyramid

from ptif.config import ENVIRONMENT_VARIABLES, Settings
from ptif.convert.profiles import PROFILES
from ptif.convert.pyramid import expected_levels
from ptif.queue.layout import CLAIMS_PREFIX, FAILED_PREFIX, REPORTS_PREFIX, claim_key, marker_key
from ptif.queue.markers import new_marker, parse_marker, write_marker
from ptif.queue.outputs import RECIPE, SOURCE_ETAG, SOURCE_KEY, output_key, output_metadata
from ptif.queue.reports import RunReport
from ptif.queue.worker import RunOptions, Stores, Worker
from ptif.stores import FolderStore, ObjectInfo, Store, StoreError, open_store
from ptif.stores.folder import RESERVED

KINDS = ("folder", "s3")
STORE_NAMES = ("source", "process", "images")
QUEUE = "rbsc/"
LEASE_SECONDS = 5.0
TILE = 256
CURRENT_RECIPE = PROFILES["default"].recipe.hash
PTIF = (sys.executable, "-m", "ptif")
#: Variables that could point the code under test, or a subprocess, at other stores or settings:
#: every one ptif reads, so that the developer's shell cannot leak into a test.
FOREIGN_VARIABLES = ENVIRONMENT_VARIABLES

Size = tuple[int, int]


@dataclass
class Bench:
    """SOURCE, PROCESS and IMAGES of one kind, opened, and everything a test does with them."""

    kind: str
    root: Path
    urls: Mapping[str, str]
    endpoint_url: str | None = None
    stores: Stores = field(init=False)

    def __post_init__(self) -> None:
        opened = {name: self.open(name) for name in STORE_NAMES}
        self.stores = Stores(**opened)
        self.tmp.mkdir(parents=True, exist_ok=True)

    def open(self, name: str) -> Store:
        return open_store(self.urls[name], endpoint_url=self.endpoint_url)

    @property
    def source(self) -> Store:
        return self.stores.source

    @property
    def process(self) -> Store:
        return self.stores.process

    @property
    def images(self) -> Store:
        return self.stores.images

    @property
    def tmp(self) -> Path:
        """The subprocesses' TMPDIR: their work folders, and anything a killed one leaves."""
        return self.root / "tmp"

    def settings(self, **changes: Any) -> Settings:
        base = Settings(
            source=self.urls["source"],
            process=self.urls["process"],
            images=self.urls["images"],
            endpoint_url=self.endpoint_url,
            queue_prefix=QUEUE,
            workers=2,
            lease_seconds=LEASE_SECONDS,
        )
        return replace(base, **changes)

    def worker(self, stores: Stores | None = None, **changes: Any) -> Worker:
        return Worker(self.settings(**changes), stores or self.stores)

    def run(self, options: RunOptions | None = None, **changes: Any) -> RunReport:
        return self.worker(**changes).run(options)

    def env(self, **extra: str) -> dict[str, str]:
        """The environment of a process that should use these stores and nothing else."""
        env = {k: v for k, v in os.environ.items() if k not in FOREIGN_VARIABLES}
        env.update(
            PTIF_SOURCE=self.urls["source"],
            PTIF_PROCESS=self.urls["process"],
            PTIF_IMAGES=self.urls["images"],
            PTIF_LEASE_SECONDS=str(LEASE_SECONDS),
            TMPDIR=str(self.tmp),
        )
        if self.endpoint_url:
            env["PTIF_ENDPOINT_URL"] = self.endpoint_url
        env.update(extra)
        return env

    def setenv(self, monkeypatch: pytest.MonkeyPatch, **extra: str) -> None:
        """This process's environment as :meth:`env` has it, for code that reads it in-process."""
        for name in FOREIGN_VARIABLES:
            monkeypatch.delenv(name, raising=False)
        for name, value in self.env(**extra).items():
            if os.environ.get(name) != value:
                monkeypatch.setenv(name, value)


def folder_bench(root: Path) -> Bench:
    urls = {name: str(root / name) for name in STORE_NAMES}
    return Bench("folder", root, urls)


def s3_bench(root: Path, server: Any) -> Bench:
    urls = {name: f"s3://{server.new_bucket(name[:4])}" for name in STORE_NAMES}
    return Bench("s3", root, urls, server.endpoint_url)


# stores that misbehave --------------------------------------------------------------------------


class Wrapped:
    """A store that behaves as ``inner`` except for what a subclass overrides."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class FlakySource(Wrapped):
    """Every download fails the way a dropped connection does."""

    def get_file(self, key: str, path: Path, max_bytes: int | None = None) -> ObjectInfo:
        raise StoreError(f"{key}: the download broke off (test)")


class FailingStore(Wrapped):
    """Writes of keys containing ``needle`` fail as an unreachable server's do (the error
    :class:`StoreError` after the retries)."""

    def __init__(self, inner: Store, needle: str) -> None:
        super().__init__(inner)
        self.needle = needle
        self.url = inner.url

    def put_bytes(self, key: str, data: bytes, **kwargs: Any) -> str:
        if self.needle in key:
            raise StoreError(f"{self.url}: put {key} failed: connection reset (injected)")
        return self.inner.put_bytes(key, data, **kwargs)


# writing sources, markers and outputs -----------------------------------------------------------


def put_source(source: Store, key: str, data: bytes = b"image bytes") -> str:
    return source.put_bytes(key, data)


def queue(bench: Bench, key: str, **extra: Any) -> str:
    """Write a marker for the source ``key`` as the intake would; return the marker's key."""
    info = bench.source.head(key)
    marker = new_marker(
        key,
        origin="mark",
        etag=info.etag if info else "",
        size=info.size if info else None,
        extra=extra,
    )
    assert write_marker(bench.process, marker, QUEUE)
    return marker_key(key, QUEUE)


def add_images(bench: Bench, sizes: Mapping[str, Size], *, noise: Iterable[str] = ()) -> None:
    """Upload a JPEG of each size and queue it."""
    noisy = set(noise)
    for seed, (key, (width, height)) in enumerate(sizes.items()):
        put_source(bench.source, key, jpeg(width, height, seed, noise=key in noisy))
        queue(bench, key)


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


def backdate_marker(bench: Bench, source_key: str, seconds: float) -> None:
    """Make the queued marker of ``source_key`` look written ``seconds`` earlier than it was: its
    event time and its file's modification time in a folder store. S3 sets LastModified itself,
    so with a bucket this waits instead."""
    if not isinstance(bench.process, FolderStore):
        time.sleep(seconds)
        return
    key = marker_key(source_key, QUEUE)
    marker = parse_marker(bench.process.get_bytes(key)[0], key)
    written = datetime.fromisoformat(str(marker.fields["eventTime"]).replace("Z", "+00:00"))
    earlier = (written - timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")
    bench.process.put_bytes(key, marker.with_fields(eventTime=earlier).to_bytes())
    path = bench.process.root.joinpath(*key.split("/"))
    mtime = path.stat().st_mtime - seconds
    os.utime(path, (mtime, mtime))


# reading the stores ----------------------------------------------------------------------------


def keys(store: Store, prefix: str = "") -> list[str]:
    return sorted(info.key for info in store.list(prefix))


def pending(bench: Bench) -> list[str]:
    return keys(bench.process, QUEUE)


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


def read_json(store: Store, key: str) -> dict[str, Any]:
    data, _ = store.get_bytes(key)
    body = json.loads(data)
    assert isinstance(body, dict)
    return body


def failures(bench: Bench) -> dict[str, dict[str, Any]]:
    """Failure records by source key (or by record key when the record names no source)."""
    records = {}
    for key in keys(bench.process, FAILED_PREFIX):
        record = read_json(bench.process, key)
        records[str(record.get("key") or key)] = record
    return records


def live_claims(bench: Bench) -> list[dict[str, Any]]:
    """Leases not yet expired; an unreadable one counts as expired, as it does for workers."""
    claims = (_claim(bench.process, key) for key in keys(bench.process, CLAIMS_PREFIX))
    return [claim for claim in claims if float(claim.get("expires", 0)) > time.time()]


def claim_of(bench: Bench, source_key: str) -> dict[str, Any]:
    """The claim object of the source's output, live or released."""
    return read_json(bench.process, claim_key(output_key(source_key)))


def _claim(store: Store, key: str) -> dict[str, Any]:
    try:
        return read_json(store, key)
    except (ValueError, AssertionError):
        return {}


def reports(bench: Bench) -> list[dict[str, Any]]:
    return [read_json(bench.process, key) for key in keys(bench.process, REPORTS_PREFIX)]


def fetch(store: Store, key: str, folder: Path) -> tuple[Path, ObjectInfo]:
    folder.mkdir(parents=True, exist_ok=True)
    local = folder / hashlib.sha256(key.encode()).hexdigest()
    return local, store.get_file(key, local)


def verify_output(bench: Bench, source_key: str, size: Size) -> ObjectInfo:
    """The pyramid of ``source_key``: made from the source's current eTag, of the right size,
    with every level libvips should write, tiled."""
    source = bench.source.head(source_key)
    assert source is not None, source_key
    local, info = fetch(bench.images, output_key(source_key), bench.root / "verify")
    assert info.metadata[SOURCE_ETAG] == source.etag, source_key
    assert unquote(info.metadata[SOURCE_KEY]) == source_key
    assert (int(info.metadata["width"]), int(info.metadata["height"])) == size
    pyramid = read_pyramid(local)
    assert pyramid.sizes == expected_levels(*size, TILE), source_key
    assert all(level.tiled and level.tile_width == TILE for level in pyramid.levels)
    local.unlink()
    return info


def verify_all(bench: Bench, sizes: Mapping[str, Size]) -> None:
    for key, size in sizes.items():
        verify_output(bench, key, size)


def stray_files(bench: Bench, expected: Iterable[str]) -> list[str]:
    """Objects in IMAGES that are not the expected outputs; for a folder also any file outside
    the store's own ``.ptif-*`` folders, and any unfinished multipart upload in a bucket."""
    wanted = set(expected)
    found = [key for key in keys(bench.images) if key not in wanted]
    if isinstance(bench.images, FolderStore):
        found += [p for p in _files(bench.images.root) if p not in wanted]
    else:
        found += _open_uploads(bench)
    return sorted(set(found))


def _files(root: Path) -> Iterator[str]:
    for path in root.rglob("*"):
        relative = path.relative_to(root)
        if path.is_file() and not relative.parts[0].startswith(RESERVED):
            yield relative.as_posix()


def _open_uploads(bench: Bench) -> list[str]:
    client: Any = getattr(bench.images, "client")  # noqa: B009
    bucket: str = getattr(bench.images, "bucket")  # noqa: B009
    uploads = client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    return [f"upload:{upload['Key']}" for upload in uploads]


# what a folder holds, and folders mounted read-only -----------------------------------------------


def tree(root: Path) -> dict[str, tuple[int, int, int, str]]:
    """Every entry at and below ``root`` (symlinks not followed): its mode, size, modification
    time in nanoseconds and, for a file, the SHA-256 of its bytes. A file made and removed
    again still shows, in its folder's modification time."""
    found = {}
    for path in [root, *sorted(root.rglob("*"))]:
        st = path.lstat()
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else ""
        key = path.relative_to(root).as_posix()
        found[key] = (st.st_mode, st.st_size if digest else 0, st.st_mtime_ns, digest)
    return found


@contextmanager
def read_only_mount(folder: Path, at: Path) -> Iterator[Path]:
    """``folder`` bind-mounted read-only at ``at`` (made here); skips the test, saying why, where
    the kernel does not let this process mount (not root, or a container without the right)."""
    if os.geteuid() != 0:
        pytest.skip("a read-only bind mount needs root")
    at.mkdir()
    _mount("--bind", str(folder), str(at))
    try:
        _mount("-o", "remount,ro,bind", str(at))
        yield at
    finally:
        subprocess.run(["umount", str(at)], check=False, capture_output=True)


def _mount(*args: str) -> None:
    done = subprocess.run(["mount", *args], check=False, capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"the kernel refused 'mount {' '.join(args)}': {done.stderr.strip()}")


# the command line ------------------------------------------------------------------------------


def run_ptif(
    bench: Bench, *args: str, timeout: float = 120, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*PTIF, *args],
        env=dict(env or bench.env()),
        cwd=bench.root,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def start_ptif(bench: Bench, *args: str, env: Mapping[str, str] | None = None) -> Any:
    return subprocess.Popen(
        [*PTIF, *args],
        env=dict(env or bench.env()),
        cwd=bench.root,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def json_report(done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    """The run report ``ptif process --json`` prints on stdout."""
    assert done.stdout.strip(), done.stderr
    body = json.loads(done.stdout.strip().splitlines()[-1])
    assert isinstance(body, dict)
    return body


def wait_for(condition: Callable[[], Any], timeout: float, step: float = 0.05) -> Any:
    """Poll ``condition`` until it returns something true or ``timeout`` seconds pass; return
    its last value. For what another process or thread does, which no clock of ours drives."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(step)
