"""Where ``ptif convert`` writes, and the destinations it refuses.

A master scan is often an archive's only copy, and a pyramid written over it replaces it for
good. So a destination that is the source is refused before anything is decoded: the same path,
the same file under another name (a symlink either way, a hard link, ``..``), found by comparing
device and inode, not names. A destination whose name does not end in ``.tif``, ``.tiff`` or
``.ptif`` is refused too, unless forced: ``ptif convert scan.jpg scan.jpg.bak`` is far more
likely a slip than a wish for a TIFF named like a JPEG.

Loaded by ``ptif convert``: plain functions, no typing at run time.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from ptif.errors import ConfigError

#: The names a pyramid may be given without ``--force``.
PYRAMID_SUFFIXES = (".tif", ".tiff", ".ptif")


def derived_target(src: Path, folder: Path) -> Path:
    """The pyramid of ``src`` in ``folder``: its name with ``.tif``, as the stores name it."""
    return folder / f"{src.stem}.tif"


def mirrored_target(relative: Path, folder: Path) -> Path:
    """The pyramid of the source at ``relative`` inside a source folder: the same path inside
    ``folder``, with ``.tif``."""
    return folder / relative.parent / f"{relative.stem}.tif"


def file_id(path: Path) -> tuple[int, int] | None:
    """The device and inode of the file ``path`` names, through any symlink; ``None`` if there
    is none."""
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    return st.st_dev, st.st_ino


def same_file(a: Path, b: Path) -> bool:
    """Whether ``a`` and ``b`` name one file (one path, a symlink, a hard link)."""
    first = file_id(a)
    return first is not None and first == file_id(b)


def overwrite_problem(src: Path, target: Path) -> str | None:
    """Why writing ``target`` would replace the source ``src``, or ``None``."""
    if same_file(src, target) or os.path.abspath(src) == os.path.abspath(target):
        how = "" if src == target else f" ({target} is {src} under another name)"
        return (
            f"{target}: this is the source itself{how}; ptif never writes over a source: "
            "give another destination, such as a .tif file or a folder"
        )
    return None


def page_files(target: Path) -> list[Path]:
    """The files already there that one pyramid per page would replace (``name-p2.tif``)."""
    pattern = re.compile(rf"{re.escape(target.stem)}-p[0-9]+{re.escape(target.suffix)}")
    try:
        names = os.listdir(target.parent)
    except OSError:
        return []
    return [target.parent / name for name in sorted(names) if pattern.fullmatch(name)]


def page_overwrite_problem(src: Path, target: Path) -> str | None:
    """With one pyramid per page, why one of them would replace ``src``."""
    for path in page_files(target):
        problem = overwrite_problem(src, path)
        if problem:
            return problem
    return None


def suffix_problem(target: Path) -> str | None:
    """Why ``target`` is no name for a pyramid, or ``None``."""
    if target.suffix.lower() in PYRAMID_SUFFIXES:
        return None
    return (
        f"{target}: a pyramid is a TIFF; name it .tif, .tiff or .ptif "
        "(or add --force to write a TIFF under this name)"
    )


def check_target(src: Path, target: Path, *, force: bool, all_pages: bool = False) -> None:
    """Refuse (:class:`ConfigError`, exit 2) a destination that is the source, or (unless
    ``force``) one not named like a TIFF."""
    problem = overwrite_problem(src, target)
    if problem is None and all_pages:
        problem = page_overwrite_problem(src, target)
    if problem is None and not force:
        problem = suffix_problem(target)
    if problem:
        raise ConfigError(problem)
