"""Each image's private work folder, and what the worker publishes: only pyramids made from
exactly the bytes it fetched.

A decoder of one image (Ghostscript runs PostScript, which can list, read and write files) must
not reach another image's download. Each item works in a 0700 folder of its own inside the
run's folder, which is 0300 while the run lives: the worker's own user cannot list it. What is
still possible to root, or to a program running as the worker that learnt a path elsewhere, is
caught before publishing: these tests play that writer, as root, on a real conversion.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import stat
import subprocess
import sys
import tempfile
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import pyvips
from corpus import jpeg
from store_helpers import (
    QUEUE,
    Bench,
    Size,
    claim_of,
    keys,
    pending,
    put_source,
    queue,
    verify_output,
    wait_for,
)

from ptif.queue.layout import marker_key
from ptif.queue.outputs import output_key
from ptif.queue.reports import RunReport
from ptif.queue.workdir import ITEM_PREFIX, WORK_PREFIX
from ptif.queue.worker import SOURCE_NAME

#: One colour, so quick to make, and a few seconds to convert: long enough to act during it.
BIG: Size = (20000, 15000)
#: Two at once, each about a second to convert.
HEAVY: Size = (12000, 9000)
NOBODY = 65534
OTHER_USER = 65533


@pytest.fixture
def scratch(bench: Bench, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The worker's temporary folder, where the test can watch its work folders."""
    folder = bench.root / "scratch"
    folder.mkdir()
    monkeypatch.setattr("tempfile.tempdir", str(folder))
    return folder


class Background:
    """A worker run in a thread; ``report`` once it ends."""

    def __init__(self, bench: Bench, **settings: object) -> None:
        self.report: RunReport | None = None
        self.error: BaseException | None = None
        self._worker = bench.worker(**settings)
        self._thread = threading.Thread(target=self._run, name="worker")

    def _run(self) -> None:
        try:
            self.report = self._worker.run()
        except BaseException as error:
            self.error = error

    def __enter__(self) -> Background:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._thread.join(timeout=300)

    @property
    def done(self) -> bool:
        return not self._thread.is_alive()

    def wait(self) -> RunReport:
        self._thread.join(timeout=300)
        assert self.error is None, self.error
        assert self.report is not None
        return self.report


def run_folders(scratch: Path) -> list[Path]:
    return [p for p in scratch.iterdir() if p.name.startswith(WORK_PREFIX)]


def item_folders(scratch: Path) -> list[Path]:
    found = []
    for run in run_folders(scratch):
        with contextlib.suppress(FileNotFoundError):
            found += [p for p in run.iterdir() if p.name.startswith(ITEM_PREFIX)]
    return found


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# a folder per item -------------------------------------------------------------------------------


def test_each_item_works_in_a_private_folder_of_its_own(bench: Bench, scratch: Path) -> None:
    for seed, key in enumerate(("p/a.jpg", "p/b.jpg")):
        put_source(bench.source, key, jpeg(*HEAVY, seed=seed))
        queue(bench, key)
    seen: dict[Path, set[str]] = {}

    def two_at_once() -> bool:
        folders = item_folders(scratch)
        for folder in folders:
            with contextlib.suppress(FileNotFoundError):
                seen.setdefault(folder, set()).update(p.name for p in folder.iterdir())
        return len(folders) >= 2

    with Background(bench, workers=2) as run:
        assert wait_for(two_at_once, 60, step=0.01), "never two items at once"
        [work] = run_folders(scratch)
        assert mode(work) == 0o300  # its owner may enter it by name; nobody may list it
        assert all(mode(folder) == 0o700 for folder in item_folders(scratch))
        wait_for(lambda: not two_at_once() and run.done, 120, step=0.01)  # all they hold
        report = run.wait()
    assert sorted(report.converted) == ["p/a.jpg", "p/b.jpg"]
    assert len(seen) == 2 and all(SOURCE_NAME in names for names in seen.values())
    assert all(names <= {SOURCE_NAME, "source.part", "pyramid.tif"} | partials(names)
               for names in seen.values())  # fmt: skip
    assert list(scratch.iterdir()) == []


def partials(names: set[str]) -> set[str]:
    """The engine's hidden temporary pyramid beside ``pyramid.tif``."""
    return {name for name in names if name.startswith(".pyramid.tif.")}


# as a user that is not root --------------------------------------------------------------------

#: Run first in a child as root, so the interpreter (under root's home here) can load; then the
#: child becomes the user given as its first argument, with no groups, before doing anything.
BECOME = textwrap.dedent(
    """
    import os, sys
    import shutil, tempfile
    from ptif.queue.workdir import item_folder, sweep_work_folders, work_folder

    uid = int(sys.argv[1])
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)
    """
)
PROBE = BECOME + textwrap.dedent(
    """
    with work_folder() as run, item_folder(run) as a, item_folder(run) as b:
        (a / "source").write_bytes(b"the download of a")
        try:
            os.listdir(run)
            print("listed", flush=True)
        except PermissionError:
            print("unlistable", flush=True)
        print(a, flush=True)
        sys.stdin.readline()
    """
)
OTHER_USER_TRIES = BECOME + textwrap.dedent(
    """
    item = sys.argv[2]
    for attempt in (
        lambda: os.listdir(item),
        lambda: open(os.path.join(item, "source"), "rb").read(),
        lambda: open(os.path.join(item, "source"), "r+b").write(b"attacker"),
    ):
        try:
            attempt()
            print("allowed")
        except PermissionError:
            print("refused")
    """
)
SWEEP = BECOME + "with work_folder():\n    pass\n"


@pytest.fixture
def shared_tmp() -> Iterator[Path]:
    """A temporary folder that a user other than root owns (the tests' own are root's 0700)."""
    if os.geteuid() != 0:
        pytest.skip("needs root, to run the worker's folders as other users")
    folder = Path(tempfile.mkdtemp(prefix="ptif-test-nobody-", dir="/tmp"))
    os.chown(folder, NOBODY, NOBODY)
    try:
        yield folder
    finally:
        subprocess.run(["rm", "-rf", str(folder)], check=False)


def as_user(uid: int, code: str, tmp: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", code, str(uid), *args],
        cwd=tmp,
        env={**os.environ, "TMPDIR": str(tmp), "HOME": str(tmp)},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_no_one_lists_the_run_folder_nor_reads_an_item(shared_tmp: Path) -> None:
    worker = as_user(NOBODY, PROBE, shared_tmp)
    try:
        assert worker.stdout is not None
        assert worker.stdout.readline().strip() == "unlistable"  # not even its own user
        item = Path(worker.stdout.readline().strip())
        assert mode(item) == 0o700 and item.stat().st_uid == NOBODY
        other = as_user(OTHER_USER, OTHER_USER_TRIES, shared_tmp, str(item))
        out, err = other.communicate(timeout=60)
        assert out.split() == ["refused", "refused", "refused"], err
    finally:
        worker.communicate("\n", timeout=60)
    assert worker.returncode == 0, worker.stderr
    assert list(shared_tmp.iterdir()) == []


def test_a_killed_runs_unlistable_folder_is_swept_by_the_next(shared_tmp: Path) -> None:
    killed = as_user(NOBODY, PROBE, shared_tmp)
    assert killed.stdout is not None
    assert killed.stdout.readline().strip() == "unlistable"
    item = Path(killed.stdout.readline().strip())
    killed.send_signal(signal.SIGKILL)
    killed.communicate(timeout=60)
    left = item.parent
    assert mode(left) == 0o300 and item.exists()
    nxt = as_user(NOBODY, SWEEP, shared_tmp)
    nxt.communicate(timeout=60)
    assert nxt.returncode == 0, nxt.stderr
    assert not left.exists()


# publish only what was fetched -----------------------------------------------------------------


def attacker_picture(size: Size) -> bytes:
    """Another image of the same size: what an attacker wants published under the victim."""
    image = pyvips.Image.black(*size, bands=3) + [250, 0, 250]
    return bytes(image.cast("uchar").jpegsave_buffer(Q=60))


def converting(scratch: Path) -> Path | None:
    """The downloaded source of the item whose conversion has started (its pyramid is being
    written beside it), once there is one."""
    for folder in item_folders(scratch):
        try:
            names = {p.name for p in folder.iterdir()}
        except FileNotFoundError:
            continue
        if SOURCE_NAME in names and names - {SOURCE_NAME}:
            return folder / SOURCE_NAME
    return None


def rewrite_in_place(source: Path, data: bytes) -> None:
    with open(source, "r+b") as handle:  # no truncation: a reader's mmap stays valid
        handle.write(data)


def replace_file(source: Path, data: bytes) -> None:
    staged = source.with_name("staged")
    staged.write_bytes(data)
    os.replace(staged, source)


ATTACKS = {"in-place": rewrite_in_place, "replaced": replace_file}


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_a_source_rewritten_while_converting_is_not_published(
    bench: Bench,
    scratch: Path,
    attack: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    if bench.kind == "s3" and attack == "replaced":
        pytest.skip("the local copy is what is attacked; one store kind shows it for this one")
    key = "victim/scan.jpg"
    put_source(bench.source, key, jpeg(*BIG, seed=5))
    queue(bench, key)
    caplog.set_level(logging.WARNING, logger="ptif.queue.fetch")
    with Background(bench, workers=1) as run:
        found = wait_for(lambda: converting(scratch) is not None, 120, step=0.005)
        source = converting(scratch)
        assert found and source is not None, "the conversion was never seen running"
        ATTACKS[attack](source, attacker_picture(BIG))
        report = run.wait()
    assert bench.images.head(output_key(key)) is None, "a rewritten source was published"
    assert report.converted == [] and report.counts["retry-later"] == 1
    assert report.retry_later[0]["code"] == "source-changed"
    assert key in report.retry_later[0]["message"]
    claim = claim_of(bench, key)  # the attempt counts: a source that keeps changing fails
    assert claim["lastErrorCode"] == "source-changed" and claim["attempts"] == 1
    assert pending(bench) == [marker_key(key, QUEUE)] and keys(bench.process, "failed/") == []
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(key in message for message in warnings), warnings
    assert bench.run().converted == [key]  # the next attempt downloads it again
    verify_output(bench, key, BIG)


def test_runs_starting_together_never_sweep_each_others_folders(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every run sweeps before it makes its folder; a sweep racing another run's start must
    find that run's lock already held, never a lock file it can take."""
    from ptif.queue.workdir import item_folder, work_folder

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    lost: list[BaseException] = []

    def runs() -> None:
        for _ in range(300):
            try:
                with work_folder() as run, item_folder(run) as item:
                    (item / "source").write_bytes(b"x")
            except BaseException as error:  # collected for the assertion below
                lost.append(error)

    threads = [threading.Thread(target=runs) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert lost == []
    assert list(tmp_path.iterdir()) == []
