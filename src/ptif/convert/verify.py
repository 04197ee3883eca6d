"""Check a written pyramid before anyone sees it.

The directory structure is read with a small TIFF reader of our own (classic and BigTIFF), so
the check does not trust the writer's library; then the smallest level is decoded through libvips
to prove the tiles' codec data is sound.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pyvips

from ptif.errors import VerificationError

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without loading typing on every run
if TYPE_CHECKING:
    from typing import BinaryIO, Final

_TAGS = {
    256: "width",
    257: "height",
    258: "bits",
    259: "compression",
    262: "photometric",
    277: "samples",
    322: "tile_width",
    323: "tile_height",
}
_TILE_OFFSETS, _TILE_BYTE_COUNTS = 324, 325
_TYPE_SIZES = {1: 1, 3: 2, 4: 4, 16: 8}
_STRUCT = {1: "B", 3: "H", 4: "I", 16: "Q"}
MAX_DIRECTORIES = 64


class Directory:
    """The fields of one TIFF image directory (one pyramid level) that the check needs."""

    __slots__ = (
        "bits", "compression", "data_end", "empty_tiles", "height", "photometric", "samples",
        "tile_count", "tile_height", "tile_width", "width",
    )  # fmt: skip

    width: Final[int]
    height: Final[int]
    bits: Final[int]
    samples: Final[int]
    compression: Final[int]
    photometric: Final[int]
    tile_width: Final[int]
    tile_height: Final[int]
    tile_count: Final[int]
    empty_tiles: Final[int]
    data_end: Final[int]

    def __init__(
        self,
        *,
        width: int,
        height: int,
        bits: int,
        samples: int,
        compression: int,
        photometric: int,
        tile_width: int,
        tile_height: int,
        tile_count: int = 0,
        empty_tiles: int = 0,
        data_end: int = 0,
    ) -> None:
        self.width = width
        self.height = height
        self.bits = bits
        self.samples = samples
        self.compression = compression
        self.photometric = photometric
        self.tile_width = tile_width
        self.tile_height = tile_height
        self.tile_count = tile_count
        self.empty_tiles = empty_tiles
        self.data_end = data_end


class TiffLayout:
    """A TIFF file's image directories, in order, and its size in bytes."""

    __slots__ = ("bigtiff", "directories", "size")

    bigtiff: Final[bool]
    directories: Final[tuple[Directory, ...]]
    size: Final[int]

    def __init__(self, bigtiff: bool, directories: tuple[Directory, ...], size: int) -> None:
        self.bigtiff = bigtiff
        self.directories = directories
        self.size = size


def read_layout(path: Path) -> TiffLayout:
    """Every image directory of a TIFF file, in order."""
    try:
        return _read_layout(path)
    except (struct.error, KeyError, OSError) as error:
        raise VerificationError(f"{path}: the TIFF structure is damaged ({error})") from error


def _read_layout(path: Path) -> TiffLayout:
    with open(path, "rb") as handle:
        header = handle.read(16)
        order = {b"II": "<", b"MM": ">"}.get(header[:2])
        if order is None:
            raise VerificationError(f"{path}: the output is not a TIFF file")
        magic = struct.unpack(order + "H", header[2:4])[0]
        if magic not in (42, 43):
            raise VerificationError(f"{path}: the output has a bad TIFF header")
        bigtiff = magic == 43
        offset = struct.unpack(
            order + ("Q" if bigtiff else "I"), header[8:16] if bigtiff else header[4:8]
        )[0]
        directories: list[Directory] = []
        while offset and len(directories) < MAX_DIRECTORIES:
            fields, offset = _read_directory(handle, order, bigtiff, offset)
            directories.append(_directory(path, fields))
        size = handle.seek(0, 2)
    return TiffLayout(bigtiff, tuple(directories), size)


def _read_directory(
    handle: BinaryIO, order: str, bigtiff: bool, offset: int
) -> tuple[dict[str, int], int]:
    count_fmt, entry_size, value_size = ("Q", 20, 8) if bigtiff else ("H", 12, 4)
    count = struct.unpack(order + count_fmt, read_at(handle, offset, struct.calcsize(count_fmt)))[0]
    raw = read_at(handle, offset + struct.calcsize(count_fmt), entry_size * count + value_size)
    fields: dict[str, int] = {}
    arrays: dict[int, tuple[int, ...]] = {}
    for i in range(count):
        entry = raw[i * entry_size : (i + 1) * entry_size]
        tag, kind = struct.unpack(order + "HH", entry[:4])
        if kind not in _STRUCT:
            continue
        if tag in _TAGS:
            fields[_TAGS[tag]] = _values(handle, order, entry, kind, bigtiff, limit=1)[0]
        elif tag in (_TILE_OFFSETS, _TILE_BYTE_COUNTS):
            arrays[tag] = _values(handle, order, entry, kind, bigtiff)
    fields.update(_tile_summary(arrays))
    next_offset = struct.unpack(order + ("Q" if bigtiff else "I"), raw[-value_size:])[0]
    return fields, next_offset


def _values(
    handle: BinaryIO, order: str, entry: bytes, kind: int, bigtiff: bool, limit: int = 0
) -> tuple[int, ...]:
    value_size = 8 if bigtiff else 4
    count = struct.unpack(order + ("Q" if bigtiff else "I"), entry[4 : 4 + value_size])[0]
    data = entry[4 + value_size : 4 + 2 * value_size]
    inline = count * _TYPE_SIZES[kind] <= value_size
    count = min(count, limit) if limit else count
    if not count:
        raise struct.error("a tag holds no value")
    if not inline:
        at = struct.unpack(order + ("Q" if bigtiff else "I"), data)[0]
        data = read_at(handle, at, count * _TYPE_SIZES[kind])
    return struct.unpack(f"{order}{count}{_STRUCT[kind]}", data[: count * _TYPE_SIZES[kind]])


def read_at(handle: BinaryIO, offset: int, size: int) -> bytes:
    """``size`` bytes at ``offset``; a :class:`struct.error` if the file does not hold them, so
    that counts and offsets from a hostile file never ask for more memory than the file's
    size, nor seek where no file can reach."""
    if offset + size > os.fstat(handle.fileno()).st_size:
        raise struct.error(f"{size:,} bytes at offset {offset:,} lie past the end of the file")
    handle.seek(offset)
    return handle.read(size)


def _tile_summary(arrays: dict[int, tuple[int, ...]]) -> dict[str, int]:
    offsets = arrays.get(_TILE_OFFSETS, ())
    counts = arrays.get(_TILE_BYTE_COUNTS, ())
    ends = [offset + size for offset, size in zip(offsets, counts, strict=False)]
    return {
        "tile_count": min(len(offsets), len(counts)),
        "empty_tiles": sum(1 for size in counts if size == 0),
        "data_end": max(ends, default=0),
    }


def _directory(path: Path, fields: dict[str, int]) -> Directory:
    try:
        return Directory(
            width=fields["width"],
            height=fields["height"],
            bits=fields.get("bits", 1),
            samples=fields.get("samples", 1),
            compression=fields.get("compression", 1),
            photometric=fields.get("photometric", -1),
            tile_width=fields.get("tile_width", 0),
            tile_height=fields.get("tile_height", 0),
            tile_count=fields.get("tile_count", 0),
            empty_tiles=fields.get("empty_tiles", 0),
            data_end=fields.get("data_end", 0),
        )
    except KeyError as missing:
        raise VerificationError(f"{path}: a pyramid level lacks the TIFF tag {missing}") from None


def verify_pyramid(
    path: Path, levels: tuple[tuple[int, int], ...], tile_size: int, bands: int
) -> TiffLayout:
    """Raise :class:`VerificationError` unless ``path`` is exactly the pyramid we meant to write."""
    layout = read_layout(path)
    found = tuple((d.width, d.height) for d in layout.directories)
    if found != levels:
        raise VerificationError(f"{path}: levels {found} differ from the expected {levels}")
    for number, level in enumerate(layout.directories, 1):
        problem = _level_problem(level, tile_size, bands) or _tiles_problem(level, layout.size)
        if problem:
            raise VerificationError(f"{path}: level {number} {problem}")
    _decode_smallest(path, len(levels))
    return layout


def _level_problem(level: Directory, tile_size: int, bands: int) -> str | None:
    if (level.tile_width, level.tile_height) != (tile_size, tile_size):
        return f"has tiles of {level.tile_width}x{level.tile_height}, not {tile_size}x{tile_size}"
    if level.bits != 8:
        return f"has {level.bits}-bit samples, not 8-bit"
    if level.samples != bands:
        return f"has {level.samples} bands, not {bands}"
    return None


def _tiles_problem(level: Directory, file_size: int) -> str | None:
    across = -(-level.width // level.tile_width)
    down = -(-level.height // level.tile_height)
    if level.tile_count != across * down:
        return f"lists {level.tile_count} tiles, not {across * down}"
    if level.empty_tiles:
        return f"has {level.empty_tiles} empty tiles"
    if level.data_end > file_size:
        return f"has tiles past the end of the file ({level.data_end} > {file_size} bytes)"
    return None


def _decode_smallest(path: Path, count: int) -> None:
    try:
        pyvips.Image.tiffload(str(path), page=count - 1, fail_on="error").avg()
    except pyvips.Error as error:
        raise VerificationError(
            f"{path}: the smallest level does not decode ({error.message.strip()})"
        ) from error
