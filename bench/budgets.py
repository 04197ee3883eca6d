"""What each decompression bomb costs `ptif convert`: wall time, peak RSS, outcome.

Usage: .venv/bin/python bench/budgets.py [--only TEXT] [--ptif-cmd CMD] [-- FLAGS...]

The bombs are written by tests/bombs.py into bench/out/bombs/ (once; delete a file to remake
it; the set takes about two minutes and 130 MB). Each runs once through bench/measure.py, which
reports the child's own wall time and ru_maxrss. FLAGS go to `ptif convert` (default:
`--max-memory 1G`, what a small container gives each of a few workers). `--ptif-cmd` runs
another ptif, e.g. an older tree: `--ptif-cmd "env PYTHONPATH=/old/src .venv/bin/python -m ptif"`.
Some bombs take 1-2.5 GB when they are not refused.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import pyvips

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
import bombs  # noqa: E402

OUT = ROOT / "bench" / "out"
MEASURE = ROOT / "bench" / "measure.py"


def _flat(width: int, height: int) -> pyvips.Image:
    return (pyvips.Image.black(width, height, bands=3) + [200, 100, 50]).cast("uchar")


Writer = Callable[[Path], object]
BOMBS: dict[str, tuple[str, Writer]] = {
    "forged progressive JPEG 20000x20000": (
        "prog_forged.jpg", lambda p: bombs.forged_jpeg(p, 20000, 20000, progressive=True)),
    "forged baseline JPEG 20000x20000": (
        "base_forged.jpg", lambda p: bombs.forged_jpeg(p, 20000, 20000, progressive=False)),
    "progressive JPEG 20000x20000": (
        "prog_flat.jpg", lambda p: bombs.flat_jpeg(p, 20000, 20000, progressive=True)),
    "interlaced PNG 16-bit RGBA 12000x12000": (
        "interlaced.png", lambda p: bombs.interlaced_png(p, 12000, 12000)),
    "JPEG 20000x20000, EXIF orientation 6": (
        "rot6.jpg", lambda p: bombs.flat_jpeg(p, 20000, 20000, orientation=6)),
    "TIFF 60000x50000, one-row strips sharing data": (
        "strips.tif", lambda p: bombs.constant_tiff(p, 60000, 50000, rows_per_strip=1)),
    "TIFF 16000x16000 RGB, separate planes in one strip": (
        "separate.tif", lambda p: bombs.constant_tiff(p, 16000, 16000, bands=3, separate=True)),
    "TIFF 60000x16384 RGB, 4096x4096 tiles": (
        "tiles.tif", lambda p: bombs.constant_tiff(p, 60000, 16384, bands=3, tile=4096)),
    "WebP 16000x16000": ("big.webp", lambda p: _flat(16000, 16000).webpsave(str(p), Q=80)),
    "AVIF 8000x8000": (
        "big.avif", lambda p: _flat(8000, 8000).heifsave(str(p), compression="av1")),
    "GIF 17000x17000": ("big.gif", lambda p: _flat(17000, 17000).gifsave(str(p))),
    "progressive JPEG 16000x16000 grey, 882 scans": (
        "scans.jpg", lambda p: bombs.scan_bomb_jpeg(p, 16000)),
    "JPEG 16x16 with 6000 APP13 segments of 64 KB": (
        "metadata.jpg", lambda p: bombs.metadata_bomb_jpeg(p, 6000)),
    "control: noise JPEG 8000x32000": (
        "noise.jpg", lambda p: bombs.noisy_jpeg(p, 8000, 32000)),
}  # fmt: skip


def source(name: str) -> Path:
    filename, writer = BOMBS[name]
    path = OUT / "bombs" / filename
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        writer(path)
    return path


def run(command: list[str]) -> tuple[dict[str, float], str]:
    with tempfile.TemporaryDirectory() as work:
        result, log = Path(work) / "result.json", Path(work) / "log.txt"
        with open(log, "w") as stream:
            subprocess.run(
                [sys.executable, str(MEASURE), str(result), "900", *command],
                stdout=stream,
                stderr=subprocess.STDOUT,
                check=False,
            )
        lines = log.read_text().strip().splitlines()
        return json.loads(result.read_text()), (lines[0] if lines else "")


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="bombs whose name contains this")
    parser.add_argument("--ptif-cmd", default=f"{sys.executable} -m ptif")
    parser.add_argument("flags", nargs="*", default=["--max-memory", "1G"])
    args = parser.parse_args(argv)
    for name in BOMBS:
        if args.only not in name:
            continue
        src = source(name)
        with tempfile.TemporaryDirectory() as out:
            command = [*shlex.split(args.ptif_cmd), "convert", str(src), f"{out}/o.tif"]
            figures, line = run([*command, *args.flags])
        print(
            f"{name} [{src.stat().st_size:,} B]: exit {figures['exit_code']}, "
            f"{figures['wall_s']:.2f} s, {figures['peak_rss_bytes'] / 2**20:,.0f} MiB | "
            f"{line[:160]}",
            flush=True,
        )


if __name__ == "__main__":
    main(sys.argv[1:])
