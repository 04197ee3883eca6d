"""One exception root, and one table that says what each failure means for the queue.

Every error ptif raises derives from :class:`PtifError` and carries a stable ``code``. The
:data:`DISPOSITION` table decides whether work that failed with that code is worth retrying
(``RETRY``: the marker stays for a later attempt) or has failed for good (``PERMANENT``: it moves
to ``failed/``). Codes are part of the contract: failure records and ``ptif status`` show them.
"""

from __future__ import annotations

from enum import Enum


class Disposition(Enum):
    RETRY = "retry"
    PERMANENT = "permanent"


DISPOSITION: dict[str, Disposition] = {
    "undecodable": Disposition.PERMANENT,
    "unsupported": Disposition.PERMANENT,
    "pixel-budget": Disposition.PERMANENT,
    "output-conflict": Disposition.PERMANENT,
    "too-many-attempts": Disposition.PERMANENT,
    "source-missing": Disposition.PERMANENT,
    "bad-marker": Disposition.PERMANENT,
    "bad-settings": Disposition.PERMANENT,
    "verify-failed": Disposition.RETRY,
    "disk-full": Disposition.RETRY,
    "io-error": Disposition.RETRY,
    "store-unreachable": Disposition.RETRY,
    "lease-lost": Disposition.RETRY,
    "internal": Disposition.RETRY,
}


class PtifError(Exception):
    """Root of every error ptif raises on purpose."""

    code = "internal"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code

    @property
    def permanent(self) -> bool:
        return DISPOSITION.get(self.code, Disposition.RETRY) is Disposition.PERMANENT


class ConfigError(PtifError):
    """Bad settings or usage: nothing was attempted."""

    code = "bad-settings"


class ConversionError(PtifError):
    """A source could not be turned into a verified pyramid."""


class UndecodableError(ConversionError):
    """The bytes are corrupt, truncated or not an image at all."""

    code = "undecodable"


class UnsupportedFormatError(ConversionError):
    """The file is a kind ptif does not convert, or this installation lacks its codec."""

    code = "unsupported"


class SourceMissingError(ConversionError):
    """The source named by the work is not there (deleted after it was queued)."""

    code = "source-missing"


class PixelBudgetError(ConversionError):
    """The header declares more pixels than the configured budget allows."""

    code = "pixel-budget"


class VerificationError(ConversionError):
    """The written pyramid did not reopen with the expected levels and tiling."""

    code = "verify-failed"


class OutputWriteError(ConversionError):
    """Writing the pyramid failed for a reason outside the image (disk, permissions)."""

    code = "io-error"
