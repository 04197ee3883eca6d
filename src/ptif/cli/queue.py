"""The queue commands of the ``ptif`` command line: process, mark, status, retry.

Each parses its flags into :class:`~ptif.config.Settings` (flag, then environment, then
``ptif.toml``, then defaults), opens the stores and calls the library.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
from typing import Any

from ptif.cli.common import (
    add_extension_options,
    add_recipe_options,
    add_recipe_settings,
    add_store_options,
    int_range,
    number_range,
    open_stores,
    settings_from,
    stop_on_signals,
)
from ptif.cli.main import one_line
from ptif.console import json_text, printable
from ptif.convert.cores import available
from ptif.errors import CODES

# Only the parsers are built at import; everything else loads inside the command that needs it,
# so that `ptif convert` does not pay for the queue's modules.

#: ECS gives a stopping task 30 s by default before SIGKILL; finish or release before that.
#: ``PTIF_STOP_GRACE_SECONDS`` changes it (a task with a longer stop timeout can wait longer).
STOP_GRACE_SECONDS = 25.0


def add_process(commands: Any, formatter: type[argparse.HelpFormatter]) -> None:
    parser = commands.add_parser(
        "process",
        formatter_class=formatter,
        help="one batch run over the queue (the scheduled job)",
        description="Convert every queued image: claim its marker, fetch the source, convert,\n"
        "verify, upload the pyramid, then delete the marker. Any number of these may run\n"
        "at once, on any number of machines. Prints a summary on stderr and writes a run\n"
        "report to the process store's reports/.",
        epilog="exit codes: 0 all done; 1 some images failed or wait for a retry;\n"
        "            2 bad usage; 3 a store could not be reached",
    )
    add_store_options(parser)
    parser.add_argument(
        "--workers",
        type=int_range(1),
        metavar="N",
        help=f"parallel conversions (default: the cores ptif may use, {available()})",
    )
    parser.add_argument(
        "--images-mode",
        metavar="MODE",
        help="a folder images store: give pyramids exactly this mode, e.g. 0644 or 0640, "
        "whatever the umask (PTIF_IMAGES_MODE; default 0666 less the umask)",
    )
    _add_run_scope(parser)
    _add_follow_options(parser)
    parser.add_argument(
        "--json",
        action="store_true",
        help="JSON log lines and a JSON report on stdout, even on a terminal",
    )
    add_recipe_options(parser)
    parser.add_argument(
        "--all-pages",
        action="store_true",
        default=None,
        help="one pyramid per page of a PDF or multi-page TIFF: page 1 at the output key, "
        "page N beside it as NAME-pN.tif (the all_pages setting). Without it, page 1 only, "
        "and the run report and 'ptif status' name the sources whose pages were left out",
    )
    parser.set_defaults(handler=run_process, json_logs=True)


def _add_run_scope(parser: argparse.ArgumentParser) -> None:
    """Which markers a run takes: by source prefix, how many, how old."""
    parser.add_argument("--prefix", default="", help="only sources whose key starts with this")
    parser.add_argument("--limit", type=int_range(0), metavar="N", help="take at most N markers")
    parser.add_argument(
        "--min-age",
        type=number_range(0),
        metavar="SECONDS",
        help="skip markers younger than this (files still being written)",
    )


def _add_follow_options(parser: argparse.ArgumentParser) -> None:
    """An always-on worker: keep polling the queue, and how often."""
    parser.add_argument(
        "--follow",
        action="store_true",
        help="keep polling for new markers until stopped (SIGTERM, Ctrl-C)",
    )
    parser.add_argument(
        "--poll",
        type=number_range(0, above=True),
        default=4.0,
        metavar="SECONDS",
        help="pause between polls with --follow (default 4: a new marker waits at most that "
        "long; an idle worker then makes one LIST request per pause, about $3 a month on S3)",
    )


def run_process(args: argparse.Namespace) -> int:
    from ptif.cli.preflight import check_conversion
    from ptif.config import stop_grace_seconds
    from ptif.console import ItemProgress, configure_logging, wants_json
    from ptif.queue.health import StoreLost
    from ptif.queue.protection import Protection
    from ptif.queue.worker import RunOptions, Worker

    json_lines = wants_json(args.json)
    configure_logging(args.verbose, args.quiet, json_lines=json_lines)
    settings = settings_from(
        args, workers=args.workers, min_age=args.min_age, images_mode=args.images_mode
    )
    grace = stop_grace_seconds(STOP_GRACE_SECONDS)
    check_conversion(settings)
    stores = open_stores(settings, args)
    options = RunOptions(
        prefix=args.prefix,
        limit=args.limit,
        min_age=settings.min_age,
        follow=args.follow,
        poll_seconds=args.poll,
    )
    progress = ItemProgress(bar=not json_lines and not args.quiet)
    worker = Worker(settings, stores, on_item=progress, on_listed=progress.listed)
    progress.run_id = worker.run_id
    _stop_on_signals(worker, grace)
    # On ECS, a following worker keeps its task from being scaled in while it holds claims.
    protection = Protection.from_environment(worker.holding) if args.follow else None
    if protection:
        worker.on_claim = protection.poke
        protection.start()
    try:
        with progress:
            report = worker.run(options, on_pass=_emit_metrics)
    except StoreLost as lost:
        # One line (main prints it) and exit 3; with --json, the report of what was done.
        if args.json and lost.report is not None:
            print(json_text(lost.report.to_dict()))
        raise
    finally:
        if protection:
            protection.stop()
    return _finish(report, args)


def _emit_metrics(report: Any) -> None:
    """In AWS, one CloudWatch embedded-metric line per pass (a --follow worker too)."""
    from ptif.config import in_aws

    if in_aws():
        print(report.emf(), flush=True)


def _finish(report: Any, args: argparse.Namespace) -> int:
    if args.json:
        print(json_text(report.to_dict()))
    if not args.quiet:
        print(f"ptif process: {report.summary()}", file=sys.stderr)
    for problem in report.failures[:20]:  # -q hides the rest, never these
        print(f"  {problem['code']}: {one_line(problem['message'])}", file=sys.stderr)
    if len(report.failures) > 20:
        print(f"  ... and {len(report.failures) - 20} more: ptif status --failed", file=sys.stderr)
    return 1 if report.unfinished else 0


def _stop_on_signals(worker: Any, grace: float) -> None:
    """SIGTERM or Ctrl-C: finish what is in hand; after ``grace`` seconds, release and leave."""

    def stop(name: str) -> None:
        if worker.stopping:
            _abandon(worker)
        print(f"ptif: stopping ({name}); finishing work in hand", file=sys.stderr)
        worker.stop()
        timer = threading.Timer(grace, _abandon, args=(worker,))
        timer.daemon = True
        timer.start()

    stop_on_signals(stop)


def _abandon(worker: Any) -> None:
    released = worker.abandon()
    print(f"ptif: released {released} unfinished image(s) for another worker", file=sys.stderr)
    os._exit(1)


# mark ------------------------------------------------------------------------------------------


def add_mark(commands: Any, formatter: type[argparse.HelpFormatter]) -> None:
    parser = commands.add_parser(
        "mark",
        formatter_class=formatter,
        help="queue existing sources (the rerun utility)",
        description="Queue existing sources for conversion: lists the source store under each\n"
        "--prefix and writes a marker for every image (dot-files and folder placeholders\n"
        "are skipped). Markers already queued are kept as they are.",
        epilog="examples:\n  ptif mark --prefix 'maps/' --dry-run\n"
        "  ptif mark --stale               # after a settings change",
    )
    add_store_options(parser)
    parser.add_argument(
        "--prefix",
        action="append",
        default=[],
        metavar="PREFIX",
        help="only keys starting with this (repeatable; default: all)",
    )
    add_extension_options(parser, "mark")
    parser.add_argument("--dry-run", action="store_true", help="print what would be marked")
    parser.add_argument(
        "--stale",
        action="store_true",
        help="only sources whose output is missing or made from another "
        "eTag or with other settings",
    )
    add_recipe_settings(parser)  # what --stale compares against: what `ptif process` makes
    parser.add_argument(
        "--json", action="store_true", help="print the counts and the keys marked as JSON"
    )
    parser.set_defaults(handler=run_mark)


def run_mark(args: argparse.Namespace) -> int:
    from ptif.console import configure_logging
    from ptif.intake.mark import MarkOptions, mark

    configure_logging(args.verbose, args.quiet, json_lines=False)
    settings = settings_from(args)
    stores = open_stores(settings, args)
    options = MarkOptions(
        prefixes=tuple(args.prefix) or ("",),
        extensions=settings.extension_list(),
        dry_run=args.dry_run,
        stale=args.stale,
    )
    show = _line_printer() if args.dry_run and not args.json else None
    report = mark(
        stores.source,
        stores.process,
        stores.images,
        queue_prefix=settings.queue_prefix,
        profile=settings.conversion_profile(),
        options=options,
        on_marked=show,
    )
    counts = report.to_dict()
    if args.json:
        print(json.dumps(counts))
    elif not args.quiet:
        verb = "would mark" if args.dry_run else "marked"
        print(
            f"ptif mark: {verb} {counts['marked']} of {counts['listed']} listed "
            f"({counts['already_queued']} already queued, {counts['up_to_date']} up to date, "
            f"{counts['ignored']} not images)",
            file=sys.stderr,
        )
    return 0


def _line_printer() -> Any:
    """Print keys whole from many threads at once."""
    lock = threading.Lock()

    def show(key: str) -> None:
        with lock:
            print(printable(key), flush=True)

    return show


# status and retry ------------------------------------------------------------------------------


def add_status(commands: Any, formatter: type[argparse.HelpFormatter]) -> None:
    parser = commands.add_parser(
        "status",
        formatter_class=formatter,
        help="pending, claimed and failed counts",
        description="Count the queue: pending markers (and the oldest one's age, and how many\n"
        "wait to be tried again after a transient error), live claims, and failure records\n"
        "by code. A failure record whose key has a marker for another version queued (a new\n"
        "upload since) describes the past: it is counted as superseded, not failed. With\n"
        "--failed, the failure records themselves.",
        epilog="examples:\n  ptif status --failed                  # key, code, attempts, when\n"
        "  ptif status --failed --prefix maps/ --json",
    )
    add_store_options(parser)
    parser.add_argument(
        "--failed",
        action="store_true",
        help="list the failure records: when, code, attempts, key and message (one a line)",
    )
    parser.add_argument(
        "--prefix", default="", help="with --failed: only sources whose key starts with this"
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print the counts as JSON (with --failed: a JSON list of the records)",
    )
    parser.set_defaults(handler=run_status)


def run_status(args: argparse.Namespace) -> int:
    from ptif.cli.preflight import open_checked
    from ptif.queue.status import status

    settings = settings_from(args)
    process = open_checked(settings, ("process",), existing=("process",))["process"]
    if args.failed:
        return _list_failures(process, args)
    result = status(process, settings.queue_prefix).to_dict()
    if args.json:
        print(json.dumps(result))
        return 0
    age = result["oldest_pending_age_s"]
    print(f"pending  {result['pending']}" + (f"  (oldest {_age(age)})" if age is not None else ""))
    if result["retrying"]:
        print(f"  {'waiting to retry':<20} {result['retrying']}")
    print(f"claimed  {result['claimed']}")
    print(f"failed   {result['failed']}")
    for code, count in result["failed_by_code"].items():
        print(f"  {code:<20} {count}")
    if result["superseded"]:
        print(f"  {'superseded':<20} {result['superseded']}  (a newer version is queued)")
    _print_left_out(result["pages_left_out"])
    return 0


#: How many sources with pages left out ``ptif status`` names; --json lists them all.
SHOWN_LEFT_OUT = 10


def _print_left_out(left_out: dict[str, Any]) -> None:
    if not left_out["sources"]:
        return
    print(
        f"pages left out  {left_out['pages']} of {left_out['sources']} multi-page source(s) "
        "(all_pages is off; see --help of ptif process)"
    )
    notes = sorted(left_out["list"], key=lambda note: note["key"])
    for note in notes[:SHOWN_LEFT_OUT]:
        print(printable(f"  {note['key']}: page 1 of {note['pages']} converted"))
    if len(notes) > SHOWN_LEFT_OUT:
        print(f"  ... and {len(notes) - SHOWN_LEFT_OUT} more (--json lists them all)")


def _list_failures(process: Any, args: argparse.Namespace) -> int:
    from ptif.queue.status import failure_list

    rows = failure_list(process, args.prefix)
    if args.json:
        print(json_text(list(rows)))
        return 0
    count = 0
    for row in rows:
        count += 1
        attempts = row["attempts"] if row["attempts"] is not None else "?"
        print(
            printable(
                f"{row['failed_at'] or '?':<20}  {row['code']:<18}  {attempts!s:>3}  "
                f"{row['key']}: {row['message']}"
            )
        )
    if not args.quiet:
        print(f"ptif status: {count} failure record(s); 'ptif retry' re-queues them",
              file=sys.stderr)  # fmt: skip
    return 0


def _age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.0f} s"


def add_retry(commands: Any, formatter: type[argparse.HelpFormatter]) -> None:
    parser = commands.add_parser(
        "retry",
        formatter_class=formatter,
        help="put failed images back in the queue",
        description="Move failure records back to the queue, with their attempts reset.",
        epilog="examples:\n  ptif retry --code pixel-budget   # after raising PTIF_MAX_PIXELS\n"
        "  ptif retry --prefix maps/",
    )
    add_store_options(parser)
    parser.add_argument(
        "--code",
        action="append",
        default=[],
        type=_failure_code,
        help="only failures with this code (repeatable); 'ptif status' shows them",
    )
    parser.add_argument("--prefix", default="", help="only sources whose key starts with this")
    parser.add_argument("--dry-run", action="store_true", help="print what would be re-queued")
    parser.add_argument(
        "--json", action="store_true", help="print the counts and the keys re-queued as JSON"
    )
    parser.set_defaults(handler=run_retry)


def _failure_code(text: str) -> str:
    if text not in CODES:
        raise argparse.ArgumentTypeError(
            f"unknown failure code {text!r}; the codes are {', '.join(CODES)}"
        )
    return text


def run_retry(args: argparse.Namespace) -> int:
    from ptif.cli.preflight import open_checked
    from ptif.queue.status import retry

    settings = settings_from(args)
    process = open_checked(settings, ("process",), existing=("process",))["process"]
    report = retry(
        process,
        settings.queue_prefix,
        codes=tuple(args.code),
        prefix=args.prefix,
        dry_run=args.dry_run,
    )
    if args.dry_run and not args.json:  # with --json, the keys are in the JSON
        for key in report.keys:
            print(printable(key))
    if args.json:
        print(json_text(report.to_dict()))
    elif not args.quiet:
        verb = "would re-queue" if args.dry_run else "re-queued"
        print(
            f"ptif retry: {verb} {report.requeued} ({report.skipped} not matching, "
            f"{report.not_retryable} unreadable records left)",
            file=sys.stderr,
        )
    return 0


COMMANDS = (add_process, add_mark, add_status, add_retry)
