"""The conversion as the worker runs it: the worker's one contact with libvips.

The engine (:func:`ptif.convert.engine.convert`) knows files, not keys; the worker converts a
download in its work folder, so errors are relabelled to name the source key an operator knows.
Several conversions run at once, one per slot, so libvips's own threads are shared between the
slots instead of each conversion taking every core. pyvips and the engine are imported only
when a run starts, so importing the queue package (``ptif status``, the Lambda) never loads them.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ptif.errors import PtifError

if TYPE_CHECKING:
    from ptif.convert.engine import ConversionResult
    from ptif.convert.limits import Limits
    from ptif.convert.profiles import Recipe


def convert_labelled(
    src: Path,
    dst: Path,
    recipe: Recipe,
    label: str,
    limits: Limits,
    page: int = 1,
    etag: str = "",
) -> ConversionResult:
    """Convert page ``page``, with errors naming the source key rather than the worker's
    temporary file; the file records the source key (``label``) and ``etag``."""
    from ptif.convert.engine import convert

    try:
        provenance = {"source_key": label, "source_etag": etag}
        return convert(src, dst, recipe, page=page, limits=limits, provenance=provenance)
    except PtifError as error:
        error.args = (str(error).replace(str(src), label),)
        raise


def tune_libvips(workers: int) -> None:
    """Share the cores between parallel conversions instead of oversubscribing them: libvips'
    threads and ptif's own writer's (:mod:`ptif.convert.cores`)."""
    from ptif.convert import cores

    cores.share(workers)
