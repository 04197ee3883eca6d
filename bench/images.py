"""Synthetic benchmark inputs, generated with streaming libvips pipelines.

Each generator builds a lazy pipeline whose only in-memory images are small
(a ~1000 px low-resolution scene and a ~2000 px detail tile), so memory stays
bounded whatever the output size.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pyvips

MM_PER_INCH = 25.4
LOWRES_SIDE = 1000
DETAIL_TILE = (2039, 2029)
LOREM = (
    "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor "
    "incididunt ut labore et dolore magna aliqua enim ad minim veniam quis nostrud "
    "exercitation ullamco laboris nisi aliquip ex ea commodo consequat duis aute irure "
    "in reprehenderit voluptate velit esse cillum fugiat nulla pariatur excepteur sint "
    "occaecat cupidatat non proident sunt culpa qui officia deserunt mollit anim id est"
)


@dataclass(frozen=True)
class Input:
    name: str
    filename: str
    description: str
    to_srgb: bool
    make: Callable[[Path], None]


def noise(width: int, height: int, seed: int, bands: int = 1) -> pyvips.Image:
    layers = [
        pyvips.Image.gaussnoise(width, height, sigma=1.0, mean=0.0, seed=seed + band)
        for band in range(bands)
    ]
    return layers[0].bandjoin(layers[1:]) if bands > 1 else layers[0]


def octave(width: int, height: int, cell: int, seed: int, bands: int = 1) -> pyvips.Image:
    small = noise(width // cell + 4, height // cell + 4, seed, bands).copy_memory()
    return small.resize(cell, kernel="cubic").crop(cell, cell, width, height)


def lowres_scene(width: int, height: int, seed: int) -> pyvips.Image:
    """Colour (bands 0-2) and an object field (band 3) at low resolution."""
    xy = pyvips.Image.xyz(width, height).cast("float")
    x, y = xy[0] / width, xy[1] / height
    gradient = x * [0.10, 0.08, -0.04] + y * [-0.30, -0.22, 0.05] + [0.58, 0.56, 0.55]
    luma = (
        octave(width, height, width // 6, seed) * 0.12
        + octave(width, height, width // 24, seed + 1) * 0.06
        + octave(width, height, width // 96, seed + 2) * 0.03
    )
    chroma = octave(width, height, width // 8, seed + 10, bands=3) * 0.05
    field = (
        octave(width, height, width // 40, seed + 20)
        + octave(width, height, width // 160, seed + 21) * 0.4
    )
    return (gradient + luma + chroma).bandjoin(field).copy_memory()


def detail_tile(seed: int) -> pyvips.Image:
    width, height = DETAIL_TILE
    fine = octave(width, height, 4, seed) * 0.025 + noise(width, height, seed + 1) * 0.012
    chroma = noise(width, height, seed + 2, bands=3) * 0.006
    return (fine + chroma).copy_memory()


def tiled(tile: pyvips.Image, width: int, height: int) -> pyvips.Image:
    across, down = width // tile.width + 1, height // tile.height + 1
    return tile.replicate(across, down).crop(0, 0, width, height)


def scene(width: int, height: int, seed: int = 1) -> pyvips.Image:
    """Photo-like float RGB in about 0..1: gradients, blobs, sharp-edged shapes, grain."""
    factor = max(width, height) / LOWRES_SIDE
    low = lowres_scene(int(width / factor) + 4, int(height / factor) + 4, seed)
    up = low.resize(factor, kernel="linear").crop(0, 0, width, height)
    colour, field = up[0:3], up[3]
    shade = 1.0 - (field > 1.0) / 255 * 0.4
    return colour * shade + tiled(detail_tile(seed + 100), width, height)


def to_uchar_srgb(image: pyvips.Image) -> pyvips.Image:
    return (image * 255).cast("uchar").copy(interpretation="srgb")


def save_photo_jpeg(path: Path, width: int, height: int, seed: int) -> None:
    image = to_uchar_srgb(scene(width, height, seed))
    image.jpegsave(str(path), Q=92, subsample_mode="on", keep="none")


def calibration_strip(width: int, height: int, steps: int = 12) -> pyvips.Image:
    """A grey wedge from pure black to pure white, as on a scanner target."""
    x = pyvips.Image.xyz(width, height)[0]
    return (x * steps / width).floor() / (steps - 1)


def save_scan16(path: Path, width: int = 8000, height: int = 6000) -> None:
    strip_height = height // 40
    image = scene(width, height - strip_height, seed=3)
    wedge = calibration_strip(width, strip_height)
    image = image.join(wedge.bandjoin([wedge, wedge]), "vertical")
    image = (image * 65535).cast("ushort").copy(interpretation="rgb16")
    ppm = 600 / MM_PER_INCH
    image.tiffsave(str(path), compression="none", xres=ppm, yres=ppm, resunit="inch")


def paragraph(rng: random.Random) -> str:
    vocabulary = LOREM.split()
    words = [rng.choice(vocabulary) for _ in range(rng.randint(50, 130))]
    return " ".join(words).capitalize() + "."


def render(markup: str, width: int = 0, font: str = "serif 10") -> pyvips.Image:
    options = {"width": width, "justify": True} if width else {}
    return pyvips.Image.text(markup, dpi=600, font=font, **options)


def table(width: int, rows: int, columns: int, row_height: int, rule: int) -> pyvips.Image:
    grid = pyvips.Image.black(width, rows * row_height + rule)
    for row in range(rows + 1):
        grid = grid.draw_rect(255, 0, row * row_height, width, rule, fill=True)
    for column in range(columns + 1):
        left = min(column * width // columns, width - rule)
        grid = grid.draw_rect(255, left, 0, rule, rows * row_height, fill=True)
    return grid


def document_ink(width: int, height: int, seed: int) -> pyvips.Image:
    """A text page as an ink mask (255 = ink) on a black page."""
    rng = random.Random(seed)
    margin, column, gap = width // 12, width - 2 * (width // 12), 120
    page = pyvips.Image.black(width, height)
    title = render("<b>Report on the Ipsum Dolor Collection</b>", font="sans 18")
    page = page.insert(title, margin, margin)
    top = margin + title.height + 80
    page = page.draw_rect(255, margin, top, column, 14, fill=True)
    top += 14 + gap
    bottom = height - margin - 200
    blocks = 0
    while True:
        block = table(column, 6, 4, 110, 6) if blocks == 3 else render(paragraph(rng), column)
        if top + block.height > bottom:
            break
        page = page.insert(block, margin, top)
        top += block.height + gap
        blocks += 1
    folio = render("— 17 —")
    return page.insert(folio, (width - folio.width) // 2, height - margin - folio.height)


def save_document(path: Path, width: int = 5100, height: int = 6600) -> None:
    page = document_ink(width, height, seed=7) < 128
    ppm = 600 / MM_PER_INCH
    page.tiffsave(
        str(path),
        compression="ccittfax4",
        bitdepth=1,
        miniswhite=True,
        xres=ppm,
        yres=ppm,
        resunit="inch",
    )


INPUTS: tuple[Input, ...] = (
    Input(
        "photo48",
        "photo48.jpg",
        "48 MP photo-like sRGB JPEG, 8000x6000, Q92",
        False,
        lambda path: save_photo_jpeg(path, 8000, 6000, seed=1),
    ),
    Input(
        "scan16",
        "scan16.tif",
        "16-bit RGB scan, 8000x6000, uncompressed TIFF, full 0..65535 range",
        True,
        save_scan16,
    ),
    Input(
        "document",
        "document.tif",
        "1-bit document page, 5100x6600 at 600 dpi, CCITT G4 TIFF",
        False,
        save_document,
    ),
    Input(
        "gigapixel",
        "gigapixel.jpg",
        "1 gigapixel photo-like sRGB JPEG, 40000x25000, Q92",
        False,
        lambda path: save_photo_jpeg(path, 40000, 25000, seed=2),
    ),
)


def ensure(item: Input, directory: Path) -> float | None:
    """Create the input unless cached; return the seconds it took, None if cached."""
    target = directory / item.filename
    if target.is_file() and target.stat().st_size > 0:
        return None
    directory.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.partial")
    start = time.perf_counter()
    item.make(partial)
    partial.replace(target)
    return time.perf_counter() - start
