"""How the JPEG tiles of one image are encoded when its recipe states a quality floor.

libvips' TIFF writer has a cliff at Q90: below it, JPEG tiles are YCbCr with 4:2:0 chroma
subsampling; at 90 and above, they are RGB JPEG, about three times the bytes for the same
picture. 4:2:0 is invisible on most photographs but smears small coloured detail (stars, thin
coloured lines on a map, red rubrication in a manuscript). So instead of one quality number,
the default profile states a floor (``min_quality``, an SSIM) and each image gets the fewest
bytes that hold it: 4:2:0 at the lowest quality of :data:`SUBSAMPLED_QUALITIES` that keeps the
floor, else the recipe's own quality (90: RGB tiles).

The choice is measured, not guessed: full-resolution tiles of the image are encoded with
libvips' own TIFF writer (so they are the very bytes the pyramid will hold), decoded, and
compared with the source's pixels by SSIM (:func:`ssim`, the definition of scikit-image's
``structural_similarity``: 7x7 uniform windows, per channel, then the mean over channels).

The sample stays cheap and streaming: an image of up to :data:`WHOLE_IMAGE_PIXELS` is held
in memory and measured whole (exact); a larger one gives up to :data:`SAMPLE_TILES` tiles of its
top :data:`BAND_TILE_ROWS` rows of tiles, kept in memory and joined back on top of the rest of the
pipeline, so the source is still decoded once, top to bottom.
"""

from __future__ import annotations

import pyvips

from ptif.convert.profiles import Recipe

#: 4:2:0 qualities, best first; the lowest that holds the floor is chosen.
SUBSAMPLED_QUALITIES = (89, 85, 80, 75)
#: Images up to this size are measured whole.
WHOLE_IMAGE_PIXELS = 4_000_000
#: Larger images: tiles from this many top rows of tiles...
BAND_TILE_ROWS = 2
#: ...at most this many, spread along them.
SAMPLE_TILES = 8
_WINDOW = 7
_C1 = (0.01 * 255) ** 2
_C2 = (0.03 * 255) ** 2


class Encoding:
    """The tiles' encoding: JPEG at ``quality``; ``ssim`` is what the sample measured (``None``
    when nothing was measured: no floor, or the fallback)."""

    __slots__ = ("bands", "compression", "quality", "ssim")

    def __init__(self, compression: str, quality: int, bands: int, ssim: float | None = None):
        self.compression = compression
        self.quality = quality
        self.bands = bands
        self.ssim = ssim

    @property
    def label(self) -> str:
        """``jpeg-q89-420``, ``jpeg-q90-rgb``, ``jpeg-q85-grey``, ``deflate``..."""
        if self.compression != "jpeg":
            return self.compression
        kind = "grey" if self.bands < 3 else "420" if self.quality < 90 else "rgb"
        return f"jpeg-q{self.quality}-{kind}"


def fixed(recipe: Recipe, bands: int) -> Encoding:
    """The encoding the recipe states, with nothing measured."""
    return Encoding(recipe.compression, recipe.quality, bands)


def choose(image: pyvips.Image, recipe: Recipe) -> tuple[pyvips.Image, Encoding]:
    """The image to write (the same pixels; part of it may now sit in memory) and its
    encoding: the recipe's own unless it states a floor."""
    if recipe.min_quality is None or recipe.compression != "jpeg" or not _measurable(image):
        return image, fixed(recipe, image.bands)
    image, sample = _sample(image, recipe.tile_size)
    return image, _lowest_holding(sample, recipe)


def _measurable(image: pyvips.Image) -> bool:
    return bool(image.format == "uchar" and image.bands in (1, 3) and min(image.width,
                image.height) > _WINDOW)  # fmt: skip


def _lowest_holding(sample: pyvips.Image, recipe: Recipe) -> Encoding:
    """Binary search down :data:`SUBSAMPLED_QUALITIES` (quality falls, and SSIM with it)."""
    floor, tile, bands = recipe.min_quality, recipe.tile_size, sample.bands
    assert floor is not None
    best: Encoding | None = None
    low, high = 0, len(SUBSAMPLED_QUALITIES) - 1
    while low <= high:
        middle = (low + high) // 2 if best else 0
        quality = SUBSAMPLED_QUALITIES[middle]
        score = ssim(sample, _round_trip(sample, quality, tile))
        if score >= floor:
            best = Encoding("jpeg", quality, bands, score)
            low = middle + 1
        elif best is None:
            break  # even the best 4:2:0 quality misses the floor
        else:
            high = middle - 1
    return best or fixed(recipe, bands)


def _round_trip(sample: pyvips.Image, quality: int, tile: int) -> pyvips.Image:
    """The sample as the pyramid's tiles will hold it."""
    data = sample.tiffsave_buffer(
        tile=True, tile_width=tile, tile_height=tile, compression="jpeg", Q=quality, keep="none"
    )
    return pyvips.Image.tiffload_buffer(data).copy_memory()  # read three times by ssim()


def _sample(image: pyvips.Image, tile: int) -> tuple[pyvips.Image, pyvips.Image]:
    if image.width * image.height <= WHOLE_IMAGE_PIXELS:
        whole = image.copy_memory()
        return whole, whole
    rows = min(image.height, tile * BAND_TILE_ROWS)
    band = image.crop(0, 0, image.width, rows).copy_memory()
    joined = band
    if rows < image.height:
        joined = band.join(image.crop(0, rows, image.width, image.height - rows), "vertical")
    return joined, _tiles(band, tile)


def _tiles(band: pyvips.Image, tile: int) -> pyvips.Image:
    """Up to :data:`SAMPLE_TILES` whole tiles of the band, on the pyramid's tile grid, so that
    each encodes exactly as in the pyramid."""
    spots = [(x, y) for y in range(band.height // tile) for x in range(band.width // tile)]
    if not spots:
        return band
    step = max(1, len(spots) / SAMPLE_TILES)
    chosen = [spots[int(i * step)] for i in range(min(SAMPLE_TILES, len(spots)))]
    crops = [band.crop(x * tile, y * tile, tile, tile) for x, y in chosen]
    return pyvips.Image.arrayjoin(crops, across=min(4, len(crops))).copy_memory()


def ssim(a: pyvips.Image, b: pyvips.Image) -> float:
    """Mean SSIM of two 8-bit images of the same size, over every channel, as scikit-image's
    ``structural_similarity(a, b, channel_axis=2, data_range=255)`` defines it (7x7 uniform
    windows, sample variances), estimated on the windows of a 7-pixel grid rather than at every
    pixel: 49 times less work, within about 0.002 of the full figure on a sample's tiles."""
    # One lazy expression, evaluated once by avg(): each copy_memory() would start a pipeline.
    x, y = a.cast("float"), b.cast("float")
    width, height = a.width // _WINDOW * _WINDOW, a.height // _WINDOW * _WINDOW

    def mean(image: pyvips.Image) -> pyvips.Image:
        return image.crop(0, 0, width, height).shrink(_WINDOW, _WINDOW)

    n = _WINDOW * _WINDOW
    correction = n / (n - 1)  # sample (co)variances, as scikit-image
    mx, my = mean(x), mean(y)
    vx = (mean(x * x) - mx * mx) * correction
    vy = (mean(y * y) - my * my) * correction
    cxy = (mean(x * y) - mx * my) * correction
    top = (mx * my * 2 + _C1) * (cxy * 2 + _C2)
    bottom = (mx * mx + my * my + _C1) * (vx + vy + _C2)
    return float((top / bottom).avg())
