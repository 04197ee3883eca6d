"""Every version of every upload ends up converted, and failure records describe the present.

A source replaced while it converts, by a file dated earlier (``rsync -t``, ``cp -p``) or by a
second PUT within the same LastModified second, must not leave the old pyramid current: the
watcher's marker for the new version replaces the claimed one, and the worker checks the source
is still the version it converted before deleting its marker. A key that converts loses its
failure record, and a source that comes back after ``source-missing`` is queued again.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from corpus import jpeg
from s3_server import S3Server
from store_helpers import (
    QUEUE,
    Bench,
    Wrapped,
    failures,
    markers,
    pending,
    put_source,
    queue,
    s3_bench,
    verify_output,
)

from ptif.intake.enqueue import queue_object
from ptif.intake.reconcile import ReconcileOptions, reconcile
from ptif.intake.watch import Poller, WatchOptions, WatchReport, queuer_for
from ptif.queue.layout import failed_key, marker_key
from ptif.queue.status import status
from ptif.queue.worker import Stores
from ptif.stores import FolderStore, ObjectInfo, Store

SMALL = (64, 48)
EXTENSIONS = (".jpg",)
YEAR = 365 * 86400


class ChangingSource(Wrapped):
    """Hands over the source's bytes, then runs ``change`` once: what happens to the source
    while the worker converts what it fetched."""

    def __init__(self, inner: Store, key: str, change: Callable[[], None]) -> None:
        super().__init__(inner)
        self.key = key
        self.change: Callable[[], None] | None = change

    def get_file(self, key: str, path: Path, max_bytes: int | None = None) -> ObjectInfo:
        info = self.inner.get_file(key, path, max_bytes)
        if key == self.key and self.change is not None:
            change, self.change = self.change, None
            change()
        return info


def upload_dated(bench: Bench, key: str, data: bytes, *, dated: str) -> ObjectInfo:
    """Replace ``key`` with ``data``: in a folder dated a year ``earlier`` than the version it
    replaces, or at the ``same`` time to the nanosecond, as ``rsync -t`` or ``cp -p`` leave it;
    a bucket dates it itself."""
    before = bench.source.head(key)
    put_source(bench.source, key, data)
    if isinstance(bench.source, FolderStore) and before is not None:
        path = bench.source.root.joinpath(*key.split("/"))
        old = path.stat().st_mtime_ns  # the store wrote a new file: this is its time
        old = int(before.modified.timestamp() * 1e9) if dated == "same" else old - YEAR * 10**9
        os.utime(path, ns=(old, old))
    info = bench.source.head(key)
    assert info is not None and (before is None or info.etag != before.etag)
    return info


def run_with(bench: Bench, source: Store) -> dict[str, int]:
    stores = Stores(source, bench.process, bench.images)
    return bench.worker(stores).run().counts


def _record(bench: Bench, key: str) -> dict[str, object]:
    return json.loads(bench.process.get_bytes(failed_key(key))[0])


# a marker never drops a version -----------------------------------------------------------------


@pytest.mark.parametrize("dated", ["earlier", "same"])
def test_a_version_dated_earlier_or_the_same_uploaded_while_converting_is_converted_next(
    bench: Bench, dated: str
) -> None:
    key = "v/x.jpg"
    put_source(bench.source, key, jpeg(*SMALL, seed=1))
    v1 = bench.source.head(key)
    assert v1 is not None and queue_object(bench.process, QUEUE, v1, origin="watch")
    newer: list[ObjectInfo] = []

    def upload_and_watch() -> None:  # what `ptif watch` does when the new file settles
        newer.append(upload_dated(bench, key, jpeg(*SMALL, seed=2), dated=dated))
        assert queue_object(bench.process, QUEUE, newer[0], origin="watch")

    counts = run_with(bench, ChangingSource(bench.source, key, upload_and_watch))

    assert counts["requeued"] == 1 and counts["converted"] == 0
    assert markers(bench.process)[key]["eTag"] == newer[0].etag
    assert run_with(bench, bench.source)["converted"] == 1
    verify_output(bench, key, SMALL)  # made from the version there now
    assert pending(bench) == [] and failures(bench) == {}


def test_a_source_replaced_unseen_by_intake_while_converting_stays_queued(bench: Bench) -> None:
    """No marker for the new version arrives (a watcher down, an event lost): the worker's own
    look at the source before deleting the marker keeps the key queued."""
    key = "v/unseen.jpg"
    put_source(bench.source, key, jpeg(*SMALL, seed=1))
    queue(bench, key, copyrightStatus="copyright")

    def upload() -> None:
        upload_dated(bench, key, jpeg(*SMALL, seed=3), dated="earlier")

    report = bench.worker(
        Stores(ChangingSource(bench.source, key, upload), bench.process, bench.images)
    ).run()

    assert report.counts["requeued"] == 1 and report.requeued == [key]
    queued = markers(bench.process)[key]
    assert queued["eTag"] == bench.source.head(key).etag  # type: ignore[union-attr]
    assert queued["copyrightStatus"] == "copyright"  # the marker's own fields stay
    assert report.to_dict()["requeued"] == [key]
    assert run_with(bench, bench.source)["converted"] == 1
    verify_output(bench, key, SMALL)


def test_two_puts_in_the_same_second_while_converting_on_a_real_s3(
    s3_server: S3Server, tmp_path: Path
) -> None:
    """SeaweedFS dates objects to the second, as S3 does: the watcher's marker for the second
    PUT names the same time as the claimed one and must still replace it."""
    for attempt in range(5):
        bench = s3_bench(tmp_path / str(attempt), s3_server)
        key = f"same/{attempt}.jpg"
        _start_of_a_second()
        put_source(bench.source, key, jpeg(*SMALL, seed=1))
        first = bench.source.head(key)
        assert first is not None and queue_object(bench.process, QUEUE, first, origin="watch")
        second: list[ObjectInfo] = []
        put_again = _put_and_watch(bench, key, jpeg(*SMALL, seed=2), second)
        counts = run_with(bench, ChangingSource(bench.source, key, put_again))
        assert counts["requeued"] == 1
        run_with(bench, bench.source)
        verify_output(bench, key, SMALL)
        if int(second[0].modified.timestamp()) == int(first.modified.timestamp()):
            return
    pytest.fail("no two PUTs landed in the same second in five tries")


def _put_and_watch(
    bench: Bench, key: str, data: bytes, seen: list[ObjectInfo]
) -> Callable[[], None]:
    """A PUT of another version, then the watcher's marker for it."""

    def put_again() -> None:
        put_source(bench.source, key, data)
        seen.append(bench.source.head(key))  # type: ignore[arg-type]
        assert queue_object(bench.process, QUEUE, seen[0], origin="watch")

    return put_again


def _start_of_a_second() -> None:
    """Wait for the next second to begin, so that two PUTs a few milliseconds apart fall in it:
    S3's LastModified has no finer grain to backdate."""
    time.sleep(1 - time.time() % 1 + 0.01)


# failure records describe the present -----------------------------------------------------------


def test_a_source_back_after_source_missing_is_queued_again_and_its_record_goes(
    bench: Bench,
) -> None:
    key = "gone/x.jpg"
    data = jpeg(*SMALL, seed=4)
    put_source(bench.source, key, data)
    queue(bench, key)
    bench.source.delete(key)
    assert bench.run().counts["failed"] == 1
    assert _record(bench, key)["code"] == "source-missing"
    assert _record(bench, key)["sourceVersion"] is None

    put_source(bench.source, key, data)  # the same bytes: on S3 the same eTag
    dry = _reconcile(bench, dry_run=True)
    assert dry.marked_keys == [key] and dry.to_dict()["failed_before"] == 0
    assert _reconcile(bench).marked == 1
    assert status(bench.process, QUEUE).to_dict()["failed"] == 0  # a new version is queued

    assert bench.run().converted == [key]
    verify_output(bench, key, SMALL)
    assert failures(bench) == {}
    after = status(bench.process, QUEUE)
    assert (after.failed, after.superseded, after.pending) == (0, 0, 0)
    assert _reconcile(bench, dry_run=True).marked == 0


def test_a_bucket_watcher_queues_a_source_back_after_source_missing(
    s3_server: S3Server, tmp_path: Path
) -> None:
    bench = s3_bench(tmp_path, s3_server)
    key = "gone/watched.jpg"
    data = jpeg(*SMALL, seed=5)
    poller = _poller(bench)
    assert poller.poll()
    put_source(bench.source, key, data)
    assert poller.poll() and set(markers(bench.process)) == {key}
    bench.source.delete(key)
    assert bench.run().counts["failed"] == 1

    _start_of_a_second()  # a later LastModified than the first upload's
    put_source(bench.source, key, data)  # the same bytes, the same eTag
    assert poller.poll()
    assert set(markers(bench.process)) == {key}
    assert bench.run().converted == [key]
    assert failures(bench) == {}


def test_a_failure_while_a_slow_copy_ran_goes_once_the_key_converts(bench: Bench) -> None:
    """An in-place copy caught half-way fails as undecodable; the finished copy converts, and
    its record goes with it."""
    key = "slow/x.jpg"
    data = jpeg(*SMALL, seed=6)
    put_source(bench.source, key, data[: len(data) // 3])
    queue(bench, key)
    assert bench.run().counts["failed"] == 1
    record = _record(bench, key)
    assert record["code"] == "undecodable"
    assert record["sourceVersion"] == {
        "eTag": bench.source.head(key).etag,  # type: ignore[union-attr]
        "size": len(data) // 3,
    }

    finished = upload_dated(bench, key, data, dated="same")
    assert queue_object(bench.process, QUEUE, finished, origin="watch")
    counted = status(bench.process, QUEUE)
    assert (counted.failed, counted.superseded, counted.pending) == (0, 1, 1)
    # The failed version is not this one: reconcile holds nothing against the key, and finds
    # the finished version's marker in the queue already.
    dry = _reconcile(bench, dry_run=True).to_dict()
    assert (dry["failed_before"], dry["already_queued"], dry["marked"]) == (0, 1, 0)

    assert bench.run().converted == [key]
    assert failures(bench) == {} and status(bench.process, QUEUE).failed == 0


def test_a_failure_of_a_source_replaced_meanwhile_is_no_failure(bench: Bench) -> None:
    """The worker fetched half a copy; the copy finished while it failed to decode it: the key
    is queued for the finished version instead of failing."""
    key = "slow/y.jpg"
    data = jpeg(*SMALL, seed=7)
    put_source(bench.source, key, data[: len(data) // 3])
    queue(bench, key)

    def finish_copy() -> None:
        upload_dated(bench, key, data, dated="earlier")

    counts = run_with(bench, ChangingSource(bench.source, key, finish_copy))

    assert counts["requeued"] == 1 and counts["failed"] == 0
    assert failures(bench) == {}
    assert bench.run().converted == [key]
    verify_output(bench, key, SMALL)


def test_a_failure_of_the_current_version_is_left_to_retry(bench: Bench) -> None:
    key = "bad/x.jpg"
    put_source(bench.source, key, b"not an image")
    queue(bench, key)
    assert bench.run().counts["failed"] == 1
    report = _reconcile(bench, dry_run=True)
    assert (report.marked, report.to_dict()["failed_before"]) == (0, 1)
    assert status(bench.process, QUEUE).failed == 1
    assert marker_key(key, QUEUE) not in [i.key for i in bench.process.list(QUEUE)]


def _reconcile(bench: Bench, *, dry_run: bool = False):  # type: ignore[no-untyped-def]
    from ptif.convert.profiles import PROFILES

    return reconcile(
        bench.source,
        bench.process,
        bench.images,
        queue_prefix=QUEUE,
        recipes={PROFILES["default"].recipe.hash},
        options=ReconcileOptions(extensions=EXTENSIONS, dry_run=dry_run),
    )


def _poller(bench: Bench) -> Poller:
    from ptif.convert.profiles import PROFILES

    queuer = queuer_for(
        bench.process, bench.images, bench.source, QUEUE, {PROFILES["default"].recipe.hash}
    )
    options = WatchOptions(settle=0.0, poll=True)
    return Poller(bench.source, queuer, EXTENSIONS, options, WatchReport())
