"""The conversion engine: one source file in, one verified pyramid TIFF out; no stores, no queue.

``from ptif.convert import convert`` is the library's entry point. The engine's rooms:
:mod:`~ptif.convert.formats` (what a file is, by its bytes), :mod:`~ptif.convert.loaders` (opening
it within the pixel budget), :mod:`~ptif.convert.colour` (to 8-bit sRGB or grey),
:mod:`~ptif.convert.profiles` (named settings and the validated :class:`Recipe`),
:mod:`~ptif.convert.pyramid` (every tiffsave option), :mod:`~ptif.convert.verify` (reopening
the result) and :mod:`~ptif.convert.engine` (the steps in order).

The engine loads pyvips; this package's ``__init__`` does not, so that the settings and the
Lambda handler can read the formats and profiles without it.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without loading typing on every run
if TYPE_CHECKING:
    from ptif.convert.engine import ConversionResult, convert, convert_pages

__all__ = ["ConversionResult", "convert", "convert_pages"]


def __getattr__(name: str) -> object:
    if name in __all__:
        from ptif.convert import engine

        return getattr(engine, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
