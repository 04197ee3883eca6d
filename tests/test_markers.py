"""Markers, the queue contract: where one is stored, which event wins, idempotent writes against
a real folder store, and reading markers written by the original system or by nobody sane."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from ptif.queue.layout import failed_key, marker_key
from ptif.queue.markers import (
    BadMarker,
    Marker,
    is_older,
    new_marker,
    parse_marker,
    supersedes,
    write_marker,
)
from ptif.stores import FolderStore

QUEUE = "rbsc/"
T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def hashed(key: str, prefix: str = QUEUE) -> str:
    return f"{prefix}_long/{hashlib.sha256(key.encode()).hexdigest()}.json"


def event(sequencer: str | None = None, when: str | None = None, **extra: object) -> Marker:
    return Marker({"key": "a/x.jpg", "sequencer": sequencer, "eventTime": when, **extra})


@pytest.fixture
def store(tmp_path: Path) -> FolderStore:
    return FolderStore(tmp_path / "process")


# naming -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    ["a.jpg", "maps/1850/sheet 1.tif", "ünï/日本.png", "plus+%20#.jpg", "_longer/x.jpg"],
)
def test_marker_named_after_the_full_key(key: str) -> None:
    assert marker_key(key, QUEUE) == f"{QUEUE}{key}.json"
    assert failed_key(key) == f"failed/{key}.json"


def test_key_at_the_s3_limit_keeps_its_name() -> None:
    room = 1024 - len(QUEUE) - len(".json")
    folders = "k/" + "/".join(["x" * 200] * 4) + "/"
    key = folders + "y" * (room - len(folders))
    assert marker_key(key, QUEUE) == f"{QUEUE}{key}.json"
    assert len(marker_key(key, QUEUE).encode()) == 1024
    assert marker_key(key + "y", QUEUE) == hashed(key + "y")


def test_long_multibyte_key_is_hashed_by_bytes() -> None:
    key = "é" * 509 + ".jpg"
    assert len(key) < 1024 < len(f"{QUEUE}{key}.json".encode())
    assert marker_key(key, QUEUE) == hashed(key)
    assert failed_key(key) == hashed(key, "failed/")


@pytest.mark.parametrize(
    "key", ["../../etc/passwd", "a/../b.jpg", "./a.jpg", "a//b.jpg", "/abs.jpg", "a/", "a\0b",
            "_long/abc.jpg", ".."],
)  # fmt: skip
def test_unsafe_keys_are_hashed(key: str) -> None:
    assert marker_key(key, QUEUE) == hashed(key)
    assert failed_key(key) == hashed(key, "failed/")


def test_queue_prefix_is_used_as_given() -> None:
    assert marker_key("a.jpg", "jobs/pending/") == "jobs/pending/a.jpg.json"


@pytest.mark.parametrize("name", ["x" * 248 + ".jpg", "é" * 124 + ".jpg"])
def test_marker_for_a_name_near_255_bytes_fits_a_folder(store: FolderStore, name: str) -> None:
    key = f"a/{name}"
    assert len(name.encode()) <= 255 < len(f"{name}.json".encode())
    assert marker_key(key, QUEUE) == hashed(key)
    assert write_marker(store, new_marker(key, origin="mark"), QUEUE)
    data, _ = store.get_bytes(marker_key(key, QUEUE))
    assert parse_marker(data, "m").key == key


# which marker stays queued ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("candidate", "current", "older"),
    [
        ("0055AED6DCD90281E6", "0055AED6DCD90281E5", False),
        ("0055AED6DCD90281E5", "0055AED6DCD90281E6", True),
        ("0055AED6DCD90281E5", "0055AED6DCD90281E5", True),
        ("0055AED6DCD90281E500", "0055AED6DCD90281E5", True),
        ("0055AED6DCD90281E5", "0055AED6DCD90281E500", True),
        ("0055AED6DCD90281E6", "0055AED6DCD90281E500", False),
        ("0055AED6DCD90281E501", "0055AED6DCD90281E5", False),
        ("0055aed6dcd90281e6", "0055AED6DCD90281E5", False),
        ("0055AED6DCD90281F", "0055AED6DCD90281E5FF", False),
    ],
)
def test_sequencers_compare_after_padding(candidate: str, current: str, older: bool) -> None:
    late, early = T0.isoformat(), (T0 - timedelta(days=1)).isoformat()
    assert is_older(event(candidate, early, eTag="2"), event(current, late, eTag="1")) is older
    assert (
        supersedes(event(candidate, early, eTag="2"), event(current, late, eTag="1")) is not older
    )


@pytest.mark.parametrize(
    ("candidate", "current"),
    [
        ("2024-05-01T12:00:01Z", "2024-05-01T12:00:00Z"),
        ("2024-05-01T12:00:00Z", "2024-05-01T12:00:01Z"),  # rsync -t of an older file
        ("2024-05-01T12:00:00Z", "2024-05-01T12:00:00.000Z"),  # two PUTs in one second
        ("2024-05-01T12:00:00Z", "not a time"),
        ("", ""),
    ],
)
def test_times_prove_nothing_another_version_replaces(candidate: str, current: str) -> None:
    assert supersedes(event(None, candidate, eTag="new"), event("FF", current, eTag="old"))
    assert supersedes(event("01", candidate, eTag="new"), event(None, current, eTag="old"))
    assert supersedes(
        event(None, candidate, eTag="e", size=2), event(None, current, eTag="e", size=1)
    )


@pytest.mark.parametrize("when", ["2024-05-01T12:00:01Z", "2024-05-01T11:00:00Z"])
def test_the_same_version_again_is_a_duplicate_whatever_its_time(when: str) -> None:
    queued = event(None, "2024-05-01T12:00:00Z", eTag="e", size=5)
    assert not supersedes(event(None, when, eTag="e", size=5), queued)
    assert not supersedes(event(None, when, eTag="e"), queued)
    assert not supersedes(event("0A", when, eTag="e", size=5), event("09", when, eTag="e"))


# new_marker and Marker --------------------------------------------------------------------------


def test_new_marker_has_the_contract_fields() -> None:
    marker = new_marker(
        "maps/1850/x.jpg",
        origin="s3-event",
        etag='"abc"',
        size=12,
        bucket="rbsc",
        version_id="v1",
        sequencer="00FF",
        event_time=T0,
        extra={"copyrightStatus": "copyright", "key": "ignored", "origin": "ignored"},
    )
    assert marker.fields == {
        "key": "maps/1850/x.jpg",
        "path": "maps/1850/",
        "eTag": "abc",
        "bucket": "rbsc",
        "size": 12,
        "versionId": "v1",
        "sequencer": "00FF",
        "eventTime": "2024-05-01T12:00:00Z",
        "origin": "s3-event",
        "copyrightStatus": "copyright",
    }
    assert new_marker("top.jpg", origin="mark").fields["path"] == ""


def test_marker_round_trips_through_bytes() -> None:
    marker = new_marker("ünï/x.jpg", origin="mark", etag="e").with_fields(attempts=2)
    again = parse_marker(marker.to_bytes(), "m")
    assert again == marker and again.attempts == 2 and again.etag == "e"
    assert "ünï".encode() in marker.to_bytes()


# writing ----------------------------------------------------------------------------------------


def test_write_marker_is_idempotent(store: FolderStore) -> None:
    marker = new_marker("a/x.jpg", origin="s3-event", sequencer="0A", event_time=T0)
    assert write_marker(store, marker, QUEUE) is True
    data, info = store.get_bytes(f"{QUEUE}a/x.jpg.json")
    assert write_marker(store, marker, QUEUE) is False
    assert store.get_bytes(f"{QUEUE}a/x.jpg.json") == (data, info)
    assert parse_marker(data, "m") == marker


def test_another_version_replaces_unless_its_sequencer_is_older(store: FolderStore) -> None:
    first = new_marker("a/x.jpg", origin="s3-event", sequencer="0A", etag="1", event_time=T0)
    newer = new_marker("a/x.jpg", origin="s3-event", sequencer="0B", etag="2", event_time=T0)
    older = new_marker("a/x.jpg", origin="s3-event", sequencer="09", etag="0", event_time=T0)
    tie = new_marker("a/x.jpg", origin="mark", sequencer="0B", etag="3", event_time=T0)
    assert write_marker(store, first, QUEUE)
    assert write_marker(store, newer, QUEUE)
    assert not write_marker(store, older, QUEUE)
    assert not write_marker(store, tie, QUEUE)
    data, _ = store.get_bytes(f"{QUEUE}a/x.jpg.json")
    assert parse_marker(data, "m").etag == "2"


def test_a_version_dated_earlier_or_in_the_same_second_replaces_the_queued_one(
    store: FolderStore,
) -> None:
    """``rsync -t`` or ``cp -p`` of an older file, or a second PUT within the same second:
    the watcher's marker for it names an equal or earlier time and must still win."""
    queued = new_marker("a/x.jpg", origin="watch", etag="v1", size=10, event_time=T0)
    same_second = new_marker("a/x.jpg", origin="watch", etag="v2", size=10, event_time=T0)
    backdated = new_marker(
        "a/x.jpg", origin="watch", etag="v3", size=12, event_time=T0 - timedelta(days=400)
    )
    assert write_marker(store, queued, QUEUE)
    assert write_marker(store, same_second, QUEUE)
    assert parse_marker(store.get_bytes(f"{QUEUE}a/x.jpg.json")[0], "m").etag == "v2"
    assert write_marker(store, backdated, QUEUE)
    assert parse_marker(store.get_bytes(f"{QUEUE}a/x.jpg.json")[0], "m").etag == "v3"
    assert not write_marker(store, backdated.with_fields(eventTime="2030-01-01T00:00:00Z"), QUEUE)


def test_unreadable_marker_is_replaced(store: FolderStore) -> None:
    store.put_bytes(f"{QUEUE}a/x.jpg.json", b"{broken")
    marker = new_marker("a/x.jpg", origin="mark")
    assert write_marker(store, marker, QUEUE)
    assert parse_marker(store.get_bytes(f"{QUEUE}a/x.jpg.json")[0], "m") == marker


def test_long_key_marker_lands_under_long(store: FolderStore) -> None:
    key = "/".join(["d" * 240] * 4) + "/" + "n" * 50 + ".jpg"
    assert write_marker(store, new_marker(key, origin="mark"), QUEUE)
    assert [info.key for info in store.list(QUEUE)] == [hashed(key)]
    assert parse_marker(store.get_bytes(hashed(key))[0], "m").key == key


# reading ----------------------------------------------------------------------------------------


def test_original_system_markers_are_read() -> None:
    marker = parse_marker(b'{"key": "maps/x.jpg", "path": "maps/"}', "rbsc/x.json")
    assert (marker.key, marker.etag, marker.attempts) == ("maps/x.jpg", "", 0)
    extra = parse_marker(b'{"key": "x.jpg", "copyrightStatus": "copyright"}', "rbsc/x.json")
    assert extra.fields["copyrightStatus"] == "copyright"


@pytest.mark.parametrize(
    "data",
    [b"", b"not json", b"\xff\xfe\x00", b"[1, 2]", b"null", b'"x.jpg"', b'{"path": "a/"}',
     b'{"key": ""}', b'{"key": 5}', b'{"key": null}', b'{"key": ["a"]}'],
)  # fmt: skip
def test_garbage_is_a_bad_marker(data: bytes) -> None:
    with pytest.raises(BadMarker, match=r"rbsc/junk\.json") as info:
        parse_marker(data, "rbsc/junk.json")
    assert info.value.code == "bad-marker" and info.value.permanent
