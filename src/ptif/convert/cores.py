"""How many cores ptif may use, and how many threads one conversion gets.

``os.cpu_count()`` counts the machine's cores, not the ones a container or a CPU affinity mask
leaves to the process: a Fargate task of 2 vCPUs on a 48-core host, or ``taskset -c 0``, would
start dozens of threads that only queue for a core. :func:`available` is the smallest of the
affinity mask and the cgroup's CPU quota (``cpu.max``, cgroup v2; ``cpu.cfs_quota_us`` and
``cpu.cfs_period_us``, v1), rounded up to a whole core.

Several conversions may run at once in one process (``ptif process --workers N``, ``ptif
convert`` of many files): :func:`share` divides the cores between them, and :func:`threads` is
what one conversion's own thread pools (ptif's pyramid writer, the quality floor's trials) and
libvips take.
"""

from __future__ import annotations

import functools
import math
import os
import threading
from pathlib import Path

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without loading typing on every run
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator
    from concurrent.futures import ThreadPoolExecutor
    from typing import Any

_CGROUP = Path("/sys/fs/cgroup")
_conversions = 1
_held = threading.local()  # each conversion thread's pool


@functools.cache
def available() -> int:
    """The cores this process may run on: affinity mask and cgroup quota, at least 1. Read
    once: a conversion asks for its threads several times, and the files are not free."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        cores = os.cpu_count() or 1
    quota = _cgroup_quota(_CGROUP)
    if quota is not None:
        cores = min(cores, max(1, math.ceil(quota)))
    return max(1, cores)


def share(conversions: int) -> None:
    """``conversions`` run at once in this process from now on: each gets its share of the
    cores (:func:`threads`), and so does libvips."""
    global _conversions
    _conversions = max(1, conversions)
    import pyvips

    pyvips.concurrency_set(threads())


def threads() -> int:
    """Threads one conversion may keep busy: its share of :func:`available`, at least 1."""
    return max(1, available() // _conversions)


def pool() -> ThreadPoolExecutor | None:
    """The threads of a conversion's pixel work (the floor's trials, the writer's levels and
    tiles), or ``None`` when it has one thread: its own then. Each thread that runs
    conversions keeps its own pool for its life, as libvips keeps its threads, so a conversion
    of a small image does not start and stop threads for a few milliseconds of work, and the
    conversions at once each have their share (one pool shared by them all would be a share
    for them all, or let one take the others' cores). A pool of an earlier share is dropped,
    not shut down: its threads end once nothing holds it."""
    wanted = threads()
    if wanted == 1:
        return None
    held: ThreadPoolExecutor | None = getattr(_held, "pool", None)
    if held is None or held._max_workers != wanted:
        from concurrent.futures import ThreadPoolExecutor

        held = _held.pool = ThreadPoolExecutor(wanted, thread_name_prefix="ptif-pixels")
    return held


def spread(
    pool: ThreadPoolExecutor | None, work: Callable[..., Any], *items: Iterable[Any]
) -> Iterator[Any]:
    """``work`` of each item (of each tuple of items), in order, on ``pool``'s threads when
    there is a pool, else on this one."""
    return map(work, *items) if pool is None else pool.map(work, *items)


def _cgroup_quota(root: Path) -> float | None:
    """The CPU quota in cores (``quota / period``) of the cgroup ``root`` shows this process,
    or ``None`` when there is none or it cannot be read."""
    try:
        limit = (root / "cpu.max").read_text().split()  # v2: "max 100000" or "200000 100000"
        if limit and limit[0] != "max":
            return int(limit[0]) / int(limit[1])
        return None
    except (OSError, ValueError, IndexError):
        pass
    try:
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())  # v1: -1 when unlimited
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return quota / period if quota > 0 and period > 0 else None
