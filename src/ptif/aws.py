"""The AWS Lambda entry point, ``ptif.aws.handler``: S3 notifications in, markers out.

It takes S3 notifications delivered directly, through SNS, through SQS or from EventBridge, one
or many records at a time, and adapts and nothing more: :func:`ptif.intake.events.read_records`
reads each record on its own and :meth:`ptif.intake.enqueue.Intake.accept_record` queues it,
so a record that cannot be read or queued never costs another record its marker. This module
turns the results into Lambda's answer:

- **Under SQS** (an event source mapping with ``ReportBatchItemFailures``) the answer is
  ``{"batchItemFailures": [{"itemIdentifier": messageId}, ...]}``, listing exactly the messages
  with at least one failed record; SQS deletes the others and redelivers those. That includes a
  message whose record will never parse, not only one the store refused. Retrying it is useless,
  but dropping it would leave one log line as its only trace; reported, it comes back
  ``maxReceiveCount`` times (its good records are rewritten harmlessly: marker writes are
  idempotent) and then lands, whole, in the queue's dead-letter queue, where an alarm sees it,
  an operator can read it and a redrive replays it once fixed, as AWS recommends.
- **Invoked directly** (S3, SNS, EventBridge: asynchronous invocations) every good record is
  queued first; then, if any record failed, the invocation raises one :class:`IntakeFailed`
  that names each failed record's key (or place) and reason. Lambda retries the whole event
  (the good records' markers are rewritten idempotently) and then hands it to the function's
  on-failure destination or dead-letter queue. The same choice as under SQS, for the same reason.
- Logs are JSON lines on stderr with stable keys: one per record (``key``, ``etag``,
  ``bucket``, ``outcome``), one per failed record (``key``, ``where``, ``code``, ``reason``,
  ``messageId`` under SQS, and ``record``: the unreadable record, shortened), and a summary per
  invocation (``outcome`` ``summary``, ``counts``); every line carries ``aws_request_id`` (and
  ``request_id``, its older name). Events hold no image bytes and no credentials; an SQS
  message's ``receiptHandle`` is left out. Logging is configured here on the first call and
  nowhere in the library.
- The process store is opened once per container and reused while the settings are the same.

It never imports pyvips: the function stays small and starts fast.

:func:`backlog_handler` is the second entry point, for a scheduled function of an elastic
deployment: it counts the queue (:mod:`ptif.queue.backlog`) and puts the figures in CloudWatch,
where ECS's scaling and the dashboard read them.
"""

from __future__ import annotations

import contextvars
import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from ptif.config import (
    METRICS_DIMENSIONS_VARIABLE,
    METRICS_NAMESPACE_VARIABLE,
    Settings,
    load_settings,
)
from ptif.errors import ConfigError, PtifError
from ptif.intake.enqueue import Intake, Outcome, RecordResult
from ptif.intake.events import BadRecord, is_sqs, read_records, sqs_messages
from ptif.intake.scope import SourceScope
from ptif.queue.backlog import NAMESPACE, Backlog, measure_backlog, parse_dimensions, publish
from ptif.stores import open_store
from ptif.stores.base import Store

log = logging.getLogger("ptif.aws")

_request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")
_intakes: dict[tuple[Any, ...], Intake] = {}
_process_stores: dict[tuple[Any, ...], Store] = {}
_cloudwatch: list[Any] = []
_lock = threading.Lock()
_logging_ready = False
#: How many failed records the error of a direct invocation names (the log has them all).
NAMED_FAILURES = 10
#: Seconds of the backlog function's time kept for publishing after its listing stops.
PUBLISH_MARGIN_S = 10.0


class IntakeFailed(PtifError):
    """Some records of an event could not be queued (the others were); Lambda should retry the
    event. ``failures`` holds the failed records' results."""

    def __init__(self, failures: list[RecordResult], total: int) -> None:
        named = "; ".join(_describe(result) for result in failures[:NAMED_FAILURES])
        more = len(failures) - NAMED_FAILURES
        super().__init__(
            f"{len(failures)} of {total} record(s) could not be queued (the others were): "
            f"{named}{f'; and {more} more (see the log)' if more > 0 else ''}",
            code=failures[0].code,
        )
        self.failures = failures


def handler(event: Mapping[str, Any], context: Any = None) -> dict[str, Any]:
    """Queue the images an S3 notification announces; see the module's description."""
    _configure_logging()
    _request_id.set(str(getattr(context, "aws_request_id", "") or ""))
    intake = current_intake()
    if is_sqs(event):
        return _sqs_batch(intake, event)
    results = [_logged(intake.accept_record(item)) for item in read_records(event)]
    _summarise(results)
    failures = [result for result in results if result.failed]
    if failures:
        cause = next((f.error for f in failures if f.error is not None), None)
        raise IntakeFailed(failures, len(results)) from cause
    return dict(Counter(str(result.outcome) for result in results))


def backlog_handler(event: Mapping[str, Any], context: Any = None) -> dict[str, Any]:
    """Count the queue and put the backlog's figures in CloudWatch (a scheduled event: its
    content is not read). The listing stops :data:`PUBLISH_MARGIN_S` before the function's
    time is up; the figures are then lower bounds, published with ``BacklogListingComplete`` 0."""
    _configure_logging()
    _request_id.set(str(getattr(context, "aws_request_id", "") or ""))
    settings = load_settings()
    namespace, dimensions = metrics_target()
    backlog = measure_backlog(
        process_store(settings), settings.queue_prefix, deadline=_deadline(context)
    )
    publish(_cloudwatch_client(), backlog, namespace, dimensions)
    _log_backlog(backlog)
    return {
        "pending": backlog.pending,
        "oldest_pending_age_s": backlog.oldest_pending_age_s,
        "complete": backlog.complete,
    }


def metrics_target(environ: Mapping[str, str] | None = None) -> tuple[str, dict[str, str]]:
    """The namespace and dimensions the backlog goes to, from the environment."""
    environ = os.environ if environ is None else environ
    namespace = environ.get(METRICS_NAMESPACE_VARIABLE, "").strip() or NAMESPACE
    text = environ.get(METRICS_DIMENSIONS_VARIABLE, "")
    try:
        return namespace, parse_dimensions(text)
    except ValueError as error:
        raise ConfigError(
            f"{METRICS_DIMENSIONS_VARIABLE}={text!r}: {error}; give Name=value pairs separated "
            "by commas, such as Stack=ptif,Queue=rbsc/"
        ) from None


def process_store(settings: Settings) -> Store:
    """The process store of these settings, opened once per container."""
    cache_key = (settings.process, settings.endpoint_url)
    with _lock:
        store = _process_stores.get(cache_key)
        if store is None:
            store = open_store(settings.process, endpoint_url=settings.endpoint_url)
            _process_stores[cache_key] = store
        return store


def _deadline(context: Any) -> float | None:
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    if remaining is None:
        return None
    return time.monotonic() + float(remaining()) / 1000 - PUBLISH_MARGIN_S


def _cloudwatch_client() -> Any:
    with _lock:
        if not _cloudwatch:
            import boto3

            _cloudwatch.append(boto3.client("cloudwatch"))
        return _cloudwatch[0]


def _log_backlog(backlog: Backlog) -> None:
    bound = "" if backlog.complete else "at least "
    log.log(
        logging.INFO if backlog.complete else logging.WARNING,
        "backlog: %s%d marker(s), the oldest %.0f s old%s",
        bound,
        backlog.pending,
        backlog.oldest_pending_age_s,
        "" if backlog.complete else " (the listing stopped at its deadline)",
        extra={"outcome": "backlog", "counts": {"pending": backlog.pending}},
    )


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


def _sqs_batch(intake: Intake, event: Mapping[str, Any]) -> dict[str, Any]:
    """Each message on its own; those with a failed record are reported for redelivery."""
    failures: list[dict[str, str]] = []
    every: list[RecordResult] = []
    messages = 0
    for message_id, body in sqs_messages(event):
        messages += 1
        results = [
            _logged(intake.accept_record(item), message_id) for item in read_records(body, "body")
        ]
        every += results
        if any(result.failed for result in results):
            failures.append({"itemIdentifier": message_id})
    _summarise(every, messages=messages, redelivered=len(failures))
    return {"batchItemFailures": failures}


def _logged(result: RecordResult, message_id: str | None = None) -> RecordResult:
    """Log one record's result, as a JSON line with stable keys."""
    item = result.item
    if result.failed or isinstance(item, BadRecord):
        _log_failure(result, message_id)
        return result
    extra = {"key": item.key, "etag": item.etag, "bucket": item.bucket, "outcome": result.outcome}
    if message_id is not None:
        extra["messageId"] = message_id
    level = logging.WARNING if result.outcome is Outcome.OUTSIDE else logging.INFO
    log.log(level, "%s: %s (%s)", item.key, result.outcome, item.name, extra=extra)
    return result


def _log_failure(result: RecordResult, message_id: str | None) -> None:
    extra: dict[str, Any] = {
        "key": result.key,
        "where": result.where,
        "outcome": "failed",
        "code": result.code,
        "reason": result.reason,
    }
    if message_id is not None:
        extra["messageId"] = message_id
    if isinstance(result.item, BadRecord):
        extra["record"] = result.item.excerpt()
    unexpected = result.error is not None and not isinstance(result.error, PtifError)
    then = (
        "another attempt may succeed"
        if result.retryable
        else "no attempt will succeed: after its retries it goes to the dead-letter queue"
    )
    log.error(
        "%s: could not queue (%s): %s; %s",
        _name(result),
        result.code,
        result.reason,
        then,
        exc_info=result.error if unexpected else None,
        extra=extra,
    )


def _summarise(results: Iterable[RecordResult], **counts: int) -> None:
    tally = Counter("failed" if r.failed else str(r.outcome) for r in results)
    summary = {"records": tally.total(), **tally, **counts}
    failed = tally["failed"]
    level = logging.ERROR if failed else logging.INFO
    text = ", ".join(f"{n} {what}" for what, n in summary.items())
    log.log(level, "invocation: %s", text, extra={"outcome": "summary", "counts": summary})


def _describe(result: RecordResult) -> str:
    where = f"{result.where} " if result.where and result.key else ""
    return f"{where}{_name(result)}: {result.code}: {result.reason}"


def _name(result: RecordResult) -> str:
    """How an operator finds the record: its key, else its place in the event."""
    return repr(result.key) if result.key else result.where or "the event"


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = record.aws_request_id = _request_id.get()
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
