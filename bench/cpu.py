"""In-process CPU of ptif's default conversion against the minimal libvips call,
``tiffsave(tile=True, pyramid=True, tile_width=256, tile_height=256, compression="jpeg", Q=90)``.

Usage: cpu.py [IMAGE...]  (always two photograph-like JPEGs made here, 2000x1500 and 8000x6000:
scikit-image's coffee resized, with sensor grain). CPU is process_time, every thread of this
process, best of three runs; modules are imported before timing, as in a worker, so one-shot
``ptif convert`` start-up (numpy, tifffile, imagecodecs: about 0.15 s) is not counted here.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyvips
from skimage import data

from ptif.convert.engine import convert, init_vips

OUT = Path(__file__).parent / "out" / "cpu"


def photo(width: int, height: int, seed: int) -> Path:
    path = OUT / f"photo{width}x{height}.jpg"
    if not path.exists():
        base = pyvips.Image.new_from_array(data.coffee()).copy(interpretation="srgb")
        big = base.resize(width / base.width, vscale=height / base.height, kernel="lanczos3")
        grain = pyvips.Image.gaussnoise(width, height, sigma=4, seed=seed)
        (big + grain).cast("uchar").copy(interpretation="srgb").jpegsave(str(path), Q=92)
    return path


def best(work: Callable[[], Any], runs: int = 3) -> tuple[float, Any]:
    times, result = [], None
    for _ in range(runs):
        started = time.process_time()
        result = work()
        times.append(time.process_time() - started)
    return min(times), result


def libvips(src: Path) -> int:
    dst = OUT / "libvips.tif"
    pyvips.Image.new_from_file(str(src), access="sequential").tiffsave(
        str(dst), tile=True, pyramid=True, tile_width=256, tile_height=256,
        compression="jpeg", Q=90)  # fmt: skip
    return dst.stat().st_size


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    init_vips()
    sources = [photo(2000, 1500, 1), photo(8000, 6000, 2), *(Path(p) for p in sys.argv[1:])]
    convert(sources[0], OUT / "warm.tif")  # imports paid once, as in a worker
    ours_total = theirs_total = 0.0
    for src in sources:
        ours, result = best(lambda src=src: convert(src, OUT / "ptif.tif"))
        theirs, size = best(lambda src=src: libvips(src))
        ours_total, theirs_total = ours_total + ours, theirs_total + theirs
        print(f"{src.name:26} ptif {ours:6.3f} s {result.bytes / 1e3:7.0f} kB "
              f"{result.encoding.label:13}  libvips Q90 {theirs:6.3f} s {size / 1e3:7.0f} kB  "
              f"x{ours / theirs:.2f}", flush=True)  # fmt: skip
    print(f"{'total':26} ptif {ours_total:6.3f} s  libvips Q90 {theirs_total:6.3f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
