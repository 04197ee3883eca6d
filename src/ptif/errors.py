"""One exception root, and one table that says what each failure means for the queue.

Every error ptif raises derives from :class:`PtifError` and carries a stable ``code``. Each code
is declared here once, in :data:`CODES`, with its disposition and the sentence an operator reads:
``RETRY`` (the marker stays for a later attempt) or ``PERMANENT`` (it moves to ``failed/``). The
rest of the package names codes by their constants (``UNDECODABLE``…), never as strings. Codes are
part of the contract: failure records, claims, run reports and ``ptif status`` show the strings.

A code missing from the table is refused loudly, never guessed at. A class whose ``code`` is not
declared fails when it is defined, so the module does not import and no worker starts. A
``PtifError(..., code=...)`` with an undeclared code raises :class:`ValueError` where it is made,
instead of the error meant: in a worker that is an unexpected failure, which is logged with its
traceback and leaves the marker for a later attempt (noted ``internal``; after
``PTIF_MAX_ATTEMPTS`` it fails as ``too-many-attempts``). So a mistyped code never sends a good
image to ``failed/`` on a guess and never loses one; failing later instead (when ``permanent`` is
read) would let the bad string reach claims and reports first. tests/test_errors.py rejects such
a code before it ships, by reading the source.

Imported by ``ptif convert``: plain classes, no dataclasses or typing at import time.
"""

from __future__ import annotations

from enum import Enum


class Disposition(Enum):
    RETRY = "retry"
    PERMANENT = "permanent"


class FailureCode:
    """One declared code: the string, what it means for the queue, and what an operator reads."""

    __slots__ = ("code", "disposition", "meaning")

    code: str
    disposition: Disposition
    meaning: str

    def __init__(self, code: str, disposition: Disposition, meaning: str) -> None:
        object.__setattr__(self, "code", code)
        object.__setattr__(self, "disposition", disposition)
        object.__setattr__(self, "meaning", meaning)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"{type(self).__name__} is read-only")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"{type(self).__name__} is read-only")

    @property
    def permanent(self) -> bool:
        return self.disposition is Disposition.PERMANENT

    def __repr__(self) -> str:
        return f"FailureCode({self.code!r}, {self.disposition}, {self.meaning!r})"


#: Every failure code, in the order README.md's table lists them.
CODES: dict[str, FailureCode] = {}


def _declare(code: str, disposition: Disposition, meaning: str) -> str:
    if code in CODES:
        raise ValueError(f"failure code {code!r} is declared twice")
    CODES[code] = FailureCode(code, disposition, meaning)
    return code


def failure_code(code: str) -> FailureCode:
    """The declaration of ``code``; :class:`ValueError` if there is none."""
    declared = CODES.get(code)  # not CODES[code] in a try: the traceback keeps the error handled
    if declared is None:
        raise ValueError(f"unknown failure code {code!r}: declare it in ptif.errors.CODES")
    return declared


_PERMANENT, _RETRY = Disposition.PERMANENT, Disposition.RETRY

UNDECODABLE = _declare(
    "undecodable", _PERMANENT, "corrupt, truncated or empty file; upload a good copy"
)
UNSUPPORTED = _declare(
    "unsupported",
    _PERMANENT,
    "not an image ptif reads (text, HTML, SVG…), a codec this installation lacks, or a key the "
    "store cannot hold",
)
NOT_A_FILE = _declare(
    "not-a-file",
    _PERMANENT,
    "in a folder store the key names a symlink, FIFO, device or socket, or lies under a symlinked "
    "folder; ptif reads and writes only regular files there: put the file itself in its place",
)
PIXEL_BUDGET = _declare(
    "pixel-budget",
    _PERMANENT,
    "the header declares more pixels than the budget; raise `PTIF_MAX_PIXELS` if it is genuine",
)
TOO_LARGE = _declare(
    "too-large",
    _PERMANENT,
    "decoding it would take more memory than one conversion may use, or the source has more "
    "bytes than `PTIF_MAX_SOURCE_SIZE` or the work folder's whole disk; raise `PTIF_MAX_MEMORY` "
    "(`--max-memory`) or `PTIF_MAX_SOURCE_SIZE` (`--max-source-size`) if it is genuine",
)
TOO_SLOW = _declare(
    "too-slow",
    _PERMANENT,
    "its conversion ran past the time limit; raise `PTIF_MAX_SECONDS` (`--max-seconds`) if it "
    "is genuine",
)
TOO_COMPLEX = _declare(
    "too-complex",
    _PERMANENT,
    "built to cost more work than any real image needs (a JPEG with more scans or metadata "
    "segments than any encoder writes); no setting raises it: re-encode the image",
)
TOO_MANY_PAGES = _declare(
    "too-many-pages",
    _PERMANENT,
    "with `all_pages` on, the source has more pages than one source may give (10,000); split it",
)
OUTPUT_CONFLICT = _declare(
    "output-conflict",
    _PERMANENT,
    "another source already owns the output key (`a/x.png` beside `a/x.jpg`); rename one",
)
SOURCE_MISSING = _declare(
    "source-missing", _PERMANENT, "the source was deleted after it was queued"
)
BAD_MARKER = _declare("bad-marker", _PERMANENT, "the marker is not JSON or names no key")
BAD_EVENT = _declare(
    "bad-event", _PERMANENT, "a Lambda payload is not an S3 notification in any wrapping ptif knows"
)
TOO_MANY_ATTEMPTS = _declare(
    "too-many-attempts",
    _PERMANENT,
    "it failed or crashed the worker `PTIF_MAX_ATTEMPTS` times; the message gives the last error",
)
BAD_SETTINGS = _declare(
    "bad-settings", _PERMANENT, "a setting is out of range, or a page that does not exist"
)
VERIFY_FAILED = _declare("verify-failed", _RETRY, "the written pyramid did not reopen as expected")
DISK_FULL = _declare("disk-full", _RETRY, "a local disk or a folder store is full")
IO_ERROR = _declare("io-error", _RETRY, "a file could not be read or written (disk, permissions)")
SOURCE_CHANGED = _declare(
    "source-changed",
    _RETRY,
    "the downloaded source (or its pyramid) changed in the worker's work folder before it was "
    "published, or did not match its eTag; nothing was published; if it recurs, look for "
    "another process writing to the worker's temporary folder",
)
STORE_UNREACHABLE = _declare(
    "store-unreachable",
    _RETRY,
    "a store could not be reached, or kept failing or throttling after retries",
)
MISSING = _declare(
    "missing", _RETRY, "an object went away between two steps; the next attempt sees why"
)
PRECONDITION_FAILED = _declare(
    "precondition-failed",
    _RETRY,
    "another writer changed the object first (a conditional write lost)",
)
LEASE_LOST = _declare(
    "lease-lost", _RETRY, "another worker took the image over (this one's lease had expired)"
)
INTERRUPTED = _declare("interrupted", _RETRY, "the run stopped before converting the image")
INTERNAL = _declare(
    "internal", _RETRY, "an unexpected failure (a bug); the worker's log has the traceback"
)


class PtifError(Exception):
    """Root of every error ptif raises on purpose."""

    code = INTERNAL

    def __init_subclass__(cls) -> None:
        super().__init_subclass__()
        failure_code(cls.code)

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = failure_code(code).code

    @property
    def permanent(self) -> bool:
        return failure_code(self.code).permanent


class ConfigError(PtifError):
    """Bad settings or usage: nothing was attempted."""

    code = BAD_SETTINGS


class ConversionError(PtifError):
    """A source could not be turned into a verified pyramid."""


class UndecodableError(ConversionError):
    """The bytes are corrupt, truncated or not an image at all."""

    code = UNDECODABLE


class UnsupportedFormatError(ConversionError):
    """The file is a kind ptif does not convert, or this installation lacks its codec."""

    code = UNSUPPORTED


class SourceMissingError(ConversionError):
    """The source named by the work is not there (deleted after it was queued)."""

    code = SOURCE_MISSING


class PixelBudgetError(ConversionError):
    """The header declares more pixels than the configured budget allows."""

    code = PIXEL_BUDGET


class TooLargeError(ConversionError):
    """Decoding the source would need more memory than the conversion's budget."""

    code = TOO_LARGE


class TooSlowError(ConversionError):
    """The conversion ran past its time budget and was stopped."""

    code = TOO_SLOW


class TooComplexError(ConversionError):
    """The source is built to cost more decoding work than any real image of its format."""

    code = TOO_COMPLEX


class TooManyPagesError(ConversionError):
    """A multi-page source has more pages than ptif makes pyramids of."""

    code = TOO_MANY_PAGES


class VerificationError(ConversionError):
    """The written pyramid did not reopen with the expected levels and tiling."""

    code = VERIFY_FAILED


class OutputWriteError(ConversionError):
    """Writing the pyramid failed for a reason outside the image (disk, permissions)."""

    code = IO_ERROR
