"""The process store's layout: its folders are distinct, a listing of the queue returns markers
and nothing else (hashed ones included, on purpose), every key function stays in its folder, and
the module stays light enough for the CDK app to import."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ptif.config import Settings
from ptif.errors import PtifError
from ptif.intake.reconcile import ReconcileReport, save_report
from ptif.queue import layout
from ptif.queue.failures import FailureRecord, write_failure, write_unreadable
from ptif.queue.layout import (
    CURSOR_PREFIX,
    DEFAULT_QUEUE_PREFIX,
    FAILED_PREFIX,
    FOLDERS,
    HASHED_FOLDER,
    SUBFOLDERS,
    UNREADABLE_FOLDER,
    claim_key,
    cursor_key,
    failed_key,
    marker_key,
    report_key,
    unreadable_key,
)
from ptif.queue.leases import acquire
from ptif.queue.markers import BadMarker, new_marker, write_marker
from ptif.queue.reports import RunReport
from ptif.stores import FolderStore
from ptif.stores.folder import RESERVED

QUEUE = DEFAULT_QUEUE_PREFIX
#: Keys that name a marker directly, and keys that must be hashed (too long, unsafe, or already
#: looking like a hashed name).
PLAIN = ("a.jpg", "maps/1850/x.tif", "claims/x.jpg", "failed/y.png")
HASHED = ("x/" * 600 + "long.jpg", "../up.jpg", "a//b.jpg", "_long/" + "0" * 64, "n\0ul.jpg")


def constants(suffix: str) -> dict[str, str]:
    return {
        name: value
        for name, value in vars(layout).items()
        if name.endswith(suffix) and isinstance(value, str)
    }


def test_every_folder_constant_is_listed_where_infra_and_the_tests_look() -> None:
    """A top-level folder's constant ends in ``_PREFIX`` and is in FOLDERS (which infra/
    grants); a folder inside another ends in ``_FOLDER`` and is in SUBFOLDERS."""
    top = constants("_PREFIX")
    assert set(top.values()) == {DEFAULT_QUEUE_PREFIX, *FOLDERS}
    assert top["DEFAULT_QUEUE_PREFIX"] == Settings().queue_prefix == "rbsc/"
    assert set(constants("_FOLDER").values()) == set(SUBFOLDERS)


def test_folders_are_distinct_and_none_holds_another() -> None:
    folders = (QUEUE, *FOLDERS)
    assert len(set(folders)) == len(folders)
    for folder in (*folders, *SUBFOLDERS):
        assert folder.endswith("/") and folder.count("/") == 1, folder
        assert not folder.startswith((".", RESERVED)), folder
    for one in folders:
        for other in folders:
            assert one == other or not other.startswith(one), (one, other)


@pytest.mark.parametrize("key", PLAIN + HASHED)
def test_a_marker_and_a_failure_record_stay_in_their_folders(key: str) -> None:
    for name, folder in ((marker_key(key, QUEUE), QUEUE), (failed_key(key), FAILED_PREFIX)):
        assert name.startswith(folder) and name.endswith(".json")
        hashed = name.startswith(folder + HASHED_FOLDER)
        assert hashed == (key in HASHED), name
        assert hashed or name == f"{folder}{key}.json"


def test_other_names_stay_in_their_folders() -> None:
    assert claim_key("a/x.tif").startswith("claims/")
    assert report_key("run-1") == "reports/run-1.json"
    assert cursor_key("file:///data", "scans/").startswith(CURSOR_PREFIX)
    assert cursor_key("file:///data") != cursor_key("file:///data", "scans/")
    assert unreadable_key("rbsc/junk.json").startswith(FAILED_PREFIX + UNREADABLE_FOLDER)


def test_a_listing_of_the_queue_returns_its_markers_and_nothing_else(tmp_path: Path) -> None:
    """Every kind of object ptif keeps in the process store, written by the code that writes
    it; the queue's listing holds the markers, hashed ones included, and ``failed/``'s every
    record, unreadable ones included."""
    process = FolderStore(tmp_path / "process")
    for key in PLAIN + HASHED:
        assert write_marker(process, new_marker(key, origin="mark"), QUEUE)
    markers = {marker_key(key, QUEUE) for key in PLAIN + HASHED}
    acquire(process, "a.tif", "me", 60, marker=marker_key("a.jpg", QUEUE))
    failed = new_marker("gone.jpg", origin="watch")
    error = PtifError("gone.jpg: not an image", code="undecodable")
    record = FailureRecord(failed, error, marker_key("gone.jpg", QUEUE), 1, "me")
    records = {write_failure(process, record)}
    records.add(write_unreadable(process, "rbsc/junk.json", b"{", BadMarker("junk"), worker="me"))
    process.put_bytes(RunReport(owner="me").name, b"{}")
    save_report(process, ReconcileReport("source", "images"))
    process.put_bytes(cursor_key("file:///source"), b"{}")
    process.check_conditional_writes()

    assert {info.key for info in process.list(QUEUE)} == markers
    hashed = {name for name in markers if name.startswith(QUEUE + HASHED_FOLDER)}
    assert {info.key for info in process.list(QUEUE + HASHED_FOLDER)} == hashed
    assert len(hashed) == len(HASHED)
    assert {info.key for info in process.list(FAILED_PREFIX)} == records
    others = {info.key for info in process.list("") if not info.key.startswith(QUEUE)}
    assert {key.split("/")[0] + "/" for key in others} == {
        "claims/", "failed/", "reports/", "watch/",
    }  # fmt: skip


def test_the_layout_loads_without_pyvips_or_boto3() -> None:
    """infra/ builds its IAM policies from it, in a virtualenv that may have neither."""
    code = (
        "import sys, ptif.queue.layout; "
        "print(sorted(m for m in ('pyvips', 'boto3', 'botocore') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"
