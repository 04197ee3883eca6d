"""Times as ptif writes and reads them: ISO 8601 in UTC, with ``Z`` for the zone.

Markers (``eventTime``), failure records (``failedAt``), run and reconcile reports and the watch
cursor are read by other programs and by other versions of ptif, so every time in them is
written one way: ``2026-03-02T10:15:30.123000Z``, as S3 events write theirs (with ``seconds``:
``2026-03-02T10:15:30Z``). A time read or given without a zone is taken as UTC, as AWS means it.
Only :mod:`datetime` is imported here: the Lambda and the listing commands use this module.
"""

from __future__ import annotations

from datetime import UTC, datetime


def format_time(moment: datetime, timespec: str = "auto") -> str:
    """``moment`` in UTC as ISO 8601 with ``Z``; ``timespec`` as :meth:`datetime.isoformat`."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat(timespec=timespec).replace("+00:00", "Z")


def parse_time(text: str) -> datetime:
    """An ISO 8601 time (``Z`` or an offset, or none for UTC) as an aware datetime.

    Raises :class:`ValueError` if ``text`` is not one."""
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
