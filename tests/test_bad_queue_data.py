"""Bad queue data cannot loop: a marker or a claim that is not what ptif writes is dealt with at
its first read, on folder stores and on a real SeaweedFS, in-process and through ``ptif
process``.

A marker with a field of the wrong type (``"attempts": "lots"``, ``"eTag": [...]``…) used to
raise at the same place on every run, for ever, and never reach ``failed/``. It now goes to
``failed/_unreadable/`` with the code ``bad-marker`` after one try. A claim (ptif's own data)
with a field of the wrong type is garbage: it counts as expired and is replaced, with a
warning, and the image converts.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any

import pytest
from corpus import jpeg
from store_helpers import (
    QUEUE,
    Bench,
    Size,
    add_images,
    claim_of,
    keys,
    pending,
    put_source,
    queue,
    read_json,
    run_ptif,
    verify_output,
)

from ptif.queue.layout import claim_key
from ptif.queue.markers import MAX_MARKER_BYTES
from ptif.queue.outputs import output_key
from ptif.queue.reports import RunReport

SMALL: Size = (64, 48)
UNREADABLE = "failed/_unreadable/"

#: A field of the contract with a value of the wrong type, and what the message says of it.
WRONG_FIELDS: dict[str, tuple[str, Any]] = {
    "attempts-text": ("attempts", "lots"),
    "attempts-negative": ("attempts", -3),
    "attempts-fraction": ("attempts", 1.5),
    "attempts-boolean": ("attempts", True),
    "etag-list": ("eTag", ["d41d8cd98f00b204e9800998ecf8427e"]),
    "size-text": ("size", "1234"),
    "size-negative": ("size", -1),
    "sequencer-number": ("sequencer", 12),
    "event-time-nonsense": ("eventTime", "yesterday"),
    "event-time-number": ("eventTime", 1717171717),
    "path-object": ("path", {"a": 1}),
    "version-number": ("versionId", 3),
    "origin-list": ("origin", ["mark"]),
    "last-error-number": ("lastError", 500),
    "copyright-number": ("copyrightStatus", 1),
}
#: Markers whose ``key`` itself is unusable, or that are no JSON object at all.
WRONG_WHOLE: dict[str, bytes] = {
    "key-number": b'{"key": 42}',
    "key-list": b'{"key": ["a.jpg"]}',
    "key-empty": b'{"key": ""}',
    "key-lone-surrogate": b'{"key": "a\\ud800.jpg"}',
    "a-list": b'[{"key": "a.jpg"}]',
    "deep-nesting": b'{"key": "a.jpg", "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    "huge-number": b'{"key": "a.jpg", "size": ' + b"9" * 5000 + b"}",
}


def wrong_marker(name: str) -> bytes:
    """The marker of source ``bad/<name>.jpg``, whole but for one field."""
    field, value = WRONG_FIELDS[name]
    body = {"key": f"bad/{name}.jpg", "path": "bad/", "eTag": "", "origin": "mark", field: value}
    return json.dumps(body).encode()


def put_wrong_markers(bench: Bench) -> dict[str, str]:
    """Every wrong marker in the queue; their keys by the names above."""
    names = {}
    for name in WRONG_FIELDS:
        names[name] = f"{QUEUE}bad/{name}.jpg.json"
        bench.process.put_bytes(names[name], wrong_marker(name))
    for name, data in WRONG_WHOLE.items():
        names[name] = f"{QUEUE}whole/{name}.json"
        bench.process.put_bytes(names[name], data)
    return names


def unreadable_records(bench: Bench) -> dict[str, dict[str, Any]]:
    records = (read_json(bench.process, key) for key in keys(bench.process, UNREADABLE))
    return {record["markerKey"]: record for record in records}


def test_markers_with_fields_of_the_wrong_type_fail_once(bench: Bench) -> None:
    names = put_wrong_markers(bench)
    add_images(bench, {"good/a.jpg": SMALL})
    report = bench.run()
    assert report.converted == ["good/a.jpg"]
    assert report.counts["failed"] == len(names) and report.counts["retry-later"] == 0
    assert pending(bench) == []
    records = unreadable_records(bench)
    assert sorted(records) == sorted(names.values())
    assert {record["code"] for record in records.values()} == {"bad-marker"}
    for name, (field, _) in WRONG_FIELDS.items():
        message = records[names[name]]["message"]
        assert names[name] in message and repr(field) in message, message
    again = bench.run()  # nothing left to trip over
    assert again.handled == 0 and len(unreadable_records(bench)) == len(names)


def test_a_marker_too_big_to_be_one_is_not_read(bench: Bench) -> None:
    body = {"key": "a.jpg", "pad": "x" * MAX_MARKER_BYTES}
    bench.process.put_bytes(f"{QUEUE}big.json", json.dumps(body).encode())
    report = bench.run()
    assert report.counts["failed"] == 1 and pending(bench) == []
    [record] = unreadable_records(bench).values()
    assert record["code"] == "bad-marker" and "too big" in record["message"]
    assert record["raw"] == ""


def test_process_names_each_bad_marker_on_one_line(bench: Bench) -> None:
    names = {name: f"{QUEUE}bad/{name}.jpg.json" for name in list(WRONG_FIELDS)[:6]}
    for name, key in names.items():
        bench.process.put_bytes(key, wrong_marker(name))
    done = run_ptif(bench, "process", "--workers", "2")
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr and "internal" not in done.stderr
    summary = [line for line in done.stderr.splitlines() if line.startswith("  bad-marker: ")]
    assert len(summary) == len(names)
    for key in names.values():
        assert sum(key in line for line in summary) == 1
    again = run_ptif(bench, "process", "--workers", "2")
    assert again.returncode == 0, again.stderr


# claims ----------------------------------------------------------------------------------------

FAR_AHEAD = time.time() + 10 * 365 * 86400
#: Claims no worker of ptif writes; most live by their expiry, were they believed.
GARBAGE_CLAIMS: dict[str, bytes] = {
    "owner-number": json.dumps({"owner": 7, "expires": FAR_AHEAD}).encode(),
    "expires-text": json.dumps({"owner": "w", "expires": "soon"}).encode(),
    "expires-decades-ahead": json.dumps({"owner": "w", "expires": FAR_AHEAD}).encode(),
    "expires-infinite": b'{"owner": "w", "expires": 1e999}',
    "attempts-text": json.dumps({"owner": "w", "expires": 0, "attempts": "lots"}).encode(),
    "attempts-infinite": b'{"owner": "w", "expires": 0, "attempts": 1e999}',
    "attempts-negative": json.dumps({"owner": "w", "expires": 0, "attempts": -5}).encode(),
    "last-error-list": json.dumps(
        {"owner": "w", "expires": time.time() + 60, "lastError": ["x"]}
    ).encode(),
    "failed-sources-text": json.dumps(
        {"owner": "w", "expires": FAR_AHEAD, "failedSources": "claimed/x.jpg"}
    ).encode(),
    "failed-sources-numbers": json.dumps(
        {"owner": "w", "expires": FAR_AHEAD, "failedSources": [1, 2]}
    ).encode(),
    "a-list": b'["w", 0]',
    "not-json": b"\xff\xfe garbage",
}


CLAIM_WAIT_LIMIT_S = 60.0


def run_within(bench: Bench, seconds: float) -> RunReport:
    """One run, stopped if it takes longer (a live claim believed would hold it for years)."""
    worker = bench.worker()
    done: list[RunReport] = []
    thread = threading.Thread(target=lambda: done.append(worker.run()))
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        worker.stop()
        thread.join()
        pytest.fail(f"the run was still waiting for a claim after {seconds:g} s")
    return done[0]


def test_claims_with_fields_of_the_wrong_type_are_replaced(
    bench: Bench, caplog: pytest.LogCaptureFixture
) -> None:
    sources = {f"claimed/{name}.jpg": name for name in GARBAGE_CLAIMS}
    for seed, (key, name) in enumerate(sources.items()):
        put_source(bench.source, key, jpeg(*SMALL, seed=seed))
        queue(bench, key)
        bench.process.put_bytes(claim_key(output_key(key)), GARBAGE_CLAIMS[name])
    caplog.set_level(logging.WARNING, logger="ptif.queue.leases")
    report = run_within(bench, CLAIM_WAIT_LIMIT_S)  # no claim is waited for
    assert sorted(report.converted) == sorted(sources) and report.unfinished == 0
    for key in sources:
        verify_output(bench, key, SMALL)
    assert pending(bench) == [] and keys(bench.process, "claims/") == []
    replaced = [r.getMessage() for r in caplog.records if "replacing the claim" in r.getMessage()]
    assert len(replaced) == len(sources), replaced


def test_a_garbage_claim_does_not_reset_a_real_count(bench: Bench) -> None:
    """The count lives in ptif's own claims; a garbage one is replaced by a good one, which
    then counts as usual."""
    put_source(bench.source, "g/x.jpg", jpeg(*SMALL))
    queue(bench, "g/x.jpg", attempts=2)  # counted by ptif 0.1 in the marker
    bench.process.put_bytes(claim_key("g/x.tif"), b'{"owner": "w", "expires": "soon"}')
    report = bench.run(max_attempts=2)
    assert report.counts["failed"] == 1
    record = read_json(bench.process, "failed/g/x.jpg.json")
    assert record["code"] == "too-many-attempts" and record["attempts"] == 2
    assert pending(bench) == []
    claim = claim_of(bench, "g/x.jpg")  # stays, released, so the record goes when it converts
    assert claim["failedSources"] == ["g/x.jpg"] and claim["owner"] == ""


def test_status_counts_a_garbage_claim_as_not_held(bench: Bench) -> None:
    add_images(bench, {"s/x.jpg": SMALL})
    bench.process.put_bytes(claim_key("s/x.tif"), GARBAGE_CLAIMS["expires-decades-ahead"])
    done = run_ptif(bench, "status", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["claimed"] == 0
    assert claim_of(bench, "s/x.jpg")["expires"] == FAR_AHEAD  # read, not rewritten
