"""One recipe everywhere: what ``ptif process`` just wrote with non-default settings is current
to ``ptif mark --stale``, ``ptif reconcile`` and ``ptif watch``, whether the settings come from
the environment, from ``ptif.toml`` or from the same flags given to each command. Real commands
on folder stores, a real conversion, the output's recorded recipe read back from the store."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import pyvips
from store_helpers import Bench, folder_bench, run_ptif

from ptif.config import RECIPE_ENVIRONMENT, load_settings
from ptif.convert.profiles import PROFILES, RECIPE_SETTINGS
from ptif.queue.outputs import output_key

#: Not the default profile's: deflate tiles of 128 with a recorded resolution and a box.
SETTINGS = {"compression": "deflate", "tile_size": 128, "dpi": 300.0, "max_width": 96}
FLAGS = ("--compression", "deflate", "--tile-size", "128", "--dpi", "300", "--max-width", "96")
TOML = '[ptif]\nrecipe = {compression = "deflate", tile_size = 128, dpi = 300, max_width = 96}\n'
ENVIRONMENT = {
    "PTIF_COMPRESSION": "deflate",
    "PTIF_TILE_SIZE": "128",
    "PTIF_DPI": "300",
    "PTIF_MAX_WIDTH": "96",
}
WANTED = PROFILES["default"].recipe.replace(**SETTINGS).hash


@pytest.fixture
def bench(tmp_path: Path) -> Bench:
    bench = folder_bench(tmp_path)
    image = pyvips.Image.xyz(160, 120).extract_band(0).cast("uchar")
    bench.source.put_bytes("maps/sheet.png", image.write_to_buffer(".png"))
    return bench


def _stdout_json(bench: Bench, *args: str, env: dict[str, str]) -> dict[str, object]:
    done = run_ptif(bench, *args, env=env)
    assert done.returncode == 0, done.stderr
    body = json.loads(done.stdout.strip().splitlines()[-1])
    assert isinstance(body, dict)
    return body


def _the_others_agree(bench: Bench, env: dict[str, str], flags: tuple[str, ...]) -> None:
    marked = _stdout_json(bench, "mark", "--stale", "--json", *flags, env=env)
    assert (marked["marked"], marked["up_to_date"]) == (0, 1), "mark --stale"
    reconciled = _stdout_json(bench, "reconcile", "--dry-run", "--json", *flags, env=env)
    assert reconciled["marked"] == 0 and reconciled["outputs"] == {
        "missing": 0,
        "other-etag": 0,
        "other-recipe": 0,
        "current": 1,
        "conflict": 0,
    }, "reconcile"
    watched = _stdout_json(
        bench,
        "watch",
        "--poll",
        "--once",
        "--initial-scan",
        "--settle",
        "0",
        "--json",
        *flags,
        env=env,
    )
    assert (watched["marked"], watched["up_to_date"]) == (0, 1), "watch"


@pytest.mark.parametrize("given", ["environment", "ptif.toml", "flags"])
def test_what_process_wrote_is_current_to_mark_reconcile_and_watch(
    bench: Bench, given: str
) -> None:
    env = bench.env(**ENVIRONMENT) if given == "environment" else bench.env()
    flags = FLAGS if given == "flags" else ()
    if given == "ptif.toml":
        (bench.root / "ptif.toml").write_text(TOML)

    done = run_ptif(bench, "mark", *flags, env=env)
    assert done.returncode == 0, done.stderr
    done = run_ptif(bench, "process", "--workers", "1", *flags, env=env)
    assert done.returncode == 0, done.stderr
    output = bench.images.head(output_key("maps/sheet.png"))
    assert output is not None and output.metadata["ptif-recipe"] == WANTED

    _the_others_agree(bench, env, flags)
    # And the same commands without those settings see another recipe: the check can fail.
    if given == "ptif.toml":
        (bench.root / "ptif.toml").unlink()
    stale = _stdout_json(bench, "reconcile", "--dry-run", "--json", env=bench.env())
    assert stale["marked"] == 1


def test_every_recipe_setting_has_a_variable_read_like_the_file() -> None:
    assert set(RECIPE_ENVIRONMENT) == set(RECIPE_SETTINGS)
    environ = {RECIPE_ENVIRONMENT[name]: str(value) for name, value in SETTINGS.items()}
    from_env = load_settings(environ=environ).conversion_profile().recipe
    assert from_env.hash == WANTED


def test_a_flag_beats_only_its_own_variable_and_key(tmp_path: Path) -> None:
    toml = tmp_path / "ptif.toml"
    toml.write_text('[ptif]\nrecipe = {compression = "deflate", tile_size = 512}\n')
    settings = load_settings(
        {"recipe": {"quality": 70}},
        environ={"PTIF_TILE_SIZE": "1024"},
        config_file=toml,
    )
    assert settings.recipe == {"compression": "deflate", "tile_size": 1024, "quality": 70}


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"PTIF_COMPRESSION": "gif"}, "PTIF_COMPRESSION='gif': unknown compression 'gif'"),
        ({"PTIF_QUALITY": "high"}, "PTIF_QUALITY='high': give a whole number"),
        ({"PTIF_QUALITY": "0"}, "PTIF_QUALITY='0': quality 0 is out of range"),
        ({"PTIF_TILE_SIZE": "100"}, "PTIF_TILE_SIZE='100': tile size 100 must be a multiple"),
        ({"PTIF_DPI": "-3"}, "PTIF_DPI='-3': dpi -3.0 must be positive"),
        ({"PTIF_MAX_WIDTH": "2.5"}, "PTIF_MAX_WIDTH='2.5': give a whole number"),
    ],
)
def test_bad_recipe_variables_are_named(environ: dict[str, str], message: str) -> None:
    from ptif.errors import ConfigError

    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        load_settings(environ=environ)
