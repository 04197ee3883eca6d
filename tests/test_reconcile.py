"""``ptif reconcile``: the join of sources and outputs (tricky names included), what it queues and
what it leaves, the report, lost events caught, and bounded memory on thousands of keys."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aws_events import event
from store_helpers import (
    CURRENT_RECIPE,
    PTIF,
    QUEUE,
    Bench,
    consume,
    folder_bench,
    markers,
    put_output,
    put_source,
)

from ptif import aws
from ptif.config import parse_extensions
from ptif.convert.profiles import PROFILES
from ptif.errors import ConfigError
from ptif.intake.enqueue import Outcome
from ptif.intake.mark import MarkOptions, mark
from ptif.intake.reconcile import ReconcileOptions, ReconcileReport, reconcile
from ptif.intake.watch import queuer_for
from ptif.queue.layout import REPORTS_PREFIX, failed_key, marker_key
from ptif.queue.markers import new_marker
from ptif.stores import ObjectInfo, Store

EXTENSIONS = parse_extensions("jpg,jpeg,tif,tiff,png")
#: A source for each state its output can be in.
STATES = {
    "current.jpg": "current",
    "missing.jpg": "missing",
    "other-etag.jpg": "other-etag",
    "other-recipe.jpg": "other-recipe",
    "x/y.jpg": "conflict",
}


def _reconcile(bench: Bench, **options: Any) -> ReconcileReport:
    return reconcile(
        bench.source,
        bench.process,
        bench.images,
        queue_prefix=QUEUE,
        recipes={CURRENT_RECIPE},
        options=ReconcileOptions(extensions=EXTENSIONS, **options),
    )


def _saved_reports(process: Store) -> list[dict[str, Any]]:
    found = [i.key for i in process.list(REPORTS_PREFIX) if "reconcile-" in i.key]
    return [json.loads(process.get_bytes(key)[0]) for key in found]


def test_the_join_is_right_for_names_that_sort_differently(bench: Bench) -> None:
    """Sorted by source key and by output key these come in different orders (and SeaweedFS
    lists '/' first); each source must meet its own output."""
    etags = {
        key: put_source(bench.source, key, key.encode())
        for key in (
            "a b.jpg",  # current
            "a.jpg",  # output from another eTag
            "a-b.png",  # no output
            "a/b.jpg",  # output made with other settings
            "ab.jpg",  # no output
            "ab.s.jpg",  # current: ab.s.tif sorts before ab.tif, ab.s.jpg after ab.jpg
            "x/y.png",  # current, and owns x/y.tif
            "x/y.jpg",  # its output belongs to x/y.png: a conflict
            "notes.txt",
        )
    }
    put_output(bench.images, "a b.jpg", etags["a b.jpg"])
    put_output(bench.images, "a.jpg", "0" * 32)
    put_output(bench.images, "a/b.jpg", etags["a/b.jpg"], recipe="0123456789ab")
    put_output(bench.images, "ab.s.jpg", etags["ab.s.jpg"])
    put_output(bench.images, "x/y.png", etags["x/y.png"])

    report = _reconcile(bench)

    queued = markers(bench.process)
    assert set(queued) == {"a.jpg", "a-b.png", "a/b.jpg", "ab.jpg"}
    for key, fields in queued.items():
        assert fields["origin"] == "reconcile"
        assert fields["eTag"] == etags[key]
    counts = report.to_dict()
    assert counts["outputs"] == {
        "current": 3,
        "missing": 2,
        "other-etag": 1,
        "other-recipe": 1,
        "conflict": 1,
    }
    assert (counts["listed"], counts["not_images"], counts["marked"]) == (9, 1, 4)
    assert counts["conflict_keys"] == ["x/y.jpg"]
    assert _saved_reports(bench.process) == [json.loads(json.dumps(counts))]


def test_mark_stale_watch_and_reconcile_call_the_same_outputs_current(bench: Bench) -> None:
    """One freshness rule: the three intake commands agree on every state, including an output
    that holds another source's pyramid made from identical bytes (S3 gives both one eTag),
    which ``mark --stale`` used to count as up to date."""
    etags = {key: put_source(bench.source, key, key.encode()) for key in STATES}
    put_output(bench.images, "current.jpg", etags["current.jpg"])
    put_output(bench.images, "other-etag.jpg", "0" * 32)
    put_output(bench.images, "other-recipe.jpg", etags["other-recipe.jpg"], recipe="0123456789ab")
    put_output(bench.images, "x/y.png", etags["x/y.jpg"])  # x/y.tif: x/y.png's, same bytes

    reconciled = _reconcile(bench, dry_run=True)
    marked = mark(
        bench.source,
        bench.process,
        bench.images,
        queue_prefix=QUEUE,
        profile=PROFILES["default"],
        options=MarkOptions(extensions=EXTENSIONS, dry_run=True, stale=True),
    )
    queuer = queuer_for(bench.process, bench.images, bench.source, QUEUE, {CURRENT_RECIPE})
    watched = {info.key: queuer.offer(info) for info in bench.source.list()}

    not_current = sorted(set(STATES) - {"current.jpg"})
    assert reconciled.to_dict()["outputs"] == {state: 1 for state in STATES.values()}
    assert sorted(reconciled.marked_keys + reconciled.conflict_keys) == not_current
    assert (marked.up_to_date, sorted(marked.marked_keys)) == (1, not_current)
    assert [k for k, outcome in watched.items() if outcome is Outcome.UP_TO_DATE] == ["current.jpg"]
    assert sorted(markers(bench.process)) == not_current


def test_queued_markers_are_kept_and_known_failures_left_to_retry(bench: Bench) -> None:
    queued_etag = put_source(bench.source, "queued.jpg")
    failed_etag = put_source(bench.source, "failed.jpg")
    put_source(bench.source, "changed.jpg")
    kept = new_marker("queued.jpg", origin="s3-event", etag=queued_etag)
    kept = kept.with_fields(copyrightStatus="copyright")
    bench.process.put_bytes(marker_key("queued.jpg", QUEUE), kept.to_bytes())
    for key, etag in (("failed.jpg", failed_etag), ("changed.jpg", "1" * 32)):
        record = {"key": key, "eTag": etag, "code": "undecodable", "attempts": 1}
        bench.process.put_bytes(failed_key(key), json.dumps(record).encode())

    report = _reconcile(bench)

    queued = markers(bench.process)
    assert set(queued) == {"queued.jpg", "changed.jpg"}  # changed since it failed: try again
    assert queued["queued.jpg"]["copyrightStatus"] == "copyright"
    assert queued["queued.jpg"]["origin"] == "s3-event"
    counts = report.to_dict()
    assert (counts["marked"], counts["already_queued"], counts["failed_before"]) == (1, 1, 1)


def test_a_dry_run_changes_nothing(bench: Bench) -> None:
    put_source(bench.source, "one.jpg")
    put_source(bench.source, "two/three.png")

    report = _reconcile(bench, dry_run=True)

    assert sorted(report.marked_keys) == ["one.jpg", "two/three.png"]
    assert report.marked == 2
    assert list(bench.process.list()) == []


def test_reconcile_queues_exactly_the_uploads_whose_events_were_lost(
    bench: Bench, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(aws, "_intakes", {})
    monkeypatch.setattr(aws, "_logging_ready", True)
    bench.setenv(monkeypatch)
    uploads = [f"batch/scan {n:02}.jpg" for n in range(10)]
    etags = {key: put_source(bench.source, key, key.encode()) for key in uploads}
    bucket = bench.urls["source"].removeprefix("s3://")  # a folder source takes any bucket
    for key in uploads[:6]:  # events for the first six arrive; the rest are lost
        notice = event("s3-put")
        notice["Records"][0]["s3"]["bucket"]["name"] = bucket
        notice["Records"][0]["s3"]["object"].update(key=key.replace(" ", "+"), eTag=etags[key])
        aws.handler(notice, None)
    assert len(markers(bench.process)) == 6
    for key in uploads[:6]:  # the workers convert them
        put_output(bench.images, key, etags[key])
    consume(bench.process)

    report = _reconcile(bench, prefixes=("batch/",))

    assert set(markers(bench.process)) == set(uploads[6:])
    assert report.to_dict()["outputs"]["current"] == 6


class _Watched:
    """Source and image stores that record how far the listing runs ahead of the lookups."""

    def __init__(self, source: Store, images: Store) -> None:
        self.listed = 0
        self.looked_up = 0
        self.most_ahead = 0
        self.source = source
        self.images = images

    def list(
        self, prefix: str = "", *, start_after: str = "", recursive: bool = True
    ) -> Iterator[ObjectInfo]:
        for info in self.source.list(prefix, start_after=start_after, recursive=recursive):
            self.listed += 1
            self.most_ahead = max(self.most_ahead, self.listed - self.looked_up)
            yield info

    def head(self, key: str) -> ObjectInfo | None:
        info = self.images.head(key)
        self.looked_up += 1
        return info


@pytest.mark.slow
def test_thousands_of_keys_stream_through_in_bounded_memory(tmp_path: Path) -> None:
    bench = folder_bench(tmp_path)
    root = Path(bench.urls["source"])
    for folder in range(30):
        (root / f"f{folder:02}").mkdir()
        for n in range(100):
            (root / f"f{folder:02}" / f"img {n:03}.jpg").write_bytes(b"x")
    current = [info for info in bench.source.list() if not info.key.endswith("7.jpg")]
    for info in current:
        put_output(bench.images, info.key, info.etag)
    watched = _Watched(bench.source, bench.images)
    source: Any = type("Source", (), {"list": watched.list, "url": bench.source.url})()
    images: Any = type("Images", (), {"head": watched.head, "url": bench.images.url})()

    report = reconcile(
        source,
        bench.process,
        images,
        queue_prefix=QUEUE,
        recipes={CURRENT_RECIPE},
        options=ReconcileOptions(extensions=EXTENSIONS),
    )

    assert report.listed == 3000
    assert report.marked == 300
    assert len(markers(bench.process)) == 300
    assert all(key.endswith("7.jpg") for key in markers(bench.process))
    assert watched.most_ahead <= 70, f"{watched.most_ahead} sources held at once"


def test_a_missing_permission_stops_the_run_at_once(tmp_path: Path) -> None:
    bench = folder_bench(tmp_path)
    root = Path(bench.urls["source"])
    for n in range(500):
        (root / f"{n:03}.jpg").write_bytes(b"x")
    heads = []

    def refuse(key: str) -> ObjectInfo | None:
        heads.append(key)
        raise ConfigError(f"s3://images: access denied to head {key}")

    images: Any = type("Images", (), {"head": staticmethod(refuse), "url": "s3://images"})()
    with pytest.raises(ConfigError, match="access denied"):
        reconcile(
            bench.source,
            bench.process,
            images,
            queue_prefix=QUEUE,
            recipes={CURRENT_RECIPE},
            options=ReconcileOptions(extensions=EXTENSIONS),
        )
    assert len(heads) < 100
    assert list(bench.process.list()) == []


def test_reconcile_command_prints_and_saves_its_report(tmp_path: Path) -> None:
    bench = folder_bench(tmp_path)
    put_source(bench.source, "maps/sheet 1.tif")
    put_source(bench.source, "other/x.jpg")

    dry = subprocess.run(
        [*PTIF, "reconcile", "--prefix", "maps/", "--dry-run"],
        env=bench.env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.splitlines() == ["maps/sheet 1.tif"]
    assert "would mark 1 of 1 images" in dry.stderr
    assert markers(bench.process) == {}

    done = subprocess.run(
        [*PTIF, "reconcile", "--json"], env=bench.env(), capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    printed = json.loads(done.stdout)
    assert printed["marked"] == 2
    assert printed["outputs"]["missing"] == 2
    assert _saved_reports(bench.process) == [printed]
    assert set(markers(bench.process)) == {"maps/sheet 1.tif", "other/x.jpg"}
