"""The queue commands as an operator runs them: ``ptif process``, ``mark``, ``status`` and
``retry`` as subprocesses over folder stores and over buckets of a real SeaweedFS, checked by
their exit codes, their output and what they leave in the stores."""

from __future__ import annotations

import contextlib
import io
import json
import os
import pty
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from corpus import Corpus, jpeg
from PIL import Image
from pyramids import read_pyramid
from s3_server import (
    ACCESS_KEY,
    REGION,
    SECRET_KEY,
    free_ports,
)
from store_helpers import (
    PTIF,
    QUEUE,
    Bench,
    FlakySource,
    Size,
    add_images,
    backdate_marker,
    failures,
    json_report,
    keys,
    live_claims,
    pending,
    put_source,
    read_json,
    reports,
    run_ptif,
    start_ptif,
    verify_all,
    verify_output,
    wait_for,
)

from ptif.convert.pyramid import expected_levels
from ptif.queue.layout import failed_key, marker_key
from ptif.queue.leases import acquire
from ptif.queue.outputs import output_key
from ptif.queue.status import status as queue_status
from ptif.queue.worker import Stores
from ptif.stores import FolderStore

SMALL: Size = (64, 48)
STOP_LIMIT_S = 30.0
UNREACHABLE_LIMIT_S = 45.0
STATUS_FIELDS = {"pending", "claimed", "failed", "failed_by_code", "oldest_pending_age_s"}


def process(bench: Bench, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return run_ptif(bench, "process", "--workers", "2", "--json", *args, env=bench.env(**env))


def status(bench: Bench) -> dict[str, Any]:
    done = run_ptif(bench, "status", "--json")
    assert done.returncode == 0, done.stderr
    body = json.loads(done.stdout)
    assert set(body) >= STATUS_FIELDS
    return dict(body)


def images(count: int, folder: str) -> dict[str, Size]:
    return {f"{folder}/{i}.jpg": SMALL for i in range(count)}


# process: exit codes ----------------------------------------------------------------------------


def test_all_done_exits_0(bench: Bench) -> None:
    sizes = images(3, "ok")
    add_images(bench, sizes)
    done = process(bench)
    assert done.returncode == 0, done.stderr
    assert sorted(json_report(done)["converted"]) == sorted(sizes)
    verify_all(bench, sizes)
    assert [r["run_id"] for r in reports(bench)] == [json_report(done)["run_id"]]
    assert status(bench) == {
        "pending": 0,
        "claimed": 0,
        "retrying": 0,
        "failed": 0,
        "superseded": 0,
        "failed_by_code": {},
        "oldest_pending_age_s": None,
        "pages_left_out": {"sources": 0, "pages": 0, "list": []},
    }


BAD = {
    "truncated_jpeg": "bad/truncated.jpg",
    "text_as_jpeg": "bad/notes.jpg",
    "zero_bytes": "bad/empty.jpg",
    "giant_png_header": "bad/giant.png",
}


def test_bad_images_fail_and_retry_requeues_them(bench: Bench, corpus: Corpus) -> None:
    good = images(2, "good")
    add_images(bench, good)
    for name, key in BAD.items():
        put_source(bench.source, key, corpus.bad(name).path.read_bytes())
    assert run_ptif(bench, "mark", "--prefix", "bad/").returncode == 0
    done = process(bench)
    assert done.returncode == 1, done.stderr
    verify_all(bench, good)
    assert pending(bench) == []
    records = failures(bench)
    assert sorted(records) == sorted(BAD.values())
    for name, key in BAD.items():
        assert records[key]["code"] in corpus.bad(name).codes, records[key]
        assert key in records[key]["message"] and records[key]["attempts"] == 1
    codes = Counter(record["code"] for record in records.values())
    assert status(bench)["failed_by_code"] == dict(codes)
    assert_retry(bench, ["--code", "pixel-budget"], [BAD["giant_png_header"]])
    assert_retry(bench, [], sorted(BAD.values()))
    assert status(bench)["failed"] == 0 and status(bench)["pending"] == len(BAD)


def assert_retry(bench: Bench, flags: list[str], queued: list[str]) -> None:
    done = run_ptif(bench, "retry", *flags, "--json")
    assert done.returncode == 0, done.stderr
    assert sorted(pending(bench)) == sorted(marker_key(key, QUEUE) for key in queued)
    for key in queued:
        marker = read_json(bench.process, marker_key(key, QUEUE))
        assert marker["key"] == key and marker["origin"] == "retry"
        assert "attempts" not in marker and "code" not in marker
        assert bench.process.head(failed_key(key)) is None


def closed_port_env(tmp_path: Path) -> dict[str, str]:
    port = free_ports(1)[0]
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "PTIF_"))}
    return keep | {
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws-credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",
        "PTIF_SOURCE": "s3://source",
        "PTIF_PROCESS": "s3://process",
        "PTIF_IMAGES": "s3://images",
        "PTIF_ENDPOINT_URL": f"http://127.0.0.1:{port}",
    }


Unreachable = tuple[subprocess.CompletedProcess[str], float]


@pytest.fixture(scope="module")
def unreachable(tmp_path_factory: pytest.TempPathFactory) -> Unreachable:
    """One ``ptif process`` against a closed loopback port, and how long it took to give up."""
    folder = tmp_path_factory.mktemp("unreachable")
    started = time.monotonic()
    done = subprocess.run(
        [*PTIF, "process"],
        env=closed_port_env(folder),
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    return done, time.monotonic() - started


def test_unreachable_store_exits_3_quickly(unreachable: Unreachable) -> None:
    done, seconds = unreachable
    assert done.returncode == 3, done.stderr
    assert "could not reach http://127.0.0.1:" in done.stderr
    assert seconds < UNREACHABLE_LIMIT_S


def test_unreachable_store_names_the_first_failure(unreachable: Unreachable) -> None:
    """The check before any work lists each store: the source is the first, and the line
    says where its location came from."""
    done, _ = unreachable
    assert done.returncode == 3
    assert done.stderr.startswith("ptif: the source store (PTIF_SOURCE=s3://source): ")
    assert " to list s3://source/" in done.stderr and done.stderr.count("\n") == 1


def test_bad_setting_exits_2(bench: Bench) -> None:
    done = run_ptif(bench, "process", env=bench.env(PTIF_WORKERS="0"))
    assert done.returncode == 2
    assert "workers must be at least 1" in done.stderr


# process: what it takes -------------------------------------------------------------------------


def test_limit_takes_that_many(bench: Bench) -> None:
    add_images(bench, images(5, "lim"))
    done = process(bench, "--limit", "2")
    assert done.returncode == 0, done.stderr
    assert len(json_report(done)["converted"]) == 2
    assert len(pending(bench)) == 3 and len(keys(bench.images)) == 2


def long_key(folder: str) -> str:
    return f"{folder}/" + "/".join(["d" * 200] * 4) + "/" + "n" * 180 + ".jpg"


def test_prefix_takes_only_that_folder(bench: Bench) -> None:
    wanted = images(2, "a") | {long_key("a"): SMALL, "a/by-basename.jpg": SMALL}
    others = images(2, "b") | {long_key("b"): SMALL, "ab/x.jpg": SMALL, "top.jpg": SMALL}
    add_images(bench, {k: v for k, v in (wanted | others).items() if "basename" not in k})
    put_source(bench.source, "a/by-basename.jpg", jpeg(*SMALL))
    original = b'{"key": "a/by-basename.jpg", "path": "a/"}'  # as the original system named it
    bench.process.put_bytes(f"{QUEUE}by-basename.json", original)
    done = process(bench, "--prefix", "a/")
    assert done.returncode == 0, done.stderr
    report = json_report(done)
    assert sorted(report["converted"]) == sorted(wanted)
    assert report["counts"]["converted"] == len(wanted)
    verify_all(bench, wanted)
    assert sorted(pending(bench)) == sorted(marker_key(key, QUEUE) for key in others)


def test_min_age_leaves_young_markers(bench: Bench) -> None:
    # The young marker's age is how long the command takes to start and list: give that room
    # (a bucket's LastModified can't be backdated, so there the old one has to wait).
    folder = isinstance(bench.process, FolderStore)
    old_s, min_age_s = (3600, 1800) if folder else (15, 10)
    add_images(bench, {"age/old.jpg": SMALL})
    backdate_marker(bench, "age/old.jpg", old_s)
    add_images(bench, {"age/young.jpg": SMALL})
    done = process(bench, "--min-age", str(min_age_s))
    assert done.returncode == 0, done.stderr
    report = json_report(done)
    assert report["converted"] == ["age/old.jpg"] and report["counts"]["too-young"] == 1
    assert pending(bench) == [marker_key("age/young.jpg", QUEUE)]


def terminate(worker: subprocess.Popen[str]) -> float:
    started = time.monotonic()
    worker.send_signal(signal.SIGTERM)
    worker.communicate(timeout=STOP_LIMIT_S + 10)
    return time.monotonic() - started


def has_output(bench: Bench, key: str) -> Any:
    return lambda: bench.images.head(output_key(key)) is not None


def test_follow_picks_up_new_markers_until_sigterm(bench: Bench) -> None:
    add_images(bench, {"f/first.jpg": SMALL})
    worker = start_ptif(bench, "process", "--follow", "--poll", "0.5", "--workers", "1", "-q")
    try:
        assert wait_for(has_output(bench, "f/first.jpg"), 30)
        add_images(bench, {"f/later.jpg": SMALL})
        assert wait_for(has_output(bench, "f/later.jpg"), 30)
    finally:
        seconds = terminate(worker)
    assert seconds < STOP_LIMIT_S and worker.returncode == 0, worker.stderr
    verify_all(bench, {"f/first.jpg": SMALL, "f/later.jpg": SMALL})
    assert pending(bench) == [] and live_claims(bench) == []
    converted = [key for report in reports(bench) for key in report["converted"]]
    assert sorted(converted) == ["f/first.jpg", "f/later.jpg"]


HUGE: Size = (20000, 15000)


def test_sigterm_during_a_long_conversion(bench: Bench) -> None:
    put_source(bench.source, "huge/x.jpg", jpeg(*HUGE, seed=3))
    assert run_ptif(bench, "mark").returncode == 0
    worker = start_ptif(bench, "process", "--workers", "1", "-q")
    try:
        assert wait_for(lambda: bool(live_claims(bench)), 30, step=0.05)
    finally:
        seconds = terminate(worker)
    assert seconds < STOP_LIMIT_S
    assert live_claims(bench) == []
    if pending(bench):
        assert bench.images.head("huge/x.tif") is None
    else:
        verify_output(bench, "huge/x.jpg", HUGE)


def test_recipe_flags_apply_without_profile(bench: Bench) -> None:
    add_images(bench, {"r/x.jpg": (1000, 800)})
    assert process(bench, "--tile-size", "512").returncode == 0
    local = bench.root / "x.tif"
    bench.images.get_file("r/x.tif", local)
    assert read_pyramid(local).sizes == expected_levels(1000, 800, 512)


# mark -------------------------------------------------------------------------------------------

MARKABLE = ("m/a.jpg", "m/b.png", "m/sub/c.tif")
NOT_MARKABLE = ("m/.hidden.jpg", "m/.dot/d.jpg", "m/notes.txt", ".top.jpg")


def add_mixed_sources(bench: Bench) -> None:
    for key in MARKABLE + NOT_MARKABLE:
        put_source(bench.source, key, jpeg(*SMALL))
    if bench.kind == "s3":  # a folder placeholder, as the S3 console makes (no ptif store would)
        source: Any = bench.source
        source.client.put_object(Bucket=source.bucket, Key="m/folder/", Body=b"")


def test_mark_dry_run_prints_and_writes_nothing(bench: Bench) -> None:
    add_mixed_sources(bench)
    done = run_ptif(bench, "mark", "--dry-run")
    assert done.returncode == 0, done.stderr
    assert sorted(done.stdout.splitlines()) == sorted(MARKABLE)
    assert keys(bench.process) == []


def test_mark_queues_images_only(bench: Bench) -> None:
    add_mixed_sources(bench)
    done = run_ptif(bench, "mark", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["marked"] == len(MARKABLE)
    assert sorted(pending(bench)) == sorted(marker_key(k, QUEUE) for k in MARKABLE)
    marker = read_json(bench.process, marker_key("m/a.jpg", QUEUE))
    assert marker["eTag"] == bench.source.head("m/a.jpg").etag  # type: ignore[union-attr]
    assert (marker["path"], marker["origin"]) == ("m/", "mark")


def test_mark_takes_every_format_ptif_reads_by_default(bench: Bench) -> None:
    """Not only the original system's list: JPEG 2000, WebP, HEIC, GIF, AVIF too."""
    others = ("n/a.jp2", "n/b.webp", "n/c.HEIC", "n/d.gif", "n/e.avif", "n/f.jpx")
    for key in (*others, "n/raw.dng"):
        put_source(bench.source, key, jpeg(*SMALL))
    assert run_ptif(bench, "mark", "--prefix", "n/").returncode == 0
    assert sorted(pending(bench)) == sorted(marker_key(k, QUEUE) for k in others)
    assert run_ptif(bench, "mark", "--prefix", "n/", "--ext", "DNG").returncode == 0
    assert marker_key("n/raw.dng", QUEUE) in pending(bench)  # --ext adds to the list


def test_mark_ext_and_prefix(bench: Bench) -> None:
    add_mixed_sources(bench)
    assert run_ptif(bench, "mark", "--only-ext", "png", "--only-ext", ".TIF").returncode == 0
    assert sorted(pending(bench)) == [marker_key(k, QUEUE) for k in ("m/b.png", "m/sub/c.tif")]
    assert run_ptif(bench, "mark", "--prefix", "m/a").returncode == 0
    assert len(pending(bench)) == 3


def test_mark_stale_marks_missing_and_changed_outputs(bench: Bench) -> None:
    sizes = images(4, "s")
    add_images(bench, sizes)
    assert process(bench).returncode == 0
    put_source(bench.source, "s/0.jpg", jpeg(80, 60, seed=99))
    bench.images.delete("s/1.tif")
    done = run_ptif(bench, "mark", "--stale", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["up_to_date"] == 2
    assert sorted(pending(bench)) == [marker_key(k, QUEUE) for k in ("s/0.jpg", "s/1.jpg")]
    assert process(bench).returncode == 0
    verify_output(bench, "s/0.jpg", (80, 60))
    verify_output(bench, "s/1.jpg", SMALL)


def test_mark_reports_a_queue_it_cannot_write(bench: Bench, tmp_path: Path) -> None:
    put_source(bench.source, "m/a.jpg", jpeg(*SMALL))
    if bench.kind != "folder":
        pytest.skip("SeaweedFS creates a missing bucket on its first write, so S3 cannot fail here")
    (Path(bench.urls["process"]) / "rbsc").write_text("a file where the queue should be")
    done = run_ptif(bench, "mark", env=bench.env())
    assert done.returncode != 0
    assert "m/a.jpg" in done.stderr or "rbsc" in done.stderr or "no-such-bucket" in done.stderr


# status -----------------------------------------------------------------------------------------


def test_status_counts_the_queue(bench: Bench) -> None:
    add_images(bench, {"st/a.jpg": SMALL})
    backdate_marker(bench, "st/a.jpg", 1.2)
    add_images(bench, {"st/b.jpg": SMALL})
    bench.process.put_bytes(f"{QUEUE}gone/x.jpg.json", b'{"key": "gone/x.jpg"}')
    assert process(bench, "--prefix", "gone/").returncode == 1
    acquire(bench.process, "st/a.tif", "someone-else", 60)
    body = status(bench)
    assert (body["pending"], body["claimed"], body["failed"]) == (2, 1, 1)
    assert body["failed_by_code"] == {"source-missing": 1}
    assert 1.0 <= body["oldest_pending_age_s"] < 60


def test_oldest_pending_age_survives_a_failed_attempt(bench: Bench) -> None:
    add_images(bench, {"old/x.jpg": SMALL})
    backdate_marker(bench, "old/x.jpg", 2.5)
    flaky = Stores(FlakySource(bench.source), bench.process, bench.images)  # type: ignore[arg-type]
    assert bench.worker(flaky).run().counts["retry-later"] == 1
    counted = queue_status(bench.process, QUEUE)
    assert counted.oldest_pending_age_s is not None and counted.oldest_pending_age_s >= 2.5
    assert (counted.pending, counted.retrying, counted.claimed) == (1, 1, 0)


def test_a_key_cannot_drive_the_operators_terminal(bench: Bench) -> None:
    """Anyone can upload a key holding escape sequences (a window title, a cleared screen): the
    failure lines ``ptif process`` prints show them escaped, never raw."""
    key = "x\x1b]0;PWNED\x07\x1b[2J\u202e.jpg"
    put_source(bench.source, key, b"not an image")
    assert run_ptif(bench, "mark").returncode == 0
    done = run_ptif(bench, "process")
    assert done.returncode == 1, done.stderr
    assert "\x1b" not in done.stderr and "\x07" not in done.stderr, ascii(done.stderr)
    line = next(line for line in done.stderr.splitlines() if line.startswith("  unsupported:"))
    assert all(c.isprintable() for c in line), ascii(line)
    assert "x\\x1b]0;PWNED\\x07\\x1b[2J\\x202e.jpg" in line


def test_log_lines_on_a_terminal_cannot_be_driven_by_a_key(bench: Bench) -> None:
    """On a terminal, ``ptif process`` logs plain text lines, not JSON: a warning naming an
    uploaded key (a multi-page TIFF whose later pages are left out) shows it escaped."""
    key = "t\x1b]0;PWNED\x07\u202e.tif"
    pages = io.BytesIO()
    first, second = Image.new("RGB", (64, 48), "red"), Image.new("RGB", (64, 48), "blue")
    first.save(pages, format="TIFF", save_all=True, append_images=[second])
    put_source(bench.source, key, pages.getvalue())
    assert run_ptif(bench, "mark").returncode == 0
    control, terminal = pty.openpty()  # stderr a terminal: text log lines and a progress bar
    with open(control, "rb", buffering=0) as screen:
        done = subprocess.run(
            [*PTIF, "process"], env=bench.env(), cwd=bench.root, stdout=subprocess.PIPE,
            stderr=terminal, timeout=120, check=False,
        )  # fmt: skip
        os.close(terminal)
        shown = b""
        with contextlib.suppress(OSError):  # EIO once everything written is read
            while chunk := screen.read(65536):
                shown += chunk
    assert done.returncode == 0, shown.decode(errors="replace")
    text = shown.decode()
    assert "pages; only page 1 was converted" in text, ascii(text)
    assert "\x1b]0;" not in text and "\x07" not in text and "\u202e" not in text, ascii(text)
    assert "t\\x1b]0;PWNED\\x07\\x202e.tif" in text, ascii(text)


def test_json_output_escapes_what_a_terminal_acts_on_and_reads_back_exact(bench: Bench) -> None:
    """``--json`` is read on terminals too: C1 controls (U+009B is a CSI) and a right-to-left
    override are written as ``\\u`` escapes, which read back as the very key."""
    key = "y\u009b2J\u202egpj.jpg"
    put_source(bench.source, key, b"not an image")
    assert run_ptif(bench, "mark").returncode == 0
    outputs = [
        run_ptif(bench, "process", "--json"),
        run_ptif(bench, "status", "--failed", "--json"),
    ]
    for done in outputs:
        assert done.stdout.strip(), done.stderr
        assert all(c.isprintable() for c in done.stdout.strip()), ascii(done.stdout)
    assert json_report(outputs[0])["failures"][0]["key"] == key
    assert [row["key"] for row in json.loads(outputs[1].stdout)] == [key]


def test_json_output_all_ascii_escapes_delete_too(bench: Bench) -> None:
    """JSON writes DEL (U+007F) raw, in output that is otherwise plain ASCII as well."""
    key = "z\x7f\x7f.jpg"
    put_source(bench.source, key, b"not an image")
    assert run_ptif(bench, "mark").returncode == 0
    done = run_ptif(bench, "process", "--json")
    assert all(c.isprintable() for c in done.stdout.strip()), ascii(done.stdout)
    assert json_report(done)["failures"][0]["key"] == key


def test_dry_run_key_lists_cannot_drive_the_terminal(bench: Bench) -> None:
    """``mark``, ``reconcile`` and ``retry --dry-run`` list keys one a line on stdout: a key
    holding escape sequences is listed escaped, and a key with spaces and accents as it is."""
    hostile, plain = "x\x1b]0;PWNED\x07\x1b[2J.jpg", "Bibliothèque de Genève/page 1.jpg"
    for key in (hostile, plain):
        put_source(bench.source, key, b"not an image")
    listed = []
    for command in (("mark",), ("reconcile",)):
        done = run_ptif(bench, *command, "--dry-run")
        assert done.returncode == 0, done.stderr
        listed.append(sorted(done.stdout.splitlines()))
    assert run_ptif(bench, "mark").returncode == 0
    assert run_ptif(bench, "process").returncode == 1  # both fail: failure records to retry
    done = run_ptif(bench, "retry", "--dry-run")
    assert done.returncode == 0, done.stderr
    listed.append(sorted(done.stdout.splitlines()))
    for lines in listed:
        assert lines == sorted(["x\\x1b]0;PWNED\\x07\\x1b[2J.jpg", plain]), lines


def test_a_file_name_cannot_drive_the_terminal_of_ptif_convert(tmp_path: Path) -> None:
    """``ptif convert -r uploads/ out/``: a file named with escape sequences fails in a line
    that shows them escaped."""
    uploads = tmp_path / "uploads"
    uploads.mkdir()
    (uploads / "ok.jpg").write_bytes(jpeg(64, 48))
    (uploads / "x\x1b]0;PWNED\x07.jpg").write_bytes(b"not an image")
    env = {"PATH": "/usr/bin:/bin", "TMPDIR": str(tmp_path)}
    done = subprocess.run(
        [*PTIF, "convert", "-r", str(uploads), str(tmp_path / "out") + "/"],
        env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert "\x1b" not in done.stderr and "\x07" not in done.stderr, ascii(done.stderr)
    assert "x\\x1b]0;PWNED\\x07.jpg" in done.stderr
