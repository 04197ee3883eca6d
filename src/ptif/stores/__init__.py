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
#: S3's naming rules for general purpose buckets, which MinIO, Ceph and SeaweedFS follow too:
#: 3 to 63 lowercase letters, digits, dots and hyphens, a letter or digit at each end.
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_IP_ADDRESS = re.compile(r"^\d+\.\d+\.\d+\.\d+$")
_RESERVED_STARTS = ("xn--", "sthree-", "amzn-s3-demo-")
_RESERVED_ENDS = ("-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3")


def open_store(
    url: str, *, endpoint_url: str | None = None, read_only: bool = False, create: bool = True
) -> Store:
    """The store a URL names. ``endpoint_url`` (else ``AWS_ENDPOINT_URL``) points S3 URLs at an
    S3-compatible server. A folder that does not exist is made, unless ``create`` is false
    (then it is a :class:`ConfigError`). Raises :class:`ConfigError` for a URL that names no
    store.

    ``read_only`` (the source) opens it without creating anything, not even a missing folder,
    and makes every write or delete raise :class:`ConfigError` before it reaches the store."""
    check_store_url(url)
    url = url.strip()
    if _scheme(url) == "s3":
        return _s3_store(url, endpoint_url, read_only)
    path = _file_path(url) if _scheme(url) == "file" else Path(url).expanduser()
    return FolderStore(path, url=url, read_only=read_only, create=create)


def check_store_url(url: str) -> None:
    """Refuse, with a :class:`ConfigError` that says why, a URL that names no store: an unknown
    scheme, an S3 URL with more than a bucket and a prefix, a bucket name S3 does not allow."""
    url = url.strip()
    scheme = _scheme(url)
    if scheme == "s3":
        _check_s3_url(url)
    elif scheme == "file":
        _file_path(url)
    elif scheme:
        raise ConfigError(
            f"{url}: unknown store scheme {scheme!r}; use s3://bucket/prefix or a path"
        )
    elif not url:
        raise ConfigError("empty store location; give s3://bucket/prefix or a folder path")


def bucket_problem(name: str) -> str | None:
    """Why S3 refuses ``name`` as a bucket name, or ``None``."""
    if not _BUCKET.match(name):
        return (
            "a bucket name is 3 to 63 lowercase letters, digits, dots and hyphens, "
            "beginning and ending with a letter or digit"
        )
    if ".." in name or _IP_ADDRESS.match(name):
        return "a bucket name has no two dots in a row and is not an IP address"
    if name.startswith(_RESERVED_STARTS) or name.endswith(_RESERVED_ENDS):
        return "S3 reserves that beginning or ending of bucket names"
    return None


def _scheme(url: str) -> str:
    match = _SCHEME.match(url)
    return match.group(1).lower() if match else ""


def _check_s3_url(url: str) -> None:
    parts = urlsplit(url)
    if parts.query or parts.fragment or "@" in parts.netloc or ":" in parts.netloc:
        raise ConfigError(f"{url}: an S3 store URL is s3://bucket[/prefix], nothing more")
    problem = bucket_problem(parts.netloc)
    if problem:
        raise ConfigError(f"{url}: {parts.netloc!r} is not a valid bucket name ({problem})")


def _s3_store(url: str, endpoint_url: str | None, read_only: bool) -> Store:
    parts = urlsplit(url)
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
