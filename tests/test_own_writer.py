"""ptif's own pyramid writer (ptif.convert.tiffwriter): the levels libvips would make, tiles
other readers decode (libvips, libtiff's tiffinfo, tifffile), the directories libvips writes, and
the same file through the engine as the default profile writes it."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import pytest
import pyvips
import tifffile

from ptif.convert import cores
from ptif.convert.embedded import read_description
from ptif.convert.pyramid import expected_levels
from ptif.convert.tiffwriter import (
    Embedded,
    Expired,
    Tiles,
    halve,
    pixel_tile,
    write_pyramid,
)

PTIF = (sys.executable, "-m", "ptif")
#: Mean absolute difference, per sample, between a noisy level and its tiles decoded at Q90.
JPEG_ERROR = 4.0


def textured(width: int, height: int, bands: int = 3) -> np.ndarray:
    """Gradients with noise: every 2x2 mean rounds differently somewhere."""
    xy = pyvips.Image.xyz(width, height).cast("float")
    base = xy[0] / width * 180 + xy[1] / height * 60 + 10
    noise = pyvips.Image.gaussnoise(width, height, sigma=12, seed=7)
    layers = [base + noise, 255 - base + noise * 0.5, base * 0.5 + 60 + noise][:bands]
    image = layers[0].bandjoin(layers[1:]) if bands > 1 else layers[0]
    array: np.ndarray = image.cast("uchar").numpy()
    return array.reshape(height, width, bands)


def embedded(description: str = '{"ptif":"test"}') -> Embedded:
    icc = pyvips.Operation.call("profile_load", "srgb")
    return Embedded(description, icc, 300.0, b"<x:xmpmeta>rights</x:xmpmeta>", b"\x1c\x02\x05ab")


def libvips_levels(pixels: np.ndarray, tmp_path: Path) -> list[np.ndarray]:
    """The levels of libvips' own pyramid of ``pixels``, uncompressed."""
    height, width, bands = pixels.shape
    image = pyvips.Image.new_from_memory(pixels.tobytes(), width, height, bands, "uchar")
    path = tmp_path / "libvips.tif"
    image.tiffsave(str(path), tile=True, pyramid=True, tile_width=256, tile_height=256)
    count = len(expected_levels(width, height, 256))
    return [
        pyvips.Image.tiffload(str(path), page=n).numpy().reshape(-1, w, bands)
        for n, (w, _) in enumerate(expected_levels(width, height, 256))
        if n < count
    ]


def written(pixels: np.ndarray, path: Path, tiles: Tiles, bigtiff: bool = False) -> Path:
    height, width = pixels.shape[:2]
    levels = len(expected_levels(width, height, 256))
    write_pyramid(path, pixels, levels, 256, tiles, embedded(), bigtiff=bigtiff)
    return path


@pytest.mark.parametrize(
    ("width", "height", "bands", "threads"),
    [(1001, 777, 3, 2), (1001, 777, 3, 1), (777, 1025, 1, 2), (1024, 515, 1, 1)],
)
def test_levels_are_libvips_own_pixel_for_pixel(
    tmp_path: Path, width: int, height: int, bands: int, threads: int
) -> None:
    """Odd sides and even ones, grey and colour, halved on a pool or on the caller's thread."""
    pixels = textured(width, height, bands)
    theirs = libvips_levels(pixels, tmp_path)
    with ThreadPoolExecutor(threads) if threads > 1 else nullcontext() as pool:
        level = pixels
        for number, expected in enumerate(theirs):
            if number:
                level = halve(level, pool)
            assert level.shape == expected.shape
            assert np.array_equal(level, expected), f"level {number} differs"


def tile_streams(path: Path, page: int = 0) -> tuple[bytes, list[bytes]]:
    """A directory's JPEGTables and its tiles' bytes, as the file holds them."""
    with tifffile.TiffFile(path) as tiff:
        level = tiff.pages[page]
        tables = bytes(level.tags["JPEGTables"].value)
        handle = tiff.filehandle
        tiles = []
        for offset, count in zip(level.dataoffsets, level.databytecounts, strict=True):
            handle.seek(offset)
            tiles.append(handle.read(count))
    return tables, tiles


def markers(stream: bytes) -> list[int]:
    """The markers of a JPEG stream up to its scan (or its end, for tables alone)."""
    found, at = [stream[1]], 2
    while at < len(stream) and stream[at + 1] not in (0xDA, 0xD9):
        found.append(stream[at + 1])
        at += 2 + int.from_bytes(stream[at + 2 : at + 4], "big")
    return [*found, stream[at + 1]]


@pytest.mark.parametrize(("chroma", "bands"), [("420", 3), ("grey", 1)])
def test_tables_sit_once_per_level_and_tiles_are_abbreviated(
    tmp_path: Path, chroma: str, bands: int
) -> None:
    """As libtiff writes JPEG tiles: quantisation and Huffman tables in JPEGTables, each tile
    start of image, frame header and scan, nothing else; tifffile decodes each level to the
    pixels libvips decodes."""
    path = written(textured(700, 600, bands), tmp_path / "own.tif", Tiles(84, chroma))
    dqt, dht = (2, 4) if bands == 3 else (1, 2)
    for page, count in enumerate((9, 4, 1)):
        tables, tiles = tile_streams(path, page)
        assert markers(tables) == [0xD8, *[0xDB] * dqt, *[0xC4] * dht, 0xD9]
        assert len(tiles) == count
        for tile in tiles:
            assert markers(tile) == [0xD8, 0xC0, 0xDA]
            assert tile.endswith(b"\xff\xd9")
        theirs = pyvips.Image.tiffload(str(path), page=page).numpy()
        assert np.array_equal(tifffile.imread(path, key=page).reshape(theirs.shape), theirs)


def test_one_thread_writes_the_same_file_as_two(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pixels = textured(1001, 777)
    files = []
    for threads in (1, 2):
        monkeypatch.setattr(cores, "threads", lambda threads=threads: threads)
        files.append(written(pixels, tmp_path / f"{threads}.tif", Tiles(80, "444")).read_bytes())
    assert files[0] == files[1]


def test_tiles_already_encoded_are_written_as_they_are(tmp_path: Path) -> None:
    """A ready stream with the level's tables is the tile; one of another quality or chroma is
    not used (the level's JPEGTables would not decode it): that tile is encoded again."""
    pixels = textured(600, 300)
    tiles = Tiles(80, "420")
    white = np.full_like(pixels, 255)
    ready = {
        (0, 0): tiles.encode(pixel_tile(white, 0, 0, 256, tiles.block)),
        (1, 0): Tiles(81, "420").encode(pixel_tile(white, 1, 0, 256, tiles.block)),
        (2, 0): Tiles(80, "444").encode(pixel_tile(white, 2, 0, 256, 8)),
    }
    path = tmp_path / "ready.tif"
    write_pyramid(path, pixels, 2, 256, tiles, embedded(), bigtiff=False, ready=ready)
    level = pyvips.Image.tiffload(str(path), fail_on="warning").numpy().astype(int)
    assert (level[:256, :256] >= 250).all()
    for x in (1, 2):
        part = np.s_[:256, 256 * x : 256 * (x + 1)]
        assert np.abs(level[part] - pixels[part]).mean() < JPEG_ERROR, x
    smaller = pyvips.Image.tiffload(str(path), page=1).numpy().astype(int)
    assert np.abs(smaller - halve(pixels, None)).mean() < JPEG_ERROR  # made from the pixels


@pytest.mark.parametrize(("chroma", "bands"), [("420", 3), ("444", 3), ("grey", 1)])
def test_every_level_opens_in_libvips_close_to_the_source(
    tmp_path: Path, chroma: str, bands: int
) -> None:
    pixels = textured(1001, 777, bands)
    path = written(pixels, tmp_path / "own.tif", Tiles(90, chroma))
    for number, expected in enumerate(libvips_levels(pixels, tmp_path)):
        level = pyvips.Image.tiffload(str(path), page=number, fail_on="warning")
        assert (level.width, level.height, level.bands) == (
            expected.shape[1], expected.shape[0], bands)  # fmt: skip
        got = level.numpy().reshape(expected.shape).astype(int)
        error = np.abs(got - expected).mean()
        assert error < JPEG_ERROR, (number, error)


def test_directories_are_as_libvips_writes_them(tmp_path: Path) -> None:
    path = written(textured(1001, 777), tmp_path / "own.tif", Tiles(86, "444"))
    with tifffile.TiffFile(path) as tiff:
        assert not tiff.is_bigtiff
        for number, page in enumerate(tiff.pages):
            tags = page.tags
            assert (page.tilewidth, page.tilelength) == (256, 256)
            subfile = tags["NewSubfileType"].value if "NewSubfileType" in tags else 0
            assert subfile == (1 if number else 0)
            assert tags["PhotometricInterpretation"].value == 6  # YCbCr
            assert tags["YCbCrSubSampling"].value == (1, 1)
            assert tags["Compression"].value == 7
            assert tags["ImageDescription"].value == '{"ptif":"test"}'
            assert tags["InterColorProfile"].value == pyvips.Operation.call("profile_load", "srgb")
            assert bytes(tags["XMP"].value) == b"<x:xmpmeta>rights</x:xmpmeta>"
            assert tags["IPTCNAA"].value is not None
            assert tags["XResolution"].value == (300, 1) and tags["ResolutionUnit"].value == 2
            assert tags["Orientation"].value == 1
    assert pyvips.Image.new_from_file(str(path)).get("iptc-data")[:5] == b"\x1c\x02\x05ab"


def test_libtiff_reads_every_directory_and_tile(tmp_path: Path) -> None:
    """libtiff, which IIPImage and GDAL read with: tiffinfo walks every level and its
    ImageDescription, and tiff2rgba (libtiff's RGBA reader) decodes every tile to the pixels
    libvips reads."""
    if shutil.which("tiffinfo") is None or shutil.which("tiff2rgba") is None:
        pytest.skip("libtiff-tools is not installed; make system-deps installs it")
    pixels = textured(1001, 777)
    path = written(pixels, tmp_path / "own.tif", Tiles(80, "420"))
    done = subprocess.run(["tiffinfo", str(path)], capture_output=True, text=True, check=False)
    assert done.returncode == 0 and not done.stderr.strip(), done.stderr
    levels = expected_levels(1001, 777, 256)
    assert done.stdout.count("TIFF Directory at offset") == len(levels)
    assert done.stdout.count("reduced-resolution image") == len(levels) - 1
    assert done.stdout.count('ImageDescription: {"ptif":"test"}') == len(levels)
    assert done.stdout.count("YCbCr Subsampling: 2, 2") == len(levels)
    for width, height in levels:
        assert f"Image Width: {width} Image Length: {height}" in done.stdout
    rgba = tmp_path / "rgba.tif"
    done = subprocess.run(["tiff2rgba", str(path), str(rgba)], capture_output=True, text=True,
                          check=False)  # fmt: skip
    assert done.returncode == 0 and not done.stderr.strip(), done.stderr
    for number in range(len(levels)):
        theirs = pyvips.Image.tiffload(str(rgba), page=number).numpy()[..., :3]
        ours = pyvips.Image.tiffload(str(path), page=number).numpy()
        assert np.array_equal(theirs, ours), f"level {number}"


def test_bigtiff(tmp_path: Path) -> None:
    pixels = textured(600, 300)
    path = written(pixels, tmp_path / "big.tif", Tiles(90, "444"), bigtiff=True)
    assert path.read_bytes()[2:4] == b"\x2b\x00"
    for number in range(len(expected_levels(600, 300, 256))):
        assert pyvips.Image.tiffload(str(path), page=number).avg() > 0


def test_partial_edge_tiles_keep_their_colour(tmp_path: Path) -> None:
    """A saturated edge column and row come back saturated: no black is blended in."""
    pixels = np.zeros((300, 300, 3), np.uint8)
    pixels[...] = (255, 0, 128)
    path = written(pixels, tmp_path / "edge.tif", Tiles(80, "420"))
    decoded = pyvips.Image.tiffload(str(path)).numpy().astype(int)
    assert np.abs(decoded[-1, :] - (255, 0, 128)).max() <= 6
    assert np.abs(decoded[:, -1] - (255, 0, 128)).max() <= 6


def test_a_deadline_passed_stops_the_writer(tmp_path: Path) -> None:
    pixels = textured(600, 300)
    with pytest.raises(Expired):
        write_pyramid(tmp_path / "late.tif", pixels, 2, 256, Tiles(90, "444"), embedded(),
                      bigtiff=False, deadline=0.0)  # fmt: skip


def test_ptif_info_shows_what_the_default_wrote(tmp_path: Path) -> None:
    src, dst = tmp_path / "photo.png", tmp_path / "photo.tif"
    height, width = 900, 1200
    pyvips.Image.new_from_memory(textured(width, height).tobytes(), width, height, 3,
                                 "uchar").copy(interpretation="srgb").pngsave(str(src))  # fmt: skip
    subprocess.run([*PTIF, "convert", str(src), str(dst)], check=True, capture_output=True)
    with tifffile.TiffFile(dst) as tiff:
        provenance = read_description(tiff.pages[0].description)
        chroma = {tuple(page.tags["YCbCrSubSampling"].value) for page in tiff.pages}
    assert provenance is not None
    label = provenance["encoding"]["tiles"]
    assert chroma == {{"420": (2, 2), "444": (1, 1)}[label.rsplit("-", 1)[1]]}, label
    done = subprocess.run([*PTIF, "info", "--json", str(dst)], capture_output=True, text=True,
                          check=True)  # fmt: skip
    info = json.loads(done.stdout)
    assert info["levels"] == [list(level) for level in expected_levels(width, height, 256)]
    assert info["tile_size"] == [256, 256] and info["compression"] == "jpeg"
    assert info["provenance"]["encoding"]["tiles"] == label
    text = subprocess.run([*PTIF, "info", str(dst)], capture_output=True, text=True,
                          check=True).stdout  # fmt: skip
    count = len(expected_levels(width, height, 256))
    assert "256x256, jpeg" in text and label in text and f"levels    {count}:" in text


@pytest.mark.parametrize(("width", "height"), [(600, 400), (1800, 1200)])
def test_the_trials_tiles_make_the_same_file_as_encoding_them_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, width: int, height: int
) -> None:
    """The quality floor's sample tiles, handed to the writer, are the very tiles it would
    encode: the file is byte for byte the one written without them."""
    import ptif.convert.engine as engine
    from ptif.convert.engine import convert

    src = tmp_path / "src.png"
    pyvips.Image.new_from_array(textured(width, height)).pngsave(str(src))
    handed: list[int] = []
    own_writer = engine._own_writer

    def without_ready(*args: object) -> object:
        handed.append(len(args[5]))  # type: ignore[arg-type]
        return own_writer(*args[:5])  # type: ignore[arg-type]

    convert(src, tmp_path / "with.tif")
    monkeypatch.setattr(engine, "_own_writer", without_ready)
    convert(src, tmp_path / "without.tif")
    assert handed and handed[0] >= 4
    assert (tmp_path / "with.tif").read_bytes() == (tmp_path / "without.tif").read_bytes()


def jpeg_file(path: Path, bands: int = 3, **options: object) -> Path:
    image = pyvips.Image.new_from_array(textured(640, 400, bands))
    image = image.copy(interpretation="srgb" if bands == 3 else "b-w")
    image.jpegsave(str(path), Q=90, **options)
    return path


@pytest.mark.parametrize("bands", [3, 1])
def test_a_plain_jpeg_is_decoded_straight_to_libvips_pixels(tmp_path: Path, bands: int) -> None:
    from ptif.convert.encoding import hold, hold_jpeg, plain_jpeg

    src = jpeg_file(tmp_path / "plain.jpg", bands)
    image = pyvips.Image.new_from_file(str(src), access="sequential")
    assert plain_jpeg(image, "libvips jpegload", image)
    direct = hold_jpeg(src, image)
    assert direct is not None and direct.shape == (400, 640, bands)
    assert np.array_equal(direct, hold(pyvips.Image.new_from_file(str(src))))


def test_jpegs_that_need_more_than_a_decode_go_through_libvips(tmp_path: Path) -> None:
    from ptif.convert.encoding import hold_jpeg, plain_jpeg

    src = jpeg_file(tmp_path / "plain.jpg")
    image = pyvips.Image.new_from_file(str(src))
    assert not plain_jpeg(image, "libvips pngload", image)
    assert not plain_jpeg(image, "libvips jpegload", image.resize(0.5))
    rotated = image.copy()
    rotated.set_type(pyvips.GValue.gint_type, "orientation", 6)
    assert not plain_jpeg(rotated, "libvips jpegload", rotated)
    profiled = image.copy()
    profiled.set_type(pyvips.GValue.blob_type, "icc-profile-data", b"\0" * 128)
    assert not plain_jpeg(profiled, "libvips jpegload", profiled)
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(src.read_bytes()[:-500])  # truncated: libvips refuses it, as ptif asks
    assert hold_jpeg(cut, image) is None
    trailing = tmp_path / "trailing.jpg"
    trailing.write_bytes(src.read_bytes() + b"camera maker's notes")
    assert hold_jpeg(trailing, image) is None


def test_held_images_ask_for_no_huge_pages(tmp_path: Path) -> None:
    """numpy's huge-page request for large arrays is off once ptif holds an image: the kernel's
    compaction for them cost more CPU than the pages saved."""
    from ptif.convert.engine import convert

    switch = np._core.multiarray._set_madvise_hugepage  # type: ignore[attr-defined]
    switch(True)
    convert(jpeg_file(tmp_path / "plain.jpg"), tmp_path / "out.tif")
    assert switch(True) is False  # it returns what was set before
