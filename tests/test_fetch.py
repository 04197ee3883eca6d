"""A download checked against its eTag, on a real SeaweedFS behind the fault proxy: bytes
changed on the way are never converted, and an eTag that is not an MD5 (SSE-KMS) does not stop
a good source.

S3 gives an object uploaded in one part the MD5 of its bytes as its eTag, unless it is
encrypted with a KMS or customer key. The worker compares; on a mismatch it downloads once
more: a good second copy is converted, two copies that differ from each other mean the bytes
are changing on the way (``source-changed``, nothing converted), and two identical copies mean
the eTag is no MD5.
"""

from __future__ import annotations

from pathlib import Path

from fault_proxy import Fault, FaultProxy, Request, Rule
from s3_server import S3Server
from store_helpers import (
    QUEUE,
    Bench,
    Size,
    add_images,
    claim_of,
    keys,
    pending,
    s3_bench,
    verify_output,
)

from ptif.queue.layout import marker_key
from ptif.queue.outputs import output_key
from ptif.queue.worker import Stores
from ptif.stores.s3 import S3Store, Timeouts

KEY = "etag/x.jpg"
SIZE: Size = (300, 200)
FAST = Timeouts(max_attempts=2, connect=1.0, read=5.0)


def object_get(request: Request) -> bool:
    """A GET of the source's bytes (not a listing, not a HEAD)."""
    return request.method == "GET" and request.path.endswith(f"/{KEY}")


def object_read(request: Request) -> bool:
    """A GET or a HEAD of the source (not a listing)."""
    return request.method in ("GET", "HEAD") and request.path.endswith(f"/{KEY}")


def source_through(proxy: FaultProxy, bench: Bench) -> Stores:
    bucket = bench.urls["source"].removeprefix("s3://")
    source = S3Store(bucket, endpoint_url=proxy.endpoint_url, timeouts=FAST)
    return Stores(source, bench.process, bench.images)


def setup(s3_server: S3Server, tmp_path: Path) -> Bench:
    bench = s3_bench(tmp_path, s3_server)
    add_images(bench, {KEY: SIZE}, noise=[KEY])
    return bench


def gets(proxy: FaultProxy) -> int:
    return sum(1 for event in proxy.requests("GET") if event.target.endswith(f"/{KEY}"))


def test_a_download_damaged_on_the_way_is_fetched_again(
    s3_server: S3Server, tmp_path: Path
) -> None:
    bench = setup(s3_server, tmp_path)
    with FaultProxy(s3_server.endpoint_url, [Rule(Fault.CORRUPT_BODY, object_get, first=1)]) as p:
        report = bench.worker(source_through(p, bench)).run()
        assert gets(p) == 2 and p.injected(Fault.CORRUPT_BODY) == 1
    assert report.converted == [KEY]
    verify_output(bench, KEY, SIZE)


def test_bytes_that_keep_changing_on_the_way_are_never_converted(
    s3_server: S3Server, tmp_path: Path
) -> None:
    bench = setup(s3_server, tmp_path)
    with FaultProxy(s3_server.endpoint_url, [Rule(Fault.CORRUPT_BODY, object_get)], seed=3) as p:
        report = bench.worker(source_through(p, bench)).run()
        assert gets(p) == 2
    assert report.converted == [] and report.retry_later[0]["code"] == "source-changed"
    assert bench.images.head(output_key(KEY)) is None
    assert claim_of(bench, KEY)["lastErrorCode"] == "source-changed"
    assert pending(bench) == [marker_key(KEY, QUEUE)] and keys(bench.process, "failed/") == []
    assert bench.run().converted == [KEY]  # through a sound network
    verify_output(bench, KEY, SIZE)


def test_an_etag_that_is_no_md5_does_not_stop_a_good_source(
    s3_server: S3Server, tmp_path: Path
) -> None:
    bench = setup(s3_server, tmp_path)
    # S3 answers a HEAD and a GET of an SSE-KMS object with the same eTag, not its bytes' MD5.
    with FaultProxy(s3_server.endpoint_url, [Rule(Fault.OTHER_ETAG, object_read)]) as p:
        report = bench.worker(source_through(p, bench)).run()
        assert gets(p) == 2
    assert report.converted == [KEY]
    assert bench.images.head(output_key(KEY)) is not None
