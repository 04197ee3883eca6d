"""What intake may queue: which objects are in the source store, and which of them are images.

Events name a bucket and a full key; the queue names keys relative to the source store, which
may be a prefix of a bucket. :class:`SourceScope` maps one to the other and turns away events of
other buckets, whose keys the workers could not fetch. :func:`is_candidate` is the one rule for
what is worth queueing (an image key, not a folder placeholder or a dot-file), used by every way
of noticing an upload.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from ptif.stores.base import Store


@dataclass(frozen=True)
class SourceScope:
    """The bucket and prefix of the source store (``bucket=None``: a folder, any bucket goes)."""

    bucket: str | None = None
    prefix: str = ""

    @classmethod
    def from_url(cls, url: str) -> SourceScope:
        if not url.strip().lower().startswith("s3://"):
            return cls()
        parts = urlsplit(url.strip())
        prefix = parts.path.strip("/")
        return cls(parts.netloc, f"{prefix}/" if prefix else "")

    def key_for(self, bucket: str, key: str) -> str | None:
        """The store key of ``bucket``/``key``, or None if the object is not in the store."""
        if self.bucket is not None and bucket != self.bucket:
            return None
        if not key.startswith(self.prefix) or key == self.prefix:
            return None
        return key[len(self.prefix) :]


def is_candidate(key: str, extensions: Iterable[str]) -> bool:
    """An image key to mark: not a folder placeholder or dot-file, with a listed extension."""
    if not key or key.endswith("/"):
        return False
    if any(part.startswith(".") for part in key.split("/")):
        return False
    name = key.rsplit("/", 1)[-1].lower()
    return any(name.endswith(ext) for ext in extensions)


def bucket_name(store: Store) -> str:
    url = store.url
    return url[5:].split("/", 1)[0] if url.startswith("s3://") else ""
