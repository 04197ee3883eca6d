"""How many threads a conversion takes: the cores the process may use, shared between the
conversions that run at once."""

from __future__ import annotations

import os
from collections.abc import Iterator
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


def test_conversions_keep_one_pool_of_their_share_of_threads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import pyvips

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(4)))
    monkeypatch.setattr(cores, "_CGROUP", Path("/nonexistent"))
    before = pyvips.concurrency_get()
    try:
        first = cores.pool()
        assert first is not None and first._max_workers == 4 and cores.pool() is first
        assert list(cores.spread(first, pow, [2, 3], [3, 2])) == [8, 9]
        cores.share(4)  # four conversions at once: each works on its own thread
        assert cores.pool() is None
        assert list(cores.spread(None, pow, [2, 3], [3, 2])) == [8, 9]
        cores.share(2)  # two conversions of 2 threads each share the 4
        assert cores.pool() is first
    finally:
        cores.share(1)
        pyvips.concurrency_set(before)


def test_conversions_at_once_keep_all_the_cores_busy(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two conversions on 4 cores have 2 threads each: the one pool they share has all 4, so
    each conversion's 2 tasks run beside the other's."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    import pyvips

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(4)))
    monkeypatch.setattr(cores, "_CGROUP", Path("/nonexistent"))
    before = pyvips.concurrency_get()
    together = threading.Barrier(4, timeout=5)  # broken unless 4 tasks run at once

    def conversion(_: int) -> list[int]:
        return list(cores.spread(cores.pool(), lambda _: together.wait(), range(2)))

    try:
        cores.share(2)
        assert cores.threads() == 2
        with ThreadPoolExecutor(2) as conversions:
            assert sorted(sum(conversions.map(conversion, range(2)), [])) == [0, 1, 2, 3]
    finally:
        cores.share(1)
        pyvips.concurrency_set(before)

