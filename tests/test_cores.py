"""How many threads a conversion takes: the cores the process may use, shared between the
conversions that run at once."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ptif.convert import cores


@pytest.fixture(autouse=True)
def counted_afresh() -> Iterator[None]:
    """Each test's machine is counted anew, and the real one again after it."""
    cores.available.cache_clear()
    yield
    cores.available.cache_clear()


def write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


@pytest.mark.parametrize(
    ("files", "quota"),
    [
        ({"cpu.max": "200000 100000\n"}, 2.0),
        ({"cpu.max": "150000 100000\n"}, 1.5),
        ({"cpu.max": "max 100000\n"}, None),
        ({"cpu/cpu.cfs_quota_us": "50000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 0.5),
        ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),
        ({"cpu.max": "garbage"}, None),
        ({}, None),
    ],
)
def test_the_cgroup_quota_is_read_from_either_cgroup_version(
    tmp_path: Path, files: dict[str, str], quota: float | None
) -> None:
    assert cores._cgroup_quota(write(tmp_path, files)) == quota


def test_a_quota_below_the_affinity_mask_bounds_the_cores(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3, 4, 5, 6, 7})
    monkeypatch.setattr(cores, "_CGROUP", write(tmp_path, {"cpu.max": "150000 100000"}))
    assert cores.available() == 2  # 1.5 cores: two threads, one of them half the time
    monkeypatch.setattr(cores, "_CGROUP", tmp_path / "none")
    cores.available.cache_clear()
    assert cores.available() == 8


def test_the_affinity_mask_bounds_the_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {3})
    assert cores.available() == 1


def test_conversions_at_once_share_the_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    import pyvips

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)))
    monkeypatch.setattr(cores, "_CGROUP", Path("/nonexistent"))
    before = pyvips.concurrency_get()
    try:
        cores.share(2)
        assert (cores.threads(), pyvips.concurrency_get()) == (4, 4)
        cores.share(16)
        assert (cores.threads(), pyvips.concurrency_get()) == (1, 1)
    finally:
        cores.share(1)
        pyvips.concurrency_set(before)
    assert cores.threads() == 8


@pytest.fixture
def cores_of(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[int], None]]:
    """Sets how many cores the machine has; one conversion at a time again after the test."""
    import pyvips

    def machine(count: int) -> None:
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(count)))
        monkeypatch.setattr(cores, "_CGROUP", Path("/nonexistent"))
        cores.available.cache_clear()

    before = pyvips.concurrency_get()
    yield machine
    cores.share(1)
    pyvips.concurrency_set(before)


def test_conversions_keep_one_pool_of_their_share_of_threads(
    cores_of: Callable[[int], None],
) -> None:
    cores_of(4)
    first = cores.pool()
    assert first is not None and first._max_workers == 4 and cores.pool() is first
    assert list(cores.spread(first, pow, [2, 3], [3, 2])) == [8, 9]
    cores.share(4)  # four conversions at once: each works on its own thread
    assert cores.pool() is None
    assert list(cores.spread(None, pow, [2, 3], [3, 2])) == [8, 9]
    cores.share(2)
    second = cores.pool()
    assert second is not None and second._max_workers == 2 and second is not first


def test_conversions_at_once_keep_all_the_cores_busy(cores_of: Callable[[int], None]) -> None:
    """Two conversions on 4 cores have 2 threads each, their own: the 4 tasks of both run at
    once. (One pool of 2 threads shared by both left 2 of the cores idle.)"""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    cores_of(4)
    cores.share(2)
    together = threading.Barrier(4, timeout=5)  # broken unless 4 tasks run at once

    def conversion(number: int) -> list[int]:
        return list(cores.spread(cores.pool(), lambda _: together.wait(), range(2)))

    with ThreadPoolExecutor(2) as conversions:
        done = [index for indices in conversions.map(conversion, range(2)) for index in indices]
    assert sorted(done) == [0, 1, 2, 3]


def test_a_conversion_keeps_its_pool_when_the_share_changes(
    cores_of: Callable[[int], None],
) -> None:
    """A pool replaced by another share still runs the tasks of the conversion that holds it."""
    cores_of(5)
    held = cores.pool()  # one conversion, 5 threads
    cores.share(2)  # two at once: 2 threads each
    assert held is not None and cores.pool() is not held
    assert list(cores.spread(held, pow, [2, 3], [3, 2])) == [8, 9]
