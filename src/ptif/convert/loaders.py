"""Open one page of a source as a lazy libvips image, checking the pixel budget first.

libvips loaders read only the header here; pixels are decoded later, as the pyramid is written.
Formats this libvips build lacks go through one well-kept library each (Pillow for BMP and JPEG
2000, PDFium for PDF, Ghostscript with -dSAFER for EPS, pillow-heif for HEIC), always after a
header-only size check, so a small file that declares billions of pixels fails before decoding.
Those run in a sandboxed child process (:mod:`ptif.convert.sandbox`) under the conversion's
memory and time budgets, in an empty folder of their own, and die with the worker.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from pathlib import Path

import pyvips

from ptif.errors import ConfigError, PixelBudgetError, UndecodableError, UnsupportedFormatError

__all__ = ["OpenRequest", "Opened", "open_page"]
from ptif.convert.budgets import (
    check_density,
    check_jpeg,
    check_memory,
    needs_random_access,
    out_of_memory,
    ran_out_of_memory,
)
from ptif.convert.formats import Format, decoder_for
from ptif.convert.limits import Limits
from ptif.convert.rasterise import MODES, RENDER_DPI, Raster, Refused

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without loading typing on every run
if TYPE_CHECKING:
    from typing import Any, Final

log = logging.getLogger(__name__)


class Opened:
    """One page of a source, ready for the pixel pipeline."""

    __slots__ = ("decoder", "image", "pages", "streamed")

    image: pyvips.Image
    pages: int
    decoder: str
    #: The pipeline must stream the pixels, never hold them: an EPS rendering, whose size no
    #: header vouches for, is read back from its file as the pyramid is written.
    streamed: bool

    def __init__(
        self, image: pyvips.Image, pages: int, decoder: str, streamed: bool = False
    ) -> None:
        self.image = image
        self.pages = pages
        self.decoder = decoder
        self.streamed = streamed


class OpenRequest:
    """Which page of which source to open, within what pixel budget."""

    __slots__ = ("fmt", "max_memory", "max_pixels", "max_seconds", "page", "path")

    path: Final[Path]
    fmt: Final[Format]
    page: Final[int]
    max_pixels: Final[int]
    max_memory: Final[int]
    max_seconds: Final[float]

    def __init__(self, path: Path, fmt: Format, page: int, limits: Limits) -> None:
        self.path = path
        self.fmt = fmt
        self.page = page
        self.max_pixels = limits.max_pixels
        self.max_memory = limits.max_memory
        self.max_seconds = limits.max_seconds


def open_page(request: OpenRequest) -> Opened:
    """Open page ``request.page`` (1-based) of the source, header only."""
    decoder = decoder_for(request.fmt)
    if decoder is None:
        raise UnsupportedFormatError(
            f"{request.path}: {request.fmt.title} files need a codec this installation lacks; "
            "see 'ptif formats' for what it can read"
        )
    if decoder.startswith("vips:"):
        return _open_vips(request, decoder.removeprefix("vips:"))
    return _FALLBACKS[decoder](request)


def check_budget(path: Path, width: int, height: int, max_pixels: int) -> None:
    if width < 1 or height < 1:
        raise UndecodableError(f"{path}: the header declares an empty image ({width}x{height})")
    if width * height > max_pixels:
        raise PixelBudgetError(
            f"{path}: declares {width}x{height} = {_pixels(width * height)}, over the budget "
            f"of {_pixels(max_pixels)}; if the image is genuine, raise the budget with "
            "--max-pixels or PTIF_MAX_PIXELS"
        )


def _pixels(count: int) -> str:
    """``4,096 pixels``, ``3.1 megapixels`` or ``1,000 megapixels``: never a budget of 0."""
    if count < 1_000_000:
        return f"{count:,} pixels"
    return f"{count / 1e6:,.{0 if count >= 100_000_000 else 1}f} megapixels"


def _check_page(request: OpenRequest, pages: int) -> None:
    if not 1 <= request.page <= pages:
        raise ConfigError(
            f"{request.path}: has {pages} page(s); page {request.page} does not exist"
        )


def _field(image: pyvips.Image, name: str) -> Any:
    return image.get(name) if image.get_typeof(name) else None


# libvips ---------------------------------------------------------------------------------------


def _vips_load(request: OpenRequest, loader: str, access: str) -> pyvips.Image:
    options: dict[str, Any] = {"access": access, "fail_on": "error"}
    if request.fmt.multipage:
        options["page"] = request.page - 1
    if loader == "pdfload":
        options["dpi"] = RENDER_DPI
    try:
        return pyvips.Operation.call(loader, str(request.path), **options)
    except pyvips.Error as error:
        reason = _vips_reason(error)
        if ran_out_of_memory(reason):
            raise out_of_memory(request.path, reason, request.max_memory) from error
        raise UndecodableError(
            f"{request.path}: not a readable {request.fmt.title} file ({reason})"
        ) from error


def _open_vips(request: OpenRequest, loader: str) -> Opened:
    jpeg = check_jpeg(request.path, request.max_memory) if loader == "jpegload" else None
    try:
        image = _vips_load(request, loader, "sequential")
    except UndecodableError as error:
        if loader == "tiffload" and "labq" in str(error).lower():
            return _open_pillow(request, ["TIFF"])
        raise
    pages = int(_field(image, "n-pages") or 1)
    if request.page != 1:
        _check_page(request, pages)
    check_budget(request.path, image.width, image.height, request.max_pixels)
    check_density(request.path, image)
    check_memory(request.path, image, loader, request.page, request.max_memory, jpeg)
    if needs_random_access(image):
        image = _vips_load(request, loader, "random")
    return Opened(image, pages, f"libvips {loader}")


def _vips_reason(error: pyvips.Error) -> str:
    detail = " ".join(str(error.detail or error.message).split())
    return detail[:300] or "libvips gave no reason"


# Sandboxed decoders: Pillow, PDFium, Ghostscript ------------------------------------------------
#
# They decode in a child process (ptif.convert.sandbox) under the conversion's memory and time
# budgets. Pillow and PDFium send raw pixels (ptif.convert.rasterise), wrapped here without a
# copy; Ghostscript sends a PNG of the page, decoded lazily by libvips as the pyramid is written.

_INTERPRETATION = {
    "L": "b-w", "LA": "b-w", "RGB": "srgb", "RGBA": "srgb", "CMYK": "cmyk", "I": "grey16",
}  # fmt: skip


def _budget(request: OpenRequest, decoder: str) -> Any:
    from ptif.convert.sandbox import Budget

    return Budget(
        str(request.path), request.fmt.title, decoder, request.max_memory, request.max_seconds
    )


def _rasterise(request: OpenRequest, kind: str, formats: list[str], decoder: str) -> Raster:
    """Decode page ``request.page`` in a sandboxed child, as raw pixels."""
    from ptif.convert import rasterise, sandbox

    budget = _budget(request, decoder)
    arguments = [kind, str(request.page), str(request.max_pixels), str(request.max_memory)]
    try:
        return sandbox.run(
            ["ptif.convert.rasterise:decode", *arguments, *formats],
            request.path,
            budget,
            lambda output: rasterise.read_raster(output, request.max_pixels, request.max_memory),
            call=True,
        )
    except rasterise.Refused as refusal:
        raise _refusal_error(request, budget, refusal) from None


def _refusal_error(request: OpenRequest, budget: Any, refusal: Refused) -> Exception:
    from ptif.convert import rasterise
    from ptif.convert.sandbox import too_large

    fields = refusal.fields
    if refusal.status == rasterise.PIXELS:
        try:
            width, height = int(fields["width"]), int(fields["height"])
            check_budget(request.path, width, height, request.max_pixels)
        except (PixelBudgetError, UndecodableError) as error:
            return error
    if refusal.status == rasterise.NO_PAGE:
        try:
            _check_page(request, int(fields["pages"]))
        except ConfigError as error:
            return error
    if refusal.status == rasterise.MEMORY:
        return too_large(budget, int(fields.get("need") or 0) or None)
    reason = fields.get("reason") or refusal.status
    return UndecodableError(
        f"{request.path}: not a readable {request.fmt.title} file ({budget.decoder}: {reason})"
    )


def raster_to_vips(raster: Raster) -> pyvips.Image:
    """The child's pixels as a libvips image over the same memory, with its ICC profile and
    orientation."""
    if raster.mode == "LAB":
        image = _lab_image(raster)
    else:
        fmt = "int" if raster.mode == "I" else "uchar"
        bands = MODES[raster.mode] // (4 if raster.mode == "I" else 1)
        image = pyvips.Image.new_from_memory(raster.data, raster.width, raster.height, bands, fmt)
        if raster.mode == "I":
            image = image.cast("ushort")
        image = image.copy(interpretation=_INTERPRETATION[raster.mode])
    if raster.icc:
        image.set_type(pyvips.GValue.blob_type, "icc-profile-data", raster.icc)
    if raster.orientation:
        image.set_type(pyvips.GValue.gint_type, "orientation", raster.orientation)
    return image


def _lab_image(raster: Raster) -> pyvips.Image:
    """8-bit CIELAB as Pillow keeps it (L 0-255, a and b signed) to libvips' float Lab."""
    w, h = raster.width, raster.height
    lightness = pyvips.Image.new_from_memory(raster.data, w, h, 3, "uchar")[0]
    chroma = pyvips.Image.new_from_memory(raster.data, w, h, 3, "char")[1:3]
    lab = (lightness * (100 / 255)).bandjoin(chroma.cast("float"))
    return lab.copy(interpretation="lab")


# Pillow: BMP, JPEG 2000, HEIC, LABq TIFF --------------------------------------------------------


def _open_pillow(request: OpenRequest, pil_formats: list[str], kind: str = "pillow") -> Opened:
    decoder = f"Pillow {'/'.join(pil_formats)}"
    raster = _rasterise(request, kind, pil_formats, decoder)
    return Opened(raster_to_vips(raster), raster.pages, decoder)


def _open_bmp(request: OpenRequest) -> Opened:
    return _open_pillow(request, ["BMP", "DIB"])


def _open_jp2(request: OpenRequest) -> Opened:
    return _open_pillow(request, ["JPEG2000"])


def _open_heic(request: OpenRequest) -> Opened:
    """pillow-heif applies the orientation itself: the child sends none."""
    return _open_pillow(request, ["HEIF"], kind="heif")


# PDFium: PDF -----------------------------------------------------------------------------------


def _open_pdf(request: OpenRequest) -> Opened:
    raster = _rasterise(request, "pdf", [], "PDFium")
    return Opened(_with_dpi(raster_to_vips(raster), RENDER_DPI), raster.pages, "PDFium")


def _with_dpi(image: pyvips.Image, dpi: float) -> pyvips.Image:
    return image.copy(xres=dpi / 25.4, yres=dpi / 25.4)


# Ghostscript: EPS ------------------------------------------------------------------------------

_BBOX = re.compile(
    rb"^%%(?:HiRes)?BoundingBox:\s*([-\d.]+)\s+([-\d.]+)\s+([-\d.]+)\s+([-\d.]+)", re.M
)
#: Ghostscript's switches. -dSAFER stops the program from reaching files beyond Ghostscript's
#: own resources and its temporary folder (the child's empty scratch folder); the EPS comes on
#: standard input (``-``), so Ghostscript is given no path at all. Nothing may follow that
#: weakens SAFER; the environment (GS_OPTIONS) is not passed on.
GHOSTSCRIPT_SWITCHES = (
    "-q", "-dSAFER", "-dBATCH", "-dNOPAUSE", "-dEPSCrop", "-sstdout=%stderr",
    "-dFirstPage=1", "-dLastPage=1", "-sDEVICE=png16m", f"-r{RENDER_DPI:g}",
    "-dTextAlphaBits=4", "-dGraphicsAlphaBits=4", "-sOutputFile=-", "-",
)  # fmt: skip
_UNSAFE_SWITCHES = ("-dNOSAFER", "-dDELAYSAFER", "-dWRITESYSTEMDICT", "--permit")


def _eps_size(path: Path) -> tuple[int, int] | None:
    with open(path, "rb") as handle:
        head = handle.read(65536)
    match = _BBOX.search(head)
    if not match:
        return None
    x0, y0, x1, y1 = (float(v) for v in match.groups())
    scale = RENDER_DPI / 72.0
    return max(1, round((x1 - x0) * scale)), max(1, round((y1 - y0) * scale))


def ghostscript_command() -> list[str]:
    import shutil  # only EPS needs it; one-shot conversions start faster without it

    program = shutil.which("gs") or "gs"
    assert not any(s.startswith(_UNSAFE_SWITCHES) for s in GHOSTSCRIPT_SWITCHES)
    return [program, *GHOSTSCRIPT_SWITCHES]


def _open_eps(request: OpenRequest) -> Opened:
    _check_page(request, 1)
    size = _eps_size(request.path)
    if size:
        check_budget(request.path, *size, request.max_pixels)
    image = _render_eps(request)
    check_budget(request.path, image.width, image.height, request.max_pixels)
    return Opened(_with_dpi(image, RENDER_DPI), 1, "Ghostscript", streamed=True)


def _render_eps(request: OpenRequest) -> pyvips.Image:
    """Ghostscript's PNG of the page, streamed into an anonymous temporary file (in ``TMPDIR``,
    gone when the last descriptor closes) that libvips decodes lazily as the pyramid is
    written: the worker never holds the PNG in memory. At most the memory budget of it."""
    import tempfile

    from ptif.convert import sandbox

    budget = _budget(request, "Ghostscript")
    with tempfile.TemporaryFile(prefix="ptif-eps-") as png:
        written = sandbox.run(
            ghostscript_command(),
            request.path,
            budget,
            lambda output: _keep_png(request, output, png),
        )
        png.seek(0)
        if written < 8 or png.read(8) != b"\x89PNG\r\n\x1a\n":
            raise UndecodableError(f"{request.path}: Ghostscript drew nothing from this EPS file")
        png.seek(0)
        # libvips keeps its own duplicate of the descriptor, so the file lives as long as the
        # image does, and no longer.
        source = pyvips.Source.new_from_descriptor(png.fileno())
        try:
            return pyvips.Image.pngload_source(source, access="sequential", fail_on="error")
        except pyvips.Error as error:
            reason = _vips_reason(error)
            raise UndecodableError(
                f"{request.path}: Ghostscript's rendering does not read back ({reason})"
            ) from error


def _keep_png(request: OpenRequest, output: Any, png: Any) -> int:
    import errno

    from ptif.errors import DISK_FULL, OutputWriteError

    try:
        return int(output.copy_to(png, request.max_memory))
    except OSError as error:
        raise OutputWriteError(
            f"{request.path}: no room in the temporary folder for Ghostscript's rendering "
            f"({error.strerror}); free space in TMPDIR",
            code=DISK_FULL if error.errno in (errno.ENOSPC, errno.EDQUOT) else None,
        ) from error


_FALLBACKS: dict[str, Callable[[OpenRequest], Opened]] = {
    "pillow": lambda request: (_open_jp2 if request.fmt.name == "jp2" else _open_bmp)(request),
    "pdfium": _open_pdf,
    "ghostscript": _open_eps,
    "pillow-heif": _open_heic,
}
