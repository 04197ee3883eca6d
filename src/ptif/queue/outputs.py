"""Where a source's pyramid goes, what it records about itself, and when it is up to date.

The output key is the source's folder and name with the extension ``.tif``, as in the original
system. The output's user metadata names the source and its eTag and the recipe hash, so a
later run can tell an up-to-date output (skip it) from a stale one (redo it) or from another
source's output that happens to have the same name (an ``output-conflict``, never overwritten).
:func:`compare_output` is that rule, and the worker, ``mark --stale``, ``watch`` and
``reconcile`` all follow it. The conversion's own keys come first, from the written file: the
size, level count and tile size IIIF servers read instead of opening it (:mod:`ptif.convert.iiif`).
A multi-page source converted with ``all_pages`` has an output *set*: page 1 at the output key,
page ``n`` at :func:`page_key` (``a/book-p2.tif``), each recording its page (``ptif-page``) and
the source's page count (``ptif-pages``). The set is current only when every page is
(:func:`set_state`); page 1 is uploaded last, so a set interrupted half-way is never current.
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

#: At most this many pages of one source are converted (a set of more is refused).
MAX_PAGES = 10_000
SOURCE_KEY = "ptif-source-key"
SOURCE_ETAG = "ptif-source-etag"
RECIPE = "ptif-recipe"
VERSION = "ptif-version"
#: Which page of its source an output holds, how many pyramids its set holds (1 unless made
#: with ``all_pages``) and how many pages the source has.
PAGE = "ptif-page"
PAGES = "ptif-pages"
SOURCE_PAGES = "ptif-source-pages"


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


def page_key(source_key: str, page: int) -> str:
    """Where page ``page`` of ``source_key`` goes: ``a/book.pdf`` page 2 → ``a/book-p2.tif``;
    page 1 keeps the output key, so a viewer's links need no change."""
    key = output_key(source_key)
    return key if page == 1 else f"{key[: -len('.tif')]}-p{page}.tif"


def output_metadata(
    conversion: Mapping[str, str],
    source_key: str,
    source_etag: str,
    *,
    page: int = 1,
    pages: int = 1,
    source_pages: int = 1,
) -> dict[str, str]:
    return {
        **conversion,
        SOURCE_KEY: source_key.replace("%", "%25"),
        SOURCE_ETAG: source_etag,
        VERSION: __version__,
        PAGE: str(page),
        PAGES: str(pages),
        SOURCE_PAGES: str(source_pages),
    }


def set_pages(output: ObjectInfo) -> int:
    """How many pyramids the set of ``output`` (a page 1) holds: its source's page count if
    it was made with every page, else 1 (outputs of earlier versions record nothing: 1)."""
    try:
        pages = int(output.metadata.get(PAGES) or 1)
    except ValueError:
        return 1
    return pages if output.metadata.get(PAGE) == "1" and 1 < pages <= MAX_PAGES else 1


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
    """:func:`set_state` for ``source`` and its outputs as ``images`` holds them now. A key
    no store takes (``a//b.jpg``) has no output: it is queued, and the worker records why."""
    try:
        output = images.head(output_key(source.key))
    except UnsafeKey:
        return OutputState.MISSING
    return set_state(images, output, source.key, source.etag, recipes)


def set_state(
    images: Store,
    output: ObjectInfo | None,
    source_key: str,
    source_etag: str,
    recipes: Collection[str],
) -> OutputState:
    """:func:`compare_output` of page 1 (``output``) and, when it was made with every page,
    of each other page of its set: the first that is not current decides. Single-page outputs
    cost no more requests than before."""
    state = compare_output(output, source_key, source_etag, recipes)
    if state is not OutputState.CURRENT or output is None:
        return state
    for page in range(2, set_pages(output) + 1):
        other = images.head(page_key(source_key, page))
        state = compare_output(other, source_key, source_etag, recipes)
        if state is not OutputState.CURRENT:
            return state
    return state


def _owned_by_another(output: ObjectInfo, source_key: str) -> bool:
    owner = recorded_source(output)
    return owner is not None and owner != source_key
