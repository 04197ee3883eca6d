"""Bytes and SSIM of ptif's default against libvips at Q90 and Q85 and GDAL's COG (JPEG Q90).

Usage: quality.py  (scikit-image's photographs, plus a generated star field, a map with thin
coloured lines and a page with red rubrication). SSIM: the full-resolution level against the
decoded source, scikit-image's structural_similarity per RGB channel, then the mean.
"""

from __future__ import annotations

import random
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pyvips
from skimage import data
from skimage.metrics import structural_similarity

OUT = Path(__file__).parent / "out" / "quality"
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "retina", "hubble_deep_field",
          "immunohistochemistry")  # fmt: skip


def generated(name: str) -> pyvips.Image:
    rng = random.Random(name)
    if name == "stars":
        image = pyvips.Image.black(1500, 1000, bands=3)
        for _ in range(8000):
            colour = [rng.randrange(40, 256) for _ in range(3)]
            image = image.draw_rect(colour, rng.randrange(1500), rng.randrange(1000), 1, 1)
        return image.gaussblur(0.5).cast("uchar")
    if name == "map":
        image = pyvips.Image.black(1500, 1000, bands=3) + [236, 226, 200]
        for step in range(0, 1500, 11):
            image = image.draw_line([200, 20, 20], step, 0, step // 2, 999)
        for step in range(0, 1000, 9):
            image = image.draw_line([20, 40, 200], 0, step, 1499, (step * 3) % 1000)
        return image.cast("uchar")
    text = pyvips.Image.text(" ".join(["lorem ipsum dolor"] * 400), width=1300, dpi=150)
    red = pyvips.Image.text("INCIPIT LIBER PRIMVS", dpi=300)
    page = pyvips.Image.black(1500, 1000, bands=3) + [240, 232, 214]
    ink = text.embed(100, 200, 1500, 1000)
    page = page * (1 - ink / 255) + ink / 255 * [30, 25, 20]
    rubric = red.embed(100, 60, 1500, 1000)
    return (page * (1 - rubric / 255) + rubric / 255 * [190, 20, 20]).cast("uchar")


def sources() -> list[tuple[str, Path]]:
    OUT.mkdir(parents=True, exist_ok=True)
    found = []
    for name in (*PHOTOS, "stars", "map", "rubrication"):
        path = OUT / f"{name}.png"
        if not path.exists():
            array = getattr(data, name)() if name in PHOTOS else None
            image = pyvips.Image.new_from_array(array) if array is not None else generated(name)
            image.copy(interpretation="srgb").pngsave(str(path))
        found.append((name, path))
    return found


def timed(command: list[str]) -> tuple[float, float]:
    """Wall and CPU seconds (user + system, the child and its own children) of one command."""
    before, started = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    wall, after = time.perf_counter() - started, resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return wall, cpu


def vips(src: Path, dst: Path, quality: int) -> list[str]:
    code = ("import sys, pyvips; pyvips.Image.new_from_file(sys.argv[1], access='sequential')"
            ".tiffsave(sys.argv[2], tile=True, pyramid=True, tile_width=256, tile_height=256, "
            f"compression='jpeg', Q={quality})")  # fmt: skip
    return [sys.executable, "-c", code, str(src), str(dst)]


def measure(src: Path, out: Path) -> float:
    a = pyvips.Image.new_from_file(str(src)).numpy()
    b = pyvips.Image.new_from_file(str(out), page=0).numpy()[..., :3]
    return float(structural_similarity(a, b, channel_axis=2, data_range=255))


def main() -> int:
    ptif = str(Path(sys.executable).with_name("ptif"))
    tools = {
        "ptif": lambda s, d: [ptif, "convert", "--force", str(s), str(d)],
        "vips-q90": lambda s, d: vips(s, d, 90),
        "vips-q85": lambda s, d: vips(s, d, 85),
    }
    if shutil.which("gdal_translate"):
        tools["gdal-cog-q90"] = lambda s, d: ["gdal_translate", "-q", "-of", "COG", "-co",
            "COMPRESS=JPEG", "-co", "QUALITY=90", str(s), str(d)]  # fmt: skip
    totals = {tool: [0, 0.0, 1.0, 0.0, 0.0] for tool in tools}  # bytes, ssim sum, min, wall, cpu
    print(f"{'image':22}" + "".join(f"{t:>24}" for t in tools))
    rows = sources()
    for name, src in rows:
        cells = []
        for tool, command in tools.items():
            dst = OUT / f"{name}.{tool}.tif"
            dst.unlink(missing_ok=True)
            wall, cpu = timed(command(src, dst))
            size, score = dst.stat().st_size, measure(src, dst)
            total = totals[tool]
            total[0] += size
            total[1] += score
            total[2] = min(total[2], score)
            total[3] += wall
            total[4] += cpu
            cells.append(f"{size / 1000:>9.0f} kB  SSIM {score:.3f}")
        print(f"{name:22}" + "".join(f"{c:>24}" for c in cells), flush=True)
    base = totals["vips-q90"]
    print(f"{'total':22}" + "".join(f"{t[0] / 1000:>9.0f} kB  mean {t[1] / len(rows):.3f}"
                                    for t in totals.values()))  # fmt: skip
    ours = totals["ptif"]
    ratio, mean = ours[0] / base[0], ours[1] / len(rows)
    verdicts = [
        (ratio <= 0.45, f"total bytes {ratio:.2f}x of libvips Q90 RGB (target <= 0.45x)"),
        (mean >= 0.94, f"mean SSIM {mean:.3f} (target >= 0.94)"),
        (ours[2] >= 0.90, f"lowest SSIM {ours[2]:.3f} (target >= 0.90)"),
        (ours[4] <= base[4], f"ptif {ours[4]:.2f} s CPU against libvips Q90 {base[4]:.2f} s "
                             "(target: no slower; CPU is the fair measure on shared cores)"),
        (ours[3] <= base[3], f"ptif {ours[3]:.2f} s wall against libvips Q90 {base[3]:.2f} s, "
                             "all images, one run each (target: no slower)"),
    ]  # fmt: skip
    print()
    for ok, text in verdicts:
        print(f"{'PASS' if ok else 'FAIL'}  {text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
