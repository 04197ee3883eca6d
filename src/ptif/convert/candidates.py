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
- 4:2:0 first: its lowest quality is tried first (most photographs hold the floor there: one
  trial in all), then the top, then the quality where ``log(1 - SSIM)``, nearly straight in
  ``log(100 - Q)``, crosses the floor, narrowing a bracket;
- 4:4:4 only below the 4:2:0 pick's quality and bytes: the highest quality under those bytes is
  found by encoding alone (no decode, no SSIM), and measured first; if it misses the floor, no
  4:4:4 candidate can win.
"""

from __future__ import annotations

import math

import numpy as np

from ptif.convert import cores
from ptif.convert.encoding import SAMPLE_TILES, WINDOW, Encoding, spots, ssim_windows
from ptif.convert.tiffwriter import Tiles, pixel_tile

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without loading typing on every run
if TYPE_CHECKING:
    from concurrent.futures import ThreadPoolExecutor
    from typing import Any

    from ptif.convert.profiles import Recipe
    from ptif.convert.tiffwriter import Pixels


#: Qualities of ptif's own writer, lowest first. Below 74, 8x8 blocking shows on smooth skies
#: and skin while SSIM, which weighs local structure, still rates it fair; above 95 the bytes
#: climb steeply for differences no one sees (4:4:4 Q95 is past libvips' RGB Q90).
QUALITIES = tuple(range(74, 96))
#: Chroma layouts of colour images, in the order they are tried.
CHROMAS = ("420", "444")


class Found:
    """One measured candidate: its sample bytes, its SSIM over the whole sample and over the
    sample's colourful tiles (``None`` when there are none apart)."""

    __slots__ = ("bytes", "colour", "encoding")

    def __init__(self, encoding: Encoding, size: int, colour: float | None = None) -> None:
        self.encoding = encoding
        self.bytes = size
        self.colour = colour

    @property
    def score(self) -> float:
        """What must hold the floor: the whole sample's SSIM, and its colourful tiles' on their
        own (a map's legend on an otherwise smooth scan is a small part of the sample, and
        4:2:0 smears exactly that)."""
        whole = self.encoding.ssim
        assert whole is not None
        return whole if self.colour is None else min(whole, self.colour)


class Trials:
    """The sample's candidates, each encoded at most once and measured at most once."""

    __slots__ = ("_found", "_pool", "_references", "_streams", "bands")

    def __init__(self, pool: ThreadPoolExecutor, references: list[Reference], bands: int) -> None:
        self._pool = pool
        self._references = references
        self.bands = bands
        self._streams: dict[tuple[int, str], list[bytes]] = {}
        self._found: dict[tuple[int, str], Found] = {}

    def size(self, quality: int, chroma: str) -> int:
        """The sample's bytes as ``quality`` and ``chroma``: encoded, not decoded."""
        return sum(len(stream) for stream in self._encoded(quality, chroma))

    def measure(self, quality: int, chroma: str) -> Found:
        """The sample's bytes and SSIM as ``quality`` and ``chroma``."""
        from imagecodecs import jpeg8_decode

        key = (quality, chroma)
        if key not in self._found:

            def one(pair: tuple[Reference, bytes]) -> tuple[float, int]:
                return pair[0].ssim(jpeg8_decode(pair[1]))

            pairs = zip(self._references, self._encoded(quality, chroma), strict=True)
            scores = list(self._pool.map(one, pairs))
            colourful = [s for s, r in zip(scores, self._references, strict=True) if r.colourful]
            encoding = Encoding("jpeg", quality, self.bands, _mean(scores), chroma)
            colour = _mean(colourful) if colourful else None
            self._found[key] = Found(encoding, self.size(quality, chroma), colour)
        return self._found[key]

    def _encoded(self, quality: int, chroma: str) -> list[bytes]:
        key = (quality, chroma)
        if key not in self._streams:
            tiles = Tiles(quality, chroma)
            tiled = (r.tile(tiles) for r in self._references)
            self._streams[key] = list(self._pool.map(tiles.encode_fast, tiled))
        return self._streams[key]


def choose_tiles(pixels: Pixels, recipe: Recipe) -> Encoding:
    """The candidate of fewest sample bytes whose sample SSIM holds the recipe's floor."""
    from concurrent.futures import ThreadPoolExecutor

    floor = recipe.min_quality
    assert floor is not None
    bands = pixels.shape[2]
    with ThreadPoolExecutor(cores.threads()) as pool:
        chosen, colourful = sample_spots(pixels, recipe.tile_size)
        references = list(
            pool.map(lambda s: Reference(pixels, s, recipe.tile_size, s in colourful), chosen)
        )
        trials = Trials(pool, references, bands)
        chromas = ("grey",) if bands == 1 else CHROMAS
        best = _fewest_bytes(trials, chromas, floor)
        if best is None:  # nothing holds the floor (noise): the most faithful candidate
            best = trials.measure(QUALITIES[-1], chromas[-1])
    return best.encoding


def _fewest_bytes(trials: Trials, chromas: tuple[str, ...], floor: float) -> Found | None:
    """Each layout in turn; after the first, only qualities whose sample bytes stay under the
    pick so far are measured, found by encoding alone (no decode, no SSIM)."""
    best: Found | None = None
    for chroma in chromas:
        if best is None:
            found = lowest_holding(trials, chroma, floor, QUALITIES[-1])
        else:
            # a later layout at the pick's quality or above takes more bytes (4:4:4 than 4:2:0)
            ceiling = _under(trials, chroma, best.bytes, best.encoding.quality - 1)
            found = None
            if ceiling is not None:
                found = lowest_holding(trials, chroma, floor, ceiling, lowest_first=False)
        if found and (best is None or found.bytes < best.bytes):
            best = found
    return best


def _under(trials: Trials, chroma: str, bound: int, top: int) -> int | None:
    """The highest quality up to ``top`` whose sample bytes stay under ``bound`` (bytes rise
    with the quality), or ``None``."""
    qualities = [q for q in QUALITIES if q <= top]
    if not qualities or trials.size(qualities[0], chroma) >= bound:
        return None
    low, high = 0, len(qualities) - 1  # qualities[low] stays under
    while low < high:
        middle = (low + high + 1) // 2
        if trials.size(qualities[middle], chroma) < bound:
            low = middle
        else:
            high = middle - 1
    return qualities[low]


def lowest_holding(
    trials: Trials, chroma: str, floor: float, top: int, lowest_first: bool = True
) -> Found | None:
    """The lowest quality of :data:`QUALITIES` up to ``top`` whose sample holds the floor (SSIM
    rises with the quality), or ``None``. The lowest is tried first when it is the likely
    answer (most photographs hold the floor at Q74 in 4:2:0), else ``top`` first (a later
    layout, most often beaten at any quality). Then a bracket, missing at ``low`` and holding
    at ``high``, narrows where ``log(1 - SSIM)``, nearly straight in ``log(100 - Q)``, crosses
    the floor."""
    qualities = [q for q in QUALITIES if q <= top]
    if not qualities:
        return None
    ends = [qualities[0], qualities[-1]]
    found: dict[int, Found] = {}
    for quality in ends if lowest_first else ends[::-1]:
        found[quality] = trials.measure(quality, chroma)
        holds = found[quality].score >= floor
        if quality == qualities[0] and holds:
            return found[quality]
        if quality == qualities[-1] and not holds:
            return None
    low, high = 0, len(qualities) - 1
    while high - low > 1:
        low_score, high_score = found[qualities[low]].score, found[qualities[high]].score
        middle = _guess(qualities, low, high, low_score, high_score, floor)
        found[qualities[middle]] = attempt = trials.measure(qualities[middle], chroma)
        if attempt.score >= floor:
            high = middle
        else:
            low = middle
    return found[qualities[high]]


def _guess(
    qualities: list[int], low: int, high: int, low_score: float, high_score: float, floor: float
) -> int:
    """Where, strictly between indices ``low`` and ``high`` of ``qualities``, SSIM crosses the
    floor, on a straight line of ``log(1 - SSIM)`` against ``log(100 - Q)``."""
    middle = (low + high) // 2
    if high_score >= 1 or low_score >= high_score:
        return middle
    x0, x1 = math.log(100 - qualities[low]), math.log(100 - qualities[high])
    y0, y1 = math.log(1 - low_score), math.log(1 - high_score)
    quality = math.ceil(100 - math.exp(x0 + (math.log(1 - floor) - y0) * (x1 - x0) / (y1 - y0)))
    index = sum(1 for q in qualities if q < quality)  # the first at or above it
    return min(high - 1, max(low + 1, index))


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
        self.height = source.shape[0] // WINDOW * WINDOW
        self.width = source.shape[1] // WINDOW * WINDOW
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
        n = WINDOW * WINDOW
        sy, syy, sxy = _window_sums(y), _window_sums(y * y), _window_sums(self.source * y)
        values = ssim_windows(self.sx / n, sy / n, self.sxx / n, syy / n, sxy / n)
        return float(values.sum(dtype=np.float64)), int(values.size)


def _window_sums(values: Any) -> Any:
    """Sums over the 7x7 windows of a 7-pixel grid of a height x width x bands array whose
    sides are multiples of 7."""
    height, width, bands = values.shape
    rows = values.reshape(height // WINDOW, WINDOW, width * bands).sum(axis=1)
    return rows.reshape(height // WINDOW, width // WINDOW, WINDOW, bands).sum(axis=2)


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
