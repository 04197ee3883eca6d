"""Source, process and images never overlap: the one rule, used by the command line before it
opens a store and by the CDK app (``infra/``) when it synthesises.

ptif only reads the source, which holds the archive's masters, and writes to the other two. Two
stores that are the same place, or one inside the other, break that: with ``--images`` equal to
``--source`` a 16-bit ``scan.tif`` is overwritten by its own 8-bit pyramid; with the process
store inside the source, the queue's files are written among the masters and listed as uploads;
with images and process mixed, each lists the other's files. So such settings are refused
before anything is listed, claimed or created.

Two S3 stores overlap when they are in the same bucket and one prefix, taken as a folder, starts
the other (``s3://b/scans`` holds ``s3://b/scans/tiff``, not ``s3://b/scans2``); every store of
one run shares one endpoint, so a bucket name names one bucket. Two folders overlap when one
path, with its symlinks resolved, is the other or lies inside it, or when the folder itself is
one of the other's existing folders on the way down (the same folder reached through a bind
mount). An S3 store never overlaps a folder. A URL that names no store is left to
:func:`~ptif.stores.open_store` to refuse.

It needs neither pyvips nor boto3, so the CDK app imports it.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import unquote, urlsplit

from ptif.stores import _SCHEME

#: Why each pair may not overlap, for the operator reading the refusal.
_WHY = {
    frozenset({"source", "images"}): "ptif would write pyramids among the masters, where one "
    "can replace a master of the same name (scan.tif)",
    frozenset({"source", "process"}): "ptif would write its queue among the masters and list "
    "its own files as uploads",
    frozenset({"process", "images"}): "the queue's files and the pyramids would mix, each "
    "store listing the other's",
}
_ADVICE = "give each store its own bucket (or prefix) or folder, none inside another"


class _Place:
    """Where a store URL points: an S3 bucket and prefix, or a folder."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.bucket: str | None = None
        self.prefix = ""
        self.path: Path | None = None
        #: Whether symlinks lead elsewhere than the path as written (worth showing).
        self.linked = False
        text = url.strip()
        match = _SCHEME.match(text)
        scheme = match.group(1).lower() if match else ""
        if scheme == "s3":
            parts = urlsplit(text)
            self.bucket = parts.netloc
            self.prefix = f"{parts.path.strip('/')}/" if parts.path.strip("/") else ""
        elif scheme == "file":
            self._folder(unquote(urlsplit(text).path))
        elif text and not scheme:
            self._folder(text)

    def _folder(self, text: str) -> None:
        """The folder ``open_store`` would open, its symlinks resolved (as far as it exists)."""
        given = Path(text).expanduser().absolute()
        self.path = Path(os.path.realpath(given))
        self.linked = self.path != given

    def holds(self, other: _Place) -> bool:
        """Whether ``other`` is this place or lies inside it."""
        if self.bucket is not None:
            return self.bucket == other.bucket and other.prefix.startswith(self.prefix)
        if self.path is None or other.path is None:
            return False
        if other.path.is_relative_to(self.path):
            return True
        mine = _identity(self.path)
        return mine is not None and mine in _identities_up(other.path)

    def shown(self, role: str, origin: str | None) -> str:
        where = [f"from {origin}"] if origin else []
        if self.linked:
            where.append(f"resolves to {self.path}")
        return f"{role} {self.url}" + (f" ({'; '.join(where)})" if where else "")


def overlap(urls: Mapping[str, str], origins: Mapping[str, str] | None = None) -> str | None:
    """One line about the first two of ``urls`` (role → store URL; the roles are ``source``,
    ``process`` and ``images``) that overlap, naming each role, URL and where its setting came
    from (``origins``, by role, where known), or ``None`` when all are apart."""
    places = {role: _Place(url) for role, url in urls.items()}
    for (first, a), (second, b) in itertools.combinations(places.items(), 2):
        if a.holds(b) and b.holds(a):
            relation = "are the same place"
        elif a.holds(b):
            relation = f"overlap: {second} is inside {first}"
        elif b.holds(a):
            relation = f"overlap: {first} is inside {second}"
        else:
            continue
        given = origins or {}
        stores = f"{a.shown(first, given.get(first))} and {b.shown(second, given.get(second))}"
        why = _WHY.get(frozenset({first, second}), "ptif would mix their files")
        return f"{stores} {relation}; {why}: {_ADVICE}"
    return None


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def _identities_up(path: Path) -> set[tuple[int, int]]:
    """The device and inode of ``path`` and of each existing folder above it."""
    found = set()
    for folder in (path, *path.parents):
        identity = _identity(folder)
        if identity is not None:
            found.add(identity)
    return found
