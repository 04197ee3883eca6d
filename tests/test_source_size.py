"""A source's size is bounded before it is downloaded, and while it is.

A sparse file costs its uploader nothing (``truncate -s 50G`` on a share) and used to be copied
into the worker's work folder on every attempt until the disk filled. Now the size the store
reports is compared with ``--max-source-size`` (``too-large``, permanent) and with the work
folder's free space (``disk-full``, retried and never counted) before any byte is fetched, and
the download stops at the limit if the source grows meanwhile. The full disks are real: a small
tmpfs mounted in a mount namespace of the worker's own (``unshare -m``), as in
test_store_loss.py.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
from corpus import jpeg
from store_helpers import (
    PTIF,
    Bench,
    can_mount_tmpfs,
    claim_of,
    failures,
    folder_bench,
    json_report,
    keys,
    pending,
    put_source,
    queue,
    run_ptif,
    verify_output,
)

from ptif.errors import DISK_FULL, TOO_LARGE, PtifError, TooLargeError
from ptif.queue.fetch import fetch
from ptif.stores import FolderStore
from ptif.stores.base import ObjectTooBig, copy_at_most

GIB = 2**30
SIZE = (600, 400)


def sparse_source(bench: Bench, key: str, size: int) -> Path:
    """A file of ``size`` bytes in a folder source that takes no disk: a JPEG's first bytes,
    then a hole."""
    path = Path(bench.urls["source"]) / key
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(jpeg(64, 64))
    os.truncate(path, size)
    return path


def test_a_sparse_50_gb_source_is_refused_before_it_is_downloaded(tmp_path: Path) -> None:
    bench = folder_bench(tmp_path)
    sparse_source(bench, "huge/scan.jpg", 50 * GIB)
    put_source(bench.source, "huge/fine.jpg", jpeg(*SIZE))
    queue(bench, "huge/scan.jpg")
    queue(bench, "huge/fine.jpg")

    report = bench.run()

    assert report.converted == ["huge/fine.jpg"]
    record = failures(bench)["huge/scan.jpg"]
    assert record["code"] == TOO_LARGE and record["attempts"] == 1
    message = record["message"]
    assert "huge/scan.jpg" in message and "50 GiB" in message and "20 GiB" in message
    assert "--max-source-size" in message and "PTIF_MAX_SOURCE_SIZE" in message
    # no output, so no look before the download: the version is the one the download opened
    assert record["sourceVersion"]["size"] == 50 * GIB, record
    assert pending(bench) == []


def test_the_limit_is_a_setting_and_a_source_within_it_converts(bench: Bench) -> None:
    data = jpeg(*SIZE, noise=True)
    put_source(bench.source, "s/x.jpg", data)
    queue(bench, "s/x.jpg")

    refused = run_ptif(bench, "process", "--json", env=bench.env(PTIF_MAX_SOURCE_SIZE="100K"))

    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    [failed] = json_report(refused)["failures"]
    assert failed["code"] == TOO_LARGE and "100 KiB" in failed["message"], failed
    assert keys(bench.images) == []
    assert run_ptif(bench, "retry").returncode == 0
    flag = run_ptif(bench, "process", "--max-source-size", str(len(data)), "--json")
    assert flag.returncode == 0, flag.stderr
    verify_output(bench, "s/x.jpg", SIZE)


def test_ptif_convert_refuses_a_source_over_its_flag(tmp_path: Path) -> None:
    src = tmp_path / "x.jpg"
    src.write_bytes(jpeg(*SIZE, noise=True))
    done = subprocess.run(
        [*PTIF, "convert", str(src), str(tmp_path / "x.tif"), "--max-source-size", "10K"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 1
    [line] = done.stderr.strip().splitlines()
    assert str(src) in line and "10 KiB" in line and "--max-source-size" in line
    assert not (tmp_path / "x.tif").exists()


def test_a_source_replaced_by_a_bigger_one_is_not_downloaded_past_the_limit(
    bench: Bench, tmp_path: Path
) -> None:
    """The size checked is the HEAD's; the object read may be a newer, bigger version."""
    put_source(bench.source, "r/x.jpg", b"small")
    put_source(bench.source, "r/x.jpg", bytes(300_000))
    local = tmp_path / "work" / "source"
    local.parent.mkdir()

    with pytest.raises(TooLargeError) as refused:
        fetch(bench.source, "r/x.jpg", local, size=5, max_bytes=100_000)

    assert "r/x.jpg" in str(refused.value) and "--max-source-size" in str(refused.value)
    assert list(local.parent.iterdir()) == []


def test_a_source_that_grows_while_it_is_copied_stops_at_the_limit(tmp_path: Path) -> None:
    growing = io.BytesIO(bytes(3 << 20))  # more bytes than the size the store first reported
    sink = io.BytesIO()
    with pytest.raises(ObjectTooBig) as refused:
        copy_at_most(growing, sink, 2 << 20, "grows.jpg")
    assert refused.value.code == TOO_LARGE
    assert sink.tell() <= 2 << 20


# full work folders ------------------------------------------------------------------------------


def on_small_disk(where: Path, size: str, filler_kib: int, *command: str, env: dict[str, str]):  # type: ignore[no-untyped-def]
    """Run ``command`` with a tmpfs of ``size`` on ``where``, ``filler_kib`` of it taken."""
    script = (
        f'mount -t tmpfs -o size={size},mode=0777 tmpfs "$1" && '
        f'head -c {filler_kib}K /dev/zero > "$1/filler" && shift && exec "$@"'
    )
    return subprocess.run(
        ["unshare", "-m", "sh", "-c", script, "sh", str(where), *command],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.fixture
def tmpfs(tmp_path: Path) -> None:
    if not can_mount_tmpfs(tmp_path / "probe"):
        pytest.skip("mounting a tmpfs needs root (CAP_SYS_ADMIN)")


@pytest.mark.usefixtures("tmpfs")
def test_a_source_with_no_room_in_the_work_folder_waits_uncounted(tmp_path: Path) -> None:
    """2 MB free of 8 MiB: a 2.6 MB source (and room for its pyramid) does not fit now, and
    nothing is written; a later run with room converts it."""
    bench = folder_bench(tmp_path)
    data = jpeg(3000, 2000, seed=4, noise=True)
    put_source(bench.source, "d/big.jpg", data)
    queue(bench, "d/big.jpg")

    done = on_small_disk(bench.tmp, "8m", 6 * 1024, *PTIF, "process", "--json", env=bench.env())

    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    [retry] = json_report(done)["retry_later"]
    assert retry["code"] == DISK_FULL and "free" in retry["message"], retry
    assert claim_of(bench, "d/big.jpg")["attempts"] == 0
    assert failures(bench) == {}
    assert run_ptif(bench, "process").returncode == 0
    verify_output(bench, "d/big.jpg", (3000, 2000))


@pytest.mark.usefixtures("tmpfs")
def test_a_source_bigger_than_the_whole_work_disk_fails_at_once(tmp_path: Path) -> None:
    bench = folder_bench(tmp_path)
    sparse_source(bench, "d/huge.jpg", 64 << 20)
    queue(bench, "d/huge.jpg")

    done = on_small_disk(bench.tmp, "4m", 0, *PTIF, "process", "--json", env=bench.env())

    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    [failed] = json_report(done)["failures"]
    assert failed["code"] == TOO_LARGE and "never fit" in failed["message"], failed
    assert "TMPDIR" in failed["message"]


DOWNLOAD = """
import sys
from pathlib import Path
from ptif.errors import PtifError
from ptif.stores import open_store
store = open_store(sys.argv[1], endpoint_url=sys.argv[2])
try:
    store.get_file("big.bin", Path(sys.argv[3]) / "download")
except PtifError as error:
    print(error.code, error)
except BaseException as error:
    print("raised", type(error).__name__, error)
"""


@pytest.mark.usefixtures("tmpfs")
@pytest.mark.parametrize("full", ["no-blocks", "no-inodes"])
def test_an_s3_download_onto_a_full_disk_is_disk_full(
    bench: Bench, tmp_path: Path, full: str
) -> None:
    if bench.kind != "s3":
        pytest.skip("the folder store's full disk is tests/test_hostile_batch.py's")
    put_source(bench.source, "big.bin", os.urandom(1 << 20))
    where = tmp_path / "small"
    where.mkdir()
    option = "size=64k" if full == "no-blocks" else "size=4m,nr_inodes=1"
    script = f'mount -t tmpfs -o {option},mode=0777 tmpfs "$1" && shift && exec "$@"'
    done = subprocess.run(
        ["unshare", "-m", "sh", "-c", script, "sh", str(where), sys.executable, "-c", DOWNLOAD]
        + [bench.urls["source"], str(bench.endpoint_url), str(where)],
        env=bench.env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"{DISK_FULL} "), done.stdout
    assert "big.bin" in done.stdout and "Traceback" not in done.stderr


SECOND_DOWNLOAD = """
import dataclasses, hashlib, sys
from pathlib import Path
from ptif.errors import PtifError
from ptif.queue.fetch import fetch
from ptif.stores import FolderStore

class KmsLike(FolderStore):
    # an eTag of 32 hex digits that is not the MD5 of the bytes, as SSE-KMS objects have
    def get_file(self, key, path, max_bytes=None):
        info = super().get_file(key, path, max_bytes)
        return dataclasses.replace(info, etag=hashlib.md5(info.etag.encode()).hexdigest())

try:
    fetched = fetch(KmsLike(sys.argv[1], read_only=True), "kms.bin", Path(sys.argv[2]) / "source")
    print("fetched", fetched.info.size)
except PtifError as error:
    print(error.code, error)
"""


@pytest.mark.usefixtures("tmpfs")
def test_a_source_downloaded_twice_has_the_room_its_first_download_had(tmp_path: Path) -> None:
    """An eTag that is no MD5 of the bytes (SSE-KMS) makes the worker download the source a
    second time, over the first copy: that copy's space is the second one's too. 3 MiB on an
    8 MiB disk fits once with room for its pyramid, so it fits the second time as well."""
    source = tmp_path / "source"
    source.mkdir()
    (source / "kms.bin").write_bytes(os.urandom(3 << 20))
    where = tmp_path / "small"
    where.mkdir()
    script = 'mount -t tmpfs -o size=8m,mode=0777 tmpfs "$1" && shift && exec "$@"'
    done = subprocess.run(
        ["unshare", "-m", "sh", "-c", script, "sh", str(where), sys.executable, "-c"]
        + [SECOND_DOWNLOAD, str(source), str(where)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["fetched", str(3 << 20)], done.stdout


def test_a_folder_store_says_too_big_before_reading(tmp_path: Path) -> None:
    store = FolderStore(tmp_path / "source")
    bench_path = tmp_path / "source" / "s.jpg"
    bench_path.write_bytes(b"\xff\xd8\xff")
    os.truncate(bench_path, 10 * GIB)
    local = tmp_path / "got"
    with pytest.raises(PtifError) as refused:
        store.get_file("s.jpg", local, max_bytes=1 << 20)
    assert refused.value.code == TOO_LARGE and not local.exists()
    assert not local.with_name("got.part").exists()
