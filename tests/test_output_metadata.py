"""What an output says about itself: the IIIF keys serverless-iiif reads instead of opening the
file (equal to what the file holds, as an independent reader sees it), in the store's metadata
on S3 and on a folder alike."""

from __future__ import annotations

from pathlib import Path

import tifffile
from corpus import Corpus, jpeg
from store_helpers import Bench, keys, put_source, queue

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
