"""A local folder as a store: the embedded default, no server needed.

Keys map to files under the root. Every write is staged in ``root/.ptif-tmp/`` and moved into
place with ``os.rename`` (or ``os.link``, which refuses an existing target, for create-if-absent),
so readers see the old file or the whole new one. The check and the move of every write and delete
happen under one ``flock`` lock file, which makes the conditional operations safe between the
processes of one machine (flock is not reliable on network filesystems: share a folder store
between machines only through a filesystem that honours it).

An eTag is derived from the inode, the size and the modification time in nanoseconds. Under the
lock each write stamps its file with a modification time later than any stamp before it, so an
eTag never comes back, even when the filesystem reuses an inode within one clock tick.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import shutil
import stat
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from ptif.errors import DISK_FULL, ConfigError, PtifError
from ptif.stores.base import (
    MAX_KEY_BYTES,
    ObjectInfo,
    ObjectMissing,
    PreconditionFailed,
    UnsafeKey,
    normalize_metadata,
    verify_conditional_writes,
)

log = logging.getLogger(__name__)

RESERVED = ".ptif-"
TMP_DIR = ".ptif-tmp"
STAGED_PREFIX = "put-"
#: A staged write untouched this long belongs to a writer that was killed.
STALE_STAGED_S = 3600.0
META_DIR = ".ptif-meta"
XATTR = "user.ptif.meta"
NAME_MAX = 255
CHUNK = 1 << 20
_NO_XATTRS = {errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM, errno.E2BIG, errno.ENOSPC}


class FolderStore:
    """Objects as files under ``root``; ``xattrs=False`` keeps metadata in sidecar files even
    where the filesystem supports extended attributes (``None`` finds out per file)."""

    def __init__(self, root: Path | str, *, url: str | None = None, xattrs: bool | None = None):
        self.root = Path(root).absolute()
        self.url = url or str(root)
        self._xattrs = xattrs
        try:
            (self.root / TMP_DIR).mkdir(parents=True, exist_ok=True)
            self._lock_path().touch(exist_ok=True)
        except OSError as error:
            raise ConfigError(f"{self.url}: cannot use this folder as a store: {error}") from error
        self._sweep_staged()

    def _sweep_staged(self) -> None:
        """Remove staged writes that a killed writer left behind. A live write keeps touching
        its file, and a written one is moved into place within moments, so a file untouched
        for STALE_STAGED_S is nobody's."""
        stale_before = time.time() - STALE_STAGED_S
        with contextlib.suppress(OSError), os.scandir(self.root / TMP_DIR) as entries:
            for entry in entries:
                if not entry.name.startswith(STAGED_PREFIX):
                    continue
                with contextlib.suppress(OSError):
                    st = entry.stat(follow_symlinks=False)
                    if stat.S_ISREG(st.st_mode) and st.st_mtime < stale_before:
                        os.unlink(entry.path)

    def __repr__(self) -> str:
        return f"FolderStore({self.url!r})"

    # -- reading -------------------------------------------------------------------------------

    def get_file(self, key: str, path: Path) -> ObjectInfo:
        path = Path(path)
        part = path.with_name(path.name + ".part")
        with self._open(key) as (src, info):
            try:
                with open(part, "wb") as dst:
                    shutil.copyfileobj(src, dst, CHUNK)
                os.replace(part, path)
            except BaseException:
                part.unlink(missing_ok=True)
                raise
        return info

    def get_bytes(self, key: str) -> tuple[bytes, ObjectInfo]:
        with self._open(key) as (src, info):
            return src.read(), info

    def head(self, key: str) -> ObjectInfo | None:
        try:
            with self._open(key) as (_, info):
                return info
        except ObjectMissing:
            return None

    def list(
        self, prefix: str = "", *, start_after: str = "", recursive: bool = True
    ) -> Iterator[ObjectInfo]:
        folder, _, _ = prefix.rpartition("/")
        start = self._path(folder) if folder else self.root
        rel = f"{folder}/" if folder else ""
        walk = _walk(start, rel, prefix, start_after, top=not folder, recursive=recursive)
        for key, st in walk:
            yield ObjectInfo(key, st.st_size, _etag(st), _modified(st))

    # -- writing -------------------------------------------------------------------------------

    def put_file(self, key: str, path: Path, metadata: Mapping[str, str] | None = None) -> str:
        def copy(dst: BinaryIO) -> None:
            with open(path, "rb") as src:
                shutil.copyfileobj(src, dst, CHUNK)

        return self._put(key, copy, metadata, if_none_match=False, if_match=None)

    def put_bytes(
        self,
        key: str,
        data: bytes,
        *,
        if_none_match: bool = False,
        if_match: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> str:
        return self._put(key, lambda dst: dst.write(data), metadata, if_none_match, if_match)

    def delete(self, key: str, *, if_match: str | None = None) -> None:
        dest = self._path(key)
        with self._locked():
            current = _stat(dest)
            if current is None:
                if if_match is not None:
                    raise PreconditionFailed(f"{self.url}: {key} is gone; nothing to delete")
                return
            _check(key, current, if_match=if_match, if_none_match=False)
            os.unlink(dest)
            self._sidecar(key).unlink(missing_ok=True)
            self._prune(dest.parent)

    def check_conditional_writes(self) -> None:
        verify_conditional_writes(self, "check that the folder is on a local filesystem")

    # -- internals -----------------------------------------------------------------------------

    def _put(
        self,
        key: str,
        write: Callable[[BinaryIO], object],
        metadata: Mapping[str, str] | None,
        if_none_match: bool,
        if_match: str | None,
    ) -> str:
        dest = self._path(key)
        meta = normalize_metadata(metadata)
        with _disk_full(key):
            staged = self._stage(write)
        try:
            use_sidecar = bool(meta) and not self._set_xattr(staged, meta)
            with self._locked() as lock:
                current = _stat(dest)
                _check(key, current, if_match=if_match, if_none_match=if_none_match)
                st = _stamp(staged, lock, current)
                if use_sidecar:
                    self._write_sidecar(key, st, meta)
                self._move(key, staged, dest, exclusive=if_none_match)
            return _etag(st)
        finally:
            staged.unlink(missing_ok=True)

    def _stage(self, write: Callable[[BinaryIO], object]) -> Path:
        fd, name = tempfile.mkstemp(dir=self.root / TMP_DIR, prefix=STAGED_PREFIX)
        try:
            with os.fdopen(fd, "wb") as dst:
                write(dst)
                dst.flush()
                os.fsync(dst.fileno())
        except BaseException:
            os.unlink(name)
            raise
        return Path(name)

    def _move(self, key: str, staged: Path, dest: Path, *, exclusive: bool) -> None:
        with _key_errors(key):
            dest.parent.mkdir(parents=True, exist_ok=True)
            if dest.is_dir():
                raise IsADirectoryError(errno.EISDIR, "is a folder", str(dest))
            try:
                if exclusive:
                    os.link(staged, dest)
                else:
                    os.rename(staged, dest)
            except FileExistsError as error:
                raise PreconditionFailed(f"{self.url}: {key} already exists") from error
            _fsync_dir(dest.parent)

    def _set_xattr(self, path: Path, meta: dict[str, str]) -> bool:
        """Metadata travels with the file (rename keeps xattrs); False if refused."""
        if self._xattrs is False:
            return False
        try:
            os.setxattr(path, XATTR, json.dumps(meta).encode())
        except OSError as error:
            if error.errno not in _NO_XATTRS:
                raise
            return False
        return True

    def _write_sidecar(self, key: str, st: os.stat_result, meta: dict[str, str]) -> None:
        """Metadata for a filesystem without xattrs, bound to the inode and stamp it describes,
        so a sidecar left by an interrupted put never dresses another file."""
        sidecar = self._sidecar(key)
        sidecar.parent.mkdir(parents=True, exist_ok=True)
        body = {"inode": st.st_ino, "mtime_ns": st.st_mtime_ns, "metadata": meta}
        tmp = sidecar.with_name(sidecar.name + ".tmp")
        tmp.write_text(json.dumps(body))
        os.rename(tmp, sidecar)

    def _metadata(self, key: str, fd: int, st: os.stat_result) -> dict[str, str]:
        try:
            return dict(json.loads(os.getxattr(fd, XATTR)))
        except OSError as error:
            if error.errno not in (errno.ENODATA, *_NO_XATTRS):
                raise
        try:
            body = json.loads(self._sidecar(key).read_text())
        except (OSError, ValueError):
            return {}
        if (body.get("inode"), body.get("mtime_ns")) != (st.st_ino, st.st_mtime_ns):
            return {}
        return dict(body.get("metadata", {}))

    @contextlib.contextmanager
    def _open(self, key: str) -> Iterator[tuple[BinaryIO, ObjectInfo]]:
        """The open file with the info of exactly that version (a later replace does not change
        what an open descriptor reads)."""
        path = self._path(key)
        try:
            src = open(path, "rb")  # noqa: SIM115 (closed by the with below)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError) as error:
            raise ObjectMissing(f"{self.url}: no object {key}") from error
        with src:
            st = os.fstat(src.fileno())
            if not stat.S_ISREG(st.st_mode):
                raise ObjectMissing(f"{self.url}: {key} is not a file")
            meta = self._metadata(key, src.fileno(), st)
            yield src, ObjectInfo(key, st.st_size, _etag(st), _modified(st), meta)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[BinaryIO]:
        with open(self._lock_path(), "r+b") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield lock
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _lock_path(self) -> Path:
        return self.root / TMP_DIR / "lock"

    def _sidecar(self, key: str) -> Path:
        return self.root / META_DIR / f"{key}.json"

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*_segments(key))

    def _prune(self, folder: Path) -> None:
        """Remove folders a delete left empty, up to the root (called under the lock)."""
        while folder != self.root and self.root in folder.parents:
            try:
                folder.rmdir()
            except OSError:
                return
            folder = folder.parent


def _segments(key: str) -> list[str]:
    """The key's path segments, refusing any key that could name something outside the root or
    that a filesystem cannot hold."""
    if not isinstance(key, str) or not key:
        raise UnsafeKey(f"empty or non-text key {key!r}")
    if "\0" in key or key.startswith("/"):
        raise UnsafeKey(f"key {key!r}: absolute or contains NUL")
    if len(key.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
        raise UnsafeKey(f"key {key[:60]!r}…: longer than {MAX_KEY_BYTES} bytes")
    parts = key.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise UnsafeKey(f"key {key!r}: empty, '.' or '..' path segment")
    if parts[0].startswith(RESERVED):
        raise UnsafeKey(f"key {key!r}: names starting with {RESERVED} are the store's own")
    if any(len(p.encode("utf-8", "surrogatepass")) > NAME_MAX for p in parts):
        raise UnsafeKey(f"key {key[:60]!r}…: a segment is longer than {NAME_MAX} bytes")
    return parts


def _check(
    key: str, current: os.stat_result | None, *, if_match: str | None, if_none_match: bool
) -> None:
    if if_none_match and current is not None:
        raise PreconditionFailed(f"{key} already exists")
    if if_match is not None and (current is None or _etag(current) != if_match):
        raise PreconditionFailed(f"{key} has changed or is gone (expected eTag {if_match})")


def _stamp(staged: Path, lock: BinaryIO, current: os.stat_result | None) -> os.stat_result:
    """Give the staged file a modification time later than every earlier stamp (kept in the lock
    file) and than the file it replaces, so no two versions ever share an eTag."""
    lock.seek(0)
    last = int(lock.read(32) or b"0")
    now = max(os.stat(staged).st_mtime_ns, last + 1)
    if current is not None:
        now = max(now, current.st_mtime_ns + 1)
    os.utime(staged, ns=(now, now))
    lock.seek(0)
    lock.write(b"%020d" % now)
    lock.flush()
    return os.stat(staged)


@contextlib.contextmanager
def _key_errors(key: str) -> Iterator[None]:
    """Turn the filesystem's refusals that depend on the key into :class:`UnsafeKey`, and a full
    disk into its retryable error."""
    try:
        with _disk_full(key):
            yield
    except (NotADirectoryError, IsADirectoryError, FileExistsError) as error:
        raise UnsafeKey(
            f"key {key!r}: a file and a folder would share a name, which a folder store cannot "
            "hold (S3 can)"
        ) from error
    except OSError as error:
        if error.errno == errno.ENAMETOOLONG:
            raise UnsafeKey(f"key {key[:60]!r}…: too long for this filesystem") from error
        raise


@contextlib.contextmanager
def _disk_full(key: str) -> Iterator[None]:
    try:
        yield
    except OSError as error:
        if error.errno in (errno.ENOSPC, errno.EDQUOT):
            raise PtifError(f"{key}: disk full: {error}", code=DISK_FULL) from error
        raise


def _walk(
    folder: Path,
    rel: str,
    prefix: str,
    start_after: str,
    *,
    top: bool,
    recursive: bool = True,
    above: frozenset[tuple[int, int]] = frozenset(),
) -> Iterator[tuple[str, os.stat_result]]:
    """Files below ``folder`` in S3 key order, one directory in memory at a time. Sorting a
    directory's name as ``name + "/"`` puts ``a/b`` after ``a-b`` and before ``a0``, as S3 does
    (code point order is UTF-8 byte order). ``above`` holds the folders on the way down, so a
    symlink to one of them is not followed round and round."""
    for name, is_dir, st in _sorted_entries(folder):
        key = rel + name
        if top and name.startswith(RESERVED):
            continue
        if not is_dir:
            if key.startswith(prefix) and key > start_after:
                yield key, st
            continue
        if not recursive:
            continue
        here = (st.st_dev, st.st_ino)
        if here in above:
            log.warning("skipping %s: a symlink back to a folder above it", folder / name)
        elif _may_hold(key + "/", prefix, start_after):
            down = above | {here}
            yield from _walk(folder / name, key + "/", prefix, start_after, top=False, above=down)


def _sorted_entries(folder: Path) -> list[tuple[str, bool, os.stat_result]]:
    entries = []
    try:
        with os.scandir(folder) as it:
            for entry in it:
                found = _entry(entry)
                if found is not None:
                    entries.append(found)
    except (FileNotFoundError, NotADirectoryError):
        return []
    entries.sort(key=lambda e: e[0] + "/" if e[1] else e[0])
    return entries


def _entry(entry: os.DirEntry[str]) -> tuple[str, bool, os.stat_result] | None:
    try:
        entry.name.encode("utf-8")
    except UnicodeEncodeError:
        log.warning("skipping %r: its name is not UTF-8, so it cannot be a key", entry.path)
        return None
    try:
        st = entry.stat()
    except FileNotFoundError:
        return None
    if stat.S_ISDIR(st.st_mode):
        return entry.name, True, st
    if stat.S_ISREG(st.st_mode):
        return entry.name, False, st
    return None


def _may_hold(below: str, prefix: str, start_after: str) -> bool:
    """Whether keys starting with ``below`` can match ``prefix`` and come after ``start_after``."""
    if not (below.startswith(prefix) or prefix.startswith(below)):
        return False
    return start_after.startswith(below) or start_after < below


def _stat(path: Path) -> os.stat_result | None:
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    return st if stat.S_ISREG(st.st_mode) else None


def _etag(st: os.stat_result) -> str:
    return f"{st.st_ino:x}-{st.st_size:x}-{st.st_mtime_ns:x}"


def _modified(st: os.stat_result) -> datetime:
    return datetime.fromtimestamp(st.st_mtime_ns / 1e9, tz=UTC)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
