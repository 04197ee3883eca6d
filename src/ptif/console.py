"""What a person or a log collector sees on stderr: a progress bar on a terminal, JSON lines
elsewhere (CloudWatch, Kubernetes, cron mail), with stable keys: key, outcome, code, run_id,
seconds, bytes. Library modules only log; this module decides how it looks.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections import Counter
from types import TracebackType

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without loading typing on every run
if TYPE_CHECKING:
    from typing import Any

    from ptif.queue.reports import ItemResult

ITEM_LOGGER = "ptif.items"
_EXTRA_KEYS = (
    "key",
    "outcome",
    "code",
    "run_id",
    "seconds",
    "bytes_in",
    "bytes_out",
    "etag",
    "bucket",
    "request_id",
    "aws_request_id",
    "messageId",
    "where",
    "reason",
    "record",
    "counts",
)


def printable(text: str) -> str:
    """``text`` with every character a terminal would act on escaped (``\\x1b``), spaces and
    letters of any script kept: how keys are listed, one a line."""
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text)


class TextFormatter(logging.Formatter):
    """Plain log lines, for a terminal: what a message quotes (keys are anyone's choice) is
    escaped as :func:`printable` does, line breaks (a traceback's) kept."""

    def format(self, record: logging.LogRecord) -> str:
        return "\n".join(printable(line) for line in super().format(record).split("\n"))


def json_text(value: Any, indent: int | None = None) -> str:
    """``value`` as JSON that a terminal shows as it is: letters of every script kept, and each
    character a terminal acts on (C1 controls, bidirectional overrides, line separators) written
    as a ``\\uXXXX`` escape, which every JSON reader reads back as the same character. Keys are
    anyone's choice, and ``--json`` output is read on terminals too."""
    import json  # only JSON needs it; a one-shot convert starts faster without it

    text = json.dumps(value, ensure_ascii=False, indent=indent)
    if text.isascii() and "\x7f" not in text:  # JSON escapes every other ASCII control
        return text
    return "".join(c if c.isprintable() or c == "\n" else json.dumps(c)[1:-1] for c in text)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:

        body: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(record.created)),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        body.update({k: getattr(record, k) for k in _EXTRA_KEYS if hasattr(record, k)})
        if record.exc_info:
            body["exception"] = self.formatException(record.exc_info)
        return json_text(body)


def configure_logging(verbose: int, quiet: bool, *, json_lines: bool) -> None:
    level = (
        logging.ERROR if quiet else (logging.WARNING, logging.INFO, logging.DEBUG)[min(verbose, 2)]
    )
    handler = logging.StreamHandler(sys.stderr)
    if json_lines:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter("ptif: %(levelname)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # libvips reports each bad tile as a warning; the error that follows already says it all.
    logging.getLogger("pyvips").setLevel(logging.DEBUG if verbose >= 2 else logging.ERROR)
    logging.getLogger("botocore").setLevel(logging.WARNING if verbose < 2 else logging.DEBUG)
    logging.getLogger(ITEM_LOGGER).setLevel(logging.ERROR if quiet else logging.INFO)


def wants_json(requested: bool) -> bool:
    """JSON lines when asked, or when stderr is not a terminal (a log collector reads it)."""
    return requested or not sys.stderr.isatty()


class ItemProgress:
    """Shows items as they finish: a live bar on a terminal, one JSON line each otherwise.

    The bar counts done/total and estimates the time left once the worker knows how many
    markers it listed (:meth:`listed`); until then it shows ``n/?``. ``console`` and ``clock``
    are for tests: a forced terminal and a clock they move.
    """

    def __init__(
        self, *, bar: bool, run_id: str = "", console: Any = None, clock: Any = None
    ) -> None:
        self.run_id = run_id
        self._counts: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._bar: Any = None
        self._task: Any = None
        self._total: int | None = None
        if bar:
            self._bar = _progress_bar(console, clock)

    def __enter__(self) -> ItemProgress:
        if self._bar is not None:
            self._bar.start()
            self._task = self._bar.add_task("", total=None)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._bar is not None:
            self._bar.stop()

    def listed(self, change: int) -> None:
        """The worker listed ``change`` more markers (or, negative, found some not its own)."""
        with self._lock:
            self._total = max(0, (self._total or 0) + change)
            total = self._total
        if self._bar is not None:
            self._bar.update(self._task, total=total)

    def __call__(self, item: ItemResult) -> None:
        with self._lock:
            self._counts[item.outcome.value] += 1
            description = self._describe()
        if self._bar is not None:
            self._bar.update(self._task, advance=1, description=description)
        else:
            self._log(item)

    def _describe(self) -> str:
        from ptif.queue.reports import Outcome

        order = [o.value for o in Outcome]
        return "  ".join(f"{self._counts[name]} {name}" for name in order if self._counts[name])

    def _log(self, item: ItemResult) -> None:
        from ptif.queue.reports import UNFINISHED

        level = logging.WARNING if item.outcome in UNFINISHED else logging.INFO
        key = item.source_key or item.marker_key
        text = f"{item.outcome.value} ({item.code}): {item.message}" if item.code else None
        logging.getLogger(ITEM_LOGGER).log(
            level,
            "%s",
            text or f"{item.outcome.value}: {key}",
            extra={
                "key": key,
                "outcome": item.outcome.value,
                "code": item.code,
                "run_id": self.run_id,
                "seconds": round(item.seconds, 3),
                "bytes_in": item.bytes_in,
                "bytes_out": item.bytes_out,
            },
        )


def _progress_bar(console: Any, clock: Any) -> Any:
    """done/total, the outcomes so far, time spent and, once the total is known, time left."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    extra: dict[str, Any] = {"console": console} if console is not None else {}
    if clock is not None:
        extra["get_time"] = clock
    return Progress(
        TextColumn("[bold]ptif process"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        transient=False,
        **extra,
    )
