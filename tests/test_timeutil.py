"""The one way ptif writes and reads times: markers, failure records, reports and the watch
cursor hold these exact strings, so the formats are pinned here byte for byte."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from ptif.timeutil import format_time, parse_time

MOMENT = datetime(2026, 3, 2, 10, 15, 30, 123000, tzinfo=UTC)


@pytest.mark.parametrize(
    ("moment", "timespec", "text"),
    [
        (MOMENT, "auto", "2026-03-02T10:15:30.123000Z"),  # eventTime, the watch cursor
        (MOMENT, "seconds", "2026-03-02T10:15:30Z"),  # failedAt, reports
        (MOMENT.replace(microsecond=0), "auto", "2026-03-02T10:15:30Z"),
        (MOMENT.astimezone(timezone(timedelta(hours=2))), "seconds", "2026-03-02T10:15:30Z"),
        (MOMENT.replace(tzinfo=None), "seconds", "2026-03-02T10:15:30Z"),  # no zone: UTC
    ],
)
def test_times_are_written_in_utc_with_z(moment: datetime, timespec: str, text: str) -> None:
    assert format_time(moment, timespec) == text


@pytest.mark.parametrize(
    "text",
    [
        "2026-03-02T10:15:30.123Z",  # S3 events
        "2026-03-02T10:15:30.123000Z",
        "2026-03-02T12:15:30.123+02:00",
        "2026-03-02T10:15:30.123",  # no zone: UTC
    ],
)
def test_times_read_back_as_the_same_moment(text: str) -> None:
    moment = parse_time(text)
    assert moment == MOMENT and moment.tzinfo is not None
    assert parse_time(format_time(moment)) == moment


@pytest.mark.parametrize("text", ["", "not a time", "2026-13-02T10:15:30Z"])
def test_what_is_not_a_time_raises_value_error(text: str) -> None:
    with pytest.raises(ValueError):
        parse_time(text)
