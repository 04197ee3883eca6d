"""The quality floor's choice for ptif's own writer: which chroma layout and JPEG quality.

Candidates: YCbCr 4:2:0 and 4:4:4 (grey images: the quality alone) at each quality of
:data:`QUALITIES`. The pick is the candidate of fewest sample bytes whose sample SSIM holds the
floor; when none does (noise), 4:4:4 at the top quality, the most faithful.

The sample (:func:`sample_spots`) is the tiles :mod:`ptif.convert.encoding` spreads over the
image, each encoded by :class:`~ptif.convert.tiffwriter.Tiles` as the writer encodes it, padding
included, decoded, and compared with the source by SSIM on a 7-pixel grid of 7x7 windows
(scikit-image's definition; :func:`ptif.convert.encoding.ssim` is the same figure with libvips).

The search stays cheap, since the trials must not cost more than the pyramid saves:

- a trial encodes with libjpeg-turbo's standard Huffman tables: the pixels are exactly those of
  the optimised tables the pyramid gets (Huffman coding is lossless), at a third of the CPU; its
  bytes rank candidates as the optimised bytes do, a few percent larger;
- the source's side of SSIM (window sums of ``x`` and ``x^2``) is computed once per sample;
- per layout, the lowest quality is tried first (most photographs hold the floor there: one
  trial in all), then the top, then the quality where ``log(1 - SSIM)``, nearly straight in
  ``log(100 - Q)``, crosses the floor, narrowing a bracket;
- a 4:4:4 trial whose bytes already reach the 4:2:0 pick's stops before decoding: no higher
  quality can win either.
"""

from __future__ import annotations

import math
import os

import numpy as np

from ptif.convert.encoding import SAMPLE_TILES, Encoding, spots
from ptif.convert.tiffwriter import Tiles, pixel_tile

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without loading typing on every run
if TYPE_CHECKING:
    from collections.abc import Callable
    from concurrent.futures import ThreadPoolExecutor
    from typing import Any

    from ptif.convert.profiles import Recipe
    from ptif.convert.tiffwriter import Pixels

    Trial = Callable[[int, int | None], "Found"]

#: Qualities of ptif's own writer, lowest first. Below 74, 8x8 blocking shows on smooth skies
#: and skin while SSIM, which weighs local structure, still rates it fair; above 95 the bytes
#: climb steeply for differences no one sees (4:4:4 Q95 is past libvips' RGB Q90).
QUALITIES = tuple(range(74, 96))
#: Chroma layouts of colour images, in the order they are tried.
CHROMAS = ("420", "444")
_WINDOW = 7
_C1 = (0.01 * 255) ** 2
_C2 = (0.03 * 255) ** 2


class Found:
    """One trial: the candidate, its sample bytes, its SSIM over the whole sample and over the
    sample's colourful tiles (``None``: not measured, its bytes reached the bound; or no
    colourful tiles apart)."""

    __slots__ = ("bytes", "colour", "encoding")

    def __init__(self, encoding: Encoding, size: int, colour: float | None = None) -> None:
        self.encoding = encoding
        self.bytes = size
        self.colour = colour

    def holds(self, floor: float) -> bool:
        """Whether the sample holds the floor, and so do its colourful tiles on their own: a
        map's legend on an otherwise smooth scan is a small part of the sample, and 4:2:0
        smears exactly that."""
        score = self.encoding.ssim
        return score is not None and score >= floor and (self.colour or 1.0) >= floor


def choose_tiles(pixels: Pixels, recipe: Recipe) -> Encoding:
    """The candidate of fewest sample bytes whose sample SSIM holds the recipe's floor."""
    from concurrent.futures import ThreadPoolExecutor

    floor = recipe.min_quality
    assert floor is not None
    bands = pixels.shape[2]
    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        chosen, colourful = sample_spots(pixels, recipe.tile_size)
        references = list(
            pool.map(lambda s: Reference(pixels, s, recipe.tile_size, s in colourful), chosen)
        )
        best: Found | None = None
        for chroma in ("grey",) if bands == 1 else CHROMAS:

            def trial(quality: int, bound: int | None, chroma: str = chroma) -> Found:
                return _trial(pool, references, Tiles(quality, chroma), bands, bound)

            top = QUALITIES[-1] if best is None else best.encoding.quality - 1
            found = lowest_holding(trial, floor, None if best is None else best.bytes, top)
            if found and (best is None or found.bytes < best.bytes):
                best = found
        if best is None:
            best = _trial(pool, references, Tiles(QUALITIES[-1], "444" if bands == 3 else "grey"),
                          bands, None)  # fmt: skip
    return best.encoding


def lowest_holding(trial: Trial, floor: float, bound: int | None, top: int) -> Found | None:
    """The lowest quality of :data:`QUALITIES` up to ``top`` whose trial holds the floor with
    fewer bytes than ``bound``, or ``None`` (4:4:4 is tried below the 4:2:0 pick's quality
    only: at the same quality it takes more bytes). Holding, and reaching the bound, only
    become true as the quality rises: the search keeps a bracket where they are false at
    ``low``, true at ``high``."""
    if top < QUALITIES[0]:
        return None
    first = trial(QUALITIES[0], bound)
    if first.holds(floor):
        return first
    if first.encoding.ssim is None:
        return None  # even the lowest quality is too large
    low, high = 0, QUALITIES.index(top)
    found = trial(QUALITIES[high], bound)
    if found.encoding.ssim is not None and not found.holds(floor):
        return None  # even the top quality misses
    low_ssim = first.encoding.ssim
    while high - low > 1:
        middle = _guess(low, high, low_ssim, found.encoding.ssim, floor)
        attempt = trial(QUALITIES[middle], bound)
        if attempt.holds(floor) or attempt.encoding.ssim is None:
            high, found = middle, attempt
        else:
            low, low_ssim = middle, attempt.encoding.ssim  # type: ignore[assignment]
    return found if found.encoding.ssim is not None else None


def _guess(low: int, high: int, low_ssim: float, high_ssim: float | None, floor: float) -> int:
    """Where, between indices ``low`` and ``high`` of :data:`QUALITIES`, SSIM crosses the
    floor: ``log(1 - SSIM)`` is nearly straight in ``log(100 - Q)``; the middle when the top is
    not measured."""
    middle = (low + high) // 2
    if high_ssim is None or high_ssim >= 1 or low_ssim >= high_ssim:
        return middle
    x0, x1 = math.log(100 - QUALITIES[low]), math.log(100 - QUALITIES[high])
    y0, y1 = math.log(1 - low_ssim), math.log(1 - high_ssim)
    x = x0 + (math.log(1 - floor) - y0) * (x1 - x0) / (y1 - y0)
    quality = math.ceil(100 - math.exp(x))
    return min(high - 1, max(low + 1, QUALITIES.index(min(max(quality, QUALITIES[0]),
                                                          QUALITIES[-1]))))  # fmt: skip


def _trial(
    pool: ThreadPoolExecutor,
    references: list[Reference],
    tiles: Tiles,
    bands: int,
    bound: int | None,
) -> Found:
    """The sample encoded as ``tiles``; its SSIM unless its bytes reach ``bound``."""
    from imagecodecs import jpeg8_decode

    streams = list(pool.map(tiles.encode_fast, (r.tile(tiles) for r in references)))
    size = sum(len(s) for s in streams)
    score = colour = None
    if bound is None or size < bound:

        def one(pair: tuple[Reference, bytes]) -> tuple[float, int]:
            return pair[0].ssim(jpeg8_decode(pair[1]))

        scores = list(pool.map(one, zip(references, streams, strict=True)))
        score = _mean(scores)
        colourful = [s for s, r in zip(scores, references, strict=True) if r.colourful]
        colour = _mean(colourful) if colourful else None
    return Found(Encoding("jpeg", tiles.quality, bands, score, tiles.chroma), size, colour)


def _mean(scores: list[tuple[float, int]]) -> float:
    """The mean SSIM of window sums and counts."""
    return sum(s[0] for s in scores) / max(1, sum(s[1] for s in scores))


class Reference:
    """One sample tile of the source, with its side of SSIM computed once."""

    __slots__ = ("colourful", "height", "pixels", "size", "source", "spot", "sx", "sxx", "width")

    def __init__(
        self, pixels: Pixels, spot: tuple[int, int], size: int, colourful: bool = False
    ) -> None:
        self.pixels, self.spot, self.size, self.colourful = pixels, spot, size, colourful
        x, y = spot
        source = pixels[y * size : (y + 1) * size, x * size : (x + 1) * size]
        self.height = source.shape[0] // _WINDOW * _WINDOW
        self.width = source.shape[1] // _WINDOW * _WINDOW
        self.source = source[: self.height, : self.width].astype(np.float32)
        self.sx, self.sxx = _window_sums(self.source), _window_sums(self.source * self.source)

    def tile(self, tiles: Tiles) -> Pixels:
        """The tile as the writer pads it for ``tiles``."""
        return pixel_tile(self.pixels, *self.spot, self.size, tiles.block)

    def ssim(self, decoded: Pixels) -> tuple[float, int]:
        """The sum of SSIM over the windows against ``decoded`` (the tile as read back), every
        channel, and how many windows."""
        if not self.height or not self.width:
            return 0.0, 0
        bands = self.sx.shape[2]
        y = decoded.reshape(decoded.shape[0], decoded.shape[1], bands)
        y = y[: self.height, : self.width].astype(np.float32)
        n = _WINDOW * _WINDOW
        sy, syy = _window_sums(y), _window_sums(y * y)
        sxy = _window_sums(self.source * y)
        mx, my = self.sx / n, sy / n
        correction = n / (n - 1)  # sample (co)variances, as scikit-image
        vx = (self.sxx / n - mx * mx) * correction
        vy = (syy / n - my * my) * correction
        cxy = (sxy / n - mx * my) * correction
        top = (mx * my * 2 + _C1) * (cxy * 2 + _C2)
        bottom = (mx * mx + my * my + _C1) * (vx + vy + _C2)
        values = top / bottom
        return float(values.sum(dtype=np.float64)), int(values.size)


def _window_sums(values: Any) -> Any:
    """Sums over the 7x7 windows of a 7-pixel grid of a height x width x bands array whose
    sides are multiples of 7."""
    height, width, bands = values.shape
    rows = values.reshape(height // _WINDOW, _WINDOW, width * bands).sum(axis=1)
    return rows.reshape(height // _WINDOW, width // _WINDOW, _WINDOW, bands).sum(axis=2)


def sample_spots(pixels: Pixels, tile: int) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """The sample's tiles (column, row on the pyramid's grid), and the colourful ones among
    them: every tile of an image of no more than :data:`~ptif.convert.encoding.SAMPLE_TILES`
    whole tiles, edge tiles included, else whole tiles spread over it
    (:func:`~ptif.convert.encoding.spots`)."""
    import pyvips

    height, width = pixels.shape[:2]
    columns, rows = width // tile, height // tile
    if columns * rows <= SAMPLE_TILES:
        every = [(x, y) for y in range(-(-height // tile)) for x in range(-(-width // tile))]
        return every, []
    scout = pyvips.Image.new_from_memory(pixels.data, width, height, pixels.shape[2], "uchar")
    return spots(scout, tile, rows)
