"""The Lambda handler, ``ptif.aws.handler``, fed the event payloads AWS documents (tests/events/),
writing markers into a folder store and into a bucket of a real SeaweedFS server."""

from __future__ import annotations

import json
import subprocess
import sys
import unicodedata
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from aws_events import EVENTS, event, s3_object
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
from ptif.intake.enqueue import Intake
from ptif.intake.scope import SourceScope

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

    with pytest.raises(aws.IntakeFailed, match="1 record") as caught:
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
    bench = folder_bench(tmp_path)
    bench.setenv(monkeypatch, PTIF_SOURCE="s3://rbsc-scans/scans")
    other = _variant(event("s3-put"), sequencer="0055AED6DCD90281E6")
    other["Records"][0]["s3"]["bucket"]["name"] = "someone-else"

    assert aws.handler(event("s3-put"), CONTEXT) == {"marked": 1}
    assert aws.handler(event("s3-many"), CONTEXT) == {"outside-source": 6, "not-image": 2}
    assert aws.handler(other, CONTEXT) == {"outside-source": 1}
    # Keys are relative to the source store, where the workers will fetch them.
    assert list(markers(bench.process)) == ["box 1/page one.jpg"]


def test_the_bare_bucket_variables_of_the_original_system(
    s3_server: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bench = s3_bench(tmp_path, s3_server)
    bench.setenv(monkeypatch, RBSC_BUCKET="rbsc-scans")
    monkeypatch.delenv("PTIF_PROCESS")
    monkeypatch.delenv("PTIF_SOURCE")
    monkeypatch.setenv("PROCESS_BUCKET", bench.urls["process"].removeprefix("s3://"))

    assert aws.handler(event("s3-put"), CONTEXT) == {"marked": 1}
    assert list(markers(bench.process)) == ["scans/box 1/page one.jpg"]


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
    assert len(lines) == 8
    for line in lines:
        assert {"key", "etag", "bucket", "outcome", "request_id"} <= set(line), line
        assert line["request_id"] == "req-123"
        assert line["bucket"] == "rbsc-scans"
    marked = {line["key"] for line in lines if line["outcome"] == "marked"}
    assert "c++/plus+sign.tif" in marked
    assert len(list((process / "rbsc").rglob("*.json"))) == 5


def _variant(payload: dict[str, Any], *, sequencer: str, etag: str = "") -> dict[str, Any]:
    copy = json.loads(json.dumps(payload))
    s3_object(copy).update(sequencer=sequencer, **({"eTag": etag} if etag else {}))
    return copy


def _fail_writes_of(env: Bench, monkeypatch: pytest.MonkeyPatch, needle: str) -> None:
    extensions = (".jpg", ".tif", ".tiff", ".png")
    intake = Intake(FailingStore(env.process, needle), "rbsc/", extensions, SourceScope())
    monkeypatch.setattr(aws, "current_intake", lambda settings=None: intake)
