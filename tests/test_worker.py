"""The worker in-process, on folder stores and on buckets of a real SeaweedFS: what ends up in
IMAGES and PROCESS after a run, for good batches, awkward keys, conflicts, duplicates, replaced
markers, transient and permanent failures, and a network that drops, stalls and throttles."""

from __future__ import annotations

import fcntl
import threading
import time
import unicodedata
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import pyvips
from corpus import jpeg
from fault_proxy import Fault, FaultProxy, HeadersOnlyProxy, Request, Rule
from pyramids import read_pyramid
from s3_server import S3Server
from store_helpers import (
    QUEUE,
    Bench,
    FlakySource,
    Size,
    Wrapped,
    add_images,
    claim_of,
    folder_bench,
    keys,
    pending,
    put_source,
    queue,
    read_json,
    s3_bench,
    stray_files,
    verify_all,
    verify_output,
)

from ptif.convert.engine import _blocked_loaders, convert, init_vips
from ptif.convert.formats import sniff
from ptif.convert.profiles import get_profile
from ptif.errors import PtifError
from ptif.intake.mark import MarkOptions, mark
from ptif.queue.layout import CLAIMS_PREFIX, failed_key, marker_key
from ptif.queue.markers import (
    Marker,
    new_marker,
    parse_marker,
    write_marker,
)
from ptif.queue.outputs import SOURCE_KEY, output_key
from ptif.queue.reports import ItemResult, RunReport
from ptif.queue.workdir import WORK_LOCK, WORK_PREFIX, sweep_work_folders
from ptif.queue.worker import Stores
from ptif.stores import ObjectInfo, Store, StoreError
from ptif.stores.s3 import S3Store, Timeouts

SMALL: Size = (64, 48)
NFC = unicodedata.normalize("NFC", "accents/café.jpg")
NFD = unicodedata.normalize("NFD", "accents/café.jpg")
#: 1,020 UTF-8 bytes, so its marker (rbsc/….json) passes S3's 1,024; no segment passes 255.
LONG = "/".join(["L" * 240] * 4) + "/" + "x" * 52 + ".jpg"
LONG_ACCENTED = "/".join(["é" * 120] * 4) + "/" + "x" * 52 + ".jpg"
#: SeaweedFS refuses it ("InvalidRequest"), as it refuses "..": a folder store holds it.
BACKSLASHED = "..\\..\\etc\\passwd.jpg"
AWKWARD = (
    "with space/a b.jpg",
    "plus+sign.jpg",
    "per%cent%20.jpg",
    "hash#tag.jpg",
    NFC,
    NFD,
    "one/same.jpg",
    "two/same.jpg",
    LONG,
    "%2e%2e/%2e%2e/etc/passwd.jpg",
    "..%2F..%2Fetc%2Fpasswd.jpg",
)
ESCAPING = ("../../etc/passwd.jpg", "a/../../../etc/passwd.jpg")


class ReplacingSource(Wrapped):
    """Hands over the source, then queues a newer event for it, as an upload arriving while
    the first one converts would."""

    def __init__(self, bench: Bench, key: str) -> None:
        super().__init__(bench.source)
        self.process = bench.process
        self.key = key
        self.newer: Marker | None = None

    def get_file(self, key: str, path: Path, max_bytes: int | None = None) -> ObjectInfo:
        info = self.inner.get_file(key, path, max_bytes)
        if key == self.key and self.newer is None:
            later = datetime.now(UTC) + timedelta(hours=1)
            self.newer = new_marker(key, origin="s3-event", etag="another", event_time=later)
            assert write_marker(self.process, self.newer, QUEUE)
        return info


class AliasSource(Wrapped):
    """A source that holds keys a folder or SeaweedFS cannot (S3 itself allows ``..``)."""

    def __init__(self, inner: Store, aliases: dict[str, str]) -> None:
        super().__init__(inner)
        self.aliases = aliases

    def head(self, key: str) -> ObjectInfo | None:
        return self.inner.head(self.aliases.get(key, key))

    def get_file(self, key: str, path: Path, max_bytes: int | None = None) -> ObjectInfo:
        return self.inner.get_file(self.aliases.get(key, key), path, max_bytes)


def batch(count: int, folder: str = "b") -> dict[str, Size]:
    return {f"{folder}/{i:03}.jpg": SMALL for i in range(count)}


def output_etags(bench: Bench, sources: Any) -> dict[str, str]:
    return {key: bench.images.head(output_key(key)).etag for key in sources}  # type: ignore[union-attr]


# a batch, reruns ---------------------------------------------------------------------------------


def test_batch_converts_every_image(bench: Bench) -> None:
    sizes = batch(6) | {"b/wide.jpg": (1500, 300), "b/tall.jpg": (300, 1100)}
    add_images(bench, sizes, noise=["b/wide.jpg"])
    report = bench.run()
    assert sorted(report.converted) == sorted(sizes)
    assert report.counts["converted"] == len(sizes) and report.unfinished == 0
    verify_all(bench, sizes)
    assert pending(bench) == [] and keys(bench.process, "failed/") == []
    assert stray_files(bench, [output_key(k) for k in sizes]) == []


def test_unchanged_rerun_converts_nothing(bench: Bench) -> None:
    sizes = batch(5)
    add_images(bench, sizes)
    assert bench.run().counts["converted"] == 5
    before = output_etags(bench, sizes)
    marked = mark(
        bench.source,
        bench.process,
        bench.images,
        queue_prefix=QUEUE,
        profile=get_profile("default"),
        options=MarkOptions(extensions=(".jpg",)),
    )
    assert marked.marked == 5 and len(pending(bench)) == 5
    again = bench.run()
    assert again.counts["converted"] == 0 and again.counts["skipped"] == 5
    assert output_etags(bench, sizes) == before
    assert pending(bench) == []


def test_changed_source_is_converted_again(bench: Bench) -> None:
    add_images(bench, {"c/x.jpg": SMALL})
    bench.run()
    put_source(bench.source, "c/x.jpg", jpeg(80, 60, seed=9))
    queue(bench, "c/x.jpg")
    report = bench.run()
    assert report.converted == ["c/x.jpg"]
    verify_output(bench, "c/x.jpg", (80, 60))


# markers that change or repeat -------------------------------------------------------------------


def test_marker_replaced_while_converting_survives(bench: Bench) -> None:
    sizes = batch(3)
    add_images(bench, sizes)
    replacing = ReplacingSource(bench, "b/001.jpg")
    stores = Stores(replacing, bench.process, bench.images)  # type: ignore[arg-type]
    report = bench.worker(stores).run()
    assert replacing.newer is not None
    data, _ = bench.process.get_bytes(marker_key("b/001.jpg", QUEUE))
    assert parse_marker(data, "marker").fields == replacing.newer.fields
    assert pending(bench) == [marker_key("b/001.jpg", QUEUE)]
    assert report.counts["replaced"] == 1 and sorted(report.converted) == ["b/000.jpg", "b/002.jpg"]
    verify_all(bench, sizes)


def test_duplicate_markers_convert_once(bench: Bench) -> None:
    put_source(bench.source, "dup/x.jpg", jpeg(*SMALL))
    queue(bench, "dup/x.jpg")
    original = b'{"key": "dup/x.jpg", "path": "dup/"}'
    bench.process.put_bytes(f"{QUEUE}x.json", original)
    report = bench.run()
    assert report.converted == ["dup/x.jpg"]
    assert (report.counts["converted"], report.counts["skipped"]) == (1, 1)
    assert pending(bench) == []
    verify_output(bench, "dup/x.jpg", SMALL)


def test_output_conflict_never_overwrites(bench: Bench) -> None:
    put_source(bench.source, "a/x.jpg", jpeg(*SMALL))
    png = pyvips.Image.black(40, 30, bands=3) + [9, 99, 199]
    put_source(bench.source, "a/x.png", bytes(png.cast("uchar").pngsave_buffer()))
    queue(bench, "a/x.jpg")
    queue(bench, "a/x.png")
    report = bench.run()
    assert len(report.converted) == 1 and pending(bench) == []
    winner = report.converted[0]
    loser = "a/x.png" if winner == "a/x.jpg" else "a/x.jpg"
    assert_conflict(bench, winner, loser)
    before = bench.images.head("a/x.tif")
    write_marker(bench.process, new_marker(loser, origin="s3-event"), QUEUE)
    assert bench.run().converted == []
    assert bench.images.head("a/x.tif") == before
    assert_conflict(bench, winner, loser)


def assert_conflict(bench: Bench, winner: str, loser: str) -> None:
    record = read_json(bench.process, failed_key(loser))
    assert record["code"] == "output-conflict" and record["key"] == loser
    assert loser in record["message"] and winner in record["message"]
    info = bench.images.head("a/x.tif")
    assert info is not None and info.metadata[SOURCE_KEY] == winner
    size = (40, 30) if winner.endswith(".png") else SMALL
    verify_output(bench, winner, size)


# keys --------------------------------------------------------------------------------------------


def test_awkward_keys_convert_to_distinct_outputs(bench: Bench) -> None:
    awkward = AWKWARD + ((BACKSLASHED,) if bench.kind == "folder" else ())
    assert_converts_apart(bench, awkward)


def assert_converts_apart(bench: Bench, sources: tuple[str, ...]) -> None:
    sizes = dict.fromkeys(sources, SMALL)
    add_images(bench, sizes)
    hashed = [marker_key(key, QUEUE) for key in sources if len(key.encode()) > 1000]
    assert hashed and all(name.startswith(f"{QUEUE}_long/") for name in hashed)
    assert set(hashed) <= set(pending(bench))
    report = bench.run()
    assert sorted(report.converted) == sorted(sources) and report.unfinished == 0
    verify_all(bench, sizes)
    outputs = {output_key(key) for key in sources}
    assert len(outputs) == len(sources)
    assert sorted(keys(bench.images)) == sorted(outputs)
    assert pending(bench) == []


def test_long_accented_key_converts(bench: Bench) -> None:
    assert_converts_apart(bench, (LONG_ACCENTED, "short.jpg"))


@pytest.fixture
def confined(bench: Bench, monkeypatch: pytest.MonkeyPatch) -> Bench:
    """Work folder and current folder deep inside the test's folder, so that a key climbing
    out of either would land in a place the test can see."""
    deep = bench.root / "deep" / "er"
    for name in ("tmp", "cwd"):
        (deep / name).mkdir(parents=True)
    monkeypatch.setattr("tempfile.tempdir", str(deep / "tmp"))
    monkeypatch.chdir(deep / "cwd")
    return bench


def escaped_files(bench: Bench) -> list[Path]:
    found = [p for p in bench.root.rglob("*passwd*") if not p.name.endswith(".json")]
    outside = [Path("/etc/passwd.jpg"), Path("/etc/passwd.tif"), Path("/etc/passwd.jpg.src")]
    return found + [p for p in outside if p.exists()]


def queue_unchecked(bench: Bench, key: str) -> None:
    assert write_marker(bench.process, new_marker(key, origin="s3-event"), QUEUE)


def test_climbing_keys_never_leave_the_stores(confined: Bench) -> None:
    bench = confined
    for key in ESCAPING:
        queue_unchecked(bench, key)
    add_images(bench, {"ok/a.jpg": SMALL})
    report = bench.run()
    assert report.converted == ["ok/a.jpg"]
    assert escaped_files(bench) == []
    assert not any(".." in key for key in keys(bench.images))
    if bench.kind == "folder":
        assert_failed(bench, ESCAPING, "unsupported")


def test_key_the_server_refuses_fails_at_once(s3_server: S3Server, tmp_path: Path) -> None:
    bench = s3_bench(tmp_path, s3_server)
    queue_unchecked(bench, ESCAPING[0])
    report = bench.run()
    assert report.counts["retry-later"] == 0
    assert_failed(bench, ESCAPING[:1], "unsupported")


def test_climbing_key_fails_on_a_folder_images_store(tmp_path: Path) -> None:
    bench = folder_bench(tmp_path)
    put_source(bench.source, "real/alias.jpg", jpeg(*SMALL))
    source = AliasSource(bench.source, {key: "real/alias.jpg" for key in ESCAPING})
    for key in ESCAPING:
        queue_unchecked(bench, key)
    stores = Stores(source, bench.process, bench.images)  # type: ignore[arg-type]
    report = bench.worker(stores).run()
    assert report.converted == [] and report.counts["failed"] == len(ESCAPING)
    assert_failed(bench, ESCAPING, "unsupported", named=output_key)
    assert keys(bench.images) == [] and escaped_files(bench) == []


def assert_failed(bench: Bench, sources: Any, code: str, named: Callable[[str], str] = str) -> None:
    for key in sources:
        record = read_json(bench.process, failed_key(key))
        assert record["code"] == code and record["key"] == key
        assert named(key) in record["message"]
    assert pending(bench) == []


# failures ----------------------------------------------------------------------------------------


def test_transient_failure_keeps_the_marker(bench: Bench) -> None:
    add_images(bench, {"t/x.jpg": SMALL})
    flaky = Stores(FlakySource(bench.source), bench.process, bench.images)  # type: ignore[arg-type]
    report = bench.worker(flaky).run()
    assert report.counts["retry-later"] == 1 and report.retry_later[0]["key"] == "t/x.jpg"
    marker = read_json(bench.process, marker_key("t/x.jpg", QUEUE))
    assert "attempts" not in marker and "lastError" not in marker
    claim = claim_of(bench, "t/x.jpg")  # a store error is not the image's attempt
    assert claim["attempts"] == 0 and claim["lastErrorCode"] == "store-unreachable"
    assert claim["expires"] == 0 and claim["markerKey"] == marker_key("t/x.jpg", QUEUE)
    assert keys(bench.images) == [] and keys(bench.process, "failed/") == []
    assert bench.run().converted == ["t/x.jpg"]
    assert pending(bench) == [] and keys(bench.process, CLAIMS_PREFIX) == []


class _MarkerHeadFails(Wrapped):
    """A process store whose HEAD of a queued marker fails as an unreachable store does."""

    def head(self, key: str) -> ObjectInfo | None:
        if key.startswith(QUEUE):
            raise StoreError(f"{key}: connection reset (test)")
        return self.inner.head(key)  # type: ignore[no-any-return]


def test_a_store_error_after_the_claim_is_a_transient_failure(bench: Bench) -> None:
    add_images(bench, {"t/x.jpg": SMALL})
    shaky = Stores(bench.source, _MarkerHeadFails(bench.process), bench.images)  # type: ignore[arg-type]
    report = bench.worker(shaky).run()
    assert report.counts["retry-later"] == 1
    assert report.retry_later[0]["code"] == "store-unreachable"
    claim = claim_of(bench, "t/x.jpg")
    assert claim["attempts"] == 0 and claim["lastErrorCode"] == "store-unreachable"
    assert bench.run().converted == ["t/x.jpg"]


class BuggySource(Wrapped):
    """Every download fails the way a library bug does: an exception nobody foresaw."""

    def get_file(self, key: str, path: Path, max_bytes: int | None = None) -> ObjectInfo:
        raise RuntimeError(f"{key}: a bug (test)")


def test_unexpected_failures_add_up_to_too_many_attempts(bench: Bench) -> None:
    add_images(bench, {"t/x.jpg": SMALL})
    buggy = Stores(BuggySource(bench.source), bench.process, bench.images)  # type: ignore[arg-type]
    for attempt in (1, 2):
        assert bench.worker(buggy, max_attempts=2).run().counts["retry-later"] == 1
        assert claim_of(bench, "t/x.jpg")["attempts"] == attempt
    report = bench.worker(buggy, max_attempts=2).run()
    assert report.counts["failed"] == 1 and keys(bench.images) == []
    record = read_json(bench.process, failed_key("t/x.jpg"))
    assert record["code"] == "too-many-attempts" and record["attempts"] == 2
    assert "gave up after 2 attempts" in record["message"]
    assert record["lastErrorCode"] == "internal"
    assert pending(bench) == [] and keys(bench.process, CLAIMS_PREFIX) == []


def test_store_errors_never_add_up_to_too_many_attempts(bench: Bench) -> None:
    add_images(bench, {"t/x.jpg": SMALL})
    flaky = Stores(FlakySource(bench.source), bench.process, bench.images)  # type: ignore[arg-type]
    for _ in range(3):
        assert bench.worker(flaky, max_attempts=2).run().counts["retry-later"] == 1
        claim = claim_of(bench, "t/x.jpg")
        assert claim["attempts"] == 0 and claim["lastErrorCode"] == "store-unreachable"
    assert keys(bench.process, "failed/") == []
    assert bench.run(max_attempts=2).converted == ["t/x.jpg"]


def test_a_newer_event_starts_the_count_again(bench: Bench) -> None:
    add_images(bench, {"t/x.jpg": SMALL})
    buggy = Stores(BuggySource(bench.source), bench.process, bench.images)  # type: ignore[arg-type]
    bench.worker(buggy, max_attempts=1).run()
    assert claim_of(bench, "t/x.jpg")["attempts"] == 1
    put_source(bench.source, "t/x.jpg", jpeg(*SMALL, seed=7))  # uploaded again: a newer event
    later = datetime.now(UTC) + timedelta(seconds=5)
    etag = bench.source.head("t/x.jpg").etag  # type: ignore[union-attr]
    newer = new_marker("t/x.jpg", origin="s3-event", etag=etag, event_time=later)
    assert write_marker(bench.process, newer, QUEUE)
    assert bench.run(max_attempts=1).converted == ["t/x.jpg"]
    verify_output(bench, "t/x.jpg", SMALL)


def test_attempts_counted_in_the_marker_by_version_0_1_still_count(bench: Bench) -> None:
    put_source(bench.source, "t/x.jpg", jpeg(*SMALL))
    queue(bench, "t/x.jpg", attempts=3, lastError="the worker crashed")
    report = bench.run(max_attempts=3)
    assert report.counts["failed"] == 1 and keys(bench.images) == []
    record = read_json(bench.process, failed_key("t/x.jpg"))
    assert record["code"] == "too-many-attempts" and record["attempts"] == 3
    assert "t/x.jpg" in record["message"] and "the worker crashed" in record["message"]
    assert pending(bench) == []


def test_missing_source_fails(bench: Bench) -> None:
    queue(bench, "gone/x.jpg")
    report = bench.run()
    assert report.failures[0]["code"] == "source-missing"
    assert_failed(bench, ["gone/x.jpg"], "source-missing")


def test_unreadable_marker_fails(bench: Bench) -> None:
    bench.process.put_bytes(f"{QUEUE}junk.json", b"\x00 not json")
    bench.process.put_bytes(f"{QUEUE}nokey.json", b'{"path": "a/"}')
    report = bench.run()
    assert report.counts["failed"] == 2 and pending(bench) == []
    records = [read_json(bench.process, k) for k in keys(bench.process, "failed/_unreadable/")]
    assert sorted(r["markerKey"] for r in records) == [f"{QUEUE}junk.json", f"{QUEUE}nokey.json"]
    assert {r["code"] for r in records} == {"bad-marker"}


def test_report_counts_an_item_whose_callback_is_late(
    bench: Bench, monkeypatch: pytest.MonkeyPatch
) -> None:
    add = RunReport.add

    def late_add(report: RunReport, item: ItemResult) -> None:
        time.sleep(0.3)
        add(report, item)

    monkeypatch.setattr(RunReport, "add", late_add)
    queue_unchecked(bench, "gone/x.jpg")
    report = bench.run()
    assert report.unfinished == 1 and report.counts["failed"] == 1
    saved = [read_json(bench.process, key) for key in keys(bench.process, "reports/")]
    assert [r["counts"]["failed"] for r in saved] == [1]


# a network that misbehaves ------------------------------------------------------------------------

FAST = Timeouts(max_attempts=6, connect=1.0, read=1.0)
ONE_RETRY = Timeouts(max_attempts=2, connect=1.0, read=1.0)
FAULT_RUNS = 4


def is_object_get(request: Request) -> bool:
    return request.method == "GET" and not request.has_query("list-type")


FAULTS: list[Rule] = [
    Rule(Fault.STALL, is_object_get, first=2, stall=3.0),
    Rule(Fault.RESET_MID_BODY, is_object_get, first=4),
    Rule(Fault.SLOWDOWN, probability=0.12),
    Rule(Fault.RESET, probability=0.06),
    Rule(Fault.RESET_MID_BODY, is_object_get, probability=0.1),
    Rule(Fault.LOST_ANSWER, probability=0.03),
]


def through(proxy: FaultProxy, bench: Bench) -> Stores:
    def store(name: str) -> S3Store:
        bucket = bench.urls[name].removeprefix("s3://")
        return S3Store(bucket, endpoint_url=proxy.endpoint_url, timeouts=FAST)

    return Stores(store("source"), store("process"), store("images"))


def run_until_empty(bench: Bench, stores: Stores, runs: int) -> int:
    for attempt in range(1, runs + 1):
        bench.worker(stores).run()
        if not pending(bench):
            return attempt
    return runs + 1


def test_batch_completes_through_a_faulty_network(s3_server: S3Server, tmp_path: Path) -> None:
    bench = s3_bench(tmp_path, s3_server)
    sizes = batch(10, "f") | {"f/big.jpg": (1400, 1000)}
    add_images(bench, sizes, noise=["f/big.jpg"])
    with FaultProxy(s3_server.endpoint_url, FAULTS, seed=20240611) as proxy:
        runs = run_until_empty(bench, through(proxy, bench), FAULT_RUNS)
    assert runs <= FAULT_RUNS
    verify_all(bench, sizes)
    assert pending(bench) == [] and keys(bench.process, "failed/") == []
    assert stray_files(bench, [output_key(k) for k in sizes]) == []
    for fault in (Fault.STALL, Fault.SLOWDOWN, Fault.RESET, Fault.RESET_MID_BODY):
        assert proxy.injected(fault) >= 1, fault


def test_upload_cut_after_its_headers_leaves_no_empty_pyramid(
    s3_server: S3Server, tmp_path: Path
) -> None:
    bench = s3_bench(tmp_path, s3_server)
    add_images(bench, {"cut/x.jpg": SMALL})
    with HeadersOnlyProxy(s3_server.endpoint_url) as proxy:
        bucket = bench.urls["images"].removeprefix("s3://")
        images = S3Store(bucket, endpoint_url=proxy.endpoint_url, timeouts=ONE_RETRY)
        report = bench.worker(Stores(bench.source, bench.process, images)).run()
    assert proxy.cut >= 1 and report.counts["retry-later"] == 1
    assert bench.images.head("cut/x.tif") is None
    assert bench.run().converted == ["cut/x.jpg"]
    verify_output(bench, "cut/x.jpg", SMALL)


class Rendezvous:
    """Steps two converting threads, "a" and "b", through the start-up of libvips in the
    order a busy machine can produce: b enters the loader set-up while a is inside it, a
    finishes it first and goes on to open its image while b is still setting up.

    A thread that waits for a step the code under test never lets happen goes on after two
    seconds; when b is seen waiting for the engine's start-up lock, or through it, instead of at
    the step, it goes on at once."""

    def __init__(self) -> None:
        self.seen: set[str] = set()
        self.changed = threading.Condition()
        self.errors: list[str] = []

    def arrive(self, step: str) -> None:
        with self.changed:
            self.seen.add(step)
            self.changed.notify_all()

    def wait_for(self, steps: Iterable[str], timeout: float) -> bool:
        wanted = set(steps)
        with self.changed:
            return self.changed.wait_for(lambda: bool(self.seen & wanted), timeout)

    def reached(self, step: str, *waits_for: str) -> None:
        self.arrive(step)
        self.wait_for(waits_for, 2)

    def convert(self, src: Path, dst: Path) -> None:
        try:
            convert(src, dst)
        except PtifError as error:
            self.errors.append(f"{threading.current_thread().name}: {error}")
        finally:
            if threading.current_thread().name == "a":
                self.arrive("done")


class WatchedLock:
    """The engine's start-up lock, telling the rendezvous when b waits for it and when b is
    through."""

    def __init__(self, rendezvous: Rendezvous) -> None:
        self.lock = threading.Lock()
        self.rendezvous = rendezvous

    def __enter__(self) -> None:
        if threading.current_thread().name == "b":
            self.rendezvous.arrive("b_waits")
        self.lock.acquire()

    def __exit__(self, *_: object) -> None:
        self.lock.release()
        if threading.current_thread().name == "b":
            self.rendezvous.arrive("b_through")


def install(rendezvous: Rendezvous, monkeypatch: pytest.MonkeyPatch) -> None:
    block, cache_max, real_sniff = pyvips.operation_block_set, pyvips.cache_set_max, sniff

    def operation_block_set(name: str, state: bool) -> None:
        block(name, state)
        me = threading.current_thread().name
        if name == "VipsForeignLoad" and state:
            if me == "a":
                rendezvous.reached("a_in", "b_in", "b_waits")
            else:
                rendezvous.reached("b_blocked", "done")

    def cache_set_max(size: int) -> None:
        if threading.current_thread().name == "b":
            rendezvous.reached("b_in", "a_on")
        cache_max(size)

    def slow_sniff(path: Path) -> Any:
        if threading.current_thread().name == "a":
            rendezvous.reached("a_on", "b_blocked", "b_through")
        return real_sniff(path)

    monkeypatch.setattr(pyvips, "operation_block_set", operation_block_set)
    monkeypatch.setattr(pyvips, "cache_set_max", cache_set_max)
    monkeypatch.setattr("ptif.convert.engine.sniff", slow_sniff)
    monkeypatch.setattr("ptif.convert.engine._INIT_LOCK", WatchedLock(rendezvous))


@pytest.fixture
def fresh_libvips() -> Iterator[None]:
    _blocked_loaders.cache_clear()
    yield
    _blocked_loaders.cache_clear()
    init_vips()


def test_first_conversions_of_a_worker_do_not_block_each_other(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fresh_libvips: None
) -> None:
    src = tmp_path / "x.jpg"
    src.write_bytes(jpeg(*SMALL))
    rendezvous = Rendezvous()
    install(rendezvous, monkeypatch)
    a = threading.Thread(target=rendezvous.convert, args=(src, tmp_path / "a.tif"), name="a")
    b = threading.Thread(target=rendezvous.convert, args=(src, tmp_path / "b.tif"), name="b")
    a.start()
    assert rendezvous.wait_for(["a_in"], 5)
    b.start()
    a.join(20)
    b.join(20)
    assert rendezvous.errors == []
    assert read_pyramid(tmp_path / "a.tif").sizes == read_pyramid(tmp_path / "b.tif").sizes


# work folders ------------------------------------------------------------------------------------


def test_work_folders_of_killed_runs_are_swept(tmp_path: Path) -> None:
    dead = tmp_path / f"{WORK_PREFIX}dead"
    dead.mkdir()
    (dead / WORK_LOCK).touch()
    (dead / "abc.src").write_bytes(b"half a download")
    alive = tmp_path / f"{WORK_PREFIX}alive"
    alive.mkdir()
    starting = tmp_path / f"{WORK_PREFIX}starting"  # made, not locked yet
    starting.mkdir()
    unrelated = tmp_path / "ptif-other"
    unrelated.mkdir()
    with (alive / WORK_LOCK).open("wb") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        assert sweep_work_folders(tmp_path) == [dead]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        p.name for p in (alive, starting, unrelated)
    )


def test_a_run_sweeps_and_cleans_up(bench: Bench, monkeypatch: pytest.MonkeyPatch) -> None:
    scratch = bench.root / "scratch"
    (scratch / f"{WORK_PREFIX}old").mkdir(parents=True)
    (scratch / f"{WORK_PREFIX}old" / WORK_LOCK).touch()
    monkeypatch.setattr("tempfile.tempdir", str(scratch))
    add_images(bench, {"w/a.jpg": SMALL})
    assert bench.run().converted == ["w/a.jpg"]
    assert list(scratch.iterdir()) == []
