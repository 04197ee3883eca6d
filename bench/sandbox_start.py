"""How long a decoder child takes to start and end: ``python bench/sandbox_start.py``.

Times :func:`ptif.convert.sandbox.run` on a 64x64 BMP decoded by Pillow in the child (``call``
mode, what BMP, JPEG 2000 and CIELAB TIFF pay) and on ``true`` (``exec`` mode, what Ghostscript
pays before it starts), as the median of ``--repeat`` runs, in a temporary folder.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from PIL import Image

from ptif.convert import rasterise, sandbox


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=30)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        tempfile.tempdir = folder
        bmp = Path(folder) / "x.bmp"
        Image.new("RGB", (64, 64)).save(bmp)
        budget = sandbox.Budget(str(bmp), "BMP", "Pillow", 1 << 30, 60)
        pixels, memory = 10**9, 1 << 30
        call = ["ptif.convert.rasterise:decode", "pillow", "1", str(pixels), str(memory), "BMP"]

        def decode() -> None:
            sandbox.run(
                call, bmp, budget, lambda out: rasterise.read_raster(out, pixels, memory), call=True
            )

        def nothing() -> None:
            sandbox.run(["true"], bmp, budget, lambda out: out.read_to_end(1))

        for name, job in (("call: Pillow decodes a 64x64 BMP", decode), ("exec: true", nothing)):
            job()
            times = []
            for _ in range(args.repeat):
                started = time.perf_counter()
                job()
                times.append(time.perf_counter() - started)
            print(
                f"{name}: median {statistics.median(times) * 1000:.1f} ms, "
                f"min {min(times) * 1000:.1f} ms ({args.repeat} runs)"
            )


if __name__ == "__main__":
    main()
