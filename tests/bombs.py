"""Decompression bombs for the budget tests, made at test time: small files that declare big
images, or honest images whose decode cannot stream. Each writer streams its output, so making a
bomb never costs the memory the bomb would (bench-free: tests/test_budgets.py and the figures of
docs/security.md both use these).
"""

from __future__ import annotations

import random
import struct
import zlib
from pathlib import Path
from typing import BinaryIO

import pyvips


def _flat(width: int, height: int, bands: int = 3) -> pyvips.Image:
    colour = [200, 100, 50, 255][:bands]
    image = (pyvips.Image.black(width, height, bands=bands) + colour).cast("uchar")
    return image.copy(interpretation="srgb" if bands >= 3 else "b-w")


def patch_frame(data: bytes, width: int, height: int) -> bytes:
    """A JPEG with the size in its frame header (SOF0 or SOF2) replaced."""
    at = next(i for i in range(len(data) - 1) if data[i] == 0xFF and data[i + 1] in (0xC0, 0xC2))
    return data[: at + 5] + struct.pack(">HH", height, width) + data[at + 9 :]


def forged_jpeg(path: Path, width: int, height: int, *, progressive: bool) -> Path:
    """A 16x16 JPEG (4:4:4, no metadata, some 500 bytes) whose frame claims width x height."""
    data = _flat(16, 16).jpegsave_buffer(interlace=progressive, subsample_mode="off", keep="none")
    path.write_bytes(patch_frame(data, width, height))
    return path


def dense_forged_jpeg(path: Path, width: int, height: int, *, real: int = 1000) -> Path:
    """A real ``real`` x ``real`` progressive JPEG of noise (4:4:4, some 1 MB, so no density
    rule stops it) whose frame claims width x height: at 20000x20000 libjpeg would allocate
    2.4 GB of coefficients."""
    noise = pyvips.Image.gaussnoise(real, real, mean=128, sigma=40).cast("uchar")
    image = noise.bandjoin([noise, noise]).copy(interpretation="srgb")
    data = image.jpegsave_buffer(interlace=True, subsample_mode="off", Q=95, keep="none")
    path.write_bytes(patch_frame(data, width, height))
    return path


def flat_jpeg(
    path: Path, width: int, height: int, *, progressive: bool = False, orientation: int = 1
) -> Path:
    """An honest one-colour JPEG (Q75, 4:2:0), libvips writing it strip by strip."""
    image = _flat(width, height).copy()
    image.set_type(pyvips.GValue.gint_type, "orientation", orientation)
    image.jpegsave(str(path), interlace=progressive)
    return path


def noisy_jpeg(path: Path, width: int, height: int) -> Path:
    """An honest baseline JPEG of noise: what a scan compresses like (some 3 pixels a byte)."""
    noise = pyvips.Image.gaussnoise(width, height, mean=128, sigma=30).cast("uchar")
    noise.bandjoin([noise, noise]).copy(interpretation="srgb").jpegsave(str(path), Q=85)
    return path


def _chunk(kind: bytes, data: bytes) -> bytes:
    body = kind + data
    return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))


#: Adam7's passes: first column, first row, column step, row step.
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2),
          (0, 1, 1, 2))  # fmt: skip


def interlaced_png(path: Path, width: int, height: int, *, bitdepth: int = 16) -> Path:
    """An honest one-colour RGBA PNG, Adam7-interlaced: deflate squeezes it to ~1/1000 of its
    pixels' bytes, and libvips must decode it whole (8 bytes a pixel at 16 bits)."""
    pixel = bytes(range(1, 4 * bitdepth // 8 + 1))
    deflate = zlib.compressobj(9)
    with open(path, "wb") as out:
        out.write(b"\x89PNG\r\n\x1a\n")
        out.write(_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, bitdepth, 6, 0, 0, 1)))
        for x0, y0, dx, dy in _ADAM7:
            columns, rows = -(-(width - x0) // dx), -(-(height - y0) // dy)
            if columns > 0 and rows > 0:
                _write_rows(out, deflate, b"\x00" + pixel * columns, rows)
        out.write(_chunk(b"IDAT", deflate.flush()))
        out.write(_chunk(b"IEND", b""))
    return path


def _write_rows(out: BinaryIO, deflate: zlib._Compress, row: bytes, rows: int) -> None:
    per_block = max(1, (1 << 22) // len(row))
    while rows:
        count = min(per_block, rows)
        data = deflate.compress(row * count)
        if data:
            out.write(_chunk(b"IDAT", data))
        rows -= count


def constant_tiff(
    path: Path,
    width: int,
    height: int,
    *,
    bands: int = 1,
    rows_per_strip: int | None = None,
    tile: int | None = None,
    separate: bool = False,
    orientation: int = 1,
    noisy: bool = False,
) -> Path:
    """A one-colour 8-bit deflate TIFF whose strips (or tiles) all point at one compressed
    piece: a few hundred kilobytes can declare gigapixels, in any layout. ``noisy``: the piece
    is noise instead, so the file is as big as one strip or tile (and no denser than a scan)."""
    planes = bands if separate else 1
    samples = 1 if separate else bands
    if tile:
        piece_pixels = tile * tile
        count = -(-width // tile) * -(-height // tile) * planes
    else:
        rows = min(rows_per_strip or height, height)
        piece_pixels = width * rows
        count = -(-height // rows) * planes
    size = piece_pixels * samples
    blob = zlib.compress(random.Random(1).randbytes(size) if noisy else bytes([200]) * size, 9)
    layout = {322: tile, 323: tile} if tile else {278: rows}
    layout[274] = orientation
    return _write_tiff(path, width, height, bands, separate, layout, blob, count)


def _write_tiff(
    path: Path,
    width: int,
    height: int,
    bands: int,
    separate: bool,
    layout: dict[int, int | None],
    blob: bytes,
    count: int,
) -> Path:
    offsets_at = 8 + len(blob)
    counts_at = offsets_at + 4 * count
    bits_at = counts_at + 4 * count
    ifd_at = bits_at + 2 * bands + 2 * (bands % 2)
    tiled = 322 in layout
    entries: dict[int, tuple[int, list[int]]] = {
        256: (4, [width]), 257: (4, [height]), 258: (3, [8] * bands), 259: (3, [8]),
        262: (3, [2 if bands >= 3 else 1]), 277: (3, [bands]), 284: (3, [2 if separate else 1]),
        324 if tiled else 273: (4, [8] * count), 325 if tiled else 279: (4, [len(blob)] * count),
        **{tag: (3 if tag == 274 else 4, [value or 0]) for tag, value in layout.items()},
    }  # fmt: skip
    remote = {258: bits_at, 273: offsets_at, 324: offsets_at, 279: counts_at, 325: counts_at}
    with open(path, "wb") as out:
        out.write(b"II*\x00" + struct.pack("<I", ifd_at) + blob)
        out.write(struct.pack(f"<{count}I", *([8] * count)))
        out.write(struct.pack(f"<{count}I", *([len(blob)] * count)))
        out.write(struct.pack(f"<{bands}H", *([8] * bands)) + b"\0" * (2 * (bands % 2)))
        out.write(struct.pack("<H", len(entries)))
        for tag in sorted(entries):
            kind, values = entries[tag]
            code = "H" if kind == 3 else "I"
            if len(values) * struct.calcsize(code) <= 4:
                value = struct.pack(f"<{len(values)}{code}", *values).ljust(4, b"\0")
            else:
                value = struct.pack("<I", remote[tag])
            out.write(struct.pack("<HHI", tag, kind, len(values)) + value)
        out.write(b"\0\0\0\0")
    return path


# progressive JPEG scans ------------------------------------------------------------------------


def _segment(marker: int, body: bytes) -> bytes:
    return bytes([0xFF, marker]) + struct.pack(">H", len(body) + 2) + body


def _eob_runs(blocks: int) -> bytes:
    """Entropy-coded data that skips ``blocks`` blocks in end-of-band runs of up to 32,767,
    with the AC table of :func:`scan_bomb_jpeg` (EOBr coded as the 4 bits of r)."""
    bits: list[int] = []
    while blocks:
        run = min(blocks, 32767)
        r = run.bit_length() - 1
        bits += [(r >> i) & 1 for i in range(3, -1, -1)]
        bits += [((run - (1 << r)) >> i) & 1 for i in range(r - 1, -1, -1)]
        blocks -= run
    bits += [1] * (-len(bits) % 8)  # pad with ones
    out = bytearray()
    for i in range(0, len(bits), 8):
        out.append(int("".join(map(str, bits[i : i + 8])), 2))
        if out[-1] == 0xFF:
            out.append(0)  # byte stuffing
    return bytes(out)


def scan_bomb_jpeg(path: Path, side: int, *, low_bit: int = 13) -> Path:
    """A grey ``side`` x ``side`` progressive JPEG (one 8-bit component, all AC coefficients
    zero) with the most scans a valid progression allows: for each of the 63 AC coefficients
    alone, a first scan at bit 13 and 13 refinements, 882 scans that each walk every 8x8 block
    again, in a few hundred bytes each (with ``low_bit`` b, 1 + 63 x (b + 1) scans in all). Its
    coefficients fit the memory estimate, its bytes the density rule; libjpeg decodes all its
    scans in one call that libvips cannot interrupt."""
    blocks = (side // 8) ** 2
    huffman_dc = b"\x00" + bytes([1] + [0] * 15) + b"\x00"  # one code '0': DC difference 0
    huffman_ac = b"\x10" + bytes([0, 0, 0, 15] + [0] * 12) + bytes(r << 4 for r in range(15))
    out = bytearray(b"\xff\xd8")
    out += _segment(0xDB, b"\x00" + b"\x01" * 64)
    out += _segment(0xC2, struct.pack(">BHHB", 8, side, side, 1) + b"\x01\x11\x00")
    out += _segment(0xC4, huffman_dc) + _segment(0xC4, huffman_ac)
    out += _segment(0xDA, b"\x01\x01\x00\x00\x00\x00") + bytes(-(-blocks // 8))
    runs = _eob_runs(blocks)
    for k in range(1, 64):
        high = 0
        for low in range(low_bit, -1, -1):
            out += _segment(0xDA, bytes([1, 1, 0x00, k, k, high << 4 | low])) + runs
            high = low
    path.write_bytes(bytes(out + b"\xff\xd9"))
    return path


# metadata segments -----------------------------------------------------------------------------


def metadata_bomb_jpeg(
    path: Path, segments: int, *, marker: int = 0xED, size: int = 65533, side: int = 16
) -> Path:
    """A small honest JPEG with ``segments`` metadata segments (APPn or COM, ``marker``) of
    ``size`` bytes each (at most 65,533) inserted after its start: libjpeg saves every APPn and
    COM segment libvips asks for, and libvips copies them into the image's metadata."""
    data = _flat(side, side).jpegsave_buffer(keep="none")
    body = bytes(i % 251 for i in range(size))
    segment = _segment(marker, body)
    with open(path, "wb") as out:
        out.write(data[:2])
        for _ in range(segments):
            out.write(segment)
        out.write(data[2:])
    return path
