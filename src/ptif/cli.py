"""The ``ptif`` command line: parses arguments, calls the library, reports, sets the exit code.

Built on the standard library's argparse: a one-shot ``ptif convert`` starts in well under a
tenth of a second, which matters when it is measured against a bare libvips call. For the same
reason the modules it loads use plain classes rather than dataclasses (whose module loads inspect,
ast and dis) and import typing only for mypy; tests/test_cli.py checks what it loads.

Exit codes: 0 all done; 1 the work ran but some images failed; 2 bad usage or configuration;
3 a store could not be reached.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Callable, Sequence
from importlib import import_module
from pathlib import Path

from ptif import __version__
from ptif.console import configure_logging
from ptif.errors import ConfigError, PtifError
from ptif.profiles import (
    COMPRESSIONS,
    DEFAULT_MAX_PIXELS,
    PROFILES,
    RECIPE_SETTINGS,
    Recipe,
    get_profile,
)

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without loading typing on every run
if TYPE_CHECKING:
    from typing import Any

    from ptif.convert import ConversionResult

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3

Handler = Callable[[argparse.Namespace], int]

DESCRIPTION = """\
ptif turns images into tiled pyramid TIFFs for IIIF image servers.

Sources are read by their content (JPEG, PNG, TIFF, BMP, GIF, WebP, PDF, EPS, JPEG 2000, HEIC,
AVIF), converted to 8-bit sRGB or grey with their colour profile, EXIF orientation and alpha
handled, and written as verified pyramids."""

EPILOG = """\
exit codes: 0 all done; 1 some images failed; 2 bad usage or configuration;
            3 a store could not be reached
Run 'ptif COMMAND --help' for a command's options."""


class _Formatter(argparse.RawDescriptionHelpFormatter):
    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=32, width=100)


def add_recipe_options(parser: argparse.ArgumentParser, profile_default: str | None = None) -> None:
    """The profile and every setting on its own, shared by every command that converts.

    Commands that read settings from the environment pass no default profile, so that an unset
    flag does not hide PTIF_PROFILE or ptif.toml.
    """
    group = parser.add_argument_group("conversion settings (override the profile's)")
    profiles = "; ".join(f"{p.name}: {p.description}" for p in PROFILES.values())
    group.add_argument(
        "--profile",
        default=profile_default,
        choices=sorted(PROFILES),
        help=f"named settings (default: default). {profiles}",
    )
    group.add_argument("--compression", choices=COMPRESSIONS, help="tile compression")
    group.add_argument(
        "--quality", type=_int_range(1, 100), metavar="Q", help="JPEG/WebP quality, 1-100"
    )
    group.add_argument(
        "--tile-size",
        type=_int_range(16, 8192),
        metavar="PX",
        help="tile width and height, a multiple of 16",
    )
    group.add_argument("--dpi", type=float, help="resolution to record (default: the source's)")
    group.add_argument(
        "--max-size", type=_int_range(1), metavar="PX", help="shrink so neither side passes this"
    )
    group.add_argument(
        "--max-width", type=_int_range(1), metavar="PX", help="shrink so the width is at most this"
    )
    group.add_argument(
        "--max-height",
        type=_int_range(1),
        metavar="PX",
        help="shrink so the height is at most this",
    )
    group.add_argument(
        "--max-pixels",
        type=_int_range(1),
        metavar="N",
        help=f"refuse sources whose header declares more pixels (default {DEFAULT_MAX_PIXELS:,})",
    )


def _int_range(low: int, high: int | None = None) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text.replace("_", "").replace(",", ""))
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < low or (high is not None and value > high):
            bounds = f"{low} to {high}" if high is not None else f"at least {low}"
            raise argparse.ArgumentTypeError(f"{value} is out of range ({bounds})")
        return value

    return parse


def recipe_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The recipe settings given on the command line (``--max-size`` sets width and height)."""
    settings = {name: getattr(args, name) for name in RECIPE_SETTINGS}
    if args.max_size is not None:
        settings["max_width"] = settings["max_width"] or args.max_size
        settings["max_height"] = settings["max_height"] or args.max_size
    return {k: v for k, v in settings.items() if v is not None}


# convert ---------------------------------------------------------------------------------------


def add_convert(commands: Any, formatter: type[argparse.HelpFormatter]) -> None:
    parser = commands.add_parser(
        "convert",
        formatter_class=formatter,
        help="one file to one pyramid TIFF, no stores",
        description="Convert one file SRC into a verified pyramid TIFF at DST\n"
        "(a file, or a folder to put SRC's name with .tif in).",
        epilog="examples:\n  ptif convert scan.jpg scan.tif\n"
        "  ptif convert map.tif out/ --profile marble\n"
        "  ptif convert book.pdf book.tif --all-pages --json",
    )
    parser.add_argument("src", type=Path, help="the source image")
    parser.add_argument("dst", help="the output file, or an existing folder")
    add_recipe_options(parser, profile_default="default")
    pages = parser.add_mutually_exclusive_group()
    pages.add_argument(
        "--page",
        type=_int_range(1),
        default=1,
        metavar="N",
        help="which page of a PDF or multi-page TIFF (default 1)",
    )
    pages.add_argument(
        "--all-pages", action="store_true", help="one pyramid per page: DST-p1.tif, DST-p2.tif..."
    )
    parser.add_argument(
        "--copyright",
        action="store_true",
        help="treat the image as copyrightStatus=copyright (the marble profile shrinks it)",
    )
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.set_defaults(handler=_convert)


def _destination(src: Path, dst: str) -> Path:
    if Path(dst).is_dir() or dst.endswith(("/", "\\")):
        return Path(dst) / f"{src.stem}.tif"
    return Path(dst)


def _convert(args: argparse.Namespace) -> int:
    from ptif.convert import convert, convert_pages

    if not args.src.is_file():
        raise ConfigError(f"{args.src}: no such file")
    recipe = _recipe(args)
    target = _destination(args.src, args.dst)
    if args.all_pages:
        results = convert_pages(args.src, target, recipe, max_pixels=args.max_pixels)
    else:
        results = [convert(args.src, target, recipe, page=args.page, max_pixels=args.max_pixels)]
    for result in results:
        print(_json_text(result.to_dict()) if args.json else _summary(result))
    return EXIT_OK


def _summary(result: ConversionResult) -> str:
    return (
        f"{result.path}: {result.width}x{result.height}, {len(result.levels)} levels, "
        f"{result.bytes / 1e6:.1f} MB, {result.seconds:.2f} s"
    )


def _json_text(data: dict[str, Any], indent: int | None = None) -> str:
    import json  # only --json needs it; a one-shot convert starts faster without it

    return json.dumps(data, indent=indent)


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
    print(f"'ptif mark' picks sources by these extensions: {' '.join(ORIGINAL_EXTENSIONS)}")
    return EXIT_OK


def _missing_hint(name: str) -> str:
    return {
        "eps": "missing: install Ghostscript (apt-get install ghostscript)",
        "heic": "missing: pip install 'ptif[heic]'",
    }.get(name, "missing: this libvips build has no decoder for it")


# entry point -----------------------------------------------------------------------------------

#: Every command, in the order ``ptif --help`` lists them, and the module whose ``add_<command>``
#: adds its parser. A run builds only its own command's parser, so ``ptif convert`` never loads
#: the queue's and intake's modules.
COMMANDS: dict[str, str] = {
    "convert": __name__,
    "formats": __name__,
    "process": "ptif.cli_queue",
    "mark": "ptif.cli_queue",
    "status": "ptif.cli_queue",
    "retry": "ptif.cli_queue",
    "watch": "ptif.cli_intake",
    "reconcile": "ptif.cli_intake",
}
#: What may stand before the command name without changing which parsers are needed.
_OUTPUT_FLAGS = re.compile(r"-[vq]+|--verbose|--quiet")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser of ``ptif``, with every command, or with ``command`` alone."""
    parser = argparse.ArgumentParser(
        prog="ptif", description=DESCRIPTION, epilog=EPILOG, formatter_class=_Formatter
    )
    parser.add_argument("--version", action="version", version=f"ptif {__version__}")
    _add_output_options(parser, default=None)
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    for name in [command] if command else COMMANDS:
        add_command = getattr(import_module(COMMANDS[name]), f"add_{name}")
        add_command(commands, _Formatter)
    for command_parser in commands.choices.values():
        _add_output_options(command_parser, default=argparse.SUPPRESS)
    return parser


def command_in(argv: Sequence[str]) -> str | None:
    """The command ``argv`` runs, when only -v or -q stand before it; else ``None``, so that
    help, errors and anything unusual see every command."""
    for arg in argv:
        if arg in COMMANDS:
            return arg
        if not _OUTPUT_FLAGS.fullmatch(arg):
            return None
    return None


def _add_output_options(parser: argparse.ArgumentParser, default: Any) -> None:
    """-v and -q, before or after the command name (``ptif -q process`` = ``ptif process -q``)."""
    group = parser.add_argument_group("output")
    group.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=default,
        help="more detail on stderr (-vv for debugging)",
    )
    group.add_argument(
        "-q", "--quiet", action="store_true", default=default, help="only errors on stderr"
    )


def report_error(error: PtifError) -> int:
    print(f"ptif: {' '.join(str(error).split())}", file=sys.stderr)
    if isinstance(error, ConfigError):
        return EXIT_USAGE
    return EXIT_UNREACHABLE if error.code == "store-unreachable" else EXIT_FAILED


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(command_in(argv)).parse_args(argv)
    args.verbose, args.quiet = args.verbose or 0, bool(args.quiet)
    configure_logging(args.verbose, args.quiet, json_lines=False)
    handler: Handler = args.handler
    try:
        return handler(args)
    except PtifError as error:
        return report_error(error)
    except KeyboardInterrupt:
        print("ptif: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `ptif formats | head`: the reader has what it wanted
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so the exit flush does not fail again
        return 141


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())
