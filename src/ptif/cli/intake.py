"""The intake commands of the ``ptif`` command line: watch and reconcile.

Built like :mod:`ptif.cli.queue`: each parses its flags into :class:`~ptif.config.Settings`,
opens the stores and calls the library (:mod:`ptif.intake.watch`,
:mod:`ptif.intake.reconcile`). Only the parsers are built at import, so ``ptif convert`` does not
pay for these modules.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
from typing import TYPE_CHECKING, Any

from ptif.cli.common import (
    add_extension_options,
    add_recipe_settings,
    add_store_options,
    number_range,
    open_stores,
    settings_from,
    stop_on_signals,
)
from ptif.console import json_text, printable

if TYPE_CHECKING:
    from ptif.config import Settings
    from ptif.intake.watch import WatchOptions


def _add_common(parser: argparse.ArgumentParser) -> None:
    add_store_options(parser)
    add_extension_options(parser, "queue")
    # The settings that make an output current: the same as `ptif process` is given.
    add_recipe_settings(parser)
    parser.add_argument("--json", action="store_true", help="JSON log lines and a JSON report")


# watch -------------------------------------------------------------------------------------------


def add_watch(commands: Any, formatter: type[argparse.HelpFormatter]) -> None:
    parser = commands.add_parser(
        "watch",
        formatter_class=formatter,
        help="turn new uploads in a folder or bucket into markers",
        description="Watch the source store and queue each new image: a folder through file\n"
        "events (a file is queued once it has not changed for --settle seconds), a bucket\n"
        "by listing it every --interval seconds. For buckets without S3 notifications; on\n"
        "AWS, prefer the Lambda (ptif.aws.handler). Each poll compares every object with what\n"
        "the last one saw (size and eTag; a file's inode, size and time), so files copied\n"
        "or moved in with old times (rsync -t, cp -p, mv) are noticed too. That snapshot\n"
        "lives in the process store (watch/), so a restart does not queue everything again.\n"
        "Stops cleanly on SIGTERM or Ctrl-C.",
        epilog="examples:\n  ptif watch ./incoming --process ./queue --images ./pyramids\n"
        "  ptif watch s3://scans --endpoint-url http://minio:9000 --interval 60\n"
        "  ptif watch /mnt/nfs/scans --poll     # network filesystems send no events",
    )
    parser.add_argument(
        "location",
        nargs="?",
        metavar="SOURCE",
        help="the source store to watch, s3://bucket[/prefix] or a folder (default: --source)",
    )
    _add_common(parser)
    _add_watch_timing(parser)
    _add_watch_modes(parser)
    parser.set_defaults(handler=run_watch)


def _add_watch_timing(parser: argparse.ArgumentParser) -> None:
    """When a file counts as uploaded, how often a bucket is listed and how far back it looks."""
    parser.add_argument(
        "--settle",
        type=number_range(0),
        metavar="SECONDS",
        help="a folder's file is queued once unchanged this long (default 5; PTIF_WATCH_SETTLE)",
    )
    parser.add_argument(
        "--interval",
        type=number_range(0, above=True),
        metavar="SECONDS",
        help="pause between listings when polling (default 30; PTIF_WATCH_INTERVAL)",
    )
    # The poller once looked only at objects newer than the newest seen less --overlap; it now
    # compares every object with its snapshot, so the flag is accepted and has no effect.
    parser.add_argument("--overlap", type=number_range(0), help=argparse.SUPPRESS)


def _add_watch_modes(parser: argparse.ArgumentParser) -> None:
    """Which images a watch queues (--initial-scan, --prefix) and how it runs (--poll, --once)."""
    parser.add_argument(
        "--initial-scan",
        action="store_true",
        help="also queue the images already there whose output is missing or stale",
    )
    parser.add_argument(
        "--poll", action="store_true", help="list a folder instead of waiting for file events"
    )
    parser.add_argument("--prefix", default="", help="only keys starting with this")
    parser.add_argument("--once", action="store_true", help="one polling pass, then exit")


def run_watch(args: argparse.Namespace) -> int:
    from ptif.console import configure_logging, wants_json
    from ptif.intake.watch import WatchReport, queuer_for, watch

    configure_logging(max(args.verbose, 1), args.quiet, json_lines=wants_json(args.json))
    if args.overlap is not None and not args.quiet:
        print("ptif watch: --overlap is no longer needed and is ignored", file=sys.stderr)
    settings = settings_from(
        args,
        source=args.location or args.source,
        watch_settle=args.settle,
        watch_interval=args.interval,
    )
    stores = open_stores(settings, args)
    options = _watch_options(args, settings)
    recipes = settings.conversion_profile().recipe_hashes()
    queuer = queuer_for(
        stores.process, stores.images, stores.source, settings.queue_prefix, recipes
    )
    stop = threading.Event()
    _stop_on_signals(stop, "watch")
    if not args.quiet:
        print(f"ptif watch: watching {stores.source.url} (Ctrl-C to stop)", file=sys.stderr)
    report = watch(
        stores.source,
        queuer,
        extensions=settings.extension_list(),
        options=options,
        stop=stop,
        report=WatchReport(),
    )
    _print_watch_report(args, report.to_dict())
    return 1 if args.once and report.errors else 0


def _watch_options(args: argparse.Namespace, settings: Settings) -> WatchOptions:
    from ptif.intake.watch import WatchOptions

    return WatchOptions(
        settle=settings.watch_settle,
        interval=settings.watch_interval,
        initial_scan=args.initial_scan,
        prefix=args.prefix,
        poll=args.poll,
        once=args.once,
    )


def _print_watch_report(args: argparse.Namespace, counts: dict[str, int]) -> None:
    """The counts as JSON on stdout with --json, and a summary on stderr unless --quiet."""
    if args.json:
        print(json.dumps(counts))
    if not args.quiet:
        print(
            f"ptif watch: marked {counts['marked']} ({counts['up_to_date']} up to date, "
            f"{counts['not_newer']} already queued, {counts['errors']} errors)",
            file=sys.stderr,
        )


def _stop_on_signals(stop: threading.Event, name: str) -> None:
    def on_stop(signal_name: str) -> None:
        if not stop.is_set():
            print(f"ptif {name}: stopping ({signal_name})", file=sys.stderr)
        stop.set()

    stop_on_signals(on_stop)


# reconcile ---------------------------------------------------------------------------------------


def add_reconcile(commands: Any, formatter: type[argparse.HelpFormatter]) -> None:
    parser = commands.add_parser(
        "reconcile",
        formatter_class=formatter,
        help="queue sources whose output is missing or stale (catches lost events)",
        description="Compare the source store with the image store and queue every image whose\n"
        "output is missing, was made from another eTag, or with settings the profile would\n"
        "not use now. Images already queued keep their marker; images whose output belongs\n"
        "to another source, or that failed before with the same eTag, are reported, not\n"
        "queued. Writes a report to the process store's reports/.",
        epilog="examples:\n  ptif reconcile --dry-run\n  ptif reconcile --prefix maps/ --json",
    )
    _add_common(parser)
    parser.add_argument(
        "--prefix",
        action="append",
        default=[],
        metavar="PREFIX",
        help="only keys starting with this (repeatable; default: all)",
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="print what would be queued; change nothing"
    )
    parser.set_defaults(handler=run_reconcile)


def run_reconcile(args: argparse.Namespace) -> int:
    from ptif.console import configure_logging
    from ptif.intake.reconcile import ReconcileOptions, reconcile

    configure_logging(args.verbose, args.quiet, json_lines=args.json)
    settings = settings_from(args)
    stores = open_stores(settings, args)
    options = ReconcileOptions(
        prefixes=tuple(args.prefix) or ("",),
        extensions=settings.extension_list(),
        dry_run=args.dry_run,
    )
    report = reconcile(
        stores.source,
        stores.process,
        stores.images,
        queue_prefix=settings.queue_prefix,
        recipes=settings.conversion_profile().recipe_hashes(),
        options=options,
    )
    if args.json:
        print(json_text(report.to_dict()))
    elif args.dry_run:
        for key in report.marked_keys:
            print(printable(key))
    if not args.quiet:
        print(f"ptif reconcile: {report.summary()}", file=sys.stderr)
    return 1 if report.errors else 0


COMMANDS = (add_watch, add_reconcile)
