"""What one conversion may cost: source bytes, pixels, memory and time, and how the defaults are
found.

Anyone who can upload can make ptif decode bytes of their choosing, so every conversion runs
within three budgets. The pixel budget is checked from the header before anything is decoded
(for PDF and EPS, at the size ptif renders them). The memory budget bounds what a decoder may
hold: decoders that run in a child process get it as their address-space limit, and decodes that
libvips must hold whole (interlaced PNG, progressive JPEG, rotations) are refused from the header
when their estimate passes it. The time budget stops a conversion that runs too long, in a child
or in libvips alike. Each broken budget is a permanent failure with its own code
(``pixel-budget``, ``too-large``, ``too-slow``) and a message that says how to raise the limit.

The source size is checked before anything is read or downloaded: a file bigger than
:data:`DEFAULT_MAX_SOURCE` (or ``--max-source-size``) is ``too-large``, whatever it holds (a
sparse file of 50 GB costs its reader 50 GB of disk).

The default memory budget is the memory this process may use (its cgroup's limit in a
container, else the machine's RAM) times :data:`MEMORY_SHARE`, divided among the parallel
conversions. Loaded by ``ptif convert``: plain classes, no typing at run time.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from ptif.convert.profiles import DEFAULT_MAX_PIXELS
from ptif.errors import ConfigError

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without loading typing on every run
if TYPE_CHECKING:
    from collections.abc import Iterable

#: Seconds one conversion may take, decoding included.
DEFAULT_MAX_SECONDS = 600.0
#: Share of the available memory that parallel conversions may hold between them; the rest is
#: the worker's own, its downloads' buffers and the page cache's.
MEMORY_SHARE = 0.75
#: No conversion is given less than this, whatever the arithmetic says.
MIN_MEMORY = 256 * 2**20
#: The largest memory budget a setting may give: decoder children get it as a resource limit,
#: which the kernel takes as a 64-bit number; past that, every sandboxed decode would fail.
MAX_MEMORY = 512 * 2**40
#: Bytes a source may have. The largest image the default pixel budget admits, 3 gigapixels of
#: 16-bit RGB stored uncompressed, is 18 GB (16.8 GiB); real gigapixel scans are several GB.
DEFAULT_MAX_SOURCE = 20 * 2**30
#: The longest time limit a setting may give (a day).
MAX_SECONDS = 86_400.0

_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b?)\s*", re.IGNORECASE)
_UNITS = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}
CGROUP_ROOT = Path("/sys/fs/cgroup")
#: Lines like ``0::/system.slice/ptif.service``: the cgroups this process belongs to.
PROC_CGROUP = Path("/proc/self/cgroup")


class Limits:
    """The budgets of one conversion: pixels, memory, time, and the source's bytes."""

    __slots__ = ("max_memory", "max_pixels", "max_seconds", "max_source")

    def __init__(
        self,
        max_pixels: int | None = None,
        max_memory: int | None = None,
        max_seconds: float | None = None,
        max_source: int | None = None,
    ) -> None:
        self.max_pixels = max_pixels or DEFAULT_MAX_PIXELS
        self.max_memory = max_memory or default_max_memory(1)
        self.max_seconds = max_seconds or DEFAULT_MAX_SECONDS
        self.max_source = max_source or DEFAULT_MAX_SOURCE

    def __repr__(self) -> str:
        return (
            f"Limits(max_pixels={self.max_pixels}, max_memory={self.max_memory}, "
            f"max_seconds={self.max_seconds}, max_source={self.max_source})"
        )


def check_source_size(label: str, size: int, limit: int) -> None:
    """Refuse a source of ``size`` bytes over ``limit`` (``too-large``), before it is read."""
    if size > limit:
        from ptif.errors import TooLargeError

        raise TooLargeError(
            f"{label}: {format_size(size)} ({size:,} bytes), more than the largest source "
            f"accepted, {format_size(limit)}; if the image is genuine, raise the limit with "
            "--max-source-size or PTIF_MAX_SOURCE_SIZE (and give the work folder room for it)"
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


def check_limits(
    max_pixels: int | None,
    max_memory: int | None,
    max_seconds: float | None,
    max_source: int | None = None,
) -> None:
    """Refuse limits a person set out of range (``None``: not set, the default applies)."""
    if max_source is not None and max_source < 1:
        raise ConfigError(f"max source size must be at least 1 byte, not {max_source}")
    if max_pixels is not None and max_pixels < 1:
        raise ConfigError(f"max pixels must be at least 1, not {max_pixels}")
    if max_memory is not None and not max_memory >= MIN_MEMORY:
        raise ConfigError(
            f"max memory must be at least {format_size(MIN_MEMORY)}, not {format_size(max_memory)}"
        )
    if max_memory is not None and max_memory > MAX_MEMORY:
        raise ConfigError(
            f"max memory must be at most {format_size(MAX_MEMORY)}, not {format_size(max_memory)}"
        )
    if max_seconds is not None and not 1 <= max_seconds <= MAX_SECONDS:  # also refuses NaN
        raise ConfigError(f"max seconds must be 1 to {MAX_SECONDS:.0f}, not {max_seconds:g}")


def cgroup_limit_files(root: Path = CGROUP_ROOT, membership: Path = PROC_CGROUP) -> list[Path]:
    """Files that may hold this process's memory limit: the limit file of its cgroup and of
    every parent up to the root (a limit anywhere above applies too), cgroup v2's
    ``memory.max`` and v1's ``memory/.../memory.limit_in_bytes`` alike."""
    try:
        lines = membership.read_text().splitlines()
    except OSError:
        lines = []
    groups = {"v2": "/", "v1": "/"}
    for line in lines:
        _, controllers, group = (line.split(":", 2) + ["", ""])[:3]
        if not controllers:
            groups["v2"] = group
        elif "memory" in controllers.split(","):
            groups["v1"] = group
    return [
        *_up_to_root(root, groups["v2"], "memory.max"),
        *_up_to_root(root / "memory", groups["v1"], "memory.limit_in_bytes"),
    ]


def _up_to_root(root: Path, group: str, name: str) -> list[Path]:
    parts = [part for part in group.split("/") if part and part != ".."]
    return [root.joinpath(*parts[:depth], name) for depth in range(len(parts), -1, -1)]


def available_memory(limit_files: Iterable[Path] | None = None) -> int:
    """Bytes this process may use: the lowest cgroup limit that applies to it, else the
    machine's RAM. ``limit_files`` defaults to :func:`cgroup_limit_files`."""
    physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    limits = [physical]
    for path in cgroup_limit_files() if limit_files is None else limit_files:
        try:
            text = path.read_text().strip()
        except OSError:
            continue
        if text.isdigit():  # "max" (v2) means no limit
            limits.append(int(text))
    return min(limits)


def default_max_memory(workers: int, limit_files: Iterable[Path] | None = None) -> int:
    """The memory budget of each of ``workers`` parallel conversions."""
    share = available_memory(limit_files) * MEMORY_SHARE / max(1, workers)
    return max(MIN_MEMORY, int(share))
