"""ptif's pyramids, read back through a real IIIF image server (IIPImage behind lighttpd)."""

from __future__ import annotations

import json
import urllib.error
from collections.abc import Iterator
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
import pyvips
from iiif_server import iiif_server, open_url, server_logs
from PIL import Image, ImageStat

from ptif.convert import ConversionResult, candidates, convert
from ptif.convert.profiles import DEFAULT_RECIPE, Recipe, get_profile

pytestmark = pytest.mark.iiif

Colour = tuple[int, int, int]

JPEG_TOLERANCE = 8
SIZE_TOLERANCE = 1
THUMBNAIL_BOX = 200


@dataclass(frozen=True)
class Case:
    width: int
    height: int
    colour: Colour
    suffix: str
    recipe: Recipe = field(default_factory=Recipe)
    #: The chroma layouts the quality floor may choose (ptif's own writer), when not all.
    chromas: tuple[str, ...] = candidates.CHROMAS

    @property
    def stem(self) -> str:
        return f"flat-{self}".replace(".", "-")

    def __str__(self) -> str:
        recipe = f"{self.recipe.compression}-{self.recipe.tile_size}"
        if self.recipe.min_quality is not None:
            recipe += "-floor-" + "-".join(self.chromas)
        return f"{self.width}x{self.height}{self.suffix}-{recipe}"


@dataclass(frozen=True)
class Made:
    case: Case
    filename: str
    result: ConversionResult


@dataclass(frozen=True)
class Server:
    base_url: str
    log_dir: Path

    def get(self, path: str) -> bytes:
        url = self.base_url + path
        try:
            with open_url(url) as response:
                return bytes(response.read())
        except urllib.error.HTTPError as error:
            problem = f"{error.code}: {error.read().decode(errors='replace')}"
        except OSError as error:
            problem = f"failed: {error}"
        pytest.fail(f"GET {url} -> {problem}\n{server_logs(self.log_dir)}")

    def info(self, filename: str) -> dict[str, Any]:
        info: dict[str, Any] = json.loads(self.get(f"{filename}/info.json"))
        return info

    def image(self, filename: str, region: str, size: str) -> Image.Image:
        image = Image.open(BytesIO(self.get(f"{filename}/{region}/{size}/0/default.jpg")))
        image.load()
        return image


RED: Colour = (255, 0, 0)
TEAL: Colour = (40, 160, 150)
CASES = (
    Case(3000, 2000, RED, ".jpg"),
    Case(1001, 777, RED, ".png"),
    Case(777, 1001, TEAL, ".png"),
    Case(200, 150, TEAL, ".png"),
    *(Case(1001, 777, TEAL, ".png", Recipe(compression=c)) for c in ("deflate", "lzw", "webp")),
    Case(3000, 2000, TEAL, ".png", Recipe(compression="none", tile_size=512)),
    Case(1001, 777, TEAL, ".jpg", Recipe(quality=75)),
    Case(3000, 2000, RED, ".jpg", get_profile("marble").resolve({})),
    # the default profile: ptif's own writer, YCbCr 4:2:0 or 4:4:4 tiles
    Case(3000, 2000, RED, ".jpg", DEFAULT_RECIPE),
    Case(777, 1001, TEAL, ".png", DEFAULT_RECIPE),
    Case(1001, 777, RED, ".png", DEFAULT_RECIPE, chromas=("444",)),
    Case(200, 150, TEAL, ".png", DEFAULT_RECIPE, chromas=("444",)),
)


def flat_image(case: Case) -> pyvips.Image:
    return (pyvips.Image.black(case.width, case.height, bands=3) + list(case.colour)).cast("uchar")


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("iiif-images")


@pytest.fixture(scope="module")
def iiif(image_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    log_dir = tmp_path_factory.mktemp("iiif-logs")
    with iiif_server(image_dir, log_dir=log_dir) as base_url:
        yield Server(base_url, log_dir)


@pytest.fixture(scope="module", params=CASES, ids=str)
def made(
    request: pytest.FixtureRequest, image_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Made:
    case: Case = request.param
    src = tmp_path_factory.mktemp("sources") / f"{case.stem}{case.suffix}"
    flat_image(case).write_to_file(str(src))
    dst = image_dir / f"{case.stem}.tif"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(candidates, "CHROMAS", case.chromas)
        result = convert(src, dst, case.recipe)
    if case.recipe.min_quality is not None:
        assert result.encoding.chroma in case.chromas, result.encoding.label
    return Made(case, dst.name, result)


def assert_colour(image: Image.Image, expected: Colour) -> None:
    mean = ImageStat.Stat(image.convert("RGB")).mean
    assert all(abs(m - e) <= JPEG_TOLERANCE for m, e in zip(mean, expected, strict=True)), (
        f"mean colour {[round(m, 1) for m in mean]} is not {expected}"
    )


def assert_size(image: Image.Image, width: int, height: int) -> None:
    assert image.format == "JPEG"
    assert image.width == width
    assert abs(image.height - height) <= SIZE_TOLERANCE, f"{image.size} is not {(width, height)}"


def edge_tile(result: ConversionResult, level: int) -> tuple[str, int, int]:
    scale = 2**level
    level_width, level_height = result.levels[level]
    column = (level_width - 1) // result.tile_size
    row = (level_height - 1) // result.tile_size
    x, y = column * result.tile_size * scale, row * result.tile_size * scale
    region = f"{x},{y},{result.width - x},{result.height - y}"
    return region, level_width - column * result.tile_size, level_height - row * result.tile_size


def test_info_reports_full_size(iiif: Server, made: Made) -> None:
    info = iiif.info(made.filename)

    assert (made.result.width, made.result.height) == (made.case.width, made.case.height)
    assert (info["width"], info["height"]) == (made.case.width, made.case.height)


def test_info_tiles_match_levels(iiif: Server, made: Made) -> None:
    [tiles] = iiif.info(made.filename)["tiles"]

    assert tiles["width"] == tiles.get("height", tiles["width"]) == made.result.tile_size
    assert tiles["scaleFactors"] == [2**i for i in range(len(made.result.levels))]


def test_levels_halve(made: Made) -> None:
    result = made.result

    assert result.levels[0] == (result.width, result.height)
    for level, (width, height) in enumerate(result.levels):
        assert abs(width - result.width / 2**level) <= 1
        assert abs(height - result.height / 2**level) <= 1


def test_info_sizes_are_levels(iiif: Server, made: Made) -> None:
    sizes = {(s["width"], s["height"]) for s in iiif.info(made.filename)["sizes"]}
    levels = set(made.result.levels)

    assert sizes <= levels
    assert levels - sizes <= {(made.result.width, made.result.height)}


def test_top_left_tile(iiif: Server, made: Made) -> None:
    width = min(made.result.tile_size, made.result.width)
    height = min(made.result.tile_size, made.result.height)

    tile = iiif.image(made.filename, f"0,0,{width},{height}", f"{width},")

    assert_size(tile, width, height)
    assert_colour(tile, made.case.colour)


def test_bottom_right_tile_at_every_level(iiif: Server, made: Made) -> None:
    for level in range(len(made.result.levels)):
        region, width, height = edge_tile(made.result, level)

        tile = iiif.image(made.filename, region, f"{width},")

        assert_size(tile, width, height)
        assert_colour(tile, made.case.colour)


def test_thumbnail(iiif: Server, made: Made) -> None:
    scale = THUMBNAIL_BOX / max(made.case.width, made.case.height)
    expected = (made.case.width * scale, made.case.height * scale)

    thumbnail = iiif.image(made.filename, "full", f"!{THUMBNAIL_BOX},{THUMBNAIL_BOX}")

    assert max(thumbnail.size) == THUMBNAIL_BOX
    assert all(
        abs(got - want) <= SIZE_TOLERANCE
        for got, want in zip(thumbnail.size, expected, strict=True)
    ), f"{thumbnail.size} is not {expected}"
    assert_colour(thumbnail, made.case.colour)


def test_full_image_at_max_size(iiif: Server, made: Made) -> None:
    image = iiif.image(made.filename, "full", "max")

    assert image.size == (made.case.width, made.case.height)
    assert_colour(image, made.case.colour)
