"""The Lambda handler, ``ptif.aws.handler``, fed the event payloads AWS documents (tests/events/),
writing markers into a folder store and into a bucket of a real SeaweedFS server."""

from __future__ import annotations

import copy
import hashlib
import json
import subprocess
import sys
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import quote_plus

import pytest
from aws_events import EVENTS, SPECIAL_KEYS, event, eventbridge_events, s3_object
from fault_proxy import Fault, FaultProxy, Rule
from s3_server import S3Server
from store_helpers import (
    Bench,
    FailingStore,
    folder_bench,
    marker_etag,
    markers,
    s3_bench,
)

from ptif import aws
from ptif.errors import BAD_EVENT, STORE_UNREACHABLE, UNSUPPORTED
from ptif.intake.enqueue import Intake
from ptif.intake.scope import SourceScope
from ptif.stores import Store, open_store
from ptif.stores.s3 import S3Store, Timeouts

NFC = unicodedata.normalize("NFC", "accents/café.jpg")
NFD = unicodedata.normalize("NFD", "accents/café.jpg")
CONTEXT = SimpleNamespace(aws_request_id="8f5a5b4e-0f7c-4d4b-9b1e-3c2d1e0f9a8b")


@pytest.fixture(autouse=True)
def fresh_handler(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test its own container: no cached store, and logging left to pytest (the handler
    configures the root logger, which the subprocess test checks)."""
    monkeypatch.setattr(aws, "_intakes", {})
    monkeypatch.setattr(aws, "_logging_ready", True)
    yield


@pytest.fixture
def env(bench: Bench, monkeypatch: pytest.MonkeyPatch) -> Bench:
    """The stores, named in the environment as the Lambda's configuration names them; the
    source is a folder, so every bucket's events are taken."""
    bench.setenv(monkeypatch, PTIF_SOURCE=str(bench.root / "unused-source"))
    return bench


def test_put_event_queues_the_decoded_key_with_every_field(env: Bench) -> None:
    result = aws.handler(event("s3-put"), CONTEXT)

    assert result == {"marked": 1}
    assert markers(env.process) == {
        "scans/box 1/page one.jpg": {
            "key": "scans/box 1/page one.jpg",
            "path": "scans/box 1/",
            "eTag": "5d41402abc4b2a76b9719d911017c592",
            "bucket": "rbsc-scans",
            "size": 1048576,
            "versionId": "096fKKXTRTtl3on89fVO.nfljtsv6qko",
            "sequencer": "0055AED6DCD90281E5",
            "eventTime": "2026-03-02T10:15:30.123000Z",
            "origin": "s3-event",
        }
    }


def test_many_records_decode_as_aws_encodes_and_skip_what_is_not_an_image(env: Bench) -> None:
    result = aws.handler(event("s3-many"), CONTEXT)

    queued = markers(env.process)
    assert set(queued) == {
        "c++/plus+sign.tif",  # %2B is a literal plus
        "per%cent 50%.png",  # %25 a per cent sign, + a space
        NFC,  # two spellings of é, two different keys
        NFD,
        "maps/Atlas (1872)/sheet 07.tiff",
    }
    assert result == {"marked": 5, "not-image": 3}  # a folder, a dot-file, a .txt
    multipart = queued["maps/Atlas (1872)/sheet 07.tiff"]
    assert multipart["eTag"] == "e1d5f4a0b2b1d5b7a4e8f6c2a1b9d3e7-3"
    assert multipart["size"] == 157286400
    assert queued[NFC]["eTag"] != queued[NFD]["eTag"]


@pytest.mark.parametrize(
    ("name", "outcome"),
    [("s3-removed", {"not-created": 1}), ("eventbridge-deleted", {"not-created": 1})],
)
def test_only_created_objects_are_queued(env: Bench, name: str, outcome: dict[str, int]) -> None:
    assert aws.handler(event(name), CONTEXT) == outcome
    assert markers(env.process) == {}


def test_the_test_event_is_ignored(env: Bench) -> None:
    assert aws.handler(event("s3-test-event"), CONTEXT) == {}
    assert markers(env.process) == {}


def test_sns_wrapped_notification(env: Bench) -> None:
    assert aws.handler(event("sns"), CONTEXT) == {"marked": 1}
    queued = markers(env.process)
    assert list(queued) == ["sns/scan + 1.jpg"]
    assert queued["sns/scan + 1.jpg"]["sequencer"] == "0062A1F3B2C4D5E700"


def test_eventbridge_object_created(env: Bench) -> None:
    assert aws.handler(event("eventbridge-created"), CONTEXT) == {"marked": 1}
    queued = markers(env.process)
    key = unicodedata.normalize("NFC", "eb/Atlas sheet é.tif")
    assert queued[key]["eTag"] == "a87ff679a2f3e71d9181a67b7542122c-3"
    assert queued[key]["sequencer"] == "0062A1F3B2C4D5E800"
    assert queued[key]["versionId"] == "IYV3p45BT0ac8hjHg1houSdS1a.Mro8e"
    assert queued[key]["eventTime"] == "2026-03-02T10:16:00Z"


def test_a_direct_notification_form_encodes_its_keys(env: Bench) -> None:
    assert aws.handler(event("s3-special-keys"), CONTEXT) == {"marked": len(SPECIAL_KEYS)}
    assert set(markers(env.process)) == set(SPECIAL_KEYS)


def test_eventbridge_carries_keys_as_they_are(env: Bench) -> None:
    """A plus stays a plus and ``%2B`` stays ``%2B``: nothing is decoded."""
    for payload in eventbridge_events("eventbridge-special-keys-in-sqs"):
        assert aws.handler(payload, CONTEXT) == {"marked": 1}
    assert set(markers(env.process)) == set(SPECIAL_KEYS)


def test_eventbridge_events_in_sqs_carry_keys_as_they_are(env: Bench) -> None:
    result = aws.handler(event("eventbridge-special-keys-in-sqs"), CONTEXT)
    assert result == {"batchItemFailures": []}
    assert set(markers(env.process)) == set(SPECIAL_KEYS)


def test_sqs_batch_of_s3_sns_eventbridge_and_test_messages(env: Bench) -> None:
    result = aws.handler(event("sqs"), CONTEXT)

    assert result == {"batchItemFailures": []}
    assert set(markers(env.process)) == {
        "sqs/direct scan.jpg",
        "sqs/via sns.png",
        "sqs/via eventbridge.tif",
    }


def test_duplicate_and_out_of_order_events_never_replace_a_newer_marker(env: Bench) -> None:
    key = "scans/box 1/page one.jpg"
    first = event("s3-put")
    aws.handler(first, CONTEXT)
    written = marker_etag(env.process, key)

    assert aws.handler(first, CONTEXT) == {"not-newer": 1}  # delivered twice
    assert marker_etag(env.process, key) == written

    # The sequencers differ in length: the shorter is right-padded with zeros to compare.
    newer = _variant(first, sequencer="0055AED6DCD90281E501", etag="b" * 32)
    assert aws.handler(newer, CONTEXT) == {"marked": 1}
    # An older event arriving late, even with a later eventTime, loses to the sequencer.
    older = _variant(first, sequencer="0055AED6DCD90281E4FFFF", etag="c" * 32)
    older["Records"][0]["eventTime"] = "2026-03-02T11:00:00.000Z"
    assert aws.handler(older, CONTEXT) == {"not-newer": 1}

    assert markers(env.process)[key]["eTag"] == "b" * 32
    assert markers(env.process)[key]["sequencer"] == "0055AED6DCD90281E501"


def test_an_eventbridge_event_competes_by_sequencer_too(env: Bench) -> None:
    created = event("eventbridge-created")
    aws.handler(created, CONTEXT)
    late = json.loads(json.dumps(created))
    late["detail"]["object"].update(sequencer="0062A1F3B2C4D5E7FF", etag="d" * 32)
    assert aws.handler(late, CONTEXT) == {"not-newer": 1}
    assert next(iter(markers(env.process).values()))["eTag"].startswith("a87ff679")


def test_a_store_failure_raises_after_trying_every_record(
    env: Bench, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fail_writes_of(env, monkeypatch, "plus+sign")

    with pytest.raises(aws.IntakeFailed, match="1 of 8 record") as caught:
        aws.handler(event("s3-many"), CONTEXT)

    assert "connection reset" in str(caught.value.__cause__)
    assert len(markers(env.process)) == 4  # the other records were queued all the same


def test_under_sqs_a_store_failure_reports_only_that_message(
    env: Bench, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fail_writes_of(env, monkeypatch, "via sns")

    result = aws.handler(event("sqs"), CONTEXT)

    assert result == {
        "batchItemFailures": [{"itemIdentifier": "6a3a4c0e-6b0a-4f52-9c13-2b8c2f4e1d07"}]
    }
    assert set(markers(env.process)) == {"sqs/direct scan.jpg", "sqs/via eventbridge.tif"}


def test_under_sqs_a_message_that_is_not_a_notification_is_reported(env: Bench) -> None:
    batch = event("sqs")
    batch["Records"][0]["body"] = "this is not JSON"

    result = aws.handler(batch, CONTEXT)

    assert result == {
        "batchItemFailures": [{"itemIdentifier": "059f36b4-87a3-44ab-83d2-661975830a7d"}]
    }
    assert len(markers(env.process)) == 2


def test_events_of_other_buckets_and_prefixes_are_turned_away(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stores = folder_bench(tmp_path)
    stores.setenv(monkeypatch, PTIF_SOURCE="s3://rbsc-scans/scans")
    other = _variant(event("s3-put"), sequencer="0055AED6DCD90281E6")
    other["Records"][0]["s3"]["bucket"]["name"] = "someone-else"

    assert aws.handler(event("s3-put"), CONTEXT) == {"marked": 1}
    assert aws.handler(event("s3-many"), CONTEXT) == {"outside-source": 6, "not-image": 2}
    assert aws.handler(other, CONTEXT) == {"outside-source": 1}
    # Keys are relative to the source store, where the workers will fetch them.
    assert list(markers(stores.process)) == ["box 1/page one.jpg"]


def test_the_bare_bucket_variables_of_the_original_system(
    s3_server: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stores = s3_bench(tmp_path, s3_server)
    stores.setenv(monkeypatch, RBSC_BUCKET="rbsc-scans")
    monkeypatch.delenv("PTIF_PROCESS")
    monkeypatch.delenv("PTIF_SOURCE")
    monkeypatch.setenv("PROCESS_BUCKET", stores.urls["process"].removeprefix("s3://"))

    assert aws.handler(event("s3-put"), CONTEXT) == {"marked": 1}
    assert list(markers(stores.process)) == ["scans/box 1/page one.jpg"]


def test_the_store_is_opened_once_per_container(env: Bench) -> None:
    aws.handler(event("s3-put"), CONTEXT)
    first = aws.current_intake()
    aws.handler(event("sns"), CONTEXT)

    assert aws.current_intake() is first
    assert len(aws._intakes) == 1


def test_extensions_come_from_the_settings(env: Bench, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PTIF_EXTENSIONS", "png")

    assert aws.handler(event("s3-many"), CONTEXT) == {"marked": 1, "not-image": 7}
    assert list(markers(env.process)) == ["per%cent 50%.png"]


def test_every_format_ptif_reads_is_queued_by_default(env: Bench) -> None:
    payload = event("s3-put")
    keys = ("scans/a.jp2", "scans/b.webp", "scans/c.heic", "scans/d.gif")
    payload["Records"] = [copy.deepcopy(payload["Records"][0]) for _ in keys]
    for record, key in zip(payload["Records"], keys, strict=True):
        record["s3"]["object"]["key"] = key

    assert aws.handler(payload, CONTEXT) == {"marked": len(keys)}
    assert sorted(markers(env.process)) == sorted(keys)


def test_a_fresh_interpreter_imports_no_pyvips_and_logs_json_lines(tmp_path: Path) -> None:
    """What a cold Lambda does: import ptif.aws, handle an event, log; pyvips stays out."""
    process = tmp_path / "process"
    script = (
        "import json, sys, types\n"
        "import ptif.aws\n"
        f"payload = json.load(open({str(EVENTS / 's3-many.json')!r}))\n"
        "context = types.SimpleNamespace(aws_request_id='req-123')\n"
        "result = ptif.aws.handler(payload, context)\n"
        "print(json.dumps({'result': result, 'pyvips': 'pyvips' in sys.modules,\n"
        "                  'boto3': 'boto3' in sys.modules}))\n"
    )
    env = {"PATH": "/usr/bin:/bin", "PTIF_PROCESS": str(process), "HOME": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60
    )

    assert done.returncode == 0, done.stderr
    outcome = json.loads(done.stdout)
    assert outcome == {"result": {"marked": 5, "not-image": 3}, "pyvips": False, "boto3": False}
    lines = [json.loads(line) for line in done.stderr.splitlines()]
    *records, summary = lines
    assert len(records) == 8
    for line in records:
        assert {"key", "etag", "bucket", "outcome", "request_id", "aws_request_id"} <= set(line)
        assert line["request_id"] == line["aws_request_id"] == "req-123"
        assert line["bucket"] == "rbsc-scans"
    marked = {line["key"] for line in lines if line["outcome"] == "marked"}
    assert "c++/plus+sign.tif" in marked
    assert summary["outcome"] == "summary" and summary["aws_request_id"] == "req-123"
    assert summary["counts"] == {"records": 8, "marked": 5, "not-image": 3}
    assert len(list((process / "rbsc").rglob("*.json"))) == 5


def _variant(payload: dict[str, Any], *, sequencer: str, etag: str = "") -> dict[str, Any]:
    copy = json.loads(json.dumps(payload))
    s3_object(copy).update(sequencer=sequencer, **({"eTag": etag} if etag else {}))
    return copy


def _fail_writes_of(env: Bench, monkeypatch: pytest.MonkeyPatch, needle: str) -> None:
    extensions = (".jpg", ".tif", ".tiff", ".png")
    intake = Intake(FailingStore(env.process, needle), "rbsc/", extensions, SourceScope())
    monkeypatch.setattr(aws, "current_intake", lambda settings=None: intake)


# every record on its own -------------------------------------------------------------------------
#
# Batches are built from the fixtures in tests/events/ (one S3 record, one SNS record, one SQS
# message, one EventBridge event, each as AWS documents it), with one record broken the way a
# hostile or buggy sender would break it. Direct invocations must queue every good record, then
# raise one error naming the bad one; SQS batches must report exactly the bad record's message.

#: (records in the invocation, position of the bad one): first, middle and last.
POSITIONS = [(1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2), (5, 0), (5, 2), (5, 4)]
#: Direct invocations raise; SQS ones answer batchItemFailures.
DIRECT = ("s3", "sns", "eventbridge")
SQS = ("sqs-s3", "sqs-s3-one-message", "sns-in-sqs", "eventbridge-in-sqs")
ENVELOPES = DIRECT + SQS


def _object(payload: dict[str, Any]) -> dict[str, Any]:
    """The ``object`` of an S3 record or of an EventBridge event."""
    obj: dict[str, Any] = (payload.get("s3") or payload["detail"])["object"]
    return obj


def _undecodable(payload: dict[str, Any]) -> str:
    """A key no object can have: a Latin-1 é percent-encoded (S3 notifications), or in
    EventBridge's key as it is, a byte that is not UTF-8 (which JSON can only carry as a lone
    surrogate). EventBridge's ``caf%E9.jpg`` is a good key: it names that very object."""
    return "scans/caf%E9.jpg" if "s3" in payload else "scans/caf\udce9.jpg"


def _bucket(payload: dict[str, Any]) -> dict[str, Any]:
    bucket: dict[str, Any] = (payload.get("s3") or payload["detail"])["bucket"]
    return bucket


#: Ways to break one record; each returns what takes the record's place.
BREAKERS: dict[str, Any] = {
    "missing-key": lambda p: _object(p).pop("key") and p,
    "key-not-text": lambda p: _object(p).update(key=["scans", "x.jpg"]) or p,
    "bad-encoding": lambda p: _object(p).update(key=_undecodable(p)) or p,
    "lone-surrogate": lambda p: _object(p).update(key="scans/\ud800.jpg") or p,
    "key-too-long": lambda p: _object(p).update(key="k" * 1021 + ".jpg") or p,
    "size-not-a-count": lambda p: _object(p).update(size="big") or p,
    "sequencer-not-text": lambda p: _object(p).update(sequencer={"$gt": ""}) or p,
    "sequencer-not-hex": lambda p: _object(p).update(sequencer="ZZZZZZZZZZZZZZZZZZ") or p,
    "no-bucket": lambda p: _bucket(p).pop("name") and p,
    "not-an-object": lambda p: "garbage",
}


@dataclass
class Batch:
    envelope: str
    payload: Any
    #: Decoded keys that must be queued.
    good: set[str]
    #: What must be reported: the messageId (SQS), or the record's place (direct).
    bad: str


def _s3_record(key: str, number: int) -> dict[str, Any]:
    record: dict[str, Any] = event("s3-put")["Records"][0]
    record["s3"]["object"].update(key=quote_plus(key), **_identity(key, number))
    return record


def _eventbridge(key: str, number: int) -> dict[str, Any]:
    payload = event("eventbridge-created")
    identity = _identity(key, number)
    payload["detail"]["object"].update(key=key, etag=identity["eTag"])  # EventBridge: as it is
    payload["detail"]["object"]["sequencer"] = identity["sequencer"]
    return payload


def _identity(key: str, number: int) -> dict[str, str]:
    return {
        "eTag": hashlib.md5(key.encode()).hexdigest(),
        "sequencer": f"0062A1F3B2C4D5F1{number:02X}",
    }


def _sqs_message(body: Any, message_id: str) -> dict[str, Any]:
    message: dict[str, Any] = event("sqs")["Records"][0]
    text = json.dumps(body)
    message.update(
        messageId=message_id, body=text, md5OfBody=hashlib.md5(text.encode()).hexdigest()
    )
    return message


def _sns_record(notification: Any) -> dict[str, Any]:
    record: dict[str, Any] = event("sns")["Records"][0]
    record["Sns"]["Message"] = json.dumps(notification)
    return record


def _sns_envelope(notification: Any) -> dict[str, Any]:
    """An SNS notification as SNS delivers it to an SQS queue (the message body)."""
    envelope: dict[str, Any] = json.loads(event("sqs")["Records"][2]["body"])
    envelope["Message"] = json.dumps(notification)
    return envelope


def _message_id(index: int) -> str:
    return f"0b1c2d3e-4f50-4a61-8b72-{index:012d}"


def make_batch(envelope: str, count: int, bad_at: int, kind: str) -> Batch:
    keys = [f"{envelope}/scan {i} + é.jpg" for i in range(count)]
    make = _eventbridge if envelope.startswith("eventbridge") else _s3_record
    records: list[Any] = [make(key, i) for i, key in enumerate(keys)]
    records[bad_at] = BREAKERS[kind](records[bad_at])
    good = {key for i, key in enumerate(keys) if i != bad_at}
    ids = [_message_id(i) for i in range(count)]
    if envelope == "s3":
        return Batch(envelope, {"Records": records}, good, f"Records[{bad_at}]")
    if envelope == "sns":
        payload = {"Records": [_sns_record({"Records": [r]}) for r in records]}
        return Batch(envelope, payload, good, f"Records[{bad_at}].Sns.Message.Records[0]")
    if envelope == "eventbridge":
        assert count == 1, "EventBridge invokes a function with one event at a time"
        return Batch(envelope, records[0], good, "event")
    if envelope == "sqs-s3-one-message":  # one message holds them all; a sibling message
        sibling = _sqs_message({"Records": [_s3_record("sibling/message.jpg", 99)]}, "sibling")
        messages = [_sqs_message({"Records": records}, ids[0]), sibling]
        return Batch(envelope, {"Records": messages}, good | {"sibling/message.jpg"}, ids[0])
    wrap = {
        "sqs-s3": lambda r: {"Records": [r]},
        "sns-in-sqs": lambda r: _sns_envelope({"Records": [r]}),
        "eventbridge-in-sqs": lambda r: r,
    }[envelope]
    messages = [_sqs_message(wrap(r), ids[i]) for i, r in enumerate(records)]
    return Batch(envelope, {"Records": messages}, good, ids[bad_at])


def handle_and_check(batch: Batch, process: Store) -> None:
    """Run the handler; the bad record alone is reported, every good one is queued."""
    if batch.envelope in SQS:
        result = aws.handler(batch.payload, CONTEXT)
        assert result == {"batchItemFailures": [{"itemIdentifier": batch.bad}]}
    else:
        with pytest.raises(aws.IntakeFailed) as caught:
            aws.handler(batch.payload, CONTEXT)
        assert [failure.where for failure in caught.value.failures] == [batch.bad]
        assert caught.value.failures[0].code == BAD_EVENT
        assert batch.bad in str(caught.value)
        assert str(caught.value).startswith(f"1 of {len(batch.good) + 1} record(s)")
    assert set(markers(process)) == batch.good


def _matrix() -> Iterator[Any]:
    """Every envelope at every position; the kinds of damage take turns."""
    kinds = list(BREAKERS)
    turn = 0
    for envelope in ENVELOPES:
        for count, bad_at in POSITIONS:
            if envelope == "eventbridge" and count > 1:
                continue
            kind = kinds[turn % len(kinds)]
            turn += 1
            place = {0: "first", count - 1: "last"}.get(bad_at, "middle")
            yield pytest.param(
                envelope, count, bad_at, kind, id=f"{envelope}-{count}-{place}-{kind}"
            )


@pytest.fixture
def folder_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Bench:
    stores = folder_bench(tmp_path)
    stores.setenv(monkeypatch, PTIF_SOURCE=str(tmp_path / "unused-source"))
    return stores


@pytest.mark.parametrize(("envelope", "count", "bad_at", "kind"), list(_matrix()))
def test_a_bad_record_anywhere_costs_no_other_record_its_marker(
    folder_env: Bench, envelope: str, count: int, bad_at: int, kind: str
) -> None:
    handle_and_check(make_batch(envelope, count, bad_at, kind), folder_env.process)


@pytest.mark.parametrize("kind", list(BREAKERS))
@pytest.mark.parametrize("envelope", ENVELOPES)
def test_every_kind_of_bad_record_is_reported_alone(
    folder_env: Bench, envelope: str, kind: str
) -> None:
    count, bad_at = (1, 0) if envelope == "eventbridge" else (3, 1)
    handle_and_check(make_batch(envelope, count, bad_at, kind), folder_env.process)


@pytest.mark.parametrize("envelope", ENVELOPES)
def test_a_bad_middle_record_on_both_kinds_of_store(env: Bench, envelope: str) -> None:
    count, bad_at = (1, 0) if envelope == "eventbridge" else (3, 1)
    handle_and_check(make_batch(envelope, count, bad_at, "bad-encoding"), env.process)


def test_a_badly_encoded_middle_record_keeps_the_third(env: Bench) -> None:
    """Three records straight from S3, the middle one's key not UTF-8: two markers, one error."""
    with pytest.raises(aws.IntakeFailed) as caught:
        aws.handler(event("s3-bad-middle"), CONTEXT)

    assert set(markers(env.process)) == {"attack/first page.jpg", "attack/third page.jpg"}
    (failure,) = caught.value.failures
    assert (failure.where, failure.code, failure.retryable) == ("Records[1]", BAD_EVENT, False)
    assert "attack/caf%E9.jpg" in str(caught.value)  # the raw key, as the operator can find it


def test_a_bad_first_record_keeps_its_sibling_in_the_same_message(env: Bench) -> None:
    result = aws.handler(event("sqs-bad-first-record"), CONTEXT)

    assert result == {
        "batchItemFailures": [{"itemIdentifier": "c5b1a9d2-3e4f-4a5b-8c6d-7e8f9a0b1c2d"}]
    }
    assert set(markers(env.process)) == {"attack/sibling.jpg", "attack/neighbour.png"}


def test_a_retried_direct_event_rewrites_nothing(env: Bench) -> None:
    """Lambda retries a failed invocation whole: the good records' markers stay as they are."""
    with pytest.raises(aws.IntakeFailed):
        aws.handler(event("s3-bad-middle"), CONTEXT)
    written = {key: marker_etag(env.process, key) for key in markers(env.process)}

    with pytest.raises(aws.IntakeFailed) as caught:
        aws.handler(event("s3-bad-middle"), CONTEXT)

    assert [f.where for f in caught.value.failures] == ["Records[1]"]
    assert {key: marker_etag(env.process, key) for key in markers(env.process)} == written


def test_the_error_names_ten_failures_and_counts_the_rest(folder_env: Bench) -> None:
    records = [_s3_record(f"many/{i}.jpg", i) for i in range(14)]
    for record in records[1:13]:
        _object(record)["key"] = "many/caf%E9.jpg"

    with pytest.raises(aws.IntakeFailed) as caught:
        aws.handler({"Records": records}, CONTEXT)

    message = str(caught.value)
    assert message.startswith("12 of 14 record(s) could not be queued")
    assert message.count("bad-event") == aws.NAMED_FAILURES
    assert message.endswith("and 2 more (see the log)")
    assert len(caught.value.failures) == 12
    assert set(markers(folder_env.process)) == {"many/0.jpg", "many/13.jpg"}


@pytest.mark.parametrize(
    "body",
    [
        "[" * 100_000,  # json.loads would recurse past Python's limit
        json.dumps({"Type": "Notification", "Message": "{}"} | {"x": 1}),
        "nested",
    ],
    ids=["json-depth-bomb", "empty-notification", "envelopes-nested-too-deep"],
)
def test_hostile_bodies_fail_their_message_alone(folder_env: Bench, body: str) -> None:
    if body == "nested":  # SNS inside SNS inside SNS…, deeper than AWS ever wraps
        inner: Any = {"Records": [_s3_record("deep/x.jpg", 1)]}
        for _ in range(6):
            inner = _sns_envelope(inner)
        body = json.dumps(inner)
    good = _sqs_message({"Records": [_s3_record("shallow/y.jpg", 2)]}, _message_id(2))
    bad = _sqs_message({}, _message_id(1)) | {"body": body}

    assert aws.handler({"Records": [bad, good]}, CONTEXT) == {
        "batchItemFailures": [{"itemIdentifier": _message_id(1)}]
    }
    assert set(markers(folder_env.process)) == {"shallow/y.jpg"}


# a store that refuses one record ------------------------------------------------------------------


def _three(prefix: str, refused: str) -> list[str]:
    return [f"{prefix}/first.jpg", f"{prefix}/{refused}.jpg", f"{prefix}/last.jpg"]


@pytest.fixture
def proxy(s3_server: S3Server) -> Iterator[FaultProxy]:
    with FaultProxy(s3_server.endpoint_url, seed=20260302) as running:
        yield running


@pytest.fixture
def refusing_intake(
    s3_server: S3Server, proxy: FaultProxy, monkeypatch: pytest.MonkeyPatch
) -> Store:
    """A SeaweedFS bucket reached through a proxy that answers 503 SlowDown to every PUT of a
    key holding ``refused``, as S3 does under throttling; the store gives up after one retry."""
    proxy.set_rules([Rule(Fault.SLOWDOWN, lambda r: r.method == "PUT" and "refused" in r.path)])
    timeouts = Timeouts(max_attempts=1, connect=2.0, read=5.0)
    bucket = s3_server.new_bucket("proc")
    process = S3Store(bucket, endpoint_url=proxy.endpoint_url, timeouts=timeouts)
    intake = Intake(process, "rbsc/", (".jpg",), SourceScope())
    monkeypatch.setattr(aws, "current_intake", lambda settings=None: intake)
    return open_store(f"s3://{bucket}", endpoint_url=s3_server.endpoint_url)


def test_under_sqs_a_store_error_retries_that_message_alone(
    refusing_intake: Store, proxy: FaultProxy
) -> None:
    keys = _three("sqs", "refused")
    messages = [
        _sqs_message({"Records": [_s3_record(k, i)]}, _message_id(i)) for i, k in enumerate(keys)
    ]

    assert aws.handler({"Records": messages}, CONTEXT) == {
        "batchItemFailures": [{"itemIdentifier": _message_id(1)}]
    }
    assert set(markers(refusing_intake)) == {keys[0], keys[2]}
    assert proxy.injected(Fault.SLOWDOWN) >= 1

    proxy.set_rules([])  # SQS redelivers the reported message alone
    assert aws.handler({"Records": [messages[1]]}, CONTEXT) == {"batchItemFailures": []}
    assert set(markers(refusing_intake)) == set(keys)


def test_invoked_directly_a_store_error_fails_the_event_after_the_others(
    refusing_intake: Store, proxy: FaultProxy
) -> None:
    keys = _three("direct", "refused")
    payload = {"Records": [_s3_record(k, i) for i, k in enumerate(keys)]}

    with pytest.raises(aws.IntakeFailed) as caught:
        aws.handler(payload, CONTEXT)

    (failure,) = caught.value.failures
    assert (failure.key, failure.code, failure.retryable) == (keys[1], STORE_UNREACHABLE, True)
    assert caught.value.code == STORE_UNREACHABLE
    assert "throttled" in str(caught.value.__cause__)
    assert set(markers(refusing_intake)) == {keys[0], keys[2]}
    written = {key: marker_etag(refusing_intake, key) for key in (keys[0], keys[2])}

    proxy.set_rules([])  # Lambda's retry: the whole event again
    assert aws.handler(payload, CONTEXT) == {"not-newer": 2, "marked": 1}
    assert set(markers(refusing_intake)) == set(keys)
    assert {key: marker_etag(refusing_intake, key) for key in written} == written


def test_a_folder_store_that_cannot_hold_one_marker_fails_that_record_alone(
    folder_env: Bench,
) -> None:
    """A folder squats the marker's name (a key ``x.jpg.json/…`` was queued before)."""
    keys = _three("squat", "taken")
    (folder_env.root / "process" / "rbsc" / "squat" / "taken.jpg.json").mkdir(parents=True)
    messages = [
        _sqs_message({"Records": [_s3_record(k, i)]}, _message_id(i)) for i, k in enumerate(keys)
    ]

    assert aws.handler({"Records": messages}, CONTEXT) == {
        "batchItemFailures": [{"itemIdentifier": _message_id(1)}]
    }
    assert set(markers(folder_env.process)) == {keys[0], keys[2]}

    with pytest.raises(aws.IntakeFailed) as caught:
        aws.handler({"Records": [_s3_record(k, i) for i, k in enumerate(keys)]}, CONTEXT)
    (failure,) = caught.value.failures
    assert (failure.key, failure.code, failure.retryable) == (keys[1], UNSUPPORTED, False)


# what a cold container logs when records fail ---------------------------------------------------


def _cold_run(tmp_path: Path, fixture: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    script = (
        "import json, types\n"
        "import ptif.aws\n"
        f"payload = json.load(open({str(EVENTS / f'{fixture}.json')!r}))\n"
        "context = types.SimpleNamespace(aws_request_id='req-456')\n"
        "try:\n"
        "    print(json.dumps({'result': ptif.aws.handler(payload, context)}))\n"
        "except ptif.aws.IntakeFailed as error:\n"
        "    print(json.dumps({'raised': str(error)}))\n"
    )
    env = {"PATH": "/usr/bin:/bin", "PTIF_PROCESS": str(tmp_path / "p"), "HOME": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout), [json.loads(line) for line in done.stderr.splitlines()]


def test_each_failed_record_logs_one_json_line_and_the_invocation_a_summary(
    tmp_path: Path,
) -> None:
    outcome, lines = _cold_run(tmp_path, "sqs-bad-first-record")

    assert outcome == {"result": {"batchItemFailures": [{"itemIdentifier": ANGRY_ID}]}}
    (failed,) = [line for line in lines if line["outcome"] == "failed"]
    assert failed["level"] == "error"
    assert failed["messageId"] == ANGRY_ID
    assert failed["aws_request_id"] == "req-456"
    assert (failed["key"], failed["where"], failed["code"]) == ("", "body.Records[0]", BAD_EVENT)
    assert "no object key" in failed["reason"]
    assert '"x-amz-request-id": "B4"' in failed["record"]  # the record, to find it upstream
    assert "AQEB" not in json.dumps(lines)  # no receipt handle
    marked = {line["key"]: line["messageId"] for line in lines if line["outcome"] == "marked"}
    assert marked == {"attack/sibling.jpg": ANGRY_ID, "attack/neighbour.png": CALM_ID}
    summary = lines[-1]
    assert summary["outcome"] == "summary" and summary["level"] == "error"
    assert summary["counts"] == {
        "records": 3, "failed": 1, "marked": 2, "messages": 2, "redelivered": 1
    }  # fmt: skip


def test_a_direct_invocation_logs_then_raises_naming_the_record(tmp_path: Path) -> None:
    outcome, lines = _cold_run(tmp_path, "s3-bad-middle")

    assert outcome["raised"].startswith("1 of 3 record(s) could not be queued (the others were)")
    assert "Records[1]" in outcome["raised"] and "caf%E9" in outcome["raised"]
    (failed,) = [line for line in lines if line["outcome"] == "failed"]
    assert failed["where"] == "Records[1]" and "messageId" not in failed
    assert failed["key"] == "attack/caf\ufffd.jpg"  # undecodable bytes shown, not hidden
    assert lines[-1]["counts"] == {"records": 3, "marked": 2, "failed": 1}


ANGRY_ID = "c5b1a9d2-3e4f-4a5b-8c6d-7e8f9a0b1c2d"
CALM_ID = "d6c2b0e3-4f5a-4b6c-9d7e-8f9a0b1c2d3e"
