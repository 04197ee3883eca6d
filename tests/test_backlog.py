"""The backlog an elastic deployment scales on: counted from a real queue (folder and SeaweedFS),
published by ``ptif.aws.backlog_handler`` through a real botocore CloudWatch client whose
requests botocore's Stubber checks against the service model and answers."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import boto3
import pytest
from botocore.stub import ANY, Stubber
from store_helpers import QUEUE, Bench, folder_bench, put_source, queue

from ptif import aws
from ptif.errors import ConfigError
from ptif.queue.backlog import Backlog, measure_backlog, metric_data, publish
from ptif.queue.layout import CLAIMS_PREFIX, FAILED_PREFIX, marker_key
from ptif.stores.folder import FolderStore

DIMENSIONS = {"Stack": "ptif", "Queue": QUEUE}


@pytest.fixture(autouse=True)
def fresh_handler(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(aws, "_process_stores", {})
    monkeypatch.setattr(aws, "_logging_ready", True)
    yield


def fill(bench: Bench, count: int) -> list[str]:
    """``count`` queued images, and objects beside the queue that are not backlog."""
    keys = [f"scans/box {i % 3}/page {i}.jpg" for i in range(count)]
    for key in keys:
        put_source(bench.source, key)
        queue(bench, key)
    bench.process.put_bytes(f"{QUEUE}scans/notes.txt", b"not a marker")
    bench.process.put_bytes(f"{CLAIMS_PREFIX}scans/held.jpg.json", b"{}")
    bench.process.put_bytes(f"{FAILED_PREFIX}scans/bad.jpg.json", b"{}")
    return keys


def test_backlog_counts_every_marker_and_nothing_else(bench: Bench) -> None:
    fill(bench, 7)
    later = datetime.now(UTC) + timedelta(hours=2)

    backlog = measure_backlog(bench.process, QUEUE, now=later)

    assert backlog.pending == 7
    assert backlog.complete
    # The markers were written in the last minute; two hours later the oldest is that old.
    assert 7200 <= backlog.oldest_pending_age_s < 7200 + 120


def test_oldest_age_is_the_oldest_markers(tmp_path: Any) -> None:
    bench = folder_bench(tmp_path)
    keys = fill(bench, 3)
    assert isinstance(bench.process, FolderStore)
    path = bench.process.root.joinpath(*marker_key(keys[1], QUEUE).split("/"))
    old = path.stat().st_mtime - 5000
    os.utime(path, (old, old))

    backlog = measure_backlog(bench.process, QUEUE)

    assert 5000 <= backlog.oldest_pending_age_s < 5000 + 120


def test_an_empty_queue_is_zero_and_complete(bench: Bench) -> None:
    assert measure_backlog(bench.process, QUEUE) == Backlog(0, 0.0, complete=True)


def test_a_listing_past_its_deadline_reports_a_lower_bound(bench: Bench) -> None:
    fill(bench, 6)
    ticks = iter(range(100))

    backlog = measure_backlog(bench.process, QUEUE, deadline=3.5, clock=lambda: next(ticks))

    assert not backlog.complete
    assert backlog.pending == 4  # the objects seen at ticks 0..3, before the deadline passed
    assert backlog.oldest_pending_age_s > 0


def test_metric_data_names_each_figure_with_its_unit_and_dimensions() -> None:
    when = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)

    data = metric_data(Backlog(1234, 3600.25, complete=False), DIMENSIONS, when)

    dimensions = [{"Name": "Queue", "Value": QUEUE}, {"Name": "Stack", "Value": "ptif"}]
    assert data == [
        {
            "MetricName": "PendingMarkers",
            "Dimensions": dimensions,
            "Timestamp": when,
            "Value": 1234.0,
            "Unit": "Count",
        },
        {
            "MetricName": "OldestPendingAgeSeconds",
            "Dimensions": dimensions,
            "Timestamp": when,
            "Value": 3600.25,
            "Unit": "Seconds",
        },
        {
            "MetricName": "BacklogListingComplete",
            "Dimensions": dimensions,
            "Timestamp": when,
            "Value": 0.0,
            "Unit": "None",
        },
    ]


def cloudwatch() -> Any:
    return boto3.session.Session(
        aws_access_key_id="test", aws_secret_access_key="test", region_name="us-east-1"
    ).client("cloudwatch")


def expect_put(stubber: Stubber, pending: float, namespace: str = "ptif") -> None:
    def figure(name: str, value: Any, unit: str) -> dict[str, Any]:
        dimensions = [{"Name": "Queue", "Value": QUEUE}, {"Name": "Stack", "Value": "ptif"}]
        return {
            "MetricName": name,
            "Dimensions": dimensions,
            "Timestamp": ANY,
            "Value": value,
            "Unit": unit,
        }

    data = [
        figure("PendingMarkers", pending, "Count"),
        figure("OldestPendingAgeSeconds", ANY, "Seconds"),
        figure("BacklogListingComplete", 1.0, "None"),
    ]
    stubber.add_response("put_metric_data", {}, {"Namespace": namespace, "MetricData": data})


def test_publish_is_one_valid_put_metric_data_call() -> None:
    client = cloudwatch()
    with Stubber(client) as stubber:
        expect_put(stubber, 3.0)
        publish(client, Backlog(3, 12.0, complete=True), "ptif", DIMENSIONS)
        stubber.assert_no_pending_responses()


def test_handler_counts_the_queue_and_puts_the_figures(
    bench: Bench, monkeypatch: pytest.MonkeyPatch
) -> None:
    fill(bench, 5)
    bench.setenv(
        monkeypatch,
        PTIF_QUEUE_PREFIX=QUEUE,
        PTIF_METRICS_NAMESPACE="ptif",
        PTIF_METRICS_DIMENSIONS=f"Stack=ptif,Queue={QUEUE}",
    )
    client = cloudwatch()
    monkeypatch.setattr(aws, "_cloudwatch", [client])
    context = SimpleNamespace(aws_request_id="r-1", get_remaining_time_in_millis=lambda: 60_000)

    with Stubber(client) as stubber:
        expect_put(stubber, 5.0)
        result = aws.backlog_handler({"source": "aws.scheduler"}, context)
        stubber.assert_no_pending_responses()

    assert result["pending"] == 5 and result["complete"] is True


def test_handler_out_of_time_publishes_what_it_counted(
    bench: Bench, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A function given less time than the publishing margin lists nothing and says so."""
    fill(bench, 2)
    bench.setenv(monkeypatch, PTIF_QUEUE_PREFIX=QUEUE, PTIF_METRICS_DIMENSIONS="Stack=ptif")
    client = cloudwatch()
    monkeypatch.setattr(aws, "_cloudwatch", [client])
    context = SimpleNamespace(aws_request_id="r-2", get_remaining_time_in_millis=lambda: 1_000)

    with Stubber(client) as stubber:
        stubber.add_response("put_metric_data", {}, None)
        result = aws.backlog_handler({}, context)

    assert result == {"pending": 0, "oldest_pending_age_s": 0.0, "complete": False}


@pytest.mark.parametrize("text", ["Stack", "Stack=", "=ptif", "Stack=ptif,Queue"])
def test_bad_dimensions_are_refused_by_the_variables_name(text: str) -> None:
    with pytest.raises(ConfigError, match=r"PTIF_METRICS_DIMENSIONS=.*Name=value"):
        aws.metrics_target({"PTIF_METRICS_DIMENSIONS": text})


def test_dimensions_and_namespace_come_from_the_environment() -> None:
    environ = {"PTIF_METRICS_NAMESPACE": "archive", "PTIF_METRICS_DIMENSIONS": "Stack=a, Queue=q/"}
    assert aws.metrics_target(environ) == ("archive", {"Stack": "a", "Queue": "q/"})
    assert aws.metrics_target({}) == ("ptif", {})
