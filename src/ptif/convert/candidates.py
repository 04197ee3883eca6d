"""The quality floor's choice for ptif's own writer: which chroma layout and JPEG quality.

Candidates: YCbCr 4:2:0 and 4:4:4 (grey images: the quality alone) at each quality of
:data:`QUALITIES`. The pick is a candidate of few sample bytes whose sample SSIM holds the
floor, at most a step or so above the lowest that holds; when none does (noise), 4:4:4 at the
top quality, the most faithful.

The sample (:func:`sample_spots`) is the tiles :mod:`ptif.convert.encoding` spreads over the
image, each encoded by :class:`~ptif.convert.tiffwriter.Tiles` as the writer encodes it, padding
included, decoded, and compared with the source by SSIM on a 7-pixel grid of 7x7 windows
(scikit-image's definition; :func:`ptif.convert.encoding.ssim` is the same figure with libvips).

The search stays cheap, since the trials must not cost more than the pyramid saves:

- a trial encodes as the writer does, with libjpeg-turbo's standard Huffman tables (half the
  CPU of tables optimised per tile), so the pick's streams are the pyramid's own level-0 tiles
  (``ready``): the sample is never encoded twice;
- the source's side of SSIM (window sums of ``x`` and ``x^2``) is computed once per sample, the
  decoded side one tile at a time (its float copies stay in the processor's cache), and the
  windows' SSIM of all the sample's tiles at once;
- 4:2:0 first: its lowest quality is tried first (most photographs hold the floor there: one
  trial in all), then the quality where ``log(1 - SSIM)``, nearly straight in ``log(100 - Q)``,
  crosses the floor: on a typical slope from one trial, on the line through the two nearest
  the floor once they bracket it. The search stops when the line puts the lowest quality that
  holds within :data:`STEPS_ABOVE` of the lowest known to hold: a step of quality costs a few
  percent of bytes, a trial costs as much as encoding the sample three times;
- 4:4:4 only below the 4:2:0 pick's quality and bytes, and only if its lowest quality saves
  :data:`SAVING` of them: about the highest quality under those bytes is found by encoding
  alone (no decode, no SSIM), and measured first; if it misses the floor, no 4:4:4 candidate
  can win;
- a mid-sized image is sampled in a third of its whole tiles, not all of them
  (:func:`sample_spots`).
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
#: The slope of ``log(1 - SSIM)`` against ``log(100 - Q)`` assumed from a single trial: the
#: lower end of what photographs, scans and star plates show (0.4 to 0.65), so that the next
#: trial tends to land just above the floor.
SLOPE = 0.4
#: On an image of more than this many tiles (16 megapixels), the colourful tiles are found
#: on every :data:`SCOUT_STEP`-th pixel of every :data:`SCOUT_STEP`-th row: shrinking all
#: the pixels reads all of them, a tenth of a second on 48 megapixels, as much as all the
#: trials. (A point sample favours dense fine detail over the sparse detail a shrunk copy
#: keeps; on so many tiles, the lattice is the sample's larger part.)
SCOUT_TILES = 256
SCOUT_STEP = 16
#: A later layout is tried only if its lowest quality saves this share of the pick's bytes:
#: a smaller saving is not worth its trials.
SAVING = 0.1
#: A quality that holds is taken once the lowest that holds lies at most this many steps below.
STEPS_ABOVE = 1


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

    __slots__ = ("_found", "_pool", "_sample", "_streams", "bands")

    def __init__(self, pool: ThreadPoolExecutor | None, sample: Sample, bands: int) -> None:
        self._pool = pool
        self._sample = sample
        self.bands = bands
        self._streams: dict[tuple[int, str], list[bytes]] = {}
        self._found: dict[tuple[int, str], Found] = {}

    def size(self, quality: int, chroma: str) -> int:
        """The sample's bytes as ``quality`` and ``chroma``: encoded, not decoded."""
        return sum(len(stream) for stream in self.streams(quality, chroma))

    def measure(self, quality: int, chroma: str) -> Found:
        """The sample's bytes and SSIM as ``quality`` and ``chroma``."""
        key = (quality, chroma)
        if key not in self._found:
            whole, colour = self._sample.scores(self.streams(quality, chroma), self._pool)
            encoding = Encoding("jpeg", quality, self.bands, whole, chroma)
            self._found[key] = Found(encoding, self.size(quality, chroma), colour)
        return self._found[key]

    def streams(self, quality: int, chroma: str) -> list[bytes]:
        """The sample's tiles as ``quality`` and ``chroma``, in the sample's order, each as
        :meth:`~ptif.convert.tiffwriter.Tiles.encode` encodes it."""
        key = (quality, chroma)
        if key not in self._streams:
            tiles = Tiles(quality, chroma)
            padded = self._sample.tiles(tiles.block)
            self._streams[key] = list(cores.spread(self._pool, tiles.encode, padded))
        return self._streams[key]


def choose_tiles(
    pixels: Pixels, recipe: Recipe, ready: dict[tuple[int, int], bytes] | None = None
) -> Encoding:
    """The candidate of few sample bytes whose sample SSIM holds the recipe's floor. ``ready``,
    when given, receives the pick's sample streams keyed by (column, row) on the level-0 tile
    grid: each is ``Tiles(quality, chroma).encode(pixel_tile(...))`` of that tile."""
    floor = recipe.min_quality
    assert floor is not None
    bands = pixels.shape[2]
    chosen, colourful = sample_spots(pixels, recipe.tile_size)
    sample = Sample(pixels, chosen, recipe.tile_size, colourful)
    trials = Trials(cores.pool(), sample, bands)
    chromas = ("grey",) if bands == 1 else CHROMAS
    best = _fewest_bytes(trials, chromas, floor)
    if best is None:  # nothing holds the floor (noise): the most faithful candidate
        best = trials.measure(QUALITIES[-1], chromas[-1])
    if ready is not None:
        picked = best.encoding
        assert picked.chroma is not None
        ready.update(zip(chosen, trials.streams(picked.quality, picked.chroma), strict=True))
    return best.encoding


def _fewest_bytes(trials: Trials, chromas: tuple[str, ...], floor: float) -> Found | None:
    """Each layout in turn; after the first, only qualities whose sample bytes stay under the
    pick so far are measured (:func:`_under`)."""
    best: Found | None = None
    for chroma in chromas:
        if best is None:
            # the first layout from its lowest quality; a later one (the first held nowhere)
            # from the top, where it holds if anywhere
            first = QUALITIES[0] if chroma == chromas[0] else QUALITIES[-1]
            found = lowest_holding(trials, chroma, floor, QUALITIES[-1], first)
        else:
            ceiling = _under(trials, chroma, best)
            found = None
            if ceiling is not None:
                found = lowest_holding(trials, chroma, floor, ceiling, ceiling)
        if found and (best is None or found.bytes < best.bytes):
            best = found
    return best


def _under(trials: Trials, chroma: str, best: Found) -> int | None:
    """About the highest quality below ``best``'s whose sample bytes as ``chroma`` stay under
    ``best``'s (a later layout at the pick's quality or above takes more bytes: 4:4:4 than
    4:2:0), or ``None`` when even the lowest quality's do not save :data:`SAVING` of them.
    Found by encoding alone (no decode, no SSIM): the lowest quality, then where its bytes
    reach ``best``'s if they rise with the quality as ``best``'s layout's do (their ratio is
    nearly constant), then, if that quality's bytes pass the bound, where ``log(bytes)``
    crosses it between the two."""
    picked = best.encoding
    assert picked.chroma is not None
    low, high = QUALITIES[0], picked.quality  # bytes under at low, not at high
    if low >= high or trials.size(low, chroma) >= best.bytes * (1 - SAVING):
        return None
    under = math.log(trials.size(low, chroma))
    rise = (math.log(best.bytes) - math.log(trials.size(low, picked.chroma))) / (high - low)
    while high - low > 1:
        step = (math.log(best.bytes) - under) / rise if rise > 0 else (high - low) / 2
        guess = min(high - 1, max(low + 1, low + math.floor(step)))
        if trials.size(guess, chroma) < best.bytes:
            return guess
        high = guess
        rise = (math.log(trials.size(high, chroma)) - under) / (high - low)
    return low


def lowest_holding(trials: Trials, chroma: str, floor: float, top: int, first: int) -> Found | None:
    """A quality of :data:`QUALITIES` up to ``top`` whose sample holds the floor (SSIM rises
    with the quality), at most :data:`STEPS_ABOVE` above the lowest that does as far as the
    trials tell, or ``None``. ``first`` is tried first (the likely answer); then each trial is
    where :func:`_crossing` puts the floor, within what is known."""
    qualities = [q for q in QUALITIES if q <= top]
    if not qualities:
        return None
    scores: dict[int, float] = {}
    quality = first
    while True:
        scores[quality] = trials.measure(quality, chroma).score
        high = min((q for q, s in scores.items() if s >= floor), default=None)
        low = max((q for q, s in scores.items() if s < floor), default=None)
        if low == qualities[-1]:
            return None
        if high is not None and (high == qualities[0] or (low is not None and high - low == 1)):
            return trials.measure(high, chroma)
        guess = math.ceil(_crossing(scores, floor, low, high) - 1e-9)
        if high is not None and guess >= high - STEPS_ABOVE:
            return trials.measure(high, chroma)
        bottom = qualities[0] if low is None else low + 1
        quality = min(qualities[-1] if high is None else high - 1, max(bottom, guess))


def _crossing(scores: dict[int, float], floor: float, low: int | None, high: int | None) -> float:
    """The quality where ``log(1 - SSIM)``, a straight line in ``log(100 - Q)``, crosses the
    floor: through the scores at ``low`` (the highest quality known to miss) and ``high`` (the
    lowest known to hold) when both are known, else at :data:`SLOPE` through the one known."""

    def point(quality: int) -> tuple[float, float]:
        return math.log(100 - quality), math.log(max(1e-6, 1 - scores[quality]))

    if low is not None and high is not None:
        (x0, y0), (x1, y1) = point(low), point(high)
        slope = (y1 - y0) / (x1 - x0)
        if slope <= 0:  # not rising as expected: halve the bracket
            return (low + high) / 2
    else:
        known = low if low is not None else high
        assert known is not None
        (x0, y0), slope = point(known), SLOPE
        below = [q for q in scores if q < known]
        if low is not None and below:  # two misses: their own slope, if gentler
            (x, y) = point(max(below))
            if y > y0:
                slope = min(slope, (y0 - y) / (x0 - x))
    return 100 - math.exp(x0 + (math.log(1 - floor) - y0) / slope)


class Sample:
    """The sample's tiles of the source, with their side of SSIM computed once: for each tile
    the pixels of its whole windows (:func:`_windowed`, a view: a float copy of every tile
    would fault in megabytes of fresh pages each conversion), and their window sums of ``x``
    and ``x^2``, all tiles' windows end to end."""

    __slots__ = ("_padded", "colourful", "pixels", "shapes", "size", "spots", "starts", "sx",
                 "sxx", "x")  # fmt: skip

    def __init__(
        self,
        pixels: Pixels,
        spots: list[tuple[int, int]],
        size: int,
        colourful: list[tuple[int, int]],
    ) -> None:
        self.pixels, self.spots, self.size = pixels, spots, size
        self.colourful = np.array([spot in colourful for spot in spots])
        self._padded: dict[int, list[Pixels]] = {}
        parts = [pixels[y * size : (y + 1) * size, x * size : (x + 1) * size] for x, y in spots]
        self.shapes = [part.shape[:2] for part in parts]  # smaller than the tile at the edges
        self.x = [_windowed(part) for part in parts]
        self.starts = np.cumsum([0, *(x.size // (WINDOW * WINDOW) for x in self.x)])
        sums = [_window_sums(_squares(x)) for x in self.x]
        self.sx = np.concatenate([s[0].ravel() for s in sums])
        self.sxx = np.concatenate([s[1].ravel() for s in sums])

    def tiles(self, block: int) -> list[Pixels]:
        """The sample's tiles as the writer pads them for JPEG blocks of ``block`` pixels."""
        if block not in self._padded:
            self._padded[block] = [pixel_tile(self.pixels, x, y, self.size, block)
                                   for x, y in self.spots]  # fmt: skip
        return self._padded[block]

    def scores(
        self, streams: list[bytes], pool: ThreadPoolExecutor | None
    ) -> tuple[float, float | None]:
        """The mean SSIM of the windows of all the sample's tiles, as ``streams`` decode, and
        of the colourful tiles' windows (``None`` when there are none apart)."""
        sums = list(cores.spread(pool, self._decoded_sums, range(len(streams)), streams))
        sy, syy, sxy = (np.concatenate([s[i].ravel() for s in sums]) for i in range(3))
        n = WINDOW * WINDOW
        values = ssim_windows(self.sx / n, sy / n, self.sxx / n, syy / n, sxy / n)
        # each tile's sum, in float64: float32 running sums of thousands of windows drift
        running = np.concatenate([[0.0], np.cumsum(values, dtype=np.float64)])
        per_tile = running[self.starts[1:]] - running[self.starts[:-1]]
        counts = np.diff(self.starts)
        whole = float(per_tile.sum() / max(1, counts.sum()))
        if not self.colourful.any():
            return whole, None
        colour = per_tile[self.colourful].sum() / max(1, counts[self.colourful].sum())
        return whole, float(colour)

    def _decoded_sums(self, index: int, stream: bytes) -> Any:
        """The window sums of ``y``, ``y^2`` and ``x*y`` of tile ``index``, where ``x`` is its
        windows of the source and ``y`` the same as ``stream`` decodes."""
        from imagecodecs import jpeg8_decode

        (height, width), x = self.shapes[index], self.x[index]
        decoded = jpeg8_decode(stream).reshape(self.size, self.size, x.shape[2])
        stack = _squares(_windowed(decoded[:height, :width]), 3)
        np.multiply(stack[0], x, out=stack[2])
        return _window_sums(stack)


def _windowed(part: Pixels) -> Pixels:
    """The pixels of ``part`` that whole 7x7 windows of the 7-pixel grid cover."""
    return part[: part.shape[0] // WINDOW * WINDOW, : part.shape[1] // WINDOW * WINDOW]


def _squares(values: Pixels, count: int = 2) -> Any:
    """``values`` and their squares as float32, stacked, with room for ``count - 2`` more."""
    stack = np.empty((count, *values.shape), np.float32)
    stack[0] = values
    np.multiply(stack[0], stack[0], out=stack[1])
    return stack


def _window_sums(values: Any) -> Any:
    """Sums over the 7x7 windows of a 7-pixel grid of a k x height x width x bands array
    whose sides are multiples of 7. (Float32 sums of 8-bit values and their products over 49
    pixels are exact.)"""
    k, height, width, bands = values.shape
    rows = values.reshape(k, height // WINDOW, WINDOW, width * bands).sum(axis=2)
    cells = rows.reshape(k, height // WINDOW, width // WINDOW, WINDOW, bands)
    # added one column of the window at a time: numpy's sum over an axis of 7 with 3 bands
    # inside runs five times slower
    total = cells[:, :, :, 0] + cells[:, :, :, 1]
    for column in range(2, WINDOW):
        total += cells[:, :, :, column]
    return total


def sample_spots(pixels: Pixels, tile: int) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """The sample's tiles (column, row on the pyramid's grid), and the colourful ones among
    them: every tile of an image of no more than half :data:`~ptif.convert.encoding.SAMPLE_TILES`
    whole tiles, edge tiles included, else as many as a third of its whole tiles, at least
    half :data:`~ptif.convert.encoding.SAMPLE_TILES` and at most all of them, spread over it
    up to its edges (:func:`~ptif.convert.encoding.spots`): a trial of a sample as large as
    the image costs three times the pyramid's level 0. On an image of more than
    :data:`SCOUT_TILES` tiles, the colourful ones are found on every :data:`SCOUT_STEP`-th
    pixel of every :data:`SCOUT_STEP`-th row."""
    import pyvips

    height, width, bands = pixels.shape
    columns, rows = width // tile, height // tile
    if columns * rows <= SAMPLE_TILES // 2:
        every = [(x, y) for y in range(-(-height // tile)) for x in range(-(-width // tile))]
        return every, []
    count = min(SAMPLE_TILES, max(SAMPLE_TILES // 2, columns * rows // 3))
    # the partial edge tiles too, when they hold whole windows: a scan's colour target or
    # ruler often lies along its right or bottom edge
    edges = (int(width % tile >= WINDOW), int(height % tile >= WINDOW))
    whole = pyvips.Image.new_from_memory(pixels.data, width, height, bands, "uchar")
    if columns * rows <= SCOUT_TILES:
        return spots(whole, tile, rows, count=count, edges=edges)
    step = max(1, min(SCOUT_STEP, tile // 4))
    small = np.ascontiguousarray(pixels[: rows * tile : step, : columns * tile : step])
    scout = pyvips.Image.new_from_memory(small.data, small.shape[1], small.shape[0], bands,
                                         "uchar")  # fmt: skip
    return spots(whole, tile, rows, scout, count, edges)
