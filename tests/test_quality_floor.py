"""The default profile's quality floor: the fewest bytes of 4:2:0 or 4:4:4 YCbCr tiles, at any
quality, that hold it; explicit settings mean what they say (libvips' own tiles). Outputs are
opened and measured."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import pyvips
import tifffile
from store_helpers import folder_bench, put_source, queue, reports

from ptif.config import load_settings
from ptif.convert import encoding
from ptif.convert.encoding import ssim
from ptif.convert.engine import convert, init_vips
from ptif.convert.profiles import DEFAULT_MIN_QUALITY, get_profile
from ptif.errors import ConfigError

PHOTOMETRIC_RGB, PHOTOMETRIC_YCBCR = 2, 6
SUBSAMPLING = {"420": (2, 2), "444": (1, 1)}
#: The floor is measured on a sample of tiles: a whole image, or a part the sample weighs
#: apart (its colourful tiles), lands within this of it.
SAMPLED = 0.005


def smooth_photo(path: Path) -> None:
    """Gradients and soft blobs, as a sky, skin or a wall: 4:2:0 is invisible there."""
    xy = pyvips.Image.xyz(1200, 900).cast("float")
    base = xy[0] / 1200 * [90, 60, -40] + xy[1] / 900 * [-50, 30, 70] + [120, 110, 100]
    blobs = pyvips.Image.gaussnoise(1200, 900, sigma=40, seed=3).gaussblur(12)
    image = (base + blobs).cast("uchar").copy(interpretation="srgb")
    image.pngsave(str(path))


def star_field(path: Path) -> None:
    """Single-pixel stars of many colours on black: 4:2:0 smears them."""
    rng = random.Random(5)
    image = pyvips.Image.black(1200, 900, bands=3)
    for _ in range(6000):
        colour = [rng.randrange(40, 256) for _ in range(3)]
        image = image.draw_rect(colour, rng.randrange(1200), rng.randrange(900), 1, 1)
    image.cast("uchar").copy(interpretation="srgb").pngsave(str(path))


def thin_lines(path: Path) -> None:
    """A map: one-pixel red and blue lines on paper."""
    image = pyvips.Image.black(1200, 900, bands=3) + [236, 226, 200]
    for step in range(0, 1200, 9):
        image = image.draw_line([200, 20, 20], step, 0, step // 2, 899)
    for step in range(0, 900, 7):
        image = image.draw_line([20, 40, 200], 0, step, 1199, (step * 3) % 900)
    image.cast("uchar").copy(interpretation="srgb").pngsave(str(path))


def level0(path: Path) -> tuple[int, pyvips.Image]:
    with tifffile.TiffFile(path) as tiff:
        photometric = int(tiff.pages[0].photometric)
    return photometric, pyvips.Image.new_from_file(str(path), page=0)


def subsampling(path: Path) -> set[tuple[int, int]]:
    """Every level's YCbCrSubsampling."""
    with tifffile.TiffFile(path) as tiff:
        return {tuple(page.tags["YCbCrSubSampling"].value) for page in tiff.pages}


def tile_bytes(path: Path) -> list[bytes]:
    """Every tile of every level, as stored."""
    found = []
    with tifffile.TiffFile(path) as tiff, open(path, "rb") as handle:
        for page in tiff.pages:
            for offset, count in zip(page.dataoffsets, page.databytecounts, strict=True):
                handle.seek(offset)
                found.append(handle.read(count))
    return found


def measured(src: Path, out: Path) -> float:
    return ssim(pyvips.Image.new_from_file(str(src)), level0(out)[1])


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    init_vips()
    folder = tmp_path_factory.mktemp("floor")
    made = {}
    for name, make in (("photo", smooth_photo), ("stars", star_field), ("lines", thin_lines)):
        made[name] = folder / f"{name}.png"
        make(made[name])
    return made


def test_smooth_photograph_gets_subsampled_tiles(images: dict[str, Path], tmp_path: Path) -> None:
    result = convert(images["photo"], tmp_path / "photo.tif")
    photometric, _ = level0(result.path)
    assert photometric == PHOTOMETRIC_YCBCR and subsampling(result.path) == {(2, 2)}
    assert result.encoding.label == f"jpeg-q{result.encoding.quality}-420"
    assert result.encoding.quality < 90
    assert result.metadata()["ptif-encoding"] == result.encoding.label
    assert result.to_dict()["encoding"] == result.encoding.label
    assert measured(images["photo"], result.path) >= DEFAULT_MIN_QUALITY


@pytest.mark.parametrize("name", ["stars", "lines"])
def test_fine_colour_detail_holds_the_floor_in_fewer_bytes_than_rgb_q90(
    images: dict[str, Path], tmp_path: Path, name: str
) -> None:
    """libvips can only keep such detail with RGB tiles at Q90 and above; ptif's own writer
    holds the floor with YCbCr, 4:4:4 where 4:2:0 cannot, in far fewer bytes."""
    result = convert(images[name], tmp_path / f"{name}.tif")
    photometric, _ = level0(result.path)
    assert photometric == PHOTOMETRIC_YCBCR
    chroma = result.encoding.label.rsplit("-", 1)[1]
    assert subsampling(result.path) == {SUBSAMPLING[chroma]}
    assert measured(images[name], result.path) >= DEFAULT_MIN_QUALITY - SAMPLED
    rgb = convert(images[name], tmp_path / "q90.tif", get_profile("default").with_overrides(
        quality=90).recipe)  # fmt: skip
    assert level0(rgb.path)[0] == PHOTOMETRIC_RGB
    # one-pixel lines on flat paper are the worst case of standard Huffman tables (about 10%
    # more than tables fitted to the tile): still a sixth under RGB Q90
    assert result.bytes < 0.85 * rgb.bytes


def test_thin_coloured_lines_need_4_4_4(images: dict[str, Path], tmp_path: Path) -> None:
    """4:2:0 at the top quality misses the floor on one-pixel coloured lines: 4:4:4 is chosen."""
    result = convert(images["lines"], tmp_path / "lines.tif")
    assert result.encoding.label.endswith("-444")
    assert subsampling(result.path) == {(1, 1)}


def test_explicit_quality_means_what_it_says(images: dict[str, Path], tmp_path: Path) -> None:
    """--quality writes libvips' own tiles, byte for byte, as a plain tiffsave does."""
    recipe = get_profile("default").with_overrides(quality=90).recipe
    assert recipe.min_quality is None
    result = convert(images["photo"], tmp_path / "q90.tif", recipe)
    assert level0(result.path)[0] == PHOTOMETRIC_RGB
    assert result.encoding.label == "jpeg-q90-rgb" and result.encoding.ssim is None
    plain = tmp_path / "plain.tif"
    pyvips.Image.new_from_file(str(images["photo"])).tiffsave(
        str(plain), tile=True, pyramid=True, tile_width=256, tile_height=256,
        compression="jpeg", Q=90)  # fmt: skip
    assert tile_bytes(result.path) == tile_bytes(plain)


def test_images_too_large_to_hold_keep_libvips(
    images: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Above HOLD_BYTES decoded, libvips writes the pyramid: 4:2:0 below Q90, else RGB Q90."""
    monkeypatch.setattr(encoding, "HOLD_BYTES", 1000)
    photo = convert(images["photo"], tmp_path / "photo.tif")
    assert photo.encoding.chroma is None and photo.encoding.label.endswith("-420")
    assert photo.encoding.quality in encoding.SUBSAMPLED_QUALITIES
    stars = convert(images["stars"], tmp_path / "stars.tif")
    assert stars.encoding.label == "jpeg-q90-rgb"
    assert level0(stars.path)[0] == PHOTOMETRIC_RGB


def test_the_sample_of_a_large_image_is_only_its_tiles() -> None:
    """The tiles measured for an image too large to hold are joined without empty cells: black
    cells on both sides scored a perfect SSIM and lifted a star plate over a floor it missed."""
    init_vips()
    tile = 64
    grain = (pyvips.Image.gaussnoise(tile * 20, tile * 2, mean=128, sigma=40)
             .bandjoin([pyvips.Image.gaussnoise(tile * 20, tile * 2, mean=90, sigma=60)] * 2)
             .cast("uchar"))  # fmt: skip
    chosen, _ = encoding.spots(grain, tile, 2)
    sample = encoding._tiles(grain, tile, 0, tile * 2)
    assert (sample.width, sample.height) == (tile * len(chosen), tile)
    assert all(sample.crop(i * tile, 0, tile, tile).avg() > 50 for i in range(len(chosen)))


def test_marble_keeps_the_original_settings() -> None:
    marble = get_profile("marble")
    assert marble.recipe.min_quality is None and marble.recipe.compression == "deflate"
    assert marble.recipe.hash == "2f7def2b465d"


def test_floor_from_flag_environment_and_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    floor = load_settings(environ={}).conversion_profile().recipe.min_quality
    assert floor == DEFAULT_MIN_QUALITY
    (tmp_path / "ptif.toml").write_text("[ptif]\nrecipe = {min_quality = 0.9}\n")
    assert load_settings(environ={}).conversion_profile().recipe.min_quality == 0.9
    environ = {"PTIF_MIN_QUALITY": "0.97"}
    assert load_settings(environ=environ).conversion_profile().recipe.min_quality == 0.97
    flags = {"recipe": {"min_quality": 0.99}}
    profile = load_settings(flags, environ=environ).conversion_profile()
    assert profile.recipe.min_quality == 0.99
    assert profile.recipe.hash != get_profile("default").recipe.hash


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"min_quality": 1.5}, "min-quality 1.5 is out of range"),
        ({"min_quality": 0.9, "quality": 80}, "both quality 80 and min-quality 0.9"),
        ({"min_quality": 0.9, "compression": "deflate"}, "min-quality applies to JPEG"),
    ],
)
def test_bad_floors_are_refused(settings: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        get_profile("default").with_overrides(**settings)


def test_bad_floor_variable_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="PTIF_MIN_QUALITY='high'"):
        load_settings(environ={"PTIF_MIN_QUALITY": "high"})


def test_ssim_agrees_with_scikit_image(images: dict[str, Path]) -> None:
    metrics = pytest.importorskip("skimage.metrics")
    source = pyvips.Image.new_from_file(str(images["stars"]))
    decoded = pyvips.Image.tiffload_buffer(source.tiffsave_buffer(compression="jpeg", Q=80))
    reference = metrics.structural_similarity(
        source.numpy(), decoded.numpy(), channel_axis=2, data_range=255
    )
    assert abs(ssim(source, decoded) - reference) < 0.01


def test_colour_detail_low_on_a_large_image_counts(tmp_path: Path) -> None:
    """The sample spreads over the whole image: a map's legend in the bottom rows of a large,
    otherwise smooth scan keeps 4:4:4 tiles, so the legend itself holds the floor. (Sampled
    from the top rows alone, it got 4:2:0 and the legend fell below the floor.)"""
    init_vips()
    top, bottom = tmp_path / "top.png", tmp_path / "bottom.png"
    smooth_photo(top)
    thin_lines(bottom)
    sky = pyvips.Image.new_from_file(str(top)).resize(2)  # 2400 x 1800
    legend = pyvips.Image.new_from_file(str(bottom)).crop(0, 0, 1200, 600)
    legend = legend.join(legend, "horizontal")
    scan = sky.crop(0, 0, 2400, 1800).insert(legend, 0, 1200)
    source = tmp_path / "scan.png"
    scan.pngsave(str(source))
    result = convert(source, tmp_path / "scan.tif")
    assert result.encoding.label.endswith("-444")
    _, written = level0(result.path)
    assert ssim(legend, written.crop(0, 1200, 2400, 600)) >= DEFAULT_MIN_QUALITY - SAMPLED


def test_detail_in_the_partial_edge_tiles_counts(tmp_path: Path) -> None:
    """A scan of 3x3 whole tiles whose right and bottom edges, 255 pixels each, hold a colour
    target of thin lines: a third of the image, in tiles narrower than the grid's. The sample
    takes edge tiles too, so the whole image holds the floor. (Sampled from whole tiles only,
    it got 4:2:0 Q74 at a whole-image SSIM of about 0.8.)"""
    init_vips()
    sky_file, lines_file = tmp_path / "sky.png", tmp_path / "lines.png"
    smooth_photo(sky_file)
    thin_lines(lines_file)
    sky = pyvips.Image.new_from_file(str(sky_file)).resize(2).crop(0, 0, 1023, 1023)
    lines = pyvips.Image.new_from_file(str(lines_file))
    right = lines.crop(0, 0, 900, 255).rot90().crop(0, 0, 255, 768)
    scan = sky.insert(right, 768, 0).insert(lines.crop(0, 0, 1023, 255), 0, 768)
    source = tmp_path / "scan.png"
    scan.pngsave(str(source))
    result = convert(source, tmp_path / "scan.tif")
    assert measured(source, result.path) >= DEFAULT_MIN_QUALITY - SAMPLED


def test_the_run_report_counts_each_encoding(images: dict[str, Path], tmp_path: Path) -> None:
    bench = folder_bench(tmp_path)
    for name in ("photo", "stars"):
        put_source(bench.source, f"{name}.png", images[name].read_bytes())
        queue(bench, f"{name}.png")
    report = bench.run()
    assert sorted(report.converted) == ["photo.png", "stars.png"]
    [stored] = reports(bench)
    counted = stored["encodings"]
    assert counted == report.to_dict()["encodings"]
    labels = [bench.images.head(f"{name}.tif").metadata["ptif-encoding"] for name in
              ("photo", "stars")]  # fmt: skip
    assert labels[0] != labels[1], "the floor chose each image's own encoding"
    assert counted == {label: 1 for label in labels}, counted


def test_the_pick_hands_back_its_sample_tiles_as_the_writer_encodes_them(
    images: dict[str, Path],
) -> None:
    """The pick's trial streams are the pyramid's level-0 tiles when it is written with
    standard Huffman tables: each is byte for byte the writer's encoding of that tile, keyed
    by its column and row. A small image is sampled whole (edge tiles included), a larger one
    in some of its whole tiles."""
    from ptif.convert.candidates import choose_tiles, sample_spots
    from ptif.convert.tiffwriter import pixel_tile

    recipe = get_profile("default").recipe
    size = recipe.tile_size
    photo = pyvips.Image.new_from_file(str(images["photo"]))
    for image, whole in ((photo.crop(0, 0, 600, 400), True), (photo, False)):
        pixels = image.numpy()
        ready: dict[tuple[int, int], bytes] = {}
        tiles = choose_tiles(pixels, recipe, ready).tiles()
        grid = {(x, y) for y in range(-(-image.height // size))
                for x in range(-(-image.width // size))}  # fmt: skip
        if whole:
            assert set(ready) == grid
        else:
            assert set(ready) == set(sample_spots(pixels, size)[0]) < grid
            assert len(ready) <= encoding.SAMPLE_TILES
        for (x, y), stream in ready.items():
            assert stream == tiles.encode(pixel_tile(pixels, x, y, size, tiles.block))
