"""One contract for every store: the folder store (with xattrs and with sidecar metadata) and the
S3 store (a bucket, and a prefix inside one) against a real SeaweedFS on loopback, plus the S3
store through a fault-injecting proxy."""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import threading
import time
import tracemalloc
import unicodedata
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import botocore.handlers
import botocore.session
import botocore.utils
import pytest
from fault_proxy import Fault, FaultProxy, Request, Rule
from s3_server import S3Server, free_ports

from ptif.errors import ConfigError
from ptif.stores import (
    FolderStore,
    ObjectMissing,
    PreconditionFailed,
    Store,
    StoreError,
    UnsafeKey,
    open_store,
)
from ptif.stores import s3 as s3_module
from ptif.stores.base import verify_conditional_writes
from ptif.stores.folder import STALE_STAGED_S, TMP_DIR
from ptif.stores.s3 import S3Store, Timeouts

KINDS = ["folder", "folder-sidecar", "s3", "s3-prefix"]
PREFIX = "some/prefix"
# Keys next to the prefix that a prefixed store must never show.
DECOYS = ["some/prefix-sibling/x", "some/prefi", "some/prefixed", "zzz"]
NFC = unicodedata.normalize("NFC", "café.jpg")
NFD = unicodedata.normalize("NFD", "café.jpg")
AWKWARD = [
    "with space/a b.jpg",
    "plus+sign.jpg",
    "per%cent%20.jpg",
    "hash#tag.jpg",
    "question?.jpg",
    "accents/" + NFC,
    "accents/" + NFD,
    # ~1000 UTF-8 bytes: segments stay within the 255 bytes that filesystems and SeaweedFS allow.
    "/".join(["é" * 120] * 4) + "/" + "x" * 30 + ".tif",
    "one/same.jpg",
    "two/same.jpg",
    "ünïcödé/日本語/ファイル.png",
    "quote'and\"double.jpg",
    "semi;colon&amp=.jpg",
    "tilde~star*paren(1).jpg",
]
SEAWEED_ORDER = (
    "SeaweedFS 4.48 lists in path-segment order ('/' sorts before every other character), "
    "not S3's UTF-8 byte order"
)
SEAWEED_START_AFTER = (
    "SeaweedFS 4.48 skips everything under a folder whose name is given as StartAfter"
)


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def store(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Store]:
    if kind.startswith("folder"):
        yield FolderStore(tmp_path / "store", xattrs=False if kind == "folder-sidecar" else None)
        return
    server: S3Server = request.getfixturevalue("s3_server")
    with server.bucket() as bucket:
        if kind == "s3":
            yield open_store(f"s3://{bucket}", endpoint_url=server.endpoint_url)
            return
        for key in DECOYS:
            server.client().put_object(Bucket=bucket, Key=key, Body=b"decoy")
        yield open_store(f"s3://{bucket}/{PREFIX}", endpoint_url=server.endpoint_url)


@pytest.fixture
def s3_bucket(s3_server: S3Server) -> Iterator[str]:
    with s3_server.bucket() as bucket:
        yield bucket


def keys(store: Store, prefix: str = "", start_after: str = "") -> list[str]:
    return [info.key for info in store.list(prefix, start_after=start_after)]


def s3_order(names: list[str]) -> list[str]:
    return sorted(names, key=lambda k: k.encode())


def put_many(store: Store, names: list[str]) -> None:
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda k: store.put_bytes(k, k.encode()), names))


def on_seaweed(store: Store) -> bool:
    return isinstance(store, S3Store)


# -- round trips ---------------------------------------------------------------------------------


def test_bytes_round_trip(store: Store) -> None:
    before = datetime.now(UTC) - timedelta(seconds=5)
    etag = store.put_bytes("dir/obj.bin", b"\x00hello\xff")
    data, info = store.get_bytes("dir/obj.bin")
    assert data == b"\x00hello\xff"
    assert (info.key, info.size, info.etag) == ("dir/obj.bin", 7, etag)
    assert info.modified.tzinfo is not None
    assert before <= info.modified <= datetime.now(UTC) + timedelta(seconds=5)
    assert store.head("dir/obj.bin") == info


def test_empty_object(store: Store, tmp_path: Path) -> None:
    store.put_bytes("empty", b"")
    assert store.get_bytes("empty")[0] == b""
    head = store.head("empty")
    assert head is not None and head.size == 0
    (tmp_path / "empty").write_bytes(b"")
    store.put_file("empty.tif", tmp_path / "empty")
    assert store.get_bytes("empty.tif")[0] == b""


def test_file_round_trip_with_metadata(store: Store, tmp_path: Path) -> None:
    src = tmp_path / "src.tif"
    src.write_bytes(os.urandom(300_000))
    meta = {"Width": "640", "height": "480", "ptif-source-key": "café/été 1+1.jpg"}
    etag = store.put_file("out/x.tif", src, meta)
    dest = tmp_path / "dest.tif"
    dest.write_bytes(b"old content to be replaced")
    info = store.get_file("out/x.tif", dest)
    assert dest.read_bytes() == src.read_bytes()
    expected = {"width": "640", "height": "480", "ptif-source-key": "café/été 1+1.jpg"}
    assert dict(info.metadata) == expected
    assert info.etag == etag and info.size == 300_000
    head = store.head("out/x.tif")
    assert head is not None and dict(head.metadata) == expected
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".part")] == []


def test_metadata_with_control_characters(store: Store) -> None:
    meta = {"ptif-source-key": "scans/tab\there/new\nline.jpg", "note": "=?not/encoded?="}
    store.put_bytes("meta/x", b"x", metadata=meta)
    head = store.head("meta/x")
    assert head is not None and dict(head.metadata) == meta


def test_the_longest_key_of_accented_letters_fits_the_pyramids_metadata(store: Store) -> None:
    """The longest source key the queue takes (1,024 bytes), in two-byte letters: the
    pyramid's metadata, sent as encoded words, a third longer, still fits S3's 2 KB."""
    from ptif.queue.outputs import output_metadata

    key = "é" * 508 + ".png"
    sides = {"width": "123456", "height": "123456", "iiif-width": "123456",
             "iiif-height": "123456", "iiif-pages": "10", "pages": "10"}  # fmt: skip
    conversion = {**sides, "iiif-tilesize": "256", "ptif-recipe": "0" * 12,
                  "ptif-encoding": "jpeg-q100-444"}  # fmt: skip
    meta = output_metadata(conversion, key, f'"{"0" * 32}-10000"', page=999, pages=999,
                           source_pages=999)  # fmt: skip
    sent = {k: s3_module._encode_value(v) for k, v in meta.items()}
    assert len(sent["ptif-source-key"]) > 1350
    assert sum(len(k) + len(v) for k, v in sent.items()) <= 2048
    store.put_bytes("long/x.tif", b"x", metadata=meta)
    head = store.head("long/x.tif")
    assert head is not None and dict(head.metadata) == meta


def test_metadata_past_2_kb_as_sent_is_refused_before_any_request() -> None:
    """1,400 bytes of text fit as text but not as the encoded word S3 counts (1,880)."""
    assert len(s3_module._encode_metadata({"k": "é" * 700})["k"]) == 1880
    with pytest.raises(ValueError, match="as sent"):
        s3_module._encode_metadata({"k": "é" * 700, "other": "x" * 200})


def test_missing_objects(store: Store, tmp_path: Path) -> None:
    with pytest.raises(ObjectMissing):
        store.get_bytes("nothing/here")
    with pytest.raises(ObjectMissing):
        store.get_file("nothing/here", tmp_path / "out")
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.part").exists()
    assert store.head("nothing/here") is None
    store.delete("nothing/here")


def test_replacing_changes_etag_and_metadata(store: Store) -> None:
    first = store.put_bytes("k", b"one", metadata={"v": "1"})
    second = store.put_bytes("k", b"two!", metadata={"v": "2"})
    third = store.put_bytes("k", b"three")
    assert len({first, second, third}) == 3
    info = store.head("k")
    assert info is not None and info.etag == third and dict(info.metadata) == {}


@pytest.mark.slow
def test_large_file_round_trip(store: Store, tmp_path: Path) -> None:
    """Past 64 MiB the S3 store uploads in parts; the folder store must copy, not load, it."""
    src = tmp_path / "big.bin"
    size = 70 * 1024 * 1024 + 123
    with open(src, "wb") as f:
        f.truncate(size)
        for offset in range(0, size - 4096, 7 * 1024 * 1024):
            f.seek(offset)
            f.write(offset.to_bytes(8, "big") * 512)
    etag = store.put_file("big/x.tif", src, {"width": "1"})
    dest = tmp_path / "back.bin"
    info = store.get_file("big/x.tif", dest)
    assert info.size == size and info.etag == etag
    assert _sha256(dest) == _sha256(src)
    if on_seaweed(store):
        assert etag.endswith("-5")  # 70 MiB in 16 MiB parts


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


# -- listing -------------------------------------------------------------------------------------


def test_list_prefix_and_start_after(store: Store) -> None:
    names = ["a/1", "a/2", "b/1/x", "b/1/y", "b/2", "bb", "c", "d/e/f"]
    put_many(store, names)
    assert keys(store) == names
    assert keys(store, "b/") == ["b/1/x", "b/1/y", "b/2"]
    assert keys(store, "b") == ["b/1/x", "b/1/y", "b/2", "bb"]
    assert keys(store, "b/1/") == ["b/1/x", "b/1/y"]
    assert keys(store, "nothing") == []
    assert keys(store, start_after="a/2") == names[2:]
    assert keys(store, start_after="b/1/x") == names[3:]
    assert keys(store, start_after="b/15") == ["b/2", "bb", "c", "d/e/f"]
    assert keys(store, "b/", start_after="b/1/y") == ["b/2"]
    assert keys(store, start_after="d/e/f") == []
    infos = list(store.list("a/"))
    assert [i.size for i in infos] == [3, 3] and all(i.metadata == {} for i in infos)
    assert infos[0].etag == store.head("a/1").etag  # type: ignore[union-attr]


def test_list_one_folder(store: Store) -> None:
    put_many(store, ["a/1", "a/b/2", "a/c/d/3", "a/x y.json", "ab", "b/1", "top"])
    shallow = [info.key for info in store.list("a/", recursive=False)]
    assert shallow == ["a/1", "a/x y.json"]
    assert [info.key for info in store.list(recursive=False)] == ["ab", "top"]
    assert [info.key for info in store.list("a/b/", recursive=False)] == ["a/b/2"]
    assert [info.key for info in store.list("nothing/", recursive=False)] == []


def test_list_is_in_utf8_byte_order(store: Store, request: pytest.FixtureRequest) -> None:
    if on_seaweed(store):
        request.applymarker(pytest.mark.xfail(strict=True, reason=SEAWEED_ORDER))
    names = ["a/b", "a-b", "a0", "a b", "a.b", "a/c/d", "a+", "é", "z", "Z", "~", "a/\u00e9", "a/e"]
    put_many(store, names)
    assert keys(store) == s3_order(names)


def test_start_after_a_folder_name(store: Store, request: pytest.FixtureRequest) -> None:
    if on_seaweed(store):
        request.applymarker(pytest.mark.xfail(strict=True, reason=SEAWEED_START_AFTER))
    put_many(store, ["b/1/x", "b/2", "c"])
    assert keys(store, start_after="b/1") == ["b/1/x", "b/2", "c"]
    assert keys(store, start_after="b") == ["b/1/x", "b/2", "c"]


def test_listing_streams_page_by_page(
    store: Store, kind: str, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    """2,500 keys (1,050 where another kind already covers the case) take S3 three pages."""
    folders = 50 if kind in ("folder", "s3-prefix") else 21
    names = [f"d{d:02}/f{f:03}.jpg" for d in range(folders) for f in range(50)]
    put_many(store, names)
    calls = _count_listing_calls(store, monkeypatch, request)
    listing = store.list()
    assert next(listing).key == names[0]
    assert calls() == 1  # one page (S3), or the root and the first folder's entries
    rest = [info.key for info in listing]
    assert [names[0], *rest] == names
    assert calls() >= 2


def test_a_listing_of_a_few_keys_asks_for_a_few(
    store: Store, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    names = [f"k{n:02}" for n in range(30)]
    put_many(store, names)
    calls = _count_listing_calls(store, monkeypatch, request)
    listing = store.list(start_after="k04", page_size=8)
    assert [next(listing).key for _ in range(8)] == names[5:13]
    assert calls() <= 1
    assert [info.key for info in listing] == names[13:]  # the rest, a few at a time
    if isinstance(store, S3Store):
        assert calls() == 4


def test_s3_times_read_as_botocore_reads_them() -> None:
    """Listings' and heads' times are read with the standard library, in botocore's stead."""
    forms = [
        "2026-01-31T12:00:00.000Z", "2026-01-31T12:00:00Z", "2026-01-31T13:00:00+01:00",
        "Sat, 31 Jan 2026 12:00:00 GMT", "1769860800", 1769860800, 1769860800.5,
        "2026-01-31T12:00:00",  # no zone: as botocore reads it
    ]  # fmt: skip
    for form in forms:
        assert s3_module._parse_time(form) == botocore.utils.parse_timestamp(form), form
    with pytest.raises(ValueError):
        s3_module._parse_time("yesterday-ish")


LISTING = """<?xml version="1.0" encoding="UTF-8"?>
<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Name>b</Name>
<Prefix>q/</Prefix><KeyCount>3</KeyCount><MaxKeys>3</MaxKeys><EncodingType>url</EncodingType>
<IsTruncated>true</IsTruncated><NextContinuationToken>next+page</NextContinuationToken>
<Contents><Key>q/a%20b/caf%C3%A9%26%3C%3E.json</Key><LastModified>2026-01-31T12:00:00.000Z</LastModified>
<ETag>&quot;0123456789abcdef0123456789abcdef&quot;</ETag><Size>312</Size>
<StorageClass>STANDARD</StorageClass></Contents>
<Contents><Key>q/per%25cent.json</Key><LastModified>2026-01-31T12:00:01Z</LastModified>
<ETag>"feed-2"</ETag><Size>0</Size><Owner><ID>o</ID></Owner></Contents>
<Contents><Key>q/z &amp; &#233;.json</Key><LastModified>2026-02-01T00:00:00.5Z</LastModified>
<ETag>x</ETag><Size>12345678901</Size></Contents>
<CommonPrefixes><Prefix>q/sub/</Prefix></CommonPrefixes></ListBucketResult>"""


def _parsed_listing(body: bytes, fast: bool) -> dict[str, Any]:
    """A ListObjectsV2 answer as the client hands it on: parsed, read fast or not, then its
    keys decoded by botocore's own handler, as for a listing that asked for them encoded."""
    session = s3_module._session()
    operation = session.get_service_model("s3").operation_model("ListObjectsV2")
    response = {"headers": {}, "status_code": 200, "body": body, "context": {}}
    custom: dict[str, Any] = {}
    if fast:
        s3_module._read_listing(response_dict=response, customized_response_dict=custom)
    parser = session.get_component("response_parser_factory").create_parser("rest-xml")
    parsed: dict[str, Any] = parser.parse(response, operation.output_shape)
    parsed.update(custom)
    botocore.handlers.decode_list_object_v2(parsed, {"encoding_type_auto_set": True})
    return parsed


def test_a_listing_reads_as_botocore_reads_it() -> None:
    """The fast read of a listing's entries gives the worker exactly what botocore's parser
    gives, escapes, encoded keys, sizes past 32 bits and times included, and leaves the rest of
    the answer (continuation, folders) to it."""
    fields = ("Key", "Size", "ETag", "LastModified")
    slow, fast = _parsed_listing(LISTING.encode(), False), _parsed_listing(LISTING.encode(), True)
    assert [{f: e[f] for f in fields} for e in slow["Contents"]] == fast["Contents"]
    assert fast["Contents"][0]["Key"] == "q/a b/café&<>.json"
    assert fast["Contents"][2]["Key"] == "q/z & é.json"
    assert fast["Contents"][2]["Size"] == 12345678901
    rest = ("IsTruncated", "NextContinuationToken", "KeyCount", "CommonPrefixes", "Prefix")
    assert {k: fast[k] for k in rest} == {k: slow[k] for k in rest}
    assert fast["NextContinuationToken"] == "next+page"


@pytest.mark.parametrize(
    "body",
    [
        LISTING.replace("<Size>0</Size>", "<Size>zero</Size>"),  # an entry that does not read
        LISTING.replace("</ListBucketResult>", ""),  # cut short
        LISTING.replace("<Contents>", "<Other>").replace("</Contents>", "</Other>"),  # none
    ],
)
def test_a_listing_that_does_not_read_fast_is_left_to_botocore(body: str) -> None:
    response = {"headers": {}, "status_code": 200, "body": body.encode(), "context": {}}
    custom: dict[str, Any] = {}
    s3_module._read_listing(response_dict=response, customized_response_dict=custom)
    assert custom == {}
    assert response["body"] == body.encode()


@pytest.mark.parametrize(
    "body",
    [
        LISTING.replace("<Key>q/per%25cent.json</Key>", "<Key><![CDATA[q/a</Contents>]]></Key>"),
        LISTING.replace("<KeyCount>", "<!-- <Contents> --><KeyCount>"),
    ],
)
def test_a_listing_with_contents_tags_in_its_text_reads_as_botocore_reads_it(body: str) -> None:
    """Markup inside text (a CDATA section, a comment) is not an entry: the answer's other
    fields still read, and the entries are botocore's."""
    slow, fast = _parsed_listing(body.encode(), False), _parsed_listing(body.encode(), True)
    fields = ("Key", "Size", "ETag", "LastModified")
    assert [[e[f] for f in fields] for e in fast["Contents"]] == [
        [e[f] for f in fields] for e in slow["Contents"]
    ]
    assert fast["NextContinuationToken"] == slow["NextContinuationToken"] == "next+page"


def _count_listing_calls(
    store: Store, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> Callable[[], int]:
    """Pages fetched (S3) or folders read beyond the root (folder store) so far."""
    seen: list[object] = []
    if isinstance(store, S3Store):
        events, event = store.client.meta.events, "before-call.s3.ListObjectsV2"
        # The client is shared with other stores: take the counter off after the test.
        events.register(event, lambda **_: seen.append(1), unique_id="count-listing")
        request.addfinalizer(lambda: events.unregister(event, unique_id="count-listing"))
        return lambda: len(seen)
    scandir = os.scandir

    def counting(path: Any) -> Any:
        seen.append(path)
        return scandir(path)

    monkeypatch.setattr(os, "scandir", counting)
    return lambda: len(seen) - 1


# -- conditional operations ----------------------------------------------------------------------


def test_create_if_absent(store: Store) -> None:
    etag = store.put_bytes("q/m.json", b"first", if_none_match=True)
    with pytest.raises(PreconditionFailed):
        store.put_bytes("q/m.json", b"second", if_none_match=True)
    data, info = store.get_bytes("q/m.json")
    assert (data, info.etag) == (b"first", etag)


def test_replace_if_match(store: Store) -> None:
    etag = store.put_bytes("q/m.json", b"v1")
    with pytest.raises(PreconditionFailed):
        store.put_bytes("q/m.json", b"v2", if_match="0" * 32)
    assert store.get_bytes("q/m.json")[0] == b"v1"
    new = store.put_bytes("q/m.json", b"v2", if_match=etag)
    assert new != etag and store.get_bytes("q/m.json")[0] == b"v2"
    with pytest.raises(PreconditionFailed):
        store.put_bytes("q/m.json", b"v3", if_match=etag)
    with pytest.raises(PreconditionFailed):
        store.put_bytes("q/missing.json", b"v1", if_match=etag)
    assert store.head("q/missing.json") is None


def test_delete_if_match(store: Store) -> None:
    etag = store.put_bytes("q/m.json", b"v1")
    with pytest.raises(PreconditionFailed):
        store.delete("q/m.json", if_match="0" * 32)
    assert store.head("q/m.json") is not None
    store.delete("q/m.json", if_match=etag)
    assert store.head("q/m.json") is None
    with pytest.raises(PreconditionFailed):
        store.delete("q/m.json", if_match=etag)


def test_a_batched_delete_removes_only_what_still_matches(store: Store) -> None:
    kept = store.put_bytes("q/kept.json", b"v1")
    gone = store.put_bytes("q/gone.json", b"v1")
    store.put_bytes("q/replaced.json", b"v1")
    replaced = store.put_bytes("q/replaced.json", b"v2")
    stale = "0" * 32
    left = store.delete_matching(
        [("q/gone.json", gone), ("q/kept.json", stale), ("q/replaced.json", stale),
         ("q/missing.json", kept)]
    )  # fmt: skip
    assert sorted(left) == ["q/kept.json", "q/missing.json", "q/replaced.json"]
    assert sorted(keys(store)) == ["q/kept.json", "q/replaced.json"]
    assert store.delete_matching([("q/replaced.json", replaced), ("q/kept.json", kept)]) == ()
    assert keys(store) == []


def test_a_batched_delete_takes_keys_xml_must_escape(store: Store) -> None:
    """Per cent signs, spaces, letters of any script, ``&<>`` and a key of 1,000 bytes, in a
    batched delete proven to honour eTags: each deleted if it matches, named back as it is."""
    store.check_conditional_writes()
    long = "q/" + "/".join(["é" * 120] * 4)
    names = ["q/100% done.json", "q/a&b<c>d\"e'.json", "q/Genève 東京 ☃.json", long]
    etags = {name: store.put_bytes(name, b"v1") for name in names}
    stale = "0" * 32
    left = store.delete_matching([(name, stale) for name in names])
    assert sorted(left) == sorted(names) and sorted(keys(store)) == sorted(names)
    assert store.delete_matching(list(etags.items())) == ()
    assert keys(store) == []


RACERS = 4  # SeaweedFS makes the losers of a race on one key wait in steps of a second


def test_conditional_races_have_one_winner(store: Store) -> None:
    def race(attempt: Callable[[int], object]) -> int:
        barrier = threading.Barrier(RACERS)

        def one(i: int) -> bool:
            barrier.wait()
            try:
                attempt(i)
            except PreconditionFailed:
                return False
            return True

        with ThreadPoolExecutor(RACERS) as pool:
            return sum(pool.map(one, range(RACERS)))

    assert race(lambda i: store.put_bytes("race", b"%d" % i, if_none_match=True)) == 1
    etag = store.head("race").etag  # type: ignore[union-attr]
    assert race(lambda i: store.put_bytes("race", b"v%d" % i, if_match=etag)) == 1
    etag = store.head("race").etag  # type: ignore[union-attr]
    assert race(lambda i: store.delete("race", if_match=etag)) == 1
    assert store.head("race") is None


def test_check_conditional_writes(store: Store) -> None:
    store.check_conditional_writes()
    assert keys(store) == []


class CarelessFolder(FolderStore):
    """A store that lets every conditional write through, as old S3 servers do."""

    def put_bytes(self, key: str, data: bytes, **kwargs: Any) -> str:
        return super().put_bytes(key, data, metadata=kwargs.get("metadata"))


def test_check_conditional_writes_catches_a_careless_store(tmp_path: Path) -> None:
    store = CarelessFolder(tmp_path / "s", url="careless")
    with pytest.raises(ConfigError, match=r"careless: .*ignores conditional writes.*If-None-Match"):
        store.check_conditional_writes()
    assert keys(store) == []


class BlindBatchFolder(FolderStore):
    """A store whose batched delete ignores the eTags, as a server that ignores them in
    DeleteObjects would."""

    def delete_matching(self, objects: Sequence[tuple[str, str]]) -> tuple[str, ...]:
        for key, _ in objects:
            self.delete(key)
        return ()


class NoBatchFolder(FolderStore):
    """A store whose server refuses a batched delete that names eTags."""

    def delete_matching(self, objects: Sequence[tuple[str, str]]) -> tuple[str, ...]:
        raise StoreError("MalformedXML (test)")


def test_the_check_tells_whether_a_batched_delete_honours_etags(
    store: Store, tmp_path: Path
) -> None:
    """A server that ignores them there, or refuses such a batch, is no error: its batched
    deletes go one by one."""
    assert verify_conditional_writes(store, "advice") is True
    blind = BlindBatchFolder(tmp_path / "blind", url="blind")
    refusing = NoBatchFolder(tmp_path / "refusing", url="refusing")
    assert verify_conditional_writes(blind, "advice") is False
    assert verify_conditional_writes(refusing, "advice") is False
    assert keys(store) == [] and keys(blind) == [] and keys(refusing) == []


def test_an_s3_store_deletes_in_batches_once_the_server_is_found_to_honour_etags(
    s3_server: S3Server,
) -> None:
    with s3_server.bucket() as bucket:
        store = open_store(f"s3://{bucket}", endpoint_url=s3_server.endpoint_url)
        assert isinstance(store, S3Store) and not store.batched_deletes  # until proven
        etag = store.put_bytes("a.json", b"1")
        assert store.delete_matching([("a.json", "0" * 32)]) == ("a.json",)  # one by one
        store.check_conditional_writes()
        assert store.batched_deletes
        assert store.delete_matching([("a.json", "0" * 32)]) == ("a.json",)
        assert store.delete_matching([("a.json", etag)]) == () and keys(store) == []


class StubbornFolder(FolderStore):
    """A store that refuses every If-Match, the right eTag too."""

    def put_bytes(self, key: str, data: bytes, **kwargs: Any) -> str:
        if kwargs.get("if_match") is not None:
            raise PreconditionFailed(f"{key}: refused")
        return super().put_bytes(key, data, **kwargs)


def test_check_conditional_writes_catches_a_store_refusing_the_right_etag(tmp_path: Path) -> None:
    store = StubbornFolder(tmp_path / "s", url="stubborn")
    with pytest.raises(ConfigError, match=r"stubborn: .*refuses conditional writes whose eTag"):
        store.check_conditional_writes()
    assert keys(store) == []


# -- atomicity -----------------------------------------------------------------------------------


def test_folder_put_never_shows_a_partial_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = FolderStore(tmp_path / "store")
    store.put_bytes("x.tif", b"old version")
    src = tmp_path / "src"
    src.write_bytes(b"n" * 4_000_000)
    halfway, resume = threading.Event(), threading.Event()
    copy = shutil.copyfileobj

    def slow_copy(fsrc: Any, fdst: Any, length: int = 0) -> None:
        fdst.write(fsrc.read(1_000_000))
        halfway.set()
        resume.wait(10)
        copy(fsrc, fdst, length)

    monkeypatch.setattr(shutil, "copyfileobj", slow_copy)
    writer = threading.Thread(target=store.put_file, args=("x.tif", src))
    writer.start()
    assert halfway.wait(10)
    monkeypatch.setattr(shutil, "copyfileobj", copy)
    assert store.get_bytes("x.tif")[0] == b"old version"
    assert keys(store) == ["x.tif"]
    resume.set()
    writer.join(10)
    assert store.get_bytes("x.tif")[0] == src.read_bytes()


def test_put_file_of_a_missing_file_leaves_nothing(store: Store, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        store.put_file("out/x.tif", tmp_path / "vanished")
    assert store.head("out/x.tif") is None and keys(store) == []


def test_folder_put_failing_midway_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = FolderStore(tmp_path / "store")
    src = tmp_path / "src"
    src.write_bytes(b"n" * 3_000_000)

    def failing_copy(fsrc: Any, fdst: Any, length: int = 0) -> None:
        fdst.write(fsrc.read(1_000_000))
        raise OSError("device went away")

    monkeypatch.setattr(shutil, "copyfileobj", failing_copy)
    with pytest.raises(OSError, match="device went away"):
        store.put_file("out/x.tif", src)
    assert store.head("out/x.tif") is None and keys(store) == []
    assert [p.name for p in (store.root / TMP_DIR).iterdir() if p.name != "lock"] == []


# -- keys ----------------------------------------------------------------------------------------


def test_awkward_keys(store: Store) -> None:
    assert len(AWKWARD[7].encode()) > 990
    for key in AWKWARD:
        store.put_bytes(key, key.encode(), metadata={"k": key})
    for key in AWKWARD:
        data, info = store.get_bytes(key)
        assert (data, info.key, info.metadata["k"]) == (key.encode(), key, key)
    assert sorted(keys(store)) == sorted(AWKWARD)
    assert keys(store, "accents/") == s3_order(["accents/" + NFC, "accents/" + NFD])
    store.delete("one/same.jpg")
    assert store.head("two/same.jpg") is not None


UNSAFE = [
    "../../etc/passwd",
    "../outside",
    "/etc/passwd",
    "a/../../outside",
    "a/../b",
    "",
    ".",
    "..",
    "a//b",
    "a/./b",
    "a/",
    "nul\0byte",
    ".ptif-tmp/lock",
    ".ptif-meta/x.json",
    "x" * 300,
    "/".join(["y"] * 600),
]


@pytest.mark.parametrize("key", UNSAFE)
def test_unsafe_keys_never_leave_the_folder(tmp_path: Path, key: str) -> None:
    root = tmp_path / "root"
    store = FolderStore(root)
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    attempts: list[Callable[[], object]] = [
        lambda: store.put_bytes(key, b"x"),
        lambda: store.put_bytes(key, b"x", if_none_match=True),
        lambda: store.put_file(key, Path(__file__)),
        lambda: store.get_bytes(key),
        lambda: store.get_file(key, tmp_path / "got"),
        lambda: store.head(key),
        lambda: store.delete(key),
        lambda: store.delete(key, if_match="x"),
    ]
    for attempt in attempts:
        with pytest.raises(UnsafeKey):
            attempt()
    assert sorted(str(p) for p in tmp_path.rglob("*")) == before
    assert not (root / TMP_DIR).exists()  # refused before anything was staged


#: Keys no store takes, folder or bucket (ptif.stores.base.check_key): S3 allows them, but folder
#: stores and some S3-compatible servers normalise them into other keys.
NO_STORE_TAKES = ["a/../b.jpg", "../b.jpg", "a/./b.jpg", "a//b.jpg", "/b.jpg", "a/", "n\0.jpg", ""]


def test_every_store_refuses_the_same_keys(store: Store, tmp_path: Path) -> None:
    store.put_bytes("b.jpg", b"b")
    store.put_bytes("a/b.jpg", b"a/b")
    attempts: list[Callable[[str], object]] = [
        store.head,
        store.get_bytes,
        lambda key: store.get_file(key, tmp_path / "got"),
        lambda key: store.put_bytes(key, b"x"),
        lambda key: store.put_bytes(key, b"x", if_none_match=True),
        store.delete,
    ]
    for key in [*NO_STORE_TAKES, "x" * 1025]:
        for attempt in attempts:
            with pytest.raises(UnsafeKey):
                attempt(key)
    assert keys(store) == ["a/b.jpg", "b.jpg"]
    assert (store.get_bytes("b.jpg")[0], store.get_bytes("a/b.jpg")[0]) == (b"b", b"a/b")


def test_file_and_folder_sharing_a_name(tmp_path: Path) -> None:
    store = FolderStore(tmp_path / "s")
    store.put_bytes("a", b"file")
    with pytest.raises(UnsafeKey):
        store.put_bytes("a/b", b"under a file")
    store.put_bytes("d/x", b"1")
    with pytest.raises(UnsafeKey):
        store.put_bytes("d", b"over a folder", if_none_match=True)
    assert keys(store) == ["a", "d/x"]


def test_listing_skips_store_internals(tmp_path: Path) -> None:
    store = FolderStore(tmp_path / "s", xattrs=False)
    store.put_bytes("a", b"1", metadata={"m": "1"})
    (tmp_path / "s" / ".ptif-other").mkdir()
    (tmp_path / "s" / ".ptif-other" / "f").write_bytes(b"")
    assert keys(store) == ["a"]
    assert (tmp_path / "s" / ".ptif-meta" / "a.json").exists()
    store.delete("a")
    assert not (tmp_path / "s" / ".ptif-meta" / "a.json").exists()


def test_sidecar_of_another_inode_is_ignored(tmp_path: Path) -> None:
    store = FolderStore(tmp_path / "s", xattrs=False)
    store.put_bytes("a", b"1", metadata={"m": "1"})
    sidecar = (tmp_path / "s" / ".ptif-meta" / "a.json").read_text()
    store.put_bytes("a", b"2")
    (tmp_path / "s" / ".ptif-meta" / "a.json").write_text(sidecar)
    assert store.head("a").metadata == {}  # type: ignore[union-attr]


def test_delete_prunes_empty_folders(tmp_path: Path) -> None:
    store = FolderStore(tmp_path / "s")
    store.put_bytes("a/b/c/d", b"1")
    store.put_bytes("a/x", b"1")
    store.delete("a/b/c/d")
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == [".ptif-tmp", "a"]
    assert [p.name for p in (tmp_path / "s" / "a").iterdir()] == ["x"]


# -- opening stores by URL -----------------------------------------------------------------------


def test_open_store_urls(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, aws_sandbox: None
) -> None:
    folder = open_store(str(tmp_path / "new" / "folder"))
    assert isinstance(folder, FolderStore) and (tmp_path / "new" / "folder").is_dir()
    by_url = open_store(f"file://{tmp_path}/with%20space")
    assert isinstance(by_url, FolderStore) and (tmp_path / "with space").is_dir()
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    s3 = open_store("s3://bucket/a/b/")
    assert isinstance(s3, S3Store)
    assert (s3.bucket, s3.prefix, s3.endpoint_url) == ("bucket", "a/b/", "http://127.0.0.1:9")
    explicit = open_store("s3://bucket", endpoint_url="http://127.0.0.1:10")
    assert isinstance(explicit, S3Store)
    assert (explicit.prefix, explicit.endpoint_url) == ("", "http://127.0.0.1:10")


@pytest.mark.parametrize(
    "url",
    ["", "   ", "s3://", "s3:///prefix", "s3://b", "s3://bucket?x=1", "s3://user@bucket/x",
     "gs://bucket/x", "http://host/x", "file://relative/path", "file:///x?y"],
)  # fmt: skip
def test_open_store_refuses_bad_urls(url: str) -> None:
    with pytest.raises(ConfigError):
        open_store(url)


# -- S3 errors and faults ------------------------------------------------------------------------

FAST = Timeouts(max_attempts=6, connect=1.0, read=1.0)


def through(proxy: FaultProxy, bucket: str, timeouts: Timeouts = FAST) -> S3Store:
    return S3Store(bucket, "p", endpoint_url=proxy.endpoint_url, timeouts=timeouts)


def small_parts(monkeypatch: pytest.MonkeyPatch) -> None:
    """Multipart from 6 MiB, in 5 MiB parts (S3's smallest), so tests need no 64 MiB files."""
    monkeypatch.setattr(s3_module, "MULTIPART_THRESHOLD", 6 * 1024 * 1024)
    monkeypatch.setattr(s3_module, "PART_SIZE", 5 * 1024 * 1024)


@pytest.fixture
def proxy(s3_server: S3Server) -> Iterator[FaultProxy]:
    with FaultProxy(s3_server.endpoint_url, seed=1234) as running:
        yield running


def is_put(request: Request) -> bool:
    return request.method == "PUT"


def is_get(request: Request) -> bool:
    return request.method == "GET" and not request.has_query("list-type")


def test_s3_survives_slowdowns_resets_and_stalls(
    proxy: FaultProxy, s3_bucket: str, tmp_path: Path
) -> None:
    rules = [
        Rule(Fault.STALL, is_get, first=1, stall=3.0),
        Rule(Fault.RESET_MID_BODY, lambda r: is_get(r) and r.path.endswith("/big"), first=1),
        Rule(Fault.SLOWDOWN, probability=0.1),
        Rule(Fault.RESET, probability=0.05),
        Rule(Fault.RESET_MID_BODY, is_get, probability=0.1),
    ]
    proxy.set_rules(rules)
    store = through(proxy, s3_bucket)
    src = tmp_path / "src"
    src.write_bytes(os.urandom(2_000_000))
    for i in range(12):
        etag = store.put_bytes(f"k{i:02}", b"v%d" % i, if_none_match=True)
        assert store.get_bytes(f"k{i:02}") == (b"v%d" % i, store.head(f"k{i:02}"))
        assert store.put_bytes(f"k{i:02}", b"w", if_match=etag) != etag
    store.put_file("big", src, {"width": "9"})
    info = store.get_file("big", tmp_path / "back")
    assert (tmp_path / "back").read_bytes() == src.read_bytes() and info.metadata == {"width": "9"}
    assert keys(store) == ["big", *[f"k{i:02}" for i in range(12)]]
    store.delete("big", if_match=info.etag)
    assert store.head("big") is None
    for fault in {rule.fault for rule in rules}:  # each fault this test asks for happened
        assert proxy.injected(fault) >= 1, fault


def test_s3_resumes_a_broken_download(proxy: FaultProxy, s3_bucket: str, tmp_path: Path) -> None:
    store = through(proxy, s3_bucket)
    data = os.urandom(3_000_000)
    store.put_bytes("obj", data)
    proxy.set_rules([Rule(Fault.RESET_MID_BODY, is_get, first=2)])
    info = store.get_file("obj", tmp_path / "obj")
    assert (tmp_path / "obj").read_bytes() == data and info.size == len(data)
    gets = proxy.requests("GET")
    assert len(gets) == 3 and proxy.injected(Fault.RESET_MID_BODY) == 2


def test_s3_download_restarts_when_the_object_changes(
    proxy: FaultProxy, s3_bucket: str, s3_server: S3Server
) -> None:
    """The first GET breaks off; before the resume the object is replaced, so the resume (with
    If-Match) fails and the whole new version is read instead of a splice of two."""
    store = through(proxy, s3_bucket)
    direct = S3Store(s3_bucket, "p", endpoint_url=s3_server.endpoint_url)
    store.put_bytes("obj", b"a" * 2_000_000)
    gets: list[Request] = []

    def first_breaks_then_replaced(request: Request) -> bool:
        if is_get(request):
            gets.append(request)
            if len(gets) == 2:
                direct.put_bytes("obj", b"b" * 1_500_000)
        return len(gets) == 1

    proxy.set_rules([Rule(Fault.RESET_MID_BODY, first_breaks_then_replaced)])
    data, info = store.get_bytes("obj")
    assert data == b"b" * 1_500_000 and info.size == 1_500_000
    assert [("Range" in g.headers, "If-Match" in g.headers) for g in gets] == [
        (False, False),
        (True, True),
        (False, False),
    ]


def test_s3_conditional_writes_whose_answer_was_lost(proxy: FaultProxy, s3_bucket: str) -> None:
    """The first attempt lands but its answer is lost; the retry then loses to our own write.
    The store must report success, not a conflict."""
    store = through(proxy, s3_bucket)
    proxy.set_rules([Rule(Fault.LOST_ANSWER, is_put, first=1)])
    etag = store.put_bytes("lease", b"owner-1 until 10:00", if_none_match=True)
    proxy.set_rules([Rule(Fault.LOST_ANSWER, is_put, first=1)])
    etag = store.put_bytes("lease", b"owner-1 until 10:02", if_match=etag)
    assert store.head("lease").etag == etag  # type: ignore[union-attr]
    proxy.set_rules([Rule(Fault.LOST_ANSWER, lambda r: r.method == "DELETE", first=1)])
    store.delete("lease", if_match=etag)
    assert store.head("lease") is None
    assert proxy.injected(Fault.LOST_ANSWER) == 3


def test_s3_lost_answer_does_not_hide_a_real_conflict(proxy: FaultProxy, s3_bucket: str) -> None:
    store = through(proxy, s3_bucket)
    store.put_bytes("lease", b"owner-2")
    proxy.set_rules([Rule(Fault.RESET, is_put, first=1)])
    with pytest.raises(PreconditionFailed):
        store.put_bytes("lease", b"owner-1", if_none_match=True)
    assert store.get_bytes("lease")[0] == b"owner-2"


def test_s3_failed_multipart_upload_is_aborted(
    proxy: FaultProxy, s3_bucket: str, s3_server: S3Server, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    small_parts(monkeypatch)
    src = tmp_path / "src"
    src.write_bytes(os.urandom(12 * 1024 * 1024))
    proxy.set_rules([Rule(Fault.SLOWDOWN, lambda r: "partNumber=2" in r.query)])
    store = through(proxy, s3_bucket, Timeouts(max_attempts=2, connect=1.0, read=5.0))
    with pytest.raises(StoreError, match=r"s3://.*/p/big"):
        store.put_file("big", src)
    assert store.head("big") is None
    uploads = s3_server.client().list_multipart_uploads(Bucket=s3_bucket).get("Uploads", [])
    assert uploads == []
    assert proxy.injected(Fault.SLOWDOWN) == 3  # the first attempt and two retries
    proxy.set_rules([])
    assert store.put_file("big", src).endswith("-3")


def test_s3_put_file_that_keeps_failing_leaves_nothing(
    proxy: FaultProxy, s3_bucket: str, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    src.write_bytes(b"x" * 100_000)
    proxy.set_rules([Rule(Fault.RESET, is_put)])
    store = through(proxy, s3_bucket, Timeouts(max_attempts=2, connect=1.0, read=1.0))
    with pytest.raises(StoreError, match="could not reach"):
        store.put_file("x", src)
    proxy.set_rules([])
    assert store.head("x") is None


@pytest.mark.parametrize("change", ["rewritten", "truncated"])
def test_s3_put_file_never_stores_a_body_unlike_its_md5(
    s3_server: S3Server, s3_bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    change: str,
) -> None:  # fmt: skip
    """Uploads stream from the file after its Content-MD5 is taken. If the file then changes,
    the server gets a body that does not match (rewritten) or that stops short (truncated), as
    after a disk error or a client dying mid-upload: it must refuse it, keeping the old version."""
    store = S3Store(s3_bucket, "p", endpoint_url=s3_server.endpoint_url, timeouts=FAST)
    store.put_bytes("x.tif", b"old version")
    src = tmp_path / "src"
    src.write_bytes(os.urandom(3_000_000))
    content_md5 = s3_module.FilePart.content_md5

    def then_change(part: s3_module.FilePart) -> str:
        digest = content_md5(part)
        if change == "truncated":
            os.truncate(src, 1_000_000)
        else:
            with open(src, "r+b") as f:
                f.write(b"changed")
        return digest

    monkeypatch.setattr(s3_module.FilePart, "content_md5", then_change)
    # A changed body is refused (BadDigest); a short one is an error of the file or the upload.
    with pytest.raises(StoreError if change == "rewritten" else (StoreError, OSError)):
        store.put_file("x.tif", src)
    assert store.get_bytes("x.tif")[0] == b"old version"
    assert keys(store) == ["x.tif"]


def test_s3_bodies_go_with_their_md5_and_type(
    proxy: FaultProxy, s3_bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every body carries a Content-MD5, which the server checks and the signature covers, and
    nothing else hashes it: no CRC32 checksum, no SHA-256 of the payload (over plain HTTP
    botocore would sign one, a second pass over every pyramid). Pyramids are declared as TIFF:
    SeaweedFS gzips chunks of an undeclared type that look compressible."""
    small_parts(monkeypatch)
    seen: list[Request] = []
    proxy.set_rules([Rule(Fault.SLOWDOWN, lambda r: bool(seen.append(r)))])
    store = through(proxy, s3_bucket)
    src = tmp_path / "src"
    src.write_bytes(os.urandom(12 * 1024 * 1024))
    store.put_bytes("m.json", b"{}")
    (tmp_path / "one").write_bytes(b"II*\x00" + bytes(100_000))
    store.put_file("one.tif", tmp_path / "one")
    store.put_file("parts.tif", src)
    bodies = [r for r in seen if int(r.headers.get("Content-Length") or 0) > 0]
    assert len(bodies) == 6  # the marker, one.tif, three parts and the part list
    for request in bodies:
        headers = {k.lower(): v for k, v in request.headers.items()}
        assert "content-md5" in headers, request
        assert headers["x-amz-content-sha256"] == "UNSIGNED-PAYLOAD", request
        assert not any(name.startswith("x-amz-checksum") for name in headers), request
    declared = {
        (r.method, r.path.rsplit("/", 1)[1], r.query): {k.lower(): v for k, v in r.headers.items()}
        for r in seen
    }
    assert declared[("PUT", "m.json", "")]["content-type"] == "application/json"
    assert declared[("PUT", "one.tif", "")]["content-type"] == "image/tiff"
    assert declared[("POST", "parts.tif", "uploads")]["content-type"] == "image/tiff"


@pytest.mark.parametrize("multipart", [False, True], ids=["single", "parts"])
def test_s3_put_file_streams(
    s3_server: S3Server, s3_bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    multipart: bool,
) -> None:  # fmt: skip
    """An upload holds chunks, not the file nor its parts: memory stays flat whatever the size."""
    if multipart:
        small_parts(monkeypatch)
    store = S3Store(s3_bucket, "p", endpoint_url=s3_server.endpoint_url)
    src = tmp_path / "src"
    src.write_bytes(os.urandom(24 * 1024 * 1024))
    store.put_bytes("warm-up", b"x")
    tracemalloc.start()
    try:
        etag = store.put_file("big.tif", src)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # A few chunks in flight (four parts at once, 1 MiB each for botocore's hashing at most).
    assert peak < 8 * 1024 * 1024, f"{peak / 2**20:.1f} MiB held for a 24 MiB upload"
    assert etag.endswith("-5") if multipart else "-" not in etag
    assert store.get_bytes("big.tif")[0] == src.read_bytes()


@pytest.mark.usefixtures("aws_sandbox")
def test_s3_unreachable_fails_fast() -> None:

    port = free_ports(1)[0]
    timeouts = Timeouts(max_attempts=2, connect=1.0, read=1.0)
    store = S3Store("bucket", endpoint_url=f"http://127.0.0.1:{port}", timeouts=timeouts)
    started = time.monotonic()
    with pytest.raises(StoreError, match=f"could not reach http://127.0.0.1:{port}.*s3://bucket/k"):
        store.head("k")
    assert time.monotonic() - started < 15


def test_s3_silent_server_times_out(proxy: FaultProxy, s3_bucket: str) -> None:
    proxy.set_rules([Rule(Fault.STALL, stall=20.0)])
    store = through(proxy, s3_bucket, Timeouts(max_attempts=1, connect=1.0, read=1.0))
    started = time.monotonic()
    with pytest.raises(StoreError):
        store.get_bytes("k")
    assert time.monotonic() - started < 10


def test_s3_configuration_errors(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = open_store("s3://no-such-bucket-here", endpoint_url=s3_server.endpoint_url)
    with pytest.raises(ConfigError, match="bucket 'no-such-bucket-here' does not exist"):
        list(missing.list())
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")
    # A session and clients of their own, which read the wrong secret.
    monkeypatch.setattr(s3_module, "_session", functools.cache(botocore.session.get_session))
    monkeypatch.setattr(s3_module, "_client", functools.cache(s3_module._client.__wrapped__))
    refused = open_store("s3://anything", endpoint_url=s3_server.endpoint_url)
    with pytest.raises(ConfigError, match="credentials"):
        refused.put_bytes("k", b"x")


def test_folder_store_sweeps_writes_of_killed_writers(tmp_path: Path) -> None:
    FolderStore(tmp_path / "s").put_bytes("first", b"makes the staging folder")
    staged = tmp_path / "s" / TMP_DIR
    old, fresh, other = staged / "put-old", staged / "put-fresh", staged / "keep-me"
    for path in (old, fresh, other):
        path.write_bytes(b"half a pyramid")
    an_hour_ago = time.time() - STALE_STAGED_S - 60
    for path in (old, other):
        os.utime(path, (an_hour_ago, an_hour_ago))
    store = FolderStore(tmp_path / "s")
    assert old.exists()  # opening sweeps nothing: a store that is only read is never written
    store.put_bytes("a", b"works")
    assert sorted(p.name for p in staged.iterdir()) == ["keep-me", "lock", "put-fresh"]
    assert store.get_bytes("a")[0] == b"works"
