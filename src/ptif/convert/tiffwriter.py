"""ptif's own pyramid writer, for 8-bit grey or RGB images held in memory.

libvips' TIFF writer has a cliff at Q90: below it JPEG tiles are YCbCr 4:2:0, at 90 and above
they are RGB JPEG, about three times the bytes, with no colour decorrelation at all. 4:2:0
smears fine colour detail (stars, thin coloured lines on a map), so the quality floor
(:mod:`ptif.convert.encoding`) needs YCbCr 4:4:4 at any quality too. This module writes the
pyramid with that choice: each tile is encoded by libjpeg-turbo (imagecodecs' ``jpeg8_encode``)
on the conversion's threads (:func:`~ptif.convert.cores.threads`), and tifffile lays the file
out.

The file is the one libvips would write but for the tiles' bytes:

- the levels are libvips' own: each is the 2x2 mean of the one above, rounded as libvips rounds
  it (``(a + b + c + d + 2) >> 2``), sizes halved and rounded down down to one tile
  (:func:`~ptif.convert.pyramid.expected_levels`);
- each level's directory has what libvips writes: NewSubfileType reduced for levels below the
  first, the recipe's tile size, Photometric YCbCr with its YCbCrSubsampling (2,2 or 1,1) or
  MinIsBlack for grey, the ImageDescription, ICC profile, XMP and IPTC that
  :func:`~ptif.convert.embedded.embed` put on the image, X/YResolution in pixels per inch,
  Orientation, and BigTIFF when :func:`~ptif.convert.pyramid.needs_bigtiff` says so;
- the quantisation tables and libjpeg's standard Huffman tables, the same in every tile, sit
  once per level in JPEGTables, as libtiff writes them; each tile is an abbreviated JPEG stream
  (start of image, frame header, scan). Tables optimised per tile would take the encoding
  CPU twice over for a few percent fewer bytes: the quality bench's ten images take 2.9% more
  bytes without them (2.556 MB to 2.629 MB; 1 to 8% an image), its grainy 48-megapixel photo
  6.4%.

A partial tile at the right or bottom edge repeats its last column and row a little past the
edge, up to the JPEG block boundary (16 pixels for 4:2:0, 8 otherwise), then zeros: chroma
upsampling then finds no black to blend into the edge pixels, as it does in libvips' tiles,
for a few bytes.

Images too large to hold (:data:`~ptif.convert.encoding.HOLD_BYTES`), EPS renderings (which
stream from their file), images not 8-bit with 1 or 3 bands, and recipes without a quality
floor (explicit ``--quality`` or ``--compression``, ``marble``) are written by libvips
(:mod:`ptif.convert.engine`).
"""

from __future__ import annotations

from collections import deque
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ptif.convert import cores
from ptif.errors import PtifError

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without loading typing on every run
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator, Mapping
    from pathlib import Path
    from typing import Any, Final

    from numpy.typing import NDArray

    Pixels = NDArray[np.uint8]

#: The JPEG chroma layouts: YCbCr 4:2:0, YCbCr 4:4:4, or one grey channel.
SUBSAMPLING = {"420": (2, 2), "444": (1, 1), "grey": None}
#: Rows of the smaller level computed by one task when a level is halved.
_HALVE_ROWS = 256
#: Tiles encoded by one task.
_CHUNK_TILES = 16
_SOI, _EOI = b"\xff\xd8", b"\xff\xd9"
_APP0, _DQT, _DHT, _SOS = 0xE0, 0xDB, 0xC4, 0xDA
#: TIFF tags written beside tifffile's own: Orientation, XMP, IPTC (as libvips writes them).
_ORIENTATION, _XMP, _IPTC = 274, 700, 33723


class Expired(PtifError):
    """The conversion's time ran out while its pyramid was being written."""


class Tiles:
    """How each tile is encoded: JPEG ``quality`` with ``chroma`` (``420``, ``444``, ``grey``)."""

    __slots__ = ("chroma", "quality")

    chroma: Final[str]
    quality: Final[int]

    def __init__(self, quality: int, chroma: str) -> None:
        self.quality = quality
        self.chroma = chroma

    @property
    def block(self) -> int:
        """The JPEG block (MCU) side, in pixels."""
        return 16 if self.chroma == "420" else 8

    def encode(self, tile: Pixels) -> bytes:
        """One whole tile (``tile_size`` square, padded) as a complete JPEG stream, with
        libjpeg's standard Huffman tables: what the pyramid's tiles hold, and what a trial of
        the floor measures (tables optimised per tile: a few percent fewer bytes, twice the
        CPU)."""
        from imagecodecs import jpeg8_encode

        if self.chroma == "grey":
            return bytes(jpeg8_encode(tile[..., 0], level=self.quality, optimize=False))
        return bytes(
            jpeg8_encode(
                tile,
                level=self.quality,
                colorspace="RGB",
                outcolorspace="YCBCR",
                subsampling=SUBSAMPLING[self.chroma],
                optimize=False,
            )
        )


class Embedded:
    """What each level's directory says besides its pixels (see :mod:`ptif.convert.embedded`)."""

    __slots__ = ("description", "dpi", "icc", "iptc", "xmp")

    def __init__(
        self, description: str, icc: bytes, dpi: float, xmp: bytes | None, iptc: bytes | None
    ) -> None:
        self.description = description
        self.icc = icc
        self.dpi = dpi
        self.xmp = xmp
        self.iptc = iptc

    def extratags(self) -> list[tuple[int, int, int, Any, bool]]:
        tags: list[tuple[int, int, int, Any, bool]] = [(_ORIENTATION, 3, 1, 1, True)]
        if self.xmp:
            tags.append((_XMP, 1, len(self.xmp), self.xmp, True))
        if self.iptc:
            # libtiff (and so libvips) keeps IPTC as 32-bit words: the block padded to four bytes.
            padded = self.iptc + b"\0" * (-len(self.iptc) % 4)
            tags.append((_IPTC, 4, len(padded) // 4, np.frombuffer(padded, "<u4"), True))
        return tags


def pixel_tile(pixels: Pixels, x: int, y: int, size: int, block: int) -> Pixels:
    """The tile at column ``x``, row ``y`` of the grid, padded to ``size`` square: a partial
    tile repeats its last column and row two pixels on and up to the next block boundary, then
    zeros. (A decoder's smooth chroma upsampling blends an edge pixel's chroma with the next
    sample's, two pixels on: black there would darken the edge.) A whole tile is a view of
    ``pixels``, not a copy: the encoder reads rows at any stride."""
    part = pixels[y * size : (y + 1) * size, x * size : (x + 1) * size]
    height, width = part.shape[:2]
    if (height, width) == (size, size):
        return part
    tile = np.zeros((size, size, pixels.shape[2]), np.uint8)
    tile[:height, :width] = part
    right = min(size, -(-(width + 2) // block) * block)
    bottom = min(size, -(-(height + 2) // block) * block)
    tile[:height, width:right] = part[:, -1:]
    tile[height:bottom, :right] = tile[height - 1 : height, :right]
    return tile


def halve(pixels: Pixels, pool: ThreadPoolExecutor | None) -> Pixels:
    """The next level down, as libvips' pyramid makes it: the rounded mean of each 2x2 block,
    sides halved and rounded down. Pillow's ``reduce(2)`` computes exactly that mean, at a
    third of numpy's CPU, on slabs of whole rows (contiguous: no copy to hand them over);
    it rounds an odd side up, so the last column of an odd width is cut off."""
    from PIL import Image

    height, width, bands = pixels.shape[0] // 2, pixels.shape[1] // 2, pixels.shape[2]
    mode = "RGB" if bands == 3 else "L"
    smaller = np.empty((height, width, bands), np.uint8)

    def rows(top: int) -> None:
        bottom = min(height, top + _HALVE_ROWS)
        slab = np.ascontiguousarray(pixels[2 * top : 2 * bottom])
        size = (pixels.shape[1], 2 * (bottom - top))
        reduced = Image.frombuffer(mode, size, slab, "raw", mode, 0, 1).reduce(2)
        done = np.frombuffer(reduced.tobytes(), np.uint8).reshape(bottom - top, -1, bands)
        smaller[top:bottom] = done[:, :width]

    list(cores.spread(pool, rows, range(0, height, _HALVE_ROWS)))
    return smaller


class Shared:
    """What every tile stream of one encoding shares. With standard Huffman tables,
    libjpeg-turbo writes the same markers before the scan of every tile of one quality and
    chroma: JFIF header, quantisation tables, frame header, Huffman tables. The tables sit once
    in each level's JPEGTables (as libtiff writes them), and each tile is an abbreviated stream:
    start of image, frame header, then its own scan."""

    __slots__ = ("head", "prefix", "tables")

    head: Final[bytes]
    prefix: Final[bytes]
    tables: Final[bytes]

    def __init__(self, stream: bytes) -> None:
        tables, head, at = [], [_SOI], 2
        while stream[at + 1] != _SOS:
            end = at + 2 + int.from_bytes(stream[at + 2 : at + 4], "big")
            if stream[at + 1] in (_DQT, _DHT):
                tables.append(stream[at:end])
            elif stream[at + 1] != _APP0:  # Photometric says what the channels are
                head.append(stream[at:end])
            at = end
        #: Everything before the scan, as the encoder writes it.
        self.prefix = stream[:at]
        #: The JPEGTables tag: quantisation and Huffman tables between SOI and EOI.
        self.tables = _SOI + b"".join(tables) + _EOI
        #: What a tile keeps of the prefix: SOI and the frame header.
        self.head = b"".join(head)

    def abbreviated(self, stream: bytes) -> bytes | None:
        """``stream`` as a tile of the level holds it, or ``None`` when its tables (or any
        other marker before the scan) differ from the shared ones."""
        if not stream.startswith(self.prefix):
            return None
        return b"".join((self.head, memoryview(stream)[len(self.prefix) :]))


def in_order(
    pool: ThreadPoolExecutor | None,
    work: Callable[[Any], list[bytes]],
    items: Iterable[Any],
    check: Callable[[], None],
) -> Iterator[bytes]:
    """The bytes ``work`` returns for each item, in the items' order, two tasks ahead per
    thread: every thread encodes while the file is written, and little is held at once. Without
    a pool, each item's work is done as it is needed. ``check`` runs before each task is
    queued (it raises when the time is up)."""
    if pool is None:
        for item in items:
            check()
            yield from work(item)
        return
    ahead = 2 * (pool._max_workers or 1)
    pending: deque[Any] = deque()
    try:
        for item in items:
            check()
            pending.append(pool.submit(work, item))
            if len(pending) >= ahead:
                yield from pending.popleft().result()
        while pending:
            yield from pending.popleft().result()
    finally:  # stopped (time up, a full disk): the shared threads drop what is queued
        for future in pending:
            future.cancel()


def write_pyramid(
    path: Path,
    pixels: Pixels,
    levels: int,
    tile_size: int,
    tiles: Tiles,
    embedded: Embedded,
    *,
    bigtiff: bool,
    deadline: float | None = None,
    ready: Mapping[tuple[int, int], bytes] | None = None,
) -> None:
    """Write ``levels`` levels of ``pixels`` (height x width x bands, C order) to ``path``.

    ``ready`` holds tiles of the first level already encoded, keyed by (column, row): complete
    JPEG streams as :meth:`Tiles.encode` returns them for :func:`pixel_tile`. Each is
    written as it is when its tables are the level's (the same quality and chroma), else the
    tile is encoded again.

    Raises :class:`Expired` once ``time.perf_counter()`` passes ``deadline``, and ``OSError``
    when the file cannot be written (a full disk...)."""
    import time

    import tifffile

    def check() -> None:
        if deadline is not None and time.perf_counter() > deadline:
            raise Expired("the conversion's time ran out while its pyramid was being written")

    shared = Shared(tiles.encode(np.zeros((tile_size, tile_size, pixels.shape[2]), np.uint8)))
    pool = cores.pool()
    with tifffile.TiffWriter(path, bigtiff=bigtiff) as tif:
        level = pixels
        for number in range(levels):
            if number:
                check()
                level = halve(level, pool)
            chunks = _Level(level, tile_size, tiles, shared, None if number else ready)
            options = _directory(level.shape, number, tiles, shared.tables, embedded)
            tif.write(in_order(pool, chunks.encoded, chunks.starts(), check),
                      tile=(tile_size, tile_size), **options)  # fmt: skip


class _Level:
    """One level's tiles, encoded :data:`_CHUNK_TILES` at a time (one task each) in the order
    of the file: row by row, left to right."""

    __slots__ = ("columns", "count", "pixels", "ready", "shared", "size", "tiles")

    def __init__(
        self,
        pixels: Pixels,
        size: int,
        tiles: Tiles,
        shared: Shared,
        ready: Mapping[tuple[int, int], bytes] | None,
    ) -> None:
        self.pixels, self.size, self.tiles, self.shared, self.ready = (
            pixels, size, tiles, shared, ready)  # fmt: skip
        self.columns = -(-pixels.shape[1] // size)
        self.count = self.columns * -(-pixels.shape[0] // size)

    def starts(self) -> range:
        return range(0, self.count, _CHUNK_TILES)

    def encoded(self, start: int) -> list[bytes]:
        """The tiles from number ``start`` on, as the file holds them."""
        end, columns = min(self.count, start + _CHUNK_TILES), self.columns
        return [self.tile(number % columns, number // columns) for number in range(start, end)]

    def tile(self, x: int, y: int) -> bytes:
        stream = self.ready.get((x, y)) if self.ready else None
        if stream is not None:
            kept = self.shared.abbreviated(stream)
            if kept is not None:
                return kept
        stream = self.tiles.encode(pixel_tile(self.pixels, x, y, self.size, self.tiles.block))
        kept = self.shared.abbreviated(stream)
        # Never seen (the encoder writes the same markers for the same settings), and still
        # valid: a tile's own tables take the place of the JPEGTables'.
        return stream if kept is None else kept


def _directory(
    shape: tuple[int, ...], number: int, tiles: Tiles, tables: bytes, embedded: Embedded
) -> dict[str, Any]:
    """tifffile's arguments for level ``number``'s directory, as libvips writes it."""
    height, width, bands = shape
    return {
        "shape": (height, width, bands) if bands == 3 else (height, width),
        "dtype": np.uint8,
        "photometric": "rgb" if bands == 3 else "minisblack",  # rgb: stored as YCbCr
        "compression": "jpeg",
        "subsampling": SUBSAMPLING[tiles.chroma],
        "jpegtables": tables,
        "subfiletype": 1 if number else None,
        "description": embedded.description,
        "iccprofile": embedded.icc,
        "resolution": (embedded.dpi, embedded.dpi),
        "resolutionunit": "INCH",
        "extratags": embedded.extratags(),
        "software": False,
        "metadata": None,
    }
