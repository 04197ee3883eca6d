"""A local folder as a store: the embedded default, no server needed.

Keys map to files under the root. Every write is staged in ``root/.ptif-tmp/`` and moved into
place with ``os.rename`` (or ``os.link``, which refuses an existing target, for create-if-absent),
so readers see the old file or the whole new one. The check and the move of every write and delete
happen under one ``flock`` lock file, which makes the conditional operations safe between the
processes of one machine (flock is not reliable on network filesystems: share a folder store
between machines only through a filesystem that honours it). ``.ptif-tmp`` is made by the first
write, so a store that is only read is never written to. A store opened with ``read_only`` (the
source: the archive's masters) goes further: opening it creates nothing, not even its root, and
every write or delete is refused before it touches the disk, so it works on a read-only mount.

An eTag is derived from the inode, the size and the modification time in nanoseconds. Under the
lock each write stamps its file with a modification time later than any stamp before it, so an
eTag never comes back, even when the filesystem reuses an inode within one clock tick.

Only regular files are objects, and no symlink below the root is ever followed: anyone who can
put files in a source folder could otherwise make ptif read, publish, delete or overwrite files
elsewhere, or hang it on a FIFO. The root itself may be a symlink (a mount reached through a
link); it is resolved once, when the store is opened. Below it, every operation opens the root
and walks the key's folders one at a time with ``O_NOFOLLOW | O_DIRECTORY`` relative to the
folder above (``dir_fd``), then works on the last name relative to that folder, so nothing that
changes between a check and the use can redirect it: there is no check by path followed by an
open by path. A file is opened with ``O_NOFOLLOW | O_NONBLOCK`` and ``fstat``-ed before a byte
is read, so a FIFO never blocks and a device is never read. What is not a regular file:

- listings skip it (symlinks to files or folders, FIFOs, devices, sockets), with a warning;
- reading it (``get_*``, ``head``) raises :class:`NotAFile`, a permanent failure for the worker,
  whose record says what the key names; so does any key below a symlinked folder;
- a delete leaves it alone (it is no object); a conditional write or delete finds no object;
  an unconditional write replaces the name itself, never what a link points to;
- writes below a symlinked folder are refused with :class:`NotAFile`; the link is not replaced,
  as an operator may have made it on purpose: it names where ptif would have written.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import secrets
import shutil
import stat
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from ptif.errors import DISK_FULL, ConfigError, PtifError
from ptif.stores.base import (
    NotAFile,
    ObjectInfo,
    ObjectMissing,
    ObjectTooBig,
    PreconditionFailed,
    StoreError,
    UnsafeKey,
    check_key,
    copy_at_most,
    delete_one_by_one,
    normalize_metadata,
    read_only_refusal,
    verify_conditional_writes,
)

log = logging.getLogger(__name__)

RESERVED = ".ptif-"
TMP_DIR = ".ptif-tmp"
LOCK_FILE = "lock"
STAGED_PREFIX = "put-"
#: A staged write untouched this long belongs to a writer that was killed.
STALE_STAGED_S = 3600.0
META_DIR = ".ptif-meta"
XATTR = "user.ptif.meta"
NAME_MAX = 255
CHUNK = 1 << 20
#: A sidecar holds at most 2 KB of metadata; anything much larger was not written by ptif.
SIDECAR_MAX = 64 * 1024
#: Published files get this mode less the umask, as files made by ``cp`` or a text editor do.
FILE_MODE = 0o666
_NO_XATTRS = {errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM, errno.E2BIG, errno.ENOSPC}
#: A folder below the root: never through a symlink; never waiting (a FIFO is no folder anyway).
_FOLDER = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
#: A file to read: a symlink is refused by the kernel, a FIFO opens without waiting for a writer.
_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
_NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_LOCK = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
#: Warnings about entries listings skip, once per path and process (``watch`` lists every pass).
_WARNED: set[str] = set()
_WARNED_MAX = 10_000

Parts = list[str]  # a key's segments (``list`` is also a method of the store, below)
Fds = list[int]  # open folder descriptors, the root first


class FolderStore:
    """Objects as files under ``root``; ``xattrs=False`` keeps metadata in sidecar files even
    where the filesystem supports extended attributes (``None`` finds out per file).

    Published files get mode 0666 less the umask; ``file_mode`` (such as ``0o644``) gives them
    exactly that mode instead, whatever the umask, and the folders the store makes the same
    with search (``x``) wherever reading is allowed (``0o755``); a ``read_only`` store creates
    nothing, not even its root, and refuses every write; nor does one told not to ``create``
    its root, which must then be there."""

    def __init__(
        self,
        root: Path | str,
        *,
        url: str | None = None,
        xattrs: bool | None = None,
        file_mode: int | None = None,
        read_only: bool = False,
        create: bool = True,
    ):
        self.root = Path(root).absolute()
        self.url = url or str(root)
        self._xattrs = xattrs
        self.file_mode: int | None = None
        self.folder_mode: int | None = None
        self.use_file_mode(file_mode)
        self.read_only = read_only
        if read_only:
            _check_exists(self.root, self.url)
        elif not create and not os.path.lexists(self.root):
            raise ConfigError(
                f"{self.url}: no such folder ({self.root}); correct the location, or create "
                "the folder if it really is new"
            )
        else:
            try:
                made = not self.root.exists()
                self.root.mkdir(parents=True, exist_ok=True)
                if made and self.folder_mode is not None:
                    self.root.chmod(self.folder_mode)
            except OSError as error:
                raise ConfigError(
                    f"{self.url}: cannot use this folder as a store: {error}"
                ) from error
        #: The root with its symlinks resolved, once: everything below it is reached from here
        #: without following any.
        self.real_root = Path(os.path.realpath(self.root))
        if not self.real_root.is_dir():
            raise ConfigError(f"{self.url}: {self.root} is not a folder")
        self._swept = False

    def __repr__(self) -> str:
        return f"FolderStore({self.url!r})"

    def use_file_mode(self, mode: int | None) -> None:
        """Publish files with exactly ``mode`` from now on (``None``: 0666 less the umask)."""
        self.file_mode = mode
        self.folder_mode = None if mode is None else mode | (mode & 0o444) >> 2

    # -- reading -------------------------------------------------------------------------------

    def get_file(self, key: str, path: Path, max_bytes: int | None = None) -> ObjectInfo:
        path = Path(path)
        part = path.with_name(path.name + ".part")
        with self._open(key) as (src, info):
            where = f"{self.url}: {key}"
            if max_bytes is not None and info.size > max_bytes:  # a sparse file, say
                raise ObjectTooBig(where, info.size, max_bytes, info)
            try:
                with _disk_full(key), open(part, "wb") as dst:  # the local disk may fill up
                    copy_at_most(src, dst, max_bytes, where)  # it may grow while copied
                os.replace(part, path)
            except ObjectTooBig as error:
                part.unlink(missing_ok=True)
                error.info = info
                raise
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

    def entry_stat(self, key: str) -> os.stat_result | None:
        """What is at ``key`` if it is a regular file or a folder reached without following a
        symlink, else ``None`` (for ``watch``, which sees file events by path)."""
        try:
            parts = self._segments(key)
            with self._folders(key, parts[:-1]) as folders:
                st = os.lstat(parts[-1], dir_fd=folders[-1])
        except (OSError, UnsafeKey, NotAFile):
            return None
        return st if stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode) else None

    def list(
        self,
        prefix: str = "",
        *,
        start_after: str = "",
        recursive: bool = True,
        page_size: int | None = None,
    ) -> Iterator[ObjectInfo]:
        folder, _, _ = prefix.rpartition("/")
        parts = self._segments(folder) if folder else []
        rel = f"{folder}/" if folder else ""
        try:
            with self._folders(folder, parts) as folders:
                walk = _walk(
                    folders[-1], rel, prefix, start_after, top=not folder, recursive=recursive
                )
                for key, st in walk:
                    yield ObjectInfo(key, st.st_size, _etag(st), _modified(st))
        except (FileNotFoundError, NotADirectoryError):
            return
        except NotAFile as error:
            _warn_once(f"{self.real_root}/{folder}", f"listing nothing: {error}")

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
        """Remove the file at ``key``. Anything else there (a symlink, a FIFO) is no object:
        it stays, and ``if_match`` finds nothing to match."""
        parts = self._segments(key)
        with (
            self._staging() as tmp,
            self._locked(tmp),
            self._folders(key, parts[:-1], missing_ok=True) as folders,
        ):
            current = _regular(folders[-1], parts[-1]) if folders else None
            if current is None:
                if if_match is not None:
                    raise PreconditionFailed(f"{self.url}: {key} is gone; nothing to delete")
                return
            _check(key, current, if_match=if_match, if_none_match=False)
            os.unlink(parts[-1], dir_fd=folders[-1])
            self._delete_sidecar(key, parts)
            _prune(folders, parts)

    def delete_matching(self, objects: Sequence[tuple[str, str]]) -> tuple[str, ...]:
        return delete_one_by_one(self, objects)

    def check_conditional_writes(self) -> None:
        verify_conditional_writes(self, "check that the folder is on a local filesystem")

    # -- internals: finding things without following links --------------------------------------

    def _segments(self, key: str) -> Parts:
        """The key's path segments: :func:`~ptif.stores.base.check_key`'s rule, which every
        store applies, plus what a filesystem cannot hold and the store's own names."""
        parts = check_key(key, self.url)
        if parts[0].startswith(RESERVED):
            raise UnsafeKey(f"key {key!r}: names starting with {RESERVED} are the store's own")
        if any(len(p.encode("utf-8", "surrogatepass")) > NAME_MAX for p in parts):
            raise UnsafeKey(f"key {key[:60]!r}…: a segment is longer than {NAME_MAX} bytes")
        return parts

    @contextlib.contextmanager
    def _folders(
        self, key: str, parts: Sequence[str], *, create: bool = False, missing_ok: bool = False
    ) -> Iterator[Fds]:
        """Open descriptors of the root and of each folder of ``parts`` below it, the last one
        being ``root/parts…``; each is opened relative to the one above, never through a
        symlink. ``create`` makes missing folders. A missing folder (or a file where a folder
        should be) raises the OSError, or yields ``[]`` with ``missing_ok``; a symlinked one
        raises :class:`NotAFile`."""
        folders: Fds = []
        try:
            folders.append(self._open_root(create=create))
            for depth, name in enumerate(parts):
                where = "/".join(parts[: depth + 1])
                folders.append(self._open_folder(folders[-1], name, key, where, create=create))
        except (FileNotFoundError, NotADirectoryError):
            _close_all(folders)
            if not missing_ok:
                raise
        except BaseException:
            _close_all(folders)
            raise
        try:
            yield folders
        finally:
            _close_all(folders)

    def _open_root(self, *, create: bool) -> int:
        try:
            return os.open(self.real_root, _FOLDER)
        except FileNotFoundError:
            if not create:
                raise
            os.makedirs(self.real_root, exist_ok=True)
            return os.open(self.real_root, _FOLDER)
        except OSError as error:
            if error.errno not in (errno.ENOTDIR, errno.ELOOP):
                raise
            raise StoreError(
                f"{self.url}: {self.real_root} is no longer a folder (replaced by a link or a "
                "file since the store was opened); check the mount, then run ptif again"
            ) from error

    def _open_folder(self, parent: int, name: str, key: str, where: str, *, create: bool) -> int:
        made = False
        if create:
            with contextlib.suppress(FileExistsError):
                os.mkdir(name, dir_fd=parent)  # never follows: a symlink there is EEXIST
                made = True
        try:
            fd = os.open(name, _FOLDER, dir_fd=parent)
            if made and self.folder_mode is not None:
                _chmod_or_close(fd, self.folder_mode)
            return fd
        except OSError as error:
            if error.errno not in (errno.ENOTDIR, errno.ELOOP):
                raise
            st = _lstat(parent, name)
            if st is None or not stat.S_ISLNK(st.st_mode):
                raise NotADirectoryError(errno.ENOTDIR, "not a folder", where) from error
            raise NotAFile(
                f"{self.url}: {key}: the folder {where} is a symlink; folder stores follow no "
                "symlink below their root (it could lead anywhere): make it a real folder, or "
                "mount the other disk there"
            ) from error

    def _open_file(self, folder: int, name: str, key: str) -> int:
        """A descriptor of the regular file ``name``, opened so that nothing else can be:
        what ``lstat`` shows decides before opening (a FIFO or a device is never opened), and
        what ``fstat`` shows of the open descriptor decides after."""
        st = os.lstat(name, dir_fd=folder)
        if stat.S_ISDIR(st.st_mode):
            raise IsADirectoryError(errno.EISDIR, "is a folder", key)
        if not stat.S_ISREG(st.st_mode):
            raise self._not_a_file(key, st)
        try:
            fd = os.open(name, _READ, dir_fd=folder)
        except OSError as error:
            if error.errno != errno.ELOOP:
                raise
            raise self._not_a_file(key, os.lstat(name, dir_fd=folder)) from error
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            raise self._not_a_file(key, st)
        os.set_blocking(fd, True)
        return fd

    def _not_a_file(self, key: str, st: os.stat_result) -> NotAFile:
        return NotAFile(
            f"{self.url}: {key} is {_kind(st)}, not a regular file; folder stores read only "
            "regular files and follow no symlink (it could lead anywhere): replace it with the "
            "file itself"
        )

    # -- internals: reading ---------------------------------------------------------------------

    @contextlib.contextmanager
    def _open(self, key: str) -> Iterator[tuple[BinaryIO, ObjectInfo]]:
        """The open file with the info of exactly that version (a later replace does not change
        what an open descriptor reads)."""
        parts = self._segments(key)
        try:
            with self._folders(key, parts[:-1]) as folders:
                fd = self._open_file(folders[-1], parts[-1], key)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError) as error:
            raise ObjectMissing(f"{self.url}: no object {key}") from error
        with os.fdopen(fd, "rb") as src:
            st = os.fstat(fd)
            meta = self._metadata(key, parts, fd, st)
            yield src, ObjectInfo(key, st.st_size, _etag(st), _modified(st), meta)

    def _metadata(self, key: str, parts: Parts, fd: int, st: os.stat_result) -> dict[str, str]:
        try:
            return dict(json.loads(os.getxattr(fd, XATTR)))
        except OSError as error:
            if error.errno not in (errno.ENODATA, *_NO_XATTRS):
                raise
        try:
            body = json.loads(self._read_sidecar(key, parts))
        except (OSError, ValueError, NotAFile):
            return {}
        if not isinstance(body, dict):
            return {}
        if (body.get("inode"), body.get("mtime_ns")) != (st.st_ino, st.st_mtime_ns):
            return {}
        return dict(body.get("metadata", {}))

    def _read_sidecar(self, key: str, parts: Parts) -> bytes:
        with self._folders(key, [META_DIR, *parts[:-1]]) as folders:
            fd = self._open_file(folders[-1], f"{parts[-1]}.json", key)
        with os.fdopen(fd, "rb") as sidecar:
            return sidecar.read(SIDECAR_MAX)

    # -- internals: writing ---------------------------------------------------------------------

    def _put(
        self,
        key: str,
        write: Callable[[BinaryIO], object],
        metadata: Mapping[str, str] | None,
        if_none_match: bool,
        if_match: str | None,
    ) -> str:
        parts = self._segments(key)
        meta = normalize_metadata(metadata)
        with self._staging() as tmp:
            with _disk_full(key):
                staged, in_xattr = self._stage(tmp, write, meta)
            try:
                with self._locked(tmp) as lock:
                    current = self._current(key, parts)
                    _check(key, current, if_match=if_match, if_none_match=if_none_match)
                    st = _stamp(tmp, staged, lock, current)
                    if meta and not in_xattr:
                        self._write_sidecar(key, parts, st, meta)
                    self._move(key, parts, tmp, staged, exclusive=if_none_match)
                return _etag(st)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(staged, dir_fd=tmp)

    def _current(self, key: str, parts: Parts) -> os.stat_result | None:
        """The object a write would replace (before any folder is made for it)."""
        with self._folders(key, parts[:-1], missing_ok=True) as folders:
            return _regular(folders[-1], parts[-1]) if folders else None

    @contextlib.contextmanager
    def _staging(self) -> Iterator[int]:
        """The open staging folder, made by the first write (so a store that is only read,
        a source, is never written to); the first use also clears what killed writers left.
        A read-only store refuses here, before anything is made: every write and delete
        comes through this door."""
        if self.read_only:
            raise read_only_refusal(self.url)
        with contextlib.ExitStack() as stack:
            try:
                folders = stack.enter_context(self._folders(TMP_DIR, [TMP_DIR], create=True))
            except NotAFile as error:
                raise ConfigError(
                    f"{self.url}: {TMP_DIR} is a symlink; ptif stages every write there and "
                    "follows no symlink: remove it (ptif makes the folder itself)"
                ) from error
            if not self._swept:
                _sweep_staged(folders[-1])
                self._swept = True
            yield folders[-1]

    def _stage(
        self, tmp: int, write: Callable[[BinaryIO], object], meta: dict[str, str]
    ) -> tuple[str, bool]:
        """A new file in the staging folder holding what ``write`` writes; its name, and
        whether ``meta`` went into its extended attributes (which a rename keeps)."""
        name, fd = _create(tmp)
        try:
            if self.file_mode is not None:
                os.fchmod(fd, self.file_mode)
            with os.fdopen(fd, "wb") as dst:
                write(dst)
                dst.flush()
                in_xattr = bool(meta) and self._set_xattr(dst.fileno(), meta)
                os.fsync(dst.fileno())
        except BaseException:
            os.unlink(name, dir_fd=tmp)
            raise
        return name, in_xattr

    def _move(self, key: str, parts: Parts, tmp: int, staged: str, *, exclusive: bool) -> None:
        """Publish the staged file at ``key``, making its folders (never through a symlink).
        A rename replaces whatever name is there, a symlink included, never what it points to."""
        with _key_errors(key), self._folders(key, parts[:-1], create=True) as folders:
            folder, leaf = folders[-1], parts[-1]
            there = _lstat(folder, leaf)
            if there is not None and stat.S_ISDIR(there.st_mode):
                raise IsADirectoryError(errno.EISDIR, "is a folder", key)
            try:
                if exclusive:
                    os.link(staged, leaf, src_dir_fd=tmp, dst_dir_fd=folder, follow_symlinks=False)
                else:
                    os.rename(staged, leaf, src_dir_fd=tmp, dst_dir_fd=folder)
            except FileExistsError as error:
                raise PreconditionFailed(f"{self.url}: {key} already exists") from error
            os.fsync(folder)

    def _set_xattr(self, fd: int, meta: dict[str, str]) -> bool:
        """Metadata travels with the file (rename keeps xattrs); False if refused."""
        if self._xattrs is False:
            return False
        try:
            os.setxattr(fd, XATTR, json.dumps(meta).encode())
        except OSError as error:
            if error.errno not in _NO_XATTRS:
                raise
            return False
        return True

    def _write_sidecar(
        self, key: str, parts: Parts, st: os.stat_result, meta: dict[str, str]
    ) -> None:
        """Metadata for a filesystem without xattrs, bound to the inode and stamp it describes,
        so a sidecar left by an interrupted put never dresses another file."""
        body = {"inode": st.st_ino, "mtime_ns": st.st_mtime_ns, "metadata": meta}
        with (
            self._meta_errors(),
            self._folders(key, [META_DIR, *parts[:-1]], create=True) as folders,
        ):
            folder, name = folders[-1], f"{parts[-1]}.json"
            tmp = f"{name}.tmp"
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp, dir_fd=folder)
            fd = os.open(tmp, _NEW, FILE_MODE, dir_fd=folder)
            if self.file_mode is not None:
                os.fchmod(fd, self.file_mode)
            with os.fdopen(fd, "wb") as out:
                out.write(json.dumps(body).encode())
            os.rename(tmp, name, src_dir_fd=folder, dst_dir_fd=folder)

    @contextlib.contextmanager
    def _meta_errors(self) -> Iterator[None]:
        """A symlink among the sidecar folders is the store's problem, not the object's."""
        try:
            yield
        except NotAFile as error:
            raise ConfigError(
                f"{self.url}: a folder under {META_DIR} is a symlink; ptif keeps metadata there "
                f"and follows no symlink: remove it ({error})"
            ) from error

    def _delete_sidecar(self, key: str, parts: Parts) -> None:
        with (
            contextlib.suppress(FileNotFoundError, NotAFile),
            self._folders(key, [META_DIR, *parts[:-1]], missing_ok=True) as folders,
        ):
            if folders and _regular(folders[-1], f"{parts[-1]}.json") is not None:
                os.unlink(f"{parts[-1]}.json", dir_fd=folders[-1])

    @contextlib.contextmanager
    def _locked(self, tmp: int) -> Iterator[BinaryIO]:
        try:
            fd = os.open(LOCK_FILE, _LOCK, FILE_MODE, dir_fd=tmp)
        except OSError as error:
            if error.errno != errno.ELOOP:
                raise
            raise ConfigError(
                f"{self.url}: {TMP_DIR}/{LOCK_FILE} is a symlink; remove it (ptif makes it)"
            ) from error
        with os.fdopen(fd, "r+b") as lock:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise ConfigError(
                    f"{self.url}: {TMP_DIR}/{LOCK_FILE} is not a regular file; remove it"
                )
            os.set_blocking(fd, True)
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield lock
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)


def _chmod_or_close(fd: int, mode: int) -> None:
    try:
        os.fchmod(fd, mode)
    except BaseException:
        os.close(fd)
        raise


def _check_exists(root: Path, url: str) -> None:
    """A read-only store's root must be there already: ptif never creates it, and a mistyped
    path would otherwise look like an empty store."""
    if not root.exists():
        raise ConfigError(
            f"{url}: no such folder; ptif only reads this store and never creates it: check "
            "the path (or the mount)"
        )


def _close_all(fds: list[int]) -> None:
    for fd in reversed(fds):
        os.close(fd)
    fds.clear()


def _lstat(folder: int, name: str) -> os.stat_result | None:
    try:
        return os.lstat(name, dir_fd=folder)
    except (FileNotFoundError, NotADirectoryError):
        return None


def _regular(folder: int, name: str) -> os.stat_result | None:
    """The regular file ``name`` in ``folder``, or ``None`` (a symlink is no object)."""
    st = _lstat(folder, name)
    return st if st is not None and stat.S_ISREG(st.st_mode) else None


def _kind(st: os.stat_result) -> str:
    mode = st.st_mode
    if stat.S_ISLNK(mode):
        return "a symlink"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISDIR(mode):
        return "a folder"
    return "a regular file" if stat.S_ISREG(mode) else "an unknown kind of file"


def _warn_once(path: str, message: str) -> None:
    if path in _WARNED:
        return
    if len(_WARNED) < _WARNED_MAX:
        _WARNED.add(path)
    log.warning("%s", message)


def _create(tmp: int) -> tuple[str, int]:
    """A new staged file with a name nobody else has; mode 0666 less the umask."""
    while True:
        name = f"{STAGED_PREFIX}{secrets.token_hex(8)}"
        try:
            return name, os.open(name, _NEW, FILE_MODE, dir_fd=tmp)
        except FileExistsError:
            continue


def _sweep_staged(tmp: int) -> None:
    """Remove staged writes that a killed writer left behind. A live write keeps touching
    its file, and a written one is moved into place within moments, so a file untouched
    for STALE_STAGED_S is nobody's."""
    stale_before = time.time() - STALE_STAGED_S
    with contextlib.suppress(OSError), os.scandir(tmp) as entries:
        for entry in entries:
            if not entry.name.startswith(STAGED_PREFIX):
                continue
            with contextlib.suppress(OSError):
                st = entry.stat(follow_symlinks=False)
                if stat.S_ISREG(st.st_mode) and st.st_mtime < stale_before:
                    os.unlink(entry.name, dir_fd=tmp)


def _prune(folders: list[int], parts: list[str]) -> None:
    """Remove the folders a delete left empty, deepest first, up to the root (not included);
    ``folders`` are the open root and folders of ``parts[:-1]`` (called under the lock)."""
    for depth in range(len(folders) - 1, 0, -1):
        try:
            os.rmdir(parts[depth - 1], dir_fd=folders[depth - 1])
        except OSError:
            return


def _check(
    key: str, current: os.stat_result | None, *, if_match: str | None, if_none_match: bool
) -> None:
    if if_none_match and current is not None:
        raise PreconditionFailed(f"{key} already exists")
    if if_match is not None and (current is None or _etag(current) != if_match):
        raise PreconditionFailed(f"{key} has changed or is gone (expected eTag {if_match})")


def _stamp(tmp: int, staged: str, lock: BinaryIO, current: os.stat_result | None) -> os.stat_result:
    """Give the staged file a modification time later than every earlier stamp (kept in the lock
    file) and than the file it replaces, so no two versions ever share an eTag."""
    lock.seek(0)
    last = int(lock.read(32) or b"0")
    now = max(os.stat(staged, dir_fd=tmp, follow_symlinks=False).st_mtime_ns, last + 1)
    if current is not None:
        now = max(now, current.st_mtime_ns + 1)
    os.utime(staged, ns=(now, now), dir_fd=tmp, follow_symlinks=False)
    lock.seek(0)
    lock.write(b"%020d" % now)
    lock.flush()
    return os.stat(staged, dir_fd=tmp, follow_symlinks=False)


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
    folder: int,
    rel: str,
    prefix: str,
    start_after: str,
    *,
    top: bool,
    recursive: bool = True,
    above: frozenset[tuple[int, int]] = frozenset(),
) -> Iterator[tuple[str, os.stat_result]]:
    """Files below the open ``folder`` in S3 key order, one directory in memory at a time.
    Sorting a directory's name as ``name + "/"`` puts ``a/b`` after ``a-b`` and before ``a0``,
    as S3 does (code point order is UTF-8 byte order). Subfolders are opened relative to their
    parent without following symlinks; ``above`` holds the folders on the way down, so a bind
    mount of a folder inside itself is not walked round and round."""
    here = os.fstat(folder)
    above = above | {(here.st_dev, here.st_ino)}
    seen_from = f"{here.st_dev}:{here.st_ino}/"
    for name, st in _sorted_entries(folder, rel, seen_from, top=top):
        key = rel + name
        if not stat.S_ISDIR(st.st_mode):
            if key.startswith(prefix) and key > start_after:
                yield key, st
            continue
        if not recursive or not _may_hold(key + "/", prefix, start_after):
            continue
        if (st.st_dev, st.st_ino) in above:
            _warn_once(seen_from + name, f"skipping {key}: a folder mounted inside itself")
            continue
        try:
            child = os.open(name, _FOLDER, dir_fd=folder)
        except OSError:  # gone, or replaced by something else since it was listed
            continue
        try:
            yield from _walk(child, key + "/", prefix, start_after, top=False, above=above)
        finally:
            os.close(child)


def _sorted_entries(
    folder: int, rel: str, seen_from: str, *, top: bool
) -> list[tuple[str, os.stat_result]]:
    """The regular files and folders of ``folder`` (not what symlinks point to), sorted.
    ``seen_from`` names the folder for :func:`_warn_once`: its device and inode."""
    entries = []
    with os.scandir(folder) as it:
        for entry in it:
            if top and entry.name.startswith(RESERVED):
                continue
            st = _entry(entry, rel, seen_from)
            if st is not None:
                entries.append((entry.name, st))
    entries.sort(key=lambda e: e[0] + "/" if stat.S_ISDIR(e[1].st_mode) else e[0])
    return entries


def _entry(entry: os.DirEntry[str], rel: str, seen_from: str) -> os.stat_result | None:
    where = f"{rel}{entry.name}"
    try:
        entry.name.encode("utf-8")
    except UnicodeEncodeError:
        message = f"skipping {where!r}: its name is not UTF-8, so it cannot be a key"
        _warn_once(seen_from + entry.name, message)
        return None
    try:
        st = entry.stat(follow_symlinks=False)
    except FileNotFoundError:
        return None
    if stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode):
        return st
    _warn_once(
        seen_from + entry.name,
        f"skipping {where}: {_kind(st)}, not a regular file; folder stores hold only regular "
        "files and follow no symlink",
    )
    return None


def _may_hold(below: str, prefix: str, start_after: str) -> bool:
    """Whether keys starting with ``below`` can match ``prefix`` and come after ``start_after``."""
    if not (below.startswith(prefix) or prefix.startswith(below)):
        return False
    return start_after.startswith(below) or start_after < below


def _etag(st: os.stat_result) -> str:
    return f"{st.st_ino:x}-{st.st_size:x}-{st.st_mtime_ns:x}"


def _modified(st: os.stat_result) -> datetime:
    return datetime.fromtimestamp(st.st_mtime_ns / 1e9, tz=UTC)
