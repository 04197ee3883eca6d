"""The source store holds an archive's masters and is read-only to ptif: no command writes a
lock, a temp file or a marker there, opening it creates nothing, and every command works on a
folder mounted read-only and with credentials that can only read the source bucket.

Every command runs as a subprocess against real stores: a folder left byte-identical (modes,
times and bytes of every entry), a read-only bind mount, and a SeaweedFS whose ``worker`` key
may only read and list the source bucket while it works the queue and writes the pyramids.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import botocore.exceptions
import pytest
import pyvips
import s3_server as seaweedfs
from botocore.config import Config
from corpus import jpeg
from s3_server import Identity, S3Server
from store_helpers import Bench, folder_bench, keys, read_only_mount, run_ptif, tree

from ptif.errors import ConfigError
from ptif.queue.outputs import output_key
from ptif.stores import open_store

#: A camera JPEG, a 16-bit master TIFF and a PNG, in folders as an archive keeps them.
SOURCES: dict[str, bytes] = {
    "fonds/letter.jpg": jpeg(300, 200, 1),
    "scan.tif": bytes(
        (pyvips.Image.xyz(320, 240)[0] * 200).cast("ushort").tiffsave_buffer(compression="lzw")
    ),
    "maps/map.png": bytes(
        pyvips.Image.black(200, 150, bands=3).add(90).cast("uchar").pngsave_buffer()
    ),
}
#: Every command that opens the source, in an order where each has work: queue, count, convert,
#: compare, watch, retry, count again. Each must exit 0.
COMMANDS: tuple[tuple[str, ...], ...] = (
    ("mark",),
    ("status", "--json"),
    ("process", "--json"),
    ("reconcile", "--json"),
    ("watch", "--once", "--initial-scan"),
    ("watch", "--once", "--poll"),
    ("retry",),
    ("status", "--json"),
)
SOURCE_BUCKET, PROCESS_BUCKET, IMAGES_BUCKET = "masters", "queue", "pyramids"
#: Reads and lists the masters; reads, lists and writes the queue and the pyramids.
WORKER = Identity(
    "worker",
    (
        f"Read:{SOURCE_BUCKET}",
        f"List:{SOURCE_BUCKET}",
        *(f"{a}:{b}" for b in (PROCESS_BUCKET, IMAGES_BUCKET) for a in ("Read", "List", "Write")),
    ),
)


def put_sources(root: Path) -> None:
    for key, data in SOURCES.items():
        path = root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def run_every_command(bench: Bench, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run :data:`COMMANDS`; each must exit 0. The last ``status --json``, and the pyramids."""
    results: dict[str, Any] = {}
    for command in COMMANDS:
        done = run_ptif(bench, *command, env=env)
        assert done.returncode == 0, (command, done.stderr)
        if "--json" in command:
            results[command[0]] = json.loads(done.stdout.strip().splitlines()[-1])
    assert sorted(results["process"]["converted"]) == sorted(SOURCES), results["process"]
    assert results["status"]["pending"] == results["status"]["failed"] == 0, results["status"]
    assert sorted(keys(bench.images)) == sorted(output_key(k) for k in SOURCES)
    return results


# folders ---------------------------------------------------------------------------------------


def test_no_command_changes_a_writable_source_folder(tmp_path: Path) -> None:
    bench = folder_bench(tmp_path)
    put_sources(tmp_path / "source")
    before = tree(tmp_path / "source")
    run_every_command(bench)
    out = tmp_path / "converted"
    out.mkdir()
    done = run_ptif(bench, "convert", str(tmp_path / "source" / "scan.tif"), str(out))
    assert done.returncode == 0, done.stderr
    assert tree(tmp_path / "source") == before


def test_every_command_works_on_a_read_only_mount(tmp_path: Path) -> None:
    masters = tmp_path / "masters"
    put_sources(masters)
    before = tree(masters)
    with read_only_mount(masters, tmp_path / "source") as mounted:
        with pytest.raises(OSError, match="Read-only file system"):
            (mounted / "probe").write_bytes(b"")
        bench = Bench(
            "folder", tmp_path, {n: str(tmp_path / n) for n in ("source", "process", "images")}
        )
        run_every_command(bench)
        out = tmp_path / "converted"
        out.mkdir()
        done = run_ptif(bench, "convert", str(mounted / "fonds" / "letter.jpg"), str(out))
        assert done.returncode == 0, done.stderr
        assert (out / "letter.tif").is_file()
    assert tree(masters) == before


def test_a_missing_source_folder_is_refused_not_made(tmp_path: Path) -> None:
    """A mistyped source is not an empty store: ptif says so and creates nothing."""
    missing = tmp_path / "scnas"
    with pytest.raises(ConfigError, match="no such folder"):
        open_store(str(missing), read_only=True)
    bench = folder_bench(tmp_path)
    done = run_ptif(bench, "mark", "--source", str(missing))
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith(f"ptif: the source store (--source {missing}): no such folder")
    assert not missing.exists()


@pytest.fixture(params=["folder", "s3"])
def read_only_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """A store opened read-only, and a function that lists everything in it (hidden too)."""
    if request.param == "folder":
        root = tmp_path / "masters"
        root.mkdir()
        yield open_store(str(root), read_only=True), lambda: tree(root)
        return
    server: S3Server = request.getfixturevalue("s3_server")
    with server.bucket() as bucket:
        store = open_store(f"s3://{bucket}", endpoint_url=server.endpoint_url, read_only=True)
        yield store, lambda: bucket_contents(server.client(), bucket)


def test_a_read_only_store_refuses_every_write_before_touching_it(
    read_only_store: Any, tmp_path: Path
) -> None:
    store, contents = read_only_store
    before = contents()
    (tmp_path / "x").write_bytes(b"x")
    attempts = [
        lambda: store.put_bytes("a.txt", b"x"),
        lambda: store.put_bytes("a.txt", b"x", if_none_match=True),
        lambda: store.put_file("a.txt", tmp_path / "x"),
        lambda: store.delete("a.txt"),
        store.check_conditional_writes,
    ]
    for attempt in attempts:
        with pytest.raises(ConfigError, match="read-only to ptif"):
            attempt()
    assert contents() == before


# a bucket the worker may only read ---------------------------------------------------------------


@pytest.fixture(scope="module")
def reader_server(
    tmp_path_factory: pytest.TempPathFactory, aws_sandbox: None
) -> Iterator[S3Server]:
    """A SeaweedFS of its own, that knows :data:`WORKER`, with the three buckets."""
    server = seaweedfs.start(tmp_path_factory.mktemp("s3-read-only"), [WORKER])
    try:
        for bucket in (SOURCE_BUCKET, PROCESS_BUCKET, IMAGES_BUCKET):
            server.client().create_bucket(Bucket=bucket)
        yield server
    finally:
        seaweedfs.stop(server)


def bucket_contents(client: Any, bucket: str) -> dict[str, Any]:
    """Every object with its eTag, size, metadata and bytes, and any unfinished upload."""
    found: dict[str, Any] = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for item in page.get("Contents", []):
            got = client.get_object(Bucket=bucket, Key=item["Key"])
            found[item["Key"]] = (
                got["ETag"],
                got["ContentLength"],
                got["Metadata"],
                got["Body"].read(),
            )
    found["uploads"] = client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    return found


def worker_client(server: S3Server) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=server.endpoint_url,
        aws_access_key_id=WORKER.access_key,
        aws_secret_access_key=WORKER.secret_key,
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
    )


def test_every_command_works_with_credentials_that_only_read_the_source(
    reader_server: S3Server, tmp_path: Path
) -> None:
    admin = reader_server.client()
    for key, data in SOURCES.items():
        admin.put_object(Bucket=SOURCE_BUCKET, Key=key, Body=data)
    with pytest.raises(botocore.exceptions.ClientError, match="AccessDenied"):
        worker_client(reader_server).put_object(Bucket=SOURCE_BUCKET, Key="probe", Body=b"")
    before = bucket_contents(admin, SOURCE_BUCKET)
    urls = {
        "source": f"s3://{SOURCE_BUCKET}",
        "process": f"s3://{PROCESS_BUCKET}",
        "images": f"s3://{IMAGES_BUCKET}",
    }
    bench = Bench("s3", tmp_path, urls, reader_server.endpoint_url)
    run_every_command(bench, env=WORKER.env(bench.env()))
    assert bucket_contents(admin, SOURCE_BUCKET) == before


def test_the_worker_key_really_cannot_write_the_source(reader_server: S3Server) -> None:
    """The identity the test above runs with: reading works, writing and deleting do not."""
    client = worker_client(reader_server)
    client.list_objects_v2(Bucket=SOURCE_BUCKET)
    for attempt in (
        lambda: client.put_object(Bucket=SOURCE_BUCKET, Key="x", Body=b"x"),
        lambda: client.delete_object(Bucket=SOURCE_BUCKET, Key="scan.tif"),
    ):
        with pytest.raises(botocore.exceptions.ClientError, match="AccessDenied"):
            attempt()
    client.put_object(Bucket=PROCESS_BUCKET, Key="probe", Body=b"x")
    client.delete_object(Bucket=PROCESS_BUCKET, Key="probe")
