"""What a pyramid says about itself inside the file, so that a copy keeps it.

Store metadata and extended attributes are lost as soon as a file is copied out of its store;
these travel with it, in the first directory (libvips repeats them in every level):

- **Provenance** in ``ImageDescription`` (tag 270), one line of JSON: the source key and eTag
  (when the worker converts), the recipe's settings and hash, the encoding the tiles were written
  with and the ptif version. ImageDescription, not XMP: every TIFF reader shows it (``tiffinfo``,
  ``exiftool``, ``identify``, tifffile) and IIPImage serves it; XMP (tag 700) stays the
  source's own, so its rights statements are carried byte for byte, never parsed or rewritten.
- **A colour profile**: libvips's built-in sRGB (colour) or sGrey (grey) profile, which is what
  the pixels are; never the source's, which could be of any size.
- **The source's XMP and IPTC** (rights statements, captions, credits) when the recipe's
  ``keep_metadata`` is on (the default; off in ``marble``). Anyone can upload, so each is kept
  only up to :data:`MAX_CARRIED` bytes; a larger block is dropped whole (cut XML would be
  broken XML) with a warning: Photoshop's runaway ``DocumentAncestors`` lists reach megabytes,
  and libvips writes the block again in every level.
"""

from __future__ import annotations

import pyvips

from ptif import __version__
from ptif.convert.jsontext import dumps
from ptif.convert.profiles import Recipe

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without loading typing on every run
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

#: The most bytes of the source's XMP, and of its IPTC, carried into the pyramid.
MAX_CARRIED = 64 * 1024
#: The source's metadata blocks a recipe with ``keep_metadata`` carries over.
CARRIED = ("xmp-data", "iptc-data")
#: The field libvips writes as ImageDescription, and the first key of ptif's JSON in it.
DESCRIPTION = "image-description"
MARK = "ptif"
#: Provenance fields a caller passes (the worker knows them; ``ptif convert`` does not).
SOURCE_KEY, SOURCE_ETAG = "source_key", "source_etag"


def keep_flags(recipe: Recipe) -> str:
    """tiffsave's ``keep``: the profile and the description always, the source's XMP and IPTC
    when the recipe keeps them; never EXIF (camera serials, GPS)."""
    return "icc,other,xmp,iptc" if recipe.keep_metadata else "icc,other"


def encoding(options: Mapping[str, Any], tiles: str | None = None) -> dict[str, Any]:
    """How the tiles were written, from the options tiffsave was given; ``tiles`` is the
    encoding's label when the recipe's quality floor chose it (``jpeg-q85-420``...)."""
    found = {"compression": options["compression"]}
    if "Q" in options:
        found["Q"] = options["Q"]
    if tiles is not None:
        found["tiles"] = tiles
    return found


def description(
    recipe: Recipe,
    options: Mapping[str, Any],
    provenance: Mapping[str, str] | None,
    tiles: str | None = None,
) -> str:
    """The ImageDescription text: one line of JSON, keys in a fixed order."""
    body = {
        MARK: __version__,
        **{k: v for k, v in (provenance or {}).items() if k in (SOURCE_KEY, SOURCE_ETAG)},
        "recipe": recipe.hash,
        "settings": recipe.settings(),
        "encoding": encoding(options, tiles),
    }
    return dumps(body)  # ASCII, as TIFF's ASCII type wants: accents travel as \u escapes


def read_description(text: str) -> dict[str, Any] | None:
    """ptif's provenance from an ImageDescription, or None if ptif did not write it."""
    import json

    if not text.startswith('{"' + MARK + '":'):
        return None
    try:
        body = json.loads(text)
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def embed(
    image: pyvips.Image,
    recipe: Recipe,
    options: Mapping[str, Any],
    provenance: Mapping[str, str] | None,
    warnings: list[str],
    tiles: str | None = None,
) -> pyvips.Image:
    """A copy of ``image`` (8-bit sRGB or grey) carrying what the file should say about itself;
    ``tiles`` labels the encoding a quality floor chose."""
    image = image.copy()
    for name in CARRIED:
        if image.get_typeof(name) and not _keep(image, name, recipe, warnings):
            image.remove(name)
    profile = pyvips.Operation.call("profile_load", "sgrey" if image.bands == 1 else "srgb")
    image.set_type(pyvips.GValue.blob_type, "icc-profile-data", profile)
    text = description(recipe, options, provenance, tiles)
    image.set_type(pyvips.GValue.gstr_type, DESCRIPTION, text)
    return image


def _keep(image: pyvips.Image, name: str, recipe: Recipe, warnings: list[str]) -> bool:
    if not recipe.keep_metadata:
        return False
    size = len(image.get(name))
    if size <= MAX_CARRIED:
        return True
    label = name.split("-")[0].upper()
    warnings.append(
        f"the source's {label} block ({size:,} bytes) is larger than {MAX_CARRIED:,} bytes; "
        "it was left out of the pyramid"
    )
    return False
