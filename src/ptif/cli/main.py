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

from ptif import __version__
from ptif.console import configure_logging, printable
from ptif.errors import STORE_UNREACHABLE, ConfigError, PtifError

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without loading typing on every run
if TYPE_CHECKING:
    from typing import Any, NoReturn

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


class _Parser(argparse.ArgumentParser):
    """Usage errors in one line, as every other error: the usage is one --help away."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: {message} (see '{self.prog} --help')\n")


# entry point -----------------------------------------------------------------------------------

#: Every command, in the order ``ptif --help`` lists them, and the module whose ``add_<command>``
#: adds its parser. A run builds only its own command's parser, so ``ptif convert`` never loads
#: the queue's and intake's modules.
COMMANDS: dict[str, str] = {
    "convert": "ptif.cli.convert",
    "formats": "ptif.cli.convert",
    "info": "ptif.cli.info",
    "process": "ptif.cli.queue",
    "mark": "ptif.cli.queue",
    "status": "ptif.cli.queue",
    "retry": "ptif.cli.queue",
    "watch": "ptif.cli.intake",
    "reconcile": "ptif.cli.intake",
}
#: What may stand before the command name without changing which parsers are needed.
_OUTPUT_FLAGS = re.compile(r"-[vq]+|--verbose|--quiet")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser of ``ptif``, with every command, or with ``command`` alone."""
    parser = _Parser(
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


def one_line(text: str) -> str:
    """``text`` as one line a terminal shows as it is: white space runs made one space, other
    control characters escaped. Keys and file names are anyone's choice (``ESC ]0;…``, a
    right-to-left override): printed raw, they would drive the operator's terminal."""
    return printable(" ".join(text.split()))


def report_error(error: PtifError) -> int:
    print(f"ptif: {one_line(str(error))}", file=sys.stderr)
    if isinstance(error, ConfigError):
        return EXIT_USAGE
    return EXIT_UNREACHABLE if error.code == STORE_UNREACHABLE else EXIT_FAILED


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
    except MemoryError:  # one the conversion did not catch: a line, not a traceback
        print("ptif: out of memory; run fewer workers or give ptif more memory", file=sys.stderr)
        return EXIT_FAILED
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
