"""Open one page of a source as a lazy libvips image, checking the pixel budget first.

libvips loaders read only the header here; pixels are decoded later, as the pyramid is written.
Formats this libvips build lacks go through one well-kept library each (Pillow for BMP and JPEG
2000, PDFium for PDF, Ghostscript with -dSAFER for EPS, pillow-heif for HEIC), always after a
header-only size check, so a small file that declares billions of pixels fails before decoding.
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
    check_memory,
    needs_random_access,
    out_of_memory,
    ran_out_of_memory,
)
from ptif.convert.formats import Format, decoder_for
from ptif.convert.limits import Limits

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without loading typing on every run
if TYPE_CHECKING:
    from typing import Any, Final

log = logging.getLogger(__name__)

#: Resolution at which PDF and EPS pages are rendered.
RENDER_DPI = 300.0
GHOSTSCRIPT_TIMEOUT_S = 600


class Opened:
    """One page of a source, ready for the pixel pipeline."""

    __slots__ = ("decoder", "image", "pages")

    image: pyvips.Image
    pages: int
    decoder: str

    def __init__(self, image: pyvips.Image, pages: int, decoder: str) -> None:
        self.image = image
        self.pages = pages
        self.decoder = decoder


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
            f"{path}: declares {width}x{height} = {width * height / 1e6:,.0f} megapixels, over "
            f"the budget of {max_pixels / 1e6:,.0f}; if the image is genuine, raise the budget "
            "with --max-pixels or PTIF_MAX_PIXELS"
        )


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
    check_memory(request.path, image, loader, request.page, request.max_memory)
    if needs_random_access(image):
        image = _vips_load(request, loader, "random")
    return Opened(image, pages, f"libvips {loader}")


def _vips_reason(error: pyvips.Error) -> str:
    detail = " ".join(str(error.detail or error.message).split())
    return detail[:300] or "libvips gave no reason"


# Pillow: BMP, JPEG 2000, HEIC -------------------------------------------------------------------

_PIL_INTERPRETATION = {"L": "b-w", "LA": "b-w", "RGB": "srgb", "RGBA": "srgb", "CMYK": "cmyk"}


def pil_to_vips(im: Any) -> pyvips.Image:
    """A decoded Pillow image as a libvips image, keeping its ICC profile and orientation."""
    icc = im.info.get("icc_profile")
    orientation = im.getexif().get(0x0112) if hasattr(im, "getexif") else None
    im = _pil_normalise_mode(im)
    if im.mode == "LAB":
        image = _lab_from_pil(im)
    elif im.mode in ("I", "I;16"):
        data = im.convert("I").tobytes()
        image = pyvips.Image.new_from_memory(data, im.width, im.height, 1, "int")
        image = image.cast("ushort").copy(interpretation="grey16")
    else:
        bands = len(im.getbands())
        image = pyvips.Image.new_from_memory(im.tobytes(), im.width, im.height, bands, "uchar")
        image = image.copy(interpretation=_PIL_INTERPRETATION[im.mode])
    if icc:
        image.set_type(pyvips.GValue.blob_type, "icc-profile-data", icc)
    if isinstance(orientation, int) and 1 <= orientation <= 8:
        image.set_type(pyvips.GValue.gint_type, "orientation", orientation)
    return image


def _lab_from_pil(im: Any) -> pyvips.Image:
    """Pillow keeps 8-bit CIELAB as in the TIFF: L 0-255, a and b signed. To libvips' float Lab."""
    data = im.tobytes()
    lightness = pyvips.Image.new_from_memory(data, im.width, im.height, 3, "uchar")[0]
    chroma = pyvips.Image.new_from_memory(data, im.width, im.height, 3, "char")[1:3]
    lab = (lightness * (100 / 255)).bandjoin(chroma.cast("float"))
    return lab.copy(interpretation="lab")


def _pil_normalise_mode(im: Any) -> Any:
    if im.mode in _PIL_INTERPRETATION or im.mode in ("I", "I;16", "LAB"):
        return im
    if im.mode.startswith("I;16"):
        return im.convert("I")
    if im.mode == "1":
        return im.convert("L")
    if im.mode in ("P", "PA"):
        transparent = im.mode == "PA" or "transparency" in im.info
        return im.convert("RGBA" if transparent else "RGB")
    if im.mode == "F":
        return im.convert("L")
    return im.convert("RGB")


def _open_pillow(request: OpenRequest, pil_formats: list[str]) -> Opened:
    from PIL import Image

    try:
        with Image.open(request.path, formats=pil_formats) as im:
            check_budget(request.path, im.width, im.height, request.max_pixels)
            pages = int(getattr(im, "n_frames", 1))
            _check_page(request, pages)
            if request.page > 1:
                im.seek(request.page - 1)
            Image.MAX_IMAGE_PIXELS = request.max_pixels
            im.load()
            image = pil_to_vips(im)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise UndecodableError(
            f"{request.path}: not a readable {request.fmt.title} file ({error})"
        ) from error
    return Opened(image, pages, f"Pillow {'/'.join(pil_formats)}")


def _open_bmp(request: OpenRequest) -> Opened:
    return _open_pillow(request, ["BMP", "DIB"])


def _open_jp2(request: OpenRequest) -> Opened:
    return _open_pillow(request, ["JPEG2000"])


def _open_heic(request: OpenRequest) -> Opened:
    import pillow_heif

    pillow_heif.register_heif_opener()
    opened = _open_pillow(request, ["HEIF"])
    opened.image.remove("orientation")
    return opened


# PDFium: PDF -----------------------------------------------------------------------------------


def _open_pdf(request: OpenRequest) -> Opened:
    import pypdfium2 as pdfium

    try:
        document = pdfium.PdfDocument(str(request.path))
    except pdfium.PdfiumError as error:
        raise UndecodableError(f"{request.path}: not a readable PDF file ({error})") from error
    try:
        pages = len(document)
        _check_page(request, pages)
        image = _render_pdf_page(request, document[request.page - 1])
    finally:
        document.close()
    return Opened(image, pages, "PDFium")


def _render_pdf_page(request: OpenRequest, page: Any) -> pyvips.Image:
    scale = RENDER_DPI / 72.0
    width_pt, height_pt = page.get_size()
    width, height = max(1, round(width_pt * scale)), max(1, round(height_pt * scale))
    check_budget(request.path, width, height, request.max_pixels)
    bitmap = page.render(scale=scale, fill_color=(255, 255, 255, 255))
    image = pil_to_vips(bitmap.to_pil())
    # PDFium rounds the bitmap up: 108 pt at 300 dpi is 450.00000000000006, drawn as 451 px.
    image = image.crop(0, 0, min(width, image.width), min(height, image.height))
    return _with_dpi(image, RENDER_DPI)


def _with_dpi(image: pyvips.Image, dpi: float) -> pyvips.Image:
    return image.copy(xres=dpi / 25.4, yres=dpi / 25.4)


# Ghostscript: EPS ------------------------------------------------------------------------------

_BBOX = re.compile(
    rb"^%%(?:HiRes)?BoundingBox:\s*([-\d.]+)\s+([-\d.]+)\s+([-\d.]+)\s+([-\d.]+)", re.M
)


def _eps_size(path: Path) -> tuple[int, int] | None:
    with open(path, "rb") as handle:
        head = handle.read(65536)
    match = _BBOX.search(head)
    if not match:
        return None
    x0, y0, x1, y1 = (float(v) for v in match.groups())
    scale = RENDER_DPI / 72.0
    return max(1, round((x1 - x0) * scale)), max(1, round((y1 - y0) * scale))


def _open_eps(request: OpenRequest) -> Opened:
    _check_page(request, 1)
    size = _eps_size(request.path)
    if size:
        check_budget(request.path, *size, request.max_pixels)
    command = [
        "gs", "-q", "-dSAFER", "-dBATCH", "-dNOPAUSE", "-dEPSCrop", "-sstdout=%stderr",
        "-dFirstPage=1", "-dLastPage=1", "-sDEVICE=png16m", f"-r{RENDER_DPI:g}",
        "-dTextAlphaBits=4", "-dGraphicsAlphaBits=4", "-sOutputFile=-",
        "-f", str(request.path),
    ]  # fmt: skip
    png = _run_ghostscript(request.path, command)
    if not png.startswith(b"\x89PNG"):
        raise UndecodableError(f"{request.path}: Ghostscript drew nothing from this EPS file")
    image = pyvips.Image.pngload_buffer(png, access="sequential", fail_on="error")
    check_budget(request.path, image.width, image.height, request.max_pixels)
    return Opened(_with_dpi(image, RENDER_DPI), 1, "Ghostscript")


def _run_ghostscript(path: Path, command: list[str]) -> bytes:
    """Run Ghostscript; its standard output (the rendered page) is returned."""
    import subprocess  # only EPS needs it; one-shot conversions start faster without it

    try:
        done = subprocess.run(
            command,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=GHOSTSCRIPT_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired as error:
        raise UndecodableError(
            f"{path}: Ghostscript did not finish within {GHOSTSCRIPT_TIMEOUT_S} s"
        ) from error
    if done.returncode != 0:
        lines = done.stderr.decode(errors="replace").strip().splitlines() or ["failed"]
        reason = next((line for line in lines if "Error:" in line), lines[-1]).strip()
        raise UndecodableError(f"{path}: not a readable EPS file (Ghostscript: {reason})")
    return done.stdout


_FALLBACKS: dict[str, Callable[[OpenRequest], Opened]] = {
    "pillow": lambda request: (_open_jp2 if request.fmt.name == "jp2" else _open_bmp)(request),
    "pdfium": _open_pdf,
    "ghostscript": _open_eps,
    "pillow-heif": _open_heic,
}
