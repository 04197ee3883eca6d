"""The minimal libvips conversion ptif is measured against.

Usage: baseline.py SRC DST [--srgb] [--bigtiff]
"""

import sys

import pyvips


def main(argv: list[str]) -> None:
    flags = {arg for arg in argv if arg.startswith("--")}
    src, dst = (arg for arg in argv if arg not in flags)
    image = pyvips.Image.new_from_file(src, access="sequential")
    if "--srgb" in flags:
        image = image.colourspace("srgb")
    image.tiffsave(
        dst,
        tile=True,
        pyramid=True,
        tile_width=256,
        tile_height=256,
        compression="jpeg",
        Q=90,
        bigtiff="--bigtiff" in flags,
    )


if __name__ == "__main__":
    main(sys.argv[1:])
