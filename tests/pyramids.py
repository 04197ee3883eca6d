"""The pyramids ptif writes, read back by an independent reader: structure as tifffile sees it
(levels, tiling, compression, resolution), pixels as libvips decodes them, and checks of those
pixels against a corpus image's probes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyvips
import tifffile
from corpus import Probe


@dataclass(frozen=True)
class Level:
    width: int
    height: int
    tiled: bool
    tile_width: int
    tile_length: int
    compression: int
    photometric: int
    bits_per_sample: int
    samples_per_pixel: int
    extra_samples: tuple[int, ...]
    dpi: tuple[float, float] | None


@dataclass(frozen=True)
class Pyramid:
    path: Path
    bigtiff: bool
    levels: tuple[Level, ...]

    @property
    def sizes(self) -> tuple[tuple[int, int], ...]:
        return tuple((lv.width, lv.height) for lv in self.levels)

    @property
    def full(self) -> Level:
        return self.levels[0]


def _dpi(page: tifffile.TiffPage) -> tuple[float, float] | None:
    if "XResolution" not in page.tags:
        return None
    unit = page.tags.get("ResolutionUnit")
    if unit is None or unit.value == tifffile.RESUNIT.NONE:
        return None
    per_cm = unit.value == tifffile.RESUNIT.CENTIMETER
    x, y = page.resolution
    return (x * 2.54, y * 2.54) if per_cm else (x, y)


def _level(page: tifffile.TiffPage) -> Level:
    bps = page.bitspersample
    return Level(
        width=page.imagewidth,
        height=page.imagelength,
        tiled=page.is_tiled,
        tile_width=page.tilewidth,
        tile_length=page.tilelength,
        compression=int(page.compression),
        photometric=int(page.photometric),
        bits_per_sample=bps if isinstance(bps, int) else max(bps),
        samples_per_pixel=page.samplesperpixel,
        extra_samples=tuple(page.extrasamples),
        dpi=_dpi(page),
    )


def read_pyramid(path: Path) -> Pyramid:
    """Structure of a pyramid TIFF as tifffile (not libvips) sees it, whether the reduced
    levels are stored as further pages or as SubIFDs of the first."""
    with tifffile.TiffFile(path) as tif:
        levels = tif.series[0].levels
        pages = [lv.keyframe for lv in levels]
        return Pyramid(Path(path), tif.is_bigtiff, tuple(_level(p) for p in pages))


def read_pixels(path: Path) -> np.ndarray:
    """Full-resolution pixels as uint8 (height, width, bands); libvips decodes the JPEG tiles."""
    a = pyvips.Image.new_from_file(str(path), page=0, access="sequential").numpy()
    return a if a.ndim == 3 else a[..., None]


def probe_value(pixels: np.ndarray, probe: Probe, radius: int = 2) -> tuple[float, ...]:
    h, w = pixels.shape[:2]
    x = min(int(probe.x * w), w - 1)
    y = min(int(probe.y * h), h - 1)
    window = pixels[max(0, y - radius) : y + radius + 1, max(0, x - radius) : x + radius + 1]
    return tuple(float(v) for v in window.reshape(-1, pixels.shape[2]).mean(axis=0))


def probe_ok(value: tuple[float, ...], probe: Probe) -> bool:
    return len(value) == len(probe.lo) and all(
        lo <= v <= hi for v, lo, hi in zip(value, probe.lo, probe.hi, strict=True)
    )


def expected_levels(width: int, height: int, tile: int) -> tuple[tuple[int, int], ...]:
    sizes = [(width, height)]
    while sizes[-1][0] > tile or sizes[-1][1] > tile:
        w, h = sizes[-1]
        sizes.append((max(1, w // 2), max(1, h // 2)))
    return tuple(sizes)
