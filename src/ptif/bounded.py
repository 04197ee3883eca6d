"""Bounded concurrency for the listing commands (``mark``, ``watch``, ``reconcile``, ``status``):
many requests in flight, little memory held."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import TypeVar

CONCURRENCY = 16

T = TypeVar("T")
R = TypeVar("R")


def run_bounded(
    work: Callable[[T], R], items: Iterable[T], workers: int = CONCURRENCY
) -> Iterator[tuple[T, R | Exception]]:
    """``(item, result or error)`` as each finishes, with at most ``4 * workers`` items taken
    from ``items`` and not yet answered: a listing of millions streams through in small memory.
    Results come back in the caller's thread, which needs no locks to count them."""
    running: dict[Future[R], T] = {}
    with ThreadPoolExecutor(workers, thread_name_prefix="ptif-intake") as pool:
        for item in items:
            if len(running) >= workers * 4:
                yield from _finished(running)
            running[pool.submit(work, item)] = item
        while running:
            yield from _finished(running)


def _finished(running: dict[Future[R], T]) -> Iterator[tuple[T, R | Exception]]:
    done, _ = wait(list(running), return_when=FIRST_COMPLETED)
    for future in done:
        item = running.pop(future)
        error = future.exception()
        if error is None:
            yield item, future.result()
        elif isinstance(error, Exception):
            yield item, error
        else:
            raise error
