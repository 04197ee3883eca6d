"""``ptif convert`` with several sources or a folder: the images in parallel, one line per failure.

Loaded only for that form, so a one-file ``ptif convert`` keeps its short import path. The
number of parallel conversions is ``--workers``, else ``ptif process``'s setting (``PTIF_WORKERS``,
``ptif.toml``, the cores ptif may use); each conversion's memory budget is shared out between
them as the worker shares it.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ptif.cli.convert import _json_text, _recipe, _summary
from ptif.cli.main import one_line
from ptif.convert.batch import Item, check_destination, check_sources, plan
from ptif.convert.limits import Limits, check_limits, default_max_memory
from ptif.convert.profiles import Recipe
from ptif.errors import PtifError, SourceMissingError

EXIT_OK, EXIT_FAILED = 0, 1


def convert_many(args: argparse.Namespace) -> int:
    from ptif.bounded import run_bounded
    from ptif.queue.conversion import tune_libvips

    check_sources(args.src, recursive=args.recursive)
    recipe = _recipe(args)
    check_limits(args.max_pixels, args.max_memory, args.max_seconds)
    workers = _workers(args)
    memory = args.max_memory or default_max_memory(workers)
    limits = Limits(args.max_pixels, memory, args.max_seconds)
    folder = check_destination(args.dst)
    items = plan(args.src, folder, all_pages=args.all_pages)
    tune_libvips(workers)
    work = _Work(recipe, limits, args.page, args.all_pages)
    converted = failed = 0
    for item, outcome in run_bounded(work.one, items, workers):
        if isinstance(outcome, Exception):
            failed += 1
            print(f"ptif: {one_line(_one_line(item, outcome))}", file=sys.stderr, flush=True)
            continue
        converted += 1
        for result in outcome:
            print(_json_text(result.to_dict()) if args.json else _summary(result), flush=True)
    if not args.quiet:
        print(f"ptif convert: {converted} converted, {failed} failed", file=sys.stderr)
    return EXIT_FAILED if failed else EXIT_OK


def _workers(args: argparse.Namespace) -> int:
    if args.workers:
        return int(args.workers)
    from ptif.config import load_settings

    return load_settings().workers


class _Work:
    """Converts one planned item in a pool thread."""

    def __init__(self, recipe: Recipe, limits: Limits, page: int, all_pages: bool) -> None:
        self.recipe = recipe
        self.limits = limits
        self.page = page
        self.all_pages = all_pages

    def one(self, item: Item) -> list[Any]:
        from ptif.convert.engine import convert, convert_pages

        if item.refusal is not None:
            raise item.refusal
        if not item.src.is_file():
            raise SourceMissingError(f"{item.src}: no such file")
        if self.all_pages:
            return convert_pages(item.src, item.target, self.recipe, limits=self.limits)
        return [convert(item.src, item.target, self.recipe, page=self.page, limits=self.limits)]


def _one_line(item: Item, error: Exception) -> str:
    if isinstance(error, PtifError):
        text = str(error)
        named = text if str(item.src) in text else f"{item.src}: {text}"
        return f"{' '.join(named.split())} [{error.code}]"
    if isinstance(error, MemoryError):
        return f"{item.src}: out of memory; run fewer workers (--workers) or give ptif more memory"
    return f"{item.src}: unexpected error ({type(error).__name__}: {error}); please report it"
