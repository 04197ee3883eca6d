"""What was fetched is what gets published: the source's fingerprint, taken as it arrives and
checked again before its pyramid leaves the worker.

The worker downloads a source into its item's private folder (:mod:`ptif.queue.workdir`) and
hands that file to a decoder. Between the download and the upload something could rewrite the
file: a decoder of the same image (a PostScript program can write files), or anything else
running as root or as the worker's user. A pyramid made from rewritten bytes must never be
published under the source's key, recorded as made from the source's eTag: ``reconcile`` would
then call it current for ever.

So :func:`fetch` reads the download once, right after the store wrote it, for its SHA-256, and
pins the file (inode, size, modification and change times: a write changes the change time,
and only the clock's owner can set it back). :meth:`Fetched.check` runs before a pyramid is
published and before a conversion failure is filed as the image's fault: a file that is not
the one pinned, or whose bytes hash otherwise, raises :class:`SourceChanged` (``source-changed``,
retried: the next attempt downloads afresh, and counts, so a source that keeps being rewritten
ends in ``failed/``). The pyramid is pinned the same way when the conversion returns and
checked just before the upload.

Where the store's eTag is the MD5 of the bytes (S3 and compatible servers, for an object
uploaded in one part and not encrypted with KMS or a customer key: 32 hex digits), the
download is also compared with it, so bytes damaged on the way are never converted. An eTag of
that shape that is not an MD5 (SSE-KMS, SSE-C) is told apart by downloading once more: the same
bytes twice that both differ from the eTag mean the eTag is no MD5; different bytes mean the
download was damaged or changed, and the attempt fails as ``source-changed``. A folder store's
eTag says nothing of the content, so its sources rely on the pin alone.

Nothing is written beyond the largest source accepted (``--max-source-size``: else
``too-large``, permanent), nor beyond half the work folder's free space, which keeps room for a
pyramid as big (else ``disk-full``, retried and never counted; a source bigger than the whole
disk is ``too-large``: no later run fits it either). The download's own answer gives the size,
so these are decided before its first byte is written and need no look at the source first;
where the source's size is known already, they are checked before the request. The download
itself stops at that limit, so a file that grows while it is copied cannot pass it.

The first hash is taken after the store has written the file, not while the bytes stream in
(the stores' ``get_file`` gives none): a writer quick enough to change the file before that read
goes unseen unless the eTag is an MD5. The item folders keep every other user out of that
moment, and the decoder sandbox keeps decoders out of it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ptif.convert.limits import check_source_size, format_size
from ptif.errors import DISK_FULL, SOURCE_CHANGED, PtifError, TooLargeError
from ptif.queue.workdir import local_error
from ptif.stores.base import ObjectInfo, ObjectTooBig, Store

log = logging.getLogger(__name__)

CHUNK = 1 << 20
#: Room a download needs, in source sizes: the source, and a pyramid as big (a guess: a full
#: disk while the pyramid is written is still ``disk-full``, retried).
ROOM_FACTOR = 2
#: An eTag that may be the MD5 of the object's bytes (a multipart one ends in ``-<parts>``).
_MD5_ETAG = re.compile(r"^[0-9a-f]{32}$")


class SourceChanged(PtifError):
    """The local copy of a source, or its pyramid, is not what was fetched or made."""

    code = SOURCE_CHANGED


@dataclass(frozen=True)
class Pin:
    """One file as it was: which inode, how long, and when last modified and changed."""

    device: int
    inode: int
    size: int
    modified_ns: int
    changed_ns: int

    @classmethod
    def of(cls, path: Path) -> Pin:
        st = os.stat(path, follow_symlinks=False)
        return cls(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def pin(path: Path) -> Pin | None:
    """The file's pin, or ``None`` when it is gone."""
    try:
        return Pin.of(path)
    except FileNotFoundError:
        return None


@dataclass(frozen=True)
class Fetched:
    """A source downloaded to ``path``: its info from the store, its SHA-256 and its pin."""

    key: str
    path: Path
    info: ObjectInfo
    sha256: str
    pinned: Pin

    def check(self) -> None:
        """Raise :class:`SourceChanged` unless the file is still the one fetched, byte for
        byte."""
        now = pin(self.path)
        if now != self.pinned:
            raise self._changed("was modified or replaced in the work folder")
        if _digests(self.path, md5=False)[0] != self.sha256:
            raise self._changed("holds other bytes than were downloaded")
        if pin(self.path) != self.pinned:  # written while it was being hashed
            raise self._changed("was modified while it was being checked")

    def _changed(self, what: str) -> SourceChanged:
        log.warning("%s: the downloaded source %s; nothing published", self.key, what)
        return SourceChanged(
            f"{self.key}: its downloaded copy {what} before its pyramid was published; nothing "
            "was published and the next attempt downloads it again (if this recurs, look for "
            "another process writing to the worker's temporary folder)"
        )


def fetch(
    store: Store,
    key: str,
    path: Path,
    *,
    size: int | None = None,
    max_bytes: int | None = None,
    opened: Callable[[ObjectInfo], None] | None = None,
) -> Fetched:
    """Download ``key`` to ``path``, checked against an MD5 eTag where there is one, and
    fingerprinted for :meth:`Fetched.check`. ``size``, if the store said it already, is
    checked against ``max_bytes`` and the work folder's free space before the download; the
    download never writes more than ``max_bytes`` or than the free space allows (a download
    refused for that says which). ``opened`` hears of each version the store opened, even one
    refused for its size."""
    if size is not None:
        if max_bytes is not None:
            check_source_size(key, size, max_bytes)
        check_room(key, path.parent, size)
    info = _get(store, key, path, max_bytes, opened)
    sha256, md5 = _digests(path, md5=_is_md5(info.etag))
    if md5 is None or md5 == info.etag:
        return Fetched(key, path, info, sha256, Pin.of(path))
    first = sha256
    info = _get(store, key, path, max_bytes, opened)
    sha256, md5 = _digests(path, md5=_is_md5(info.etag))
    if md5 is not None and md5 != info.etag and sha256 != first:
        raise SourceChanged(
            f"{key}: two downloads differed from each other and from the eTag {info.etag}; "
            "nothing was converted and the next attempt downloads it again"
        )
    if md5 is not None and md5 != info.etag:
        log.debug("%s: the eTag %s is not the MD5 of its bytes (SSE-KMS?)", key, info.etag)
    else:
        log.info("%s: a download did not match the eTag; the second one did", key)
    return Fetched(key, path, info, sha256, Pin.of(path))


def check_pyramid(key: str, path: Path, made: Pin) -> None:
    """Raise :class:`SourceChanged` if the pyramid at ``path`` is not the file the conversion
    made and verified (``made``)."""
    if pin(path) != made:
        log.warning("%s: the pyramid changed in the work folder before upload; not published", key)
        raise SourceChanged(
            f"{key}: its pyramid was modified or replaced in the work folder after it was "
            "verified; nothing was published and the next attempt converts it again"
        )


def check_room(key: str, folder: Path, size: int) -> None:
    """Refuse to download ``size`` bytes into ``folder`` unless its disk has room for them and
    for a pyramid as big: ``disk-full`` (retried, never counted) while the disk is too full,
    ``too-large`` (permanent) if the download alone is bigger than the whole disk."""
    usage = _usage(key, folder)
    if size > usage.total:
        raise TooLargeError(
            f"{key}: {format_size(size)} will never fit the work folder's disk ({folder}: "
            f"{format_size(usage.total)} in all); point TMPDIR at a bigger disk (in ECS, raise "
            "the task's ephemeral storage), then `ptif retry` it"
        )
    need = ROOM_FACTOR * size
    if need > usage.free:
        raise _no_room(key, folder, size, usage.free)


def _usage(key: str, folder: Path) -> Any:
    try:
        return shutil.disk_usage(folder)
    except OSError as error:
        raise local_error(error, f"{key}: cannot see the free space in {folder}") from error


def _no_room(key: str, folder: Path, size: int, free: int) -> PtifError:
    need = ROOM_FACTOR * size
    return PtifError(
        f"{key}: needs {format_size(need)} in the work folder ({format_size(size)} to "
        f"download, as much again for its pyramid) but {folder} has "
        f"{format_size(free)} free; a later run tries again (free some space, run "
        "fewer workers, or point TMPDIR at a bigger disk)",
        code=DISK_FULL,
    )


def _get(
    store: Store,
    key: str,
    path: Path,
    max_bytes: int | None,
    opened: Callable[[ObjectInfo], None] | None,
) -> ObjectInfo:
    """One download, bounded by ``max_bytes`` and by the room the work folder has for it. A
    copy already at ``path`` (a second download) is replaced by it: its space counts as free."""
    try:
        replaced = path.stat().st_size
    except FileNotFoundError:
        replaced = 0
    room = (_usage(key, path.parent).free + replaced) // ROOM_FACTOR
    limit = room if max_bytes is None else min(max_bytes, room)
    try:
        info = store.get_file(key, path, limit)
    except ObjectTooBig as error:  # too big for the limit, grew past it, or replaced
        if opened is not None and error.info is not None:
            opened(error.info)
        if max_bytes is not None:
            check_source_size(key, error.size, max_bytes)
        check_room(key, path.parent, error.size)
        raise _no_room(key, path.parent, error.size, ROOM_FACTOR * room) from error
    except OSError as error:  # writing the download: the store's own failures are its errors
        raise local_error(error, f"{key}: cannot write its download to {path.parent}") from error
    if opened is not None:
        opened(info)
    return info


def _is_md5(etag: str) -> bool:
    return bool(_MD5_ETAG.match(etag))


def _digests(path: Path, *, md5: bool) -> tuple[str, str | None]:
    """The file's SHA-256 and, if asked, its MD5, in one read."""
    sha = hashlib.sha256()
    mdh: Any = hashlib.md5(usedforsecurity=False) if md5 else None
    try:
        with open(path, "rb", buffering=0) as handle:
            while chunk := handle.read(CHUNK):
                sha.update(chunk)
                if mdh is not None:
                    mdh.update(chunk)
    except OSError as error:
        raise local_error(error, f"{path}: cannot read the download") from error
    return sha.hexdigest(), (mdh.hexdigest() if mdh is not None else None)
