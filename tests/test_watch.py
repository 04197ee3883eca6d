"""``ptif watch``: file events on a folder (a slow copy is queued once, when complete), polling of
a folder and of a SeaweedFS bucket with a cursor that survives restarts, and the command itself:
near-zero CPU when idle, a clean stop on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest
from s3_server import S3Server
from store_helpers import (
    CURRENT_RECIPE,
    PTIF,
    QUEUE,
    Bench,
    consume,
    folder_bench,
    marker_etag,
    markers,
    put_output,
    put_source,
    s3_bench,
    wait_for,
)

from ptif.config import parse_extensions
from ptif.intake.watch import (
    Poller,
    Queuer,
    Settler,
    WatchOptions,
    WatchReport,
    queuer_for,
    watch,
)
from ptif.queue.layout import CURSOR_PREFIX

EXTENSIONS = parse_extensions("jpg,jpeg,tif,tiff,png")


def _queuer(bench: Bench) -> Queuer:
    return queuer_for(bench.process, bench.images, bench.source, QUEUE, {CURRENT_RECIPE})


class Running:
    """``watch`` in a thread, stopped at the end of the test."""

    def __init__(self, bench: Bench, options: WatchOptions) -> None:
        self.stop = threading.Event()
        self.report = WatchReport()
        self.thread = threading.Thread(
            target=watch,
            args=(bench.source, _queuer(bench)),
            kwargs={
                "extensions": EXTENSIONS,
                "options": options,
                "stop": self.stop,
                "report": self.report,
            },
            daemon=True,
        )
        self.thread.start()
        assert self.report.started.wait(10), "the watcher did not start"

    def close(self) -> None:
        self.stop.set()
        self.thread.join(10)
        assert not self.thread.is_alive(), "the watcher did not stop"


@pytest.fixture
def folder(tmp_path: Path) -> Bench:
    return folder_bench(tmp_path)


@pytest.fixture
def watching(folder: Bench) -> Iterator[Running]:
    running = Running(folder, WatchOptions(settle=2.0))
    yield running
    running.close()


# folder events ---------------------------------------------------------------------------------


def test_a_file_copied_in_slowly_is_queued_once_after_it_is_complete(
    folder: Bench, watching: Running
) -> None:
    target = Path(folder.urls["source"]) / "incoming" / "big scan.tif"
    target.parent.mkdir()
    chunk = os.urandom(64 * 1024)
    with open(target, "wb") as out:
        for _ in range(6):  # 3 seconds of copying, pauses a quarter of the settle time
            out.write(chunk)
            out.flush()
            time.sleep(0.5)
            assert markers(folder.process) == {}, "queued before the copy was complete"

    queued = wait_for(lambda: markers(folder.process), timeout=6)
    info = folder.source.head("incoming/big scan.tif")
    assert info is not None
    assert list(queued) == ["incoming/big scan.tif"]
    assert queued["incoming/big scan.tif"]["size"] == 6 * len(chunk)
    assert queued["incoming/big scan.tif"]["eTag"] == info.etag
    assert queued["incoming/big scan.tif"]["origin"] == "watch"
    written = marker_etag(folder.process, "incoming/big scan.tif")
    time.sleep(1.5)
    assert marker_etag(folder.process, "incoming/big scan.tif") == written
    assert watching.report.marked == 1


def test_files_and_folders_moved_in_whole_are_queued_at_once(
    folder: Bench, watching: Running, tmp_path: Path
) -> None:
    outside = tmp_path / "elsewhere"
    (outside / "box 7").mkdir(parents=True)
    for name in ("box 7/a.jpg", "box 7/b.png", "box 7/.hidden.jpg", "box 7/notes.txt", "c.tif"):
        (outside / name).write_bytes(b"pixels")
    long_ago = time.time() - 3600
    for path in outside.rglob("*"):
        os.utime(path, (long_ago, long_ago))  # as cp -p or rsync leave them
    source = Path(folder.urls["source"])

    os.rename(outside / "c.tif", source / "c.tif")
    os.rename(outside / "box 7", source / "box 7")

    expected = {"c.tif", "box 7/a.jpg", "box 7/b.png"}
    assert wait_for(lambda: set(markers(folder.process)) == expected, timeout=10)
    time.sleep(0.5)
    assert set(markers(folder.process)) == expected


def test_an_initial_scan_queues_what_is_there_unless_its_output_is_current(folder: Bench) -> None:
    put_source(folder.source, "old/a.jpg")
    current = put_source(folder.source, "old/b.jpg")
    put_output(folder.images, "old/b.jpg", current)

    running = Running(folder, WatchOptions(settle=0.5, initial_scan=True))
    try:
        assert wait_for(
            lambda: (
                set(markers(folder.process)) == {"old/a.jpg"} and running.report.up_to_date == 1
            ),
            timeout=10,
        )
    finally:
        running.close()


def test_without_watchfiles_a_folder_is_polled(
    folder: Bench, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "watchfiles", None)  # import watchfiles raises ImportError
    running = Running(folder, WatchOptions(settle=0.0, interval=0.2))
    try:
        put_source(folder.source, "polled.jpg")
        assert wait_for(lambda: "polled.jpg" in markers(folder.process), timeout=10)
        assert running.report.passes >= 2
    finally:
        running.close()


class Clock:
    """The watcher's clock, moved by hand."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def _stat_in(folder: Path) -> Callable[[str], os.stat_result | None]:
    return lambda key: os.stat(folder / key) if (folder / key).exists() else None


def test_a_growing_file_settles_once_still_for_the_settle_time_by_the_watchers_clock(
    tmp_path: Path,
) -> None:
    """The file server's clock runs an hour ahead, so the file's own times never look old: only
    the watcher's clock can tell that the copy stopped."""
    clock = Clock()
    settler = Settler(2.0, clock=clock)
    path = tmp_path / "scan.tif"
    ahead = time.time() + 3600
    stat_of = _stat_in(tmp_path)
    path.touch()
    settler.touch("scan.tif", os.stat(path))  # the first event; later writes may bring none
    for chunk in range(6):
        clock.now += 1.5  # a pause shorter than the settle time
        with open(path, "ab") as out:
            out.write(b"x" * 1024)
        os.utime(path, (ahead + chunk, ahead + chunk))
        assert settler.due(stat_of) == [], f"due after chunk {chunk}"
    clock.now += 1.75
    assert settler.due(stat_of) == []  # unchanged for 1.75 s
    clock.now += 0.25
    assert settler.due(stat_of) == ["scan.tif"]
    assert settler.due(stat_of) == [] and settler.pending == {}


def test_a_settling_file_that_goes_away_is_dropped_and_an_old_one_is_due_at_once(
    tmp_path: Path,
) -> None:
    clock = Clock()
    settler = Settler(2.0, clock=clock)
    stat_of = _stat_in(tmp_path)
    (tmp_path / "gone.jpg").write_bytes(b"pixels")
    settler.touch("gone.jpg", os.stat(tmp_path / "gone.jpg"))
    (tmp_path / "gone.jpg").unlink()
    old = tmp_path / "kept-times.jpg"
    old.write_bytes(b"pixels")
    an_hour_ago = time.time() - 3600
    os.utime(old, (an_hour_ago, an_hour_ago))  # as cp -p or rsync leave it
    settler.touch("kept-times.jpg", os.stat(old))

    assert settler.due(stat_of) == ["kept-times.jpg"]  # no tick of our clock needed
    assert settler.pending == {}


# polling ---------------------------------------------------------------------------------------


def _poller(bench: Bench, *, settle: float = 0.0, initial_scan: bool = False) -> Poller:
    options = WatchOptions(settle=settle, initial_scan=initial_scan, poll=True)
    return Poller(bench.source, _queuer(bench), EXTENSIONS, options, WatchReport())


def test_polling_queues_new_uploads_and_a_restart_does_not_queue_them_again(
    bench: Bench,
) -> None:
    for key in ("a.jpg", "b.jpg", "notes.txt"):
        put_source(bench.source, key)
    first = _poller(bench)
    assert first.poll()
    assert markers(bench.process) == {}, "without --initial-scan, what was there stays"

    # Names whose orders differ between byte order and SeaweedFS's ('/' first).
    tricky = {"a b.jpg", "a-b.jpg", "a/b.jpg", "a/b/c.jpg", "a.b.jpg"}
    for key in tricky:
        put_source(bench.source, key)
    assert first.poll()
    assert set(markers(bench.process)) == tricky
    assert all(m["origin"] == "watch" for m in markers(bench.process).values())

    consume(bench.process)  # the workers did their job
    restarted = _poller(bench)
    assert restarted.poll()
    assert markers(bench.process) == {}

    new_etag = put_source(bench.source, "a.jpg", b"a new scan")  # replaced
    put_source(bench.source, "d.jpg")
    assert restarted.poll()
    queued = markers(bench.process)
    assert set(queued) == {"a.jpg", "d.jpg"}
    assert queued["a.jpg"]["eTag"] == new_etag
    assert restarted.poll()  # nothing new: nothing written again
    assert set(markers(bench.process)) == {"a.jpg", "d.jpg"}
    assert [i.key for i in bench.process.list(CURSOR_PREFIX)] == [restarted.key]


def test_a_watcher_started_on_an_empty_source_queues_the_first_upload(bench: Bench) -> None:
    poller = _poller(bench)
    assert poller.poll()
    put_source(bench.source, "first.jpg")
    assert _poller(bench).poll()
    assert set(markers(bench.process)) == {"first.jpg"}


def test_an_initial_scan_on_a_bucket_skips_current_outputs(bench: Bench) -> None:
    put_source(bench.source, "x/a.jpg")
    etag = put_source(bench.source, "x/b.jpg")
    put_output(bench.images, "x/b.jpg", etag)
    stale = put_source(bench.source, "x/c.jpg")
    put_output(bench.images, "x/c.jpg", stale, recipe="0123456789ab")

    poller = _poller(bench, initial_scan=True)
    assert poller.poll(full=True)

    assert set(markers(bench.process)) == {"x/a.jpg", "x/c.jpg"}
    assert poller.report.up_to_date == 1


def test_settling_files_are_queued_once_still_whatever_their_age(folder: Bench) -> None:
    source = Path(folder.urls["source"])
    poller = _poller(folder, settle=2.0)
    assert poller.poll()

    now = time.time()
    for name, age in (
        ("recent.jpg", 600),
        ("years-old.jpg", 10 * 365 * 86400),
        ("settling.jpg", 0.5),
    ):
        (source / name).write_bytes(b"pixels")
        os.utime(source / name, (now - age, now - age))
    assert poller.poll()
    assert set(markers(folder.process)) == {"recent.jpg", "years-old.jpg"}

    os.utime(source / "settling.jpg", (now - 5, now - 5))  # nobody wrote to it since
    assert poller.poll()
    assert set(markers(folder.process)) == {"recent.jpg", "years-old.jpg", "settling.jpg"}


def _backdate(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    for item in [path, *path.rglob("*")]:
        os.utime(item, (then, then), follow_symlinks=False)


def _archive(root: Path, names: tuple[str, ...], age: float = 3 * 365 * 86400) -> Path:
    """Scans elsewhere on the machine, last modified years ago, as an archive holds them."""
    root.mkdir(parents=True, exist_ok=True)
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(f"scan {name}".encode())
    _backdate(root, age)
    return root


def test_polling_a_folder_queues_files_brought_in_with_old_times(
    folder: Bench, tmp_path: Path
) -> None:
    """``cp -p``, ``rsync -t``, ``mv`` from another folder and a whole folder moved in: each
    keeps times older than anything the watcher has seen, and each is queued."""
    source = Path(folder.urls["source"])
    put_source(folder.source, "today.jpg")  # the newest thing the watcher sees
    _backdate(source / "today.jpg", 10)
    poller = _poller(folder, settle=2.0)
    assert poller.poll()
    assert markers(folder.process) == {}

    old = _archive(
        tmp_path / "archive", ("cp.jpg", "rsync.tif", "mv.png", "box/1.jpg", "box/2.jpg")
    )
    subprocess.run(["cp", "-p", old / "cp.jpg", source / "cp.jpg"], check=True)
    subprocess.run(["rsync", "-t", old / "rsync.tif", f"{source}/"], check=True)
    (old / "mv.png").rename(source / "mv.png")
    (old / "box").rename(source / "box")
    assert (source / "cp.jpg").stat().st_mtime < time.time() - 86400, "cp -p kept the time"

    assert poller.poll()
    assert set(markers(folder.process)) == {
        "cp.jpg",
        "rsync.tif",
        "mv.png",
        "box/1.jpg",
        "box/2.jpg",
    }
    consume(folder.process)
    assert _poller(folder, settle=2.0).poll(), "a restart"
    assert markers(folder.process) == {}, "nothing queued twice"


def test_polling_a_folder_queues_a_file_replaced_with_the_same_size_and_time(
    folder: Bench, tmp_path: Path
) -> None:
    """``rsync -t --checksum`` of a corrected scan: same name, size and modification time as
    the one it replaces, a new inode."""
    source = Path(folder.urls["source"])
    _archive(source, ("scan.jpg",))
    put_source(folder.source, "today.jpg")
    _backdate(source / "today.jpg", 10)
    poller = _poller(folder, settle=2.0)
    assert poller.poll()
    before = (source / "scan.jpg").stat()

    fixed = tmp_path / "fixed" / "scan.jpg"
    fixed.parent.mkdir()
    fixed.write_bytes(b"scan SCAN.jpg")  # the same length
    os.utime(fixed, ns=(before.st_atime_ns, before.st_mtime_ns))
    subprocess.run(["rsync", "-t", "--checksum", fixed, f"{source}/"], check=True)
    after = (source / "scan.jpg").stat()
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    assert after.st_ino != before.st_ino

    assert poller.poll()
    assert set(markers(folder.process)) == {"scan.jpg"}


def test_polling_a_bucket_queues_an_overwrite_of_the_same_second(
    s3_server: S3Server, tmp_path: Path
) -> None:
    """LastModified has whole seconds, so a scan replaced within the second it was written
    ties with it; the new eTag is what is queued."""
    bench = s3_bench(tmp_path, s3_server)
    poller = _poller(bench)
    assert poller.poll()
    for attempt in range(5):  # until both writes land in one second (almost always the first)
        key = f"same-{attempt}.jpg"
        put_source(bench.source, key, b"first")
        first = bench.source.head(key)
        assert poller.poll()
        consume(bench.process)  # converted, as a worker does
        second_etag = put_source(bench.source, key, b"second")
        second = bench.source.head(key)
        assert first is not None and second is not None
        if second.modified == first.modified:
            break
    else:
        pytest.skip("no two writes landed in the same second")
    assert poller.poll()
    assert markers(bench.process)[key]["eTag"] == second_etag


def test_an_older_or_unreadable_cursor_means_one_pass_over_everything(bench: Bench) -> None:
    put_source(bench.source, "a.jpg")
    etag = put_source(bench.source, "b.jpg")
    put_output(bench.images, "b.jpg", etag)
    poller = _poller(bench)
    legacy = b'{"source": "x", "started": true, "highWater": "2020-01-01T00:00:00Z", "recent": {}}'
    deep = b"ptif-watch-snapshot 1\n" + b"[" * 100_000 + b"\n"  # json's recursion limit
    for stored in (legacy, b'ptif-watch-snapshot 1\n{"keys": 5}\n' + b"\0" * 16, deep):
        bench.process.put_bytes(poller.key, stored)
        assert _poller(bench).poll()
        assert set(markers(bench.process)) == {"a.jpg"}, "what lacks a current output"
        consume(bench.process)
    assert _poller(bench).poll()
    assert markers(bench.process) == {}


def test_a_failed_object_is_offered_again_on_the_next_pass(folder: Bench) -> None:
    poller = _poller(folder)
    assert poller.poll()
    put_source(folder.source, "a.jpg")
    put_source(folder.source, "b.jpg")
    queue_dir = Path(folder.urls["process"]) / QUEUE
    queue_dir.mkdir(parents=True, exist_ok=True)
    (queue_dir / "b.jpg.json").mkdir()  # the marker cannot be written
    assert not poller.poll()
    assert set(markers(folder.process)) == {"a.jpg"}
    (queue_dir / "b.jpg.json").rmdir()
    assert poller.poll()
    assert set(markers(folder.process)) == {"a.jpg", "b.jpg"}


# the command ------------------------------------------------------------------------------------


def _start(bench: Bench, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*PTIF, "watch", *args, "--json"],
        env=bench.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _idle_cpu_seconds(pid: int, seconds: float) -> float:
    process = psutil.Process(pid)
    before = process.cpu_times()
    time.sleep(seconds)
    after = process.cpu_times()
    return (after.user - before.user) + (after.system - before.system)


def _stop(process: subprocess.Popen[str]) -> tuple[int, dict[str, int], str]:
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=10)
    return process.returncode, json.loads(out.splitlines()[-1]), err


def test_watch_command_on_a_folder_sleeps_when_idle_and_stops_on_sigterm(folder: Bench) -> None:
    put_source(folder.source, "before.jpg")
    process = _start(folder, folder.urls["source"], "--settle", "0.5", "--initial-scan")
    try:
        assert wait_for(lambda: "before.jpg" in markers(folder.process), timeout=15)
        put_source(folder.source, "after/scan.png")
        assert wait_for(lambda: "after/scan.png" in markers(folder.process), timeout=10)
        time.sleep(0.5)
        cpu = _idle_cpu_seconds(process.pid, 3.0)
    finally:
        code, counts, err = _stop(process)

    assert code == 0, err
    assert counts["marked"] == 2
    assert cpu < 0.1, f"the idle watcher used {cpu:.3f} s of CPU in 3 s"
    lines = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    assert {line["key"] for line in lines if line.get("outcome") == "marked"} == {
        "before.jpg",
        "after/scan.png",
    }


def test_watch_command_polls_a_bucket_and_stops_on_sigterm(
    s3_server: S3Server, tmp_path: Path
) -> None:
    bench = s3_bench(tmp_path, s3_server)
    put_source(bench.source, "scans/one.jpg")
    process = _start(bench, bench.urls["source"], "--interval", "30", "--initial-scan")
    try:
        assert wait_for(lambda: "scans/one.jpg" in markers(bench.process), timeout=15)
        time.sleep(0.5)
        cpu = _idle_cpu_seconds(process.pid, 2.0)
        started = time.monotonic()
    finally:
        code, counts, err = _stop(process)

    assert code == 0, err
    assert time.monotonic() - started < 5, "SIGTERM did not cut the pause short"
    assert counts["marked"] == 1
    assert cpu < 0.1, f"the idle poller used {cpu:.3f} s of CPU in 2 s"
    assert len(list(bench.process.list(CURSOR_PREFIX))) == 1
