"""Bytes, SSIM and conversion time of ptif's default profile against libvips and GDAL.

Usage: quality.py [--repeat N] [--skip-large]

Images: scikit-image's photographs, three generated scans of archive originals (bench/scans.py:
a star plate, a hand-coloured map, a rubricated manuscript leaf) and, for time and throughput,
bench/run.py's 48-megapixel photograph (``photo48``). Each is converted by

- ptif: ``ptif.convert.engine.convert`` with the default profile (what ``ptif convert`` calls);
- libvips Q90 and Q85: the minimal call, ``new_from_file(access="sequential")`` then
  ``tiffsave(tile, pyramid, 256x256, jpeg, Q)``; Q90 is ptif 0.1's default (RGB JPEG tiles);
- GDAL's COG driver with JPEG at quality 90 (``gdal_translate -of COG``), when it is installed.

SSIM: the full-resolution level against the decoded source, scikit-image's
``structural_similarity`` per RGB channel, then the mean (computed in strips of rows, which
gives the same figure with bounded memory). Time: ptif's conversion and the libvips Q90 call,
in this one process after a warm-up run of each, alternating which goes first, the median of
``--repeat`` runs of each; CPU is user + system time of all threads (what counts on shared
cores), wall is printed beside it. Interpreter start-up and argument parsing are left out:
``ptif convert``'s start-up is printed on its own line.

The byte and SSIM targets are judged on the ten images of the set; ``photo48`` (a synthetic
JPEG whose bytes would outweigh all the others) is shown below them and counts for time only.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyvips
from images import INPUTS, ensure
from scans import GENERATORS
from skimage import data
from skimage.metrics import structural_similarity

from ptif.convert.engine import convert
from ptif.convert.profiles import get_profile

BENCH = Path(__file__).resolve().parent
OUT = BENCH / "out" / "quality"
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "retina", "hubble_deep_field",
          "immunohistochemistry")  # fmt: skip
LARGE = "photo48"
RECIPE = get_profile("default").recipe
STRIP = 512  # rows of SSIM at a time
TARGETS = {"bytes": 0.45, "mean": 0.94, "lowest": 0.90}


def sources(large: bool) -> list[tuple[str, Path]]:
    """The set's images as PNG files (made on first use), then ``photo48`` if asked for."""
    OUT.mkdir(parents=True, exist_ok=True)
    found = []
    for name in (*PHOTOS, *GENERATORS):
        path = OUT / f"{name}.png"
        if not path.exists():
            image = GENERATORS[name]() if name in GENERATORS else from_skimage(name)
            image.pngsave(str(path))
        found.append((name, path))
    if large:
        item = next(i for i in INPUTS if i.name == LARGE)
        ensure(item, BENCH / "out" / "inputs")
        found.append((LARGE, BENCH / "out" / "inputs" / item.filename))
    return found


def from_skimage(name: str) -> pyvips.Image:
    return pyvips.Image.new_from_array(getattr(data, name)()).copy(interpretation="srgb")


# conversions -----------------------------------------------------------------------------------


def ptif(src: Path, dst: Path) -> str:
    """ptif's default; returns the encoding it chose, as the output's metadata records it."""
    return convert(src, dst, RECIPE).metadata()["ptif-encoding"]


def vips(quality: int) -> Callable[[Path, Path], str]:
    def run(src: Path, dst: Path) -> str:
        pyvips.Image.new_from_file(str(src), access="sequential").tiffsave(
            str(dst), tile=True, pyramid=True, tile_width=256, tile_height=256,
            compression="jpeg", Q=quality,
        )  # fmt: skip
        return f"jpeg-q{quality}-{'rgb' if quality >= 90 else '420'}"

    return run


def gdal(src: Path, dst: Path) -> str:
    subprocess.run(["gdal_translate", "-q", "-of", "COG", "-co", "COMPRESS=JPEG", "-co",
                    "QUALITY=90", str(src), str(dst)], check=True)  # fmt: skip
    return "jpeg-q90-ycbcr"


def cpu_seconds() -> float:
    """User + system time of this process's threads and of its waited-for children."""
    own, children = (resource.getrusage(who) for who in (resource.RUSAGE_SELF,
                                                         resource.RUSAGE_CHILDREN))  # fmt: skip
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


class Outcome:
    """One tool's output of one image: its encoding, bytes and SSIM, and its median times."""

    def __init__(self, label: str, wall: float | None = None, cpu: float | None = None):
        self.label, self.wall, self.cpu = label, wall, cpu
        self.bytes, self.ssim = 0, 0.0


def timed(run: Callable[[Path, Path], str], src: Path, dst: Path) -> tuple[float, float, str]:
    """Wall and CPU seconds of one conversion, and the encoding it reports."""
    dst.unlink(missing_ok=True)
    cpu, started = cpu_seconds(), time.perf_counter()
    label = run(src, dst)
    return time.perf_counter() - started, cpu_seconds() - cpu, label


def race(src: Path, name: str, repeat: int) -> dict[str, Outcome]:
    """Median wall and CPU of ptif and libvips Q90, after one warm-up run each, alternating
    which goes first. The outputs of the last runs stay for :func:`measure`."""
    runs = {"ptif": ptif, "vips-q90": vips(90)}
    labels = {tool: timed(run, src, OUT / f"{name}.{tool}.tif")[2] for tool, run in runs.items()}
    samples: dict[str, list[tuple[float, float]]] = {tool: [] for tool in runs}
    for round_ in range(repeat):
        for tool in list(runs) if round_ % 2 == 0 else list(runs)[::-1]:
            wall, cpu, _ = timed(runs[tool], src, OUT / f"{name}.{tool}.tif")
            samples[tool].append((wall, cpu))
    return {tool: Outcome(labels[tool], statistics.median(s[0] for s in got),
                          statistics.median(s[1] for s in got))
            for tool, got in samples.items()}  # fmt: skip


def startup() -> float:
    """Median wall seconds of ``ptif convert --help``: the CLI's start-up, no conversion."""
    command = [str(Path(sys.executable).with_name("ptif")), "convert", "--help"]
    walls = []
    for _ in range(5):
        started = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        walls.append(time.perf_counter() - started)
    return statistics.median(walls)


# SSIM ------------------------------------------------------------------------------------------


def pixels(path: Path) -> np.ndarray:
    image = pyvips.Image.new_from_file(str(path), page=0) if path.suffix == ".tif" else \
        pyvips.Image.new_from_file(str(path))  # fmt: skip
    return np.asarray(image.numpy())[..., :3]


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """scikit-image's structural_similarity (7x7 windows, per channel, then the mean), in
    strips of :data:`STRIP` rows: each strip is read with the 3 rows either side its windows
    need, and only the rows the whole image's figure counts (3 in from every edge) are kept."""
    pad, height = 3, a.shape[0]
    total, count = 0.0, 0
    for channel in range(a.shape[2]):
        for top in range(pad, height - pad, STRIP):
            bottom = min(top + STRIP, height - pad)
            _, full = structural_similarity(a[top - pad : bottom + pad, :, channel],
                                            b[top - pad : bottom + pad, :, channel],
                                            data_range=255, full=True)  # fmt: skip
            kept = full[pad : pad + bottom - top, pad:-pad]
            total += float(kept.sum(dtype=np.float64))
            count += kept.size
    return total / count


# report ----------------------------------------------------------------------------------------


def measure(name: str, src: Path, others: dict[str, Callable[[Path, Path], str]],
            repeat: int) -> dict[str, Outcome]:  # fmt: skip
    """Every tool's outcome on one image: timed for ptif and libvips Q90, once for the others."""
    outcomes = race(src, name, repeat)
    for tool, run in others.items():
        outcomes[tool] = Outcome(timed(run, src, OUT / f"{name}.{tool}.tif")[2])
    reference = pixels(src)
    for tool, outcome in outcomes.items():
        dst = OUT / f"{name}.{tool}.tif"
        outcome.bytes, outcome.ssim = dst.stat().st_size, ssim(reference, pixels(dst))
    return outcomes


def quality_cell(outcome: Outcome) -> str:
    return f"{outcome.bytes / 1000:>7.0f} kB {outcome.ssim:.3f}"


def quality_row(name: str, outcomes: dict[str, Outcome]) -> str:
    ours = outcomes["ptif"].label
    return f"{name:21}{ours:>14}" + "".join(f"{quality_cell(o):>19}" for o in outcomes.values())


def time_row(name: str, ptif_cpu: float, vips_cpu: float, ptif_wall: float,
             vips_wall: float) -> str:  # fmt: skip
    return (f"{name:21}{ptif_cpu:>9.3f}{vips_cpu:>9.3f}{ptif_cpu / vips_cpu:>7.2f}x"
            f"{ptif_wall:>11.3f}{vips_wall:>9.3f}{ptif_wall / vips_wall:>7.2f}x")  # fmt: skip


def times(rows: dict[str, dict[str, Outcome]]) -> tuple[float, float, float, float]:
    """Summed median CPU and wall of ptif and libvips Q90 over ``rows``."""

    def total(tool: str, field: str) -> float:
        return sum(getattr(outcomes[tool], field) or 0.0 for outcomes in rows.values())

    return total("ptif", "cpu"), total("vips-q90", "cpu"), total("ptif", "wall"), \
        total("vips-q90", "wall")  # fmt: skip


def print_quality(rows: dict[str, dict[str, Outcome]], large: dict[str, Outcome] | None) -> None:
    tools = list(next(iter(rows.values())))
    print(f"\n{'bytes, SSIM':21}{'ptif chose':>14}" + "".join(f"{t:>19}" for t in tools))
    for name, outcomes in rows.items():
        print(quality_row(name, outcomes))
    sums = {t: sum(o[t].bytes for o in rows.values()) for t in tools}
    means = {t: statistics.mean(o[t].ssim for o in rows.values()) for t in tools}
    lowest = {t: min(o[t].ssim for o in rows.values()) for t in tools}
    print(f"{'total, mean SSIM':35}" + "".join(f"{sums[t] / 1000:>10.0f} kB {means[t]:.3f}"
                                               for t in tools))  # fmt: skip
    print(f"{'lowest SSIM':35}" + "".join(f"{lowest[t]:>19.3f}" for t in tools))
    if large:
        print(quality_row(f"{LARGE} (not summed)", large))


def print_times(rows: dict[str, dict[str, Outcome]], large: dict[str, Outcome] | None,
                repeat: int) -> tuple[float, float, float, float]:  # fmt: skip
    """The time table; returns the totals the verdict is on (the set and ``photo48``)."""
    print(f"\nconversion, median of {repeat} warm runs in-process (seconds)")
    print(f"{'':21}{'ptif CPU':>9}{'Q90 CPU':>9}{'ratio':>8}{'ptif wall':>11}{'Q90 wall':>9}"
          f"{'ratio':>8}")  # fmt: skip
    for name, outcomes in rows.items():
        print(time_row(name, *times({name: outcomes})))
    print(time_row("the set", *times(rows)))
    everything = rows if large is None else {**rows, LARGE: large}
    if large:
        print(time_row(LARGE, *times({LARGE: large})))
        print(time_row("all", *times(everything)))
    return times(everything)


def verdicts(rows: dict[str, dict[str, Outcome]], spent: tuple[float, ...]) -> None:
    ours = [o["ptif"] for o in rows.values()]
    ratio = sum(o.bytes for o in ours) / sum(o["vips-q90"].bytes for o in rows.values())
    mean, lowest = statistics.mean(o.ssim for o in ours), min(o.ssim for o in ours)
    ptif_cpu, vips_cpu, ptif_wall, vips_wall = spent
    found = [
        (ratio <= TARGETS["bytes"], f"total bytes {ratio:.2f}x of libvips Q90 RGB "
                                    f"(target <= {TARGETS['bytes']}x)"),
        (mean >= TARGETS["mean"], f"mean SSIM {mean:.3f} (target >= {TARGETS['mean']})"),
        (lowest >= TARGETS["lowest"], f"lowest SSIM {lowest:.3f} (target >= "
                                      f"{TARGETS['lowest']})"),
        (ptif_cpu <= vips_cpu and ptif_wall <= vips_wall,
         f"conversion {ptif_cpu:.2f} s CPU, {ptif_wall:.2f} s wall against libvips Q90's "
         f"{vips_cpu:.2f} s, {vips_wall:.2f} s (target: no slower in either)"),
    ]  # fmt: skip
    print()
    for ok, text in found:
        print(f"{'PASS' if ok else 'FAIL'}  {text}")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="timed runs of each (median)")
    parser.add_argument("--skip-large", action="store_true", help=f"leave out {LARGE}")
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    pyvips.cache_set_max(0)  # as ptif sets it: no run reuses another's decoded image
    others = {"vips-q85": vips(85)}
    if shutil.which("gdal_translate"):
        others["gdal-cog-q90"] = gdal
    else:
        print("gdal_translate not found (make system-deps installs gdal-bin): no GDAL column",
              file=sys.stderr)  # fmt: skip
    rows: dict[str, dict[str, Outcome]] = {}
    large = None
    for name, src in sources(not args.skip_large):
        repeat = max(1, args.repeat // 2) if name == LARGE else args.repeat
        print(f"{name}...", file=sys.stderr, flush=True)
        outcomes = measure(name, src, others, repeat)
        if name == LARGE:
            large = outcomes
        else:
            rows[name] = outcomes
    print_quality(rows, large)
    spent = print_times(rows, large, args.repeat)
    print(f"ptif convert's start-up (`ptif convert --help`), not counted: {startup():.3f} s")
    verdicts(rows, spent)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
