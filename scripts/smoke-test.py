#!/usr/bin/env python3
"""Smoke test of a ptif installation: a tiny image of each format, converted with `ptif convert`.

Each sample is written with Pillow (and pillow-heif for HEIC), a different library from the
readers ptif uses, in one known colour. Each pyramid is then reopened with Pillow and checked:
a TIFF, tiled, more than one level, the expected size and colour, and the format ptif says it
read. It runs as the last stage of the Dockerfile (a failure fails the build) and in the tests,
against the local installation.

    python scripts/smoke-test.py             # every format
    python scripts/smoke-test.py png pdf     # only these
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PIL import Image

WIDTH, HEIGHT = 300, 200
COLOUR = (200, 40, 60)
#: How far a lossy codec and colour management may move a channel.
TOLERANCE = 14
#: Formats rendered from vector pages at 300 dpi: the size scales, the aspect ratio stays.
RENDERED = {"pdf", "eps"}


def _heic(image: Image.Image, path: Path) -> None:
    import pillow_heif

    pillow_heif.register_heif_opener()
    image.save(path, format="HEIF", quality=90)


def _saver(format_name: str, **options: Any) -> Callable[[Image.Image, Path], None]:
    def save(image: Image.Image, path: Path) -> None:
        image.save(path, format=format_name, **options)

    return save


#: Format as `ptif convert --json` names it → (file extension, writer).
SAMPLES: dict[str, tuple[str, Callable[[Image.Image, Path], None]]] = {
    "jpeg": (".jpg", _saver("JPEG", quality=95)),
    "png": (".png", _saver("PNG")),
    "tiff": (".tif", _saver("TIFF", compression="tiff_lzw")),
    "bmp": (".bmp", _saver("BMP")),
    "gif": (".gif", _saver("GIF")),
    "webp": (".webp", _saver("WEBP", lossless=True)),
    "pdf": (".pdf", _saver("PDF", resolution=72.0)),
    "eps": (".eps", _saver("EPS")),
    "jp2": (".jp2", _saver("JPEG2000", irreversible=False)),
    "heic": (".heic", _heic),
}


def make_sample(name: str, folder: Path) -> Path:
    extension, save = SAMPLES[name]
    path = folder / f"sample{extension}"
    save(Image.new("RGB", (WIDTH, HEIGHT), COLOUR), path)
    return path


def ptif_command() -> list[str]:
    """The `ptif` beside this Python (a venv or the image), else `python -m ptif`."""
    found = shutil.which("ptif", path=str(Path(sys.executable).parent))
    return [found] if found else [sys.executable, "-m", "ptif"]


def convert(source: Path, target: Path) -> dict[str, Any]:
    command = [*ptif_command(), "convert", str(source), str(target), "--json", "-q"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0:
        raise AssertionError(f"ptif convert exited {done.returncode}: {done.stderr.strip()}")
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def pyramid_problems(name: str, path: Path, report: dict[str, Any]) -> list[str]:
    """What is wrong with the pyramid at ``path``, read back with Pillow; empty if nothing."""
    problems = []
    if report.get("source_format") != name:
        problems.append(f"ptif read it as {report.get('source_format')!r}")
    with Image.open(path) as image:
        if image.format != "TIFF":
            return [*problems, f"the output is {image.format}, not a TIFF"]
        if 322 not in getattr(image, "tag_v2", {}):  # TileWidth
            problems.append("the output is not tiled")
        if getattr(image, "n_frames", 1) < 2:
            problems.append("the output has a single level, not a pyramid")
        problems += _size_problems(name, image.size)
        problems += _colour_problems(image)
    return problems


def _size_problems(name: str, size: tuple[int, int]) -> list[str]:
    width, height = size
    if name in RENDERED:
        ratio = width / height
        expected = WIDTH / HEIGHT
        ok = abs(ratio - expected) < 0.02 * expected and width >= WIDTH
        return [] if ok else [f"rendered {width}x{height}, not {WIDTH}:{HEIGHT} at 300 dpi"]
    return [] if size == (WIDTH, HEIGHT) else [f"{width}x{height}, not {WIDTH}x{HEIGHT}"]


def _colour_problems(image: Image.Image) -> list[str]:
    centre = image.convert("RGB").getpixel((image.width // 2, image.height // 2))
    assert isinstance(centre, tuple)
    off = max(abs(a - b) for a, b in zip(centre, COLOUR, strict=True))
    return [] if off <= TOLERANCE else [f"the centre is {centre}, not {COLOUR}"]


def check(name: str, folder: Path) -> str | None:
    """Convert one sample; a line saying what went wrong, or None."""
    try:
        source = make_sample(name, folder)
        target = folder / f"{name}.tif"
        report = convert(source, target)
        problems = pyramid_problems(name, target, report)
    except Exception as error:  # reported, and the run fails
        problems = [f"{type(error).__name__}: {error}"]
    if problems:
        return f"FAIL {name}: {'; '.join(problems)}"
    levels = len(report["levels"])
    print(
        f"ok   {name:5} {report['width']}x{report['height']}, {levels} levels, {report['decoder']}"
    )
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("formats", nargs="*", metavar="FORMAT", help=", ".join(SAMPLES))
    formats = parser.parse_args(argv).formats or list(SAMPLES)
    unknown = sorted(set(formats) - set(SAMPLES))
    if unknown:
        parser.error(f"unknown format(s) {', '.join(unknown)}; choose from {', '.join(SAMPLES)}")
    with tempfile.TemporaryDirectory(prefix="ptif-smoke-") as work:
        failures = [f for name in formats if (f := check(name, _folder(work, name)))]
    for failure in failures:
        print(failure, file=sys.stderr)
    print(f"smoke test: {len(formats) - len(failures)} of {len(formats)} formats converted")
    return 1 if failures else 0


def _folder(work: str, name: str) -> Path:
    folder = Path(work) / name
    folder.mkdir()
    return folder


if __name__ == "__main__":
    sys.exit(main())
