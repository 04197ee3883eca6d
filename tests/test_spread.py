"""The order a worker takes listed markers in: each once, from a random place, and after a
lost race from the middle of the longest stretch still queued."""

from __future__ import annotations

import random
from datetime import UTC, datetime

from ptif.queue.spread import PAGE, Spread
from ptif.stores.base import ObjectInfo

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def markers(count: int) -> list[ObjectInfo]:
    return [ObjectInfo(f"rbsc/{n:05d}.jpg.json", 10, "e", NOW) for n in range(count)]


def test_one_worker_takes_every_marker_once_without_listing_again() -> None:
    listed = markers(PAGE + 250)
    spread = Spread(random.Random(3))
    relisted: list[tuple[str, str]] = []
    taken = list(spread.order(iter(listed), lambda a, b: relisted.append((a, b)) or []))
    assert sorted(i.key for i in taken) == [i.key for i in listed]
    assert relisted == [] and spread.relists == 0
    assert taken[0] != listed[0]  # from a random place: workers do not all start together
    assert {i.key for i in taken[:PAGE]} == {i.key for i in listed[:PAGE]}  # page by page


def test_a_lost_race_skips_what_others_finished_and_jumps_to_the_longest_stretch() -> None:
    listed = markers(100)
    # another worker has finished 0-9 and 40-69: left are 10-39 (30) and 70-99 (30), and
    # this worker will take some of those too before it loses
    finished = {*range(10), *range(40, 70)}
    spread = Spread(random.Random(5))
    calls: list[tuple[str, str]] = []

    def relist(after: str, last: str) -> list[ObjectInfo]:
        calls.append((after, last))
        return [i for n, i in enumerate(listed) if n not in finished]

    order = spread.order(iter(listed), relist)
    first = next(order)
    spread.lost()
    rest = list(order)
    assert calls == [("", listed[-1].key)] and spread.relists == 1
    taken = [first, *rest]
    numbers = [int(i.key[5:10]) for i in rest]
    assert not finished & set(numbers)  # nothing seen gone is read again
    assert len({i.key for i in taken}) == len(taken)  # none twice
    left = sorted(n for n in range(100) if n not in finished and n != int(first.key[5:10]))
    runs: list[list[int]] = []
    for n in left:
        if runs and runs[-1][-1] == n - 1:
            runs[-1].append(n)
        else:
            runs.append([n])
    longest = max(runs, key=len)  # the first of the longest
    assert numbers[0] == longest[len(longest) // 2]  # where the next meeting is furthest
    assert sorted(numbers) == left  # and then everything still queued
