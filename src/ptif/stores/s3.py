"""A bucket (and optional prefix) of AWS S3 or an S3-compatible server, through botocore.

One client per endpoint, shared by every store that uses it, built with an explicit
configuration: standard retries, bounded timeouts, and checksums only where the API requires
them, so that S3-compatible servers that do not know the newer checksum headers still work.

Uploads stream from the file: its Content-MD5 is computed a chunk at a time before the upload,
so memory stays flat whatever the size, and a server refuses a body cut short or changed on the
way instead of storing it. Every failure leaves as a ptif error that says what to do:
a network problem or throttling that outlived the retries is a :class:`StoreError` (try later), a
missing bucket, refused credentials or a missing permission is a :class:`ConfigError`.

A conditional write that botocore had to retry is ambiguous: the first attempt may have landed
and only its answer been lost, so the retry loses against our own write. When that happens the
store looks at the object: if it now holds exactly our bytes (its eTag is their MD5), the write
is ours. This is sound for content unique to the writer (leases carry their owner and expiry,
markers their event), which is how ptif uses conditional writes.
"""

from __future__ import annotations

import base64
import contextlib
import email.utils
import errno
import functools
import hashlib
import io
import logging
import math
import os
import re
import threading
import xml.etree.ElementTree as ElementTree
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from email.header import decode_header, make_header
from pathlib import Path
from typing import Any, BinaryIO

import botocore.exceptions
import botocore.session
import botocore.utils
from botocore.config import Config

from ptif.errors import DISK_FULL, UNSUPPORTED, ConfigError, PtifError
from ptif.stores.base import (
    ObjectInfo,
    ObjectMissing,
    ObjectTooBig,
    PreconditionFailed,
    StoreError,
    UnsafeKey,
    check_key,
    check_metadata_size,
    copy_at_most,
    delete_one_by_one,
    normalize_metadata,
    read_only_refusal,
    verify_conditional_writes,
)

log = logging.getLogger(__name__)

MULTIPART_THRESHOLD = 64 * 1024 * 1024
PART_SIZE = 16 * 1024 * 1024
MAX_PARTS = 10_000
PART_WORKERS = 4
STREAM_ATTEMPTS = 5
#: DeleteObjects takes at most this many keys.
DELETE_BATCH = 1000
#: What DeleteObjects answers for an object it left because its condition did not hold (or, after
#: a retry, because the first attempt deleted it).
_NOT_DELETED = frozenset({"PreconditionFailed", "NoSuchKey", "ConditionalRequestConflict"})
CHUNK = 1 << 20
#: The entries of a ListObjectsV2 answer: no ``Contents`` element holds another.
_LISTED = re.compile(rb"<Contents>.*?</Contents>", re.DOTALL)
#: Connections each client keeps open; the source, process and images stores share one client.
POOL_CONNECTIONS = 64
#: Declared types by extension. Undeclared, a server guesses: SeaweedFS, finding no type it
#: knows, gzips any chunk whose first bytes compress, which costs it CPU on a pyramid for nothing.
CONTENT_TYPES = {".tif": "image/tiff", ".tiff": "image/tiff", ".json": "application/json"}

_THROTTLED = frozenset(
    {"SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "InternalError"}
)
#: The server refused a body that did not match its Content-MD5 or Content-Length: it was damaged
#: or cut short on the way, and nothing was stored.
_DAMAGED = frozenset({"BadDigest", "IncompleteBody"})
_CREDENTIALS = frozenset(
    {"InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken"}
)
_PERMISSION = {
    "get": "s3:GetObject",
    "head": "s3:GetObject (and s3:ListBucket, without which a missing key answers 403)",
    "put": "s3:PutObject",
    "list": "s3:ListBucket",
    "delete": "s3:DeleteObject",
}
_STREAM_ERRORS = (
    botocore.exceptions.HTTPClientError,
    botocore.exceptions.IncompleteReadError,
    botocore.exceptions.ResponseStreamingError,
    OSError,
)
_ENCODED_WORD = re.compile(r"=\?[^?]+\?[bBqQ]\?")
#: Writing a download failed for want of space (a full disk or quota, a file size limit): the
#: local disk's problem, not a broken stream to resume.
_NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})

Parts = list[dict[str, Any]]
_SESSION_LOCK = threading.Lock()


@dataclass(frozen=True)
class _Refusal:
    """One way S3 answers a request with an error, and the ptif error it becomes.

    It matches an S3 error code in ``codes`` or an HTTP status in ``statuses`` (only for a
    conditional request if ``conditional``), unless the code is in ``unless``. ``message`` is a
    :meth:`str.format` template with ``where`` (the object's URL), ``url``, ``bucket``,
    ``prefix``, ``endpoint``, ``op``, ``permission`` (what ``op`` needs), ``s3_code`` and
    ``reason`` (the S3 error code, or else the status).
    """

    error: Callable[[str], PtifError]
    message: str
    codes: frozenset[str] = frozenset()
    statuses: frozenset[int] = frozenset()
    conditional: bool = False
    unless: frozenset[str] = frozenset()

    def matches(self, code: str, status: int, conditional: bool) -> bool:
        return (
            (code in self.codes or status in self.statuses)
            and (conditional or not self.conditional)
            and code not in self.unless
        )


#: How S3's errors become ptif errors, the first that matches: a lost condition or a missing key
#: is for the caller to handle, a setting or permission problem stops the run (exit 2), a key
#: the server will never take fails that image, and the rest is worth trying again later.
_REFUSALS = (
    _Refusal(
        PreconditionFailed,
        "{where}: the condition did not hold ({op})",
        codes=frozenset({"PreconditionFailed"}),
        statuses=frozenset({412}),
    ),
    _Refusal(
        PreconditionFailed,
        "{where}: a concurrent write won ({op})",
        codes=frozenset({"ConditionalRequestConflict"}),
        statuses=frozenset({409}),
        conditional=True,
    ),
    _Refusal(
        ObjectMissing, "{where}: no such object", codes=frozenset({"NoSuchKey", "404", "NotFound"})
    ),
    _Refusal(
        ConfigError,
        "{url}: bucket {bucket!r} does not exist at {endpoint}; create it or correct the store URL",
        codes=frozenset({"NoSuchBucket"}),
    ),
    _Refusal(
        ConfigError,
        "{url}: access denied to {op} {where}: the credentials need {permission} on "
        "arn:aws:s3:::{bucket}/{prefix}*",
        codes=frozenset({"AccessDenied", "AllAccessDisabled", "403"}),
        statuses=frozenset({403}),
    ),
    _Refusal(
        StoreError,
        "{where}: the server refused the upload as damaged on the way ({s3_code}); "
        "nothing was stored; try again later",
        codes=_DAMAGED,
    ),
    _Refusal(
        ConfigError, "{url}: the AWS credentials were refused ({s3_code})", codes=_CREDENTIALS
    ),
    _Refusal(
        UnsafeKey,
        "{where}: the key is too long for this server",
        codes=frozenset({"KeyTooLongError"}),
    ),
    _Refusal(
        ConfigError,
        "{url}: the server does not implement {op} as used ({s3_code})",
        codes=frozenset({"NotImplemented"}),
        statuses=frozenset({501}),
    ),
    _Refusal(
        functools.partial(PtifError, code=UNSUPPORTED),
        "{where}: the server refuses to {op} it ({reason}); rename the source, or check the key",
        statuses=frozenset(range(400, 500)) - {408, 429},
        unless=_THROTTLED,
    ),
    _Refusal(
        StoreError, "{where}: {op} throttled after retries; try again later", codes=_THROTTLED
    ),
)
#: Anything else: a 5xx, or an error S3 does not document.
_FAILED = _Refusal(StoreError, "{where}: {op} failed with {reason} after retries; try again later")


@dataclass(frozen=True)
class Timeouts:
    """How long to wait and how often to retry; tests shorten them. ``max_attempts`` is what
    botocore's retry configuration calls it, but counts retries after the first attempt."""

    max_attempts: int = 8
    connect: float = 5.0
    read: float = 60.0


class S3Store:
    """Objects under ``prefix`` in ``bucket``; keys given to and returned by the store are
    relative to the prefix."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        url: str | None = None,
        timeouts: Timeouts | None = None,
        read_only: bool = False,
    ):
        self.bucket = bucket
        #: The source: every write and delete is refused before a request is made.
        self.read_only = read_only
        self.prefix = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
        self.endpoint_url = endpoint_url or os.environ.get("AWS_ENDPOINT_URL") or None
        self.url = url or f"s3://{bucket}/{self.prefix}".rstrip("/")
        #: Whether DeleteObjects honours each object's eTag here: one delete-if-match per key
        #: until :meth:`check_conditional_writes` has seen it does.
        self.batched_deletes = False
        self.client: Any = _client_for(self.url, self.endpoint_url, timeouts or Timeouts())

    def __repr__(self) -> str:
        return f"S3Store({self.url!r}, endpoint_url={self.endpoint_url!r})"

    # -- reading -------------------------------------------------------------------------------

    def get_file(self, key: str, path: Path, max_bytes: int | None = None) -> ObjectInfo:
        path = Path(path)
        part = path.with_name(path.name + ".part")
        try:
            with open(part, "wb") as sink:
                info = self._download(key, sink, max_bytes)
            os.replace(part, path)
        except OSError as error:  # making, flushing or renaming the file: the local disk's
            part.unlink(missing_ok=True)
            if error.errno in _NO_SPACE:
                raise self._no_space(key, error) from error
            raise
        except BaseException:
            part.unlink(missing_ok=True)
            raise
        return info

    def get_bytes(self, key: str) -> tuple[bytes, ObjectInfo]:
        sink = io.BytesIO()
        info = self._download(key, sink, None)
        return sink.getvalue(), info

    def head(self, key: str) -> ObjectInfo | None:
        try:
            with self._errors("head", key):
                response = self.client.head_object(Bucket=self.bucket, Key=self._full(key))
        except ObjectMissing:
            return None
        return _info(key, response, response["ContentLength"])

    def list(
        self,
        prefix: str = "",
        *,
        start_after: str = "",
        recursive: bool = True,
        page_size: int | None = None,
    ) -> Iterator[ObjectInfo]:
        args = {"Bucket": self.bucket, "Prefix": self.prefix + prefix}
        if start_after:
            args["StartAfter"] = self.prefix + start_after
        if not recursive:
            args["Delimiter"] = "/"
        paging = {"PaginationConfig": {"PageSize": page_size}} if page_size else {}
        pages = self.client.get_paginator("list_objects_v2").paginate(**args, **paging)
        with self._errors("list", prefix):
            for page in pages:
                for item in page.get("Contents", ()):
                    key = item["Key"][len(self.prefix) :]
                    yield ObjectInfo(
                        key, item["Size"], _unquote(item["ETag"]), _utc(item["LastModified"])
                    )

    # -- writing -------------------------------------------------------------------------------

    def put_file(self, key: str, path: Path, metadata: Mapping[str, str] | None = None) -> str:
        self._writable()
        meta = _encode_metadata(metadata)
        with open(path, "rb") as source:
            size = os.fstat(source.fileno()).st_size
            if size > MULTIPART_THRESHOLD:
                return self._put_multipart(key, source, size, meta)
            body = FilePart(source, 0, size)
            with self._errors("put", key):
                response = self.client.put_object(
                    Bucket=self.bucket,
                    Key=self._full(key),
                    Body=body,
                    ContentLength=size,
                    ContentMD5=body.content_md5(),
                    Metadata=meta,
                    **_content_type(key),
                )
        return _unquote(response["ETag"])

    def put_bytes(
        self,
        key: str,
        data: bytes,
        *,
        if_none_match: bool = False,
        if_match: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> str:
        self._writable()
        args: dict[str, Any] = {
            "Bucket": self.bucket,
            "Key": self._full(key),
            "Body": data,
            "ContentMD5": _content_md5(data),
            "Metadata": _encode_metadata(metadata),
            **_content_type(key),
        }
        if if_none_match:
            args["IfNoneMatch"] = "*"
        if if_match is not None:
            args["IfMatch"] = _quote(if_match)
        try:
            with self._errors("put", key, conditional=if_none_match or if_match is not None):
                return _unquote(self.client.put_object(**args)["ETag"])
        except PreconditionFailed as error:
            md5 = hashlib.md5(data, usedforsecurity=False).hexdigest()
            if _retried(error) and self._holds(key, md5):
                log.info("%s: conditional put of %s landed, its answer lost", self, key)
                return md5
            raise

    def delete(self, key: str, *, if_match: str | None = None) -> None:
        self._writable()
        args = {"Bucket": self.bucket, "Key": self._full(key)}
        if if_match is not None:
            args["IfMatch"] = _quote(if_match)
        try:
            with self._errors("delete", key, conditional=if_match is not None):
                self.client.delete_object(**args)
        except (ObjectMissing, PreconditionFailed) as error:
            # Missing is fine unconditionally; after a retry, gone may be our own first attempt.
            if if_match is None or (_retried(error) and self.head(key) is None):
                return
            if isinstance(error, ObjectMissing):
                gone = f"{self._where(key)} is gone; nothing to delete"
                raise PreconditionFailed(gone) from error
            raise

    def delete_matching(self, objects: Sequence[tuple[str, str]]) -> tuple[str, ...]:
        self._writable()
        if not self.batched_deletes:
            return delete_one_by_one(self, objects)
        left = []
        for start in range(0, len(objects), DELETE_BATCH):
            batch = objects[start : start + DELETE_BATCH]
            named = [{"Key": self._full(key), "ETag": _quote(etag)} for key, etag in batch]
            with self._errors("delete", batch[0][0]):
                response = self.client.delete_objects(
                    Bucket=self.bucket, Delete={"Objects": named, "Quiet": True}
                )
            for error in response.get("Errors", ()):
                if error.get("Code") not in _NOT_DELETED:
                    raise StoreError(
                        f"{self._where(error.get('Key', ''))}: not deleted ({error.get('Code')}: "
                        f"{error.get('Message')}); try again later"
                    )
                left.append(error["Key"][len(self.prefix) :])
        return tuple(left)

    def check_access(self) -> None:
        """Before any work: credentials are found, and the bucket answers one listing of the
        prefix. A setting or credential problem is a :class:`ConfigError`, a server that does
        not answer a :class:`StoreError`: both before anything is claimed or written."""
        _check_credentials(self.url)
        with self._errors("list", ""):
            self.client.list_objects_v2(Bucket=self.bucket, Prefix=self.prefix, MaxKeys=1)

    def check_conditional_writes(self) -> None:
        self.batched_deletes = True  # so that the check's own batched delete is one
        try:
            self.batched_deletes = verify_conditional_writes(
                self,
                "upgrade the server or use AWS S3, MinIO ≥ 2024-11 or SeaweedFS ≥ 4.48 (tested)",
            )
        except BaseException:
            self.batched_deletes = False
            raise

    # -- internals -----------------------------------------------------------------------------

    def _writable(self) -> None:
        if self.read_only:
            raise read_only_refusal(self.url)

    def _download(self, key: str, sink: BinaryIO, max_bytes: int | None) -> ObjectInfo:
        """Stream the object into ``sink``; a broken stream resumes where it stopped, with
        If-Match so the rest comes from the same version, or starts over if that changed.
        Past ``max_bytes`` (its size says so, or more bytes come): :class:`ObjectTooBig`."""
        info: ObjectInfo | None = None
        for attempt in range(1, STREAM_ATTEMPTS + 1):
            try:
                body, info = self._open(key, sink, info)
                if max_bytes is not None and info.size > max_bytes:
                    body.close()
                    raise ObjectTooBig(self._where(key), info.size, max_bytes, info)
                _drain(body, sink, info, max_bytes, self._where(key))
                return info
            except PreconditionFailed:
                info = None
                log.info("%s: %s changed while being read; reading it again", self, key)
            except _STREAM_ERRORS as error:
                if isinstance(error, OSError) and error.errno in _NO_SPACE:
                    raise self._no_space(key, error) from error
                if attempt == STREAM_ATTEMPTS:
                    raise StoreError(
                        f"{self._where(key)}: the download broke off {attempt} times ({error}); "
                        "try again later"
                    ) from error
                log.info("%s: reading %s broke off (%s); resuming", self, key, error)
        raise StoreError(f"{self._where(key)} kept changing while being read; try again later")

    def _no_space(self, key: str, error: OSError) -> PtifError:
        return PtifError(
            f"{self._where(key)}: no space left to download it ({error.strerror})", code=DISK_FULL
        )

    def _open(self, key: str, sink: BinaryIO, info: ObjectInfo | None) -> tuple[Any, ObjectInfo]:
        """The body stream: all of it (``info`` unknown) or what ``sink`` still lacks of the
        version ``info`` describes."""
        args = {"Bucket": self.bucket, "Key": self._full(key)}
        if info is None:
            sink.seek(0)
            sink.truncate()
        elif sink.tell() == info.size:
            return io.BytesIO(), info
        else:
            args.update(Range=f"bytes={sink.tell()}-", IfMatch=_quote(info.etag))
        with self._errors("get", key, conditional=info is not None):
            response = self.client.get_object(**args)
        return response["Body"], info or _info(key, response, response["ContentLength"])

    def _put_multipart(self, key: str, source: BinaryIO, size: int, meta: dict[str, str]) -> str:
        """Parts in parallel from one file; any failure aborts the upload, so no invisible
        parts are left to bill or to complete later."""
        full = self._full(key)
        with self._errors("put", key):
            upload = self.client.create_multipart_upload(
                Bucket=self.bucket, Key=full, Metadata=meta, **_content_type(key)
            )["UploadId"]
        try:
            parts = self._upload_parts(key, upload, source, size)
            with self._errors("put", key):
                response = self.client.complete_multipart_upload(
                    Bucket=self.bucket, Key=full, UploadId=upload, MultipartUpload={"Parts": parts}
                )
        except BaseException:
            self._abort(key, upload)
            raise
        return _unquote(response["ETag"])

    def _upload_parts(self, key: str, upload: str, source: BinaryIO, size: int) -> Parts:
        """Each part streams from its own slice of the file, its Content-MD5 computed a chunk
        at a time: memory does not grow with the part size or the number of parts in flight."""
        part_size = max(PART_SIZE, math.ceil(size / MAX_PARTS / CHUNK) * CHUNK)
        offsets = range(0, size, part_size)
        with ThreadPoolExecutor(PART_WORKERS) as pool:

            def send(number: int, offset: int) -> dict[str, Any]:
                body = FilePart(source, offset, min(part_size, size - offset))
                with self._errors("put", key):
                    response = self.client.upload_part(
                        Bucket=self.bucket,
                        Key=self._full(key),
                        UploadId=upload,
                        PartNumber=number,
                        Body=body,
                        ContentLength=body.length,
                        ContentMD5=body.content_md5(),
                    )
                return {"PartNumber": number, "ETag": response["ETag"]}

            futures = [pool.submit(send, n, off) for n, off in enumerate(offsets, start=1)]
            try:
                return [f.result() for f in futures]
            except BaseException:
                for f in futures:
                    f.cancel()
                raise

    def _abort(self, key: str, upload: str) -> None:
        try:
            self.client.abort_multipart_upload(
                Bucket=self.bucket, Key=self._full(key), UploadId=upload
            )
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as error:
            log.warning("%s: could not abort the multipart upload of %s: %s", self, key, error)

    def _holds(self, key: str, md5: str) -> bool:
        info = self.head(key)
        return info is not None and info.etag == md5

    def _full(self, key: str) -> str:
        """The bucket key, after the rule every store applies (:func:`check_key`): refused
        before any request, so a server that would normalise it never sees it."""
        check_key(key, self._where(key))
        return self.prefix + key

    def _where(self, key: str) -> str:
        return f"s3://{self.bucket}/{self.prefix}{key}"

    @contextlib.contextmanager
    def _errors(self, op: str, key: str, *, conditional: bool = False) -> Iterator[None]:
        try:
            yield
        except botocore.exceptions.ClientError as error:
            raise self._client_error(error, op, key, conditional) from error
        except (
            botocore.exceptions.NoCredentialsError,
            botocore.exceptions.PartialCredentialsError,
            botocore.exceptions.ProfileNotFound,
        ) as error:
            raise ConfigError(f"{self.url}: no usable AWS credentials: {error}") from error
        except (
            # refused, reset, timed out, a TLS or proxy failure: every way the network fails
            botocore.exceptions.ConnectionError,
            botocore.exceptions.HTTPClientError,
        ) as error:
            raise StoreError(
                f"could not reach {self.endpoint_url or 'AWS S3'} to {op} {self._where(key)} "
                f"({error}); check the endpoint and the network, or try again later"
            ) from error

    def _client_error(
        self, error: botocore.exceptions.ClientError, op: str, key: str, conditional: bool
    ) -> PtifError:
        code = str(error.response.get("Error", {}).get("Code", ""))
        status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
        refusal = next((r for r in _REFUSALS if r.matches(code, status, conditional)), _FAILED)
        message = refusal.message.format(
            where=self._where(key),
            url=self.url,
            bucket=self.bucket,
            prefix=self.prefix,
            endpoint=self.endpoint_url or "AWS S3",
            op=op,
            permission=_PERMISSION.get(op, "s3:*"),
            s3_code=code,
            reason=code or status,
        )
        return refusal.error(message)


class FilePart(io.RawIOBase):
    """``length`` bytes of an open file from ``offset``: an upload body that botocore can hash,
    send and rewind for a retry, read a chunk at a time with ``pread``, so that several parts of
    one file can be read at once and none is ever held in memory whole. A file that shrinks
    under it is an error rather than a short body."""

    def __init__(self, source: BinaryIO, offset: int, length: int) -> None:
        super().__init__()
        self.name = getattr(source, "name", "")
        self.length = length
        self._fd = source.fileno()
        self._offset = offset
        self._position = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        start = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self.length}[whence]
        self._position = max(0, start + offset)
        return self._position

    def read(self, size: int | None = -1) -> bytes:
        """Straight from the file into new bytes (the inherited ``read`` copies twice)."""
        left = self.length - self._position
        wanted = left if size is None or size < 0 else min(size, left)
        if wanted <= 0:
            return b""
        data = os.pread(self._fd, wanted, self._offset + self._position)
        if not data:
            raise OSError(f"{self.name}: the file shrank while it was being uploaded")
        self._position += len(data)
        return data

    def readinto(self, buffer: Any) -> int:
        wanted = min(len(buffer), self.length - self._position)
        if wanted <= 0:
            return 0
        count = os.preadv(self._fd, [memoryview(buffer)[:wanted]], self._offset + self._position)
        if count == 0:
            raise OSError(f"{self.name}: the file shrank while it was being uploaded")
        self._position += count
        return count

    def content_md5(self) -> str:
        """The Content-MD5 of the whole part, read a chunk at a time; leaves the part rewound."""
        self.seek(0)
        digest = hashlib.file_digest(self, lambda: hashlib.md5(usedforsecurity=False))
        self.seek(0)
        return base64.b64encode(digest.digest()).decode()


def _content_md5(data: bytes) -> str:
    """Content-MD5 lets the server refuse a body cut short by a dying client; without it,
    some servers store the empty remainder as the object."""
    return base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode()


def _content_type(key: str) -> dict[str, str]:
    """The ``ContentType`` argument for a key whose extension says what it holds."""
    name = key.rpartition("/")[2]
    dot = name.rfind(".")
    kind = CONTENT_TYPES.get(name[dot:].lower()) if dot > 0 else None
    return {"ContentType": kind} if kind else {}


@functools.cache
def _session() -> Any:
    """One botocore session for the process: each client it makes reuses the service model it
    loaded once. Credentials resolve once, and refresh themselves when they come from a role.
    (botocore rather than boto3, whose import adds s3transfer and its managers for nothing.)

    Its clients read times with :func:`_parse_time`: botocore's own parser (dateutil) takes a
    tenth of a millisecond or more for each, and a listing has one per key, so a worker spent
    more on the times of its listings than on everything else it did with them."""
    session = botocore.session.get_session()
    parsers = session.get_component("response_parser_factory")
    parsers.set_parser_defaults(timestamp_parser=_parse_time)
    return session


def _parse_time(value: Any) -> datetime:
    """A time S3 sent: ISO 8601 in XML bodies (``2026-01-31T12:00:00.000Z``), RFC 7231 in
    headers (``Sat, 31 Jan 2026 12:00:00 GMT``); any other form as botocore reads it."""
    for parse in (datetime.fromisoformat, email.utils.parsedate_to_datetime):
        with contextlib.suppress(TypeError, ValueError):
            moment = parse(value) if isinstance(value, str) else None
            if moment is not None and moment.tzinfo is not None:  # else as botocore reads it
                return moment
    found: datetime = botocore.utils.parse_timestamp(value)
    return found


def _client_for(url: str, endpoint_url: str | None, timeouts: Timeouts) -> Any:
    """The shared client, or a :class:`ConfigError` naming the setting botocore refused."""
    try:
        return _client(endpoint_url, timeouts)
    except botocore.exceptions.ProfileNotFound as error:
        raise ConfigError(f"{url}: {_profile_advice(error)}") from error
    except ValueError as error:  # botocore: "Invalid endpoint: ..."
        raise ConfigError(f"{url}: {error}; an endpoint URL is http(s)://host[:port]") from error
    except botocore.exceptions.BotoCoreError as error:
        raise ConfigError(f"{url}: cannot set up the S3 client ({error})") from error


def _check_credentials(url: str) -> None:
    """Credentials can be found (environment, AWS profile, container or instance role)."""
    try:
        with _SESSION_LOCK:
            credentials = _session().get_credentials()
        if credentials is not None:
            credentials.get_frozen_credentials()  # a role's are fetched now, not mid-run
    except botocore.exceptions.ProfileNotFound as error:
        raise ConfigError(f"{url}: {_profile_advice(error)}") from error
    except botocore.exceptions.BotoCoreError as error:
        raise ConfigError(f"{url}: no usable AWS credentials ({error})") from error
    if credentials is None:
        raise ConfigError(
            f"{url}: no AWS credentials found; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
            "or AWS_PROFILE, or run with an IAM role"
        )


def _profile_advice(error: Exception) -> str:
    return f"{error}; add it to the AWS config files, or correct AWS_PROFILE"


@functools.cache
def _client(endpoint_url: str | None, timeouts: Timeouts) -> Any:
    """One client per endpoint and timeouts, shared by the stores on it: a client costs tens
    of milliseconds to make, and its connection pool serves every bucket.

    Over plain HTTP botocore would also sign each body's SHA-256, a second pass over every
    pyramid on top of its MD5. Every body ptif sends carries a Content-MD5 that the signature
    covers (the multipart completion gets one here), so the payload need not be signed, as
    botocore already decides for uploads over HTTPS."""
    s3: dict[str, Any] = {"addressing_style": "path"} if endpoint_url else {}
    plain_http = (endpoint_url or "").lower().startswith("http://")
    if plain_http:
        s3["payload_signing_enabled"] = False
    config = Config(
        retries={"mode": "standard", "max_attempts": timeouts.max_attempts},
        connect_timeout=timeouts.connect,
        read_timeout=timeouts.read,
        max_pool_connections=POOL_CONNECTIONS,
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        s3=s3,
    )
    with _SESSION_LOCK:  # sessions are not thread-safe; the clients they make are
        client = _session().create_client("s3", endpoint_url=endpoint_url, config=config)
    if plain_http:
        client.meta.events.register("before-sign.s3.CompleteMultipartUpload", _add_content_md5)
        client.meta.events.register("before-sign.s3.DeleteObjects", _add_content_md5)
    client.meta.events.register("before-parse.s3.ListObjectsV2", _read_listing)
    return client


def _read_listing(response_dict: dict[str, Any], customized_response_dict: dict[str, Any],
                  **_: Any) -> None:  # fmt: skip
    """Read a listing's entries (the four fields ptif uses) with ElementTree alone, and leave
    botocore the rest of the answer: its parser walks the service model in Python for every
    field of every entry, about 30 microseconds a key, three times ElementTree's whole read,
    and every worker lists the whole queue, then pages of it again as it meets the others.
    Keys stay as the server sent them: botocore decodes them as it decodes its own (the
    ``url`` encoding it asks for). An answer that is no plain success, or whose entries do not
    read so, is left to botocore whole."""
    body = response_dict.get("body")
    if response_dict.get("status_code") != 200 or not isinstance(body, bytes):
        return
    try:
        entries = [_entry(element) for element in ElementTree.fromstring(body)
                   if element.tag.rpartition("}")[2] == "Contents"]  # fmt: skip
    except (ElementTree.ParseError, KeyError, TypeError, ValueError):
        return
    if not entries or not body.count(b"<Contents>") == body.count(b"</Contents>") == len(entries):
        # none, or the tags also stand in text (a CDATA section, a comment): cutting them
        # there would leave botocore an answer that does not parse
        return
    response_dict["body"] = _LISTED.sub(b"", body)
    customized_response_dict["Contents"] = entries


def _entry(element: ElementTree.Element) -> dict[str, Any]:
    """One ``Contents`` element of a listing, as botocore would have read its four fields."""
    fields = {child.tag.rpartition("}")[2]: child.text or "" for child in element}
    return {
        "Key": fields["Key"],
        "Size": int(fields["Size"]),
        "ETag": fields["ETag"],
        "LastModified": _parse_time(fields["LastModified"]),
    }


def _add_content_md5(request: Any, **_: Any) -> None:
    """Content-MD5 for a request body that botocore sends without one."""
    body = request.body
    if isinstance(body, bytes) and body and "Content-MD5" not in request.headers:
        request.headers["Content-MD5"] = _content_md5(body)


def _retried(error: PtifError) -> bool:
    """Whether botocore sent the request more than once before this answer (its cause)."""
    response = getattr(error.__cause__, "response", None) or {}
    return int(response.get("ResponseMetadata", {}).get("RetryAttempts", 0)) > 0


def _info(key: str, response: Mapping[str, Any], size: int) -> ObjectInfo:
    return ObjectInfo(
        key=key,
        size=size,
        etag=_unquote(response["ETag"]),
        modified=_utc(response["LastModified"]),
        metadata=_decode_metadata(response.get("Metadata", {})),
    )


def _drain(body: Any, sink: BinaryIO, info: ObjectInfo, max_bytes: int | None, where: str) -> None:
    with contextlib.closing(body):
        copy_at_most(body, sink, max_bytes, where, start=sink.tell())
    if sink.tell() != info.size:
        raise botocore.exceptions.IncompleteReadError(
            actual_bytes=sink.tell(), expected_bytes=info.size
        )


def _utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC)


def _encode_metadata(metadata: Mapping[str, str] | None) -> dict[str, str]:
    """HTTP headers carry ASCII, so other text goes as an RFC 2047 encoded word, the form AWS
    itself returns such values in. S3's 2 KB counts the headers as sent, so the encoded words
    are what must fit (a third more than their text)."""
    encoded = {k: _encode_value(v) for k, v in normalize_metadata(metadata).items()}
    check_metadata_size(encoded, " as sent")
    return encoded


def _encode_value(value: str) -> str:
    if value.isascii() and value.isprintable() and "=?" not in value:
        return value
    return f"=?UTF-8?B?{base64.b64encode(value.encode()).decode()}?="


def _decode_metadata(metadata: Mapping[str, str]) -> dict[str, str]:
    return {k: _decode_value(v) for k, v in metadata.items()}


def _decode_value(value: str) -> str:
    if not _ENCODED_WORD.search(value):
        return value
    try:
        return str(make_header(decode_header(value)))
    except (ValueError, LookupError):
        return value


def _quote(etag: str) -> str:
    return f'"{_unquote(etag)}"'


def _unquote(etag: str) -> str:
    return etag.strip('"')
