"""``ptif info``: what a pyramid holds, and whether it passes the worker's check.

Reads a local file, or with ``--images`` an object of the images store (fetched into a private
temporary folder). Provenance (source key, eTag, recipe, encoding) comes from the file itself when
ptif embedded it (its ImageDescription), which survives a copy; what the file lacks comes from the
store's metadata, or for a local file from the metadata a folder store keeps with it (an extended
attribute), when the file is one.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

from ptif.console import json_text, printable
from ptif.errors import ConfigError

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without loading typing on every run
if TYPE_CHECKING:
    from typing import Any

EXIT_OK = 0
#: Store metadata shown as provenance, under these names.
PROVENANCE = {
    "ptif-source-key": "source_key",
    "ptif-source-etag": "source_etag",
    "ptif-recipe": "recipe",
    "ptif-version": "ptif_version",
    "ptif-page": "page",
    "ptif-pages": "pages",
    "ptif-source-pages": "source_pages",
}


def add_info(commands: Any, formatter: type[argparse.HelpFormatter]) -> None:
    parser = commands.add_parser(
        "info",
        formatter_class=formatter,
        help="what a pyramid TIFF holds; --verify checks it as the worker does",
        description="Show a pyramid TIFF's size, levels, tile size, compression (and JPEG\n"
        "quality, estimated from its tables), bytes, and the provenance ptif stored with it:\n"
        "source key, source eTag, recipe hash. With --verify, check it as the worker does\n"
        "before an upload (every level's size and tiling, no tile missing, the smallest level\n"
        "decodes): exit 1 with one line if it fails.",
        epilog="examples:\n  ptif info out/scan.tif\n  ptif info --verify --json out/scan.tif\n"
        "  ptif info --images s3://iiif-images maps/sheet-12.tif",
    )
    parser.add_argument("file", metavar="FILE", help="a pyramid TIFF (with --images: its key)")
    parser.add_argument("--verify", action="store_true", help="check it as the worker does")
    parser.add_argument("--json", action="store_true", help="print what it holds as JSON")
    parser.add_argument(
        "--images",
        metavar="URL",
        help="read FILE as a key of this images store (s3://… or a folder)",
    )
    parser.add_argument(
        "--endpoint-url", metavar="URL", help="S3-compatible server for --images (else AWS)"
    )
    parser.set_defaults(handler=run_info)


def run_info(args: argparse.Namespace) -> int:
    if args.images:
        with tempfile.TemporaryDirectory(prefix="ptif-info-") as folder:
            path = Path(folder) / "pyramid.tif"
            metadata = _fetch(args, path)
            return _show(path, metadata, args, label=args.file)
    path = Path(args.file)
    if not path.is_file():
        raise ConfigError(f"{path}: no such file")
    return _show(path, _local_metadata(path), args, label=str(path))


def _fetch(args: argparse.Namespace, path: Path) -> dict[str, str]:
    from ptif.config import load_settings
    from ptif.stores import open_store

    settings = load_settings({"images": args.images, "endpoint_url": args.endpoint_url})
    store = open_store(settings.images, endpoint_url=settings.endpoint_url)
    if store.head(args.file) is None:
        raise ConfigError(f"{store.url}: no object {args.file}")
    return dict(store.get_file(args.file, path).metadata)


def _local_metadata(path: Path) -> dict[str, str]:
    """The metadata a folder store keeps in the file's extended attribute, if it has one."""
    from ptif.stores.folder import XATTR

    try:
        body = json.loads(os.getxattr(path, XATTR))
    except (OSError, ValueError, AttributeError):
        return {}
    return {str(k): str(v) for k, v in body.items()} if isinstance(body, dict) else {}


def _show(path: Path, metadata: dict[str, str], args: argparse.Namespace, label: str) -> int:
    from ptif.convert.describe import check, describe, embedded_provenance
    from ptif.errors import VerificationError

    try:
        info = describe(path)
        if args.verify:
            check(path)
    except VerificationError as error:
        raise VerificationError(str(error).replace(str(path), label)) from error
    info["path"] = label
    embedded = embedded_provenance(path)
    info["provenance"] = {**(_provenance(metadata) or {}), **(embedded or {})} or None
    info["provenance_in"] = "file" if embedded else "metadata" if info["provenance"] else None
    if args.verify:
        info["verified"] = True
    print(json_text(info) if args.json else _text(info))
    return EXIT_OK


def _provenance(metadata: dict[str, str]) -> dict[str, str] | None:
    from urllib.parse import unquote

    found = {name: metadata[key] for key, name in PROVENANCE.items() if key in metadata}
    if "source_key" in found:
        found["source_key"] = unquote(found["source_key"])
    return found or None


def _text(info: dict[str, Any]) -> str:
    width, height = info["tile_size"]
    quality = f", quality ~{info['quality']}" if info["quality"] else ""
    lines = [
        f"{info['path']}: {info['width']}x{info['height']}, {info['bands']} band(s), "
        f"{info['bytes']:,} bytes{' (BigTIFF)' if info['bigtiff'] else ''}",
        f"  tiles     {width}x{height}, {info['compression']}{quality}",
        f"  levels    {len(info['levels'])}: " + ", ".join(f"{w}x{h}" for w, h in info["levels"]),
    ]
    provenance = info["provenance"] or {}
    for name, value in provenance.items():
        shown = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
        lines.append(f"  {name:<9} {shown}")
    if not provenance:
        lines.append("  provenance  none recorded (not from a ptif store)")
    if info.get("verified"):
        lines.append("  verified  ok: as the worker checks before an upload")
    return "\n".join(printable(line) for line in lines)


COMMANDS = (add_info,)
