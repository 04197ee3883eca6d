"""Stores: where sources, the queue and the pyramids live. :func:`open_store` turns a URL into one.

``s3://bucket[/prefix]`` opens an S3 bucket (boto3 is imported only then, so a folder-only install
and the Lambda handler do not pay for it); a path or ``file:///path`` opens a local folder.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import unquote, urlsplit

from ptif.errors import ConfigError
from ptif.stores.base import (
    NotAFile,
    ObjectInfo,
    ObjectMissing,
    PreconditionFailed,
    Store,
    StoreError,
    UnsafeKey,
)
from ptif.stores.folder import FolderStore

__all__ = [
    "FolderStore",
    "NotAFile",
    "ObjectInfo",
    "ObjectMissing",
    "PreconditionFailed",
    "Store",
    "StoreError",
    "UnsafeKey",
    "open_store",
]

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
# S3's rules for new buckets, loosened to the legacy names (capitals, underscores) still in use.
_BUCKET = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{1,254}$")


def open_store(url: str, *, endpoint_url: str | None = None, read_only: bool = False) -> Store:
    """The store a URL names. ``endpoint_url`` (else ``AWS_ENDPOINT_URL``) points S3 URLs at an
    S3-compatible server. Raises :class:`ConfigError` for a URL that names no store.

    ``read_only`` (the source) opens it without creating anything, not even a missing folder,
    and makes every write or delete raise :class:`ConfigError` before it reaches the store."""
    url = url.strip()
    match = _SCHEME.match(url)
    scheme = match.group(1).lower() if match else ""
    if scheme == "s3":
        return _s3_store(url, endpoint_url, read_only)
    if scheme == "file":
        return FolderStore(_file_path(url), url=url, read_only=read_only)
    if scheme:
        raise ConfigError(
            f"{url}: unknown store scheme {scheme!r}; use s3://bucket/prefix or a path"
        )
    if not url:
        raise ConfigError("empty store location; give s3://bucket/prefix or a folder path")
    return FolderStore(Path(url).expanduser(), url=url, read_only=read_only)


def _s3_store(url: str, endpoint_url: str | None, read_only: bool) -> Store:
    parts = urlsplit(url)
    if parts.query or parts.fragment or "@" in parts.netloc or ":" in parts.netloc:
        raise ConfigError(f"{url}: an S3 store URL is s3://bucket[/prefix], nothing more")
    if not _BUCKET.match(parts.netloc):
        raise ConfigError(f"{url}: {parts.netloc!r} is not a valid bucket name")
    try:
        from ptif.stores.s3 import S3Store
    except ImportError as error:
        raise ConfigError(
            f"{url}: S3 stores need boto3; install ptif with the s3 extra (pip install 'ptif[s3]')"
        ) from error
    endpoint = endpoint_url or os.environ.get("AWS_ENDPOINT_URL") or None
    return S3Store(parts.netloc, parts.path, endpoint_url=endpoint, url=url, read_only=read_only)


def _file_path(url: str) -> Path:
    parts = urlsplit(url)
    if parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
        raise ConfigError(f"{url}: a file URL names an absolute local path, as file:///data/images")
    if parts.query or parts.fragment:
        raise ConfigError(f"{url}: a file URL takes no query or fragment")
    return Path(unquote(parts.path))
