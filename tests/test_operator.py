"""What an operator sees: the progress bar's done/total and time left, failures under ``-q``,
``ptif status --failed``, ``ptif info`` and the pages a multi-page source gives or leaves out."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
import tifffile
from corpus import Corpus
from pyramids import read_pyramid
from rich.console import Console
from store_helpers import Bench, add_images, keys, put_source, queue, run_ptif

from ptif.console import ItemProgress
from ptif.queue.outputs import PAGE, PAGES, SOURCE_ETAG, SOURCE_KEY, page_key
from ptif.queue.reports import ItemResult, Outcome


class Clock:
    """A clock the test moves: the bar's speed, hence its time left, without sleeping."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def terminal() -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, force_terminal=True, width=160, color_system=None), out


def item(key: str, outcome: Outcome = Outcome.CONVERTED) -> ItemResult:
    return ItemResult(f"rbsc/{key}.json", outcome, key)


# progress ----------------------------------------------------------------------------------------


def test_the_bar_shows_done_of_total_and_the_time_left() -> None:
    console, out = terminal()
    clock = Clock()
    progress = ItemProgress(bar=True, console=console, clock=clock)
    with progress:
        progress.listed(10)
        for number in range(3):
            clock.now += 2.0
            progress(item(f"a/{number}.jpg"))
        progress._bar.refresh()
        shown = out.getvalue()
    assert "3/10" in shown, shown
    assert "ETA" in shown and "0:00:14" in shown, shown  # 7 left at 2 s each


def test_the_bar_shows_no_total_before_the_listing_ends() -> None:
    console, out = terminal()
    progress = ItemProgress(bar=True, console=console, clock=Clock())
    with progress:
        progress(item("a/1.jpg"))
        progress._bar.refresh()
    assert "1/?" in out.getvalue()


def test_a_run_tells_the_bar_how_many_it_listed(bench: Bench) -> None:
    add_images(bench, {f"p/{i}.jpg": (32, 24) for i in range(3)})
    listed: list[int] = []
    worker = bench.worker()
    worker.on_listed = listed.append
    worker.run()
    assert sum(listed) == 3, listed


def test_quiet_still_prints_failures(bench: Bench) -> None:
    add_images(bench, {"ok/1.jpg": (32, 24)})
    put_source(bench.source, "bad/notes.jpg", b"not a picture at all")
    queue(bench, "bad/notes.jpg")
    done = run_ptif(bench, "process", "--workers", "1", "-q")
    assert done.returncode == 1
    assert "bad/notes.jpg" in done.stderr, done.stderr
    assert "ptif process:" not in done.stderr  # the summary is what -q hides


def json_out(done: Any) -> Any:
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


# status --failed ---------------------------------------------------------------------------------


def test_status_failed_lists_the_failure_records(bench: Bench) -> None:
    add_images(bench, {"ok/1.jpg": (32, 24)})
    for key in ("bad/notes.jpg", "bad/more\nnotes.jpg"):
        put_source(bench.source, key, b"not a picture at all")
        queue(bench, key)
    assert run_ptif(bench, "process", "--workers", "1", "-q").returncode == 1
    rows = json_out(run_ptif(bench, "status", "--failed", "--json"))
    assert sorted(row["key"] for row in rows) == ["bad/more\nnotes.jpg", "bad/notes.jpg"]
    for row in rows:
        assert row["code"] == "unsupported" and row["attempts"] == 1, row
        assert row["key"] in row["message"] and row["failed_at"].endswith("Z"), row
    text = run_ptif(bench, "status", "--failed")
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert len(lines) == 2 and all("unsupported" in line for line in lines), lines
    assert any("bad/more\\x0anotes.jpg" in line for line in lines), lines
    assert "2 failure record(s)" in text.stderr
    scoped = json_out(run_ptif(bench, "status", "--failed", "--json", "--prefix", "bad/n"))
    assert [row["key"] for row in scoped] == ["bad/notes.jpg"]


# multi-page sources ------------------------------------------------------------------------------

MULTI_PAGE = {
    "pdf": ("pdf_three_pages", "books/three.pdf"),
    "tiff": ("tiff_three_pages", "books/three.tif"),
}
ALL_PAGES_TOML = "[recipe]\nall_pages = true\n"


def put_multi_page(bench: Bench, corpus: Corpus, kind: str) -> tuple[str, Any]:
    name, key = MULTI_PAGE[kind]
    sample = corpus.sample(name)
    put_source(bench.source, key, sample.path.read_bytes())
    queue(bench, key)
    return key, sample


def fetch_output(bench: Bench, key: str, folder: Path) -> tuple[Any, dict[str, str]]:
    path = folder / key.replace("/", "_")
    info = bench.images.get_file(key, path)
    return read_pyramid(path), dict(info.metadata)


@pytest.mark.parametrize("kind", sorted(MULTI_PAGE))
def test_all_pages_gives_one_pyramid_per_page(
    bench: Bench, corpus: Corpus, kind: str, tmp_path: Path
) -> None:
    key, sample = put_multi_page(bench, corpus, kind)
    etag = bench.source.head(key).etag
    done = run_ptif(bench, "process", "--workers", "1", "--all-pages", "--json")
    report = json_out(done)
    assert report["converted"] == [key] and report["pages_left_out"]["sources"] == 0
    wanted = ["books/three.tif", "books/three-p2.tif", "books/three-p3.tif"]
    assert sorted(keys(bench.images)) == sorted(wanted)
    assert wanted == [page_key(key, n) for n in (1, 2, 3)]
    for number, (output, page) in enumerate(zip(wanted, sample.pages, strict=True), 1):
        pyramid, metadata = fetch_output(bench, output, tmp_path)
        assert pyramid.sizes[0] == (page.width, page.height), output
        assert metadata[SOURCE_KEY] == key and metadata[SOURCE_ETAG] == etag, metadata
        assert (metadata[PAGE], metadata[PAGES]) == (str(number), "3"), metadata
    (bench.root / "ptif.toml").write_text(ALL_PAGES_TOML)
    assert json_out(run_ptif(bench, "mark", "--stale", "--json"))["marked"] == 0
    bench.images.delete("books/three-p3.tif")  # a set missing a page is not current
    assert json_out(run_ptif(bench, "mark", "--stale", "--json"))["marked"] == 1
    again = json_out(run_ptif(bench, "process", "--workers", "1", "--json"))
    assert again["converted"] == [key] and sorted(keys(bench.images)) == sorted(wanted)


@pytest.mark.parametrize("kind", sorted(MULTI_PAGE))
def test_pages_left_out_are_reported_logged_and_counted(
    bench: Bench, corpus: Corpus, kind: str
) -> None:
    key, _ = put_multi_page(bench, corpus, kind)
    done = run_ptif(bench, "process", "--workers", "1", "--json")
    report = json_out(done)
    assert keys(bench.images) == ["books/three.tif"]
    assert report["pages_left_out"] == {
        "sources": 1, "pages": 2, "list": [{"key": key, "pages": 3, "left_out": 2}]
    }  # fmt: skip
    logged = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    assert any(
        line["level"] == "warning" and "3 pages; only page 1" in line["message"] for line in logged
    ), done.stderr
    counted = json_out(run_ptif(bench, "status", "--json"))["pages_left_out"]
    assert counted == {"sources": 1, "pages": 2, "list": [{"key": key, "pages": 3, "left_out": 2}]}
    text = run_ptif(bench, "status").stdout
    assert "pages left out  2 of 1 multi-page source(s)" in text and key in text, text
    # Every page, once asked for: the note goes.
    (bench.root / "ptif.toml").write_text(ALL_PAGES_TOML)
    assert json_out(run_ptif(bench, "mark", "--stale", "--json"))["marked"] == 1
    json_out(run_ptif(bench, "process", "--workers", "1", "--json"))
    assert len(keys(bench.images)) == 3
    assert json_out(run_ptif(bench, "status", "--json"))["pages_left_out"]["sources"] == 0


def test_a_human_summary_says_pages_were_left_out(bench: Bench, corpus: Corpus) -> None:
    put_multi_page(bench, corpus, "pdf")
    done = run_ptif(bench, "process", "--workers", "1")
    assert done.returncode == 0, done.stderr
    assert "2 page(s) of 1 multi-page source(s) left out" in done.stderr, done.stderr


# info --------------------------------------------------------------------------------------------


def test_info_shows_a_stored_pyramid_and_its_provenance(bench: Bench) -> None:
    add_images(bench, {"maps/sheet.jpg": (700, 300)})
    assert run_ptif(bench, "process", "--workers", "1", "--quality", "75").returncode == 0
    etag = bench.source.head("maps/sheet.jpg").etag
    args = ["info", "--images", bench.urls["images"], "maps/sheet.tif", "--verify", "--json"]
    env = bench.env(**({"AWS_ENDPOINT_URL": bench.endpoint_url} if bench.endpoint_url else {}))
    info = json_out(run_ptif(bench, *args, env=env))
    assert (info["width"], info["height"], info["tile_size"]) == (700, 300, [256, 256])
    assert info["levels"] == [[700, 300], [350, 150], [175, 75]]
    assert info["compression"] == "jpeg" and info["quality"] == 75 and info["verified"] is True
    assert info["bytes"] == bench.images.head("maps/sheet.tif").size
    provenance = info["provenance"]
    assert provenance["source_key"] == "maps/sheet.jpg" and provenance["source_etag"] == etag
    assert provenance["recipe"] == bench.images.head("maps/sheet.tif").metadata["ptif-recipe"]
    if bench.kind == "folder":  # the file itself carries the folder store's metadata
        path = bench.root / "images" / "maps" / "sheet.tif"
        local = json_out(run_ptif(bench, "info", "--json", str(path)))
        assert local["provenance"] == provenance and local["path"] == str(path)


def test_info_verify_fails_in_one_line_on_a_damaged_pyramid(tmp_path: Path) -> None:
    import pyvips

    from ptif.convert.engine import convert

    src = tmp_path / "scan.png"
    (pyvips.Image.black(600, 500, bands=3) + [200, 30, 30]).cast("uchar").pngsave(str(src))
    good = convert(src, tmp_path / "scan.tif").path
    env = {"PATH": "/usr/bin:/bin", "TMPDIR": str(tmp_path)}
    done = subprocess_ptif(["info", "--verify", str(good)], env)
    assert done.returncode == 0 and "verified  ok" in done.stdout, done.stderr
    assert '"source_key"' not in done.stdout and "recipe    " in done.stdout  # from the file
    data = bytearray(good.read_bytes())
    with tifffile.TiffFile(good) as tif:  # the smallest level's tiles: zeros, no JPEG
        smallest = tif.pages[len(tif.pages) - 1]
        for offset, size in zip(smallest.dataoffsets, smallest.databytecounts, strict=True):
            data[offset : offset + size] = bytes(size)
    bad = tmp_path / "bad.tif"
    bad.write_bytes(bytes(data))
    failed = subprocess_ptif(["info", "--verify", "--json", str(bad)], env)
    assert failed.returncode == 1 and failed.stdout == ""
    assert len(failed.stderr.splitlines()) == 1 and str(bad) in failed.stderr, failed.stderr
    plain = json.loads(subprocess_ptif(["info", "--json", str(bad)], env).stdout)
    assert "verified" not in plain and plain["levels"][0] == [600, 500]


def subprocess_ptif(args: list[str], env: dict[str, str]) -> Any:
    import subprocess
    import sys

    return subprocess.run(
        [sys.executable, "-m", "ptif", *args], env=env, capture_output=True, text=True, check=False
    )


def test_a_source_with_too_many_pages_fails_alone(
    bench: Bench, corpus: Corpus, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ptif.queue.worker

    monkeypatch.setattr(ptif.queue.worker, "MAX_PAGES", 2)
    key, _ = put_multi_page(bench, corpus, "tiff")
    add_images(bench, {"ok/1.jpg": (32, 24)})
    report = bench.run(recipe={"all_pages": True})
    assert report.converted == ["ok/1.jpg"]
    assert [(f["key"], f["code"]) for f in report.failures] == [(key, "too-many-pages")]
    assert keys(bench.images) == ["ok/1.tif"]
