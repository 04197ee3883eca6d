"""What every store offers: the only way stages talk to each other.

A store holds objects under string keys ("folder/name.jpg"), like S3. Keys use "/" as the
separator and are never interpreted as local paths by callers. Every write is atomic: readers see
the old object or the whole new one, never a part. The conditional operations (create-if-absent,
replace-if-match, delete-if-match) are what lets many workers on many machines share one queue.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import BinaryIO, Protocol

from ptif.errors import (
    MISSING,
    NOT_A_FILE,
    PRECONDITION_FAILED,
    STORE_UNREACHABLE,
    TOO_LARGE,
    UNSUPPORTED,
    ConfigError,
    PtifError,
)

MAX_KEY_BYTES = 1024
"""S3's limit on a key, in UTF-8 bytes; folder stores keep the same so both accept the same keys."""

MAX_METADATA_BYTES = 2048
"""S3's limit on user metadata (keys and values, UTF-8 bytes); folder stores keep it too."""

CHECK_PREFIX = "ptif-check/"
COPY_CHUNK = 1 << 20
_META_KEY = re.compile(r"^[a-z0-9][a-z0-9._-]*$")


class StoreError(PtifError):
    """A store operation failed for a reason worth retrying (network, throttling, 5xx)."""

    code = STORE_UNREACHABLE


class PreconditionFailed(PtifError):
    """A conditional write or delete lost: the object exists, is gone, or has another eTag."""

    code = PRECONDITION_FAILED


class ObjectMissing(PtifError):
    """The key holds no object."""

    code = MISSING


class ObjectTooBig(PtifError):
    """An object holds more bytes than its reader would take (``get_file``'s ``max_bytes``):
    said from its size before reading, or when more bytes than that arrive. ``info``: the
    version that was opened, where the store knows it."""

    code = TOO_LARGE

    def __init__(
        self, where: str, size: int, max_bytes: int, info: ObjectInfo | None = None
    ) -> None:
        super().__init__(f"{where}: more than {max_bytes:,} bytes ({size:,} seen); not read")
        self.size = size
        self.info = info


def copy_at_most(
    src: BinaryIO, dst: BinaryIO, max_bytes: int | None, where: str, start: int = 0
) -> int:
    """Copy ``src`` to its end into ``dst``, which holds ``start`` bytes already;
    :class:`ObjectTooBig` rather than let it pass ``max_bytes`` (a file that grows while it is
    read). Returns the bytes ``dst`` then holds."""
    copied = start
    while chunk := src.read(COPY_CHUNK):
        if max_bytes is not None and copied + len(chunk) > max_bytes:
            raise ObjectTooBig(where, copied + len(chunk), max_bytes)
        dst.write(chunk)
        copied += len(chunk)
    return copied


class UnsafeKey(PtifError):
    """The key cannot be stored here (for a folder store: it would escape the folder)."""

    code = UNSUPPORTED


class NotAFile(PtifError):
    """A folder store's key names something other than a regular file (a symlink, a FIFO, a
    device, a socket), or a folder on its way is a symlink: ptif neither follows nor opens it."""

    code = NOT_A_FILE


def key_problem(key: object) -> str | None:
    """Why no ptif store takes ``key``, or ``None`` if it is fine.

    The rule every store applies before any request, so that a source key refused by one is
    refused by all: a key is non-empty text, without NUL, at most :data:`MAX_KEY_BYTES` long,
    and none of its ``/``-separated segments is empty, ``.`` or ``..`` (so it is not absolute
    and has no trailing ``/`` either). S3 itself allows such keys, but folder stores and some
    S3-compatible servers normalise them (``a/../b.tif`` is ``b.tif``, ``a//b.tif`` is
    ``a/b.tif``): refusing them everywhere means one upload can never name another's output."""
    if not isinstance(key, str) or not key:
        return "an empty or non-text key"
    if "\0" in key:
        return "a NUL character"
    if len(key.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
        return f"more than {MAX_KEY_BYTES} bytes"
    if any(part in ("", ".", "..") for part in key.split("/")):
        return "an empty, '.' or '..' path segment (a leading, trailing or doubled '/' included)"
    return None


def check_key(key: str, where: str) -> list[str]:
    """The key's segments; :class:`UnsafeKey` naming ``where`` if :func:`key_problem` finds one."""
    problem = key_problem(key)
    if problem is not None:
        shown = f"{key[:60]!r}…" if isinstance(key, str) and len(key) > 60 else repr(key)
        raise UnsafeKey(
            f"{where}: refusing key {shown}: {problem}; no ptif store holds such a key, so that "
            "one upload can never name another's output; rename the object"
        )
    return key.split("/")


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    etag: str
    modified: datetime
    metadata: Mapping[str, str] = field(default_factory=dict)


class Store(Protocol):
    """A bucket (and optional prefix) of S3, or a local folder."""

    url: str

    def get_file(self, key: str, path: Path, max_bytes: int | None = None) -> ObjectInfo:
        """Stream the object into ``path`` (created or replaced); return its info. With
        ``max_bytes``, never write more: :class:`ObjectTooBig` instead, before any byte when
        the object's size says so, or as soon as more bytes arrive than that."""
        ...

    def get_bytes(self, key: str) -> tuple[bytes, ObjectInfo]:
        """A small object's bytes and info. Raises :class:`ObjectMissing`."""
        ...

    def put_file(self, key: str, path: Path, metadata: Mapping[str, str] | None = None) -> str:
        """Upload a file, never exposing a partial object; return the new eTag."""
        ...

    def put_bytes(
        self,
        key: str,
        data: bytes,
        *,
        if_none_match: bool = False,
        if_match: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> str:
        """Write a small object; with ``if_none_match`` only if the key is free, with
        ``if_match`` only if the current eTag is that one. Raises :class:`PreconditionFailed`."""
        ...

    def head(self, key: str) -> ObjectInfo | None:
        """The object's info with user metadata, or ``None`` if there is none."""
        ...

    def list(
        self,
        prefix: str = "",
        *,
        start_after: str = "",
        recursive: bool = True,
        page_size: int | None = None,
    ) -> Iterator[ObjectInfo]:
        """Objects under ``prefix``, in key order (UTF-8 byte order), streamed page by page.
        ``metadata`` is empty in listings. With ``recursive=False``, only the keys with no
        ``/`` after ``prefix``: the files of one folder, not of its subfolders. ``page_size``:
        at most that many keys per request, for a caller that reads only the first few (a
        store that lists without requests may ignore it)."""
        ...

    def delete(self, key: str, *, if_match: str | None = None) -> None:
        """Remove the object (missing is fine unless ``if_match`` is given, which raises
        :class:`PreconditionFailed` when the eTag differs or the object is gone)."""
        ...

    def delete_matching(self, objects: Sequence[tuple[str, str]]) -> tuple[str, ...]:
        """Remove each ``(key, eTag)`` object whose eTag is still that one, in as few requests
        as the store allows (S3: one DeleteObjects per 1,000, once
        :meth:`check_conditional_writes` has found the server honours eTags there; one
        delete-if-match each until then); returns the keys it left: another eTag, or gone."""
        ...

    def check_conditional_writes(self) -> None:
        """Prove the store enforces create-if-absent and replace/delete-if-match, using a
        scratch key; raise :class:`~ptif.errors.ConfigError` with a clear message if not."""
        ...


def delete_one_by_one(store: Store, objects: Sequence[tuple[str, str]]) -> tuple[str, ...]:
    """:meth:`Store.delete_matching` as one delete-if-match per object: the keys it left."""
    left = []
    for key, etag in objects:
        try:
            store.delete(key, if_match=etag)
        except PreconditionFailed:
            left.append(key)
    return tuple(left)


def read_only_refusal(url: str) -> ConfigError:
    """What a store opened read-only (the source) answers a write or a delete: ptif never
    changes the archive's masters, so such a call is a defect, stopped before any request."""
    return ConfigError(
        f"{url}: this store is read-only to ptif (it holds the masters); refusing to write or "
        "delete there; report this as a bug"
    )


def normalize_metadata(metadata: Mapping[str, str] | None) -> dict[str, str]:
    """User metadata as S3 will return it: keys in lowercase (S3 lowercases them), so a folder
    store answers exactly what an S3 store would. Values may be any text."""
    result: dict[str, str] = {}
    for name, value in (metadata or {}).items():
        key = name.lower()
        if not _META_KEY.match(key) or not isinstance(value, str):
            raise ValueError(f"metadata {name!r}: names are letters, digits, '.', '_' or '-'")
        result[key] = value
    check_metadata_size(result)
    return result


def check_metadata_size(metadata: Mapping[str, str], counted: str = "") -> None:
    """Raise ``ValueError`` when ``metadata`` takes more than S3's 2 KB, counted as S3 counts
    it: the UTF-8 bytes of every name and value. ``counted`` says how the values were taken."""
    size = sum(len(k.encode()) + len(v.encode()) for k, v in metadata.items())
    if size > MAX_METADATA_BYTES:
        raise ValueError(f"metadata takes {size} bytes{counted}; S3 allows {MAX_METADATA_BYTES}")


def verify_conditional_writes(store: Store, advice: str) -> bool:
    """Try each conditional operation on a scratch key, where losing is expected, and raise
    :class:`ConfigError` naming the first condition the store let through. ``advice`` tells the
    operator what to do about it. Returns whether the store's batched delete honours eTags
    too (a server that ignores them there, or refuses such a batch, is no error: its deletes
    then go one by one).

    Seven requests, each needed once: create-if-absent, three that must lose, a batched delete
    with the wrong eTag, a replace and a delete that must win with the right one (the delete
    also clears the scratch key)."""
    key = f"{CHECK_PREFIX}{uuid.uuid4().hex}"
    wrong = "0" * 32
    etag = store.put_bytes(key, b"first", if_none_match=True)
    try:
        checks: list[tuple[str, Callable[[], object]]] = [
            ("If-None-Match: * on a put", lambda: store.put_bytes(key, b"2", if_none_match=True)),
            ("If-Match on a put", lambda: store.put_bytes(key, b"3", if_match=wrong)),
            ("If-Match on a delete", lambda: store.delete(key, if_match=wrong)),
        ]
        for what, attempt in checks:
            _expect_refusal(store, what, attempt, advice)
        batched = _batch_honours(store, key, wrong)
        if not batched:  # the scratch key may be gone: write it again, for the checks below
            etag = store.put_bytes(key, b"first")
        try:
            etag = store.put_bytes(key, b"second", if_match=etag)
            store.delete(key, if_match=etag)
        except PreconditionFailed as error:
            raise ConfigError(
                f"{store.url}: this store refuses conditional writes whose eTag matches; ptif "
                f"needs them to share a queue safely; {advice}"
            ) from error
    except BaseException:
        store.delete(key)
        raise
    return batched


def _batch_honours(store: Store, key: str, wrong: str) -> bool:
    """Whether a batched delete of ``key`` with the ``wrong`` eTag leaves it, as it must."""
    try:
        return bool(store.delete_matching([(key, wrong)]))
    except PtifError as error:
        if isinstance(error, ConfigError):  # credentials, permissions: not the batch's doing
            raise
        return False


def _expect_refusal(store: Store, what: str, attempt: Callable[[], object], advice: str) -> None:
    try:
        attempt()
    except PreconditionFailed:
        return
    raise ConfigError(
        f"{store.url}: this store ignores conditional writes ({what} went through); ptif needs "
        f"them to share a queue safely; {advice}"
    )
