"""A store that goes away: how the worker tells it from one bad object, and stops the run.

The worker reaches its three stores (source, process, images) only through
:meth:`StoreHealth.watch`, which counts each store's consecutive failures: a
:class:`~ptif.stores.base.StoreError` (unreachable, or still failing or throttling after the
S3 client's own retries), or an operating-system error from a folder store (an unmounted or
failing disk: ``EIO``, ``ESTALE``, a removed folder…). Any answer from the store resets the
count, except "not there" (a missing key, an empty listing), which a folder store also says of
everything once its folder is gone. After :data:`STREAK` failures in a row the store is probed
with a request that involves no object (:func:`reachable`): if it answers, the failures were
those objects' own and the count starts again; if not, the store is lost.

A lost store stops the run: the worker claims nothing more, the items in hand end (their
markers stay, their attempts are not counted), and every later call to that store fails at once
with the same :class:`StoreLost` instead of waiting out the client's retries again. ``ptif
process`` then exits 3 with one line naming the store. Nothing is lost: each marker stays until
its pyramid is published, so a later run finishes the work.

A store that refuses the run's settings or credentials mid-run (a :class:`ConfigError` from
it: credentials that expired, a permission taken away, a bucket deleted) is lost at once, the
same way: no other image could get further, and the refusal is never any image's failure. The
run's own start-up check of conditional writes is the exception: it stops the run with the
configuration error itself (exit 2) before anything is claimed.

A full disk is not the store going away: ``ENOSPC`` (and ``EDQUOT``, ``EFBIG``) from a folder
store is ``disk-full``, retried later, never a lost store.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from ptif.errors import ConfigError, PtifError
from ptif.queue.workdir import NO_SPACE, local_error
from ptif.stores.base import CHECK_PREFIX, ObjectInfo, ObjectMissing, Store, StoreError

if TYPE_CHECKING:
    from ptif.queue.reports import RunReport

log = logging.getLogger(__name__)

#: Failures in a row, each after the client's own retries, before the store is probed.
STREAK = 3
#: A key no one writes: a store that answers a HEAD of it (with "no such key") is reachable.
PROBE_KEY = f"{CHECK_PREFIX}reachable"
#: How much of the cause the one line keeps.
CAUSE_CHARS = 200

T = TypeVar("T")


class StoreLost(StoreError):
    """A store could not be reached, or ``refused`` the run's settings or credentials (they
    expired, a permission was taken away): the run stops; nothing is lost."""

    def __init__(self, role: str, url: str, cause: str, *, refused: bool = False) -> None:
        cause = " ".join(cause.split())
        if len(cause) > CAUSE_CHARS:
            cause = cause[: CAUSE_CHARS - 1] + "…"
        what, then = (
            ("refused the run's settings or credentials", "correct them and run again")
            if refused
            else ("could not be reached", "run again when it is back")
        )
        super().__init__(f"the {role} store {url} {what} ({cause}); nothing was lost, {then}")
        self.role = role
        self.url = url
        self.cause = cause
        self.refused = refused
        #: What the run did before it stopped, when the run raises it.
        self.report: RunReport | None = None

    def again(self) -> StoreLost:
        """The same news as a new exception, to raise in another thread."""
        return StoreLost(self.role, self.url, self.cause, refused=self.refused)


class StoreHealth:
    """The health of each store of one run; ``on_lost`` is called once, for the first lost."""

    def __init__(self, on_lost: Callable[[StoreLost], None], *, streak: int = STREAK) -> None:
        self._on_lost = on_lost
        self._streak = streak
        self._failures: dict[str, int] = {}
        self._probing: set[str] = set()
        self._lost: dict[str, StoreLost] = {}
        self._first: StoreLost | None = None
        self._lock = threading.Lock()

    @property
    def lost(self) -> StoreLost | None:
        """The first store lost in this run, if any."""
        return self._first

    def is_lost(self, role: str) -> bool:
        return role in self._lost

    def watch(self, role: str, store: Store) -> Store:
        """``store`` as the run reaches it: its failures counted, fast once it is lost."""
        return WatchedStore(role, store, self)

    def confirm(self, role: str, store: Store) -> None:
        """Probe ``store`` now; raise :class:`StoreLost` if it does not answer. For an answer
        that is only believable from a store that is there (a source that is not found)."""
        reason = reachable(store)
        if reason is not None:
            raise self._declare(role, store, reason)

    def declare(self, role: str, store: Store, error: BaseException) -> StoreLost:
        """``store`` is lost (its listing failed: no run goes on without it)."""
        return self._declare(role, store, _cause(error))

    def refused(self, role: str, store: Store, error: ConfigError) -> StoreLost:
        """``store`` refused the run's settings or credentials: no image can go on."""
        return self._declare(role, store, str(error), refused=True)

    # what the watched stores report -------------------------------------------------------

    def check(self, role: str) -> None:
        lost = self._lost.get(role)
        if lost is not None:
            raise lost.again()

    def answered(self, role: str) -> None:
        with self._lock:
            self._failures[role] = 0

    def failed(self, role: str, store: Store, error: BaseException) -> None:
        with self._lock:
            count = self._failures.get(role, 0) + 1
            self._failures[role] = count
            if count < self._streak or role in self._probing or role in self._lost:
                return
            self._probing.add(role)
        try:
            reason = reachable(store)
        finally:
            with self._lock:
                self._probing.discard(role)
        if reason is None:
            log.info("%s: %d failures in a row, but it answers; going on", store.url, count)
            self.answered(role)
        else:
            self._declare(role, store, _cause(error))

    def _declare(self, role: str, store: Store, cause: str, *, refused: bool = False) -> StoreLost:
        with self._lock:
            lost = self._lost.get(role)
            if lost is not None:
                return lost
            lost = self._lost[role] = StoreLost(role, store.url, cause, refused=refused)
            first = self._first is None
            if first:
                self._first = lost
        if first:
            log.info("%s", lost)
            self._on_lost(lost)
        return lost


def reachable(store: Store) -> str | None:
    """``None`` if ``store`` answers a request that involves no object, else why not."""
    try:
        store.head(PROBE_KEY)
    except (StoreError, OSError) as error:
        return _cause(error)
    except PtifError:
        pass  # it answered, with a refusal
    root = getattr(store, "root", None)  # a folder store answers "not there" of anything
    if isinstance(root, Path):
        try:
            with os.scandir(root):
                pass
        except OSError as error:
            return f"{root}: {error.strerror or error} (unmounted or removed?)"
    return None


def _cause(error: BaseException) -> str:
    """The root of ``error``: what the network or the disk said, rather than our wrapping."""
    cause = error.__cause__ if isinstance(error, StoreError) and error.__cause__ else error
    return str(cause) or type(cause).__name__


def _any(_: object) -> bool:
    return True


def _found(result: object) -> bool:
    return result is not None


class WatchedStore:
    """A store whose failures :class:`StoreHealth` counts (see the module's docstring)."""

    def __init__(self, role: str, inner: Store, health: StoreHealth) -> None:
        self.role = role
        self.inner = inner
        self.url = inner.url
        self._health = health

    def __repr__(self) -> str:
        return f"WatchedStore({self.role!r}, {self.inner!r})"

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def get_file(self, key: str, path: Path, max_bytes: int | None = None) -> ObjectInfo:
        return self._call("get", key, lambda: self.inner.get_file(key, path, max_bytes))

    def get_bytes(self, key: str) -> tuple[bytes, ObjectInfo]:
        return self._call("get", key, lambda: self.inner.get_bytes(key))

    def put_file(self, key: str, path: Path, metadata: Mapping[str, str] | None = None) -> str:
        return self._call("put", key, lambda: self.inner.put_file(key, path, metadata))

    def put_bytes(
        self,
        key: str,
        data: bytes,
        *,
        if_none_match: bool = False,
        if_match: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> str:
        return self._call(
            "put",
            key,
            lambda: self.inner.put_bytes(
                key, data, if_none_match=if_none_match, if_match=if_match, metadata=metadata
            ),
        )

    def head(self, key: str) -> ObjectInfo | None:
        return self._call("head", key, lambda: self.inner.head(key), proves=_found)

    def delete(self, key: str, *, if_match: str | None = None) -> None:
        self._call("delete", key, lambda: self.inner.delete(key, if_match=if_match))

    def delete_matching(self, objects: Sequence[tuple[str, str]]) -> tuple[str, ...]:
        first = objects[0][0] if objects else ""
        return self._call("delete", first, lambda: self.inner.delete_matching(objects))

    def check_conditional_writes(self) -> None:
        self._call("check", "", self.inner.check_conditional_writes)

    def list(
        self,
        prefix: str = "",
        *,
        start_after: str = "",
        recursive: bool = True,
        page_size: int | None = None,
    ) -> Iterator[ObjectInfo]:
        self._health.check(self.role)
        listing = self.inner.list(
            prefix, start_after=start_after, recursive=recursive, page_size=page_size
        )
        while True:
            item = self._call("list", prefix, lambda: next(listing, None), proves=_found)
            if item is None:
                return
            yield item

    def _call(
        self, op: str, key: str, call: Callable[[], T], *, proves: Callable[[T], bool] = _any
    ) -> T:
        """``call``, its failures counted; a result that ``proves`` the store is there resets
        the count."""
        self._health.check(self.role)
        try:
            result = call()
        except (StoreLost, ObjectMissing):
            raise
        except ConfigError as error:
            if op == "check":  # the run's own start-up check: a plain configuration error
                raise
            raise self._health.refused(self.role, self.inner, error).again() from error
        except StoreError as error:
            self._health.failed(self.role, self.inner, error)
            raise
        except OSError as error:
            if error.errno in NO_SPACE:
                raise local_error(error, f"{self.url}: cannot {op} {key}") from error
            failure = StoreError(f"{self.url}: cannot {op} {key} ({error.strerror or error})")
            self._health.failed(self.role, self.inner, error)
            raise failure from error
        except PtifError:
            self._health.answered(self.role)  # a refusal, a lost condition: it is there
            raise
        if proves(result):
            self._health.answered(self.role)
        return result
