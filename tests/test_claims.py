"""What a claim counts and remembers, so that one converted image costs as few requests as it
does: the attempt in hand is counted in the claim's first write (taking one over counts on from
the count it carries), and the claim names every source of its output that has a failure
record, so that a conversion removes a record exactly where one may exist."""

from __future__ import annotations

import json
import time
from pathlib import Path

from corpus import jpeg
from store_helpers import (
    QUEUE,
    Bench,
    Size,
    add_images,
    claim_of,
    failures,
    keys,
    pending,
    put_source,
    queue,
    verify_output,
)

from ptif.errors import STORE_UNREACHABLE, PtifError
from ptif.queue.failures import FailureRecord, write_failure
from ptif.queue.layout import CLAIMS_PREFIX, claim_key, failed_key, marker_key
from ptif.queue.leases import Busy, ClaimSweeper, Lease, LeaseKeeper, acquire, parse_claim
from ptif.queue.markers import new_marker
from ptif.queue.outputs import output_key
from ptif.stores import FolderStore

SMALL: Size = (64, 48)
MARKER = marker_key("a/x.jpg", QUEUE)


def claim_body(store: FolderStore, subject: str) -> dict[str, object]:
    data, _ = store.get_bytes(claim_key(subject))
    body = json.loads(data)
    assert isinstance(body, dict)
    return body


def stale_claim(store: FolderStore, subject: str, **fields: object) -> None:
    """The claim a worker that died left behind, expired a minute ago."""
    body = {"subject": subject, "owner": "dead:1", "expires": time.time() - 60, **fields}
    store.put_bytes(claim_key(subject), json.dumps(body).encode())


# the count --------------------------------------------------------------------------------------


def test_a_new_claim_counts_the_attempt_in_hand_in_its_first_write(tmp_path: Path) -> None:
    process = FolderStore(tmp_path / "process")
    lease = acquire(process, "a/x.tif", "me", 60, marker=MARKER, etag="e1")
    assert isinstance(lease, Lease)
    assert claim_body(process, "a/x.tif")["attempts"] == 1
    assert (lease.attempts, lease.earlier) == (1, 0)


def test_a_takeover_counts_on_from_the_count_the_stale_claim_carries(tmp_path: Path) -> None:
    process = FolderStore(tmp_path / "process")
    stale_claim(process, "a/x.tif", attempts=2, markerKey=MARKER, markerETag="e1")
    lease = acquire(process, "a/x.tif", "me", 60, marker=MARKER, etag="e1")
    assert isinstance(lease, Lease)
    body = claim_body(process, "a/x.tif")
    assert body["owner"] == "me" and body["attempts"] == 3  # in the takeover's own write
    assert lease.earlier == 2
    lease.release_noting(STORE_UNREACHABLE, "the images store failed", counted=False)
    assert claim_body(process, "a/x.tif")["attempts"] == 2  # not the image's doing: given back


def test_a_takeover_for_a_newer_marker_counts_from_one(tmp_path: Path) -> None:
    process = FolderStore(tmp_path / "process")
    stale_claim(process, "a/x.tif", attempts=4, markerKey=MARKER, markerETag="e1")
    lease = acquire(process, "a/x.tif", "me", 60, marker=MARKER, etag="e2")
    assert isinstance(lease, Lease)
    assert claim_body(process, "a/x.tif")["attempts"] == 1


def test_a_live_claim_is_not_taken_and_keeps_its_count(tmp_path: Path) -> None:
    process = FolderStore(tmp_path / "process")
    first = acquire(process, "a/x.tif", "first", 60, marker=MARKER, etag="e1")
    assert isinstance(first, Lease)
    assert isinstance(acquire(process, "a/x.tif", "second", 60, marker=MARKER, etag="e1"), Busy)
    assert claim_body(process, "a/x.tif")["attempts"] == 1


def test_a_worker_that_dies_right_after_claiming_has_counted_its_attempt(bench: Bench) -> None:
    """Nothing after the claim's first write is needed to count: an image whose worker dies
    every time ends in failed/ after max_attempts, even if it died before converting."""
    add_images(bench, {"d/x.jpg": SMALL})
    marker = marker_key("d/x.jpg", QUEUE)
    listed = bench.process.head(marker)
    assert listed is not None
    for _ in range(2):  # two workers die holding it; their leases have run out
        dead = acquire(
            bench.process, output_key("d/x.jpg"), "dead:1", -1, marker=marker, etag=listed.etag
        )
        assert isinstance(dead, Lease)
    assert claim_of(bench, "d/x.jpg")["attempts"] == 2
    report = bench.run(max_attempts=2)
    assert report.counts["failed"] == 1, report.to_dict()
    record = failures(bench)["d/x.jpg"]
    assert (record["code"], record["attempts"]) == ("too-many-attempts", 2), record
    assert pending(bench) == []


# the failure records it names ---------------------------------------------------------------------


def test_a_failure_is_named_in_the_claim_which_stays_until_its_source_converts(
    bench: Bench,
) -> None:
    put_source(bench.source, "f/x.jpg", b"not an image at all")
    queue(bench, "f/x.jpg")
    assert bench.run().counts["failed"] == 1
    assert failures(bench)["f/x.jpg"]["code"] == "unsupported"  # no format it knows
    claim = claim_of(bench, "f/x.jpg")
    assert claim["failedSources"] == ["f/x.jpg"] and claim["owner"] == ""
    assert claim["attempts"] == 0

    put_source(bench.source, "f/x.jpg", jpeg(*SMALL, seed=3))  # the fixed upload
    queue(bench, "f/x.jpg")
    assert bench.run().converted == ["f/x.jpg"]
    verify_output(bench, "f/x.jpg", SMALL)
    assert failures(bench) == {}
    assert keys(bench.process, CLAIMS_PREFIX) == []  # nothing left to remember


def test_a_record_filed_by_a_worker_that_then_died_goes_when_its_source_converts(
    bench: Bench,
) -> None:
    """The source is named in the claim before the record is filed: a worker that dies between
    the two, or before it releases, still leaves the record known."""
    add_images(bench, {"c/x.jpg": SMALL})
    marker = marker_key("c/x.jpg", QUEUE)
    listed = bench.process.head(marker)
    assert listed is not None
    dead = acquire(
        bench.process, output_key("c/x.jpg"), "dead:1", -1, marker=marker, etag=listed.etag
    )
    assert isinstance(dead, Lease)
    dead.note_failure("c/x.jpg")
    error = PtifError("c/x.jpg: a failure (test)", code="undecodable")
    write_failure(
        bench.process,
        FailureRecord(new_marker("c/x.jpg", origin="mark"), error, marker, 1, "dead:1"),
    )
    # it died here: the marker is still queued, the claim expired and names the record

    assert bench.run().converted == ["c/x.jpg"]
    assert bench.process.head(failed_key("c/x.jpg")) is None
    assert keys(bench.process, CLAIMS_PREFIX) == [] and pending(bench) == []


def test_a_claim_naming_failures_is_released_not_deleted(tmp_path: Path) -> None:
    """As a run that is stopped (SIGTERM) releases what it holds."""
    process = FolderStore(tmp_path / "process")
    lease = acquire(process, "a/x.tif", "me", 60, marker=MARKER, etag="e1")
    assert isinstance(lease, Lease)
    lease.note_failure("a/x.png")
    lease.release()
    body = claim_body(process, "a/x.tif")
    assert body["failedSources"] == ["a/x.png"] and body["expires"] == 0.0
    holder, tries = parse_claim(json.dumps(body).encode())
    assert holder.owner == "" and tries.failed == ("a/x.png",)
    taken = acquire(process, "a/x.tif", "next", 60, marker=MARKER, etag="e2")
    assert isinstance(taken, Lease) and taken.has_failure("a/x.png")


def test_a_claim_naming_many_failed_sources_stays_small_and_still_knows_them(
    tmp_path: Path,
) -> None:
    """Any number of uploads share one output (``x.a``, ``x.b``, … are all ``x.tif``) and each
    may fail: the claim, read and written whole at every take, renewal and release, names a
    bounded number of them, then says any source may have a record; each stays known."""
    process = FolderStore(tmp_path / "process")
    lease = acquire(process, "a/x.tif", "me", 60, marker=MARKER, etag="e1")
    assert isinstance(lease, Lease)
    sources = [f"a/x.{n:04d}{'e' * 900}" for n in range(200)]
    for source in sources:
        lease.note_failure(source)
    lease.forget_failure(sources[-1])  # converted at last: its own record is gone
    lease.release()
    data, _ = process.get_bytes(claim_key("a/x.tif"))
    assert len(data) < 32 * 1024
    taken = acquire(process, "a/x.tif", "next", 60, marker=MARKER, etag="e2")
    assert isinstance(taken, Lease) and not taken.done()
    assert all(taken.has_failure(source) for source in sources)


def test_a_garbage_claim_taken_over_keeps_the_failure_records_it_names(tmp_path: Path) -> None:
    """A claim from a worker whose clock ran days ahead is garbage (its expiry is further than
    any lease runs) and is taken over; the sources it names as failed stay known, so their
    records still go when they convert."""
    process = FolderStore(tmp_path / "process")
    body = {"subject": "a/x.tif", "owner": "ahead:1", "expires": time.time() + 5 * 86400,
            "attempts": 1, "failedSources": ["a/x.png"]}  # fmt: skip
    process.put_bytes(claim_key("a/x.tif"), json.dumps(body).encode())
    taken = acquire(process, "a/x.tif", "me", 60, marker=MARKER, etag="e1")
    assert isinstance(taken, Lease)
    assert taken.has_failure("a/x.png") and not taken.has_failure("a/x.jpg")
    assert claim_body(process, "a/x.tif")["failedSources"] == ["a/x.png"]


# the batched delete of finished claims ----------------------------------------------------------


def test_finished_claims_go_in_one_batched_delete(tmp_path: Path) -> None:
    process = FolderStore(tmp_path / "process")
    sweeper = ClaimSweeper(process, batch=3)
    leases = [acquire(process, f"a/{n}.tif", "me", 60) for n in range(4)]
    for lease in leases[:2]:
        assert isinstance(lease, Lease)
        sweeper.add(lease)
    assert len(keys(process, CLAIMS_PREFIX)) == 4  # waiting: still held, until the sweep
    taken = leases[2]
    assert isinstance(taken, Lease)
    taken.renew()  # as a takeover would: the claim is no longer the one written
    stale = Lease(process, taken.subject, "me", 60, etag="0" * 32)
    sweeper.add(stale)  # the third: a full batch, swept at once
    assert keys(process, CLAIMS_PREFIX) == sorted([taken.key, leases[3].key])  # type: ignore[union-attr]


def test_a_renewal_racing_the_hand_over_to_the_sweeper_does_not_keep_the_claim(
    tmp_path: Path,
) -> None:
    """The lease keeper renews from a list of the leases it held when its tick began: one
    finished and handed to the sweeper meanwhile is not written again, so the batched delete
    (if it still matches) removes it instead of leaving it held until it expires."""
    process = FolderStore(tmp_path / "process")
    keeper, sweeper = LeaseKeeper(60), ClaimSweeper(process)
    lease = acquire(process, "a/x.tif", "me", 60)
    assert isinstance(lease, Lease)
    keeper.hold(lease)
    ticking = keeper.held()  # the keeper's tick begins ...
    keeper.drop(lease)  # ... as the item ends
    sweeper.add(lease)
    for held in ticking:
        held.renew()
    sweeper.sweep()
    assert keys(process, CLAIMS_PREFIX) == []


def test_claims_a_worker_left_waiting_for_its_sweep_are_taken_over(bench: Bench) -> None:
    """A worker that dies after its items finished, before its sweep, leaves their claims
    held until they expire: nothing is lost, and the next version of the image is converted."""
    add_images(bench, {"s/x.jpg": SMALL})
    assert bench.run().converted == ["s/x.jpg"]
    left = acquire(bench.process, output_key("s/x.jpg"), "dead:1", -1, marker="m", etag="e")
    assert isinstance(left, Lease)  # a finished claim the dead worker never deleted
    put_source(bench.source, "s/x.jpg", jpeg(*SMALL, seed=9))
    queue(bench, "s/x.jpg")
    assert bench.run().converted == ["s/x.jpg"]
    verify_output(bench, "s/x.jpg", SMALL)
    assert keys(bench.process, CLAIMS_PREFIX) == [] and pending(bench) == []


def test_the_lease_keeper_outlives_an_unexpected_error(tmp_path: Path) -> None:
    """A renewal that raises something ptif does not expect is logged and the keeper goes on:
    its thread used to die, the leases were never renewed again, and once they expired a second
    worker could take and convert the same image."""
    store = FolderStore(tmp_path)
    got = acquire(store, "x.tif", "me", 30.0, marker="queue/x.json", etag="e")
    assert isinstance(got, Lease)
    renewed = []

    class Surprising:
        subject = got.subject

        def renew(self) -> None:
            renewed.append(time.monotonic())
            if len(renewed) == 1:
                raise RuntimeError("a surprise")
            got.renew()

    with LeaseKeeper(0.3) as keeper:
        keeper.hold(Surprising())  # type: ignore[arg-type]
        deadline = time.monotonic() + 10
        while len(renewed) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
    assert len(renewed) >= 3
