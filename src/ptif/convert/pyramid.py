"""The one place that turns a recipe into libvips ``tiffsave`` arguments, and the pyramid shape
those arguments produce, so that the writer, the verifier and the recipe hash agree.
"""

from __future__ import annotations

from functools import cache

import pyvips

from ptif.convert.embedded import keep_flags
from ptif.convert.profiles import COMPRESSIONS, Recipe
from ptif.errors import ConfigError

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without loading typing on every run
if TYPE_CHECKING:
    from typing import Any

#: Classic TIFF offsets are 32-bit. Switch to BigTIFF well before the limit, because the
#: compressed size is only known once written, and deflate or JPEG can exceed the raw size on noise.
BIGTIFF_THRESHOLD = int(0.75 * 2**32)


def expected_levels(width: int, height: int, tile_size: int) -> tuple[tuple[int, int], ...]:
    """Level sizes libvips writes: each half (rounded down) of the one above, until the level
    fits in one tile, or until a side of 1 pixel cannot be halved again."""
    levels = [(width, height)]
    while (width > tile_size or height > tile_size) and width > 1 and height > 1:
        width, height = width // 2, height // 2
        levels.append((width, height))
    return tuple(levels)


def needs_bigtiff(width: int, height: int, bands: int) -> bool:
    """Whether the whole pyramid, uncompressed, could pass the classic TIFF limit."""
    raw_pyramid = width * height * bands * 4 // 3
    return raw_pyramid + raw_pyramid // 50 > BIGTIFF_THRESHOLD


#: libtiff always has these; only the others need a probe.
ALWAYS_WRITABLE = ("jpeg", "deflate", "lzw", "none")


@cache
def can_write(compression: str) -> bool:
    """Whether this libvips build writes such tiles (its libtiff may lack zstd or webp)."""
    if compression in ALWAYS_WRITABLE:
        return True
    probe = (pyvips.Image.black(16, 16, bands=3) + 128).cast("uchar")
    try:
        probe.tiffsave_buffer(tile=True, tile_width=16, tile_height=16, compression=compression)
    except pyvips.Error:
        return False
    return True


def writable_compressions() -> tuple[str, ...]:
    return tuple(c for c in COMPRESSIONS if can_write(c))


def check_writable(recipe: Recipe) -> None:
    if not can_write(recipe.compression):
        raise ConfigError(
            f"this installation's libvips cannot write {recipe.compression} tiles; "
            f"use one of {', '.join(writable_compressions())}"
        )


def tiffsave_options(
    recipe: Recipe, *, bigtiff: bool, quality: int | None = None
) -> dict[str, Any]:
    """Keyword arguments for ``pyvips.Image.tiffsave``; ``quality`` is the one chosen for this
    image when the recipe states a floor (:mod:`ptif.convert.encoding`), else the recipe's."""
    options: dict[str, Any] = {
        "tile": True,
        "pyramid": True,
        "tile_width": recipe.tile_size,
        "tile_height": recipe.tile_size,
        "compression": recipe.compression,
        "bigtiff": bigtiff,
        "resunit": "inch",
        "keep": keep_flags(recipe),
    }
    if recipe.dpi is not None:
        options["xres"] = options["yres"] = recipe.dpi / 25.4
    if recipe.compression in ("jpeg", "webp"):
        options["Q"] = recipe.quality if quality is None else quality
    if recipe.compression in ("deflate", "lzw", "zstd"):
        options["predictor"] = "horizontal"
    return options
