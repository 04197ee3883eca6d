"""What every command shares: its store and recipe options, one way to turn flags into
:class:`~ptif.config.Settings` (flag, then environment, then ``ptif.toml``, then defaults), the
stores they open and the handling of SIGTERM and Ctrl-C.

Loaded by ``ptif convert`` too, so it imports only what the parsers need; the rest loads inside
the functions that use it.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from ptif.convert.limits import DEFAULT_MAX_SECONDS, DEFAULT_MAX_SOURCE, format_size, parse_size
from ptif.convert.profiles import (
    COMPRESSIONS,
    DEFAULT_MAX_PIXELS,
    DEFAULT_MIN_QUALITY,
    PROFILES,
    RECIPE_SETTINGS,
)
from ptif.errors import ConfigError

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without loading typing on every run
if TYPE_CHECKING:
    from typing import Any

    from ptif.config import Settings
    from ptif.queue.worker import Stores


def add_recipe_options(parser: argparse.ArgumentParser, profile_default: str | None = None) -> None:
    """The profile and every setting on its own, and the budgets, shared by every command that
    converts.

    Commands that read settings from the environment pass no default profile, so that an unset
    flag does not hide PTIF_PROFILE or ptif.toml.
    """
    group = add_recipe_settings(parser, profile_default)
    _add_source_limits(group)


def add_recipe_settings(
    parser: argparse.ArgumentParser, profile_default: str | None = None
) -> argparse._ArgumentGroup:
    """The profile and the settings that make an output's recipe, for the commands that
    convert and those that judge whether an output is current (mark --stale, watch,
    reconcile): the same flags, variables and ptif.toml keys give the same recipe."""
    group = parser.add_argument_group(
        "conversion settings",
        "Override the profile's; each also has a variable (PTIF_COMPRESSION, PTIF_QUALITY,\n"
        "PTIF_TILE_SIZE, PTIF_DPI, PTIF_MIN_QUALITY, PTIF_MAX_WIDTH, PTIF_MAX_HEIGHT) and a key\n"
        "in ptif.toml's\n"
        "[recipe] table. A flag beats the variable, which beats the file.",
    )
    profiles = "; ".join(f"{p.name}: {p.description}" for p in PROFILES.values())
    group.add_argument(
        "--profile",
        default=profile_default,
        choices=sorted(PROFILES),
        help=f"named settings (default: PTIF_PROFILE, else default). {profiles}",
    )
    _add_tile_options(group)
    _add_output_box(group)
    return group


def _add_tile_options(group: argparse._ArgumentGroup) -> None:
    """How tiles are encoded, and the resolution recorded."""
    group.add_argument("--compression", choices=COMPRESSIONS, help="tile compression")
    group.add_argument(
        "--quality", type=int_range(1, 100), metavar="Q", help="JPEG/WebP quality, 1-100"
    )
    group.add_argument(
        "--tile-size",
        type=int_range(16, 8192),
        metavar="PX",
        help="tile width and height, a multiple of 16",
    )
    group.add_argument(
        "--dpi",
        type=number_range(0, above=True),
        help="resolution to record (default: the source's)",
    )
    group.add_argument(
        "--min-quality",
        type=number_range(0, above=True),
        metavar="SSIM",
        help="JPEG tiles: the quality floor, an SSIM against the source (default profile: "
        f"{DEFAULT_MIN_QUALITY}); each image gets the fewest bytes that hold it, YCbCr 4:2:0 "
        "or 4:4:4 at Q74 to Q95 (images over 256 MB decoded: 4:2:0 below Q90, else RGB Q90). "
        "--quality or --compression turn the floor off",
    )


def _add_output_box(group: argparse._ArgumentGroup) -> None:
    """The box an output is shrunk to fit."""
    group.add_argument(
        "--max-size", type=int_range(1), metavar="PX", help="shrink so neither side passes this"
    )
    group.add_argument(
        "--max-width", type=int_range(1), metavar="PX", help="shrink so the width is at most this"
    )
    group.add_argument(
        "--max-height",
        type=int_range(1),
        metavar="PX",
        help="shrink so the height is at most this",
    )


def _add_source_limits(group: argparse._ArgumentGroup) -> None:
    """The largest source accepted, and one conversion's memory and time."""
    group.add_argument(
        "--max-pixels",
        type=int_range(1),
        metavar="N",
        help=f"refuse sources whose header declares more pixels (default {DEFAULT_MAX_PIXELS:,})",
    )
    group.add_argument(
        "--max-memory",
        type=_size,
        metavar="SIZE",
        help="memory one conversion may use, e.g. 2G (default: 3/4 of the memory shared by "
        "the parallel conversions)",
    )
    group.add_argument(
        "--max-seconds",
        type=float,
        metavar="S",
        help=f"stop a conversion that takes longer (default {DEFAULT_MAX_SECONDS:g})",
    )
    group.add_argument(
        "--max-source-size",
        type=_size,
        metavar="SIZE",
        help="refuse a source bigger than this before reading or downloading it, e.g. 50G "
        f"(default {format_size(DEFAULT_MAX_SOURCE)}: 3 gigapixels of uncompressed 16-bit RGB)",
    )


def _size(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def int_range(low: int, high: int | None = None) -> Callable[[str], int]:
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


def number_range(low: float, *, above: bool = False) -> Callable[[str], float]:
    """A finite number of at least ``low`` (more than ``low`` if ``above``): NaN or a negative
    age would silently turn a check off."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not (value > low if above else value >= low) or value == float("inf"):
            bound = f"more than {low:g}" if above else f"{low:g} or more"
            raise argparse.ArgumentTypeError(f"{text} is out of range ({bound})")
        return value

    return parse


def recipe_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The recipe settings given on the command line (``--max-size`` sets width and height)."""
    settings = {name: getattr(args, name, None) for name in RECIPE_SETTINGS}
    if args.max_size is not None:
        settings["max_width"] = settings["max_width"] or args.max_size
        settings["max_height"] = settings["max_height"] or args.max_size
    return {k: v for k, v in settings.items() if v is not None}


def add_store_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "stores",
        "Each is s3://bucket[/prefix] or a folder. A flag beats PTIF_SOURCE/PTIF_PROCESS/\n"
        "PTIF_IMAGES (or RBSC_BUCKET/PROCESS_BUCKET/IMAGE_BUCKET), which beat ptif.toml;\n"
        "the default is ./ptif-data/{source,process,images}. The source is only read,\n"
        "never written or created; two stores that are the same place or one inside\n"
        "another are refused (exit 2).",
    )
    group.add_argument(
        "--source", metavar="URL", help="where the images are uploaded (read-only to ptif)"
    )
    group.add_argument("--process", metavar="URL", help="the queue: markers, leases, reports")
    group.add_argument("--images", metavar="URL", help="where the pyramids go")
    group.add_argument(
        "--endpoint-url",
        metavar="URL",
        help="S3-compatible server (MinIO, SeaweedFS, Ceph); else AWS",
    )
    group.add_argument("--config", type=Path, metavar="FILE", help="a ptif.toml to read")
    group.add_argument("--queue-prefix", metavar="PREFIX", help="marker folder (default rbsc/)")


def settings_from(args: argparse.Namespace, **more: Any) -> Settings:
    """The settings of a command that takes the store options, and what else of ``--profile``,
    the recipe options, ``--ext`` and ``--only-ext`` it takes; ``more`` adds settings of its own."""
    from ptif.config import load_settings, parse_extensions

    flags = {**store_flags(args), **more}
    if hasattr(args, "profile"):
        flags["profile"] = args.profile
    if hasattr(args, "compression"):  # the command takes the recipe's settings
        flags["recipe"] = recipe_settings(args) or None
    if hasattr(args, "max_pixels"):  # and the budgets
        flags["max_pixels"] = args.max_pixels
        flags["max_memory"] = args.max_memory
        flags["max_seconds"] = args.max_seconds
        flags["max_source_size"] = args.max_source_size
    if getattr(args, "only_ext", None):
        flags["extensions"] = ",".join(parse_extensions(",".join(args.only_ext)))
    settings = load_settings(flags, config_file=args.config)
    if getattr(args, "ext", None):  # --ext adds to the list in force
        from dataclasses import replace

        listed = (*settings.extension_list(), *parse_extensions(",".join(args.ext)))
        settings = replace(settings, extensions=",".join(dict.fromkeys(listed)))
    return settings


def add_extension_options(parser: argparse.ArgumentParser, verb: str) -> None:
    """``--ext`` adds to the extensions taken for images, ``--only-ext`` replaces them."""
    parser.add_argument(
        "--ext",
        action="append",
        default=[],
        metavar="EXT",
        help=f"also {verb} keys ending with this, e.g. --ext dng (repeatable; the default list "
        "is every extension 'ptif formats' lists, or PTIF_EXTENSIONS)",
    )
    parser.add_argument(
        "--only-ext",
        action="append",
        default=[],
        metavar="EXT",
        help=f"{verb} only keys ending with these, e.g. --only-ext jpg --only-ext tif "
        "(repeatable; replaces the list)",
    )


def open_stores(settings: Settings, args: argparse.Namespace | None = None) -> Stores:
    """The three stores, the source read-only, each checked before any work
    (:mod:`ptif.cli.preflight`). Refused (exit 2) before any is opened when two of them
    overlap; ``args`` tells where each setting came from, for the message."""
    from ptif.cli.preflight import open_checked
    from ptif.queue.worker import Stores
    from ptif.stores import FolderStore
    from ptif.stores.overlap import overlap

    urls = {"source": settings.source, "process": settings.process, "images": settings.images}
    problem = overlap(urls, store_origins(args) if args is not None else None)
    if problem:
        raise ConfigError(problem)
    if settings.images_mode is not None and settings.images.strip().lower().startswith("s3:"):
        raise ConfigError(
            f"images_mode (PTIF_IMAGES_MODE, --images-mode) is for a folder images store; "
            f"{settings.images} keeps no file modes: unset it"
        )
    stores = open_checked(settings)
    images = stores["images"]
    if settings.images_mode is not None and isinstance(images, FolderStore):
        images.use_file_mode(settings.images_mode)
    return Stores(**stores)


def store_origins(args: argparse.Namespace) -> dict[str, str]:
    """Where each store's setting came from: its flag, else the environment, file or default."""
    from ptif.config import setting_origin

    origins: dict[str, str] = {}
    for name in ("source", "process", "images"):
        if name == "source" and getattr(args, "location", None):
            origins[name] = "the SOURCE argument"
        elif getattr(args, name, None):
            origins[name] = f"--{name}"
        else:
            origins[name] = setting_origin(name, config_file=args.config)
    return origins


# process ---------------------------------------------------------------------------------------


def store_flags(args: argparse.Namespace) -> dict[str, Any]:
    """The store flags every queue and intake command takes (``add_store_options``)."""
    return {
        "source": args.source,
        "process": args.process,
        "images": args.images,
        "endpoint_url": args.endpoint_url,
        "queue_prefix": args.queue_prefix,
    }


def stop_on_signals(stop: Callable[[str], None]) -> None:
    """SIGTERM and Ctrl-C call ``stop`` with the signal's name, each time one arrives."""
    import signal

    def on_signal(number: int, frame: object) -> None:
        stop(signal.Signals(number).name)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
