"""How the JPEG tiles of one image are encoded when its recipe states a quality floor.

libvips' TIFF writer has a cliff at Q90: below it, JPEG tiles are YCbCr with 4:2:0 chroma
subsampling; at 90 and above, they are RGB JPEG, about three times the bytes for the same
picture. 4:2:0 is invisible on most photographs but smears small coloured detail (stars, thin
coloured lines on a map, red rubrication in a manuscript). So instead of one quality number,
the default profile states a floor (``min_quality``, an SSIM) and each image gets the fewest
bytes that hold it.

An image held in memory (8-bit grey or RGB, up to :data:`HOLD_BYTES` decoded: nearly every
photograph, scan and page) is written by ptif's own writer (:mod:`ptif.convert.tiffwriter`),
which encodes YCbCr 4:2:0 or 4:4:4 (or grey) at any quality; :mod:`ptif.convert.candidates`
chooses among them, measured with that very writer's encoder.

A larger image, or an image not 8-bit grey or RGB, keeps libvips' writer and its choice: 4:2:0
at the lowest of :data:`SUBSAMPLED_QUALITIES` that holds the floor, measured on tiles written
by libvips itself, else the recipe's own quality (90: RGB tiles). A large image is sampled from
its top :data:`BAND_TILE_ROWS` rows of tiles only, kept in memory and joined back on top of the
rest of the pipeline, so that a sequential decode still runs once. An EPS rendering streams
from its file (no header vouches for its size, so nothing of it is held): libvips writes it at
the recipe's own quality, unmeasured.

SSIM (:func:`ssim`; in numpy for ptif's own writer) is scikit-image's ``structural_similarity``: 7x7
uniform windows, per channel, then the mean over channels, estimated on the windows of a
7-pixel grid. The sample: :data:`SAMPLE_TILES` tiles on the pyramid's tile grid, a lattice
spread over the image, corners and edges included, plus the :data:`COLOURFUL_TILES` of most
chroma detail (found on an eighth-size copy), so that a map's legend or a rubric low on the page
counts.

What no sample can see in libvips' tiles: libvips pads a partial edge tile with black, and a
decoder's chroma upsampling blends the last column (and row) of 4:2:0 tiles with it, so the very
edge pixel of a saturated colour comes out up to a quarter less saturated. ptif's own writer
repeats the edge instead (:func:`~ptif.convert.tiffwriter.pixel_tile`).
"""

from __future__ import annotations

import pyvips

from ptif.convert.profiles import Recipe

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without loading typing on every run
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any

    from ptif.convert.tiffwriter import Pixels, Tiles

#: libvips' 4:2:0 qualities (images libvips writes), best first; the lowest that holds the floor
#: is chosen.
SUBSAMPLED_QUALITIES = (89, 85, 80, 75)
#: Images of up to this many bytes decoded are held in memory: tiles are then sampled from all
#: of them, and the pyramid is written from the same copy (the source is decoded once).
HOLD_BYTES = 256 * 1024 * 1024
#: Larger images are sampled from this many top rows of tiles, kept in memory and joined back
#: on top of the rest of the pipeline, so that a sequential decode still runs once.
BAND_TILE_ROWS = 2
#: Tiles measured: a lattice over the image, plus this many of the most colourful.
SAMPLE_TILES = 16
COLOURFUL_TILES = 4
#: The colourful tiles are found on a copy of the image this many times smaller on each side.
SCOUT = 8
#: SSIM's window side, and its stabilising constants for 8-bit data.
WINDOW = 7
_C1 = (0.01 * 255) ** 2
_C2 = (0.03 * 255) ** 2


class Encoding:
    """The tiles' encoding: JPEG at ``quality``; ``ssim`` is what the sample measured (``None``
    when nothing was measured: no floor, or the fallback). ``chroma`` (``420``, ``444``,
    ``grey``) is set when ptif's own writer writes the tiles, ``None`` when libvips does."""

    __slots__ = ("bands", "chroma", "compression", "quality", "ssim")

    def __init__(
        self,
        compression: str,
        quality: int,
        bands: int,
        ssim: float | None = None,
        chroma: str | None = None,
    ):
        self.compression = compression
        self.quality = quality
        self.bands = bands
        self.ssim = ssim
        self.chroma = chroma

    @property
    def label(self) -> str:
        """``jpeg-q74-420``, ``jpeg-q86-444``, ``jpeg-q90-rgb``, ``jpeg-q85-grey``..."""
        if self.compression != "jpeg":
            return self.compression
        kind = self.chroma or ("grey" if self.bands < 3 else "420" if self.quality < 90 else "rgb")
        return f"jpeg-q{self.quality}-{kind}"

    def tiles(self) -> Tiles:
        """How ptif's own writer encodes each tile."""
        from ptif.convert.tiffwriter import Tiles

        assert self.chroma is not None
        return Tiles(self.quality, self.chroma)


def fixed(recipe: Recipe, bands: int) -> Encoding:
    """The encoding the recipe states, with nothing measured."""
    return Encoding(recipe.compression, recipe.quality, bands)


def choose(
    image: pyvips.Image, recipe: Recipe, streamed: bool = False
) -> tuple[pyvips.Image, Encoding]:
    """The image to write (the same pixels; part of it may now sit in memory) and its
    encoding, for libvips' writer: the recipe's own unless it states a floor. A ``streamed``
    image (an EPS rendering) holds nothing in memory, so nothing is measured: the recipe's
    own quality."""
    if (
        recipe.min_quality is None
        or recipe.compression != "jpeg"
        or streamed
        or not _measurable(image)
    ):
        return image, fixed(recipe, image.bands)
    image, sample = _sample(image, recipe.tile_size)
    return image, _lowest_holding(sample, recipe)


def holdable(image: pyvips.Image, recipe: Recipe) -> bool:
    """Whether ptif's own writer writes this image: a floor to hold on 8-bit grey or RGB pixels
    that fit in :data:`HOLD_BYTES`."""
    return (
        recipe.min_quality is not None
        and recipe.compression == "jpeg"
        and _measurable(image)
        and image.width * image.height * image.bands <= HOLD_BYTES
    )


def without_huge_pages() -> None:
    """Stop numpy from asking the kernel for transparent huge pages for its large arrays. On a
    kernel that grants them on request (``madvise``, the common default), each of a worker's
    pixel arrays, a new 100 MB or more per image, then waits while the kernel compacts memory to
    find 2 MB pages: 17% more CPU in all over 18 photos of 12 to 48 megapixels (9.5 s against
    7.9 s, three alternating runs each), in system time that jumps from 0.1 s to 1 s an image."""
    import numpy as np

    switch = getattr(getattr(np, "_core", None), "multiarray", None)
    if switch is not None and hasattr(switch, "_set_madvise_hugepage"):
        switch._set_madvise_hugepage(False)


def hold(image: pyvips.Image) -> Pixels:
    """The image decoded into memory, height x width x bands."""
    import numpy as np  # before the decode: loaded after it, it lifts the decode's peak memory

    data = image.write_to_memory()
    return np.frombuffer(data, np.uint8).reshape(image.height, image.width, image.bands)


def plain_jpeg(source: pyvips.Image, decoder: str, image: pyvips.Image) -> bool:
    """Whether ``image``, the end of the pipeline from ``source``, is a JPEG's pixels as libjpeg
    decodes them: 8-bit YCbCr or grey, upright, no colour profile to apply, not shrunk."""
    return (
        decoder == "libvips jpegload"
        and source.format == "uchar"
        and (source.interpretation, source.bands) in (("srgb", 3), ("b-w", 1))
        and not source.get_typeof("icc-profile-data")
        and (not source.get_typeof("orientation") or source.get("orientation") == 1)
        and (image.width, image.height, image.bands) == (source.width, source.height, source.bands)
    )


def hold_jpeg(path: Path, image: pyvips.Image) -> Pixels | None:
    """A plain JPEG (:func:`plain_jpeg`) decoded by libjpeg-turbo straight into memory, the same
    pixels as libvips' decode for two thirds of its CPU (no strips copied through a pipeline),
    or ``None`` when libjpeg-turbo refuses the file, reads it otherwise, or the file does not end
    with its image: libvips then decodes it, and says what is wrong. The file's scans are
    bounded before it is opened (:func:`~ptif.convert.budgets.check_jpeg`), so this decode,
    like libvips' own, ends; a file larger than a quarter of its pixels (padding, huge
    metadata; a photograph's JPEG is a tenth or less) is left to libvips too, which streams it
    instead of reading it whole: what this decode holds beyond the pixels stays small."""
    import numpy as np
    from imagecodecs import jpeg8_decode

    if path.stat().st_size > image.width * image.height * image.bands // 4:
        return None
    data = path.read_bytes()
    if not data.endswith(b"\xff\xd9"):
        # No end-of-image marker last: truncated (libjpeg warns and fills in grey, libvips
        # refuses it as ptif asks), or bytes after the image: libvips decides.
        return None
    try:
        decoded = jpeg8_decode(data)
    except MemoryError:
        raise
    except Exception:  # any refusal: libvips decodes instead, and names what is wrong
        return None
    if decoded.dtype != np.uint8 or decoded.size != image.width * image.height * image.bands:
        return None
    pixels: Pixels = decoded.reshape(image.height, image.width, image.bands)
    return pixels


def detached(image: pyvips.Image, pixels: Pixels) -> pyvips.Image:
    """``pixels`` as a libvips image with ``image``'s resolution and carried metadata, and no
    link to its pipeline: dropping that frees the decoder's memory (a progressive JPEG's
    coefficients are as large as its pixels) before the pyramid is written."""
    from ptif.convert.embedded import CARRIED

    height, width, bands = pixels.shape
    held = pyvips.Image.new_from_memory(pixels.data, width, height, bands, "uchar")
    held = held.copy(interpretation=image.interpretation, xres=image.xres, yres=image.yres)
    for name in CARRIED:
        if image.get_typeof(name):
            held.set_type(image.get_typeof(name), name, image.get(name))
    return held


def _measurable(image: pyvips.Image) -> bool:
    return bool(image.format == "uchar" and image.bands in (1, 3) and min(image.width,
                image.height) > WINDOW)  # fmt: skip


def _lowest_holding(sample: pyvips.Image, recipe: Recipe) -> Encoding:
    """The lowest of :data:`SUBSAMPLED_QUALITIES` that holds the floor (SSIM falls with the
    quality). The lowest is tried first, since most photographs hold it (one encoding), then
    the highest (stars and maps miss it: two), then a binary search between them."""
    floor, tile, bands = recipe.min_quality, recipe.tile_size, sample.bands
    assert floor is not None

    def holds(index: int) -> Encoding | None:
        quality = SUBSAMPLED_QUALITIES[index]
        score = ssim(sample, _round_trip(sample, quality, tile))
        return Encoding("jpeg", quality, bands, score) if score >= floor else None

    low, high = 0, len(SUBSAMPLED_QUALITIES) - 1  # best quality first
    found = holds(high)
    if found:
        return found
    best = holds(low)
    if best is None:
        return fixed(recipe, bands)  # even the best 4:2:0 quality misses the floor
    high -= 1  # known to miss; low holds
    while low < high:
        middle = (low + high + 1) // 2
        found = holds(middle)
        if found:
            best, low = found, middle
        else:
            high = middle - 1
    return best


def _round_trip(sample: pyvips.Image, quality: int, tile: int) -> pyvips.Image:
    """The sample as the pyramid's tiles will hold it."""
    data = sample.tiffsave_buffer(
        tile=True, tile_width=tile, tile_height=tile, compression="jpeg", Q=quality, keep="none"
    )
    return pyvips.Image.tiffload_buffer(data).copy_memory()  # read three times by ssim()


def _sample(image: pyvips.Image, tile: int) -> tuple[pyvips.Image, pyvips.Image]:
    """The image to write and the tiles to measure, spread over the whole image."""
    if image.width * image.height * image.bands <= HOLD_BYTES:
        whole = image.copy_memory()  # decoded once; the pyramid is written from memory
        return whole, _tiles(whole, tile, 0, whole.height)
    rows = min(image.height, tile * BAND_TILE_ROWS)
    band = image.crop(0, 0, image.width, rows).copy_memory()
    joined = band
    if rows < image.height:
        joined = band.join(image.crop(0, rows, image.width, image.height - rows), "vertical")
    return joined, _tiles(band, tile, 0, rows)


def _tiles(image: pyvips.Image, tile: int, top: int, bottom: int) -> pyvips.Image:
    """Whole tiles of ``image`` between rows ``top`` and ``bottom``, on the pyramid's tile grid
    so that each encodes exactly as in the pyramid: a lattice spread over the area, plus the
    tiles of most colour detail (the detail 4:2:0 smears), :data:`SAMPLE_TILES` in all. An
    area of no more tiles than that is measured whole."""
    columns, rows = image.width // tile, (bottom - top) // tile
    if columns * rows <= SAMPLE_TILES:
        return image.crop(0, top, image.width, bottom - top)
    chosen, _ = spots(image.crop(0, top, image.width, bottom - top), tile, rows)
    crops = [image.crop(x * tile, top + y * tile, tile, tile) for x, y in chosen]
    # one row: a grid with empty cells would add black to both sides, which SSIM scores perfect
    return pyvips.Image.arrayjoin(crops, across=len(crops)).copy_memory()


def spots(
    image: pyvips.Image,
    tile: int,
    rows: int,
    scout: pyvips.Image | None = None,
    count: int = SAMPLE_TILES,
    edges: tuple[int, int] = (0, 0),
) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """``count`` positions of whole tiles among the top ``rows`` rows of the grid (a lattice
    spread over them, plus the tiles of most colour detail: the detail 4:2:0 smears), and the
    positions of those colourful tiles. The colour detail is found on ``scout`` when given
    (those rows of whole tiles, each tile a few pixels square), else on a copy :data:`SCOUT`
    times smaller on each side. ``edges`` (0 or 1 each) spread the lattice over the partial
    column on the right and the partial row at the bottom too."""
    columns = image.width // tile
    chosen = _lattice(columns + edges[0], rows + edges[1], count - COLOURFUL_TILES)
    if scout is None:
        scout = image.crop(0, 0, columns * tile, rows * tile).shrink(SCOUT, SCOUT)
    colourful = _colourful(scout, scout.width // columns, columns, rows)
    for spot in colourful:
        if len(chosen) >= count:
            break
        if spot not in chosen:
            chosen.append(spot)
    return chosen, colourful


def _lattice(columns: int, rows: int, count: int) -> list[tuple[int, int]]:
    """About ``count`` tile positions evenly spread over a grid, corners and edges included."""
    down = max(1, min(rows, round((count * rows / columns) ** 0.5)))
    across = max(1, min(columns, count // down))

    def spread(n: int, total: int) -> list[int]:
        return [round(i * (total - 1) / (n - 1)) for i in range(n)] if n > 1 else [total // 2]

    return [(x, y) for y in spread(down, rows) for x in spread(across, columns)]


def _colourful(small: pyvips.Image, cells: int, columns: int, rows: int) -> list[tuple[int, int]]:
    """Of ``rows`` x ``columns`` tiles, the most chroma detail first: the mean local deviation
    of R-G and B-G on ``small``, the tiles at ``cells`` pixels square."""
    if small.bands < 3:
        return []
    small = small.cast("float")
    chroma = small[0].bandjoin(small[2]) - small[1]
    detail = (chroma - chroma.gaussblur(1)).abs()
    scores = detail.crop(0, 0, columns * cells, rows * cells)
    per_tile = scores.shrink(cells, cells).bandmean().tolist()  # no numpy on the convert path
    ranked = sorted(
        ((v, (x, y)) for y, row in enumerate(per_tile) for x, v in enumerate(row)),
        reverse=True,
    )
    return [spot for _, spot in ranked[:COLOURFUL_TILES]]


def ssim(a: pyvips.Image, b: pyvips.Image) -> float:
    """Mean SSIM of two 8-bit images of the same size, over every channel, as scikit-image's
    ``structural_similarity(a, b, channel_axis=2, data_range=255)`` defines it (7x7 uniform
    windows, sample variances), estimated on the windows of a 7-pixel grid rather than at every
    pixel: 49 times less work, within about 0.002 of the full figure on a sample's tiles."""
    # One lazy expression, evaluated once by avg(): each copy_memory() would start a pipeline.
    x, y = a.cast("float"), b.cast("float")
    width, height = a.width // WINDOW * WINDOW, a.height // WINDOW * WINDOW

    def mean(image: pyvips.Image) -> pyvips.Image:
        return image.crop(0, 0, width, height).shrink(WINDOW, WINDOW)

    values = ssim_windows(mean(x), mean(y), mean(x * x), mean(y * y), mean(x * y))
    return float(values.avg())


def ssim_windows(mx: Any, my: Any, mxx: Any, myy: Any, mxy: Any) -> Any:
    """SSIM of each window from the windows' means of x, y, x², y² and xy: libvips images or
    numpy arrays alike."""
    n = WINDOW * WINDOW
    correction = n / (n - 1)  # sample (co)variances, as scikit-image
    vx = (mxx - mx * mx) * correction
    vy = (myy - my * my) * correction
    cxy = (mxy - mx * my) * correction
    top = (mx * my * 2 + _C1) * (cxy * 2 + _C2)
    bottom = (mx * mx + my * my + _C1) * (vx + vy + _C2)
    return top / bottom
