"""The conversion engine: one source file to one verified, tiled pyramid TIFF.

No CLI, no store: callers pass paths and a :class:`~ptif.profiles.Recipe` and get a
:class:`ConversionResult` back, or a :class:`~ptif.errors.PtifError` that says whether retrying
could help. The pyramid is written to a hidden temporary file beside the destination, reopened
and verified, and only then renamed into place, so a destination either holds a complete,
verified pyramid or nothing new.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import threading
import time
from functools import cache
from pathlib import Path

import pyvips

from ptif import __version__
from ptif.convert.budgets import Deadline, out_of_memory, ran_out_of_memory, too_slow
from ptif.convert.colour import to_display
from ptif.convert.embedded import DESCRIPTION, embed
from ptif.convert.encoding import (
    Encoding,
    choose,
    detached,
    fixed,
    hold,
    hold_jpeg,
    holdable,
    plain_jpeg,
    without_huge_pages,
)
from ptif.convert.formats import Format, sniff
from ptif.convert.iiif import iiif_metadata
from ptif.convert.limits import Limits, check_page_count, check_source_size
from ptif.convert.loaders import Opened, OpenRequest, open_page
from ptif.convert.profiles import DEFAULT_RECIPE, Recipe
from ptif.convert.pyramid import check_writable, expected_levels, needs_bigtiff, tiffsave_options
from ptif.convert.verify import TiffLayout, verify_pyramid
from ptif.errors import DISK_FULL, OutputWriteError, PtifError, UndecodableError

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without loading typing on every run
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from typing import Any, Final

    from ptif.convert.tiffwriter import Pixels

log = logging.getLogger(__name__)

#: libvips loaders ptif may use; every other loader stays blocked.
ALLOWED_LOADERS = (
    "jpegload", "pngload", "tiffload", "gifload", "webpload", "heifload", "pdfload", "jp2kload",
    "pngload_source",  # Ghostscript's rendering of an EPS page, from a file
    "tiffload_buffer",  # ptif's own sample tiles (ptif.convert.encoding), never a source
)  # fmt: skip
_DISK_FULL = re.compile(r"no space left|enospc|disk quota|file too large", re.I)
_IO_PROBLEM = re.compile(r"permission denied|read-only file system|input/output error", re.I)
#: libvips error domains of the TIFF writer: a failure there is not the source's fault.
_WRITER = re.compile(r"vips2tiff|wbuffer_write|TIFFWrite", re.I)


class ConversionResult:
    """What was written: enough for callers to store as metadata and for people to read."""

    __slots__ = (
        "bands", "bigtiff", "bytes", "decoder", "encoding", "height", "iiif", "levels", "page",
        "pages", "path", "recipe", "seconds", "source_format", "tile_size", "warnings", "width",
    )  # fmt: skip

    path: Final[Path]
    width: Final[int]
    height: Final[int]
    levels: Final[tuple[tuple[int, int], ...]]
    tile_size: Final[int]
    bands: Final[int]
    bytes: Final[int]
    bigtiff: Final[bool]
    recipe: Final[Recipe]
    source_format: Final[str]
    decoder: Final[str]
    page: Final[int]
    pages: Final[int]
    seconds: Final[float]
    warnings: Final[tuple[str, ...]]
    #: The IIIF metadata of the written file (:func:`~ptif.convert.iiif.iiif_metadata`).
    iiif: Final[dict[str, str]]
    #: How the tiles were encoded (``jpeg-q89-420``...), chosen against the recipe's floor.
    encoding: Final[Encoding]

    def __init__(
        self,
        *,
        path: Path,
        width: int,
        height: int,
        levels: tuple[tuple[int, int], ...],
        tile_size: int,
        bands: int,
        bytes: int,
        bigtiff: bool,
        recipe: Recipe,
        source_format: str,
        decoder: str,
        page: int,
        pages: int,
        seconds: float,
        warnings: tuple[str, ...] = (),
        iiif: dict[str, str] | None = None,
        encoding: Encoding | None = None,
    ) -> None:
        self.path = path
        self.width = width
        self.height = height
        self.levels = levels
        self.tile_size = tile_size
        self.bands = bands
        self.bytes = bytes
        self.bigtiff = bigtiff
        self.recipe = recipe
        self.source_format = source_format
        self.decoder = decoder
        self.page = page
        self.pages = pages
        self.seconds = seconds
        self.warnings = warnings
        self.iiif = iiif or {}
        self.encoding = encoding or fixed(recipe, bands)

    @property
    def recipe_hash(self) -> str:
        return self.recipe.hash

    @property
    def libvips_version(self) -> str:
        return libvips_version()

    def metadata(self) -> dict[str, str]:
        """User metadata for the output: what IIIF servers read instead of opening the file
        (:mod:`ptif.convert.iiif`), the recipe hash and the version."""
        return {
            "width": str(self.width),
            "height": str(self.height),
            **self.iiif,
            "ptif-recipe": self.recipe_hash,
            "ptif-encoding": self.encoding.label,
            "ptif-version": __version__,
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "width": self.width,
            "height": self.height,
            "levels": [list(level) for level in self.levels],
            "tile_size": self.tile_size,
            "bands": self.bands,
            "bytes": self.bytes,
            "bigtiff": self.bigtiff,
            "recipe": self.recipe.describe(),
            "recipe_hash": self.recipe_hash,
            "encoding": self.encoding.label,
            "sample_ssim": None if self.encoding.ssim is None else round(self.encoding.ssim, 4),
            "source_format": self.source_format,
            "decoder": self.decoder,
            "page": self.page,
            "pages": self.pages,
            "seconds": round(self.seconds, 3),
            "libvips_version": self.libvips_version,
            "ptif_version": __version__,
            "warnings": list(self.warnings),
        }


def libvips_version() -> str:
    return ".".join(str(pyvips.version(i)) for i in range(3))


_INIT_LOCK = threading.Lock()


def init_vips() -> None:
    """Block every libvips loader but the ones ptif needs (and all that are not fuzzed).

    Once per process, under a lock: a second thread re-blocking every loader while the first
    unblocks them would fail that thread's image as it opens.
    """
    with _INIT_LOCK:
        _blocked_loaders()


@cache
def _blocked_loaders() -> bool:
    pyvips.cache_set_max(0)
    pyvips.block_untrusted_set(True)
    pyvips.operation_block_set("VipsForeignLoad", True)
    for nickname in ALLOWED_LOADERS:
        gtype = pyvips.type_find("VipsOperation", nickname)
        if gtype:
            pyvips.operation_block_set(pyvips.type_name(gtype), False)
    return True


def convert(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    recipe: Recipe = DEFAULT_RECIPE,
    *,
    page: int = 1,
    max_pixels: int | None = None,
    limits: Limits | None = None,
    durable: bool = False,
    provenance: Mapping[str, str] | None = None,
) -> ConversionResult:
    """Convert page ``page`` (1-based) of ``src`` into a verified pyramid TIFF at ``dst``.

    ``limits`` are the conversion's budgets (:mod:`ptif.convert.limits`); ``max_pixels``, if
    given, replaces their pixel budget. With ``durable``, the file is flushed to disk before it
    is renamed into place, so a power cut cannot leave an empty file under the final name
    (stores that keep it do this). ``provenance`` (``source_key``, ``source_etag``) is written
    into the file with the recipe (:mod:`ptif.convert.embedded`).
    """
    src, dst = Path(src), Path(dst)
    init_vips()
    check_writable(recipe)
    started = time.perf_counter()
    limits = _limits(limits, max_pixels)
    try:
        fmt = sniff(src)  # no such file, a folder: said here
        check_source_size(str(src), src.stat().st_size, limits.max_source)
        opened = open_page(OpenRequest(src, fmt, page, limits))
        job = _Job(src, dst, limits, started, durable, provenance)
        return _write(job, fmt, opened, recipe, page)
    except MemoryError as error:
        raise out_of_memory(src, str(error), limits.max_memory) from error


class _Job:
    """Where one conversion reads and writes, within what limits, since when."""

    __slots__ = ("dst", "durable", "limits", "provenance", "src", "started")

    def __init__(
        self,
        src: Path,
        dst: Path,
        limits: Limits,
        started: float,
        durable: bool,
        provenance: Mapping[str, str] | None = None,
    ):
        self.provenance = provenance
        self.src = src
        self.dst = dst
        self.limits = limits
        self.started = started
        self.durable = durable

    @property
    def deadline(self) -> float:
        """When the conversion must stop (``time.perf_counter``)."""
        return self.started + self.limits.max_seconds


def _limits(limits: Limits | None, max_pixels: int | None) -> Limits:
    if limits is None:
        return Limits(max_pixels)
    if max_pixels is None:
        return limits
    return Limits(max_pixels, limits.max_memory, limits.max_seconds, limits.max_source)


def page_count(
    src: str | os.PathLike[str], *, max_pixels: int | None = None, limits: Limits | None = None
) -> int:
    """How many pages (or frames) the source holds."""
    init_vips()
    path = Path(src)
    fmt = sniff(path)
    return open_page(OpenRequest(path, fmt, 1, _limits(limits, max_pixels))).pages


def page_path(dst: Path, page: int) -> Path:
    """Where page ``page`` goes when every page gets its own pyramid: ``name-p2.tif``."""
    return dst.with_name(f"{dst.stem}-p{page}{dst.suffix}")


def convert_pages(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    recipe: Recipe = DEFAULT_RECIPE,
    *,
    max_pixels: int | None = None,
    limits: Limits | None = None,
) -> list[ConversionResult]:
    """One pyramid per page, at ``page_path(dst, n)``; all of them, or none."""
    dst = Path(dst)
    limits = _limits(limits, max_pixels)
    results: list[ConversionResult] = []
    pages = page_count(src, limits=limits)
    check_page_count(str(src), pages)
    try:
        for number in range(1, pages + 1):
            target = page_path(dst, number)
            results.append(convert(src, target, recipe, page=number, limits=limits))
    except BaseException:
        for done in results:
            done.path.unlink(missing_ok=True)
        raise
    return results


def fit_within(image: pyvips.Image, recipe: Recipe) -> pyvips.Image:
    """Shrink (never enlarge) to fit the recipe's box, keeping the aspect ratio."""
    if recipe.max_width is None and recipe.max_height is None:
        return image
    box_w = recipe.max_width or 10_000_000
    box_h = recipe.max_height or 10_000_000
    if image.width <= box_w and image.height <= box_h:
        return image
    return image.thumbnail_image(box_w, height=box_h, size="down", no_rotate=True)


def _write(job: _Job, fmt: Format, opened: Opened, recipe: Recipe, page: int) -> ConversionResult:
    warnings: list[str] = []
    image = fit_within(to_display(opened.image, warnings), recipe)
    pixels = _hold(job, opened, image) if not opened.streamed and holdable(image, recipe) else None
    ready: dict[tuple[int, int], bytes] = {}  # the pick's sample tiles, already encoded
    if pixels is None:
        image, encoding = _encoding(job, image, recipe, opened.streamed)
    else:
        from ptif.convert.candidates import choose_tiles  # numpy, only for images held

        image = opened.image = detached(image, pixels)
        encoding = choose_tiles(pixels, recipe, ready)
    levels = expected_levels(image.width, image.height, recipe.tile_size)
    bigtiff = needs_bigtiff(image.width, image.height, image.bands)
    options = tiffsave_options(recipe, bigtiff=bigtiff, quality=encoding.quality)
    tiles = None if recipe.min_quality is None else encoding.label
    image = embed(image, recipe, options, job.provenance, warnings, tiles)
    if pixels is None:
        layout = _write_verified(job, _libvips_writer(job, image, options), levels, recipe, image)
    else:
        writer = _own_writer(job, image, pixels, encoding, options, ready)
        layout = _write_verified(job, writer, levels, recipe, image)
    for warning in warnings:
        log.warning("%s: %s", job.src, warning)
    return ConversionResult(
        path=job.dst,
        width=image.width,
        height=image.height,
        levels=levels,
        tile_size=recipe.tile_size,
        bands=image.bands,
        bytes=job.dst.stat().st_size,
        bigtiff=bigtiff,
        recipe=recipe,
        source_format=fmt.name,
        decoder=opened.decoder,
        page=page,
        pages=opened.pages,
        seconds=time.perf_counter() - job.started,
        warnings=tuple(warnings),
        iiif=iiif_metadata(layout),
        encoding=encoding,
    )


def _encoding(
    job: _Job, image: pyvips.Image, recipe: Recipe, streamed: bool
) -> tuple[pyvips.Image, Encoding]:
    """The tiles' encoding (:mod:`ptif.convert.encoding`); its sample is the first pixels
    decoded, so a broken source fails here as it would while writing."""
    try:
        return choose(image, recipe, streamed)
    except pyvips.Error as error:
        raise _classify_save_error(job, job.dst, error) from error


def _hold(job: _Job, opened: Opened, image: pyvips.Image) -> Pixels:
    """The image decoded into memory for ptif's own writer, within the conversion's time."""
    without_huge_pages()
    _time_left(job)
    if plain_jpeg(opened.image, opened.decoder, image):
        decoded = hold_jpeg(job.src, image)
        if decoded is not None:
            return decoded
    pixels: Pixels = _within_deadline(job, image, job.dst, lambda: hold(image))
    return pixels


def _write_verified(
    job: _Job,
    save: Callable[[Path], None],
    levels: tuple[tuple[int, int], ...],
    recipe: Recipe,
    image: pyvips.Image,
) -> TiffLayout:
    """Save to a hidden temporary file beside the destination, verify it, then rename it into
    place: the destination holds a complete, verified pyramid or nothing new. Returns the
    file's directories as the verifier read them."""
    _make_parent(job.dst)
    temp = job.dst.with_name(f".{job.dst.name}.{os.urandom(6).hex()}.ptif-partial")
    try:
        save(temp)
        layout = verify_pyramid(temp, levels, recipe.tile_size, image.bands)
        _publish(temp, job.dst, job.durable)
    finally:
        _remove(temp)
    return layout


def _remove(temp: Path) -> None:
    """Remove what is left of the temporary file: on a read-only filesystem even a missing
    file's unlink fails (EROFS), which must not hide the error that stopped the save."""
    try:
        temp.unlink(missing_ok=True)
    except OSError as error:
        log.debug("%s: not removed (%s)", temp, error)


def _make_parent(dst: Path) -> None:
    try:
        dst.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OutputWriteError(f"{dst}: cannot create its folder ({error.strerror})") from error


def _libvips_writer(
    job: _Job, image: pyvips.Image, options: dict[str, Any]
) -> Callable[[Path], None]:
    """libvips writes the pyramid, and is stopped when the conversion's time is up."""

    def save(temp: Path) -> None:
        _within_deadline(job, image, temp, lambda: image.tiffsave(str(temp), **options))

    return save


def _time_left(job: _Job) -> float:
    """Seconds left of the conversion's time; ``too-slow`` when none are."""
    remaining = job.deadline - time.perf_counter()
    if remaining <= 0:
        raise too_slow(job.src, job.limits.max_seconds, time.perf_counter() - job.started)
    return remaining


def _within_deadline(job: _Job, image: pyvips.Image, where: Path, work: Callable[[], Any]) -> Any:
    """``work``'s result; libvips' evaluation of ``image`` is stopped when the conversion's
    time is up."""
    with Deadline(image, _time_left(job)) as deadline:
        try:
            return work()
        except pyvips.Error as error:
            if deadline.expired:
                elapsed = time.perf_counter() - job.started
                raise too_slow(job.src, job.limits.max_seconds, elapsed) from error
            raise _classify_save_error(job, where, error) from error


def _own_writer(
    job: _Job,
    image: pyvips.Image,
    pixels: Pixels,
    encoding: Encoding,
    options: dict[str, Any],
    ready: Mapping[tuple[int, int], bytes] | None = None,
) -> Callable[[Path], None]:
    """ptif's own writer (:mod:`ptif.convert.tiffwriter`) writes the pyramid from ``pixels``,
    with what :func:`~ptif.convert.embedded.embed` put on ``image``; ``ready`` are tiles of
    the first level already encoded (:func:`~ptif.convert.tiffwriter.write_pyramid`)."""
    from ptif.convert.tiffwriter import Embedded, Expired, write_pyramid

    carried = [
        image.get(name) if image.get_typeof(name) else None for name in ("xmp-data", "iptc-data")
    ]
    embedded = Embedded(
        description=image.get(DESCRIPTION),
        icc=image.get("icc-profile-data"),
        dpi=options.get("xres", image.xres) * 25.4,
        xmp=carried[0],
        iptc=carried[1],
    )
    levels = len(expected_levels(image.width, image.height, options["tile_width"]))

    def save(temp: Path) -> None:
        try:
            write_pyramid(temp, pixels, levels, options["tile_width"], encoding.tiles(),
                          embedded, bigtiff=options["bigtiff"], deadline=job.deadline,
                          ready=ready)  # fmt: skip
        except Expired as error:
            elapsed = time.perf_counter() - job.started
            raise too_slow(job.src, job.limits.max_seconds, elapsed) from error
        except OSError as error:
            raise _write_error(job, temp, error) from error

    return save


def _write_error(job: _Job, temp: Path, error: OSError) -> OutputWriteError:
    if error.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return OutputWriteError(
            f"{temp.parent}: disk full while writing the pyramid of {job.src}", code=DISK_FULL
        )
    return OutputWriteError(f"{temp.parent}: cannot write the pyramid of {job.src} ({error})")


def _classify_save_error(job: _Job, temp: Path, error: pyvips.Error) -> PtifError:
    src, text = job.src, " ".join(str(error.detail or error.message).split())
    if _DISK_FULL.search(text):
        return OutputWriteError(f"{temp.parent}: disk full while writing the pyramid of {src}",
                                code=DISK_FULL)  # fmt: skip
    if ran_out_of_memory(text):
        return out_of_memory(src, text, job.limits.max_memory)
    if _IO_PROBLEM.search(text) or _WRITER.search(text):
        return OutputWriteError(f"{temp.parent}: cannot write the pyramid of {src} ({text[:200]})")
    return UndecodableError(
        f"{src}: the image data is corrupt or truncated ({text[:300]}); "
        "check the file opens in an image viewer, then upload it again"
    )


def _publish(temp: Path, dst: Path, durable: bool) -> None:
    """Make the verified file visible under its name in one atomic step."""
    try:
        if durable:
            fsync(temp)
        os.replace(temp, dst)
    except OSError as error:
        raise OutputWriteError(f"{dst}: cannot move the pyramid into place ({error})") from error


def fsync(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
