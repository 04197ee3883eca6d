"""What a file's header declares that libvips does not report: a JPEG's frame, scans and
metadata segments, a TIFF page's layout.

libvips tells width, height, bands, sample format, and whether a JPEG is progressive or a PNG
interlaced. How much memory its decode will hold also depends on the JPEG's sampling factors,
on the metadata segments libjpeg keeps, and on how a TIFF page is cut into strips or tiles; how
long it takes, on how many scans a progressive JPEG makes libjpeg walk. libvips keeps those to
itself; these small readers get them without decoding anything. They never raise for a damaged
or unusual file: they return ``None`` (or what they found before the damage) and the caller
falls back to a cautious guess.

Loaded by ``ptif convert``: plain classes, no typing at run time.
"""

from __future__ import annotations

import re
import struct
from pathlib import Path

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without loading typing on every run
if TYPE_CHECKING:
    from typing import BinaryIO, Final

#: Markers that start a JPEG frame (SOF0-SOF15 less DHT, JPG and DAC).
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_PROGRESSIVE = frozenset({0xC2, 0xC6, 0xCA, 0xCE})
#: Markers without a length: TEM, RST0-7, SOI, EOI.
_STANDALONE = frozenset({0x01, *range(0xD0, 0xDA)})
_SOS = 0xDA
_EOI = 0xD9
#: APP1 (EXIF, XMP), APP2 (ICC) and APP13 (IPTC): libvips keeps these three times over.
_KEPT_THRICE = frozenset({0xE1, 0xE2, 0xED})
_METADATA = frozenset({*range(0xE0, 0xF0), 0xFE})  # APP0-APP15, COM
#: A marker: 0xFF (and fill bytes), then a code that is not a stuffed zero or a restart.
#: Entropy-coded data holds no other (the encoder stuffs a zero after each 0xFF it writes).
_MARKER = re.compile(rb"\xff([^\x00\xd0-\xd7\xff])")
#: Segments read before giving up on finding the frame (EXIF, ICC and XMP come first).
MAX_SEGMENTS = 1000
#: TIFF pages walked to reach the one asked for; more is a loop or a hostile file.
MAX_PAGES = 100_000


class JpegFrame:
    """A JPEG's frame header: its coding process and each component's sampling factors."""

    __slots__ = ("arithmetic", "height", "progressive", "sampling", "width")

    width: Final[int]
    height: Final[int]
    progressive: Final[bool]
    arithmetic: Final[bool]
    #: (horizontal, vertical) sampling factor of each component.
    sampling: Final[tuple[tuple[int, int], ...]]

    def __init__(
        self, marker: int, width: int, height: int, sampling: tuple[tuple[int, int], ...]
    ) -> None:
        self.width = width
        self.height = height
        self.progressive = marker in _PROGRESSIVE
        self.arithmetic = marker >= 0xC9
        self.sampling = sampling


def read_jpeg_frame(path: Path) -> JpegFrame | None:
    """The frame header (SOFn) of a JPEG file, or ``None`` if there is none before the scan."""
    try:
        with open(path, "rb") as handle:
            if handle.read(2) != b"\xff\xd8":
                return None
            return _find_frame(handle)
    except (OSError, struct.error, ValueError):
        return None


def _find_frame(handle: BinaryIO) -> JpegFrame | None:
    for _ in range(MAX_SEGMENTS):
        marker = _next_marker(handle)
        if marker is None or marker == _SOS:
            return None
        if marker in _STANDALONE:
            continue
        (length,) = struct.unpack(">H", handle.read(2))
        if marker in _SOF:
            return _frame(marker, handle.read(length - 2))
        handle.seek(length - 2, 1)
    return None


def _next_marker(handle: BinaryIO) -> int | None:
    """The next marker's code, skipping fill bytes; ``None`` at the end of the file."""
    byte = handle.read(1)
    while byte and byte != b"\xff":
        byte = handle.read(1)
    while byte == b"\xff":
        byte = handle.read(1)
    return byte[0] if byte else None


def _frame(marker: int, body: bytes) -> JpegFrame | None:
    _, height, width, count = struct.unpack(">BHHB", body[:6])
    factors = body[6 : 6 + 3 * count]
    if count < 1 or len(factors) < 3 * count:
        return None
    sampling = tuple((factors[3 * i + 1] >> 4, factors[3 * i + 1] & 15) for i in range(count))
    if any(not 1 <= h <= 4 or not 1 <= v <= 4 for h, v in sampling):
        return None
    return JpegFrame(marker, width, height, sampling)


class JpegMarkers:
    """What a walk of a JPEG's markers, from its start to its end (EOI), found."""

    __slots__ = ("frame", "kept_bytes", "metadata_segments", "scans", "stopped")

    def __init__(self) -> None:
        self.frame: JpegFrame | None = None
        #: Start-of-scan markers: libjpeg walks every block of the scan's components again.
        self.scans = 0
        #: APPn and COM segments, which libjpeg saves for libvips.
        self.metadata_segments = 0
        #: What those segments hold in memory once read: their bytes, three times over for
        #: APP1, APP2 and APP13 (libjpeg's copy, libvips' and the image's metadata).
        self.kept_bytes = 0
        #: The walk stopped at a cap before the end: the counts are lower bounds.
        self.stopped = False


def read_jpeg_markers(path: Path, max_scans: int, max_segments: int) -> JpegMarkers | None:
    """Walk every marker of a JPEG file, skipping segments by their length and entropy-coded
    data by its byte stuffing; stop after ``max_scans`` scans or ``max_segments`` metadata
    segments (the walk is then ``stopped``). ``None`` if the file is no JPEG.

    The file is read in pieces of at most :data:`WINDOW` bytes, never mapped: a walk through
    a big scan holds one piece at a time."""
    try:
        with open(path, "rb", buffering=0) as handle:
            if handle.read(2) != b"\xff\xd8":
                return None
            return _walk(handle, max_scans, max_segments)
    except (OSError, struct.error, ValueError):
        return None


def _walk(handle: BinaryIO, max_scans: int, max_segments: int) -> JpegMarkers:
    found = JpegMarkers()
    pieces = _Pieces(handle)
    position = 2
    while (next_marker := pieces.find_marker(position)) is not None:
        marker, position = next_marker
        if marker == _EOI:
            break
        if marker in _STANDALONE:
            continue
        handle.seek(position)
        (length,) = struct.unpack(">H", handle.read(2))
        if length < 2:
            break
        if marker in _SOF and found.frame is None:
            found.frame = _frame(marker, handle.read(length - 2))
        elif marker == _SOS:
            found.scans += 1
        elif marker in _METADATA:
            found.metadata_segments += 1
            found.kept_bytes += length * (3 if marker in _KEPT_THRICE else 1)
        if found.scans > max_scans or found.metadata_segments > max_segments:
            found.stopped = True
            break
        position += length
    return found


#: The most a marker walk reads at once.
WINDOW = 1 << 24
#: What it reads first: segments follow each other, so the next marker is usually right there.
_FIRST_LOOK = 4096


class _Pieces:
    """The file read one piece at a time, the last piece kept for the next search."""

    __slots__ = ("_at_end", "_handle", "_piece", "_start")

    def __init__(self, handle: BinaryIO) -> None:
        self._handle = handle
        self._start = 0
        self._piece = b""
        self._at_end = False

    def find_marker(self, position: int) -> tuple[int, int] | None:
        """The next marker's code at or after ``position`` and where its segment starts."""
        size = _FIRST_LOOK
        while True:
            if not self._start <= position < self._start + len(self._piece):
                self._load(position, size)
            match = _MARKER.search(self._piece, position - self._start)
            if match:
                return match.group(1)[0], self._start + match.end()
            if self._at_end:
                return None
            # A 0xFF at the end of the piece may start a marker: look again from there, in a
            # piece read from there (so the next search moves on, by a window at least).
            position = self._start + len(self._piece) - 1
            self._piece = b""
            size = WINDOW

    def _load(self, position: int, size: int) -> None:
        self._handle.seek(position)
        self._piece = self._handle.read(size)
        self._start = position
        self._at_end = len(self._piece) < size


class TiffPage:
    """How one TIFF page is stored: in strips of some rows, or in tiles, planes together or not."""

    __slots__ = ("photometric", "rows_per_strip", "separate", "tile_height", "tile_width")

    #: Tile size; 0 for a page stored in strips.
    tile_width: Final[int]
    tile_height: Final[int]
    #: Rows in each strip (for a striped page; the TIFF default is the whole height).
    rows_per_strip: Final[int]
    #: PlanarConfiguration 2: each sample (band) stored in strips or tiles of its own.
    separate: Final[bool]
    photometric: Final[int]

    def __init__(self, fields: dict[int, int]) -> None:
        self.tile_width = fields.get(_TILE_WIDTH, 0)
        self.tile_height = fields.get(_TILE_LENGTH, 0)
        self.rows_per_strip = fields.get(_ROWS_PER_STRIP, 2**32 - 1)
        self.separate = fields.get(_PLANAR, 1) == 2
        self.photometric = fields.get(_PHOTOMETRIC, -1)

    @property
    def tiled(self) -> bool:
        return self.tile_width > 0 and self.tile_height > 0


_PHOTOMETRIC, _ROWS_PER_STRIP, _PLANAR, _TILE_WIDTH, _TILE_LENGTH = 262, 278, 284, 322, 323
_WANTED = frozenset({_PHOTOMETRIC, _ROWS_PER_STRIP, _PLANAR, _TILE_WIDTH, _TILE_LENGTH})
#: TIFF field types that hold whole numbers: SHORT, LONG, LONG8.
_INTEGER_TYPES = {3: ("H", 2), 4: ("I", 4), 16: ("Q", 8)}


def read_tiff_page(path: Path, page: int) -> TiffPage | None:
    """The layout of page ``page`` (0-based) of a TIFF or BigTIFF file, or ``None``."""
    try:
        with open(path, "rb") as handle:
            header = handle.read(16)
            order = {b"II": "<", b"MM": ">"}.get(header[:2])
            if order is None:
                return None
            (magic,) = struct.unpack(order + "H", header[2:4])
            if magic not in (42, 43):
                return None
            big = magic == 43
            first = header[8:16] if big else header[4:8]
            (offset,) = struct.unpack(order + ("Q" if big else "I"), first)
            return _page(handle, order, big, offset, page)
    except (OSError, struct.error, ValueError):
        return None


def _page(handle: BinaryIO, order: str, big: bool, offset: int, page: int) -> TiffPage | None:
    seen: set[int] = set()
    for _ in range(min(page, MAX_PAGES)):
        if not offset or offset in seen:
            return None
        seen.add(offset)
        offset = _next_directory(handle, order, big, offset)
    if not offset:
        return None
    return TiffPage(_read_directory(handle, order, big, offset))


def _entries(handle: BinaryIO, order: str, big: bool, offset: int) -> tuple[int, bytes]:
    count_format, entry_size = ("Q", 20) if big else ("H", 12)
    handle.seek(offset)
    (count,) = struct.unpack(order + count_format, handle.read(struct.calcsize(count_format)))
    return count, handle.read(entry_size * count + (8 if big else 4))


def _next_directory(handle: BinaryIO, order: str, big: bool, offset: int) -> int:
    _, raw = _entries(handle, order, big, offset)
    tail = raw[-8:] if big else raw[-4:]
    return int(struct.unpack(order + ("Q" if big else "I"), tail)[0])


def _read_directory(handle: BinaryIO, order: str, big: bool, offset: int) -> dict[int, int]:
    count, raw = _entries(handle, order, big, offset)
    entry_size, value_at = (20, 12) if big else (12, 8)
    fields: dict[int, int] = {}
    for i in range(count):
        entry = raw[i * entry_size : (i + 1) * entry_size]
        tag, kind = struct.unpack(order + "HH", entry[:4])
        if tag in _WANTED and kind in _INTEGER_TYPES:
            code, size = _INTEGER_TYPES[kind]
            # Every wanted field holds one value, which fits in the entry: read it in place.
            (fields[tag],) = struct.unpack(order + code, entry[value_at : value_at + size])
    return fields
