"""The order a worker takes listed markers in: each once, in stretches from a random place; a
gap seen ahead or a lost race ends a stretch, and the next starts where the next meeting is
furthest away. Several workers stepped in turn on one real queue (a folder store, and the S3
server) take every marker exactly once and seldom reach for one another worker has."""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest
from s3_server import S3Server

from ptif.queue.spread import AHEAD_MAX, PAGE, Relist, Spread, relister, still_queued
from ptif.stores import open_store
from ptif.stores.base import ObjectInfo, PreconditionFailed, Store

NOW = datetime(2026, 1, 1, tzinfo=UTC)
QUEUE = "rbsc/"


def markers(count: int) -> list[ObjectInfo]:
    return [ObjectInfo(f"rbsc/{n:05d}.jpg.json", 10, "e", NOW) for n in range(count)]


def number(info: ObjectInfo) -> int:
    return int(info.key[5:10])


class Listed:
    """A queue in memory, listed as a store would, counting the listings."""

    def __init__(self, infos: list[ObjectInfo]) -> None:
        self.queued = {info.key: info for info in infos}
        self.calls: list[tuple[str, str, int | None]] = []

    def relist(self, after: str, last: str, most: int | None) -> list[ObjectInfo]:
        self.calls.append((after, last, most))
        found = [self.queued[k] for k in sorted(self.queued) if after < k <= last]
        return found[:most] if most is not None else found


def walk(count: int, seed: int) -> tuple[list[ObjectInfo], Listed, Spread, Iterator[ObjectInfo]]:
    """``count`` markers queued, and one worker's order of them."""
    listed = markers(count)
    queue = Listed(listed)
    spread = Spread(random.Random(seed))
    return listed, queue, spread, spread.order(iter(listed), queue.relist)


def test_one_worker_takes_every_marker_once_with_a_few_looks_ahead() -> None:
    listed = markers(PAGE + 250)
    queue = Listed(listed)
    spread = Spread(random.Random(3))
    taken = list(spread.order(iter(listed), queue.relist))
    assert sorted(i.key for i in taken) == [i.key for i in listed]
    assert taken[0] != listed[0]  # from a random place: workers do not all start together
    assert {i.key for i in taken[:PAGE]} == {i.key for i in listed[:PAGE]}  # page by page
    assert spread.relists == 0 and spread.deferred == []
    assert all(most is not None for _, _, most in queue.calls)  # looks ahead only
    assert spread.looks <= 2 * (len(listed) // AHEAD_MAX + 8)


def test_a_gap_seen_ahead_ends_the_stretch_before_it() -> None:
    listed, queue, spread, order = walk(100, seed=5)
    first = number(next(order))
    # another worker finishes the ten markers from 20 places on, and is at work on the next
    gone = {(first + 20 + n) % 100 for n in range(10)}
    for place in gone:
        del queue.queued[listed[place].key]
    rest = [number(i) for i in order]
    assert not gone & set(rest)  # no marker seen gone is reached for
    assert rest[:19] == [(first + 1 + n) % 100 for n in range(19)]  # up to the gap, then
    assert rest[19] != (first + 30) % 100  # not into the hands of the one who made it
    later = [number(i) for i in spread.deferred]  # the two behind the gap, for later
    assert sorted([first, *rest, *later]) == sorted(set(range(100)) - gone)  # each once
    assert spread.relists >= 1


def test_a_lost_race_of_the_stretch_moves_on_one_of_an_earlier_stretch_does_not() -> None:
    _, _, spread, order = walk(200, seed=8)
    first = next(order)
    spread.lost("rbsc/99999.jpg.json")  # not taken in this stretch: no news
    second = next(order)
    assert number(second) == (number(first) + 1) % 200 and spread.relists == 0
    spread.lost(second.key)
    third = next(order)
    assert spread.relists == 1 and number(third) != (number(second) + 1) % 200
    spread.lost(first.key)  # still in hand when the stretch ended: moves nothing
    fourth = next(order)
    assert number(fourth) == number(third) + 1 and spread.relists == 1


def test_the_ends_of_runs_others_walk_into_are_left_for_later() -> None:
    listed, queue, spread, order = walk(40, seed=2)
    first = next(order)
    # meanwhile others finished all but two short runs, each behind a marker they finished
    others = [n for n in range(40) if n not in (number(first), 10, 11, 30)]
    for n in others:
        del queue.queued[listed[n].key]
    spread.lost(first.key)
    assert list(order) == []
    assert sorted(number(i) for i in spread.deferred) == [10, 11, 30]


def test_markers_queued_since_the_listing_neither_stall_a_walk_nor_hide_the_rest() -> None:
    listed, queue, spread, order = walk(50, seed=3)
    first = next(order)
    for info in listed:  # a look of up to 128 markers shows none of those listed
        for n in range(200):
            new = f"{info.key}.new-{n:03d}"
            queue.queued[new] = ObjectInfo(new, 10, "e", NOW)
    rest = list(order)
    assert sorted(i.key for i in [first, *rest]) == [i.key for i in listed]
    assert spread.deferred == [] and spread.relists == 0


def test_a_marker_found_held_again_is_counted_each_time() -> None:
    spread = Spread(random.Random(1))
    assert [spread.held("rbsc/a.json") for _ in range(3)] == [0, 1, 2]
    assert spread.held("rbsc/b.json") == 0


# several workers, stepped in turn --------------------------------------------------------------

#: Markers a worker holds at once (``ptif process --workers 1``: two threads).
HAND = 2


@dataclass
class SteppedWorker:
    """One worker of :class:`Crowd`: its order, and the markers in its hands."""

    name: str
    spread: Spread
    order: Iterator[ObjectInfo]
    hand: deque[str] = field(default_factory=deque)
    later: list[ObjectInfo] = field(default_factory=list)
    done: list[str] = field(default_factory=list)
    listing_ended: bool = False


class Crowd:
    """Workers on one queue in ``store``, stepped in turn: each step, a worker with both hands
    full (or its listing ended) finishes its oldest marker (deletes it and its claim), then
    reaches for its next one: a read of the marker (gone: a race lost), then a create-if-absent
    claim (taken: lost)."""

    def __init__(self, store: Store, workers: int, seed: int) -> None:
        self.store = store
        rng = random.Random(seed)
        self.workers = [self._worker(f"w{n}", random.Random(rng.random())) for n in range(workers)]
        self.reaches = 0
        self.lost = 0

    def _worker(self, name: str, rng: random.Random) -> SteppedWorker:
        spread = Spread(rng)
        relist: Relist = relister(self.store, QUEUE)
        return SteppedWorker(name, spread, spread.order(self.store.list(QUEUE), relist))

    def run(self) -> None:
        while any(not w.listing_ended or w.hand for w in self.workers):
            for worker in self.workers:
                self._step(worker)
        for worker in self.workers:  # what was busy or deferred: looked at again, then taken
            worker.later = still_queued(self.store, QUEUE, worker.later + worker.spread.deferred)
            worker.spread.shuffle(worker.later)
        while any(w.later or w.hand for w in self.workers):
            for worker in self.workers:
                self._step(worker, worker.later.pop() if worker.later else None)

    def _step(self, worker: SteppedWorker, recheck: ObjectInfo | None = None) -> None:
        if (len(worker.hand) == HAND or worker.listing_ended) and worker.hand:
            self._finish(worker, worker.hand.popleft())
        if recheck is None and not worker.listing_ended:
            recheck = next(worker.order, None)
            worker.listing_ended = recheck is None
        if recheck is not None:
            self._reach(worker, recheck)

    def _reach(self, worker: SteppedWorker, info: ObjectInfo) -> None:
        self.reaches += 1
        if self.store.head(info.key) is None:
            self._lose(worker, info, gone=True)
            return
        try:
            self.store.put_bytes(claim(info.key), worker.name.encode(), if_none_match=True)
        except PreconditionFailed:
            self._lose(worker, info, gone=False)
            return
        worker.hand.append(info.key)

    def _lose(self, worker: SteppedWorker, info: ObjectInfo, *, gone: bool) -> None:
        self.lost += 1
        worker.spread.lost(info.key)
        if not gone:
            worker.later.append(info)

    def _finish(self, worker: SteppedWorker, key: str) -> None:
        self.store.delete(key)
        self.store.delete(claim(key))
        worker.done.append(key)


def claim(key: str) -> str:
    return "claims/" + key.removeprefix(QUEUE)


def fill(store: Store, count: int) -> list[str]:
    keys = [f"{QUEUE}{n // 100:03d}/img-{n:05d}.jpg.json" for n in range(count)]
    for key in keys:
        store.put_bytes(key, b"{}")
    return keys


def crowd_on(store: Store, count: int, workers: int, seed: int) -> Crowd:
    keys = fill(store, count)
    crowd = Crowd(store, workers, seed)
    crowd.run()
    done = [key for w in crowd.workers for key in w.done]
    assert sorted(done) == keys  # every marker exactly once
    assert list(store.list(QUEUE)) == [] and list(store.list("claims/")) == []
    assert all(len(w.done) >= count // workers // 4 for w in crowd.workers)  # all took part
    return crowd


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2])
def test_eight_workers_on_a_folder_queue_seldom_meet(tmp_path: Path, seed: int) -> None:
    crowd = crowd_on(open_store(str(tmp_path)), 2 * PAGE + 300, 8, seed)
    assert crowd.lost <= 0.05 * crowd.reaches, (crowd.lost, crowd.reaches)


@pytest.mark.slow
def test_eight_workers_on_an_s3_queue_seldom_meet(s3_server: S3Server) -> None:
    store = open_store(f"s3://{s3_server.new_bucket()}", endpoint_url=s3_server.endpoint_url)
    crowd = crowd_on(store, 600, 8, seed=4)
    assert crowd.lost <= 0.05 * crowd.reaches, (crowd.lost, crowd.reaches)
