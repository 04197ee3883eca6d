"""The memory and time budgets of a libvips conversion: checked from the header, then enforced.

libvips streams most decodes in a few rows of tiles, whatever the image's size: baseline JPEG,
PNG that is not interlaced, TIFF in strips or tiles. Some decodes cannot stream and hold the
whole image, or its coefficients, at once; a small file can declare a size that makes them
take tens of gigabytes within the pixel budget. :func:`check_memory` estimates, from the header
alone, what such a decode will hold and refuses (``too-large``) a source whose estimate passes
the conversion's memory budget:

- a progressive JPEG: libjpeg keeps every DCT coefficient until the last scan, 2 bytes a sample
  of each component at its own sampling, rounded up to whole MCUs;
- an interlaced PNG: decoded whole, width x height x bands x bytes a sample;
- GIF, WebP and AVIF/HEIF: decoded whole by their libraries (measured with libvips 8.18: about
  4, 8 and 16 bytes a pixel);
- a TIFF page read in big pieces: libvips reads a whole strip at once when the strip has planes
  of its own or YCbCr samples, and caches two rows of tiles across the page;
- a JPEG's metadata segments (APPn, COM): libjpeg saves each for libvips, which copies EXIF,
  XMP, ICC and IPTC twice more, so thousands of 64 KB segments on a tiny image hold three times
  the file's size;
- an EXIF orientation a stream cannot apply (3 to 8): libvips decodes the whole image for
  random access, into memory below ``VIPS_DISC_THRESHOLD`` (100 MB by default), above it into a
  temporary file in ``TMPDIR`` that it maps into memory: the file takes that much disk, and the
  mapping that much address space and page cache. A tiled TIFF is the exception: its tiles are
  read at random where they are.

:func:`check_jpeg`, before libvips reads the header, refuses (``too-complex``) a JPEG built to
cost more work than any encoder's output: more scans than :data:`MAX_JPEG_SCANS` (libjpeg
decodes every scan of a progressive file in one call that the deadline cannot interrupt, and
each walks the whole image again), or more metadata segments than
:data:`MAX_JPEG_METADATA_SEGMENTS`; and one whose metadata alone passes the memory budget.

:func:`check_density` refuses files that declare more pixels per byte than any real scan can
hold: their data is missing (truncated or forged headers decode as grey) or they are synthetic
images of one colour. :class:`Deadline` kills a libvips pipeline that runs past the time budget,
and :func:`out_of_memory` names an allocation failure for what it is.

Loaded by ``ptif convert``: plain classes, no typing at run time.
"""

from __future__ import annotations

import re
import threading
from pathlib import Path

import pyvips

from ptif.convert.headers import (
    JpegFrame,
    JpegMarkers,
    TiffPage,
    read_jpeg_markers,
    read_tiff_page,
)
from ptif.convert.limits import format_size
from ptif.errors import TooComplexError, TooLargeError, TooSlowError

#: Bytes of one sample of each libvips band format.
SAMPLE_BYTES = {
    "uchar": 1, "char": 1, "ushort": 2, "short": 2, "uint": 4, "int": 4, "float": 4,
    "double": 8, "complex": 8, "dpcomplex": 16,
}  # fmt: skip
#: Bytes a pixel that loaders which always decode whole images hold (measured, libvips 8.18:
#: GIF 10000x10000 peaked at 4.9, WebP 16000x16000 at 8.2 and AVIF 8000x8000 at 15.7 bytes a
#: pixel, the streaming pipeline's own 50-100 MB included).
WHOLE_IMAGE_BYTES = {"gifload": 4, "webpload": 8, "heifload": 16}
_WHOLE_IMAGE_NAMES = {"gifload": "GIF", "webpload": "WebP", "heifload": "HEIF and AVIF"}
#: Where each of those formats declares its size: a forged size is found only when the
#: decoded image comes out smaller, after the memory is taken, so a refusal names the field.
_SIZE_FIELDS = {
    "gifload": "its logical screen",
    "webpload": "its VP8X or VP8 header",
    "heifload": "its 'ispe' property, which the coded image need not match",
}
#: libvips reads a stripped TIFF line by line when its strips are taller than this, except for
#: separate planes and YCbCr (tiff2vips.c).
SCANLINE_STRIP_ROWS = 128
_YCBCR = 6
#: Orientations a streaming pipeline can apply; the others need random access.
STREAMABLE_ORIENTATIONS = (None, 1, 2)

#: Scans a JPEG may have. Encoders write few: libjpeg's progressive default 10 for colour
#: (jpeg_simple_progression: 6 for grey, 18 for CMYK), mozjpeg's searched scripts a dozen or
#: two, a sequential file one per component at most. A scan costs a walk over every 8x8 block of
#: its components, in one libjpeg call that libvips' kill switch cannot interrupt: 882 valid
#: scans of a 16000x16000 grey image (887 kB) took 60 s. At 100, the worst decode does ten
#: times the work of libjpeg's own progression of the largest image the memory budget admits.
MAX_JPEG_SCANS = 100
#: Metadata segments (APPn, COM) a JPEG may have. An ICC profile takes at most 255 APP2
#: segments, extended XMP a few dozen APP1; libjpeg allocates each saved segment on its own,
#: so a file of tiny segments costs more than its bytes.
MAX_JPEG_METADATA_SEGMENTS = 10_000
#: Metadata held in memory below this is not worth naming in a refusal.
_METADATA_WORTH_NAMING = 2**20

#: The density rule applies above this many pixels; below it a decode costs little either way.
DENSITY_FLOOR = 2**24
#: Pixels a file byte may declare. The densest real encodings of an all-white 20000x20000
#: image, made by libvips 8.18: JPEG 64 (optimised Huffman 171, greyscale 256, and Huffman
#: coding cannot pass 512: one bit per 8x8 block), PNG 936 (deflate cannot pass 1,032 bytes per
#: byte), deflate TIFF 897, LZW TIFF 759. Four times the densest of them.
MAX_PIXELS_PER_BYTE = 4096
#: The same for 1-bit images: fax coding (CCITT G4) spends one bit on a white row, so an
#: all-white 20000x20000 page holds 43,048 pixels a byte, and wider ones more.
MAX_BILEVEL_PIXELS_PER_BYTE = 2**18

_OUT_OF_MEMORY = re.compile(
    r"out of memory|insufficient memory|memory allocation|cannot allocate memory"
    r"|not enough memory|failed to allocate|std::bad_alloc",
    re.IGNORECASE,
)


class Cost:
    """What one part of a decode holds at once, and why."""

    __slots__ = ("bytes", "reason")

    def __init__(self, size: float, reason: str) -> None:
        self.bytes = int(size)
        self.reason = reason


def check_jpeg(path: Path, budget: int) -> JpegMarkers | None:
    """Before libvips reads a JPEG's header: refuse a file with more scans or metadata segments
    than encoders write (``too-complex``), or whose metadata segments alone would hold more than
    ``budget`` (``too-large``: libjpeg saves them all while it reads the header). What the walk
    found, for :func:`check_memory`; ``None`` if the file is no JPEG."""
    jpeg = read_jpeg_markers(path, MAX_JPEG_SCANS, MAX_JPEG_METADATA_SEGMENTS)
    if jpeg is None:
        return None
    # The walk stops at the first scan or segment past the limit: the counts say "more than".
    if jpeg.scans > MAX_JPEG_SCANS:
        size = f" of {jpeg.frame.width}x{jpeg.frame.height}" if jpeg.frame else ""
        raise TooComplexError(
            f"{path}: a JPEG{size} in more than {MAX_JPEG_SCANS} scans; encoders write at most "
            "a few dozen (libjpeg's progressive default: 10). Each scan makes the decoder walk "
            "the whole image again, in one call the time limit cannot interrupt; re-encode the "
            "image (as a baseline JPEG, or with an ordinary encoder's progression)"
        )
    if jpeg.metadata_segments > MAX_JPEG_METADATA_SEGMENTS:
        raise TooComplexError(
            f"{path}: a JPEG with more than {MAX_JPEG_METADATA_SEGMENTS:,} metadata segments "
            "(APPn, COM); cameras and editors write a few hundred at most, and each is kept in "
            "memory on its own; re-encode the image without its metadata, or with the "
            "metadata that matters"
        )
    _refuse_over_budget(path, [metadata_cost(jpeg)], budget)
    return jpeg


def check_memory(
    path: Path,
    image: pyvips.Image,
    loader: str,
    page: int,
    budget: int,
    jpeg: JpegMarkers | None = None,
) -> None:
    """Refuse (``too-large``) a source whose decode would hold more than ``budget`` bytes;
    ``jpeg``: what :func:`~ptif.convert.headers.read_jpeg_markers` found in a JPEG source."""
    _refuse_over_budget(path, decode_costs(path, image, loader, page, jpeg), budget)


def _refuse_over_budget(path: Path, costs: list[Cost], budget: int) -> None:
    total = sum(cost.bytes for cost in costs)
    if total > budget:
        reasons = "; ".join(cost.reason for cost in costs if cost.reason)
        raise TooLargeError(
            f"{path}: decoding it would hold about {format_size(total)} in memory ({reasons}), "
            f"over the budget of {format_size(budget)} for one conversion; if the image is "
            "genuine, raise the budget with --max-memory or PTIF_MAX_MEMORY"
        )


def decode_costs(
    path: Path, image: pyvips.Image, loader: str, page: int, jpeg: JpegMarkers | None = None
) -> list[Cost]:
    """What the decode of ``image`` holds beyond a streaming pipeline's few rows of tiles."""
    tiff = read_tiff_page(path, page - 1) if loader == "tiffload" else None
    if loader == "jpegload" and jpeg is None:
        jpeg = read_jpeg_markers(path, MAX_JPEG_SCANS, MAX_JPEG_METADATA_SEGMENTS)
    costs = [_loader_cost(path, image, loader, tiff, jpeg)]
    if jpeg is not None and jpeg.kept_bytes:
        costs.append(metadata_cost(jpeg))
    if needs_random_access(image) and not (tiff and tiff.tiled):
        orientation = image.get("orientation")
        costs.append(
            Cost(
                decoded_bytes(image),
                f"EXIF orientation {orientation} needs the whole decoded image, "
                f"{format_size(decoded_bytes(image))}, which libvips keeps in memory or maps "
                "from a temporary file",
            )
        )
    return [cost for cost in costs if cost.bytes]


def needs_random_access(image: pyvips.Image) -> bool:
    """Whether the image's orientation can only be applied with the whole image at hand."""
    orientation = image.get("orientation") if image.get_typeof("orientation") else None
    return orientation not in STREAMABLE_ORIENTATIONS


def decoded_bytes(image: pyvips.Image) -> int:
    return int(image.width * image.height * image.bands) * SAMPLE_BYTES.get(image.format, 8)


def metadata_cost(jpeg: JpegMarkers) -> Cost:
    """What a JPEG's saved metadata segments hold (named in a refusal only when it matters)."""
    if jpeg.kept_bytes < _METADATA_WORTH_NAMING:
        return Cost(jpeg.kept_bytes, "")
    return Cost(
        jpeg.kept_bytes,
        f"its {jpeg.metadata_segments:,} APPn and COM metadata segments are kept in memory, "
        f"EXIF, XMP, ICC and IPTC three times over: {format_size(jpeg.kept_bytes)}",
    )


def _loader_cost(
    path: Path, image: pyvips.Image, loader: str, tiff: TiffPage | None, jpeg: JpegMarkers | None
) -> Cost:
    size = f"{image.width}x{image.height}"
    if loader == "jpegload" and _flag(image, "jpeg-multiscan"):
        return Cost(
            jpeg_coefficient_bytes(image, jpeg.frame if jpeg else None),
            f"a progressive JPEG of {size} keeps all its DCT coefficients until its last scan",
        )
    if loader == "pngload" and _flag(image, "interlaced"):
        return Cost(decoded_bytes(image), f"an interlaced PNG of {size} is decoded whole")
    if loader in WHOLE_IMAGE_BYTES:
        scale = 2 if _bits(image) > 8 else 1
        return Cost(
            image.width * image.height * WHOLE_IMAGE_BYTES[loader] * scale,
            f"{_WHOLE_IMAGE_NAMES[loader]} images are decoded whole, at the size the file "
            f"declares in {_SIZE_FIELDS[loader]}: {size}, in {_file_size(path):,} bytes",
        )
    if tiff is not None:
        return tiff_read_cost(image, tiff)
    return Cost(0, "")


def _file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def jpeg_coefficient_bytes(image: pyvips.Image, frame: JpegFrame | None) -> int:
    """What libjpeg's whole-image coefficient arrays take: 64 coefficients of 2 bytes for each
    8x8 block of each component, the blocks counted in whole MCUs (jdcoefct.c)."""
    if frame is None:  # not parsed: assume every component at full resolution
        return int(image.width * image.height * image.bands) * 2
    h_max = max(h for h, _ in frame.sampling)
    v_max = max(v for _, v in frame.sampling)
    total = 0
    for h, v in frame.sampling:
        blocks_across = _round_up(-(-frame.width * h // (8 * h_max)), h)
        blocks_down = _round_up(-(-frame.height * v // (8 * v_max)), v)
        total += blocks_across * blocks_down * 128
    return total


def tiff_read_cost(image: pyvips.Image, tiff: TiffPage) -> Cost:
    """The pieces libvips holds while it reads a TIFF page: two rows of tiles across the page,
    or one strip (as decoded; with separate planes, also the plane being read)."""
    pixel = image.bands * SAMPLE_BYTES.get(image.format, 8)
    if tiff.tiled:
        across = -(-image.width // tiff.tile_width)
        size = 2 * across * tiff.tile_width * tiff.tile_height * pixel
        return Cost(size, f"two rows of its {tiff.tile_width}x{tiff.tile_height} tiles")
    rows = max(1, min(tiff.rows_per_strip, image.height))
    if rows > SCANLINE_STRIP_ROWS and not tiff.separate and tiff.photometric != _YCBCR:
        return Cost(image.width * pixel, "")  # read line by line
    size = rows * image.width * pixel * (1.5 if tiff.separate else 1)
    return Cost(size, f"a strip of {rows} rows of {image.width} pixels is decoded at once")


def _round_up(value: int, step: int) -> int:
    return -(-value // step) * step


def _flag(image: pyvips.Image, name: str) -> bool:
    return bool(image.get_typeof(name) and image.get(name))


def _bits(image: pyvips.Image) -> int:
    if image.get_typeof("bits-per-sample"):
        return int(image.get("bits-per-sample"))
    return 8 * SAMPLE_BYTES.get(image.format, 1)


def check_density(path: Path, image: pyvips.Image) -> None:
    """Refuse (``too-large``) a file that declares more pixels than its bytes can hold."""
    pixels = image.width * image.height
    if pixels <= DENSITY_FLOOR:
        return
    size = max(1, path.stat().st_size)
    limit = MAX_BILEVEL_PIXELS_PER_BYTE if _bits(image) == 1 else MAX_PIXELS_PER_BYTE
    if pixels > limit * size:
        raise TooLargeError(
            f"{path}: declares {image.width}x{image.height} pixels in {size:,} bytes, "
            f"{pixels / size:,.0f} pixels a byte; real images hold at most {limit:,} (an "
            "all-white JPEG holds 64, an all-white PNG 936), so its data is missing (a "
            "truncated or forged header) or it is a synthetic image of one colour; "
            "upload the complete file"
        )


def ran_out_of_memory(detail: str) -> bool:
    """Whether a libvips (or libjpeg, libspng, libtiff, libheif...) message says memory ran out."""
    return bool(_OUT_OF_MEMORY.search(detail))


def out_of_memory(path: Path, detail: str, budget: int) -> TooLargeError:
    """The ``too-large`` error of a conversion that ran out of memory (``detail`` says how)."""
    return TooLargeError(
        f"{path}: ran out of memory while converting it, within a budget of "
        f"{format_size(budget)} ({' '.join(detail.split())[:200] or 'MemoryError'}); the "
        "machine or container had less free memory than the decode needed: run fewer "
        "workers, give them more memory, or lower --max-memory (PTIF_MAX_MEMORY) so that such "
        "images are refused from their header"
    )


def too_slow(path: Path, limit: float, elapsed: float) -> TooSlowError:
    """The ``too-slow`` error of a conversion stopped after ``elapsed`` seconds: a decode that
    libvips cannot interrupt ends past the ``limit``, and the message says by how much."""
    return TooSlowError(
        f"{path}: stopped after {elapsed:.1f} s, over the time limit of {limit:g} s for one "
        "conversion; if the image is genuine, raise the limit with --max-seconds or "
        "PTIF_MAX_SECONDS"
    )


class Deadline:
    """Kill a libvips pipeline if it is still running at a time (``time.perf_counter``).

    libvips checks an image's kill flag after each piece of work it computes, in every thread,
    and fails the whole evaluation once it is set. A timer thread sets it when the time is up:
    nothing runs per tile, so the hot path pays nothing.
    """

    __slots__ = ("_image", "_timer", "expired")

    def __init__(self, image: pyvips.Image, seconds: float) -> None:
        self._image: pyvips.Image | None = image
        self.expired = False
        self._timer = threading.Timer(max(0.0, seconds), self._expire)
        self._timer.daemon = True

    def _expire(self) -> None:
        self.expired = True
        if self._image is not None:
            self._image.set_kill(True)

    def __enter__(self) -> Deadline:
        self._timer.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._timer.cancel()
        self._timer.join()  # no thread outlives the conversion
        # The timer holds this object (its callback) and this object the image: drop the image
        # now, not at the next garbage collection, so a decoder's memory goes with it.
        self._image = None
