"""What an output says about itself: the IIIF keys serverless-iiif reads instead of opening the
file (equal to what the file holds, as an independent reader sees it), in the store's metadata
on S3 and on a folder alike."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import pyvips
import tifffile
from corpus import Corpus, jpeg
from store_helpers import Bench, keys, put_source, queue, run_ptif

import ptif
from ptif.convert import convert
from ptif.convert.embedded import MAX_CARRIED
from ptif.convert.iiif import BARE, HEIGHT, PAGES, TILE_HEIGHT, TILE_SIZE, TILE_WIDTH, WIDTH
from ptif.convert.profiles import PROFILES


def file_geometry(path: Path) -> dict[str, str]:
    """The IIIF keys of the TIFF at ``path`` as tifffile reads it: the first directory's size
    and tiles, and how many directories the file has."""
    with tifffile.TiffFile(path) as tif:
        first = tif.pages.first
        pages = len(tif.pages)
        return {
            WIDTH: str(first.imagewidth),
            HEIGHT: str(first.imagelength),
            PAGES: str(pages),
            TILE_SIZE: str(first.tilewidth),
        }


def outputs(bench: Bench, folder: Path) -> dict[str, tuple[Path, dict[str, str]]]:
    found = {}
    for key in keys(bench.images):
        path = folder / key.replace("/", "_")
        found[key] = (path, dict(bench.images.get_file(key, path).metadata))
    return found


def assert_iiif_keys(path: Path, metadata: dict[str, str]) -> None:
    expected = file_geometry(path)
    assert {k: metadata.get(k) for k in expected} == expected, path.name
    assert TILE_WIDTH not in metadata and TILE_HEIGHT not in metadata
    for key, bare in BARE.items():  # serverless-iiif reads the bare name first
        assert metadata[bare] == metadata[key], (path.name, bare)


def test_every_output_and_page_records_its_own_levels_and_tiles(
    bench: Bench, corpus: Corpus, tmp_path: Path
) -> None:
    put_source(bench.source, "a/wide.jpg", jpeg(1100, 300, 1))
    put_source(bench.source, "a/tiny.jpg", jpeg(90, 60, 2))
    put_source(bench.source, "books/three.tif", corpus.sample("tiff_three_pages").path.read_bytes())
    for key in ("a/wide.jpg", "a/tiny.jpg", "books/three.tif"):
        queue(bench, key)
    report = bench.run(recipe={"all_pages": True})
    assert sorted(report.converted) == ["a/tiny.jpg", "a/wide.jpg", "books/three.tif"]
    found = outputs(bench, tmp_path)
    assert sorted(found) == [
        "a/tiny.tif", "a/wide.tif", "books/three-p2.tif", "books/three-p3.tif", "books/three.tif"
    ]  # fmt: skip
    for path, metadata in found.values():
        assert_iiif_keys(path, metadata)
    pages = {key: found[key][1][PAGES] for key in found}
    assert pages == {
        "a/tiny.tif": "1", "a/wide.tif": "4",  # 1100x300 down to 137x37
        "books/three.tif": "2", "books/three-p2.tif": "2", "books/three-p3.tif": "1",
    }  # fmt: skip


def test_marble_outputs_record_their_512_tiles(bench: Bench, tmp_path: Path) -> None:
    put_source(bench.source, "m/scan.jpg", jpeg(1300, 700, 3))
    queue(bench, "m/scan.jpg")
    assert bench.run(profile="marble").converted == ["m/scan.jpg"]
    [(path, metadata)] = outputs(bench, tmp_path).values()
    assert_iiif_keys(path, metadata)
    assert (metadata[TILE_SIZE], metadata[PAGES]) == ("512", "3")  # 1300, 650, 325 wide
    assert metadata["ptif-recipe"] == PROFILES["marble"].recipe.hash  # today's keys stay


# provenance inside the file ------------------------------------------------------------------

RIGHTS = (
    b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><dc:rights>CC BY 4.0, Rare Books</dc:rights></x:xmpmeta>'
)


def with_xmp(width: int, height: int, xmp: bytes, suffix: str = ".jpg") -> bytes:
    """A JPEG carrying ``xmp`` (made here: ptif has blocked libvips's buffer loaders)."""
    image = (pyvips.Image.black(width, height, bands=3) + [90, 120, 60]).cast("uchar").copy()
    image.set_type(pyvips.GValue.blob_type, "xmp-data", xmp)
    return bytes(image.write_to_buffer(suffix))


def tiffinfo(path: Path) -> str:
    if shutil.which("tiffinfo") is None:
        pytest.skip("tiffinfo is missing; install libtiff-tools (scripts/system-deps.sh)")
    done = subprocess.run(["tiffinfo", str(path)], capture_output=True, text=True, check=True)
    return done.stdout.split("=== TIFF directory 1 ===")[0]  # the first directory


def description(first_directory: str) -> dict[str, Any]:
    [line] = [line for line in first_directory.splitlines() if "ImageDescription:" in line]
    body: dict[str, Any] = json.loads(line.split("ImageDescription:", 1)[1])
    return body


@pytest.mark.parametrize("profile", ["default", "marble"])
def test_the_first_directory_names_source_recipe_encoding_and_version(
    bench: Bench, tmp_path: Path, profile: str
) -> None:
    key = "fonds/lettre d'été.jpg"
    etag = put_source(bench.source, key, with_xmp(700, 300, RIGHTS))
    queue(bench, key)
    assert bench.run(profile=profile).converted == [key]
    [(path, metadata)] = outputs(bench, tmp_path).values()
    first = tiffinfo(path)
    recipe = PROFILES[profile].recipe
    embedded = description(first)
    assert embedded["source_key"] == key and embedded["source_etag"] == etag
    assert embedded["recipe"] == recipe.hash == metadata["ptif-recipe"]
    assert embedded["settings"] == recipe.settings()
    assert embedded["encoding"]["compression"] == recipe.compression
    if recipe.min_quality is None:
        assert embedded["encoding"].get("Q") == (
            recipe.quality if recipe.compression == "jpeg" else None
        )
    else:  # the floor chose this image's encoding: the file says which, as the store does
        chosen = metadata["ptif-encoding"]
        assert embedded["encoding"]["tiles"] == chosen
        assert chosen == f"jpeg-q{embedded['encoding']['Q']}-{chosen.rsplit('-')[-1]}"
    assert embedded["ptif"] == ptif.__version__ == metadata["ptif-version"]
    assert "ICC Profile: <present>" in first
    assert ("dc:rights>CC BY 4.0" in first) is (profile == "default"), first
    copy = tmp_path / "copied.tif"  # a plain copy: no store metadata, no extended attribute
    shutil.copyfile(path, copy)
    done = run_ptif(bench, "info", "--json", str(copy))
    shown = json.loads(done.stdout)
    assert shown["provenance_in"] == "file"
    assert shown["provenance"]["source_key"] == key and shown["provenance"]["source_etag"] == etag


def test_a_huge_xmp_block_is_left_out_with_a_warning(tmp_path: Path) -> None:
    padding = b"<!-- " + b"x" * (MAX_CARRIED + 1) + b" -->"
    src = tmp_path / "bloated.tif"  # a JPEG holds at most 64 KB of XMP; a TIFF any amount
    src.write_bytes(with_xmp(300, 200, RIGHTS[:-13] + padding + RIGHTS[-13:], ".tif"))
    result = convert(src, tmp_path / "bloated-out.tif")
    assert any("XMP" in warning and "left out" in warning for warning in result.warnings)
    first = tiffinfo(tmp_path / "bloated-out.tif")
    assert "XMLPacket" not in first and "ImageDescription" in first
    small = tmp_path / "small.jpg"
    small.write_bytes(with_xmp(300, 200, RIGHTS))
    convert(small, tmp_path / "small.tif")
    assert "CC BY 4.0" in tiffinfo(tmp_path / "small.tif")
