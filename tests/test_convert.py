from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import pyvips
import tifffile
from corpus import GOOD, Corpus, Page, Sample
from pyramids import (
    Pyramid,
    expected_levels,
    probe_ok,
    probe_value,
    read_pixels,
    read_pyramid,
)

from ptif.convert import ConversionResult, convert, convert_pages
from ptif.convert.encoding import ssim
from ptif.convert.profiles import Recipe, get_profile
from ptif.errors import PixelBudgetError, PtifError

DEFAULT = get_profile("default").resolve({})
MARBLE = get_profile("marble").resolve({})
MARBLE_COPYRIGHT = get_profile("marble").resolve({"copyrightStatus": "copyright"})

JPEG = tifffile.COMPRESSION.JPEG
ADOBE_DEFLATE = tifffile.COMPRESSION.ADOBE_DEFLATE
PHOTOMETRIC_FOR_BANDS = {
    1: {tifffile.PHOTOMETRIC.MINISBLACK},
    3: {tifffile.PHOTOMETRIC.RGB, tifffile.PHOTOMETRIC.YCBCR},
}
PTIF = Path(sys.executable).parent / "ptif"
BILEVEL = [name for name in GOOD if "bilevel" in name]


@dataclass(frozen=True)
class Converted:
    sample: Sample
    result: ConversionResult
    pyramid: Pyramid


Convert = Callable[..., Converted]


@pytest.fixture(scope="module")
def converted(corpus: Corpus, tmp_path_factory: pytest.TempPathFactory) -> Convert:
    cache: dict[tuple[str, Recipe], Converted] = {}

    def run(name: str, recipe: Recipe = DEFAULT) -> Converted:
        key = (name, recipe)
        if key not in cache:
            sample = corpus.sample(name)
            dst = tmp_path_factory.mktemp(name) / f"{name}.tif"
            result = convert(sample.path, dst, recipe)
            cache[key] = Converted(sample, result, read_pyramid(dst))
        return cache[key]

    return run


def fitted(width: int, height: int, recipe: Recipe) -> tuple[float, float]:
    box_w = recipe.max_width or width
    box_h = recipe.max_height or height
    scale = min(box_w / width, box_h / height, 1.0)
    return width * scale, height * scale


def assert_size(actual: tuple[int, int], width: int, height: int, recipe: Recipe) -> None:
    want_w, want_h = fitted(width, height, recipe)
    assert abs(actual[0] - want_w) <= 1 and abs(actual[1] - want_h) <= 1, (
        f"output is {actual[0]}x{actual[1]}, expected {want_w:.1f}x{want_h:.1f} "
        f"({width}x{height} fitted into {recipe.max_width}x{recipe.max_height})"
    )


def assert_pyramid(pyramid: Pyramid, recipe: Recipe, bands: int) -> None:
    assert pyramid.sizes == expected_levels(*pyramid.sizes[0], recipe.tile_size)
    for level in pyramid.levels:
        assert level.tiled, f"level {level.width}x{level.height} is not tiled"
        assert (level.tile_width, level.tile_length) == (recipe.tile_size, recipe.tile_size)
        assert level.bits_per_sample == 8
        assert level.samples_per_pixel == bands
        assert level.extra_samples == ()
        assert level.photometric in PHOTOMETRIC_FOR_BANDS[bands]


def assert_probes(path: Path, page: Page, rim: int = 0) -> None:
    """The probes' colours, ``rim`` pixels in from the right and bottom edges."""
    pixels = read_pixels(path)
    pixels = pixels[: pixels.shape[0] - rim, : pixels.shape[1] - rim]
    failures = [
        f"{probe.describe()}: got {tuple(round(v) for v in value)}"
        for probe in page.probes
        if not probe_ok(value := probe_value(pixels, probe), probe)
    ]
    assert not failures, f"{path.name}: " + "; ".join(failures)


@pytest.mark.parametrize("name", GOOD)
def test_pyramid_structure(name: str, converted: Convert) -> None:
    c = converted(name)
    assert_size(c.pyramid.sizes[0], c.sample.width, c.sample.height, DEFAULT)
    assert_pyramid(c.pyramid, DEFAULT, c.sample.bands)
    assert {level.compression for level in c.pyramid.levels} == {JPEG}


@pytest.mark.parametrize("name", GOOD)
def test_result_describes_the_file(name: str, converted: Convert) -> None:
    c = converted(name)
    r = c.result
    assert r.path.is_file()
    assert (r.width, r.height) == c.pyramid.sizes[0]
    assert tuple(tuple(level) for level in r.levels) == c.pyramid.sizes
    assert r.tile_size == DEFAULT.tile_size
    assert r.bytes == r.path.stat().st_size
    assert r.bigtiff is False
    assert c.pyramid.bigtiff is False
    assert r.bands == c.sample.bands
    assert r.source_format == c.sample.source_format
    assert r.page == 1
    if c.sample.page_count is not None:
        assert r.pages == c.sample.page_count
    assert r.recipe_hash == DEFAULT.hash


@pytest.mark.parametrize("name", GOOD)
def test_colours(name: str, converted: Convert) -> None:
    c = converted(name)
    encoding = c.result.encoding
    # 4:2:0 tiles written by libvips (images too large to hold): libvips pads a partial edge
    # tile with black and the decoder's chroma upsampling blends the last column and row with
    # it (a saturated (255, 0, 128) edge pixel comes back near (214, 22, 121)), so the probes
    # hold one pixel in. ptif's own writer repeats the edge instead: every pixel holds.
    rim = 1 if encoding.chroma is None and encoding.label.endswith("-420") else 0
    assert_probes(c.result.path, c.sample.pages[0], rim=rim)
    if not encoding.label.endswith("-420"):
        return
    # What the floor promises: the whole image holds it.
    if c.sample.source_format != "jpeg":
        return  # the others' pixels are ptif's colour conversion of the source's
    source = pyvips.Image.new_from_file(str(c.sample.path)).autorot()
    if source.get_typeof("icc-profile-data"):
        return
    output = pyvips.Image.new_from_file(str(c.result.path), page=0)
    floor = DEFAULT.min_quality
    assert floor is not None
    if (source.width, source.height, source.bands) == (output.width, output.height, 3):
        assert ssim(source, output) >= floor


@pytest.mark.parametrize("name", BILEVEL)
def test_bilevel_becomes_two_tone_grey(name: str, converted: Convert) -> None:
    pixels = read_pixels(converted(name).result.path)
    assert pixels.shape[2] == 1
    mid_tones = np.count_nonzero((pixels > 40) & (pixels < 215)) / pixels.size
    assert mid_tones < 0.02, f"{mid_tones:.1%} of pixels are mid-grey"
    assert pixels.min() < 20 and pixels.max() > 235


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_exif_rotation_is_applied(orientation: int, converted: Convert) -> None:
    c = converted(f"jpeg_orientation_{orientation}")
    stored = (300, 200)
    want = stored if orientation == 3 else stored[::-1]
    assert (c.result.width, c.result.height) == want
    assert_probes(c.result.path, c.sample.pages[0])


@pytest.mark.parametrize("name", ["png_one_pixel", "jpeg_smaller_than_tile"])
def test_tiny_images_are_one_level(name: str, converted: Convert) -> None:
    c = converted(name)
    assert c.pyramid.sizes == ((c.sample.width, c.sample.height),)
    assert len(c.result.levels) == 1


def test_panorama_levels(converted: Convert) -> None:
    c = converted("jpeg_panorama")
    assert c.pyramid.sizes == (
        (30000, 400),
        (15000, 200),
        (7500, 100),
        (3750, 50),
        (1875, 25),
        (937, 12),
        (468, 6),
        (234, 3),
    )


def test_pdf_renders_page_one_at_300_dpi(converted: Convert) -> None:
    c = converted("pdf_three_pages")
    assert (c.result.width, c.result.height) == (600, 300)
    assert (c.result.page, c.result.pages) == (1, 3)


@pytest.mark.parametrize("name", ["eps_two_inch", "eps_offset_bbox"])
def test_eps_renders_at_300_dpi(name: str, converted: Convert) -> None:
    c = converted(name)
    assert (c.result.width, c.result.height) == (600, 300)


@pytest.mark.parametrize("name", ["pdf_three_pages", "tiff_three_pages"])
@pytest.mark.parametrize("page", [2, 3])
def test_page_argument(name: str, page: int, corpus: Corpus, out_dir: Path) -> None:
    sample = corpus.sample(name)
    want = sample.pages[page - 1]
    result = convert(sample.path, out_dir / "page.tif", page=page)
    assert (result.width, result.height) == (want.width, want.height)
    assert (result.page, result.pages) == (page, 3)
    assert read_pyramid(result.path).sizes[0] == (want.width, want.height)
    assert_probes(result.path, want)


@pytest.mark.parametrize("name", ["pdf_three_pages", "tiff_three_pages"])
def test_convert_pages_writes_one_pyramid_per_page(
    name: str, corpus: Corpus, out_dir: Path
) -> None:
    sample = corpus.sample(name)
    results = convert_pages(sample.path, out_dir / "book.tif")
    names = [f"book-p{n}.tif" for n in (1, 2, 3)]
    assert [r.path.name for r in results] == names
    assert sorted(p.name for p in out_dir.iterdir()) == names
    for number, (result, want) in enumerate(zip(results, sample.pages, strict=True), start=1):
        assert (result.page, result.pages) == (number, 3)
        pyramid = read_pyramid(result.path)
        assert pyramid.sizes[0] == (want.width, want.height) == (result.width, result.height)
        assert_pyramid(pyramid, DEFAULT, 3)
        assert_probes(result.path, want)


@pytest.mark.parametrize("page", [0, 4])
def test_page_out_of_range(page: int, corpus: Corpus, out_dir: Path) -> None:
    sample = corpus.sample("pdf_three_pages")
    with pytest.raises(PtifError) as info:
        convert(sample.path, out_dir / "page.tif", page=page)
    assert sample.path.name in str(info.value)
    assert list(out_dir.iterdir()) == []


@pytest.mark.parametrize("tile", [256, 512])
def test_tile_size(tile: int, converted: Convert) -> None:
    recipe = DEFAULT.replace(tile_size=tile)
    c = converted("jpeg_srgb", recipe)
    assert c.pyramid.sizes == expected_levels(320, 240, tile)
    assert_pyramid(c.pyramid, recipe, 3)
    assert c.result.tile_size == tile


def test_deflate_compression(converted: Convert) -> None:
    c = converted("jpeg_srgb", DEFAULT.replace(compression="deflate"))
    assert {level.compression for level in c.pyramid.levels} == {ADOBE_DEFLATE}
    assert_probes(c.result.path, c.sample.pages[0])


def test_max_box_downscales(converted: Convert) -> None:
    c = converted("jpeg_srgb", DEFAULT.replace(max_width=160, max_height=160))
    assert c.pyramid.sizes[0] == (160, 120)
    assert_probes(c.result.path, c.sample.pages[0])


def test_dpi_is_written(converted: Convert) -> None:
    c = converted("jpeg_srgb", DEFAULT.replace(dpi=300.0))
    assert c.pyramid.full.dpi == pytest.approx((300.0, 300.0), abs=0.01)


def test_recipe_hash_follows_settings(converted: Convert) -> None:
    a = converted("jpeg_srgb").result
    same = converted("jpeg_grey").result
    other = converted("jpeg_srgb", DEFAULT.replace(compression="deflate")).result
    assert isinstance(a.recipe_hash, str) and len(a.recipe_hash) >= 8
    assert a.recipe_hash == same.recipe_hash
    assert a.recipe_hash != other.recipe_hash


def test_libvips_version_is_reported(converted: Convert) -> None:
    version = converted("jpeg_srgb").result.libvips_version
    assert version.startswith(f"{pyvips.version(0)}.{pyvips.version(1)}.")


def test_marble_profile(converted: Convert) -> None:
    c = converted("jpeg_5000x3000", MARBLE)
    assert max(c.pyramid.sizes[0]) <= 4000
    assert_size(c.pyramid.sizes[0], 5000, 3000, MARBLE)
    assert_pyramid(c.pyramid, MARBLE, 3)
    assert {level.compression for level in c.pyramid.levels} == {ADOBE_DEFLATE}
    assert c.pyramid.full.dpi == pytest.approx((300.0, 300.0), abs=0.01)
    assert_probes(c.result.path, c.sample.pages[0])


def test_marble_copyright_box(converted: Convert) -> None:
    c = converted("jpeg_5000x3000", MARBLE_COPYRIGHT)
    width, height = c.pyramid.sizes[0]
    assert width <= 843 and height <= 560
    assert_size((width, height), 5000, 3000, MARBLE_COPYRIGHT)
    assert_pyramid(c.pyramid, MARBLE_COPYRIGHT, 3)
    assert c.pyramid.full.dpi == pytest.approx((300.0, 300.0), abs=0.01)


def test_marble_never_enlarges(converted: Convert) -> None:
    c = converted("jpeg_srgb", MARBLE)
    assert c.pyramid.sizes == ((320, 240),)
    assert {level.compression for level in c.pyramid.levels} == {ADOBE_DEFLATE}


def test_marble_keeps_grey_grey(converted: Convert) -> None:
    c = converted("jpeg_grey", MARBLE)
    assert_pyramid(c.pyramid, MARBLE, 1)
    assert_probes(c.result.path, c.sample.pages[0])


def test_pixel_budget_applies_to_ordinary_images(corpus: Corpus, out_dir: Path) -> None:
    sample = corpus.sample("jpeg_srgb")
    with pytest.raises(PixelBudgetError) as info:
        convert(sample.path, out_dir / "out.tif", max_pixels=320 * 240 - 1)
    assert info.value.code == "pixel-budget"
    assert sample.path.name in str(info.value)
    assert list(out_dir.iterdir()) == []
    assert convert(sample.path, out_dir / "out.tif", max_pixels=320 * 240).width == 320


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(PTIF), *args], capture_output=True, text=True, timeout=60, check=False
    )


def test_cli_convert_json(corpus: Corpus, out_dir: Path) -> None:
    sample = corpus.sample("jpeg_orientation_6")
    dst = out_dir / "cli.tif"
    proc = run_cli("convert", str(sample.path), str(dst), "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert (data["width"], data["height"]) == (200, 300)
    assert Path(data["path"]).resolve() == dst.resolve()
    assert read_pyramid(dst).sizes == expected_levels(200, 300, DEFAULT.tile_size)


def test_cli_formats() -> None:
    proc = run_cli("formats")
    assert proc.returncode == 0, proc.stderr
    listed = proc.stdout.lower()
    for name in ("jpeg", "png", "tiff", "pdf", "bmp", "eps"):
        assert re.search(rf"\b{name}\b", listed), f"{name} missing from 'ptif formats'"
