"""The worker: ``ptif process``. Claim each marker, fetch, convert, verify, upload, then delete it.

Work starts while the listing still streams, so a backlog of a million markers never waits for
a full listing. Items run on a thread pool twice the size of the conversion slots, so downloads
and uploads of some images overlap the conversion of others and every core stays busy. Each run
works in its own private folder, each item in a private folder inside it
(:mod:`~ptif.queue.workdir`), and reaches libvips only through :mod:`~ptif.queue.conversion`.

The guarantees (DESIGN.md, "Worker guarantees"):

- a marker is deleted only after its pyramid is uploaded, only if it was not replaced
  meanwhile (delete-if-match), and only if the source is still the version converted: one that
  changed meanwhile keeps its marker, rewritten for the new version (``requeued``), so no
  version is lost whatever its file time says; a crash at any point loses nothing;
- a key that converts (or is found current) loses its failure record, and a permanent failure
  of a source that changed meanwhile is no failure: its key is requeued instead;
- each output key is held by one lease at a time, so two workers never convert the same image,
  and ``a/x.png`` and ``a/x.jpg`` cannot race for ``a/x.tif``: the second is an
  ``output-conflict``;
- every marker's attempts are counted in its claim from the claim's first write, so an image
  that crashes the worker every time still ends in ``failed/`` after ``max_attempts``; what is
  not the image's doing (a store error, a full disk: :func:`counts_as_attempt`) is given back
  when the claim is released;
  the marker itself is never rewritten, so its age is the age of its event;
- permanent failures move to ``failed/`` with a code and message; transient ones stay queued;
  a marker that cannot be read, or has a field of the wrong type, goes to ``failed/`` at once;
- each image is fetched into a private folder of its own, and what is published is made from
  exactly the bytes fetched (:mod:`~ptif.queue.fetch`);
- a store that goes away stops the run (:mod:`~ptif.queue.health`): nothing more is claimed,
  what is held is released, and :meth:`Worker.run` raises
  :class:`~ptif.queue.health.StoreLost` once the items in hand have ended.
"""

from __future__ import annotations

import itertools
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from ptif.config import Settings
from ptif.convert.limits import check_page_count
from ptif.convert.profiles import Recipe
from ptif.errors import (
    DISK_FULL,
    INTERNAL,
    INTERRUPTED,
    LEASE_LOST,
    MISSING,
    PRECONDITION_FAILED,
    STORE_UNREACHABLE,
    TOO_MANY_ATTEMPTS,
    PtifError,
    SourceMissingError,
)
from ptif.queue.conversion import convert_labelled, tune_libvips
from ptif.queue.failures import (
    UNSEEN,
    FailureRecord,
    remove_failure,
    write_failure,
    write_unreadable,
)
from ptif.queue.fetch import Fetched, Pin, check_pyramid, fetch
from ptif.queue.health import StoreHealth, StoreLost
from ptif.queue.layout import HASHED_FOLDER
from ptif.queue.leases import Busy, ClaimSweeper, Lease, LeaseKeeper, LeaseLost, Tries, acquire
from ptif.queue.markers import MAX_MARKER_BYTES, BadMarker, Marker, parse_marker, write_marker
from ptif.queue.outputs import (
    OutputState,
    check_owner,
    output_key,
    output_metadata,
    page_key,
    set_state,
)
from ptif.queue.pages import clear_left_out, note_left_out
from ptif.queue.reports import ItemResult, Outcome, RunReport
from ptif.queue.spread import Spread, relister, still_queued
from ptif.queue.workdir import item_folder, work_folder
from ptif.stores.base import ObjectInfo, ObjectMissing, PreconditionFailed, Store, UnsafeKey
from ptif.timeutil import format_time

if TYPE_CHECKING:
    from ptif.convert.engine import ConversionResult

log = logging.getLogger(__name__)

#: How soon to look again at a marker another worker holds: most finish in seconds. Each time
#: it is still held, twice as long (up to 2**BUSY_BACKOFF times, or its lease's expiry).
BUSY_RECHECK_SECONDS = 2.0
BUSY_BACKOFF = 4
#: The names of an item's two files in its work folder.
SOURCE_NAME, PYRAMID_NAME = "source", "pyramid.tif"


@dataclass
class Seen:
    """The version of a source an item worked on, as far as it looked: ``UNSEEN`` before the
    source was looked at, ``None`` when it was not there, else what was headed or fetched."""

    source: ObjectInfo | str | None = UNSEEN

    def note(self, opened: ObjectInfo) -> None:
        self.source = opened


class Stopping(PtifError):
    """The run was asked to stop before this item started."""

    code = INTERRUPTED


@dataclass(frozen=True)
class Stores:
    source: Store
    process: Store
    images: Store


@dataclass(frozen=True)
class RunOptions:
    prefix: str = ""
    limit: int | None = None
    min_age: float = 0.0
    follow: bool = False
    poll_seconds: float = 4.0


def default_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{os.urandom(3).hex()}"


class Worker:
    """One worker process; any number of them may share a queue."""

    def __init__(
        self,
        settings: Settings,
        stores: Stores,
        *,
        owner: str | None = None,
        on_item: Callable[[ItemResult], None] | None = None,
        on_listed: Callable[[int], None] | None = None,
    ) -> None:
        """``on_item`` hears of each item as it ends; ``on_listed`` of how many markers a pass
        listed, once its listing has ended (and of -1 for each that was not this run's)."""
        self.settings = settings
        self.health = StoreHealth(self._lose)
        self.stores = Stores(
            source=self.health.watch("source", stores.source),
            process=self.health.watch("process", stores.process),
            images=self.health.watch("images", stores.images),
        )
        self.owner = owner or default_owner()
        self.run_id = os.urandom(4).hex()
        self.on_item = on_item
        self.on_listed = on_listed
        #: Called as each claim is taken (scale-in protection looks at once).
        self.on_claim: Callable[[], None] | None = None
        self.profile = settings.conversion_profile()
        self.queue = settings.queue_prefix
        self._slots = threading.Semaphore(settings.workers)
        self._stop = threading.Event()
        self._keeper = LeaseKeeper(settings.lease_seconds)
        self._sweeper = ClaimSweeper(self.stores.process)
        self._work = Path(".")
        self._spread = Spread()

    # control ---------------------------------------------------------------------------------

    def stop(self) -> None:
        """Finish what is in hand, start nothing new."""
        self._stop.set()

    def _lose(self, lost: StoreLost) -> None:
        """A store went away: start nothing new; the run raises ``lost`` when it ends."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def holding(self) -> bool:
        """Whether this worker holds a claim now: an image in hand."""
        return bool(self._keeper.held())

    def abandon(self) -> int:
        """Release every lease still held, so other workers can take the work at once."""
        held = self._keeper.held()
        for lease in held:
            self._keeper.drop(lease)
            lease.release()
        self._sweeper.sweep()
        return len(held)

    # the run ---------------------------------------------------------------------------------

    def run(
        self,
        options: RunOptions | None = None,
        on_pass: Callable[[RunReport], None] | None = None,
    ) -> RunReport:
        """One pass over the queue, or with ``follow`` one pass per poll until stopped.

        Each pass that did anything gets its own report (saved, and given to ``on_pass``, so an
        always-on worker still feeds metrics); the returned report adds them all up. If a store
        went away, :class:`~ptif.queue.health.StoreLost` is raised once the items in hand have
        ended, with that report as its ``report``.
        """
        options = options or RunOptions()
        self.stores.process.check_conditional_writes()
        tune_libvips(self.settings.workers)
        total = RunReport(owner=self.owner, run_id=self.run_id)
        with (
            work_folder() as work,
            self._keeper,
            self._sweeper,
            ThreadPoolExecutor(self.settings.workers * 2, thread_name_prefix="ptif") as pool,
        ):
            self._work = work
            for number in itertools.count(1):
                suffix = f"-{number}" if options.follow else ""
                report = RunReport(owner=self.owner, run_id=f"{self.run_id}{suffix}")
                self._pass(pool, options, report)
                self._sweeper.sweep()
                report.finish()
                if not options.follow or report.handled:
                    self.save_report(report)
                    if on_pass:
                        on_pass(report)
                total.absorb(report)
                if not options.follow or self._stop.wait(options.poll_seconds):
                    break
        total.finish()
        if self.health.lost is not None:
            lost = self.health.lost.again()
            lost.report = total
            raise lost
        return total

    def save_report(self, report: RunReport) -> None:
        """Keep the report in the process store; a report that cannot be saved is only logged
        (not even tried when the process store is known to be gone)."""
        if self.health.is_lost("process"):
            log.info("the run report %s is not saved: the process store is gone", report.name)
            return
        try:
            self.stores.process.put_bytes(report.name, report.to_bytes())
        except PtifError as error:
            log.warning("could not save the run report %s: %s", report.name, error)

    def _pass(self, pool: ThreadPoolExecutor, options: RunOptions, report: RunReport) -> None:
        """The listing, then what was busy or left to other workers, once it is due."""
        busy: list[tuple[float, ObjectInfo]] = []
        self._spread = Spread()
        try:
            self._submit_all(pool, self._listing(options, report), options, report, busy)
            later = time.time() + BUSY_RECHECK_SECONDS
            busy += [(later, info) for info in self._spread.deferred]
            while busy and not self._stop.is_set():
                due_at = min(until for until, _ in busy)
                if self._stop.wait(max(0.0, due_at - time.time()) + 0.5):
                    break
                due = [info for until, info in busy if until <= time.time()]
                busy[:] = [(until, info) for until, info in busy if until > time.time()]
                self._submit_all(pool, iter(self._queued_now(due)), options, report, busy)
        except StoreLost:
            return
        except PtifError as error:
            if error.code != STORE_UNREACHABLE:
                raise
            self.health.declare("process", self.stores.process, error)  # no queue, no run
            return

    def _queued_now(self, markers: list[ObjectInfo]) -> list[ObjectInfo]:
        """Those of ``markers`` still queued, in an order of this worker's own."""
        found = still_queued(self.stores.process, self.queue, markers)
        self._spread.shuffle(found)
        return found

    def _submit_all(
        self,
        pool: ThreadPoolExecutor,
        markers: Iterator[ObjectInfo],
        options: RunOptions,
        report: RunReport,
        busy: list[tuple[float, ObjectInfo]],
    ) -> None:
        # As many items in hand as threads: the next marker is chosen as a thread is free to
        # take it, so a stretch that ends leaves no markers of it queued in the pool.
        width = self.settings.workers * 2
        window = threading.BoundedSemaphore(width)
        try:
            for info in markers:
                if self._stop.is_set():
                    break
                window.acquire()
                pool.submit(self._item_accounted, info, options, report, busy, window)
        finally:  # a listing that fails too: the items in hand end before the report does
            for _ in range(width):  # every permit back: every item of this batch is accounted for
                window.acquire()
            for _ in range(width):
                window.release()

    def _item_accounted(
        self,
        info: ObjectInfo,
        options: RunOptions,
        report: RunReport,
        busy: list[tuple[float, ObjectInfo]],
        window: threading.BoundedSemaphore,
    ) -> None:
        """One item, counted before its future completes (done-callbacks may run later than a
        waiter wakes, which lost items from reports)."""
        try:
            self._account(info, self._item(info, options), report, busy)
        except Exception:
            log.exception("%s: could not record the outcome", info.key)
        finally:
            window.release()

    def _account(
        self,
        info: ObjectInfo,
        item: ItemResult,
        report: RunReport,
        busy: list[tuple[float, ObjectInfo]],
    ) -> None:
        if item.outcome in (Outcome.BUSY, Outcome.GONE):
            self._spread.lost(info.key)  # another worker may be on this stretch of the queue
        if item.outcome is Outcome.BUSY and item.busy_until is not None:
            busy.append((item.busy_until, info))
            return
        if item.outcome in (Outcome.OUT_OF_SCOPE, Outcome.NOT_STARTED):
            if item.outcome is Outcome.OUT_OF_SCOPE and self.on_listed:
                self.on_listed(-1)
            return
        report.add(item)
        if self.on_item:
            self.on_item(item)

    def _listing(self, options: RunOptions, report: RunReport) -> Iterator[ObjectInfo]:
        """The markers a run may take. With a prefix, markers not named by their key are looked
        at too (and skipped if their ``key`` is elsewhere): hashed ones under ``_long/``, and the
        original system's, named by basename at the top of the queue."""
        scoped = self.queue + options.prefix
        first: Iterator[ObjectInfo] = self.stores.process.list(scoped)
        if options.limit is None:  # with a limit, the first markers listed, as before
            markers = (info for info in first if info.key.endswith(".json"))
            first = self._spread.order(markers, relister(self.stores.process, scoped))
        listings = [first]
        if options.prefix:
            listings.append(self.stores.process.list(self.queue + HASHED_FOLDER))
            top = self.stores.process.list(self.queue, recursive=False)
            listings.append(info for info in top if not info.key.startswith(scoped))
        count = 0
        try:
            for listing in listings:
                for info in listing:
                    if not info.key.endswith(".json"):
                        continue
                    report.saw_pending(info.modified)
                    if options.limit is not None and count >= options.limit:
                        return
                    count += 1
                    yield info
            for info in self._spread.deferred:  # taken later, in this pass
                report.saw_pending(info.modified)
                count += 1
        finally:
            if self.on_listed and not self._stop.is_set():
                self.on_listed(count)

    # one marker ------------------------------------------------------------------------------

    def _item(self, info: ObjectInfo, options: RunOptions) -> ItemResult:
        started = time.monotonic()
        try:
            result = self._claim_and_work(info, options)
        except PtifError as error:  # a store failing before the claim or as the outcome is filed
            log.debug("%s: will retry (%s): %s", info.key, error.code, error)
            result = ItemResult(info.key, Outcome.RETRY, code=error.code, message=str(error))
        except Exception as error:  # a bug, or a library failing in a way nobody foresaw
            log.exception("%s: unexpected failure; the marker stays for a later run", info.key)
            result = ItemResult(info.key, Outcome.RETRY, code=INTERNAL, message=repr(error))
        result.seconds = time.monotonic() - started
        return result

    def _claim_and_work(self, info: ObjectInfo, options: RunOptions) -> ItemResult:
        if self._stop.is_set():  # stopped after it was listed: leave it as it is
            return ItemResult(info.key, Outcome.NOT_STARTED)
        age = (datetime.now(UTC) - info.modified).total_seconds()
        if age < options.min_age:
            return ItemResult(info.key, Outcome.YOUNG)
        read = self._read(info)
        if isinstance(read, ItemResult):
            return read
        marker, etag = read
        if options.prefix and not marker.key.startswith(options.prefix):
            return ItemResult(info.key, Outcome.OUT_OF_SCOPE)
        got = acquire(
            self.stores.process,
            output_key(marker.key),
            self.owner,
            self.settings.lease_seconds,
            marker=info.key,
            etag=etag,
        )
        if isinstance(got, Busy):
            times = min(self._spread.held(info.key), BUSY_BACKOFF)
            recheck = min(got.expires, time.time() + BUSY_RECHECK_SECONDS * 2**times)
            return ItemResult(info.key, Outcome.BUSY, marker.key, busy_until=recheck)
        self._keeper.hold(got)
        if self.on_claim:
            self.on_claim()
        result = None
        try:
            result = self._claimed(info.key, marker, etag, got)
        except PtifError as error:  # a store failing as the outcome was being filed
            result = ItemResult(info.key, Outcome.RETRY, marker.key, error.code, str(error))
        finally:
            self._keeper.drop(got)
            _release(got, result, self._sweeper)
        return result

    def _read(self, listed: ObjectInfo) -> tuple[Marker, str] | ItemResult:
        """The marker and its eTag, or the outcome when it is gone or unreadable."""
        key = listed.key
        if listed.size > MAX_MARKER_BYTES:
            error = BadMarker(f"{key}: {listed.size:,} bytes, too big to be a marker")
            return self._fail_unreadable(key, listed.etag, b"", error)
        try:
            data, info = self.stores.process.get_bytes(key)
        except ObjectMissing:
            return ItemResult(key, Outcome.GONE)
        try:
            return parse_marker(data, key), info.etag
        except BadMarker as error:
            return self._fail_unreadable(key, info.etag, data, error)

    def _claimed(self, key: str, marker: Marker, etag: str, lease: Lease) -> ItemResult:
        """Work on the marker read (``etag``) under its claim. A marker finished or replaced
        by another worker between the read and the claim needs no look of its own: its
        output is then current (skipped), or the delete-if-match at the end leaves the newer
        marker queued. Only before filing a failure is it read again (:meth:`_still_queued`)."""
        # markers of ptif 0.1 counted their attempts themselves
        tried = max(lease.earlier, marker.attempts)
        if tried >= self.settings.max_attempts:
            if (stale := self._still_queued(key, marker, etag)) is not None:
                return stale
            reason = lease.tries.last_error or marker.fields.get("lastError")
            error = PtifError(
                f"{marker.key}: gave up after {tried} attempts; last: "
                f"{reason or 'it never finished (worker crashes?)'}",
                code=TOO_MANY_ATTEMPTS,
            )
            seen = self._look(marker.key)
            return self._fail(key, marker, etag, error, lease, tried, lease.tries, seen)
        seen = Seen()
        try:
            result = self._convert(marker, lease, seen)
        except PtifError as error:
            if not error.permanent:
                log.debug("%s: will retry (%s): %s", marker.key, error.code, error)
                return ItemResult(key, Outcome.RETRY, marker.key, error.code, str(error))
            if (now := self._changed(marker.key, seen)) is not None:
                failed = ItemResult(key, Outcome.REQUEUED, marker.key, error.code, str(error))
                return self._requeue(key, etag, marker, now, failed, lease)
            return self._fail(key, marker, etag, error, lease, tried + 1, seen=seen)
        if (now := self._changed(marker.key, seen)) is not None:
            return self._requeue(key, etag, marker, now, result, lease)
        return self._finish(key, etag, result, lease)

    def _still_queued(self, key: str, marker: Marker, etag: str) -> ItemResult | None:
        """None if the marker is still the one read, else the outcome: gone (finished by
        another worker), replaced (read it again soon) or a store that failed."""
        try:
            now = self.stores.process.head(key)
        except PtifError as unreachable:
            return ItemResult(key, Outcome.RETRY, marker.key, unreachable.code, str(unreachable))
        if now is None:
            return ItemResult(key, Outcome.GONE)
        if now.etag != etag:
            return ItemResult(key, Outcome.BUSY, marker.key, busy_until=time.time())
        return None

    def _look(self, source_key: str) -> Seen:
        """The source's version for a failure record, if the store says (a key no store takes
        or a store that fails leaves it unseen: the record then names the marker's)."""
        try:
            return Seen(self.stores.source.head(source_key))
        except PtifError:
            return Seen()

    def _changed(self, source_key: str, seen: Seen) -> ObjectInfo | None:
        """The source as it is now if it is another version than the one ``seen`` (it came back,
        or was replaced, while being worked on), else None. A source deleted since is no new
        version: nothing is left to convert."""
        if seen.source == UNSEEN:
            return None
        now = self.stores.source.head(source_key)
        if now is None:
            return None
        if isinstance(seen.source, ObjectInfo) and (now.etag, now.size) == (
            seen.source.etag,
            seen.source.size,
        ):
            return None
        return now

    def _convert(self, marker: Marker, lease: Lease, seen: Seen) -> ItemResult:
        """Skip a source whose output is current; else convert the version the download
        opens. With no output at all there is nothing to compare: the source is not looked at
        first, the download's own answer says which version it is and how big (checked before
        its first byte is written)."""
        source_key = marker.key
        recipe = self.profile.resolve(marker.fields)
        existing = self._output(source_key)
        if existing is None:
            return self._transform(source_key, None, recipe, lease, seen)
        source = self.stores.source.head(source_key)
        seen.source = source
        if source is None:
            raise self._source_missing(source_key)
        check_owner(existing, source_key)
        state = set_state(self.stores.images, existing, source_key, source.etag, {recipe.hash})
        if state is OutputState.CURRENT:
            return ItemResult("", Outcome.SKIPPED, source_key)
        return self._transform(source_key, source.size, recipe, lease, seen)

    def _output(self, source_key: str) -> ObjectInfo | None:
        """The output as the images store has it. A key it refuses is refused by the source
        store first if that refuses it too (as when the source was looked at first), so the
        failure names what the operator must rename."""
        try:
            return self.stores.images.head(output_key(source_key))
        except UnsafeKey:
            self.stores.source.head(source_key)
            raise

    def _source_missing(self, source_key: str) -> SourceMissingError:
        self.health.confirm("source", self.stores.source)  # not found, or not there at all?
        return SourceMissingError(
            f"{self.stores.source.url}: {source_key} is not there (deleted after it was "
            "queued?); upload it again, or delete its failure record"
        )

    def _transform(
        self, source_key: str, size: int | None, recipe: Recipe, lease: Lease, seen: Seen
    ) -> ItemResult:
        """Fetch into the item's own folder (if its ``size``, known already or from the
        download's answer, is within the limit and fits the disk), convert, and publish what
        was made from exactly the bytes fetched. With ``all_pages``, pages 2 and on are
        converted and published one by one, and page 1 last: an output set is current only once
        every page is there."""
        with item_folder(self._work) as folder:
            try:
                fetched = fetch(
                    self.stores.source,
                    source_key,
                    folder / SOURCE_NAME,
                    size=size,
                    max_bytes=self.settings.max_source_size,
                    opened=seen.note,
                )
            except ObjectMissing:
                seen.source = None
                raise self._source_missing(source_key) from None
            seen.source = fetched.info
            first = _Page(folder / PYRAMID_NAME, 1)
            first.made, result = self._convert_fetched(fetched, first.path, recipe)
            pages = result.pages
            every = recipe.all_pages and pages > 1
            bytes_out = result.bytes
            if every:
                check_page_count(source_key, pages)
                for number in range(2, pages + 1):
                    page = _Page(folder / f"page-{number}.tif", number)
                    page.made, other = self._convert_fetched(fetched, page.path, recipe, number)
                    self._publish(fetched, page, other, pages, lease)
                    bytes_out += other.bytes
            self._publish(fetched, first, result, pages if every else 1, lease)
        self._note_pages(source_key, fetched.info.etag, pages, every)
        return ItemResult(
            "", Outcome.CONVERTED, source_key, bytes_in=fetched.info.size, bytes_out=bytes_out,
            pages=pages, pages_done=pages if every else 1, encoding=result.encoding.label,
        )  # fmt: skip

    def _publish(
        self, fetched: Fetched, page: _Page, result: ConversionResult, pages: int, lease: Lease
    ) -> None:
        """Upload one page's pyramid, made from the bytes fetched, under its key (``pages``:
        how many pyramids its set holds)."""
        source_key = fetched.key
        if lease.lost:
            raise LeaseLost(f"{source_key}: the lease was lost while converting")
        fetched.check()
        target = page_key(source_key, page.number)
        if page.number > 1:
            check_owner(self.stores.images.head(target), source_key)
        metadata = output_metadata(
            result.metadata(), source_key, fetched.info.etag,
            page=page.number, pages=pages, source_pages=result.pages,
        )  # fmt: skip
        assert page.made is not None  # set by its conversion
        check_pyramid(source_key, page.path, page.made)
        self.stores.images.put_file(target, page.path, metadata)
        page.path.unlink(missing_ok=True)

    def _note_pages(self, source_key: str, etag: str, pages: int, every: bool) -> None:
        """Say so when pages were left out; forget it when none are any more. A note that
        cannot be written is only logged: the pyramid is there, the run report says it too."""
        if pages <= 1:
            return
        try:
            if every:
                clear_left_out(self.stores.process, source_key)
                return
            log.warning(
                "%s: %d pages; only page 1 was converted (set all_pages, or run "
                "'ptif process --all-pages', for one pyramid per page)",
                source_key, pages,
            )  # fmt: skip
            note_left_out(self.stores.process, source_key, etag, pages)
        except PtifError as error:
            log.warning("%s: could not note its pages left out: %s", source_key, error)

    def _convert_fetched(
        self, fetched: Fetched, dst: Path, recipe: Recipe, page: int = 1
    ) -> tuple[Pin, ConversionResult]:
        """Convert in one of the run's slots (the attempt was counted when it was claimed). A
        permanent failure is the image's only if its source is still the one fetched."""
        with self._slots:
            if self._stop.is_set():
                raise Stopping(f"{fetched.key}: the run stopped before converting it")
            try:
                result = convert_labelled(
                    fetched.path, dst, recipe, fetched.key, self.settings.limits(), page,
                    fetched.info.etag,
                )  # fmt: skip
            except PtifError as error:
                if error.permanent:
                    fetched.check()
                raise
        return Pin.of(dst), result

    def _finish(self, key: str, etag: str, result: ItemResult, lease: Lease) -> ItemResult:
        """The key is done: its failure record goes, if it has one (it describes the past),
        then its marker, unless that was replaced meanwhile."""
        result.marker_key = key
        self._clear_failure(lease, result.source_key)
        try:
            self.stores.process.delete(key, if_match=etag)
        except PreconditionFailed:
            log.info("%s: replaced while converting; the newer marker stays queued", key)
            if result.outcome is Outcome.CONVERTED:
                result.outcome = Outcome.REPLACED
        except ObjectMissing:
            pass
        return result

    def _requeue(
        self,
        key: str,
        etag: str,
        marker: Marker,
        now: ObjectInfo,
        result: ItemResult,
        lease: Lease,
    ) -> ItemResult:
        """The source became another version (``now``) while its marker was worked on: what was
        made or found is not its pyramid, so the marker stays, rewritten for that version (a
        marker replaced meanwhile by intake is left as it is), and no failure is recorded."""
        log.info("%s: the source changed while it was converted; queued again", marker.key)
        renewed = marker.with_fields(
            eTag=now.etag, size=now.size, eventTime=format_time(now.modified), sequencer=None
        )
        self._clear_failure(lease, marker.key)
        try:
            self.stores.process.put_bytes(key, renewed.to_bytes(), if_match=etag)
        except PreconditionFailed:
            log.info("%s: replaced meanwhile; the newer marker stays queued", key)
        except ObjectMissing:
            write_marker(self.stores.process, renewed, self.queue)
        result.marker_key = key
        result.outcome = Outcome.REQUEUED
        result.source_key = marker.key
        return result

    def _clear_failure(self, lease: Lease, source_key: str | None) -> None:
        """Remove the failure record of ``source_key`` if it may have one: its claim names
        every source of its output that has one (:meth:`Lease.note_failure`)."""
        if source_key and lease.has_failure(source_key):
            remove_failure(self.stores.process, source_key)
            lease.forget_failure(source_key)

    # failures --------------------------------------------------------------------------------

    def _fail(
        self,
        key: str,
        marker: Marker,
        etag: str,
        error: PtifError,
        lease: Lease,
        attempts: int,
        earlier: Tries | None = None,
        seen: Seen | None = None,
    ) -> ItemResult:
        """File the failure (with the last error of the ``earlier`` tries, and the version of
        the source that failed), named first in the claim, which then stays; drop the
        marker."""
        version = seen.source if seen is not None else UNSEEN
        record = FailureRecord(marker, error, key, attempts, self.owner, earlier, version)
        lease.note_failure(marker.key)
        write_failure(self.stores.process, record)
        self._delete_marker(key, etag)
        log.debug("%s: failed (%s): %s", marker.key, error.code, error)
        return ItemResult(key, Outcome.FAILED, marker.key, error.code, str(error))

    def _fail_unreadable(self, key: str, etag: str, data: bytes, error: BadMarker) -> ItemResult:
        write_unreadable(self.stores.process, key, data, error, worker=self.owner)
        self._delete_marker(key, etag)
        return ItemResult(key, Outcome.FAILED, None, error.code, str(error))

    def _delete_marker(self, key: str, etag: str) -> None:
        try:
            self.stores.process.delete(key, if_match=etag)
        except (PreconditionFailed, ObjectMissing):
            log.info("%s: replaced meanwhile; the newer marker stays queued", key)


class _Page:
    """One page's pyramid in the item's folder, and the pin of the file its conversion made."""

    def __init__(self, path: Path, number: int) -> None:
        self.path = path
        self.number = number
        self.made: Pin | None = None


def counts_as_attempt(code: str | None) -> bool:
    """Whether a transient failure with ``code`` counts as the image's attempt. A store that
    fails, a full disk, a race lost to another writer or worker, a run that stopped: none is
    the image's doing, so none pushes it towards ``too-many-attempts``."""
    return code not in (
        STORE_UNREACHABLE, DISK_FULL, MISSING, PRECONDITION_FAILED, LEASE_LOST, INTERRUPTED
    )  # fmt: skip


def _release(lease: Lease, result: ItemResult | None, sweeper: ClaimSweeper) -> None:
    """Let go of the claim. After a transient failure (or a bug) it stays behind, released,
    with the attempts and the error, so the next try counts on from there; an attempt that
    failed for a reason that is not the image's (:func:`counts_as_attempt`) is not counted.
    A claim with nothing left to remember goes with the sweeper's next batched delete. A
    release the process store refuses is left to expire."""
    try:
        if result is None:
            lease.release_noting(INTERNAL, "an unexpected failure; see the worker's log")
        elif result.outcome is Outcome.RETRY and result.code == Stopping.code:
            lease.release_untried()
        elif result.outcome is Outcome.RETRY:
            counted = counts_as_attempt(result.code)
            lease.release_noting(result.code or INTERNAL, result.message or "", counted=counted)
        elif lease.done():
            sweeper.add(lease)
        else:
            lease.release()
    except PtifError as error:
        log.debug("%s: not released (%s); it expires by itself", lease.subject, error)
