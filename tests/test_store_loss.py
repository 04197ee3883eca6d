"""A store that goes away mid-run stops ``ptif process`` cleanly, and a full disk is a transient
failure that never counts against an image.

The S3 case runs ``ptif process`` against a real SeaweedFS through the fault proxy, which is
cut in the middle of the run: every request is reset, then the proxy stops listening
(connections are refused). The run must exit 3 with one line naming the store, no traceback,
no marker lost, no failure record, and a rerun against the server finishes everything. The
folder case replaces an images folder by a file in the middle of a run (a folder store
recreates a folder that is simply gone, so "gone" takes a file where the folder was).

The full disks are real: a tmpfs of a megabyte or two, mounted in a mount namespace of the
worker's own (``unshare -m``), so nothing outside the test sees it and it goes when the worker
ends. Mounting needs root; elsewhere those tests are skipped.
"""

from __future__ import annotations

import json
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest
from corpus import jpeg
from fault_proxy import Fault, FaultProxy, Request, Rule
from s3_server import S3Server
from store_helpers import (
    PTIF,
    QUEUE,
    Bench,
    Size,
    add_images,
    claim_of,
    folder_bench,
    json_report,
    keys,
    pending,
    put_source,
    queue,
    run_ptif,
    s3_bench,
    verify_all,
    verify_output,
    wait_for,
)

from ptif.console import ITEM_LOGGER
from ptif.queue.health import StoreLost
from ptif.queue.layout import CLAIMS_PREFIX, marker_key
from ptif.queue.outputs import output_key

#: Noise, so each takes real work: a run of them lasts long enough to be cut in the middle.
MEDIUM: Size = (600, 400)
SMALL: Size = (64, 48)
BATCH = {f"loss/{i:02}.jpg": MEDIUM for i in range(20)}
WORKERS = 2
#: Outputs published before the cut.
PUBLISHED_BEFORE_CUT = 5


def attempts_left(bench: Bench) -> dict[str, int]:
    """The attempts each claim left behind records, by claim key."""
    counts = {}
    for key in keys(bench.process, CLAIMS_PREFIX):
        data, _ = bench.process.get_bytes(key)
        counts[key] = int(json.loads(data).get("attempts", 0))
    return counts


def assert_nothing_lost(bench: Bench, sources: dict[str, Size]) -> None:
    """Every source has its pyramid or its marker still queued; none has a failure record."""
    queued = set(pending(bench))
    for key in sources:
        assert bench.images.head(output_key(key)) or marker_key(key, QUEUE) in queued, key
    assert keys(bench.process, "failed/") == []


# an S3 store that goes away ----------------------------------------------------------------------


class Cut:
    """Lets requests through until the images bucket has taken ``uploads`` pyramids, then
    resets every request; ``happened`` is set at that moment."""

    def __init__(self, images_bucket: str, uploads: int) -> None:
        self.prefix = f"/{images_bucket}/"
        self.uploads = uploads
        self.seen = 0
        self.happened = threading.Event()

    def __call__(self, request: Request) -> bool:
        if request.method == "PUT" and request.path.startswith(self.prefix):
            self.seen += 1
            if self.seen > self.uploads:
                self.happened.set()
        return self.happened.is_set()


def other_lines(stderr: str) -> list[str]:
    """The lines of stderr that are not one finished item's log line."""
    found = []
    for line in stderr.splitlines():
        try:
            if json.loads(line).get("logger") == ITEM_LOGGER:
                continue
        except ValueError:
            pass
        found.append(line)
    return found


def item_codes(stderr: str) -> list[str | None]:
    codes = []
    for line in stderr.splitlines():
        try:
            body = json.loads(line)
        except ValueError:
            continue
        if body.get("logger") == ITEM_LOGGER:
            codes.append(body.get("code"))
    return codes


def test_an_s3_store_going_away_stops_the_run_with_exit_3(
    s3_server: S3Server, tmp_path: Path
) -> None:
    bench = s3_bench(tmp_path, s3_server)
    add_images(bench, BATCH, noise=BATCH)
    cut = Cut(bench.urls["images"].removeprefix("s3://"), PUBLISHED_BEFORE_CUT)
    proxy = FaultProxy(s3_server.endpoint_url, [Rule(Fault.RESET, cut)]).start()
    try:
        env = bench.env(PTIF_ENDPOINT_URL=proxy.endpoint_url)
        worker = subprocess.Popen(
            [*PTIF, "process", "--workers", str(WORKERS), "--json"],
            env=env,
            cwd=bench.root,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert cut.happened.wait(180), "the run ended before the cut"
    finally:
        proxy.stop()  # from now on, connections are refused
    stdout, stderr = worker.communicate(timeout=600)
    assert worker.returncode == 3, stderr
    assert "Traceback" not in stderr and "internal" not in item_codes(stderr)
    lines = other_lines(stderr)
    assert len(lines) <= 3, "\n".join(lines)
    assert lines[-1].startswith("ptif: the "), lines
    assert " could not be reached (" in lines[-1] and "nothing was lost" in lines[-1]
    assert any(f"store {url} could not" in lines[-1] for url in bench.urls.values()), lines
    converted = json.loads(stdout)["converted"]  # what was done before the store went
    assert all(bench.images.head(output_key(key)) for key in converted)
    assert_nothing_lost(bench, BATCH)
    assert_attempts_spared(bench)
    rerun = run_ptif(bench, "process", "--workers", str(WORKERS))
    assert rerun.returncode == 0, rerun.stderr
    verify_all(bench, BATCH)
    assert pending(bench) == [] and keys(bench.process, "failed/") == []


def assert_attempts_spared(bench: Bench) -> None:
    """No image is counted for the store's failures. One whose conversion was running when
    the process store went away cannot be told from one that crashed its worker, so it may be
    counted once: at most one per conversion slot."""
    left = attempts_left(bench)
    assert all(count <= 1 for count in left.values()), left
    assert sum(left.values()) <= WORKERS, left


# a folder store that goes away -------------------------------------------------------------------


def test_a_folder_store_going_away_stops_the_run(tmp_path: Path) -> None:
    bench = folder_bench(tmp_path)
    add_images(bench, BATCH, noise=BATCH)
    images = Path(bench.urls["images"])
    away = tmp_path / "unmounted"
    worker = bench.worker(workers=WORKERS)
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["report"] = worker.run()
        except StoreLost as lost:
            outcome["lost"] = lost

    thread = threading.Thread(target=run)
    thread.start()
    try:
        published = lambda: len(keys(bench.images)) >= PUBLISHED_BEFORE_CUT  # noqa: E731
        assert wait_for(published, 120, step=0.005), "nothing was published"
        images.rename(away)  # the folder replaced by a file: what a folder store calls gone
        images.write_text("not the images folder")
    finally:
        thread.join(timeout=300)
    lost = outcome.get("lost")
    assert isinstance(lost, StoreLost), outcome
    assert lost.role == "images" and lost.url == bench.urls["images"]
    assert "could not be reached" in str(lost) and "nothing was lost" in str(lost)
    images.unlink()
    away.rename(images)
    assert_nothing_lost(bench, BATCH)
    assert set(attempts_left(bench).values()) <= {0}  # the process store was there to say so
    assert bench.run().unfinished == 0
    verify_all(bench, BATCH)


# full disks --------------------------------------------------------------------------------------


def can_mount_tmpfs(where: Path) -> bool:
    where.mkdir(exist_ok=True)
    probe = subprocess.run(
        ["unshare", "-m", "sh", "-c", f"mount -t tmpfs -o size=64k tmpfs '{where}'"],
        capture_output=True,
        check=False,
    )
    return probe.returncode == 0


#: What is full, the source that does not fit, and the tmpfs's size: a download that does not
#: fit the work folder with room for its pyramid (2.6 MB, twice that is more than 4 MiB), a
#: pyramid that does not (after its download did), and a pyramid that does not fit a folder
#: images store. The last two are sized from the pyramid itself (:func:`room_for`): the
#: default's bytes follow its quality floor.
FULL = {
    "download": ("work", (3000, 2000), "4m"),
    "pyramid": ("work", (1500, 1000), None),
    "images-store": ("images", (1500, 1000), None),
}


def room_for(what: str, source: bytes, tmp: Path) -> str:
    """A tmpfs size that holds ``what`` needs before the pyramid, and half the pyramid: the
    download too on the work folder, nothing else on an images store."""
    (tmp / "source.jpg").write_bytes(source)
    # in a child: libvips' loaders stay unblocked in this test process
    subprocess.run([*PTIF, "convert", str(tmp / "source.jpg"), str(tmp / "pyramid.tif")],
                   check=True, capture_output=True, timeout=300)  # fmt: skip
    pyramid = (tmp / "pyramid.tif").stat().st_size
    before = len(source) if what == "work" else 0
    return f"{(before + pyramid // 2) // 1024}k"


def run_on_full_disk(bench: Bench, where: Path, size: str) -> subprocess.CompletedProcess[str]:
    mount = f'mount -t tmpfs -o size={size},mode=0777 tmpfs "$1" && shift && exec "$@"'
    return subprocess.run(
        ["unshare", "-m", "sh", "-c", mount, "sh", str(where), *PTIF, "process", "--json"],
        env=bench.env(PTIF_WORKERS="1"),
        cwd=bench.root,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.mark.parametrize("full", sorted(FULL))
def test_a_full_disk_is_retried_and_never_counted(bench: Bench, full: str) -> None:
    what, size, room = FULL[full]
    if what == "images" and bench.kind != "folder":
        pytest.skip("only a folder images store fills a local disk")
    where = bench.tmp if what == "work" else Path(bench.urls["images"])
    if not can_mount_tmpfs(bench.root / "probe"):
        pytest.skip("mounting a tmpfs needs root (CAP_SYS_ADMIN)")
    source = jpeg(*size, seed=4, noise=True)
    put_source(bench.source, "full/big.jpg", source)
    queue(bench, "full/big.jpg")
    done = run_on_full_disk(bench, where, room or room_for(what, source, bench.root))
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    report = json_report(done)
    [retry] = report["retry_later"]
    assert retry["key"] == "full/big.jpg" and retry["code"] == "disk-full", retry
    claim = claim_of(bench, "full/big.jpg")
    assert claim["attempts"] == 0 and claim["lastErrorCode"] == "disk-full"
    assert pending(bench) == [marker_key("full/big.jpg", QUEUE)]
    assert keys(bench.process, "failed/") == []
    rerun = run_ptif(bench, "process")  # room again
    assert rerun.returncode == 0, rerun.stderr
    verify_output(bench, "full/big.jpg", size)
