"""The order in which a worker takes the markers it listed, so that many workers on one queue
seldom reach for the same one.

Every worker lists the queue in the same (key) order. Taken in that order, N workers would all
reach for the same markers, and all but one would lose each race: a read of a marker another
worker has already finished, or a claim another already holds, is a request for nothing (with
8 workers, 85% of the claims were lost, 40 requests per image instead of 9). So each page of
the listing (up to :data:`PAGE` markers, one LIST request) is taken in *stretches*: from a
random place onwards, one marker after the other, as long as the next one is still queued.

- **Looking ahead.** Before walking on, a worker lists the few markers ahead of it (one LIST
  request of :data:`AHEAD_MIN` keys, twice as many each time none was missing, up to
  :data:`AHEAD_MAX`, or :data:`AHEAD_CROWDED` once it has met another worker on the page). A
  marker missing there was finished by another worker: the stretch ends before it, with no
  request for it, since the marker after it is most likely the one that worker holds now.
- **Jumping.** A stretch that ends (a gap ahead, the end of the page, or a race lost in spite
  of the look: :meth:`Spread.lost`) lists the page again, and the next stretch starts where the
  next meeting is furthest away: at the start of a run of queued markers this worker walked up
  to itself (nobody else comes from there), or in the middle of one that another worker is
  walking into, leaving :data:`HEAD_MARGIN` markers to it (give or take a quarter, and not
  always in the longest run: workers whose stretches end together see the same page, and
  would all go to the same place). A race lost by a marker of an earlier stretch (one still
  in hand when the stretch ended) is no news: it moves nothing.
- **Leaving the ends to their walkers.** When the runs left are so short that each is most
  likely in another worker's hands, the page's last markers are not reached for: they are
  :attr:`Spread.deferred`, for the worker to look at again once its listing is done (one
  LIST request shows which of them are still queued; most are gone by then).

One worker alone never meets another: it walks each page once from its random start round to
it, with a look ahead per :data:`AHEAD_MAX` markers (about 0.01 LIST requests per image).

This is only an order: which worker converts a marker is still decided by its claim, and every
marker of the listing is either taken, seen gone, or deferred.
"""

from __future__ import annotations

import itertools
import random
import threading
from collections.abc import Callable, Iterator

from ptif.stores.base import ObjectInfo, Store

#: Markers per page: what one LIST request returns.
PAGE = 1000
#: Markers listed by the first look ahead of a stretch, and by the longest: once this worker has
#: met another on the page, the longest is AHEAD_CROWDED (a look goes stale as others jump in).
AHEAD_MIN, AHEAD_CROWDED, AHEAD_MAX = 8, 16, 128
#: Markers at the head of a run, after a gap, likely in the hands of the worker that made it.
HEAD_MARGIN = 2

Relist = Callable[[str, str, int | None], list[ObjectInfo]]
"""The markers still queued after the first key and up to the second (``""``: from the start),
at most the third many (``None``: all)."""


class Spread:
    """Orders the markers of one pass for one worker."""

    def __init__(self, rng: random.Random | None = None) -> None:
        self._rng = rng or random.Random()
        self._lock = threading.Lock()
        self._stretch = 0
        #: The stretch each marker of the page in hand was taken in, and those lost.
        self._taken: dict[str, int] = {}
        self._beaten: set[str] = set()
        self._held: dict[str, int] = {}
        self._lost = False
        #: Markers left to other workers for now: look at them again later.
        self.deferred: list[ObjectInfo] = []
        #: How many times a page was listed again to find a new stretch, and looks ahead.
        self.relists = 0
        self.looks = 0

    def lost(self, key: str) -> None:
        """The race for marker ``key`` was lost to another worker (gone, or claimed)."""
        with self._lock:
            self._beaten.add(key)
            if self._taken.get(key) == self._stretch:
                self._lost = True

    def order(self, listing: Iterator[ObjectInfo], relist: Relist) -> Iterator[ObjectInfo]:
        """Every marker of ``listing`` once, page by page, each page in this worker's order,
        but those seen gone and those :attr:`deferred`."""
        after = ""
        page: list[ObjectInfo] = []
        for info in listing:
            page.append(info)
            if len(page) == PAGE:
                yield from _Walk(self, page, after, relist).markers()
                after, page = page[-1].key, []
        if page:
            yield from _Walk(self, page, after, relist).markers()

    def held(self, key: str) -> int:
        """Marker ``key`` is held by another worker: how many times it was found so before,
        in this pass."""
        with self._lock:
            times = self._held.get(key, 0)
            self._held[key] = times + 1
            return times

    def shuffle(self, markers: list[ObjectInfo]) -> None:
        """Put ``markers`` in an order of this worker's own (in place)."""
        self._rng.shuffle(markers)

    def _new_stretch(self) -> None:
        with self._lock:
            self._stretch += 1
            self._lost = False

    def _take(self, key: str) -> None:
        with self._lock:
            self._taken[key] = self._stretch

    def _lost_race(self) -> bool:
        with self._lock:
            return self._lost


class _Walk:
    """One page, walked in stretches. Places are positions in the page."""

    def __init__(self, spread: Spread, page: list[ObjectInfo], after: str, relist: Relist):
        self.spread = spread
        self.page = page
        self.keys = [info.key for info in page]
        self.places = {key: place for place, key in enumerate(self.keys)}
        self.after = after  # the key before the page
        self.relist = relist
        self.left = set(range(len(page)))  # neither taken by this worker nor seen gone
        self.mine: set[int] = set()
        self.crowded = False  # met another worker on this page
        with spread._lock:
            spread._taken.clear()
            spread._beaten.clear()

    def markers(self) -> Iterator[ObjectInfo]:
        size = len(self.page)
        at = self.spread._rng.randrange(size)
        seen, ahead = self._listed_now(at), 2 * AHEAD_MIN
        self.spread._new_stretch()
        while self.left:
            if at not in self.left or self.spread._lost_race():
                start = self._jump()
                if start is None:
                    return
                at, seen, ahead = start, self._listed_now(start), 2 * AHEAD_MIN
                self.crowded = True
                continue
            if at not in seen:
                seen, clear = self._look(at, ahead)
                self.crowded |= not clear
                most = AHEAD_CROWDED if self.crowded else AHEAD_MAX
                ahead = min(ahead * 2, most) if clear else AHEAD_MIN
                continue
            self.left.discard(at)
            self.mine.add(at)
            self.spread._take(self.keys[at])
            yield self.page[at]
            at = (at + 1) % size

    def _listed_now(self, at: int) -> set[int]:
        """The places of a first look from ``at``, when the page was just listed (again)."""
        return {(at + n) % len(self.page) for n in range(AHEAD_MIN)}

    def _look(self, at: int, count: int) -> tuple[set[int], bool]:
        """List up to ``count`` markers from place ``at``; forget those missing. Returns the
        places the look saw queued, and whether none was missing."""
        self.spread.looks += 1
        before = self.keys[at - 1] if at else self.after
        found = self.relist(before, self.keys[-1], count)
        listed = {info.key for info in found}
        ours = [self.places[key] for key in listed if key in self.places]
        if len(found) < count:
            until = len(self.page)
        elif max(ours, default=-1) >= at:  # up to the last listed, in the store's order
            until = max(ours) + 1
        else:  # only markers queued since the page was listed: trust the page for this one
            return {at}, True
        missing = {p for p in range(at, until) if p in self.left and self.keys[p] not in listed}
        self.left -= missing
        return set(range(at, until)) - missing, not missing

    def _jump(self) -> int | None:
        """List the page again; where the next stretch starts, or None when what is left is
        best left to other workers for now (then it is :attr:`Spread.deferred`)."""
        if not self.left:
            return None
        self.spread.relists += 1
        queued = {info.key for info in self.relist(self.after, self.keys[-1], None)}
        self.left = {p for p in self.left if self.keys[p] in queued}
        if not self.left:
            return None
        self.spread._new_stretch()
        rooms = {run: self._room(run) for run in _runs(sorted(self.left))}
        most = max(rooms.values())
        if most <= 0:
            self.spread.deferred += [self.page[p] for p in sorted(self.left)]
            self.left.clear()
            return None
        # Not always the one best: workers whose stretches end together see the same page.
        runs = [run for run, room in rooms.items() if room >= most / 2]
        return self._start(self.spread._rng.choices(runs, [rooms[r] for r in runs])[0])

    def _walked_up_to(self, run: tuple[int, int]) -> bool:
        """Whether this worker took the marker before the run (going round the page), and did
        not lose it: a marker lost is the start of another worker's stretch."""
        before = (run[0] - 1) % len(self.page)
        if before not in self.mine:
            return False
        with self.spread._lock:
            return self.keys[before] not in self.spread._beaten

    def _room(self, run: tuple[int, int]) -> float:
        """How many markers a stretch from the run's start place can take before it meets
        another worker, as far as one can tell; the longest run wins ties."""
        start, end = run
        length = end - start + 1
        if self._walked_up_to(run):
            return length + 0.5
        return (length - HEAD_MARGIN) / 2

    def _start(self, run: tuple[int, int]) -> int:
        """The run's start if this worker walked up to it, else about its middle (past the
        head another worker may hold), give or take a quarter of it."""
        start, end = run
        if self._walked_up_to(run):
            return start
        usable = end - start + 1 - HEAD_MARGIN
        quarter = usable // 4
        return start + HEAD_MARGIN + usable // 2 + self.spread._rng.randint(-quarter, quarter)


def _runs(places: list[int]) -> list[tuple[int, int]]:
    """Runs of consecutive places, as (first, last)."""
    runs: list[tuple[int, int]] = []
    for place in places:
        if runs and runs[-1][1] == place - 1:
            runs[-1] = (runs[-1][0], place)
        else:
            runs.append((place, place))
    return runs


def relister(store: Store, prefix: str) -> Relist:
    """A :data:`Relist` of the markers under ``prefix`` in ``store``, as they are now."""

    def relist(after: str, last: str, most: int | None) -> list[ObjectInfo]:
        found: list[ObjectInfo] = []
        for info in store.list(prefix, start_after=after, page_size=most):
            if info.key > last:
                break
            found.append(info)
            if len(found) == most:  # before the listing asks for another page
                break
        return found

    return relist


def still_queued(store: Store, prefix: str, markers: list[ObjectInfo]) -> list[ObjectInfo]:
    """Those of ``markers`` (under ``prefix``) still queued, as listed now: one LIST request per
    stretch of :data:`PAGE` markers of the queue, rather than a read of each, most of which
    another worker has finished meanwhile."""
    wanted = sorted({info.key for info in markers})
    found: list[ObjectInfo] = []
    while wanted:
        # the key less its last character comes before it, and after no other marker before it
        listing = store.list(prefix, start_after=wanted[0][:-1])
        listed = {info.key: info for info in itertools.islice(listing, PAGE)}
        found += [listed[key] for key in wanted if key in listed]
        last = max(listed) if len(listed) == PAGE else None
        wanted = [key for key in wanted if last is not None and key > last]
    return found
