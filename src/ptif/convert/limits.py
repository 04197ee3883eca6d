"""What one conversion may cost: pixels, memory and time, and how the defaults are found.

Anyone who can upload can make ptif decode bytes of their choosing, so every conversion runs
within three budgets. The pixel budget is checked from the header before anything is decoded
(for PDF and EPS, at the size ptif renders them). The memory budget bounds what a decoder may
hold: decoders that run in a child process get it as their address-space limit, and decodes that
libvips must hold whole (interlaced PNG, progressive JPEG, rotations) are refused from the header
when their estimate passes it. The time budget stops a conversion that runs too long, in a child
or in libvips alike. Each broken budget is a permanent failure with its own code
(``pixel-budget``, ``too-large``, ``too-slow``) and a message that says how to raise the limit.

The default memory budget is the memory this process may use (its cgroup's limit in a
container, else the machine's RAM) times :data:`MEMORY_SHARE`, divided among the parallel
conversions. Loaded by ``ptif convert``: plain classes, no typing at run time.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from ptif.convert.profiles import DEFAULT_MAX_PIXELS

#: Seconds one conversion may take, decoding included.
DEFAULT_MAX_SECONDS = 600.0
#: Share of the available memory that parallel conversions may hold between them; the rest is
#: the worker's own, its downloads' buffers and the page cache's.
MEMORY_SHARE = 0.75
#: No conversion is given less than this, whatever the arithmetic says.
MIN_MEMORY = 256 * 2**20

_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b?)\s*", re.IGNORECASE)
_UNITS = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}
_CGROUP_LIMITS = (
    Path("/sys/fs/cgroup/memory.max"),  # cgroup v2
    Path("/sys/fs/cgroup/memory/memory.limit_in_bytes"),  # cgroup v1
)


class Limits:
    """The three budgets of one conversion."""

    __slots__ = ("max_memory", "max_pixels", "max_seconds")

    def __init__(
        self,
        max_pixels: int | None = None,
        max_memory: int | None = None,
        max_seconds: float | None = None,
    ) -> None:
        self.max_pixels = max_pixels or DEFAULT_MAX_PIXELS
        self.max_memory = max_memory or default_max_memory(1)
        self.max_seconds = max_seconds or DEFAULT_MAX_SECONDS

    def __repr__(self) -> str:
        return (
            f"Limits(max_pixels={self.max_pixels}, max_memory={self.max_memory}, "
            f"max_seconds={self.max_seconds})"
        )


def parse_size(text: str) -> int:
    """``"1.5G"``, ``"512MiB"``, ``"2048m"`` or a number of bytes → bytes (binary units)."""
    match = _SIZE.fullmatch(str(text).replace("_", ""))
    if not match:
        raise ValueError(f"{text!r} is not a size like 2G, 512M or 1073741824")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


def format_size(size: float) -> str:
    for unit in ("T", "G", "M", "K"):
        if size >= _UNITS[unit.lower()]:
            return f"{size / _UNITS[unit.lower()]:.3g} {unit}iB"
    return f"{size:.0f} B"


def available_memory() -> int:
    """Bytes this process may use: its cgroup's limit if it has one, else the machine's RAM."""
    physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for path in _CGROUP_LIMITS:
        try:
            text = path.read_text().strip()
        except OSError:
            continue
        if text.isdigit():
            return min(int(text), physical)
    return physical


def default_max_memory(workers: int) -> int:
    """The memory budget of each of ``workers`` parallel conversions."""
    return max(MIN_MEMORY, int(available_memory() * MEMORY_SHARE / max(1, workers)))
