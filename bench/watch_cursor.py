"""The watch poller's cursor for a million keys: memory and time of a pass.

Usage: .venv/bin/python bench/watch_cursor.py [--keys N] [--changed N]

A source of N keys (listed from memory, as a bucket's pages would arrive) is polled twice by the
real :class:`ptif.intake.watch.Poller`, its cursor in a folder process store: a first pass that
records every key, then a second pass in which ``--changed`` keys have a new eTag and are queued.
Prints, as JSON, the Python memory each pass allocated at its peak (tracemalloc, which slows
the run about twofold), its wall time without tracemalloc, and the stored cursor's size.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
import tracemalloc
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from ptif.intake.watch import Poller, Queuer, WatchOptions, WatchReport
from ptif.stores.base import ObjectInfo
from ptif.stores.folder import FolderStore

WHEN = datetime(2020, 1, 1, tzinfo=UTC)


class ListedSource:
    """A source store that only lists: N keys, a few of them with a new eTag."""

    url = "s3://bench-source"
    endpoint_url = "http://bench"

    def __init__(self, keys: int) -> None:
        self.keys = keys
        self.changed: set[int] = set()

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        for i in range(self.keys):
            etag = f"{i:032x}" if i not in self.changed else f"{i:031x}f"
            key = f"scans/box-{i // 1000:05d}/page-{i % 1000:04d}.tif"
            yield ObjectInfo(key, 1_000_000 + i, etag, WHEN)


def one_pass(source: ListedSource, process: FolderStore, traced: bool) -> dict[str, float]:
    queuer = Queuer(process, None, "rbsc/", frozenset())
    options = WatchOptions(poll=True, once=True)
    poller = Poller(source, queuer, (".tif",), options, WatchReport())  # type: ignore[arg-type]
    poller._stop = threading.Event()
    if traced:
        tracemalloc.start()
    start = time.perf_counter()
    assert poller.poll()
    seconds = time.perf_counter() - start
    figures = {"seconds": round(seconds, 2), "marked": poller.report.marked}
    if traced:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        figures["peak_mib"] = round(peak / 2**20, 1)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--changed", type=int, default=1_000)
    args = parser.parse_args()
    source = ListedSource(args.keys)
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        for traced in (False, True):
            process = FolderStore(Path(folder) / f"process-{traced}")
            source.changed = set()
            first = one_pass(source, process, traced)
            source.changed = set(range(0, args.keys, max(1, args.keys // args.changed)))
            second = one_pass(source, process, traced)
            cursor = next(iter(process.list("watch/")))
            name = "traced" if traced else "timed"
            results[name] = {"first_pass": first, "second_pass": second}
        results["cursor_bytes"] = cursor.size
        results["keys"] = args.keys
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
