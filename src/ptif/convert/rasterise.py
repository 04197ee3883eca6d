"""PDFium and Pillow decoding, run inside a sandboxed child (:mod:`ptif.convert.sandbox`).

The child reads the source on its standard input and writes one raster on its standard output:
a header line, the ICC profile, then the pixels, row after row, so the parent can wrap them with
``pyvips.Image.new_from_memory`` without decoding anything itself. Before decoding, the child
checks what the header promises: the page exists, the pixels fit the budget (at render size for
PDF), and holding them fits the memory budget. What it refuses it reports in the header line,
and the parent raises the matching error with ptif's own words.

Pillow's process-wide settings (``Image.MAX_IMAGE_PIXELS``, ``ImageFile.LOAD_TRUNCATED_IMAGES``)
are made once, before any image is opened, in the only process that opens one: each child opens
one image, so whether a 196-megapixel BMP decodes never depends on what was opened before.

Both sides of the format are here: :func:`decode` (the child) and :func:`read_raster` (the
parent). The child imports neither pyvips nor the rest of ptif, only Pillow or pypdfium2.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without loading typing on every run
if TYPE_CHECKING:
    from typing import Any, BinaryIO

    from ptif.convert.sandbox import ChildOutput

__all__ = ["MODES", "RENDER_DPI", "Raster", "Refused", "decode", "read_raster"]

#: Resolution at which PDF pages are rendered.
RENDER_DPI = 300.0
MAGIC = b"PTIF-RASTER/1"
#: Bytes per pixel of each mode the child sends. ``I`` is 32-bit grey (16-bit sources are
#: widened by Pillow); ``LAB`` is 8-bit CIELAB as Pillow keeps it (L 0-255, a and b signed).
MODES = {"L": 1, "LA": 2, "RGB": 3, "RGBA": 4, "CMYK": 4, "I": 4, "LAB": 3}
#: What the child reports instead of pixels: the page does not exist, its pixels are over the
#: budget, holding them would pass the memory budget, or the file is broken (with a reason).
NO_PAGE, PIXELS, MEMORY, BROKEN = "no-such-page", "over-pixel-budget", "out-of-memory", "broken"
#: Memory a child needs beyond the pixels it holds: the interpreter, the library, its buffers.
CHILD_OVERHEAD = 96 * 2**20
#: Rows written to the pipe at a time.
STRIP_BYTES = 4 * 2**20


class Raster:
    """Decoded pixels as the child sent them, with what the parent needs to wrap them."""

    __slots__ = ("data", "height", "icc", "mode", "orientation", "pages", "width")

    def __init__(
        self,
        width: int,
        height: int,
        mode: str,
        pages: int,
        icc: bytes,
        orientation: int,
        data: bytearray,
    ) -> None:
        self.width = width
        self.height = height
        self.mode = mode
        self.pages = pages
        self.icc = icc
        self.orientation = orientation
        self.data = data


class Refused(Exception):
    """What the child reports instead of pixels: ``status`` and its fields."""

    def __init__(self, status: str, **fields: str) -> None:
        super().__init__(status)
        self.status = status
        self.fields = fields


# the parent ------------------------------------------------------------------------------------


def read_raster(output: ChildOutput, max_pixels: int, max_memory: int) -> Raster:
    """The child's answer: a :class:`Raster`, or :class:`Refused` with its reason. Fields are
    checked before anything is allocated: a child cannot make the parent hold more than the
    pixel and memory budgets allow."""
    fields = _parse_header(output.read_line())
    status = fields.pop("status", "")
    if status != "ok":
        raise Refused(status, **fields)
    try:
        width, height = int(fields["width"]), int(fields["height"])
        mode, pages = fields["mode"], int(fields["pages"])
        icc_size, orientation = int(fields["icc"]), int(fields["orientation"])
        size = width * height * MODES[mode]
    except (KeyError, ValueError) as error:
        raise Refused(BROKEN, reason=f"bad raster header ({error})") from None
    if not (0 < width * height <= max_pixels and 0 <= icc_size <= 2**24):
        raise Refused(BROKEN, reason=f"implausible raster {width}x{height}")
    if size > max_memory:
        raise Refused(MEMORY, need=str(size))
    icc = bytearray(icc_size)
    output.read_into(memoryview(icc))
    data = bytearray(size)
    output.read_into(memoryview(data))
    return Raster(width, height, mode, pages, bytes(icc), orientation, data)


def _parse_header(line: bytes) -> dict[str, str]:
    magic, _, rest = line.partition(b" ")
    if magic != MAGIC:
        return {"status": BROKEN, "reason": "the decoder wrote no raster"}
    text = rest.decode("utf-8", errors="replace")
    head, _, reason = text.partition(" reason=")
    fields = dict(item.partition("=")[::2] for item in head.split())
    if reason:
        fields["reason"] = reason
    return fields


# the child -------------------------------------------------------------------------------------


def prepare(argv: list[str]) -> None:
    """Import what :func:`decode` will use, before the decoder gives up the worker's user: it
    may then be unable to read Python's own files (a Python installed in a private home)."""
    kind = argv[0]
    if kind == "pdf":
        import pypdfium2
        import pypdfium2.raw  # noqa: F401
    else:
        from PIL import Image, ImageFile  # noqa: F401

        Image.preinit()  # the common plugins (BMP among them); the others only if needed
        if any(name not in Image.OPEN for name in argv[4:]):
            Image.init()
        if kind == "heif":
            import pillow_heif  # noqa: F401


def decode(argv: list[str]) -> int:
    """``KIND PAGE MAX_PIXELS MAX_MEMORY [PIL_FORMAT...]``: decode standard input, write one
    raster (or a refusal) on standard output. KIND is ``pdf``, ``pillow`` or ``heif``."""
    kind, page, max_pixels, max_memory, *formats = argv
    out = open(1, "wb", buffering=0, closefd=False)  # noqa: SIM115 - the process's own stdout
    job = _Job(int(page), int(max_pixels), int(max_memory))
    try:
        if kind == "pdf":
            _pdf(job, out)
        else:
            _pillow(job, out, formats, heif=kind == "heif")
    except Refused as refusal:
        _header(out, refusal.status, **refusal.fields)
    except MemoryError:
        if job.streaming:
            raise
        _header(out, MEMORY, reason="out of memory")
    except Exception as error:  # a library choking on hostile bytes: IndexError, struct.error…
        if job.streaming:  # too late for a header: the parent sees the output end early
            raise
        _header(out, BROKEN, reason=f"{type(error).__name__}: {error}")
    return 0


class _Job:
    __slots__ = ("max_memory", "max_pixels", "page", "streaming")

    def __init__(self, page: int, max_pixels: int, max_memory: int) -> None:
        self.page = page
        self.max_pixels = max_pixels
        self.max_memory = max_memory
        self.streaming = False

    def start(self, out: BinaryIO, **fields: Any) -> None:
        """Write the header of the raster that follows."""
        self.streaming = True
        _header(out, "ok", **fields)

    def check(self, width: int, height: int, pages: int, bytes_per_pixel: int) -> None:
        """Refuse before decoding: no such page, over the pixel budget, or too big to hold."""
        if not 1 <= self.page <= pages:
            raise Refused(NO_PAGE, pages=str(pages))
        if width < 1 or height < 1 or width * height > self.max_pixels:
            raise Refused(PIXELS, width=str(width), height=str(height))
        need = width * height * bytes_per_pixel + CHILD_OVERHEAD
        if need > self.max_memory:
            raise Refused(MEMORY, need=str(need))


def _header(out: BinaryIO, status: str, reason: str = "", **fields: Any) -> None:
    items = " ".join(f"{key}={value}" for key, value in fields.items())
    line = f"{MAGIC.decode()} status={status} {items}"
    if reason:
        line += " reason=" + " ".join(str(reason).split())[:500]
    _write(out, line.encode() + b"\n")


def _write(out: BinaryIO, data: bytes | memoryview) -> None:
    view = memoryview(data).cast("B")
    while view:
        written = out.write(view)
        view = view[written or 0 :]


# PDFium: PDF -----------------------------------------------------------------------------------


def _pdf(job: _Job, out: BinaryIO) -> None:
    import pypdfium2 as pdfium

    try:
        # Read through the descriptor: reopening /proc/self/fd/0 would need the right to open
        # the file itself, which a decoder that left root does not have.
        document = pdfium.PdfDocument(os.fdopen(0, "rb", closefd=False))
    except pdfium.PdfiumError as error:
        raise Refused(BROKEN, reason=str(error)) from None
    _render(job, out, document)


def _render(job: _Job, out: BinaryIO, document: Any) -> None:
    import pypdfium2.raw as pdfium_c

    scale = RENDER_DPI / 72.0
    pages = len(document)
    if not 1 <= job.page <= pages:
        raise Refused(NO_PAGE, pages=str(pages))
    page = document[job.page - 1]
    width_pt, height_pt = page.get_size()
    width, height = max(1, round(width_pt * scale)), max(1, round(height_pt * scale))
    job.check(width, height, pages, MODES["RGB"])
    bitmap = page.render(
        scale=scale,
        fill_color=(255, 255, 255, 255),
        force_bitmap_format=pdfium_c.FPDFBitmap_BGR,
        rev_byteorder=True,
    )
    # PDFium rounds the bitmap up: 108 pt at 300 dpi is 450.00000000000006, drawn as 451 px.
    width, height = min(width, bitmap.width), min(height, bitmap.height)
    job.start(out, width=width, height=height, mode="RGB", pages=pages, icc=0, orientation=0)
    buffer = memoryview(bitmap.buffer).cast("B")
    row = width * 3
    for y in range(height):
        start = y * bitmap.stride
        _write(out, buffer[start : start + row])


# Pillow: BMP, JPEG 2000, HEIC, LABq TIFF -------------------------------------------------------

_KEPT_MODES = ("L", "LA", "RGB", "RGBA", "CMYK", "I", "LAB")


def _pillow(job: _Job, out: BinaryIO, formats: list[str], *, heif: bool) -> None:
    from PIL import Image, ImageFile

    Image.MAX_IMAGE_PIXELS = job.max_pixels
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    if heif:
        import pillow_heif

        pillow_heif.register_heif_opener()
    source = os.fdopen(0, "rb", closefd=False)
    try:
        with Image.open(source, formats=formats) as im:
            pages = int(getattr(im, "n_frames", 1))
            job.check(im.width, im.height, pages, _bytes_per_pixel(im.mode))
            if job.page > 1:
                im.seek(job.page - 1)
            im.load()
            _send_pillow(job, im, out, pages, keep_orientation=not heif)
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as error:
        raise Refused(BROKEN, reason=str(error) or type(error).__name__) from None


def _bytes_per_pixel(mode: str) -> int:
    """The most the normalised image may take per pixel, for the check before decoding."""
    return MODES.get(mode, 4)


def _send_pillow(job: _Job, im: Any, out: BinaryIO, pages: int, *, keep_orientation: bool) -> None:
    icc = im.info.get("icc_profile") or b""
    orientation = im.getexif().get(0x0112) if keep_orientation else None
    if not (isinstance(orientation, int) and 1 <= orientation <= 8):
        orientation = 0
    im = _normalise_mode(im)
    job.start(out, width=im.width, height=im.height, mode=im.mode, pages=pages, icc=len(icc),
              orientation=orientation)  # fmt: skip
    _write(out, icc)
    rows = max(1, STRIP_BYTES // max(1, im.width * MODES[im.mode]))
    for top in range(0, im.height, rows):
        strip = im.crop((0, top, im.width, min(im.height, top + rows)))
        _write(out, strip.tobytes())


def _normalise_mode(im: Any) -> Any:
    """One of :data:`MODES`: what libvips takes as it is."""
    if im.mode in _KEPT_MODES:
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


if __name__ == "__main__":
    sys.exit(decode(sys.argv[1:]))
