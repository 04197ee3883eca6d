"""The ``ptif`` command line: parses arguments, calls the library, reports, sets the exit code.

Exit codes: 0 all done; 1 the work ran but some images failed; 2 bad usage or configuration;
3 a store could not be reached.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click

from ptif import __version__
from ptif.errors import ConfigError, PtifError
from ptif.profiles import COMPRESSIONS, PROFILES, Profile, Recipe, get_profile

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3

F = TypeVar("F", bound=Callable[..., Any])


def _fail(error: PtifError) -> NoReturn:
    one_line = " ".join(str(error).split())
    click.echo(f"ptif: {one_line}", err=True)
    if isinstance(error, ConfigError):
        sys.exit(EXIT_USAGE)
    sys.exit(EXIT_UNREACHABLE if error.code == "store-unreachable" else EXIT_FAILED)


def reports_errors(command: F) -> F:
    """Turn a :class:`PtifError` into one line on stderr and the matching exit code."""

    @wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except PtifError as error:
            _fail(error)

    return wrapper  # type: ignore[return-value]


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="ptif")
@click.option("-v", "--verbose", count=True, help="More detail on stderr (-vv for debugging).")
@click.option("-q", "--quiet", is_flag=True, help="Only errors on stderr.")
def main(verbose: int, quiet: bool) -> None:
    """ptif turns images into tiled pyramid TIFFs for IIIF image servers.

    Sources are read by their content (JPEG, PNG, TIFF, BMP, GIF, WebP, PDF, EPS, JPEG 2000,
    HEIC, AVIF), converted to 8-bit sRGB or grey with their colour profile, EXIF orientation and
    alpha handled, and written as verified pyramids.
    """
    level = (
        logging.ERROR if quiet else (logging.WARNING, logging.INFO, logging.DEBUG)[min(verbose, 2)]
    )
    logging.basicConfig(level=level, format="ptif: %(levelname)s: %(message)s", stream=sys.stderr)
    # libvips reports each bad tile as a warning; the error that follows already says it all.
    logging.getLogger("pyvips").setLevel(logging.DEBUG if verbose >= 2 else logging.ERROR)


def recipe_options(command: F) -> F:
    """The profile and every setting on its own, shared by every command that converts."""
    decorators = [
        click.option(
            "--profile",
            "profile_name",
            type=click.Choice(sorted(PROFILES)),
            default="default",
            show_default=True,
            help="Named settings: "
            + "; ".join(f"{p.name}: {p.description}" for p in PROFILES.values()),
        ),
        click.option("--compression", type=click.Choice(COMPRESSIONS), help="Tile compression."),
        click.option("--quality", type=click.IntRange(1, 100), help="JPEG/WebP quality, 1-100."),
        click.option("--tile-size", type=int, help="Tile width and height in pixels (x16)."),
        click.option("--dpi", type=float, help="Resolution to record; default keeps the source's."),
        click.option(
            "--max-size", type=int, help="Shrink so neither side passes this many pixels."
        ),
        click.option("--max-width", type=int, help="Shrink so the width is at most this."),
        click.option("--max-height", type=int, help="Shrink so the height is at most this."),
        click.option(
            "--max-pixels",
            type=click.IntRange(min=1),
            help="Refuse sources whose header declares more pixels (default 3,000,000,000).",
        ),
    ]
    for decorator in reversed(decorators):
        command = decorator(command)
    return command


def build_profile(profile_name: str, **settings: Any) -> Profile:
    """The named profile with the settings given on the command line applied on top."""
    max_size = settings.pop("max_size", None)
    if max_size is not None:
        settings["max_width"] = settings.get("max_width") or max_size
        settings["max_height"] = settings.get("max_height") or max_size
    return get_profile(profile_name).with_overrides(**settings)


def _destination(src: Path, dst: str) -> Path:
    if Path(dst).is_dir() or dst.endswith(("/", "\\")):
        return Path(dst) / f"{src.stem}.tif"
    return Path(dst)


@main.command()
@click.argument("src", type=click.Path(path_type=Path, dir_okay=False))
@click.argument("dst", type=click.Path())
@recipe_options
@click.option("--page", type=click.IntRange(min=1), default=1, show_default=True,
              help="Which page of a PDF or multi-page TIFF to convert.")  # fmt: skip
@click.option("--all-pages", is_flag=True, help="One pyramid per page: DST-p1.tif, DST-p2.tif...")
@click.option(
    "--copyright",
    is_flag=True,
    help="Treat the image as copyrightStatus=copyright (the marble profile shrinks it).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")
@reports_errors
def convert(
    src: Path,
    dst: str,
    profile_name: str,
    page: int,
    all_pages: bool,
    copyright: bool,
    as_json: bool,
    max_pixels: int | None,
    **settings: Any,
) -> None:
    """Convert one file SRC into a pyramid TIFF at DST (a file, or a folder to put SRC.tif in).

    \b
    Examples:
      ptif convert scan.jpg scan.tif
      ptif convert map.tif out/ --profile marble
      ptif convert book.pdf book.tif --all-pages --json
    """
    from ptif.convert import convert as convert_one
    from ptif.convert import convert_pages

    if not src.exists():
        raise ConfigError(f"{src}: no such file")
    recipe = _resolve(profile_name, copyright, settings)
    target = _destination(src, dst)
    if all_pages:
        results = convert_pages(src, target, recipe, max_pixels=max_pixels)
    else:
        results = [convert_one(src, target, recipe, page=page, max_pixels=max_pixels)]
    for result in results:
        if as_json:
            click.echo(json.dumps(result.to_dict()))
        else:
            click.echo(
                f"{result.path}: {result.width}x{result.height}, {len(result.levels)} levels, "
                f"{result.bytes / 1e6:.1f} MB, {result.seconds:.2f} s"
            )


def _resolve(profile_name: str, copyright: bool, settings: dict[str, Any]) -> Recipe:
    profile = build_profile(profile_name, **settings)
    return profile.resolve({"copyrightStatus": "copyright"} if copyright else {})


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the list as JSON on stdout.")
def formats(as_json: bool) -> None:
    """List the formats this installation reads, and what it writes."""
    from ptif.formats import ORIGINAL_EXTENSIONS, available_formats
    from ptif.pyramid import writable_compressions

    rows: list[dict[str, Any]] = [
        {
            "format": fmt.name,
            "title": fmt.title,
            "extensions": list(fmt.extensions),
            "readable": decoder is not None,
            "decoder": decoder or _missing_hint(fmt.name),
            "multipage": fmt.multipage,
        }
        for fmt, decoder in available_formats()
    ]
    compressions = writable_compressions()
    writes = {"format": "tiff", "layout": "tiled pyramid", "compressions": list(compressions)}
    if as_json:
        click.echo(json.dumps({"read": rows, "write": writes}, indent=2))
        return
    click.echo("Reads (chosen by the file's content, not its name):")
    for row in rows:
        mark = "yes" if row["readable"] else "NO "
        click.echo(
            f"  {mark}  {row['format']:<6} {' '.join(row['extensions']):<28} {row['decoder']}"
        )
    click.echo(f"Writes: tiled pyramid TIFF, compression {', '.join(compressions)}")
    click.echo(f"'ptif mark' picks sources by these extensions: {' '.join(ORIGINAL_EXTENSIONS)}")


def _missing_hint(name: str) -> str:
    return {
        "eps": "missing: install Ghostscript (apt-get install ghostscript)",
        "heic": "missing: pip install 'ptif[heic]'",
    }.get(name, "missing: this libvips build has no decoder for it")
