"""The AWS Lambda entry point, ``ptif.aws.handler``: S3 notifications in, markers out.

It takes S3 notifications delivered directly, through SNS, through SQS or from EventBridge, one
or many records at a time (:mod:`ptif.intake.events` reads them all), and queues each new image with
:class:`ptif.intake.Intake`. It adapts and nothing more:

- A store error raises, so that Lambda retries the event and then hands it to the function's
  dead-letter target. Under SQS each message stands alone: the handler answers
  ``{"batchItemFailures": [{"itemIdentifier": messageId}, ...]}`` and SQS redelivers only those
  (the event source mapping needs ``ReportBatchItemFailures``).
- Logs are JSON lines on stderr with stable keys (``key``, ``etag``, ``bucket``, ``outcome``,
  ``request_id``), configured here on the first call and nowhere in the library.
- The process store is opened once per container and reused while the settings are the same.

It never imports pyvips: the function stays small and starts fast.
"""

from __future__ import annotations

import contextvars
import logging
import threading
from collections import Counter
from collections.abc import Mapping
from typing import Any

from ptif.config import Settings, load_settings
from ptif.errors import PtifError
from ptif.intake.enqueue import Intake, Outcome
from ptif.intake.events import ObjectEvent, is_sqs, object_events, sqs_messages
from ptif.intake.scope import SourceScope
from ptif.stores import open_store

log = logging.getLogger("ptif.aws")

_request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")
_intakes: dict[tuple[Any, ...], Intake] = {}
_lock = threading.Lock()
_logging_ready = False


class IntakeFailed(PtifError):
    """Some records of an event could not be queued; Lambda should retry the event."""


def handler(event: Mapping[str, Any], context: Any = None) -> dict[str, Any]:
    """Queue the images an S3 notification announces; see the module's description."""
    _configure_logging()
    _request_id.set(str(getattr(context, "aws_request_id", "") or ""))
    intake = current_intake()
    if is_sqs(event):
        return {"batchItemFailures": _sqs_batch(intake, event)}
    counts: Counter[str] = Counter()
    errors = [error for ev in object_events(event) if (error := _accept(intake, ev, counts))]
    if errors:
        raise IntakeFailed(
            f"{len(errors)} record(s) could not be queued; first: {errors[0]}"
        ) from errors[0]
    return dict(counts)


def current_intake(settings: Settings | None = None) -> Intake:
    """The intake for these settings (from the environment by default), made once."""
    settings = settings or load_settings()
    cache_key = (
        settings.process,
        settings.endpoint_url,
        settings.queue_prefix,
        settings.extensions,
        settings.source,
    )
    with _lock:
        intake = _intakes.get(cache_key)
        if intake is None:
            intake = Intake(
                process=open_store(settings.process, endpoint_url=settings.endpoint_url),
                queue_prefix=settings.queue_prefix,
                extensions=settings.extension_list(),
                scope=SourceScope.from_url(settings.source),
            )
            _intakes[cache_key] = intake
        return intake


def _sqs_batch(intake: Intake, event: Mapping[str, Any]) -> list[dict[str, str]]:
    failures = []
    for message_id, body in sqs_messages(event):
        try:
            results = [_accept(intake, ev, Counter()) for ev in object_events(body)]
            failed = any(results)
        except Exception as error:  # reported to SQS, which redelivers the message
            log.error(
                "message %s: %s",
                message_id,
                error,
                exc_info=not isinstance(error, PtifError),
                extra={"outcome": "error"},
            )
            failed = True
        if failed:
            log.warning("message %s will be redelivered", message_id, extra={"outcome": "retry"})
            failures.append({"itemIdentifier": message_id})
    return failures


def _accept(intake: Intake, event: ObjectEvent, counts: Counter[str]) -> Exception | None:
    """Queue one event and log the outcome; return the error instead of raising it, so the
    other records of the event are still tried."""
    fields = {"key": event.key, "etag": event.etag, "bucket": event.bucket}
    try:
        outcome = intake.accept(event)
    except Exception as error:
        unexpected = not isinstance(error, PtifError)
        extra = {**fields, "outcome": "error"}
        log.error("%s: could not queue: %s", event.key, error, exc_info=unexpected, extra=extra)
        return error
    counts[outcome.value] += 1
    level = logging.WARNING if outcome is Outcome.OUTSIDE else logging.INFO
    extra = {**fields, "outcome": outcome.value}
    log.log(level, "%s: %s (%s)", event.key, outcome.value, event.name, extra=extra)
    return None


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = _request_id.get()
        return True


def _configure_logging() -> None:
    global _logging_ready
    if _logging_ready:
        return
    from ptif.console import configure_logging

    configure_logging(1, False, json_lines=True)
    for handler_ in logging.getLogger().handlers:
        handler_.addFilter(_RequestIdFilter())
    _logging_ready = True
