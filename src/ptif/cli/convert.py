"""The commands that need no store: ``ptif convert`` (one file to one pyramid) and
``ptif formats`` (what this installation reads and writes)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from ptif.cli.common import add_recipe_options, int_range, recipe_settings
from ptif.convert.profiles import Recipe, get_profile
from ptif.convert.targets import check_target, derived_target
from ptif.errors import ConfigError

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without loading typing on every run
if TYPE_CHECKING:
    from typing import Any

    from ptif.convert.engine import ConversionResult

EXIT_OK = 0


def add_convert(commands: Any, formatter: type[argparse.HelpFormatter]) -> None:
    parser = commands.add_parser(
        "convert",
        formatter_class=formatter,
        help="files or folders to pyramid TIFFs, no stores",
        description="Convert SRC into a verified pyramid TIFF at DST (a file, or a folder to put\n"
        "SRC's name with .tif in). With several sources, or a folder and --recursive, DST is a\n"
        "folder: each image goes there under its name with .tif, a folder's images under their\n"
        "paths inside it, converted in parallel (--workers, PTIF_WORKERS); each failure is one\n"
        "line on stderr and the exit code is 1.\n"
        "A destination that is a source (the same file under any name, link or hard link)\n"
        "is refused: a master is never overwritten. DST must end in .tif, .tiff or .ptif\n"
        "unless --force.",
        epilog="examples:\n  ptif convert scan.jpg scan.tif\n"
        "  ptif convert map.tif out/ --profile marble\n"
        "  ptif convert a.jpg b.png out/\n"
        "  ptif convert -r scans/ pyramids/ --workers 4\n"
        "  ptif convert book.pdf book.tif --all-pages --json\n"
        "exit codes: 0 all done; 1 some images failed; 2 bad usage",
    )
    parser.add_argument("src", type=Path, nargs="+", metavar="SRC", help="the source images")
    parser.add_argument("dst", metavar="DST", help="the output file, or a folder")
    _add_many_options(parser)
    add_recipe_options(parser, profile_default="default")
    _add_page_options(parser)
    parser.add_argument(
        "--copyright",
        action="store_true",
        help="treat the image as copyrightStatus=copyright (the marble profile shrinks it)",
    )
    parser.add_argument("--json", action="store_true", help="print each result as JSON")
    parser.set_defaults(handler=_convert)


def _add_many_options(parser: argparse.ArgumentParser) -> None:
    """Folders, parallel conversions, and names that are no TIFF's."""
    parser.add_argument(
        "-r",
        "--recursive",
        action="store_true",
        help="a folder SRC: convert every image under it (the extensions 'ptif formats' "
        "lists; dot-files and symlinks are skipped), mirroring its folders under DST",
    )
    parser.add_argument(
        "--workers",
        type=int_range(1),
        metavar="N",
        help="parallel conversions for several sources (default: PTIF_WORKERS, else the cores "
        "ptif may use)",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="write a pyramid under a name not ending in .tif, .tiff or .ptif (never over "
        "a source)",
    )


def _add_page_options(parser: argparse.ArgumentParser) -> None:
    pages = parser.add_mutually_exclusive_group()
    pages.add_argument(
        "--page",
        type=int_range(1),
        default=1,
        metavar="N",
        help="which page of a PDF or multi-page TIFF (default 1)",
    )
    pages.add_argument(
        "--all-pages", action="store_true", help="one pyramid per page: DST-p1.tif, DST-p2.tif..."
    )


def _destination(src: Path, dst: str) -> Path:
    if Path(dst).is_dir() or dst.endswith(("/", "\\")):
        return derived_target(src, Path(dst))
    return Path(dst)


def _check_destination(target: Path) -> None:
    """Refuse, before decoding anything, a destination whose folder cannot be written (a
    read-only mount, no permission): libvips would only report it as a baffling save error."""
    folder = target.absolute().parent
    while not os.path.lexists(folder) and folder != folder.parent:
        folder = folder.parent  # the folders still to be made go in the nearest existing one
    if not folder.is_dir():
        raise ConfigError(f"{target}: {folder} is not a folder; choose another destination")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ConfigError(
            f"{target}: cannot write in {folder} (read-only, or no permission); "
            "choose another destination"
        )


def _convert(args: argparse.Namespace) -> int:
    if len(args.src) > 1 or args.src[0].is_dir():
        from ptif.cli.convert_many import convert_many  # several: a parallel run

        return convert_many(args)
    return _convert_one(args, args.src[0])


def _convert_one(args: argparse.Namespace, src: Path) -> int:
    from ptif.convert.engine import convert, convert_pages
    from ptif.convert.limits import Limits, check_limits

    if not src.is_file():
        raise ConfigError(f"{src}: no such file")
    recipe = _recipe(args)
    try:
        check_limits(args.max_pixels, args.max_memory, args.max_seconds, args.max_source_size)
    except ConfigError as error:
        flags = {"--max-pixels": args.max_pixels, "--max-memory": args.max_memory,
                 "--max-seconds": args.max_seconds,
                 "--max-source-size": args.max_source_size}  # fmt: skip
        given = ", ".join(flag for flag, value in flags.items() if value is not None)
        raise ConfigError(f"{given}: {error}") from error
    limits = Limits(args.max_pixels, args.max_memory, args.max_seconds, args.max_source_size)
    target = _destination(src, args.dst)
    check_target(src, target, force=args.force, all_pages=args.all_pages)
    _check_destination(target)
    if args.all_pages:
        results = convert_pages(src, target, recipe, limits=limits)
    else:
        results = [convert(src, target, recipe, page=args.page, limits=limits)]
    for result in results:
        print(_json_text(result.to_dict()) if args.json else _summary(result))
    return EXIT_OK


def _summary(result: ConversionResult) -> str:
    return (
        f"{result.path}: {result.width}x{result.height}, {len(result.levels)} levels, "
        f"{result.bytes / 1e6:.1f} MB, {result.seconds:.2f} s"
    )


def _json_text(data: dict[str, Any], indent: int | None = None) -> str:
    from ptif.console import json_text

    return json_text(data, indent=indent)


def _recipe(args: argparse.Namespace) -> Recipe:
    profile = get_profile(args.profile).with_overrides(**recipe_settings(args))
    return profile.resolve({"copyrightStatus": "copyright"} if args.copyright else {})


# formats ---------------------------------------------------------------------------------------


def add_formats(commands: Any, formatter: type[argparse.HelpFormatter]) -> None:
    parser = commands.add_parser(
        "formats",
        formatter_class=formatter,
        help="what this installation reads and writes",
        description="List the formats this installation reads (and with which decoder),\n"
        "and the tile compressions it writes.",
    )
    parser.add_argument("--json", action="store_true", help="print the list as JSON")
    parser.set_defaults(handler=_formats)


def _formats(args: argparse.Namespace) -> int:
    from ptif.convert.formats import READ_EXTENSIONS, available_formats
    from ptif.convert.pyramid import writable_compressions

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
    compressions = list(writable_compressions())
    if args.json:
        writes = {"format": "tiff", "layout": "tiled pyramid", "compressions": compressions}
        print(_json_text({"read": rows, "write": writes}, indent=2))
        return EXIT_OK
    print("Reads (chosen by the file's content, not its name):")
    for row in rows:
        mark = "yes" if row["readable"] else "NO "
        print(f"  {mark}  {row['format']:<6} {' '.join(row['extensions']):<28} {row['decoder']}")
    print(f"Writes: tiled pyramid TIFF, compression {', '.join(compressions)}")
    taken = " ".join(READ_EXTENSIONS)
    print(f"'ptif mark', 'watch', 'reconcile' and 'convert -r' take names ending with: {taken}")
    return EXIT_OK


def _missing_hint(name: str) -> str:
    return {
        "eps": "missing: install Ghostscript (apt-get install ghostscript)",
        "heic": "missing: pip install 'ptif[heic]'",
    }.get(name, "missing: this libvips build has no decoder for it")


COMMANDS = (add_convert, add_formats)
