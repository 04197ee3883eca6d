"""Bring any decoded image to what viewers expect: upright, 8-bit, sRGB or grey, opaque.

Every step is a lazy libvips operation, so the pipeline still streams. Grey stays grey (one
band); colour goes through the embedded ICC profile when there is one, else through libvips'
colourspace conversions (CMYK without a profile uses libvips' built-in CMYK profile). 16-bit data
is scaled to 8 bits, never clipped. Alpha is flattened onto white.
"""

from __future__ import annotations

import logging

import pyvips

log = logging.getLogger(__name__)

_GREY = {"b-w", "grey16"}
_RGB_LIKE = {"srgb", "rgb", "rgb16", "scrgb", "multiband"}
_SIXTEEN_BIT = {"ushort", "short", "uint", "int"}


def to_display(image: pyvips.Image, warnings: list[str]) -> pyvips.Image:
    """Upright 8-bit sRGB (3 bands) or grey (1 band), alpha flattened onto white."""
    image = image.autorot()
    image = _guess_interpretation(image)
    if image.interpretation in _GREY or (image.interpretation in _RGB_LIKE and image.bands <= 2):
        return _to_grey(image)
    image = _flatten_if_rgb(image)
    image = _to_srgb(image, warnings)
    image = _flatten(image)
    return _finish(image)


def _guess_interpretation(image: pyvips.Image) -> pyvips.Image:
    """Images that say nothing useful about their colour: 1-2 bands are grey, 3-4 are RGB."""
    if image.interpretation not in ("multiband", "rgb"):
        return image
    sixteen = image.format in _SIXTEEN_BIT
    if image.bands <= 2:
        return image.copy(interpretation="grey16" if sixteen else "b-w")
    return image.copy(interpretation="rgb16" if sixteen else "srgb")


def _max_alpha(image: pyvips.Image) -> int:
    return (
        65535
        if image.format in _SIXTEEN_BIT
        or image.interpretation
        in (
            "rgb16",
            "grey16",
        )
        else 255
    )


def _flatten(image: pyvips.Image) -> pyvips.Image:
    if not image.hasalpha():
        return image
    return image.flatten(background=_max_alpha(image), max_alpha=_max_alpha(image))


def _flatten_if_rgb(image: pyvips.Image) -> pyvips.Image:
    """Flatten before colour conversion when white is the maximum of every band."""
    if image.interpretation in _RGB_LIKE:
        return _flatten(image)
    return image


def _to_grey(image: pyvips.Image) -> pyvips.Image:
    image = _flatten(image)
    if image.format == "uchar" and image.interpretation == "b-w":
        return image
    return _finish(image.colourspace("b-w"))


def _has_icc(image: pyvips.Image) -> bool:
    return bool(image.get_typeof("icc-profile-data"))


def _to_srgb(image: pyvips.Image, warnings: list[str]) -> pyvips.Image:
    if _has_icc(image) and not _is_srgb_profile(image):
        try:
            return image.icc_transform("srgb", embedded=True, intent="relative", depth=8)
        except pyvips.Error as error:
            warnings.append(f"embedded ICC profile unusable, colours converted without it: {error}")
            image = image.copy()
            image.remove("icc-profile-data")
    if image.interpretation == "srgb" and image.format == "uchar":
        return image
    return image.colourspace("srgb")


def _is_srgb_profile(image: pyvips.Image) -> bool:
    """An embedded sRGB profile on 8-bit RGB needs no transform: skip the cost."""
    if image.interpretation != "srgb" or image.format != "uchar":
        return False
    return icc_description(bytes(image.get("icc-profile-data"))).lower().startswith("srgb")


def icc_description(profile: bytes) -> str:
    """The ``desc`` tag of an ICC profile (v2 textDescription or v4 mluc), or ``""``."""
    if len(profile) < 132:
        return ""
    count = int.from_bytes(profile[128:132], "big")
    for i in range(min(count, 100)):
        entry = profile[132 + 12 * i : 144 + 12 * i]
        if entry[:4] != b"desc":
            continue
        offset, size = int.from_bytes(entry[4:8], "big"), int.from_bytes(entry[8:12], "big")
        return _decode_desc(profile[offset : offset + size])
    return ""


def _decode_desc(tag: bytes) -> str:
    if tag[:4] == b"desc" and len(tag) >= 12:
        length = int.from_bytes(tag[8:12], "big")
        return tag[12 : 12 + length].rstrip(b"\0").decode("latin-1")
    if tag[:4] == b"mluc" and len(tag) >= 28:
        length, offset = int.from_bytes(tag[20:24], "big"), int.from_bytes(tag[24:28], "big")
        return tag[offset : offset + length].decode("utf-16-be", errors="replace")
    return ""


def _finish(image: pyvips.Image) -> pyvips.Image:
    """Drop stray extra bands and make sure the result is 8-bit."""
    if image.hasalpha():
        image = _flatten(image)
    wanted = 1 if image.interpretation == "b-w" else 3
    if image.bands > wanted:
        image = image.extract_band(0, n=wanted)
    if image.format != "uchar":
        image = image.cast("uchar")
    return image
