"""ptif's pyramids served by serverless-iiif's image core, the npm package ``iiif-processor``
(pinned in tests/iiif_processor/package.json, installed by ``make test`` with ``npm ci``), fed the
dimensions serverless-iiif derives from each output's store metadata (tests/iiif_processor/
check.mjs). A metadata value the file does not match shows here as a failed request: a level
the file lacks ("TIFF does not contain page N"), or an image of the wrong size."""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pyvips
from PIL import Image, ImageStat
from store_helpers import folder_bench, put_source, queue

from ptif.convert.iiif import PAGES, TILE_SIZE
from ptif.convert.pyramid import expected_levels
from ptif.queue.outputs import output_key

pytestmark = pytest.mark.iiif

HERE = Path(__file__).parent / "iiif_processor"
SCRIPT = HERE / "check.mjs"
JPEG_TOLERANCE = 8
Colour = tuple[int, int, int]


@dataclass(frozen=True)
class Case:
    key: str
    width: int
    height: int
    colour: Colour
    profile: str = "default"


CASES = (
    Case("a/wide.jpg", 3000, 2000, (255, 0, 0)),
    Case("a/odd.png", 1001, 777, (40, 160, 150)),
    Case("a/tall.png", 777, 1001, (40, 160, 150)),
    Case("a/small.png", 200, 150, (40, 160, 150)),
    Case("m/map.jpg", 5000, 3000, (255, 0, 0), "marble"),  # 4000x2400 in 512 tiles
)


@dataclass(frozen=True)
class Output:
    case: Case
    path: Path
    metadata: dict[str, str]

    @property
    def levels(self) -> tuple[tuple[int, int], ...]:
        width, height = int(self.metadata["iiif-width"]), int(self.metadata["iiif-height"])
        return expected_levels(width, height, int(self.metadata[TILE_SIZE]))


def require_node() -> None:
    missing = [tool for tool in ("node", "npm") if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"the iiif-processor test needs {' and '.join(missing)} (Node.js 20 or later)")
    if not (HERE / "node_modules" / "iiif-processor").is_dir():
        done = subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund", "--prefix", str(HERE)],
            capture_output=True, text=True, timeout=600, check=False,
        )  # fmt: skip
        assert done.returncode == 0, f"npm ci in {HERE} failed:\n{done.stderr[-2000:]}"


def flat(case: Case) -> bytes:
    image = (pyvips.Image.black(case.width, case.height, bands=3) + list(case.colour)).cast("uchar")
    return bytes(image.write_to_buffer(Path(case.key).suffix))


@pytest.fixture(scope="module")
def outputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Output]:
    """Each case through the worker into a folder images store; the file and its metadata."""
    require_node()
    bench = folder_bench(tmp_path_factory.mktemp("processor-stores"))
    for profile in sorted({case.profile for case in CASES}):
        cases = [case for case in CASES if case.profile == profile]
        for case in cases:
            put_source(bench.source, case.key, flat(case))
            queue(bench, case.key)
        assert sorted(bench.run(profile=profile).converted) == sorted(c.key for c in cases)
    folder = tmp_path_factory.mktemp("processor-outputs")
    found = {}
    for case in CASES:
        path = folder / Path(output_key(case.key)).name
        info = bench.images.get_file(output_key(case.key), path)
        found[case.key] = Output(case, path, dict(info.metadata))
    return found


def serve(output: Output, requests: list[str], folder: Path, **metadata: str) -> dict[str, Any]:
    """Run check.mjs on ``output`` with its metadata (``metadata`` changes some values)."""
    folder.mkdir(parents=True, exist_ok=True)
    given = {"file": str(output.path), "metadata": {**output.metadata, **metadata},
             "requests": requests, "out": str(folder)}  # fmt: skip
    done = subprocess.run(
        ["node", str(SCRIPT)], input=json.dumps(given), capture_output=True, text=True,
        timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    answer: dict[str, Any] = json.loads(done.stdout)
    return answer


def image(response: dict[str, Any]) -> Image.Image:
    assert response["type"] == "content", response
    picture = Image.open(response["body"])
    picture.load()
    return picture


def assert_colour(picture: Image.Image, expected: Colour, label: str) -> None:
    mean = ImageStat.Stat(picture.convert("RGB")).mean
    assert all(abs(m - e) <= JPEG_TOLERANCE for m, e in zip(mean, expected, strict=True)), (
        f"{label}: mean colour {[round(m, 1) for m in mean]} is not {expected}"
    )


def level_requests(output: Output) -> list[tuple[str, tuple[int, int]]]:
    """Every level whole at its own size, and its bottom-right tile, with the size each gives."""
    tile = int(output.metadata[TILE_SIZE])
    full_width, full_height = output.levels[0]
    requests = []
    for number, (width, height) in enumerate(output.levels):
        requests.append((f"full/{width},{height}/0/default.jpg", (width, height)))
        scale = 2**number
        column, row = (width - 1) // tile, (height - 1) // tile
        x, y = column * tile * scale, row * tile * scale
        size = (width - column * tile, height - row * tile)
        region = f"{x},{y},{full_width - x},{full_height - y}"
        requests.append((f"{region}/{size[0]},{size[1]}/0/default.jpg", size))
    return requests


@pytest.mark.parametrize("key", [case.key for case in CASES])
def test_info_json_from_the_metadata_matches_the_file(
    outputs: dict[str, Output], key: str, tmp_path: Path
) -> None:
    output = outputs[key]
    answer = serve(output, ["info.json"], tmp_path)
    [response] = answer["responses"]
    assert response["type"] == "content", response
    info = json.loads(Path(response["body"]).read_text())
    assert (info["width"], info["height"]) == output.levels[0]
    assert [tuple(d.values()) for d in answer["dimensions"]] == list(output.levels)
    geometry = answer["geometry"]  # what serverless-iiif 8 would hand iiif-processor 8
    assert [tuple(s.values()) for s in geometry["sizes"]] == list(output.levels)
    assert geometry["tileWidth"] == geometry["tileHeight"] == int(output.metadata[TILE_SIZE])
    for size in info["sizes"]:  # every size it offers is served at exactly that size
        [shown] = serve(output, [f"full/{size['width']},{size['height']}/0/default.jpg"],
                        tmp_path / "sizes")["responses"]  # fmt: skip
        assert image(shown).size == (size["width"], size["height"])
    [tiles] = info["tiles"]
    assert len(tiles["scaleFactors"]) == len(info["sizes"])


@pytest.mark.parametrize("key", [case.key for case in CASES])
def test_every_level_and_a_tile_of_each_render(
    outputs: dict[str, Output], key: str, tmp_path: Path
) -> None:
    output = outputs[key]
    requests = level_requests(output)
    answer = serve(output, [request for request, _ in requests], tmp_path)
    assert len(answer["dimensions"]) == int(output.metadata[PAGES]) == len(output.levels)
    for (request, size), response in zip(requests, answer["responses"], strict=True):
        picture = image(response)
        assert picture.size == size, request
        assert_colour(picture, output.case.colour, request)


def test_a_page_count_the_file_does_not_have_fails(
    outputs: dict[str, Output], tmp_path: Path
) -> None:
    """The check can fail: one level more than the file holds sends the smallest request to a
    page that is not there, as serverless-iiif did with wrong metadata."""
    output = outputs["a/odd.png"]
    pages = int(output.metadata[PAGES])
    smallest = expected_levels(*output.levels[0], 1)[pages]  # the level one past the last
    request = f"full/{smallest[0]},{smallest[1]}/0/default.jpg"
    [response] = serve(output, [request], tmp_path, pages=str(pages + 1))["responses"]
    assert response["type"] == "error" and "page" in response["message"].lower(), response
