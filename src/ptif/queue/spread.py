"""The order in which a worker takes the markers it listed, so that many workers on one queue
seldom reach for the same one.

Every worker lists the queue in the same (key) order. Taken in that order, N workers would all
reach for the same markers, and all but one would lose each race: a read of a marker another
worker has already finished, or a claim another already holds, is a request for nothing (with
8 workers, 85% of the claims were lost, 40 requests per image instead of 9). So each page of
the listing (up to :data:`PAGE` markers, one LIST request) is taken from a random place,
onwards. A lost race (:meth:`Spread.lost`) means this worker has run into another's stretch:
it lists that page again (one request, which shows the markers finished since) and goes on from
the middle of the longest stretch of markers nobody has reached yet, where the next meeting is
furthest away. One worker alone never loses a race, so it takes each page in one pass from
its random start, with no request more.

This is only an order: which worker converts a marker is still decided by its claim.
"""

from __future__ import annotations

import itertools
import random
import threading
from collections.abc import Callable, Iterator

from ptif.stores.base import ObjectInfo

#: Markers per page: what one LIST request returns.
PAGE = 1000

Relist = Callable[[str, str], list[ObjectInfo]]
"""The markers still queued after the first key and up to the second (``""``: from the start)."""


class Spread:
    """Orders the markers of one pass for one worker."""

    def __init__(self, rng: random.Random | None = None) -> None:
        self._rng = rng or random.Random()
        self._lost = threading.Event()
        #: How many times a page was listed again after a lost race.
        self.relists = 0

    def lost(self) -> None:
        """A race for a marker was lost to another worker (gone, or claimed)."""
        self._lost.set()

    def order(self, listing: Iterator[ObjectInfo], relist: Relist) -> Iterator[ObjectInfo]:
        """Every marker of ``listing`` once, page by page, each page in this worker's order."""
        after = ""
        page: list[ObjectInfo] = []
        for info in listing:
            page.append(info)
            if len(page) == PAGE:
                yield from self._page(page, after, relist)
                after, page = page[-1].key, []
        if page:
            yield from self._page(page, after, relist)

    def _page(self, page: list[ObjectInfo], after: str, relist: Relist) -> Iterator[ObjectInfo]:
        place = {info.key: number for number, info in enumerate(page)}
        left = dict(enumerate(page))  # not yet taken by this worker, nor seen gone
        at = self._rng.randrange(len(page))
        self._lost.clear()
        while left:
            if self._lost.is_set():
                self._lost.clear()
                self.relists += 1
                queued = {place[i.key] for i in relist(after, page[-1].key) if i.key in place}
                left = {n: info for n, info in left.items() if n in queued}
                if not left:
                    return
                at = _middle_of_longest_run(sorted(left))
            at = _next(left, at, len(page))
            yield left.pop(at)
            at += 1


def _next(left: dict[int, ObjectInfo], at: int, size: int) -> int:
    """The first place at or after ``at`` (going round) still in ``left``."""
    for step in range(size):
        place = (at + step) % size
        if place in left:
            return place
    raise ValueError("nothing left")  # not reached: the caller checks


def _middle_of_longest_run(places: list[int]) -> int:
    """The middle of the longest run of consecutive places."""
    best_start, best_length, start = places[0], 1, places[0]
    for before, place in itertools.pairwise(places):
        if place != before + 1:
            start = place
        if place - start + 1 > best_length:
            best_start, best_length = start, place - start + 1
    return best_start + best_length // 2
