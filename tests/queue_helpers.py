"""Shared helpers for the queue tests: three stores of one kind (folders under ``tmp_path``, or
fresh buckets of the session's SeaweedFS), small images made with pyvips, the ``ptif`` command
line as a subprocess, and checks that read the stores and open the pyramids.

A test module imports the ``bench`` fixture and the S3 server fixture it needs::

    from queue_helpers import bench  # noqa: F401
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import socket
import socketserver
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest
import pyvips
from conftest import read_pyramid

from ptif.config import Settings
from ptif.convert.pyramid import expected_levels
from ptif.queue.layout import CLAIMS_PREFIX, FAILED_PREFIX, REPORTS_PREFIX, claim_key, marker_key
from ptif.queue.markers import new_marker, write_marker
from ptif.queue.outputs import SOURCE_ETAG, SOURCE_KEY, output_key
from ptif.queue.reports import RunReport
from ptif.queue.worker import RunOptions, Stores, Worker
from ptif.stores import FolderStore, ObjectInfo, Store, StoreError, open_store
from ptif.stores.folder import RESERVED

KINDS = ("folder", "s3")
QUEUE = "rbsc/"
LEASE_SECONDS = 5.0
TILE = 256
PTIF = (sys.executable, "-m", "ptif")
STORE_NAMES = ("source", "process", "images")
#: Variables that could point a subprocess at stores other than the test's.
FOREIGN_VARIABLES = (
    "PTIF_SOURCE", "PTIF_PROCESS", "PTIF_IMAGES", "PTIF_ENDPOINT_URL", "PTIF_QUEUE_PREFIX",
    "PTIF_PROFILE", "PTIF_WORKERS", "PTIF_LEASE_SECONDS", "PTIF_MAX_ATTEMPTS", "PTIF_MIN_AGE",
    "PTIF_MAX_PIXELS", "PTIF_EXTENSIONS", "PTIF_CONFIG", "RBSC_BUCKET", "PROCESS_BUCKET",
    "IMAGE_BUCKET", "AWS_ENDPOINT_URL", "AWS_LAMBDA_FUNCTION_NAME",
    "ECS_CONTAINER_METADATA_URI_V4", "AWS_EXECUTION_ENV",
)  # fmt: skip

Size = tuple[int, int]


@dataclass
class Bench:
    """SOURCE, PROCESS and IMAGES of one kind, and everything a test does with them."""

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


def folder_bench(root: Path) -> Bench:
    urls = {name: str(root / name) for name in STORE_NAMES}
    return Bench("folder", root, urls)


def s3_bench(root: Path, server: Any) -> Bench:
    urls = {name: f"s3://{server.new_bucket(name[:4])}" for name in STORE_NAMES}
    return Bench("s3", root, urls, server.endpoint_url)


@pytest.fixture(params=KINDS)
def bench(request: pytest.FixtureRequest, tmp_path: Path) -> Bench:
    if request.param == "folder":
        return folder_bench(tmp_path)
    return s3_bench(tmp_path, request.getfixturevalue("s3_server"))


class Wrapped:
    """A store that behaves as ``inner`` except for what a subclass overrides."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class FlakySource(Wrapped):
    """Every download fails the way a dropped connection does."""

    def get_file(self, key: str, path: Path) -> ObjectInfo:
        raise StoreError(f"{key}: the download broke off (test)")


# images and markers ----------------------------------------------------------------------------


@functools.cache
def jpeg(width: int, height: int, seed: int = 0, *, noise: bool = False) -> bytes:
    """A JPEG of one colour (or of noise, which takes real work to convert) made from ``seed``."""
    colour = [seed * 37 % 256, seed * 91 % 256, seed * 53 % 256]
    if noise:
        bands = [pyvips.Image.gaussnoise(width, height, mean=128, sigma=40) for _ in range(3)]
        image = bands[0].bandjoin(bands[1:]) + colour
    else:
        image = pyvips.Image.black(width, height, bands=3) + colour
    return bytes(image.cast("uchar").jpegsave_buffer(Q=85))


def add_source(bench: Bench, key: str, data: bytes) -> str:
    return bench.source.put_bytes(key, data)


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
        add_source(bench, key, jpeg(width, height, seed, noise=key in noisy))
        queue(bench, key)


# reading the stores ----------------------------------------------------------------------------


def keys(store: Store, prefix: str = "") -> list[str]:
    return [info.key for info in store.list(prefix)]


def pending(bench: Bench) -> list[str]:
    return keys(bench.process, QUEUE)


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


class HeadersOnlyProxy:
    """Between a client and a loopback S3 endpoint: other requests go through (one upstream
    connection each), but a PUT has only its headers passed on before both connections drop at
    once, which is what the server sees when a client is killed between headers and body."""

    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        assert parts.hostname in ("127.0.0.1", "localhost") and parts.port
        self.upstream = (parts.hostname, parts.port)
        self.cut = 0
        self._server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _CuttingHandler)
        self._server.daemon_threads = True
        self._server.proxy = self  # type: ignore[attr-defined]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def endpoint_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def __enter__(self) -> HeadersOnlyProxy:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._server.shutdown()
        self._server.server_close()


class _CuttingHandler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        proxy: HeadersOnlyProxy = self.server.proxy  # type: ignore[attr-defined]
        while head := _read_head(self.rfile):
            body = self.rfile.read(_content_length(head))
            with socket.create_connection(proxy.upstream, timeout=10) as upstream:
                if head.startswith(b"PUT "):
                    upstream.sendall(head)
                    proxy.cut += 1
                    self.connection.setsockopt(
                        socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                    )
                    return
                upstream.sendall(head + body)
                self.wfile.write(_read_response(upstream.makefile("rb"), head))


def _read_head(stream: Any) -> bytes:
    lines = []
    while (line := stream.readline()) not in (b"\r\n", b"\n", b""):
        lines.append(line)
    return b"".join(lines) + b"\r\n" if lines else b""


def _content_length(head: bytes) -> int:
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 0


def _read_response(stream: Any, request: bytes) -> bytes:
    head = _read_head(stream)
    assert b"chunked" not in head.lower(), "the proxy reads bodies by Content-Length only"
    no_body = request.startswith(b"HEAD ") or head.split(b" ", 2)[1] in (b"204", b"304")
    return head + (b"" if no_body else stream.read(_content_length(head)))


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


def wait_for(condition: Any, timeout: float, step: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(step)
    return bool(condition())
