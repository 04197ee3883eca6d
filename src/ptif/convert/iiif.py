"""What an IIIF server needs to know about a pyramid without opening it, read from the file.

serverless-iiif (and ``iiif-processor``, its core) takes a pyramid's size, its number of levels
and its tile size from the object's S3 user metadata: version 8 reads ``iiif-width``,
``iiif-height``, ``iiif-pages`` and ``iiif-tilesize`` (or ``iiif-tilewidth`` and
``iiif-tileheight``), each after the bare name (``width``...); version 7 reads only ``width``,
``height`` and ``pages``. Without a page count it reads every request from the full level; with a
page count the file does not have, it asks for a level that is not there ("TIFF does not contain
page N"). So every value comes from the written file's own directories, as the verifier parsed
them, and the bare and ``iiif-`` names always agree.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without loading typing on every run
if TYPE_CHECKING:
    from ptif.convert.verify import TiffLayout

WIDTH = "iiif-width"
HEIGHT = "iiif-height"
#: The number of image directories in the file: the pyramid's levels.
PAGES = "iiif-pages"
TILE_SIZE = "iiif-tilesize"
TILE_WIDTH = "iiif-tilewidth"
TILE_HEIGHT = "iiif-tileheight"
#: serverless-iiif's earlier names, still read first by its current version.
BARE = {WIDTH: "width", HEIGHT: "height", PAGES: "pages"}
#: Every key :func:`iiif_metadata` may write.
KEYS = (WIDTH, HEIGHT, PAGES, TILE_SIZE, TILE_WIDTH, TILE_HEIGHT, *BARE.values())


def iiif_metadata(layout: TiffLayout) -> dict[str, str]:
    """The IIIF keys for the file whose directories are ``layout``: its first directory's size
    and tiles, and how many directories it has."""
    first = layout.directories[0]
    values = {WIDTH: first.width, HEIGHT: first.height, PAGES: len(layout.directories)}
    if first.tile_width == first.tile_height:
        values[TILE_SIZE] = first.tile_width
    else:
        values[TILE_WIDTH], values[TILE_HEIGHT] = first.tile_width, first.tile_height
    metadata = {key: str(value) for key, value in values.items()}
    return {**metadata, **{bare: metadata[key] for key, bare in BARE.items()}}
