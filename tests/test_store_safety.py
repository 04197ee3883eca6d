"""Only regular files inside the stores: what someone who can put files in a folder store (a
shared drive, an rsync target) or name keys in a bucket can make ptif do.

A folder store never follows a symlink below its root, never opens a FIFO or a device, and never
reads, writes or deletes through a symlinked folder; an S3 store refuses keys that some servers
and every folder store would normalise (``a/../b``, ``a//b``) before any request. The files are
real (FIFOs, sockets, device nodes, symlinks under ``tmp_path``), the bucket is the session's
SeaweedFS, the worker and the commands run for real. Every test checks that what lies outside the
stores is untouched: same names, same bytes.
"""

from __future__ import annotations

import gc
import json
import os
import socket
import stat
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from corpus import jpeg
from s3_server import S3Server
from store_helpers import (
    QUEUE,
    Bench,
    add_images,
    failures,
    folder_bench,
    keys,
    pending,
    read_json,
    run_ptif,
    s3_bench,
    verify_output,
)

from ptif.config import parse_extensions
from ptif.errors import NOT_A_FILE, UNSUPPORTED, ConfigError
from ptif.intake.watch import WatchOptions, WatchReport, queuer_for, watch
from ptif.queue.layout import FAILED_PREFIX, marker_key
from ptif.queue.markers import new_marker, write_marker
from ptif.queue.outputs import OutputState, output_key, output_state
from ptif.stores import (
    FolderStore,
    NotAFile,
    ObjectInfo,
    PreconditionFailed,
    Store,
    UnsafeKey,
    open_store,
)
from ptif.stores.folder import META_DIR, TMP_DIR
from ptif.stores.s3 import S3Store

SMALL = (300, 200)
#: Far more than a refusal takes; a FIFO opened for reading would block for ever.
HANG_GUARD_S = 60.0
root_only = pytest.mark.skipif(os.geteuid() != 0, reason="making device nodes needs root")


# -- a hostile folder ------------------------------------------------------------------------------


class Outside:
    """Files outside every store that hostile entries point at; :meth:`intact` proves nothing
    there was read into a store, changed, added or removed."""

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "dir").mkdir(parents=True)
        (root / "secret.jpg").write_bytes(jpeg(*SMALL, seed=9))
        (root / "dir" / "inner.jpg").write_bytes(jpeg(*SMALL, seed=8))
        (root / "dir" / "marker.json").write_bytes(b'{"key": "good.jpg"}')
        self.before = self.snapshot()

    def snapshot(self) -> dict[str, bytes]:
        return {
            p.relative_to(self.root).as_posix(): p.read_bytes()
            for p in sorted(self.root.rglob("*"))
            if p.is_file()
        }

    def intact(self) -> bool:
        return self.snapshot() == self.before


@pytest.fixture
def outside(tmp_path: Path) -> Outside:
    return Outside(tmp_path / "outside")


def plant(folder: Path, outside: Outside) -> dict[str, str]:
    """Every kind of entry that is not a regular file, under ``folder``; what each one is."""
    folder.mkdir(parents=True, exist_ok=True)
    os.mkfifo(folder / "x.jpg")
    (folder / "link.jpg").symlink_to(outside.root / "secret.jpg")
    (folder / "linkdir").symlink_to(outside.root / "dir")
    (folder / "dangling.jpg").symlink_to(outside.root / "nothing.jpg")
    with tempfile.TemporaryDirectory(dir="/tmp") as short:  # a socket's path has 108 bytes
        listening = socket.socket(socket.AF_UNIX)
        listening.bind(f"{short}/s")
        listening.close()  # the socket file stays
        os.rename(f"{short}/s", folder / "sock.jpg")
    planted = {
        "x.jpg": "FIFO",
        "link.jpg": "symlink",
        "dangling.jpg": "symlink",
        "sock.jpg": "socket",
        "linkdir/inner.jpg": "symlink",
    }
    if os.geteuid() == 0:
        os.mknod(folder / "zero.jpg", 0o600 | stat.S_IFCHR, os.makedev(1, 5))  # /dev/zero
        planted["zero.jpg"] = "device"
    return planted


def within(seconds: float, action: Callable[[], Any]) -> Any:
    """``action``'s result or exception, failing the test if it takes longer than ``seconds``
    (on a daemon thread, so a hang cannot keep the test process alive)."""
    outcome: list[Any] = []

    def run() -> None:
        try:
            outcome.append(action())
        except BaseException as error:  # handed to the test's thread
            outcome.append(error)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still blocked after {seconds} s"
    return outcome[0]


# -- the folder store ------------------------------------------------------------------------------


def test_listing_shows_only_regular_files(tmp_path: Path, outside: Outside) -> None:
    store = FolderStore(tmp_path / "s")
    store.put_bytes("good.jpg", b"good")
    store.put_bytes("deep/er.jpg", b"deeper")
    plant(tmp_path / "s", outside)
    plant(tmp_path / "s" / "deep", outside)
    assert [info.key for info in within(HANG_GUARD_S, lambda: list(store.list()))] == [
        "deep/er.jpg",
        "good.jpg",
    ]
    assert keys(store, "linkdir/") == [] and keys(store, "deep/linkdir/") == []
    assert outside.intact()


def test_listing_warns_once_about_each_skipped_entry(
    tmp_path: Path, outside: Outside, caplog: pytest.LogCaptureFixture
) -> None:
    store = FolderStore(tmp_path / "s")
    plant(tmp_path / "s", outside)
    list(store.list())
    list(store.list())
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("link.jpg: a symlink" in message for message in warned)
    assert any("x.jpg: a FIFO" in message for message in warned)
    assert len(warned) == len(set(warned))  # watch lists every pass: once is enough


@pytest.mark.parametrize(
    "read",
    [
        lambda store, key, tmp: store.get_bytes(key),
        lambda store, key, tmp: store.get_file(key, tmp / "got"),
        lambda store, key, tmp: store.head(key),
    ],
    ids=["get_bytes", "get_file", "head"],
)
def test_reading_what_is_not_a_regular_file_is_refused_at_once(
    tmp_path: Path, outside: Outside, read: Callable[[Store, str, Path], object]
) -> None:
    store = FolderStore(tmp_path / "s")
    planted = plant(tmp_path / "s", outside)
    for key, kind in planted.items():
        error = within(HANG_GUARD_S, lambda key=key: read(store, key, tmp_path))
        assert isinstance(error, NotAFile), (key, error)
        assert error.code == NOT_A_FILE and error.permanent
        assert kind in str(error) and key in str(error)
    assert not (tmp_path / "got").exists() and not (tmp_path / "got.part").exists()
    assert outside.intact()


def test_a_store_that_is_only_read_is_never_written(tmp_path: Path, outside: Outside) -> None:
    """A source store: opening, listing and reading leave no ``.ptif-tmp`` (or anything else)
    behind, which also means a hostile ``.ptif-tmp`` symlink there is never used."""
    source = tmp_path / "source"
    source.mkdir()
    (source / "a.jpg").write_bytes(b"a")
    (source / TMP_DIR).symlink_to(outside.root / "dir")
    before = sorted(p.name for p in source.iterdir())
    store = FolderStore(source)
    assert [info.key for info in store.list()] == ["a.jpg"]
    assert store.get_bytes("a.jpg")[0] == b"a"
    assert sorted(p.name for p in source.iterdir()) == before
    assert outside.intact()


def test_writes_never_go_through_a_symlinked_folder(tmp_path: Path, outside: Outside) -> None:
    store = FolderStore(tmp_path / "s")
    (tmp_path / "s" / "linkdir").symlink_to(outside.root / "dir")
    attempts: list[Callable[[], object]] = [
        lambda: store.put_bytes("linkdir/new.json", b"x"),
        lambda: store.put_bytes("linkdir/marker.json", b"x"),
        lambda: store.put_bytes("linkdir/marker.json", b"x", if_none_match=True),
        lambda: store.put_file("linkdir/inner.jpg", Path(__file__)),
        lambda: store.put_bytes("linkdir/deeper/new.json", b"x"),
        lambda: store.delete("linkdir/marker.json"),
        lambda: store.delete("linkdir/marker.json", if_match="anything"),
    ]
    for attempt in attempts:
        with pytest.raises(NotAFile, match="the folder linkdir is a symlink"):
            attempt()
    assert outside.intact()
    assert (tmp_path / "s" / "linkdir").is_symlink()  # refused, not replaced


def test_a_symlink_at_a_key_is_no_object(tmp_path: Path, outside: Outside) -> None:
    """Deleting leaves it, conditions find nothing, and a plain write replaces the link itself:
    the file it points to is never read, changed or removed."""
    store = FolderStore(tmp_path / "s")
    link = tmp_path / "s" / "link.jpg"
    link.symlink_to(outside.root / "secret.jpg")
    store.delete("link.jpg")
    with pytest.raises(PreconditionFailed):
        store.delete("link.jpg", if_match="anything")
    with pytest.raises(PreconditionFailed):
        store.put_bytes("link.jpg", b"new", if_match="anything")
    with pytest.raises(PreconditionFailed):
        store.put_bytes("link.jpg", b"new", if_none_match=True)
    assert link.is_symlink() and outside.intact()
    etag = store.put_bytes("link.jpg", b"new")
    data, info = store.get_bytes("link.jpg")
    assert not link.is_symlink() and (data, info.etag) == (b"new", etag)
    assert outside.intact()


def test_store_folders_that_are_symlinks_are_refused(tmp_path: Path, outside: Outside) -> None:
    """``.ptif-tmp`` (staging, lock) and ``.ptif-meta`` (sidecars) belong to the store: a link
    there is a setting problem, not an image's, and nothing is written through it."""
    staged = FolderStore(tmp_path / "a")
    (tmp_path / "a" / TMP_DIR).symlink_to(outside.root / "dir")
    with pytest.raises(ConfigError, match=f"{TMP_DIR} is a symlink"):
        staged.put_bytes("k", b"x")
    lock = FolderStore(tmp_path / "b")
    (tmp_path / "b" / TMP_DIR).mkdir()
    (tmp_path / "b" / TMP_DIR / "lock").symlink_to(outside.root / "secret.jpg")
    with pytest.raises(ConfigError, match="lock is a symlink"):
        lock.put_bytes("k", b"x")
    sidecars = FolderStore(tmp_path / "c", xattrs=False)
    (tmp_path / "c" / META_DIR).mkdir()
    (tmp_path / "c" / META_DIR / "d").symlink_to(outside.root / "dir")
    with pytest.raises(ConfigError, match=f"under {META_DIR} is a symlink"):
        sidecars.put_bytes("d/marker", b"x", metadata={"m": "1"})
    assert outside.intact()


def test_a_sidecar_that_is_not_a_file_is_ignored(tmp_path: Path) -> None:
    store = FolderStore(tmp_path / "s", xattrs=False)
    store.put_bytes("a.jpg", b"a")
    (tmp_path / "s" / META_DIR).mkdir()
    os.mkfifo(tmp_path / "s" / META_DIR / "a.jpg.json")
    info = within(HANG_GUARD_S, lambda: store.head("a.jpg"))
    assert isinstance(info, ObjectInfo) and info.metadata == {}


def test_the_root_may_be_a_symlink(tmp_path: Path) -> None:
    """Operators mount stores through links: the root's own link is resolved once, at open."""
    (tmp_path / "disk").mkdir()
    (tmp_path / "mounted").symlink_to(tmp_path / "disk")
    store = FolderStore(tmp_path / "mounted")
    store.put_bytes("a/b.tif", b"pyramid")
    assert (tmp_path / "disk" / "a" / "b.tif").read_bytes() == b"pyramid"
    assert [info.key for info in store.list()] == ["a/b.tif"]
    store.delete("a/b.tif")
    assert not (tmp_path / "disk" / "a").exists()


def test_published_files_get_the_usual_mode(tmp_path: Path) -> None:
    """0666 less the umask, like any file a program makes, so an image server running as
    another user can read the pyramids (a private temporary file's 0600 could not)."""
    umask = os.umask(0o022)
    try:
        store = FolderStore(tmp_path / "s")
        store.put_bytes("a.tif", b"x")
        store.put_bytes("b.tif", b"x", if_none_match=True)
    finally:
        os.umask(umask)
    for name in ("a.tif", "b.tif"):
        assert stat.S_IMODE((tmp_path / "s" / name).stat().st_mode) == 0o644


@pytest.mark.parametrize("swap", ["symlink", "fifo"])
def test_a_file_swapped_between_the_check_and_the_open_is_not_read(
    tmp_path: Path, outside: Outside, monkeypatch: pytest.MonkeyPatch, swap: str
) -> None:
    """The race a check-then-open-by-path loses: the file is a regular one when looked at and
    something else when opened. The open itself refuses a link (O_NOFOLLOW) and does not wait
    for a FIFO's writer (O_NONBLOCK); fstat of what was opened decides."""
    store = FolderStore(tmp_path / "s")
    store.put_bytes("a.jpg", b"a")
    path = tmp_path / "s" / "a.jpg"
    real_lstat = os.lstat

    def racing_lstat(name: Any, *args: Any, **kwargs: Any) -> os.stat_result:
        st = real_lstat(name, *args, **kwargs)
        if name == "a.jpg" and not path.is_symlink() and stat.S_ISREG(st.st_mode):
            path.unlink()
            if swap == "symlink":
                path.symlink_to(outside.root / "secret.jpg")
            else:
                os.mkfifo(path)
        return st

    monkeypatch.setattr(os, "lstat", racing_lstat)
    error = within(HANG_GUARD_S, lambda: store.get_bytes("a.jpg"))
    assert isinstance(error, NotAFile), error
    assert outside.intact()


def test_no_descriptor_is_left_open(tmp_path: Path, outside: Outside) -> None:
    store = FolderStore(tmp_path / "s", xattrs=False)
    store.put_bytes("a/b/c.jpg", b"c", metadata={"m": "1"})
    planted = plant(tmp_path / "s" / "a", outside)
    gc.collect()  # what earlier tests left for the collector closes its files now, not midway
    open_before = len(os.listdir("/proc/self/fd"))
    for _ in range(20):
        assert [info.key for info in store.list()] == ["a/b/c.jpg"]
        assert store.get_bytes("a/b/c.jpg")[1].metadata == {"m": "1"}
        for key in planted:
            with pytest.raises(NotAFile):
                store.head(f"a/{key}")
            with pytest.raises(NotAFile):
                store.put_bytes(f"a/linkdir/{key}", b"x")
        assert store.head("a/b/missing.jpg") is None
        store.put_bytes("a/b/d.jpg", b"d")
        store.delete("a/b/d.jpg")
    assert len(os.listdir("/proc/self/fd")) == open_before
    assert outside.intact()


# -- the worker ----------------------------------------------------------------------------------


def queue_marker(bench: Bench, key: str) -> None:
    """A marker as intake of an older version (or an original-system marker) left it: written
    without looking at what the key names."""
    assert write_marker(bench.process, new_marker(key, origin="mark"), QUEUE)


def test_the_worker_fails_what_is_not_a_file_at_once_and_converts_the_rest(
    tmp_path: Path, outside: Outside
) -> None:
    bench = folder_bench(tmp_path)
    add_images(bench, {"good.jpg": SMALL, "box/fine.jpg": SMALL})
    planted = plant(tmp_path / "source", outside)
    for key in planted:
        queue_marker(bench, key)
    started = time.monotonic()
    done = run_ptif(bench, "process", "--json", timeout=HANG_GUARD_S * 2)
    elapsed = time.monotonic() - started
    assert done.returncode == 1, done.stderr  # finished; some images failed
    assert elapsed < HANG_GUARD_S
    verify_output(bench, "good.jpg", SMALL)
    verify_output(bench, "box/fine.jpg", SMALL)
    failed = failures(bench)
    assert sorted(failed) == sorted(planted)
    for key, kind in planted.items():
        record = failed[key]
        assert record["code"] == NOT_A_FILE and record["attempts"] == 1, record
        assert kind in record["message"], record
    assert pending(bench) == []
    assert sorted(keys(bench.images)) == ["box/fine.tif", "good.tif"]
    assert outside.intact()


def test_symlinks_in_the_source_are_neither_marked_nor_converted(
    tmp_path: Path, outside: Outside
) -> None:
    bench = folder_bench(tmp_path)
    bench.source.put_bytes("good.jpg", jpeg(*SMALL))
    plant(tmp_path / "source", outside)
    marked = run_ptif(bench, "mark", "--json")
    assert marked.returncode == 0, marked.stderr
    assert json.loads(marked.stdout)["marked"] == 1
    assert keys(bench.process, QUEUE) == [marker_key("good.jpg", QUEUE)]
    # Should a marker name a link anyway (an older ptif marked it), it fails and says why.
    queue_marker(bench, "link.jpg")
    queue_marker(bench, "linkdir/inner.jpg")
    report = bench.run()
    assert report.converted == ["good.jpg"]
    failed = failures(bench)
    assert "link.jpg is a symlink" in failed["link.jpg"]["message"]
    assert "the folder linkdir is a symlink" in failed["linkdir/inner.jpg"]["message"]
    assert keys(bench.images) == ["good.tif"]
    assert not (tmp_path / "images" / "linkdir").exists()
    assert outside.intact()


def test_symlinked_folders_in_the_process_store_are_never_followed(
    tmp_path: Path, outside: Outside
) -> None:
    """Markers behind a link in the queue are not taken (nor deleted, nor copied into failure
    records); a failure record that would land behind a link is not written."""
    bench = folder_bench(tmp_path)
    add_images(bench, {"good.jpg": SMALL})
    (tmp_path / "process" / QUEUE / "evil").symlink_to(outside.root / "dir")
    bench.source.put_bytes("box/bad.jpg", b"not an image")
    queue_marker(bench, "box/bad.jpg")
    (tmp_path / "process" / FAILED_PREFIX).mkdir()
    (tmp_path / "process" / FAILED_PREFIX / "box").symlink_to(outside.root / "dir")
    report = bench.run()
    assert report.converted == ["good.jpg"]
    assert report.counts["failed"] == 0 and report.counts["retry-later"] == 1
    assert pending(bench) == [marker_key("box/bad.jpg", QUEUE)]  # kept until the link is gone
    assert outside.intact()
    (tmp_path / "process" / FAILED_PREFIX / "box").unlink()
    report = bench.run()
    assert failures(bench)["box/bad.jpg"]["code"] == UNSUPPORTED
    assert pending(bench) == [] and outside.intact()


def test_an_images_folder_that_is_a_symlink_fails_its_images(
    tmp_path: Path, outside: Outside
) -> None:
    bench = folder_bench(tmp_path)
    add_images(bench, {"pub/a.jpg": SMALL, "ok.jpg": SMALL})
    (tmp_path / "images" / "pub").symlink_to(outside.root / "dir")
    report = bench.run()
    assert report.converted == ["ok.jpg"]
    record = failures(bench)["pub/a.jpg"]
    assert record["code"] == NOT_A_FILE and "the folder pub is a symlink" in record["message"]
    assert outside.intact()


# -- intake ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "command",
    [
        ("mark",),
        ("mark", "--stale"),
        ("watch", "--poll", "--once", "--initial-scan", "--settle", "0"),
        ("reconcile",),
    ],
    ids=["mark", "mark-stale", "watch-poll", "reconcile"],
)
def test_intake_skips_what_is_not_a_file(
    tmp_path: Path, outside: Outside, command: tuple[str, ...]
) -> None:
    bench = folder_bench(tmp_path)
    bench.source.put_bytes("good.jpg", jpeg(*SMALL))
    bench.source.put_bytes("deep/fine.png", b"png bytes")
    plant(tmp_path / "source", outside)
    plant(tmp_path / "source" / "deep", outside)
    done = run_ptif(bench, *command, timeout=HANG_GUARD_S * 2)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    queued = {read_json(bench.process, key)["key"] for key in keys(bench.process, QUEUE)}
    assert queued == {"good.jpg", "deep/fine.png"}
    assert "x.jpg" in done.stderr and "FIFO" in done.stderr  # the operator is told why
    assert outside.intact()


def test_file_events_from_links_and_fifos_queue_nothing(tmp_path: Path, outside: Outside) -> None:
    """The watcher by file events: what appears in a symlinked folder, and FIFOs or links that
    appear, are not queued; the watch goes on and queues the real file."""
    bench = folder_bench(tmp_path)
    source = tmp_path / "source"
    stop = threading.Event()
    report = WatchReport()
    queuer = queuer_for(bench.process, bench.images, bench.source, QUEUE, {"any"})
    options = WatchOptions(settle=0.2)
    extensions = parse_extensions("jpg")
    thread = threading.Thread(
        target=watch,
        args=(bench.source, queuer),
        kwargs={"extensions": extensions, "options": options, "stop": stop, "report": report},
        daemon=True,
    )
    thread.start()
    try:
        assert report.started.wait(10)
        plant(source, outside)
        (outside.root / "dir" / "late.jpg").write_bytes(b"appears behind the link")
        (source / "real.jpg").write_bytes(b"real")
        deadline = time.monotonic() + HANG_GUARD_S
        while not keys(bench.process, QUEUE) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.0)  # events of the others, had they been queued, come as fast
        assert keys(bench.process, QUEUE) == [marker_key("real.jpg", QUEUE)]
        assert thread.is_alive() and report.errors == 0
    finally:
        stop.set()
        thread.join(10)
    (outside.root / "dir" / "late.jpg").unlink()
    assert outside.intact()


# -- S3 keys ---------------------------------------------------------------------------------------


PATH_UNSAFE = ["a/../b.tif", "../b.tif", "a/./b.tif", "a//b.tif", "/b.tif", "a/", "nul\0.tif"]


@pytest.fixture
def bucket_store(s3_server: S3Server) -> Iterator[S3Store]:
    with s3_server.bucket() as bucket:
        store = open_store(f"s3://{bucket}", endpoint_url=s3_server.endpoint_url)
        assert isinstance(store, S3Store)
        yield store


def count_requests(store: S3Store, request: pytest.FixtureRequest) -> Callable[[], int]:
    seen: list[str] = []
    events = store.client.meta.events
    events.register("before-call.s3", lambda **kw: seen.append("x"), unique_id="count-all")
    request.addfinalizer(lambda: events.unregister("before-call.s3", unique_id="count-all"))
    return lambda: len(seen)


@pytest.mark.parametrize("key", PATH_UNSAFE)
def test_s3_refuses_keys_a_server_would_normalise_before_any_request(
    bucket_store: S3Store, key: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """SeaweedFS stores ``a//b.tif`` as ``a/b.tif`` and ``/b.tif`` as ``b.tif``: without the
    refusal, one source's pyramid would overwrite another's."""
    for victim in ("b.tif", "a/b.tif"):
        bucket_store.put_bytes(victim, victim.encode())
    requests = count_requests(bucket_store, request)
    attempts: list[Callable[[], object]] = [
        lambda: bucket_store.put_bytes(key, b"x"),
        lambda: bucket_store.put_bytes(key, b"x", if_none_match=True),
        lambda: bucket_store.put_file(key, Path(__file__)),
        lambda: bucket_store.get_bytes(key),
        lambda: bucket_store.get_file(key, tmp_path / "got"),
        lambda: bucket_store.head(key),
        lambda: bucket_store.delete(key),
        lambda: bucket_store.delete(key, if_match="x"),
    ]
    for attempt in attempts:
        with pytest.raises(UnsafeKey, match="refusing key") as refused:
            attempt()
        assert refused.value.code == UNSUPPORTED and refused.value.permanent
    assert requests() == 0
    for victim in ("b.tif", "a/b.tif"):
        assert bucket_store.get_bytes(victim)[0] == victim.encode()


def test_an_unsafe_key_has_no_output_so_intake_queues_it(bucket_store: S3Store) -> None:
    """``a//b.jpg`` is a valid AWS key: intake queues it (rather than failing its pass), and
    the worker records why it is refused."""
    info = ObjectInfo("a//b.jpg", 1, "e", datetime.now(UTC))
    assert output_state(bucket_store, info, {"r"}) is OutputState.MISSING


def test_the_worker_fails_unsafe_s3_keys_permanently(s3_server: S3Server, tmp_path: Path) -> None:
    bench = s3_bench(tmp_path, s3_server)
    add_images(bench, {"b.jpg": SMALL, "a/b.jpg": SMALL})
    unsafe = ["a/../b.jpg", "a//b.jpg", "/b.jpg", "a/./b.jpg"]
    for key in unsafe:
        queue_marker(bench, key)
    report = bench.run()
    assert sorted(report.converted) == ["a/b.jpg", "b.jpg"]
    assert report.counts["retry-later"] == 0
    failed = failures(bench)
    assert sorted(failed) == sorted(unsafe)
    for key in unsafe:
        assert failed[key]["code"] == UNSUPPORTED and failed[key]["attempts"] == 1
        assert "refusing key" in failed[key]["message"]
    for key in ("b.jpg", "a/b.jpg"):  # each output still its own source's
        verify_output(bench, key, SMALL)
    assert sorted(keys(bench.images)) == sorted(output_key(k) for k in ("b.jpg", "a/b.jpg"))
