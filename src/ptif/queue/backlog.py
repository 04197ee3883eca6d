"""The queue's backlog as CloudWatch figures: how many markers wait and how old the oldest is.

The scaling of an elastic deployment (``maxTasks`` above 1) and its dashboard read these figures,
which a small scheduled Lambda function (:func:`ptif.aws.backlog_handler`) publishes every minute
whether or not a worker runs. Measuring is one streaming listing of the queue prefix and nothing
else: no marker is read, so a minute's measure costs one LIST request per thousand markers.

A listing has a deadline (the Lambda function's remaining time, less a margin). S3 lists a
thousand keys per request, in a tenth of a second or so, so a minute lists some hundreds of
thousands of markers. A queue too long to list in time (a million-marker backfill) is reported
as what was counted by the deadline, with ``complete`` false: both figures are then lower bounds,
which is all scaling needs (such a backlog is far past what ``maxTasks`` tasks take on anyway),
and the cost of a measure stays bounded at one function-minute and a few hundred LIST requests.

Pending markers include those a worker holds (a marker is deleted when its pyramid is published),
so the backlog falls to zero only when the last image is done.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ptif.stores.base import Store

#: CloudWatch names of the figures, shared with infra/'s scaling, alarms and dashboard.
PENDING_METRIC = "PendingMarkers"
OLDEST_METRIC = "OldestPendingAgeSeconds"
COMPLETE_METRIC = "BacklogListingComplete"
NAMESPACE = "ptif"


@dataclass(frozen=True)
class Backlog:
    pending: int
    oldest_pending_age_s: float
    #: False when the listing stopped at its deadline: the figures are then lower bounds.
    complete: bool


def measure_backlog(
    process: Store,
    queue_prefix: str,
    *,
    deadline: float | None = None,
    clock: Callable[[], float] = time.monotonic,
    now: datetime | None = None,
) -> Backlog:
    """Count the markers under ``queue_prefix`` and find the oldest, stopping when ``clock()``
    passes ``deadline``."""
    now = now or datetime.now(UTC)
    pending, oldest = 0, None
    for info in process.list(queue_prefix):
        if deadline is not None and clock() > deadline:
            return Backlog(pending, _age(now, oldest), complete=False)
        if not info.key.endswith(".json"):
            continue
        pending += 1
        if oldest is None or info.modified < oldest:
            oldest = info.modified
    return Backlog(pending, _age(now, oldest), complete=True)


def _age(now: datetime, oldest: datetime | None) -> float:
    return 0.0 if oldest is None else max(0.0, (now - oldest).total_seconds())


def metric_data(
    backlog: Backlog, dimensions: Mapping[str, str], when: datetime | None = None
) -> list[dict[str, Any]]:
    """The ``MetricData`` of one CloudWatch ``PutMetricData`` call for ``backlog``."""
    when = when or datetime.now(UTC)
    named = [{"Name": name, "Value": value} for name, value in sorted(dimensions.items())]
    figures = (
        (PENDING_METRIC, float(backlog.pending), "Count"),
        (OLDEST_METRIC, round(backlog.oldest_pending_age_s, 3), "Seconds"),
        (COMPLETE_METRIC, 1.0 if backlog.complete else 0.0, "None"),
    )
    return [
        {"MetricName": name, "Dimensions": named, "Timestamp": when, "Value": value, "Unit": unit}
        for name, value, unit in figures
    ]


def parse_dimensions(text: str) -> dict[str, str]:
    """``"Stack=ptif,Queue=rbsc/"`` → ``{"Stack": "ptif", "Queue": "rbsc/"}``."""
    dimensions = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, equals, value = part.partition("=")
        if not equals or not name.strip() or not value.strip():
            raise ValueError(f"{part!r} is not Name=value")
        dimensions[name.strip()] = value.strip()
    return dimensions


def publish(client: Any, backlog: Backlog, namespace: str, dimensions: Mapping[str, str]) -> None:
    """One ``PutMetricData`` call with the backlog's figures (``client``: boto3's CloudWatch)."""
    client.put_metric_data(Namespace=namespace, MetricData=metric_data(backlog, dimensions))
