"""The memory and time budgets of libvips conversions: bombs refused from their header in small
memory, honest big images still converted, a conversion stopped at its deadline, running out of
memory reported as ``too-large`` in one line."""

from __future__ import annotations

import json
import re
import resource
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import pyvips
from bombs import (
    constant_tiff,
    dense_forged_jpeg,
    flat_jpeg,
    forged_jpeg,
    interlaced_png,
    metadata_bomb_jpeg,
    noisy_jpeg,
    patch_frame,
    scan_bomb_jpeg,
)
from pyramids import read_pyramid
from store_helpers import (
    add_images,
    failures,
    folder_bench,
    put_source,
    queue,
    run_ptif,
    verify_all,
)

from ptif.convert import budgets
from ptif.convert.engine import convert
from ptif.convert.headers import read_jpeg_frame, read_jpeg_markers, read_tiff_page
from ptif.convert.limits import MIN_MEMORY, Limits
from ptif.convert.tiffwriter import Expired
from ptif.errors import (
    TOO_COMPLEX,
    TOO_LARGE,
    TOO_SLOW,
    TooComplexError,
    TooLargeError,
    TooSlowError,
)

MiB = 2**20
#: The memory budget of these tests: what a small container gives each of a few workers.
BUDGET = 256 * MiB
PTIF = (sys.executable, "-m", "ptif")

# A child that converts one file and reports the outcome and its own peak memory. VmHWM, not
# ru_maxrss: a child's ru_maxrss starts at the RSS of the pytest worker that spawned it.
CHILD = """
import json, sys
from ptif.convert import convert
from ptif.convert.limits import Limits
from ptif.errors import PtifError
try:
    convert(sys.argv[1], sys.argv[2], limits=Limits(max_memory=int(sys.argv[3])))
    outcome = "converted"
except PtifError as error:
    outcome = error.code
peak = next(l for l in open("/proc/self/status") if l.startswith("VmHWM:")).split()[1]
print(json.dumps({"outcome": outcome, "peak_mib": int(peak) / 1024}))
"""


def convert_in_child(src: Path, dst: Path, budget: int = BUDGET) -> tuple[str, float]:
    """Convert in a fresh process: its outcome (a failure code or "converted") and peak MiB."""
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(src), str(dst), str(budget)],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    result = json.loads(done.stdout)
    return result["outcome"], result["peak_mib"]


def no_output(dst: Path) -> bool:
    return not dst.exists() and not list(dst.parent.glob("*.ptif-partial"))


# bombs: refused from the header, in small memory ------------------------------------------------


BOMBS = {
    # name: (writer, what the message must say)
    "tiny-progressive-jpeg": (
        lambda p: forged_jpeg(p, 20_000, 20_000, progressive=True),
        "pixels a byte",
    ),
    "tiny-baseline-jpeg": (lambda p: forged_jpeg(p, 20_000, 20_000, progressive=False), "forged"),
    "dense-progressive-jpeg": (
        lambda p: dense_forged_jpeg(p, 20_000, 20_000),
        "DCT coefficients",
    ),
    "interlaced-png16": (lambda p: interlaced_png(p, 6000, 6000), "interlaced PNG"),
    "tiff-tiny-strips": (
        lambda p: constant_tiff(p, 60_000, 50_000, rows_per_strip=1),
        "pixels a byte",
    ),
    "tiff-separate-planes": (
        lambda p: constant_tiff(p, 10_000, 10_000, bands=3, separate=True),
        "strip of 10000 rows",
    ),
    "tiff-big-tiles": (
        lambda p: constant_tiff(p, 30_000, 4096, bands=3, tile=4096),
        "4096x4096 tiles",
    ),
    "rotated-jpeg": (lambda p: flat_jpeg(p, 12_000, 12_000, orientation=6), "orientation 6"),
}


@pytest.mark.parametrize("name", sorted(BOMBS))
def test_bomb_fails_from_its_header(tmp_path: Path, name: str) -> None:
    writer, said = BOMBS[name]
    src = writer(tmp_path / f"{name}.bin")
    dst = tmp_path / "out" / "bomb.tif"

    started = time.perf_counter()
    with pytest.raises(TooLargeError) as caught:
        convert(src, dst, limits=Limits(max_memory=BUDGET))

    assert time.perf_counter() - started < 5, "a header check, not a decode"
    assert caught.value.code == TOO_LARGE and caught.value.permanent
    assert said in str(caught.value)
    assert str(src) in str(caught.value)
    assert no_output(dst)


@pytest.mark.parametrize("name", ["dense-progressive-jpeg", "interlaced-png16", "rotated-jpeg"])
def test_bomb_is_refused_in_small_memory(tmp_path: Path, name: str) -> None:
    src = BOMBS[name][0](tmp_path / f"{name}.bin")

    outcome, peak = convert_in_child(src, tmp_path / "bomb.tif")

    assert outcome == TOO_LARGE
    assert peak < 150, f"refusing it took {peak:.0f} MiB"


def test_memory_message_names_estimate_limit_and_setting(tmp_path: Path) -> None:
    src = interlaced_png(tmp_path / "i.png", 6000, 6000)

    with pytest.raises(TooLargeError) as caught:
        convert(src, tmp_path / "i.tif", limits=Limits(max_memory=BUDGET))

    message = str(caught.value)
    assert "about 275 MiB" in message  # 6000 x 6000 x 4 bands x 2 bytes
    assert "budget of 256 MiB" in message
    assert "--max-memory" in message and "PTIF_MAX_MEMORY" in message


@pytest.mark.parametrize(("rows", "reasons"), [(1000, 1), (100, 2)])  # lines, or strips
def test_message_gives_each_reason(tmp_path: Path, rows: int, reasons: int) -> None:
    src = constant_tiff(tmp_path / "r.tif", 10_000, 10_000, bands=3, rows_per_strip=rows,
                        orientation=8, noisy=True)  # fmt: skip

    with pytest.raises(TooLargeError) as caught:
        convert(src, tmp_path / "out.tif", limits=Limits(max_memory=BUDGET))

    message = str(caught.value)
    assert "EXIF orientation 8 needs the whole decoded image, 286 MiB" in message
    assert ("strip of 100 rows" in message) == (reasons == 2)
    assert message.count("; ") == reasons - 1 + message.count("; if"), message


def test_the_same_bomb_converts_with_the_budget_it_needs(tmp_path: Path) -> None:
    src = interlaced_png(tmp_path / "i.png", 6000, 6000)

    result = convert(src, tmp_path / "i.tif", limits=Limits(max_memory=512 * MiB))

    assert (result.width, result.height) == (6000, 6000)


def test_worker_fails_bombs_alone_with_their_code(tmp_path: Path) -> None:
    bench = folder_bench(tmp_path)
    add_images(bench, {"good/a.jpg": (640, 480), "good/b.jpg": (300, 200)})
    bombs = {"bombs/forged.jpg": BOMBS["tiny-progressive-jpeg"][0],
             "bombs/deep.png": BOMBS["interlaced-png16"][0]}  # fmt: skip
    for key, writer in bombs.items():
        put_source(bench.source, key, writer(tmp_path / key.replace("/", "-")).read_bytes())
        queue(bench, key)

    done = run_ptif(bench, "process", "--workers", "2", env=bench.env(PTIF_MAX_MEMORY="256M"))

    assert done.returncode == 1, done.stderr
    verify_all(bench, {"good/a.jpg": (640, 480), "good/b.jpg": (300, 200)})
    records = failures(bench)
    assert sorted(records) == sorted(bombs)
    for key, record in records.items():
        assert (record["code"], record["attempts"]) == (TOO_LARGE, 1), record
        assert key in record["message"]


def test_a_forged_avif_size_is_named_as_declared(tmp_path: Path) -> None:
    noise = pyvips.Image.gaussnoise(1000, 1000, mean=128, sigma=40).cast("uchar")
    try:
        data = bytearray(noise.bandjoin([noise, noise]).heifsave_buffer(compression="av1", Q=90))
    except pyvips.Error:
        pytest.skip("this libvips cannot write AVIF")
    at = data.find(b"ispe") + 8  # after the box type, its version and flags
    assert struct.unpack(">II", data[at : at + 8]) == (1000, 1000)
    data[at : at + 8] = struct.pack(">II", 16_000, 16_000)  # dense enough for the density rule
    src = tmp_path / "forged.avif"
    src.write_bytes(data)

    with pytest.raises(TooLargeError) as caught:
        convert(src, tmp_path / "forged.tif", limits=Limits(max_memory=BUDGET))

    message = str(caught.value)
    assert "declares in its 'ispe' property, which the coded image need not match" in message
    assert f"16000x16000, in {len(data):,} bytes" in message, message


# JPEGs built for work: scans and metadata segments ---------------------------------------------


def test_a_jpeg_with_more_scans_than_any_encoder_writes_is_refused_at_once(tmp_path: Path) -> None:
    src = scan_bomb_jpeg(tmp_path / "scans.jpg", 8000, low_bit=1)  # 127 scans, 6 kB
    dst = tmp_path / "out" / "scans.tif"

    started = time.perf_counter()
    with pytest.raises(TooComplexError) as caught:
        convert(src, dst, limits=Limits(max_memory=BUDGET, max_seconds=600))

    assert time.perf_counter() - started < 2, "a walk of the markers, not a decode"
    assert caught.value.code == TOO_COMPLEX and caught.value.permanent
    message = str(caught.value)
    assert str(src) in message and "more than 100 scans" in message
    assert "re-encode" in message
    assert no_output(dst)


def test_a_progression_within_the_scan_limit_converts(tmp_path: Path) -> None:
    src = scan_bomb_jpeg(tmp_path / "scans.jpg", 512, low_bit=0)  # 64 scans, all valid

    result = convert(src, tmp_path / "scans.tif", limits=Limits(max_memory=BUDGET))

    assert (result.width, result.height) == (512, 512)


def test_metadata_segments_count_against_the_memory_budget(tmp_path: Path) -> None:
    budget = 64 * MiB
    iptc = metadata_bomb_jpeg(tmp_path / "iptc.jpg", 400, marker=0xED)  # 26 MB, kept thrice
    comments = metadata_bomb_jpeg(tmp_path / "com.jpg", 400, marker=0xFE)  # kept once

    with pytest.raises(TooLargeError) as caught:
        convert(iptc, tmp_path / "iptc.tif", limits=Limits(max_memory=budget))
    result = convert(comments, tmp_path / "com.tif", limits=Limits(max_memory=budget))

    message = str(caught.value)
    assert "400 APPn and COM metadata segments" in message and "75 MiB" in message, message
    assert "budget of 64 MiB" in message and "--max-memory" in message
    assert no_output(tmp_path / "iptc.tif")
    assert (result.width, result.height) == (16, 16)


def test_a_metadata_bomb_is_refused_in_small_memory(tmp_path: Path) -> None:
    src = metadata_bomb_jpeg(tmp_path / "app2.jpg", 1400, marker=0xE2)  # 92 MB: 275 MiB held

    outcome, peak = convert_in_child(src, tmp_path / "app2.tif")

    assert outcome == TOO_LARGE
    assert peak < 100, f"refusing it took {peak:.0f} MiB"


def test_thousands_of_tiny_metadata_segments_are_too_complex(tmp_path: Path) -> None:
    src = metadata_bomb_jpeg(tmp_path / "com.jpg", budgets.MAX_JPEG_METADATA_SEGMENTS + 1,
                             marker=0xFE, size=1)  # fmt: skip

    with pytest.raises(TooComplexError, match="more than 10,000 metadata segments"):
        convert(src, tmp_path / "com.tif", limits=Limits(max_memory=BUDGET))


def test_jpeg_markers_count_scans_and_metadata(tmp_path: Path) -> None:
    image = (pyvips.Image.black(64, 48, bands=3) + [10, 20, 30]).cast("uchar")
    image = image.copy(interpretation="srgb")
    progressive = tmp_path / "p.jpg"
    image.jpegsave(str(progressive), interlace=True, keep="none")
    baseline = metadata_bomb_jpeg(tmp_path / "b.jpg", 3, marker=0xE1, size=100)

    found = read_jpeg_markers(progressive, 100, 100)
    assert found is not None and found.frame is not None and found.frame.progressive
    assert (found.scans, found.metadata_segments, found.stopped) == (10, 0, False)
    found = read_jpeg_markers(baseline, 100, 100)
    assert found is not None and found.scans == 1
    assert found.metadata_segments == 3 and found.kept_bytes == 3 * 3 * 102
    stopped = read_jpeg_markers(baseline, 100, 2)
    assert stopped is not None and stopped.stopped and stopped.metadata_segments == 3
    (tmp_path / "junk.jpg").write_bytes(b"GIF89a")
    assert read_jpeg_markers(tmp_path / "junk.jpg", 100, 100) is None


@pytest.mark.parametrize("count", [818, 819, 820, 5000])  # around the first piece's end
def test_the_marker_walk_misses_no_segment_across_its_reads(tmp_path: Path, count: int) -> None:
    src = metadata_bomb_jpeg(tmp_path / "c.jpg", count, marker=0xFE, size=1)  # 5 bytes each

    found = read_jpeg_markers(src, 100, 100_000)

    assert found is not None and (found.metadata_segments, found.scans) == (count, 1)


# honest images: not refused ------------------------------------------------------------------


@pytest.mark.slow
def test_big_baseline_jpeg_streams_within_a_smaller_budget(tmp_path: Path) -> None:
    src = noisy_jpeg(tmp_path / "scan.jpg", 12_000, 12_000)  # 432 MB of pixels
    dst = tmp_path / "scan.tif"

    outcome, peak = convert_in_child(src, dst)

    assert outcome == "converted"
    assert peak < BUDGET / MiB, f"peaked at {peak:.0f} MiB"
    assert read_pyramid(dst).sizes[0] == (12_000, 12_000)


def test_rotated_tiled_tiff_is_read_at_random_without_a_copy(tmp_path: Path) -> None:
    image = (pyvips.Image.black(6000, 6000, bands=3) + [20, 120, 220]).cast("uchar").copy()
    image.set_type(pyvips.GValue.gint_type, "orientation", 6)
    src = tmp_path / "rotated.tif"
    image.tiffsave(str(src), tile=True, compression="deflate")

    costs = budgets.decode_costs(src, pyvips.Image.new_from_file(str(src)), "tiffload", 1)
    assert sum(cost.bytes for cost in costs) < 16 * MiB  # two rows of tiles, no decoded copy
    result = convert(src, tmp_path / "out.tif", limits=Limits(max_memory=MIN_MEMORY))
    assert (result.width, result.height) == (6000, 6000)


def test_blank_fax_page_is_dense_but_real(tmp_path: Path) -> None:
    src = tmp_path / "blank.tif"
    blank = (pyvips.Image.black(6000, 7000) + 255).cast("uchar").copy(interpretation="b-w")
    blank.tiffsave(str(src), compression="ccittfax4", bitdepth=1)
    assert 6000 * 7000 / src.stat().st_size > budgets.MAX_PIXELS_PER_BYTE  # denser than 8-bit

    result = convert(src, tmp_path / "blank-out.tif", limits=Limits(max_memory=BUDGET))

    assert (result.width, result.height) == (6000, 7000)


def test_small_images_are_never_refused_for_density(tmp_path: Path) -> None:
    src = tmp_path / "flat.webp"
    flat = (pyvips.Image.black(4000, 4000, bands=3) + 128).cast("uchar")
    flat.copy(interpretation="srgb").webpsave(str(src), lossless=True)
    assert 4000 * 4000 / src.stat().st_size > budgets.MAX_PIXELS_PER_BYTE

    assert convert(src, tmp_path / "flat.tif").width == 4000


def test_estimate_tracks_what_libjpeg_really_holds(tmp_path: Path) -> None:
    noise = pyvips.Image.gaussnoise(1000, 1000, mean=128, sigma=40).cast("uchar")
    data = noise.bandjoin([noise, noise]).jpegsave_buffer(interlace=True, subsample_mode="off")
    src = tmp_path / "p.jpg"
    src.write_bytes(patch_frame(data, 6000, 6000))
    estimate = budgets.jpeg_coefficient_bytes(pyvips.Image.new_from_file(str(src)), None)
    assert estimate == 6000 * 6000 * 3 * 2

    outcome, peak = convert_in_child(src, tmp_path / "p.tif", budget=4 * 2**30)

    assert outcome == "converted"
    assert estimate / MiB * 0.9 < peak < estimate / MiB + 200


# header readers ------------------------------------------------------------------------------


def test_jpeg_frame_gives_progression_and_sampling(tmp_path: Path) -> None:
    src = flat_jpeg(tmp_path / "p.jpg", 100, 60, progressive=True)
    frame = read_jpeg_frame(src)
    assert frame is not None
    assert (frame.width, frame.height, frame.progressive) == (100, 60, True)
    assert frame.sampling == ((2, 2), (1, 1), (1, 1))  # 4:2:0

    baseline = read_jpeg_frame(flat_jpeg(tmp_path / "b.jpg", 100, 60))
    assert baseline is not None and not baseline.progressive
    (tmp_path / "junk.jpg").write_bytes(b"\xff\xd8\xff\xe0\x00")
    assert read_jpeg_frame(tmp_path / "junk.jpg") is None


def test_coefficients_are_counted_in_whole_mcus(tmp_path: Path) -> None:
    src = flat_jpeg(tmp_path / "p.jpg", 100, 60, progressive=True)
    image = pyvips.Image.new_from_file(str(src))
    # Y: 13 blocks across rounded to 14, 8 down; Cb and Cr: 7 x 4 blocks; 128 bytes a block.
    assert budgets.jpeg_coefficient_bytes(image, read_jpeg_frame(src)) == (14 * 8 + 2 * 7 * 4) * 128


@pytest.mark.parametrize("bigtiff", [False, True])
def test_tiff_page_layout(tmp_path: Path, bigtiff: bool) -> None:
    src = tmp_path / "pages.tif"
    grey = (pyvips.Image.black(300, 200) + 90).cast("uchar")
    pages = grey.copy()
    pages.set_type(pyvips.GValue.gint_type, "page-height", 100)
    pages.tiffsave(str(src), bigtiff=bigtiff, tile=True, tile_width=64, tile_height=32)

    second = read_tiff_page(src, 1)
    assert second is not None and second.tiled
    assert (second.tile_width, second.tile_height) == (64, 32)
    assert read_tiff_page(src, 2) is None

    grey.tiffsave(str(src), bigtiff=bigtiff)
    strips = read_tiff_page(src, 0)
    assert strips is not None and not strips.tiled and not strips.separate
    assert strips.rows_per_strip < 200


def test_tiff_layout_of_separate_planes(tmp_path: Path) -> None:
    page = read_tiff_page(constant_tiff(tmp_path / "s.tif", 64, 64, bands=3, separate=True), 0)
    assert page is not None and page.separate and page.rows_per_strip == 64


# time --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def slow_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A photo-like JPEG that takes a few seconds to convert."""
    return noisy_jpeg(tmp_path_factory.mktemp("slow") / "slow.jpg", 6000, 6000)


def test_conversion_stops_at_its_deadline(tmp_path: Path, slow_source: Path) -> None:
    dst = tmp_path / "out" / "slow.tif"

    started = time.perf_counter()
    with pytest.raises(TooSlowError) as caught:
        convert(slow_source, dst, limits=Limits(max_seconds=0.3))
    elapsed = time.perf_counter() - started

    assert caught.value.code == TOO_SLOW and caught.value.permanent
    # stopped mid-way: libvips' decode killed, or ptif's own writer between two tiles
    assert isinstance(caught.value.__cause__, pyvips.Error | Expired), caught.value.__cause__
    assert elapsed < 5
    message = str(caught.value)
    assert "time limit of 0.3 s" in message and "--max-seconds" in message
    reported = re.search(r"stopped after (\d+\.\d) s", message)
    assert reported, message  # the real time, which an uninterruptible decode may stretch
    assert 0.3 <= float(reported.group(1)) <= elapsed + 0.05
    assert no_output(dst)
    small = flat_jpeg(tmp_path / "next.jpg", 600, 400)
    assert convert(small, tmp_path / "next.tif").width == 600, "the next conversion is unharmed"


def test_a_tiny_time_limit_fails_before_writing(tmp_path: Path, slow_source: Path) -> None:
    dst = tmp_path / "slow.tif"

    with pytest.raises(TooSlowError):
        convert(slow_source, dst, limits=Limits(max_seconds=0.05))

    assert no_output(dst)


def test_the_watchdog_is_gone_after_a_conversion(tmp_path: Path) -> None:
    src = flat_jpeg(tmp_path / "small.jpg", 300, 200)
    before = threading.active_count()
    convert(src, tmp_path / "small.tif", limits=Limits(max_seconds=60))
    assert threading.active_count() == before


# out of memory -----------------------------------------------------------------------------


def limit_address_space(limit: int) -> None:
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def test_running_out_of_memory_is_too_large_in_one_line(tmp_path: Path) -> None:
    src = interlaced_png(tmp_path / "big.png", 8000, 8000)  # 512 MB decoded
    dst = tmp_path / "big.tif"

    done = subprocess.run(
        [*PTIF, "convert", str(src), str(dst), "--max-memory", "64G"],
        preexec_fn=lambda: limit_address_space(400 * MiB),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ptif: "), done.stderr
    assert "ran out of memory" in lines[0] and "Traceback" not in done.stderr
    assert no_output(dst)


def test_memory_error_becomes_too_large(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ptif.convert import engine

    def exhausted(*args: object) -> None:
        raise MemoryError

    monkeypatch.setattr(engine, "to_display", exhausted)
    src = flat_jpeg(tmp_path / "small.jpg", 300, 200)

    with pytest.raises(TooLargeError, match="ran out of memory"):
        convert(src, tmp_path / "small.tif")


def test_libvips_allocation_failures_are_recognised() -> None:
    for message in (
        "vips_tracked: out of memory -- size == 1098MB",
        "VipsJpeg: Insufficient memory (case 4)",
        "heif: Memory allocation error",
    ):
        assert budgets.ran_out_of_memory(message)
    assert not budgets.ran_out_of_memory("VipsJpeg: Premature end of JPEG file")


def test_cli_reports_a_memory_error_in_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from ptif.cli import convert as cli_convert
    from ptif.cli import main as cli

    def exhausted(args: object) -> int:
        raise MemoryError

    monkeypatch.setattr(cli_convert, "_formats", exhausted)

    assert cli.main(["formats"]) == 1
    assert capsys.readouterr().err.strip().splitlines() == [
        "ptif: out of memory; run fewer workers or give ptif more memory"
    ]
