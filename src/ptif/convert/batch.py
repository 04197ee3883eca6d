"""Many sources to one folder of pyramids: ``ptif convert a.jpg b.png out/`` and
``ptif convert -r scans/ out/``.

:func:`plan` decides every destination before a byte is decoded, so that no pyramid is written
over a source (the same file under any name, as :mod:`ptif.convert.targets` compares them) and
no two sources share a pyramid (``a/x.png`` and ``a/x.jpg`` both make ``a/x.tif``: the second is
an ``output-conflict``, never a silent overwrite). A folder is walked without following
symlinks, skipping dot-files and dot-folders (``.git``, ``.DS_Store``) and the destination
itself when it lies inside; only names with an extension of a format ptif reads are taken
(:data:`~ptif.convert.formats.READ_EXTENSIONS`, the list ``ptif mark`` queues).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from ptif.convert.formats import has_read_extension
from ptif.convert.targets import derived_target, file_id, mirrored_target, page_files
from ptif.errors import OUTPUT_CONFLICT, ConfigError, ConversionError, PtifError


@dataclass(frozen=True)
class Item:
    """One source and where its pyramid goes; ``refusal`` says why it is not converted."""

    src: Path
    target: Path
    refusal: PtifError | None = None


def check_destination(dst: str) -> Path:
    """The folder ``dst`` names: an existing folder, or one to make when it ends in ``/``."""
    folder = Path(dst)
    if folder.is_dir():
        return folder
    if folder.exists():
        raise ConfigError(f"{dst}: not a folder; with several sources or a folder, DST is a folder")
    if not dst.endswith(("/", os.sep)):
        raise ConfigError(
            f"{dst}: no such folder; with several sources or a folder, DST is a folder "
            f"(end it with / to have ptif make it: {dst}/)"
        )
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigError(f"{dst}: cannot make this folder ({error.strerror})") from error
    return folder


def check_sources(sources: Sequence[Path], *, recursive: bool) -> None:
    """A folder source without ``recursive`` is a usage error, found before any work."""
    for src in sources:
        if src.is_dir() and not recursive:
            raise ConfigError(
                f"{src}: is a folder; add --recursive (-r) to convert every image under it"
            )


def plan(sources: Sequence[Path], folder: Path, *, all_pages: bool = False) -> list[Item]:
    """Every source (a file, or the images under a folder) with its pyramid in ``folder``."""
    skip = {file_id(folder)}
    pairs: list[tuple[Path, Path]] = []
    for src in sources:
        if src.is_dir():
            pairs.extend(
                (path, mirrored_target(path.relative_to(src), folder))
                for path in image_files(src, skip)
            )
        else:
            pairs.append((src, derived_target(Path(src.name), folder)))
    return _refuse_overwrites(pairs, all_pages)


def _refuse_overwrites(pairs: list[tuple[Path, Path]], all_pages: bool) -> list[Item]:
    source_ids = {file_id(src) for src, _ in pairs} - {None}
    owners: dict[str, Path] = {}
    items = []
    for src, target in pairs:
        name = os.path.normcase(os.path.abspath(target))
        first = owners.setdefault(name, src)
        refusal = None
        if first is not src:
            refusal = ConversionError(
                f"{src}: its pyramid {target} is also {first}'s; rename one of the two sources",
                code=OUTPUT_CONFLICT,
            )
        elif _is_a_source(target, source_ids, all_pages):
            refusal = ConversionError(
                f"{src}: its pyramid {target} would replace a source; ptif never writes over a "
                "source: convert into another folder",
                code=OUTPUT_CONFLICT,
            )
        items.append(Item(src, target, refusal))
    return items


def _is_a_source(target: Path, source_ids: set[tuple[int, int] | None], all_pages: bool) -> bool:
    written = [target, *page_files(target)] if all_pages else [target]
    return any(file_id(path) in source_ids for path in written)


def image_files(folder: Path, skip: set[tuple[int, int] | None]) -> Iterator[Path]:
    """The image files below ``folder`` in name order, without following symlinks, leaving out
    dot-names and the folders in ``skip`` (by device and inode), and never walking a folder
    again below itself (a bind mount inside itself)."""
    try:
        here = os.stat(folder)
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError:
        return
    skip = skip | {(here.st_dev, here.st_ino)}
    for entry in entries:
        if entry.name.startswith("."):
            continue
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        path = Path(entry.path)
        if stat.S_ISDIR(st.st_mode) and (st.st_dev, st.st_ino) not in skip:
            yield from image_files(path, skip)
        elif stat.S_ISREG(st.st_mode) and has_read_extension(entry.name):
            yield path
