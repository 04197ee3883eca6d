"""``ptif watch``: new uploads become markers where no S3 notifications exist.

Two ways to notice them:

- **A folder**, through the operating system's file events (watchfiles: inotify, FSEvents,
  ReadDirectoryChangesW). Idle, it sleeps in the kernel. A file is queued once its size and
  modification time have not changed for the settle time, so a file still being copied in is not
  queued half-written; a file whose modification time is already that old (moved in whole, or
  copied with its times kept) is queued at once.
- **A bucket** (or a folder with ``poll``: network filesystems deliver no events), by listing it
  every ``interval`` seconds. S3 has no "list what changed since", so each pass lists the whole
  source: cheap on a self-hosted S3 server, ~1,000 requests a pass for a million keys on AWS,
  where S3 notifications are the better intake.

The poller keeps a cursor in the process store (``watch/<hash of the source>.json``) so that a
restart does not queue everything again: a snapshot of what the last pass saw, each key's size,
eTag and time (:mod:`ptif.intake.snapshot`, 16 bytes a key). A pass offers every listed image that
is not in the snapshot as it is now. Modification times order nothing: ``rsync -t``,
``cp -p`` and ``mv`` bring files in with old times, a multipart upload's LastModified is when it
started, and two uploads in the same second tie, yet each is a new key, a new eTag or (in a
folder, whose eTag is the inode, size and time in nanoseconds) a new inode. The cursor relies on
no listing order (SeaweedFS sorts ``/`` first) and on no ``StartAfter``.

Before queueing, the output is checked: an output made from the same eTag with a current recipe
needs no marker. Seeing the same version twice writes nothing, and another version replaces the
queued marker even when its modification time is older (:func:`ptif.queue.markers.write_marker`).
"""

from __future__ import annotations

import logging
import os
import stat
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ptif.bounded import run_bounded
from ptif.errors import ConfigError
from ptif.intake.enqueue import Outcome, queue_object
from ptif.intake.scope import bucket_name, is_candidate
from ptif.intake.snapshot import Snapshot, SnapshotBuilder, key_digest, state_digest
from ptif.queue.layout import cursor_key
from ptif.queue.outputs import OutputState, output_state
from ptif.stores.base import NotAFile, ObjectInfo, ObjectMissing, Store
from ptif.stores.folder import RESERVED, FolderStore
from ptif.timeutil import format_time

log = logging.getLogger(__name__)

#: Longest wait between two looks at files that are settling.
MAX_TICK = 1.0
#: watchfiles' Change values.
ADDED, MODIFIED, DELETED = 1, 2, 3


@dataclass(frozen=True)
class WatchOptions:
    settle: float = 5.0
    interval: float = 30.0
    initial_scan: bool = False
    prefix: str = ""
    poll: bool = False
    once: bool = False

    def __post_init__(self) -> None:
        if self.settle < 0 or self.interval <= 0:
            raise ConfigError("the settle time must be ≥ 0 and the poll interval > 0 seconds")


@dataclass
class WatchReport:
    """Counts since the watcher started; ``marked_keys`` keeps the first thousand."""

    marked: int = 0
    not_newer: int = 0
    up_to_date: int = 0
    errors: int = 0
    passes: int = 0
    marked_keys: list[str] = field(default_factory=list)
    #: Set once the watcher is on: file events are being received, or the first pass is done.
    started: threading.Event = field(default_factory=threading.Event, repr=False)

    def count(self, outcome: Outcome, key: str) -> None:
        if outcome is Outcome.MARKED:
            self.marked += 1
            if len(self.marked_keys) < 1000:
                self.marked_keys.append(key)
        elif outcome is Outcome.NOT_NEWER:
            self.not_newer += 1
        elif outcome is Outcome.UP_TO_DATE:
            self.up_to_date += 1

    def to_dict(self) -> dict[str, int]:
        return {
            "marked": self.marked,
            "not_newer": self.not_newer,
            "up_to_date": self.up_to_date,
            "errors": self.errors,
            "passes": self.passes,
        }


@dataclass(frozen=True)
class Queuer:
    """Queues one object of the source unless its output is current."""

    process: Store
    images: Store | None
    queue_prefix: str
    recipes: frozenset[str]
    bucket: str = ""
    origin: str = "watch"

    def offer(self, info: ObjectInfo) -> Outcome:
        current = self.images is not None and (
            output_state(self.images, info, self.recipes) is OutputState.CURRENT
        )
        if current:
            return Outcome.UP_TO_DATE
        written = queue_object(
            self.process, self.queue_prefix, info, origin=self.origin, bucket=self.bucket
        )
        return Outcome.MARKED if written else Outcome.NOT_NEWER


def watch(
    source: Store,
    queuer: Queuer,
    *,
    extensions: tuple[str, ...],
    options: WatchOptions,
    stop: threading.Event,
    report: WatchReport | None = None,
) -> WatchReport:
    """Watch ``source`` until ``stop`` is set (or for one pass with ``options.once``)."""
    report = report or WatchReport()
    if isinstance(source, FolderStore) and not (options.poll or options.once):
        try:
            import watchfiles  # noqa: F401
        except ImportError:
            log.warning("watchfiles is not installed (pip install 'ptif[watch]'): polling instead")
        else:
            FolderWatcher(source, queuer, extensions, options, report).run(stop)
            return report
    Poller(source, queuer, extensions, options, report).run(stop)
    return report


# polling -----------------------------------------------------------------------------------------


@dataclass
class Cursor:
    """What the last pass saw. A cursor that is not ``started`` belongs to a watcher that has
    not yet listed the source; one without a ``snapshot`` (written by an older ptif, or
    unreadable) makes the next pass look at every object."""

    started: bool = False
    snapshot: Snapshot | None = None

    def to_bytes(self, source_id: str) -> bytes:
        snapshot = self.snapshot if self.snapshot is not None else Snapshot()
        facts = {"source": source_id, "updated": format_time(datetime.now(UTC))}
        return snapshot.to_bytes(facts)

    @classmethod
    def parse(cls, data: bytes) -> Cursor:
        if data.startswith(b"{"):  # the high-water cursor of ptif before the snapshot
            log.warning("an older watch cursor: this pass looks at every object once")
            return cls(True, None)
        snapshot, _ = Snapshot.parse(data)
        return cls(True, snapshot)


def source_id(store: Store) -> str:
    """What names a source store wherever the watcher runs: the absolute folder, or the
    endpoint, bucket and prefix."""
    if isinstance(store, FolderStore):
        return f"file://{store.root}"
    endpoint = getattr(store, "endpoint_url", None) or "aws"
    return f"{endpoint} {store.url}"


class _Watcher:
    """What both ways of watching hold: the source, where to queue, what, how, and the counts."""

    def __init__(
        self,
        source: Store,
        queuer: Queuer,
        extensions: tuple[str, ...],
        options: WatchOptions,
        report: WatchReport,
    ) -> None:
        self.source = source
        self.queuer = queuer
        self.extensions = extensions
        self.options = options
        self.report = report


class Poller(_Watcher):
    """Lists the source every ``interval`` seconds and queues what differs from the snapshot."""

    def __init__(
        self,
        source: Store,
        queuer: Queuer,
        extensions: tuple[str, ...],
        options: WatchOptions,
        report: WatchReport,
    ) -> None:
        super().__init__(source, queuer, extensions, options, report)
        self.key = cursor_key(source_id(source), options.prefix)
        self.settle = options.settle if isinstance(source, FolderStore) else 0.0
        self.cursor = self._load()
        self._stop = threading.Event()

    def run(self, stop: threading.Event) -> None:
        self._stop = stop
        full = self.options.initial_scan
        while not stop.is_set():
            try:
                if self.poll(full=full):
                    full = False
            except ConfigError:
                raise  # a missing bucket or permission does not come back by waiting
            except Exception as error:
                self.report.errors += 1
                log.error("%s: this pass failed (%s); trying again", self.source.url, error)
            self.report.started.set()
            if self.options.once:
                return
            stop.wait(self.options.interval)

    def poll(self, *, full: bool = False) -> bool:
        """One pass. ``full`` offers every object, not only those that changed. Saves the
        cursor unless stopped, and returns True if every object was handled."""
        self.report.passes += 1
        earlier = None if full else self.cursor.snapshot
        state = _Pass(earlier, baseline=not self.cursor.started and not full)
        for info, result in run_bounded(self.queuer.offer, self._changed(state)):
            if isinstance(result, ConfigError):
                raise result  # every other object would fail the same way
            if isinstance(result, Exception):
                state.failed += 1
                state.keep_earlier(info.key)  # offered again next pass
                log.error("%s: could not queue: %s", info.key, result, extra={"key": info.key})
            else:
                self.report.count(result, info.key)
                state.builder.add(key_digest(info.key), _state(info))
                _log_outcome(info, result)
        if self._stop.is_set():
            return False  # the listing was cut short: what it did not reach is not gone
        self.report.errors += state.failed
        self._save(Cursor(True, state.builder.build()))
        return not state.failed

    def _changed(self, state: _Pass) -> Iterator[ObjectInfo]:
        """The listed images that are new or changed since the last pass; the others go
        straight into the next snapshot."""
        now = time.time()
        for info in self.source.list(self.options.prefix):
            if self._stop.is_set():
                return
            if not is_candidate(info.key, self.extensions):
                continue
            if self.settle and now - info.modified.timestamp() < self.settle:
                state.keep_earlier(info.key)  # still being written: the next pass sees it again
                continue
            key, seen = key_digest(info.key), _state(info)
            if state.baseline or (state.earlier is not None and state.earlier.get(key) == seen):
                state.builder.add(key, seen)
                continue
            yield info

    def _save(self, cursor: Cursor) -> None:
        if cursor != self.cursor:
            self.queuer.process.put_bytes(self.key, cursor.to_bytes(source_id(self.source)))
            self.cursor = cursor

    def _load(self) -> Cursor:
        try:
            data, _ = self.queuer.process.get_bytes(self.key)
        except ObjectMissing:
            return Cursor()
        try:
            return Cursor.parse(data)
        except (ValueError, KeyError, TypeError, IndexError, RecursionError) as error:
            log.warning(
                "%s: unreadable watch cursor (%s); this pass looks at every object once",
                self.key,
                error,
            )
            return Cursor(True, None)


class _Pass:
    """One pass: the snapshot it compares with and the one it gathers."""

    def __init__(self, earlier: Snapshot | None, *, baseline: bool) -> None:
        self.earlier = earlier
        self.baseline = baseline
        self.builder = SnapshotBuilder()
        self.failed = 0

    def keep_earlier(self, key: str) -> None:
        """Carry what the last pass saw of ``key`` (if anything), so that the next pass
        compares with it again."""
        digest = key_digest(key)
        seen = self.earlier.get(digest) if self.earlier is not None else None
        if seen is not None:
            self.builder.add(digest, seen)


# folder events -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Snapshot:
    size: int
    mtime_ns: int
    since: float


class Settler:
    """Files seen changing, until they have been still for ``settle`` seconds."""

    def __init__(self, settle: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.settle = settle
        self.clock = clock
        self.pending: dict[str, _Snapshot] = {}

    def touch(self, key: str, st: os.stat_result) -> None:
        old = self.pending.get(key)
        if old is None or (old.size, old.mtime_ns) != (st.st_size, st.st_mtime_ns):
            self.pending[key] = _Snapshot(st.st_size, st.st_mtime_ns, self.clock())

    def forget(self, key: str) -> None:
        self.pending.pop(key, None)

    def due(self, stat_of: Callable[[str], os.stat_result | None]) -> list[str]:
        """Keys that have settled (they leave the list); files that are gone are dropped."""
        ready = []
        for key in list(self.pending):
            st = stat_of(key)
            if st is None:
                self.forget(key)
            elif self._settled(key, st):
                ready.append(key)
                self.forget(key)
            else:
                self.touch(key, st)
        return ready

    def _settled(self, key: str, st: os.stat_result) -> bool:
        old = self.pending[key]
        if (old.size, old.mtime_ns) != (st.st_size, st.st_mtime_ns):
            return False
        # Untouched for the settle time by its own clock (the file's modification time), or by
        # ours, which is what counts where the file server's clock runs ahead.
        untouched = time.time() - st.st_mtime_ns / 1e9 >= self.settle
        return untouched or self.clock() - old.since >= self.settle


class FolderWatcher(_Watcher):
    """File events on a folder store; files are queued once they have settled."""

    def __init__(
        self,
        source: FolderStore,
        queuer: Queuer,
        extensions: tuple[str, ...],
        options: WatchOptions,
        report: WatchReport,
    ) -> None:
        super().__init__(source, queuer, extensions, options, report)
        self.source: FolderStore = source
        self.settler = Settler(options.settle)
        # Where the events may name the folder: as given, or with symlinks resolved (macOS
        # reports /private/tmp for /tmp).
        self.roots = (source.root, source.root.resolve())
        self.tick = min(MAX_TICK, max(0.1, options.settle / 4))

    def run(self, stop: threading.Event) -> None:
        from watchfiles import watch as file_events

        events = file_events(
            self.source.root,
            watch_filter=None,
            stop_event=stop,
            rust_timeout=int(self.tick * 1000),
            yield_on_timeout=True,
            debounce=int(self.tick * 1000),
            raise_interrupt=False,
        )
        for changes in events:
            if not self.report.started.is_set():
                # The first tick: the watch is on, so no file slips between it and the scan.
                if self.options.initial_scan:
                    self._scan(self.options.prefix)
                self.report.started.set()
            for change, path in changes:
                self._note(int(change), Path(path))
            self._queue_settled()

    def _scan(self, prefix: str) -> None:
        """Files already there: those untouched for the settle time are queued now, streaming
        through (a folder of millions fits), the others wait with the settling ones."""
        for info, result in run_bounded(self.queuer.offer, self._settled_files(prefix)):
            self._record(info, result)

    def _settled_files(self, prefix: str) -> Iterator[ObjectInfo]:
        for info in self.source.list(prefix):
            if not self._wanted(info.key):
                continue
            if time.time() - info.modified.timestamp() >= self.options.settle:
                yield info
            elif (st := self._stat(info.key)) is not None:
                self.settler.touch(info.key, st)

    def _note(self, change: int, path: Path) -> None:
        key = self._key(path)
        if key is None:
            return
        if change == DELETED:
            self.settler.forget(key)
            return
        st = self._stat(key)
        if st is None:
            return
        if stat.S_ISDIR(st.st_mode):
            if change == ADDED:  # a folder moved in: its files bring no events of their own
                self._scan(f"{key}/")
        elif self._wanted(key):
            self.settler.touch(key, st)

    def _queue_settled(self) -> None:
        for key in self.settler.due(self._stat):
            try:
                info = self.source.head(key)
            except NotAFile as error:  # became a symlink or a FIFO since it settled
                log.warning("%s: not queued: %s", key, error, extra={"key": key})
                continue
            if info is not None:
                self._record(info, _attempt(self.queuer.offer, info))

    def _record(self, info: ObjectInfo, result: Outcome | Exception) -> None:
        if isinstance(result, ConfigError):
            raise result
        if isinstance(result, Exception):
            self.report.errors += 1
            log.error("%s: could not queue: %s", info.key, result, extra={"key": info.key})
        else:
            self.report.count(result, info.key)
            _log_outcome(info, result)

    def _wanted(self, key: str) -> bool:
        return key.startswith(self.options.prefix) and is_candidate(key, self.extensions)

    def _key(self, path: Path) -> str | None:
        inside = [path.relative_to(root) for root in self.roots if path.is_relative_to(root)]
        if not inside:
            return None
        key = inside[0].as_posix()
        if key in ("", ".") or key.startswith(RESERVED):
            return None
        try:
            key.encode("utf-8")
        except UnicodeEncodeError:
            return None
        return key

    def _stat(self, key: str) -> os.stat_result | None:
        """A file or folder of the store; never what a symlink points to (events may come
        from inside a symlinked folder), never a FIFO."""
        return self.source.entry_stat(key)


def _attempt(offer: Callable[[ObjectInfo], Outcome], info: ObjectInfo) -> Outcome | Exception:
    try:
        return offer(info)
    except Exception as error:  # recorded and logged by the caller; the watch goes on
        return error


def _log_outcome(info: ObjectInfo, outcome: Outcome) -> None:
    level = logging.INFO if outcome is Outcome.MARKED else logging.DEBUG
    extra: dict[str, Any] = {"key": info.key, "etag": info.etag, "outcome": outcome.value}
    log.log(level, "%s: %s", info.key, outcome.value, extra=extra)


def queuer_for(
    process: Store, images: Store | None, source: Store, queue_prefix: str, recipes: set[str]
) -> Queuer:
    return Queuer(process, images, queue_prefix, frozenset(recipes), bucket_name(source))


def _state(info: ObjectInfo) -> int:
    return state_digest(info.size, info.etag, info.modified.timestamp())
