"""Where a source's pyramid goes, what it records about itself, and when it is up to date.

The output key is the source's folder and name with the extension ``.tif``, as in the original
system. The output's user metadata names the source and its eTag and the recipe hash, so a
later run can tell an up-to-date output (skip it) from a stale one (redo it) or from another
source's output that happens to have the same name (an ``output-conflict``, never overwritten).
The source key is stored as it is, with only ``%`` escaped (``%25``), so values written
percent-encoded by earlier versions read back the same; the store carries non-ASCII text in
its own way (an RFC 2047 encoded word on S3, as AWS does). Percent-encoding every accented
letter would triple it: a 1,000-byte key would pass S3's 2 KB of user metadata.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from enum import StrEnum
from urllib.parse import unquote

from ptif import __version__
from ptif.errors import OUTPUT_CONFLICT, ConversionError
from ptif.stores.base import ObjectInfo, Store

SOURCE_KEY = "ptif-source-key"
SOURCE_ETAG = "ptif-source-etag"
RECIPE = "ptif-recipe"
VERSION = "ptif-version"


class OutputState(StrEnum):
    """How a source's output compares with the source and the current settings."""

    CURRENT = "current"
    MISSING = "missing"
    OTHER_ETAG = "other-etag"
    OTHER_RECIPE = "other-recipe"
    CONFLICT = "conflict"  # the output holds another source's pyramid


class OutputConflict(ConversionError):
    """Another source already owns this output key (``a/x.png`` and ``a/x.jpg``)."""

    code = OUTPUT_CONFLICT


def output_key(source_key: str) -> str:
    """``a/b/scan 1.jpeg`` → ``a/b/scan 1.tif``."""
    folder, _, name = source_key.rpartition("/")
    stem = name.rsplit(".", 1)[0] if "." in name.lstrip(".") else name
    return f"{folder}/{stem}.tif" if folder else f"{stem}.tif"


def output_metadata(
    conversion: Mapping[str, str], source_key: str, source_etag: str
) -> dict[str, str]:
    return {
        **conversion,
        SOURCE_KEY: source_key.replace("%", "%25"),
        SOURCE_ETAG: source_etag,
        VERSION: __version__,
    }


def recorded_source(info: ObjectInfo) -> str | None:
    value = info.metadata.get(SOURCE_KEY)
    return unquote(value) if value else None


def check_owner(info: ObjectInfo | None, source_key: str) -> None:
    """Raise :class:`OutputConflict` if the output at ``info`` was made from another source."""
    if info is None:
        return
    owner = recorded_source(info)
    if owner is not None and owner != source_key:
        raise OutputConflict(
            f"{source_key}: its output {info.key} already holds the pyramid of {owner}; "
            "rename one of the two sources, or delete the output and run 'ptif retry'"
        )


def is_up_to_date(info: ObjectInfo | None, source_etag: str, recipe_hash: str) -> bool:
    if info is None or not source_etag:
        return False
    return (
        info.metadata.get(SOURCE_ETAG) == source_etag and info.metadata.get(RECIPE) == recipe_hash
    )


def output_state(images: Store, source: ObjectInfo, recipes: Iterable[str]) -> OutputState:
    """Whether the output of ``source`` is there, made from this eTag with a current recipe."""
    output = images.head(output_key(source.key))
    if output is None:
        return OutputState.MISSING
    owner = recorded_source(output)
    if owner is not None and owner != source.key:
        return OutputState.CONFLICT
    if output.metadata.get(SOURCE_ETAG) != source.etag:
        return OutputState.OTHER_ETAG
    if output.metadata.get(RECIPE) not in set(recipes):
        return OutputState.OTHER_RECIPE
    return OutputState.CURRENT
