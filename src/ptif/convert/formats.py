"""Which formats ptif reads, told apart by their bytes, never by their names.

:func:`sniff` reads the first bytes of a file and names its format. Each :class:`Format` says
which decoder handles it: a libvips loader where this libvips build has one, otherwise a
well-kept library for that one format. :func:`available_formats` reports what this installation
can read, for ``ptif formats`` and for choosing the decoder.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from ptif.errors import (
    IO_ERROR,
    ConversionError,
    SourceMissingError,
    UndecodableError,
    UnsupportedFormatError,
)

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without loading typing on every run
if TYPE_CHECKING:
    from typing import Final

HEAD_BYTES = 4096


class Format:
    """One format ptif reads, and the decoders that can read it."""

    __slots__ = (
        "extensions",
        "fallback",
        "multipage",
        "name",
        "prefer_fallback",
        "title",
        "vips_loader",
    )

    name: Final[str]
    title: Final[str]
    extensions: Final[tuple[str, ...]]
    vips_loader: Final[str | None]
    fallback: Final[str | None]
    multipage: Final[bool]
    prefer_fallback: Final[bool]

    def __init__(
        self,
        name: str,
        title: str,
        extensions: tuple[str, ...],
        vips_loader: str | None,
        fallback: str | None,
        *,
        multipage: bool = False,
        prefer_fallback: bool = False,
    ) -> None:
        self.name = name
        self.title = title
        self.extensions = extensions
        self.vips_loader = vips_loader
        self.fallback = fallback
        self.multipage = multipage
        self.prefer_fallback = prefer_fallback


FORMATS: dict[str, Format] = {
    f.name: f
    for f in (
        Format("jpeg", "JPEG", (".jpg", ".jpeg", ".jpe", ".jfif"), "jpegload", None),
        Format("png", "PNG", (".png",), "pngload", None),
        Format("tiff", "TIFF", (".tif", ".tiff"), "tiffload", None, multipage=True),
        Format("bmp", "BMP", (".bmp", ".dib"), None, "pillow"),
        Format("gif", "GIF", (".gif",), "gifload", None, multipage=True),
        Format("webp", "WebP", (".webp",), "webpload", None, multipage=True),
        Format("pdf", "PDF", (".pdf",), "pdfload", "pdfium", multipage=True),
        Format("eps", "EPS / PostScript", (".eps", ".epsf", ".ps"), None, "ghostscript"),
        Format("jp2", "JPEG 2000", (".jp2", ".j2k", ".jpf", ".jpx", ".j2c"), "jp2kload", "pillow"),
        Format(
            "heic",
            "HEIC / HEIF",
            (".heic", ".heif", ".hif"),
            "heifload",
            "pillow-heif",
            multipage=True,
            prefer_fallback=True,
        ),
        Format("avif", "AVIF", (".avif",), "heifload", None, multipage=True),
    )
}

#: The original system's list, which ``ptif mark`` used to queue by default.
ORIGINAL_EXTENSIONS = (".jpeg", ".jpg", ".bmp", ".tif", ".tiff", ".png", ".eps", ".pdf")
#: The extensions of every format ptif reads: what ``ptif mark``, ``watch``, ``reconcile``, the
#: Lambda and ``ptif convert --recursive`` take by default. A format this installation lacks a
#: decoder for is taken too: its images then fail as ``unsupported`` with what to install,
#: where leaving them out would leave them unconverted without a word.
READ_EXTENSIONS = tuple(ext for fmt in FORMATS.values() for ext in fmt.extensions)


def has_read_extension(name: str) -> bool:
    """Whether the file name ends with an extension of :data:`READ_EXTENSIONS` (any case)."""
    return name.lower().endswith(READ_EXTENSIONS)


_HEIF_BRANDS = {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1"}
_AVIF_BRANDS = {b"avif", b"avis"}
_BMP_HEADER_SIZES = {12, 16, 40, 52, 56, 64, 108, 124}


def _is_bmp(head: bytes) -> bool:
    return (
        len(head) >= 18
        and head[:2] == b"BM"
        and int.from_bytes(head[14:18], "little") in _BMP_HEADER_SIZES
    )


def _isobmff_brand(head: bytes) -> bytes | None:
    if len(head) < 12 or head[4:8] != b"ftyp":
        return None
    box = min(int.from_bytes(head[:4], "big"), len(head))
    brands = {head[8:12]} | {head[i : i + 4] for i in range(16, box - 3, 4)}
    if brands & _AVIF_BRANDS:
        return b"avif"
    if brands & _HEIF_BRANDS:
        return b"heic"
    return None


def _sniff_known(head: bytes) -> str | None:
    if head[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if head[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "tiff"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[:12] == b"\x00\x00\x00\x0cjP  \r\n\x87\n" or head[:4] == b"\xffO\xffQ":
        return "jp2"
    if head[:4] == b"\xc5\xd0\xd3\xc6" or head[:4] == b"%!PS":
        return "eps"
    if b"%PDF-" in head[:1024]:
        return "pdf"
    if _is_bmp(head):
        return "bmp"
    brand = _isobmff_brand(head)
    return brand.decode() if brand else None


def _describe_unknown(head: bytes) -> str:
    text = head[:512].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if b"<svg" in head[:4096].lower() or text.startswith(b"<?xml"):
        return "an SVG or XML document, not a raster image"
    if text.startswith((b"<!doctype html", b"<html", b"<head", b"<body")):
        return "an HTML page, not an image"
    if head[:2] == b"PK":
        return "a ZIP archive, not an image"
    if all(32 <= c < 127 or c in (9, 10, 13) for c in head[:512]):
        return "plain text, not an image"
    return "not an image format ptif reads"


def sniff(path: Path) -> Format:
    """The format of the file at ``path``, read from its first bytes."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(HEAD_BYTES)
    except IsADirectoryError:
        raise UnsupportedFormatError(f"{path}: is a folder, not an image file") from None
    except FileNotFoundError:
        raise SourceMissingError(f"{path}: no such file") from None
    except OSError as error:
        reason = f"{path}: cannot read it ({error.strerror})"
        raise ConversionError(reason, code=IO_ERROR) from error
    if not head:
        raise UndecodableError(f"{path}: the file is empty (0 bytes); upload it again")
    name = _sniff_known(head)
    if name is None:
        raise UnsupportedFormatError(
            f"{path}: {_describe_unknown(head)}; ptif converts "
            f"{', '.join(FORMATS)} (see 'ptif formats')"
        )
    return FORMATS[name]


@cache
def vips_has(loader: str) -> bool:
    """Whether this libvips build has the loader (a nickname like ``pdfload``)."""
    import pyvips

    return bool(pyvips.type_find("VipsOperation", loader))


@cache
def fallback_ready(fallback: str) -> bool:
    if fallback == "ghostscript":
        import shutil  # only fallback formats and `ptif formats` ask

        return shutil.which("gs") is not None
    import importlib.util  # only `ptif formats` and fallback formats ask

    module = {"pillow": "PIL", "pdfium": "pypdfium2", "pillow-heif": "pillow_heif"}[fallback]
    return importlib.util.find_spec(module) is not None


def decoder_for(fmt: Format) -> str | None:
    """``vips:<loader>`` or the fallback library's name, or ``None`` when nothing can read it.

    HEIC prefers its fallback: many libvips builds carry libheif without the HEVC decoder.
    """
    fallback = fmt.fallback if fmt.fallback and fallback_ready(fmt.fallback) else None
    if fallback and fmt.prefer_fallback:
        return fallback
    if fmt.vips_loader and vips_has(fmt.vips_loader):
        return f"vips:{fmt.vips_loader}"
    return fallback


def available_formats() -> list[tuple[Format, str | None]]:
    """Every format ptif knows, with the decoder this installation would use (or ``None``)."""
    return [(fmt, decoder_for(fmt)) for fmt in FORMATS.values()]
