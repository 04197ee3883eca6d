"""`make demo`: make a few awkward sample scans, then queue and convert them with ptif.

Everything happens in its own folder, ./ptif-demo (source/, process/, images/), never in
./ptif-data, where a real run on folder stores keeps its stores by default. The stores are given
as flags and the environment's and ptif.toml's ptif settings are left out, so the demo cannot
reach a real store either. It lists what it made in ptif-demo/.ptif-demo-files; the next run
(and `make clean`, through `--clean`) deletes exactly those files and nothing else, and refuses
to start while ptif-demo holds anything it did not make.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path("ptif-demo")
SOURCE, PROCESS, IMAGES = ROOT / "source", ROOT / "process", ROOT / "images"
#: What the demo made, one path a line relative to ROOT: all it ever deletes.
MANIFEST = ROOT / ".ptif-demo-files"
#: An empty settings file, so that a ./ptif.toml of a real set-up is not read.
SETTINGS = ROOT / "ptif-demo.toml"
STORES = ("--source", str(SOURCE), "--process", str(PROCESS), "--images", str(IMAGES))


def photo(width: int, height: int) -> Any:
    """A smooth, photo-like sRGB image: gradients, rings and a little grain."""
    import pyvips

    xy = pyvips.Image.xyz(width, height)
    x, y = xy[0], xy[1]
    red = x * (255 / width)
    green = y * (255 / height)
    blue = ((x - width / 2) ** 2 + (y - height / 2) ** 2) ** 0.5 % 64 * 4
    grain = pyvips.Image.gaussnoise(width, height, mean=0, sigma=6)
    rgb = red.bandjoin([green, blue]) + grain
    return rgb.cast("uchar").copy(interpretation="srgb")


def make_samples() -> list[Path]:
    import pyvips
    from PIL import Image

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


def _sixteen_bit_alpha(base: Any) -> Any:
    import pyvips

    wide = (base.cast("ushort") * 257).copy(interpretation="rgb16")
    alpha = (pyvips.Image.xyz(base.width, base.height)[0] * (65535 / base.width)).cast("ushort")
    return wide.bandjoin(alpha)


def _pdf(path: str) -> None:
    from PIL import Image

    pages = [Image.new("RGB", (850, 1100), colour) for colour in ("#f4ecd8", "#d8e4f4")]
    pages[0].save(path, save_all=True, append_images=pages[1:], resolution=100)


def ptif(*arguments: str, check: bool = True) -> int:
    command = [str(Path(sys.executable).with_name("ptif")), *arguments]
    print("\n$ ptif", " ".join(shlex.quote(a) for a in arguments), flush=True)
    done = subprocess.run(command, check=False, env=_demo_environment())
    if check and done.returncode != 0:
        raise SystemExit(f"demo: 'ptif {arguments[0]}' exited with {done.returncode}")
    return done.returncode


def _demo_environment() -> dict[str, str]:
    """This environment without the variables that name ptif's stores and settings."""
    from ptif.config import ENVIRONMENT_VARIABLES, STOP_GRACE_VARIABLE

    left_out = {*ENVIRONMENT_VARIABLES, STOP_GRACE_VARIABLE}
    return {k: v for k, v in os.environ.items() if k not in left_out}


def made_by_demo() -> list[Path]:
    """What the manifest lists, deepest first; [] when there is none."""
    try:
        names = MANIFEST.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []
    paths = [Path(name) for name in names if name]
    inside = [p for p in paths if not p.is_absolute() and ".." not in p.parts]
    return sorted((ROOT / path for path in inside), key=lambda p: -len(p.parts))


def clean() -> None:
    """Delete what an earlier demo made, and nothing else; refuse if anything else is left."""
    if not ROOT.exists():
        return
    for path in made_by_demo():
        if path.is_symlink() or path.is_file():
            path.unlink()
        elif path.is_dir() and not any(path.iterdir()):
            path.rmdir()
    MANIFEST.unlink(missing_ok=True)
    left = sorted(ROOT.rglob("*"))
    if left:
        raise SystemExit(
            f"demo: {ROOT}/ holds files the demo did not make ({left[0]}…); "
            f"move them elsewhere or delete {ROOT}/ yourself"
        )
    ROOT.rmdir()


def record() -> None:
    """List everything under ROOT as the demo's own (it was empty when the demo began)."""
    names = sorted(str(p.relative_to(ROOT)) for p in ROOT.rglob("*"))
    MANIFEST.write_text("".join(f"{name}\n" for name in names), encoding="utf-8")


def main() -> None:
    clean()
    ROOT.mkdir()
    try:
        run_demo()
    finally:
        record()


def run_demo() -> None:
    SETTINGS.write_text("# the demo's settings: none, so that ./ptif.toml is not read\n")
    print(f"The demo works in {ROOT.resolve()}/ alone (never in ./ptif-data).")
    sources = make_samples()
    (SOURCE / "Fonds Émile" / "box 1" / "torn page.jpg").write_bytes(b"\xff\xd8\xff\xe0 cut short")
    print(f"Made {len(sources)} sample images (and one broken file) in {SOURCE}/")
    settings = ("--config", str(SETTINGS), *STORES)
    ptif("mark", *settings)
    ptif("process", *settings, check=False)
    ptif("status", *settings)
    print(f"\nPyramids are in {IMAGES.resolve()}/:")
    for pyramid in sorted(IMAGES.rglob("*.tif")):
        print(f"  {pyramid.relative_to(IMAGES)}")
    print(
        f"The broken file has a failure record in {PROCESS}/failed/; run reports are in "
        f"{PROCESS}/reports/.\nThe next 'make demo' (or 'make clean') deletes what this one "
        f"made in {ROOT}/, and nothing else."
    )


if __name__ == "__main__":
    if sys.argv[1:] == ["--clean"]:
        clean()
    else:
        main()
