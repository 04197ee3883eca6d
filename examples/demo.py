"""`make demo`: make a few awkward sample scans, then turn each into a pyramid with `ptif convert`.

Samples go to ptif-data/source, pyramids to ptif-data/images (the folder stores' defaults).
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pyvips
from PIL import Image

ROOT = Path("ptif-data")
SOURCE, IMAGES = ROOT / "source", ROOT / "images"


def photo(width: int, height: int) -> pyvips.Image:
    """A smooth, photo-like sRGB image: gradients, rings and a little grain."""
    xy = pyvips.Image.xyz(width, height)
    x, y = xy[0], xy[1]
    red = x * (255 / width)
    green = y * (255 / height)
    blue = ((x - width / 2) ** 2 + (y - height / 2) ** 2) ** 0.5 % 64 * 4
    grain = pyvips.Image.gaussnoise(width, height, mean=0, sigma=6)
    rgb = red.bandjoin([green, blue]) + grain
    return rgb.cast("uchar").copy(interpretation="srgb")


def make_samples() -> list[Path]:
    folder = SOURCE / "Fonds Émile" / "box 1"
    folder.mkdir(parents=True, exist_ok=True)
    base = photo(2400, 1600)
    rotated = base.copy()
    rotated.set_type(pyvips.GValue.gint_type, "orientation", 6)
    samples = {
        "letter 1897 (camera, rotated).jpg": lambda p: rotated.jpegsave(p, Q=90),
        "map CMYK.tif": lambda p: base.icc_transform("cmyk").tiffsave(p, compression="lzw"),
        "negative 16-bit with alpha.png": lambda p: _sixteen_bit_alpha(base).pngsave(p),
        "ledger page.bmp": lambda p: Image.fromarray(base.numpy()).quantize(64).save(p),
        "pamphlet.pdf": _pdf,
    }
    paths = []
    for name, write in samples.items():
        path = folder / name
        write(str(path))
        paths.append(path)
    return paths


def _sixteen_bit_alpha(base: pyvips.Image) -> pyvips.Image:
    wide = (base.cast("ushort") * 257).copy(interpretation="rgb16")
    alpha = (pyvips.Image.xyz(base.width, base.height)[0] * (65535 / base.width)).cast("ushort")
    return wide.bandjoin(alpha)


def _pdf(path: str) -> None:
    pages = [Image.new("RGB", (850, 1100), colour) for colour in ("#f4ecd8", "#d8e4f4")]
    pages[0].save(path, save_all=True, append_images=pages[1:], resolution=100)


def ptif(*arguments: str, check: bool = True) -> int:
    command = [str(Path(sys.executable).with_name("ptif")), *arguments]
    print("\n$ ptif", " ".join(shlex.quote(a) for a in arguments), flush=True)
    sys.stdout.flush()
    done = subprocess.run(command, check=False)
    if check and done.returncode != 0:
        raise SystemExit(f"demo: 'ptif {arguments[0]}' exited with {done.returncode}")
    return done.returncode


def main() -> None:
    shutil.rmtree(ROOT, ignore_errors=True)
    sources = make_samples()
    (SOURCE / "Fonds Émile" / "box 1" / "torn page.jpg").write_bytes(b"\xff\xd8\xff\xe0 cut short")
    print(f"Made {len(sources)} sample images (and one broken file) in {SOURCE}/")
    ptif("mark")
    ptif("process", check=False)
    ptif("status")
    print(f"\nPyramids are in {IMAGES.resolve()}/:")
    for pyramid in sorted(IMAGES.rglob("*.tif")):
        print(f"  {pyramid.relative_to(IMAGES)}")
    print(
        "The broken file has a failure record in ptif-data/process/failed/ "
        "('ptif retry' re-queues it);\nrun reports are in ptif-data/process/reports/."
    )


if __name__ == "__main__":
    main()
