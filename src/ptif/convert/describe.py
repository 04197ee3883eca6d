"""What a pyramid TIFF holds, read back from the file: for ``ptif info``.

The structure comes from the same small TIFF reader the verifier uses
(:func:`~ptif.convert.verify.read_layout`), so what ``info`` shows is what the worker checked.
JPEG tiles' quality is estimated from the quantisation tables in the file's ``JPEGTables`` tag
(libjpeg's tables scaled by quality, as libvips writes them); other compressions have none.
:func:`check` verifies a file as the worker does before an upload, the expected pyramid derived
from its first level.
"""

from __future__ import annotations

import struct
from pathlib import Path

from ptif.convert.pyramid import expected_levels
from ptif.convert.verify import TiffLayout, read_layout, verify_pyramid
from ptif.errors import VerificationError

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without loading typing on every run
if TYPE_CHECKING:
    from typing import Any

#: TIFF's compression codes, by the names ``--compression`` takes.
COMPRESSION_NAMES = {
    1: "none", 5: "lzw", 7: "jpeg", 8: "deflate", 32946: "deflate", 50000: "zstd", 50001: "webp",
}  # fmt: skip
_JPEG_TABLES = 347
_IMAGE_DESCRIPTION = 270
#: Names ``ptif info`` shows the embedded provenance under (:mod:`ptif.convert.embedded`).
_EMBEDDED_NAMES = {"ptif": "ptif_version"}
#: libjpeg's luminance quantisation table at quality 50, in zig-zag order as a DQT stores it.
_LUMINANCE = (
    16, 11, 12, 14, 12, 10, 16, 14, 13, 14, 18, 17, 16, 19, 24, 40, 26, 24, 22, 22, 24, 49, 35,
    37, 29, 40, 58, 51, 61, 60, 57, 51, 56, 55, 64, 72, 92, 78, 64, 68, 87, 69, 55, 56, 80, 109,
    81, 87, 95, 98, 103, 104, 103, 62, 77, 113, 121, 112, 100, 120, 92, 101, 103, 99,
)  # fmt: skip


def describe(path: Path) -> dict[str, Any]:
    """Size, levels, tiles, compression, estimated quality and bytes of the TIFF at ``path``."""
    layout = read_layout(path)
    if not layout.directories:
        raise VerificationError(f"{path}: the TIFF holds no image")
    first = layout.directories[0]
    compression = COMPRESSION_NAMES.get(first.compression, f"code {first.compression}")
    return {
        "path": str(path),
        "bytes": layout.size,
        "bigtiff": layout.bigtiff,
        "width": first.width,
        "height": first.height,
        "bands": first.samples,
        "bits": first.bits,
        "tiled": bool(first.tile_width),
        "tile_size": [first.tile_width, first.tile_height],
        "compression": compression,
        "quality": jpeg_quality(path) if compression == "jpeg" else None,
        "levels": [[d.width, d.height] for d in layout.directories],
    }


def embedded_provenance(path: Path) -> dict[str, Any] | None:
    """The provenance ptif wrote into the file's first ImageDescription, or None."""
    from ptif.convert.embedded import read_description

    try:
        text = _first_ifd_bytes(path, _IMAGE_DESCRIPTION)
    except (OSError, struct.error):
        return None
    body = read_description(text.rstrip(b"\0").decode("utf-8", "replace")) if text else None
    if body is None:
        return None
    return {_EMBEDDED_NAMES.get(key, key): value for key, value in body.items()}


def check(path: Path) -> TiffLayout:
    """Verify ``path`` as the worker verifies a pyramid before uploading it: every level of
    the expected size and tiling, tiles all there, the smallest level decodes. Raises
    :class:`~ptif.errors.VerificationError`."""
    layout = read_layout(path)
    if not layout.directories:
        raise VerificationError(f"{path}: the TIFF holds no image")
    first = layout.directories[0]
    if not first.tile_width or first.tile_width != first.tile_height:
        raise VerificationError(
            f"{path}: not a pyramid of square tiles ({first.tile_width}x{first.tile_height})"
        )
    levels = expected_levels(first.width, first.height, first.tile_width)
    return verify_pyramid(path, levels, first.tile_width, first.samples)


def jpeg_quality(path: Path) -> int | None:
    """The quality libjpeg was given, from the first luminance table; None if unknown."""
    try:
        tables = _first_ifd_bytes(path, _JPEG_TABLES)
    except (OSError, struct.error):
        return None
    table = _luminance_table(tables) if tables else None
    if table is None:
        return None
    scale = sum(q * 100 / base for q, base in zip(table, _LUMINANCE, strict=True)) / 64
    quality = 100 - scale / 2 if scale <= 100 else 5000 / scale
    return max(1, min(100, round(quality)))


def _luminance_table(data: bytes) -> tuple[int, ...] | None:
    """The 8-bit quantisation table 0 of a JPEG stream's first DQT segment."""
    at = data.find(b"\xff\xdb")
    if at < 0 or len(data) < at + 5 + 64:
        return None
    precision_and_id = data[at + 4]
    if precision_and_id != 0:  # 16-bit, or not table 0
        return None
    return tuple(data[at + 5 : at + 5 + 64])


def _first_ifd_bytes(path: Path, wanted: int) -> bytes | None:
    """The value of tag ``wanted`` of the first directory, as bytes (at most 64 KB)."""
    with open(path, "rb") as handle:
        header = handle.read(16)
        order = {b"II": "<", b"MM": ">"}.get(header[:2])
        if order is None:
            return None
        bigtiff = struct.unpack(order + "H", header[2:4])[0] == 43
        word, count_fmt, entry_size = ("Q", "Q", 20) if bigtiff else ("I", "H", 12)
        offset = struct.unpack(order + word, header[8:16] if bigtiff else header[4:8])[0]
        handle.seek(offset)
        count = struct.unpack(order + count_fmt, handle.read(struct.calcsize(count_fmt)))[0]
        raw = handle.read(entry_size * min(count, 4096))
        for i in range(min(count, 4096)):
            entry = raw[i * entry_size : (i + 1) * entry_size]
            tag = struct.unpack(order + "H", entry[:2])[0]
            if tag != wanted:
                continue
            size = struct.unpack(order + word, entry[4 : 4 + struct.calcsize(word)])[0]
            value = entry[4 + struct.calcsize(word) :]
            if size <= len(value):
                return value[:size]
            handle.seek(struct.unpack(order + word, value)[0])
            return handle.read(min(size, 1 << 16))
    return None
