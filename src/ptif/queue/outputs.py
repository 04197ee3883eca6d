"""Where a source's pyramid goes, what it records about itself, and when it is up to date.

The output key is the source's folder and name with the extension ``.tif``, as in the original
system. The output's user metadata names the source and its eTag and the recipe hash, so a
later run can tell an up-to-date output (skip it) from a stale one (redo it) or from another
source's output that happens to have the same name (an ``output-conflict``, never overwritten).
:func:`compare_output` is that rule, and the worker, ``mark --stale``, ``watch`` and
``reconcile`` all follow it.
The source key is stored as it is, with only ``%`` escaped (``%25``), so values written
percent-encoded by earlier versions read back the same; the store carries non-ASCII text in
its own way (an RFC 2047 encoded word on S3, as AWS does). Percent-encoding every accented
letter would triple it: a 1,000-byte key would pass S3's 2 KB of user metadata.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from enum import StrEnum
from urllib.parse import unquote

from ptif import __version__
from ptif.errors import OUTPUT_CONFLICT, ConversionError
from ptif.stores.base import ObjectInfo, Store, UnsafeKey

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
    if info is not None and _owned_by_another(info, source_key):
        raise OutputConflict(
            f"{source_key}: its output {info.key} already holds the pyramid of "
            f"{recorded_source(info)}; rename one of the two sources, or delete the output and "
            "run 'ptif retry'"
        )


def compare_output(
    output: ObjectInfo | None, source_key: str, source_etag: str, recipes: Collection[str]
) -> OutputState:
    """The freshness rule, the one every command follows: an output is current only if it is
    there, belongs to ``source_key``, was made from ``source_etag`` and with one of ``recipes``.

    ``recipes`` are the hashes that count as current: the worker passes the one recipe its
    marker resolves to, intake every recipe the profile can make (it has no marker to read).
    An empty eTag proves no version, so nothing made from it is current."""
    if output is None:
        return OutputState.MISSING
    if _owned_by_another(output, source_key):
        return OutputState.CONFLICT
    if not source_etag or output.metadata.get(SOURCE_ETAG) != source_etag:
        return OutputState.OTHER_ETAG
    if output.metadata.get(RECIPE) not in recipes:
        return OutputState.OTHER_RECIPE
    return OutputState.CURRENT


def output_state(images: Store, source: ObjectInfo, recipes: Collection[str]) -> OutputState:
    """:func:`compare_output` for ``source`` and its output as ``images`` holds it now. A key
    no store takes (``a//b.jpg``) has no output: it is queued, and the worker records why."""
    try:
        output = images.head(output_key(source.key))
    except UnsafeKey:
        return OutputState.MISSING
    return compare_output(output, source.key, source.etag, recipes)


def _owned_by_another(output: ObjectInfo, source_key: str) -> bool:
    owner = recorded_source(output)
    return owner is not None and owner != source_key
