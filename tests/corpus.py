"""Awkward input images for ptif's tests, generated at test time.

Every maker takes a directory, writes one file into it and returns a description of what a
correct conversion must produce. Expectations are stated in output coordinates (after EXIF
rotation, rendering at 300 dpi, flattening on white) as fractions of the output size.
"""

from __future__ import annotations

import functools
import io
import shutil
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import pyvips
from PIL import Image

Colour = tuple[float, ...]

RED = (200, 40, 40)
GREEN = (40, 160, 60)
BLUE = (50, 70, 190)
WHITE = (255, 255, 255)
PAPER = (230, 230, 230)


@dataclass(frozen=True)
class Probe:
    x: float
    y: float
    lo: Colour
    hi: Colour

    def describe(self) -> str:
        return f"({self.x:.2f}, {self.y:.2f}) in {self.lo}..{self.hi}"


def near(x: float, y: float, value: Colour, tol: float = 10) -> Probe:
    return Probe(x, y, tuple(v - tol for v in value), tuple(v + tol for v in value))


def within(x: float, y: float, lo: Colour, hi: Colour) -> Probe:
    return Probe(x, y, lo, hi)


@dataclass(frozen=True)
class Page:
    width: int
    height: int
    probes: tuple[Probe, ...] = ()


@dataclass(frozen=True)
class Sample:
    path: Path
    source_format: str
    pages: tuple[Page, ...]
    bands: int = 3
    page_count: int | None = 1
    bilevel: bool = False

    @property
    def width(self) -> int:
        return self.pages[0].width

    @property
    def height(self) -> int:
        return self.pages[0].height

    @property
    def probes(self) -> tuple[Probe, ...]:
        return self.pages[0].probes


@dataclass(frozen=True)
class BadSample:
    path: Path
    codes: frozenset[str]


UNREADABLE = frozenset({"undecodable", "unsupported"})

GOOD: dict[str, Callable[[Path], Sample]] = {}
BAD: dict[str, Callable[[Path], BadSample]] = {}


def good(fn: Callable[[Path], Sample]) -> Callable[[Path], Sample]:
    GOOD[fn.__name__] = fn
    return fn


def bad(fn: Callable[[Path], BadSample]) -> Callable[[Path], BadSample]:
    BAD[fn.__name__] = fn
    return fn


def single(
    path: Path,
    fmt: str,
    w: int,
    h: int,
    probes: tuple[Probe, ...] = (),
    *,
    bands: int = 3,
    page_count: int | None = 1,
    bilevel: bool = False,
) -> Sample:
    return Sample(path, fmt, (Page(w, h, probes),), bands, page_count, bilevel)


def halves(w: int, h: int, left: Colour, right: Colour) -> np.ndarray:
    a = np.empty((h, w, len(left)), np.uint8)
    a[:, : w // 2] = left
    a[:, w // 2 :] = right
    return a


def strips(w: int, h: int, colours: list[Colour]) -> np.ndarray:
    a = np.empty((h, w, len(colours[0])), np.uint8)
    edges = np.linspace(0, w, len(colours) + 1).astype(int)
    for colour, x0, x1 in zip(colours, edges[:-1], edges[1:], strict=True):
        a[:, x0:x1] = colour
    return a


def halves_probes(left: Colour, right: Colour, tol: float = 10) -> tuple[Probe, ...]:
    return (near(0.25, 0.5, left, tol), near(0.75, 0.5, right, tol))


def strips_probes(colours: list[Colour], tol: float = 10) -> tuple[Probe, ...]:
    n = len(colours)
    return tuple(near((i + 0.5) / n, 0.5, c, tol) for i, c in enumerate(colours))


def vips_rgb(a: np.ndarray) -> pyvips.Image:
    return pyvips.Image.new_from_array(a).copy(interpretation="srgb")


def jpeg_bytes(a: np.ndarray, quality: int = 95) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a.squeeze()).save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def noise(w: int, h: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def png_chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data)
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def require_pillow(feature: str) -> None:
    from PIL import features

    if not features.check(feature):
        pytest.skip(f"this Pillow build lacks {feature}")


def require_gs() -> str:
    gs = shutil.which("gs")
    if gs is None:
        pytest.skip("Ghostscript (gs) is not installed")
    return gs


# --- JPEG and colour management -------------------------------------------------------------


@good
def jpeg_srgb(d: Path) -> Sample:
    p = d / "srgb.jpg"
    p.write_bytes(jpeg_bytes(strips(320, 240, [RED, GREEN, BLUE])))
    return single(p, "jpeg", 320, 240, strips_probes([RED, GREEN, BLUE]))


@good
def jpeg_grey(d: Path) -> Sample:
    p = d / "grey.jpg"
    Image.fromarray(halves(300, 200, (60,), (200,))[..., 0], "L").save(p, quality=95)
    return single(p, "jpeg", 300, 200, halves_probes((60,), (200,)), bands=1)


@good
def jpeg_p3(d: Path) -> Sample:
    """Pixels are Display-P3 values of RED-ish/GREEN-ish sRGB colours, with a P3 profile."""
    left, right = (220, 40, 40), (40, 180, 60)
    p = d / "display-p3.jpg"
    vips_rgb(halves(300, 200, left, right)).icc_transform("p3").jpegsave(str(p), Q=95)
    return single(p, "jpeg", 300, 200, halves_probes(left, right, 8))


@good
def jpeg_cmyk_profile(d: Path) -> Sample:
    left, right = (190, 60, 50), (50, 120, 190)
    p = d / "cmyk-profile.jpg"
    vips_rgb(halves(300, 200, left, right)).icc_transform("cmyk").jpegsave(str(p), Q=95)
    return single(p, "jpeg", 300, 200, halves_probes(left, right, 16))


@good
def tiff_cmyk_no_profile(d: Path) -> Sample:
    p = d / "cmyk-no-profile.tif"
    ink = [(0, 255, 255, 0), (0, 0, 0, 0), (0, 0, 0, 255)]
    Image.fromarray(strips(300, 200, ink), "CMYK").save(p, compression="tiff_lzw")
    probes = (
        within(1 / 6, 0.5, (170, 0, 0), (255, 100, 100)),
        within(3 / 6, 0.5, (225, 225, 225), (255, 255, 255)),
        within(5 / 6, 0.5, (0, 0, 0), (80, 80, 80)),
    )
    return single(p, "tiff", 300, 200, probes)


LAB_LEFT, LAB_RIGHT = (190, 60, 50), (128, 128, 128)


@good
def tiff_lab8(d: Path) -> Sample:
    """8-bit CIELAB (L 0..255, signed a/b), which libvips 8.18 itself cannot load.

    The colours are ones where reading the Lab as D50- or D65-relative agrees within a few
    levels: the TIFF 6 spec says "generally D65" but Photoshop writes D50, so a saturated
    blue would make the expectation depend on that choice.
    """
    left, right = LAB_LEFT, LAB_RIGHT
    p = d / "cielab-8bit.tif"
    vips_rgb(halves(200, 120, left, right)).colourspace("lab").Lab2LabQ().tiffsave(str(p))
    return single(p, "tiff", 200, 120, halves_probes(left, right, 10))


@good
def tiff_lab16(d: Path) -> Sample:
    left, right = LAB_LEFT, LAB_RIGHT
    p = d / "cielab-16bit.tif"
    vips_rgb(halves(200, 120, left, right)).colourspace("lab").Lab2LabS().tiffsave(str(p))
    return single(p, "tiff", 200, 120, halves_probes(left, right, 10))


# --- bit depth and alpha --------------------------------------------------------------------


def gradient16(w: int, h: int, bands: int) -> np.ndarray:
    row = np.round(np.linspace(0, 65535, w)).astype(np.uint16)
    return np.repeat(np.repeat(row[None, :, None], h, axis=0), bands, axis=2)


def gradient_probes(bands: int) -> tuple[Probe, ...]:
    return tuple(near(x, 0.5, (v,) * bands, 8) for x, v in [(0.0, 0), (0.5, 128), (1.0, 255)])


@good
def tiff_rgb16(d: Path) -> Sample:
    import tifffile

    p = d / "rgb16.tif"
    tifffile.imwrite(p, gradient16(512, 64, 3), photometric="rgb")
    return single(p, "tiff", 512, 64, gradient_probes(3))


@good
def png_rgb16(d: Path) -> Sample:
    p = d / "rgb16.png"
    img = pyvips.Image.new_from_array(gradient16(512, 64, 3)).copy(interpretation="rgb16")
    img.pngsave(str(p), bitdepth=16)
    return single(p, "png", 512, 64, gradient_probes(3))


@good
def png_grey16(d: Path) -> Sample:
    p = d / "grey16.png"
    img = pyvips.Image.new_from_array(gradient16(512, 64, 1)[..., 0]).copy(interpretation="grey16")
    img.pngsave(str(p), bitdepth=16)
    return single(p, "png", 512, 64, gradient_probes(1), bands=1)


@good
def png_rgba(d: Path) -> Sample:
    """Opaque red | fully transparent blue (must become white) | half-transparent black."""
    p = d / "rgba.png"
    a = strips(300, 200, [(*RED, 255), (0, 0, 255, 0), (0, 0, 0, 128)])
    Image.fromarray(a, "RGBA").save(p)
    return single(p, "png", 300, 200, strips_probes([RED, WHITE, (127, 127, 127)], 8))


@good
def png_grey_alpha(d: Path) -> Sample:
    p = d / "grey-alpha.png"
    Image.fromarray(halves(300, 200, (50, 255), (0, 0)), "LA").save(p)
    return single(p, "png", 300, 200, halves_probes((50,), (255,), 8), bands=1)


@good
def tiff_bilevel_g4(d: Path) -> Sample:
    """1-bit CCITT G4, min-is-white (as fax and scanner output usually is)."""
    p = d / "bilevel-g4.tif"
    img = pyvips.Image.new_from_array(halves(400, 300, (0,), (255,))[..., 0])
    img.copy(interpretation="b-w").tiffsave(
        str(p), compression="ccittfax4", bitdepth=1, miniswhite=True
    )
    return single(p, "tiff", 400, 300, halves_probes((0,), (255,), 25), bands=1, bilevel=True)


@good
def png_bilevel(d: Path) -> Sample:
    p = d / "bilevel.png"
    Image.fromarray(halves(400, 300, (0,), (255,))[..., 0], "L").convert("1").save(p)
    return single(p, "png", 400, 300, halves_probes((0,), (255,), 25), bands=1, bilevel=True)


# --- EXIF orientation -----------------------------------------------------------------------

CORNERS = {
    "top-left": (0.08, 0.08),
    "top-right": (0.92, 0.08),
    "bottom-left": (0.08, 0.92),
    "bottom-right": (0.92, 0.92),
}

# where the stored top-left (red) and top-right (blue) markers appear to a viewer
ORIENTATIONS = {
    3: ("bottom-right", "bottom-left"),
    6: ("top-right", "bottom-right"),
    8: ("bottom-left", "top-left"),
}


def oriented_jpeg(d: Path, orientation: int) -> Sample:
    w, h, m = 300, 200, 60
    a = np.empty((h, w, 3), np.uint8)
    a[:] = PAPER
    a[:m, :m] = RED
    a[:m, w - m :] = BLUE
    exif = Image.Exif()
    exif[0x0112] = orientation
    p = d / f"orientation-{orientation}.jpg"
    Image.fromarray(a).save(p, quality=95, exif=exif)
    red_at, blue_at = ORIENTATIONS[orientation]
    colour = {red_at: RED, blue_at: BLUE}
    probes = tuple(near(*xy, colour.get(name, PAPER), 12) for name, xy in CORNERS.items())
    ow, oh = (w, h) if orientation == 3 else (h, w)
    return single(p, "jpeg", ow, oh, probes)


@good
def jpeg_orientation_3(d: Path) -> Sample:
    return oriented_jpeg(d, 3)


@good
def jpeg_orientation_6(d: Path) -> Sample:
    return oriented_jpeg(d, 6)


@good
def jpeg_orientation_8(d: Path) -> Sample:
    return oriented_jpeg(d, 8)


# --- BMP ------------------------------------------------------------------------------------


def palette_image(w: int, h: int, colours: list[Colour]) -> Image.Image:
    idx = strips(w, h, [(i,) for i in range(len(colours))])[..., 0]
    img = Image.fromarray(idx, "L").convert("P")
    img.putpalette([c for rgb in colours for c in rgb])
    return img


@good
def bmp_palette8(d: Path) -> Sample:
    p = d / "palette-8bit.bmp"
    palette_image(300, 200, [RED, GREEN, BLUE]).save(p)
    return single(p, "bmp", 300, 200, strips_probes([RED, GREEN, BLUE], 8))


def write_bmp4(path: Path, w: int, h: int, palette: list[Colour], idx: np.ndarray) -> None:
    stride = ((w * 4 + 31) // 32) * 4
    rows = bytearray()
    for y in range(h - 1, -1, -1):
        line = bytearray(stride)
        for x in range(w):
            line[x // 2] |= int(idx[y, x]) << (4 if x % 2 == 0 else 0)
        rows += line
    pal = b"".join(bytes((b, g, r, 0)) for r, g, b in palette)
    pal += bytes(4 * (16 - len(palette)))
    offset = 14 + 40 + len(pal)
    head = struct.pack("<2sIHHI", b"BM", offset + len(rows), 0, 0, offset)
    info = struct.pack("<IiiHHIIiiII", 40, w, h, 1, 4, 0, len(rows), 2835, 2835, 16, 0)
    path.write_bytes(head + info + pal + bytes(rows))


@good
def bmp_palette4(d: Path) -> Sample:
    p = d / "palette-4bit.bmp"
    idx = strips(301, 200, [(0,), (1,), (2,)])[..., 0]
    write_bmp4(p, 301, 200, [RED, GREEN, BLUE], idx)
    return single(p, "bmp", 301, 200, strips_probes([RED, GREEN, BLUE], 8))


@good
def bmp_rgb24(d: Path) -> Sample:
    p = d / "rgb24.bmp"
    Image.fromarray(strips(300, 200, [RED, GREEN, BLUE])).save(p)
    return single(p, "bmp", 300, 200, strips_probes([RED, GREEN, BLUE], 8))


# --- multi-page -----------------------------------------------------------------------------

PDF_PAGES = [((200, 100), RED), ((100, 150), GREEN), ((150, 150), BLUE)]


@good
def pdf_three_pages(d: Path) -> Sample:
    """Pages of 2x1, 1x1.5 and 1.5x1.5 inches; at 300 dpi 600x300, 300x450, 450x450."""
    p = d / "three-pages.pdf"
    imgs = [Image.new("RGB", size, colour) for size, colour in PDF_PAGES]
    imgs[0].save(p, save_all=True, append_images=imgs[1:], resolution=100.0)
    pages = tuple(Page(w * 3, h * 3, (near(0.5, 0.5, colour, 10),)) for (w, h), colour in PDF_PAGES)
    return Sample(p, "pdf", pages, page_count=3)


TIFF_PAGES = [((320, 200), RED), ((150, 260), GREEN), ((90, 90), BLUE)]


@good
def tiff_three_pages(d: Path) -> Sample:
    p = d / "three-pages.tif"
    imgs = [Image.new("RGB", size, colour) for size, colour in TIFF_PAGES]
    imgs[0].save(p, save_all=True, append_images=imgs[1:], compression="tiff_deflate")
    pages = tuple(Page(w, h, (near(0.5, 0.5, colour, 8),)) for (w, h), colour in TIFF_PAGES)
    return Sample(p, "tiff", pages, page_count=3)


# --- EPS ------------------------------------------------------------------------------------

EPS_RED = (204, 38, 38)
EPS_BLUE = (51, 64, 191)


def eps_document(x0: int, y0: int) -> bytes:
    return (
        "%!PS-Adobe-3.0 EPSF-3.0\n"
        f"%%BoundingBox: {x0} {y0} {x0 + 144} {y0 + 72}\n"
        "%%EndComments\n"
        f"0.8 0.15 0.15 setrgbcolor {x0} {y0} 72 72 rectfill\n"
        f"0.2 0.25 0.75 setrgbcolor {x0 + 72} {y0} 72 72 rectfill\n"
        "showpage\n%%EOF\n"
    ).encode()


@good
def eps_two_inch(d: Path) -> Sample:
    """A 2x1 inch EPS: red square, blue square; 600x300 at 300 dpi."""
    require_gs()
    p = d / "two-inch.eps"
    p.write_bytes(eps_document(0, 0))
    return single(p, "eps", 600, 300, halves_probes(EPS_RED, EPS_BLUE, 10))


@good
def eps_offset_bbox(d: Path) -> Sample:
    """Same drawing, but the bounding box does not start at the origin."""
    require_gs()
    p = d / "offset-bbox.eps"
    p.write_bytes(eps_document(100, 200))
    return single(p, "eps", 600, 300, halves_probes(EPS_RED, EPS_BLUE, 10))


# --- other formats --------------------------------------------------------------------------


@good
def jp2_rgb(d: Path) -> Sample:
    require_pillow("jpg_2000")
    p = d / "rgb.jp2"
    Image.fromarray(strips(300, 200, [RED, GREEN, BLUE])).save(p)
    return single(p, "jp2", 300, 200, strips_probes([RED, GREEN, BLUE], 8))


@good
def webp_rgb(d: Path) -> Sample:
    require_pillow("webp")
    p = d / "rgb.webp"
    Image.fromarray(strips(300, 200, [RED, GREEN, BLUE])).save(p, lossless=True)
    return single(p, "webp", 300, 200, strips_probes([RED, GREEN, BLUE], 8))


@good
def gif_palette(d: Path) -> Sample:
    p = d / "palette.gif"
    palette_image(300, 200, [RED, GREEN, BLUE]).save(p)
    return single(p, "gif", 300, 200, strips_probes([RED, GREEN, BLUE], 8))


@good
def gif_animated(d: Path) -> Sample:
    """Two frames, red then blue: the first frame is the picture."""
    p = d / "animated.gif"
    frames = [palette_image(200, 150, [c]) for c in (RED, BLUE)]
    frames[0].save(p, save_all=True, append_images=frames[1:], duration=100, loop=0)
    return single(p, "gif", 200, 150, (near(0.5, 0.5, RED, 8),), page_count=None)


@good
def heic_rgb(d: Path) -> Sample:
    pillow_heif = pytest.importorskip("pillow_heif")
    pillow_heif.register_heif_opener()
    p = d / "photo.heic"
    Image.fromarray(strips(300, 200, [RED, GREEN, BLUE])).save(p, format="HEIF", quality=95)
    return single(p, "heic", 300, 200, strips_probes([RED, GREEN, BLUE], 14))


@good
def avif_rgb(d: Path) -> Sample:
    require_pillow("avif")
    p = d / "photo.avif"
    Image.fromarray(strips(300, 200, [RED, GREEN, BLUE])).save(p, quality=95)
    return single(p, "avif", 300, 200, strips_probes([RED, GREEN, BLUE], 14))


# --- sizes ----------------------------------------------------------------------------------


@good
def png_one_pixel(d: Path) -> Sample:
    p = d / "one-pixel.png"
    Image.new("RGB", (1, 1), RED).save(p)
    return single(p, "png", 1, 1, (near(0.5, 0.5, RED, 12),))


@good
def jpeg_smaller_than_tile(d: Path) -> Sample:
    p = d / "small.jpg"
    p.write_bytes(jpeg_bytes(halves(100, 80, RED, BLUE)))
    return single(p, "jpeg", 100, 80, halves_probes(RED, BLUE))


def rgb_gradient(w: int, h: int) -> pyvips.Image:
    ramp = (pyvips.Image.xyz(w, h)[0] * (255 / (w - 1))).cast("uchar")
    return ramp.bandjoin([255 - ramp, 128]).cast("uchar").copy(interpretation="srgb")


def gradient_rgb_probes() -> tuple[Probe, ...]:
    return (
        near(0.0, 0.5, (0, 255, 128), 10),
        near(0.5, 0.5, (128, 127, 128), 10),
        near(1.0, 0.5, (255, 0, 128), 10),
    )


@good
def jpeg_panorama(d: Path) -> Sample:
    p = d / "panorama.jpg"
    rgb_gradient(30000, 400).jpegsave(str(p), Q=85)
    return single(p, "jpeg", 30000, 400, gradient_rgb_probes())


@good
def jpeg_5000x3000(d: Path) -> Sample:
    p = d / "large.jpg"
    rgb_gradient(5000, 3000).jpegsave(str(p), Q=85)
    return single(p, "jpeg", 5000, 3000, gradient_rgb_probes())


# --- bad inputs -----------------------------------------------------------------------------


@bad
def truncated_jpeg(d: Path) -> BadSample:
    p = d / "truncated.jpg"
    data = jpeg_bytes(noise(320, 240))
    p.write_bytes(data[: len(data) // 2])
    return BadSample(p, frozenset({"undecodable"}))


@bad
def truncated_png(d: Path) -> BadSample:
    p = d / "truncated.png"
    buf = io.BytesIO()
    Image.fromarray(noise(320, 240)).save(buf, "PNG")
    p.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    return BadSample(p, frozenset({"undecodable"}))


@bad
def zero_bytes(d: Path) -> BadSample:
    p = d / "empty.jpg"
    p.write_bytes(b"")
    return BadSample(p, UNREADABLE)


@bad
def text_as_jpeg(d: Path) -> BadSample:
    p = d / "notes.jpg"
    p.write_text("This is not a picture, it is a shopping list.\n" * 20)
    return BadSample(p, UNREADABLE)


@bad
def html_as_png(d: Path) -> BadSample:
    p = d / "error-page.png"
    p.write_text(
        "<!DOCTYPE html>\n<html><head><title>403 Forbidden</title></head>"
        "<body><h1>Forbidden</h1></body></html>\n"
    )
    return BadSample(p, UNREADABLE)


@bad
def svg_as_jpeg(d: Path) -> BadSample:
    p = d / "drawing.jpg"
    p.write_text(
        '<?xml version="1.0"?>\n'
        '<svg xmlns="http://www.w3.org/2000/svg" width="200" height="100">'
        '<rect width="200" height="100" fill="red"/></svg>\n'
    )
    return BadSample(p, frozenset({"unsupported"}))


@bad
def giant_png_header(d: Path) -> BadSample:
    """Declares 100,000 x 100,000 RGB in a few hundred bytes."""
    p = d / "giant.png"
    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    idat = zlib.compress(bytes(3 * 100_000 + 1) * 2, 9)
    p.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", idat)
        + png_chunk(b"IEND", b"")
    )
    return BadSample(p, frozenset({"pixel-budget"}))


@bad
def giant_jpeg_header(d: Path) -> BadSample:
    """A small valid JPEG whose SOF0 was patched to claim 65,000 x 65,000."""
    p = d / "giant.jpg"
    data = bytearray(jpeg_bytes(halves(64, 48, RED, BLUE)))
    sof = data.find(b"\xff\xc0")
    assert sof > 0, "no baseline SOF0 marker"
    data[sof + 5 : sof + 9] = struct.pack(">HH", 65_000, 65_000)
    p.write_bytes(bytes(data))
    return BadSample(p, frozenset({"pixel-budget"}))


# --- lazy, cached builder -------------------------------------------------------------------


@dataclass
class Corpus:
    root: Path
    _good: dict[str, Sample] = field(default_factory=dict)
    _bad: dict[str, BadSample] = field(default_factory=dict)

    def _dir(self, name: str) -> Path:
        d = self.root / name
        d.mkdir(parents=True, exist_ok=True)
        return d

    def sample(self, name: str) -> Sample:
        if name not in self._good:
            self._good[name] = GOOD[name](self._dir(name))
        return self._good[name]

    def bad(self, name: str) -> BadSample:
        if name not in self._bad:
            self._bad[name] = BAD[name](self._dir(name))
        return self._bad[name]


# --- plain JPEGs as bytes, for the queue tests ----------------------------------------------


@functools.cache
def jpeg(width: int, height: int, seed: int = 0, *, noise: bool = False) -> bytes:
    """A JPEG of one colour (or of noise, which takes real work to convert) made from ``seed``."""
    colour = [seed * 37 % 256, seed * 91 % 256, seed * 53 % 256]
    if noise:
        bands = [pyvips.Image.gaussnoise(width, height, mean=128, sigma=40) for _ in range(3)]
        image = bands[0].bandjoin(bands[1:]) + colour
    else:
        image = pyvips.Image.black(width, height, bands=3) + colour
    return bytes(image.cast("uchar").jpegsave_buffer(Q=85))
