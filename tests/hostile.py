"""Hostile inputs for the decoder tests and benchmarks, built byte by byte at test time.

Each maker returns the bytes of one file. They are small on disk and expensive to decode: a PDF
page of 5000 x 5000 pt, PDF form XObjects nested ``depth`` deep that each draw the next one
``fanout`` times, PostScript programs that loop, grow memory or poke at the file system.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Sequence
from pathlib import Path

#: An EPS whose program never ends: Ghostscript runs until something stops it.
ENDLESS_EPS = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 100 100\n{} loop\n"

#: An EPS that allocates without end: a dictionary of ever more 1 MB strings.
GREEDY_EPS = (
    b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 100 100\n"
    b"/hoard 1 dict def 0 { 1 add dup hoard exch 1048576 string put } loop\n"
)


def scratch_filling_eps(files: int, megabytes: int, *, delete: bool = False) -> bytes:
    """An EPS that writes ``files`` temporary files of ``megabytes`` MB each into Ghostscript's
    temporary folder (the sandbox's scratch folder), each under the size limit of one file; with
    ``delete``, it deletes each file as soon as it has it, and keeps it open and writes on."""
    unlink = b"exch deletefile" if delete else b"exch pop"
    return (
        b"%%!PS-Adobe-3.0 EPSF-3.0\n%%%%BoundingBox: 0 0 72 72\n/chunk 1048576 string def\n"
        b"/kept [ 1 1 %d { pop null (w) .tempfile %s\n"
        b"  dup %d { dup chunk writestring } repeat dup flushfile } for ] def\n"
        b"0 0 72 72 rectfill showpage\n" % (files, unlink, megabytes)
    )


def noise_eps(width: int, height: int, dpi: float = 300) -> bytes:
    """An honest EPS whose page, rendered at ``dpi``, is ``width`` x ``height`` pixels of noise
    that PNG cannot compress: a strip of 8 rows of random RGB (wider than deflate's 32 KB
    window once ``width`` passes 10,923), drawn again and again down the page. Its PNG is about
    as big as its pixels."""
    strip = random.Random(1).randbytes(width * 8 * 3)
    pt = 72 / dpi
    header = (
        b"%%!PS-Adobe-3.0 EPSF-3.0\n%%%%BoundingBox: 0 0 %d %d\n"
        b"/strip %d string def currentfile strip readstring\n"
        % (-(-width * pt // 1), -(-height * pt // 1), len(strip))
    )
    draw = (
        b"\npop pop 0 1 %d { gsave %f exch %f mul translate %f %f scale\n"
        b"  %d 8 8 [%d 0 0 -8 0 8] { strip } false 3 colorimage grestore } for\nshowpage\n"
        % (-(-height // 8) - 1, 0.0, 8 * pt, width * pt, 8 * pt, width, width)
    )
    return header + strip + draw


def pdf(objects: list[bytes]) -> bytes:
    """A PDF file of ``objects`` (numbered from 1; object 1 is the catalog), with a correct
    cross-reference table."""
    out = bytearray(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    return bytes(out)


def stream(content: bytes, dictionary: bytes = b"") -> bytes:
    return b"<< %s /Length %d >>\nstream\n%s\nendstream" % (dictionary, len(content), content)


def page_pdf(width_pt: float, height_pt: float, content: bytes, resources: bytes = b"") -> bytes:
    """A one-page PDF of the given size that draws ``content``."""
    return pdf(
        [
            b"<< /Type /Catalog /Pages 2 0 R >>",
            b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 %g %g] /Resources << %s >> "
            b"/Contents 4 0 R >>" % (width_pt, height_pt, resources),
            stream(content),
        ]
    )


def big_page_pdf(side_pt: float = 5000) -> bytes:
    """Under 500 bytes: one red square on a page of ``side_pt`` points, which PDFium renders
    at 300 dpi as (side_pt / 72 * 300)² pixels (434 megapixels for 5000 pt)."""
    return page_pdf(side_pt, side_pt, b"1 0 0 rg 10 10 50 50 re f")


def nested_forms_pdf(depth: int, fanout: int = 10, side_pt: float = 200) -> bytes:
    """Form XObject ``i`` draws form ``i + 1`` ``fanout`` times, ``depth`` levels deep, and
    the last one draws a small square: ``fanout ** depth`` squares from a couple of kB."""
    first = 5  # objects 1-4: catalog, pages, page, page content
    forms = []
    for level in range(depth):
        if level == depth - 1:
            content = b"0 0 1 rg 1 1 2 2 re f"
            resources = b""
        else:
            content = b" ".join([b"q /X Do Q"] * fanout)
            resources = b"/Resources << /XObject << /X %d 0 R >> >>" % (first + level + 1)
        dictionary = b"/Type /XObject /Subtype /Form /BBox [0 0 %g %g] %s" % (
            side_pt,
            side_pt,
            resources,
        )
        forms.append(stream(content, dictionary))
    return pdf(
        [
            b"<< /Type /Catalog /Pages 2 0 R >>",
            b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 %g %g] "
            b"/Resources << /XObject << /X %d 0 R >> >> /Contents 4 0 R >>"
            % (side_pt, side_pt, first),
            stream(b"/X Do"),
            *forms,
        ]
    )


#: What :func:`snooping_eps` paints: green when it reached nothing, red when it reached anything.
SNOOP_BLIND = (0, 153, 0)
SNOOP_SAW = (255, 0, 0)


def snooping_eps(
    inside: Path,
    attack: list[str],
    writes: list[str],
    look: Sequence[str] = (),
    reads: Sequence[str] = (),
    wait_ms: int = 0,
) -> bytes:
    """An EPS that finds the files matching each glob pattern of ``attack`` and reads, then
    overwrites, every one (another image's download, say); creates or truncates each path of
    ``writes``; counts the files matching each pattern of ``look`` without opening them; and
    tries to read each file of ``reads``. It keeps at it for up to ``wait_ms`` (for files that
    appear meanwhile), then paints its 1-inch page :data:`SNOOP_SAW` if it found, read or wrote
    anything, else :data:`SNOOP_BLIND`.

    Everything it may write must be under ``inside`` (a test's own folder): a regression that
    lets the program loose, or a control run without the sandbox, then damages nothing else."""
    for path in [*attack, *writes]:
        if not path.startswith(f"{inside}/") or ".." in path:
            raise ValueError(f"{path}: an EPS under test writes only under {inside}")
    lines = [
        b"%!PS-Adobe-3.0 EPSF-3.0",
        b"%%BoundingBox: 0 0 72 72",
        b"/seen 0 def /saw { /seen seen 1 add def } def",
        b"/deadline realtime %d add def" % wait_ms,
        b"/attack { dup length string copy /victim exch def saw",
        b"  { victim (r) file closefile saw } stopped pop",
        b"  { victim (w) file dup (owned by an EPS) writestring closefile saw } stopped pop",
        b"} def",
        b"/look {",
    ]
    lines += [b"  (%s) { attack } 4096 string filenameforall" % _ps_string(p) for p in attack]
    lines += [b"  (%s) { pop saw } 4096 string filenameforall" % _ps_string(p) for p in look]
    lines += [b"  { (%s) (r) file closefile saw } stopped pop" % _ps_string(p) for p in reads]
    lines += [
        b"  { (%s) (w) file dup (owned by an EPS) writestring closefile saw } stopped pop"
        % _ps_string(p)
        for p in writes
    ]
    lines += [
        b"} def",
        b"{ look seen 0 gt realtime deadline ge or { exit } if } loop",
        b"seen 0 eq { 0 0.6 0 } { 1 0 0 } ifelse setrgbcolor 0 0 72 72 rectfill showpage",
    ]
    return b"\n".join(lines) + b"\n"


def _ps_string(text: str) -> bytes:
    return text.encode().replace(b"\\", b"\\\\").replace(b"(", b"\\(").replace(b")", b"\\)")


def big_bmp_header(width: int, height: int) -> bytes:
    """The 54-byte header of an uncompressed 24-bit BMP of ``width`` x ``height``; the pixel
    rows (``row_bytes(width) * height`` bytes) follow."""
    size = 54 + bmp_row_bytes(width) * height
    return b"BM" + struct.pack(
        "<IHHIIiiHHIIiiII", size, 0, 0, 54, 40, width, height, 1, 24, 0, size - 54, 2835, 2835,
        0, 0,
    )  # fmt: skip


def bmp_row_bytes(width: int) -> int:
    return (width * 3 + 3) // 4 * 4


def bilevel_bmp(width: int, height: int) -> tuple[bytes, int]:
    """The header and palette of a 1-bit BMP of ``width`` x ``height`` (black and white), and
    the size of the whole file: pixel rows of zero bytes (black) fill the rest."""
    row = (width + 31) // 32 * 4
    offset = 54 + 8
    size = offset + row * height
    header = b"BM" + struct.pack(
        "<IHHIIiiHHIIiiII", size, 0, 0, offset, 40, width, height, 1, 1, 0, row * height, 2835,
        2835, 2, 2,
    )  # fmt: skip
    return header + b"\x00\x00\x00\x00\xff\xff\xff\x00", size
