"""Settings: a flag beats the environment (PTIF_* and the original system's bare bucket names),
which beats ptif.toml, which beats the defaults; bad values are refused with a message that
names the setting."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest

from ptif.config import ENVIRONMENT_VARIABLES, in_aws, load_settings, parse_extensions
from ptif.convert.formats import FORMATS
from ptif.errors import ConfigError

TOML = """
[ptif]
source = "s3://file-source"
process = "/file/process"
workers = 3
lease_seconds = 30
extensions = ["jpg", "png"]
"""


@pytest.fixture(autouse=True)
def elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder with no ptif.toml, so the repository's own files cannot leak in."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write_toml(folder: Path, text: str = TOML, name: str = "ptif.toml") -> Path:
    path = folder / name
    path.write_text(text)
    return path


def test_defaults_are_three_local_folders() -> None:
    settings = load_settings(environ={})
    assert (settings.source, settings.process, settings.images) == (
        "ptif-data/source",
        "ptif-data/process",
        "ptif-data/images",
    )
    assert settings.queue_prefix == "rbsc/" and settings.profile == "default"
    assert settings.workers == (os.cpu_count() or 1) and settings.endpoint_url is None
    assert settings.lease_seconds >= 5 and settings.max_attempts >= 1


def test_default_extensions_are_every_format_read(elsewhere: Path) -> None:
    """One list for mark, watch, reconcile and the Lambda: every extension 'ptif formats' lists."""
    taken = load_settings(environ={}).extension_list()
    assert taken == tuple(e for fmt in FORMATS.values() for e in fmt.extensions)
    assert {".jp2", ".webp", ".heic", ".gif", ".avif", ".jpg", ".pdf"} <= set(taken)


def test_file_beats_defaults(elsewhere: Path) -> None:
    write_toml(elsewhere)
    settings = load_settings(environ={})
    assert (settings.source, settings.process, settings.images) == (
        "s3://file-source",
        "/file/process",
        "ptif-data/images",
    )
    assert (settings.workers, settings.lease_seconds) == (3, 30.0)
    assert settings.extension_list() == (".jpg", ".png")


def test_environment_beats_file(elsewhere: Path) -> None:
    write_toml(elsewhere)
    environ = {"PTIF_SOURCE": "/env/source", "PTIF_WORKERS": "5", "PTIF_LEASE_SECONDS": "9"}
    settings = load_settings(environ=environ)
    assert (settings.source, settings.process) == ("/env/source", "/file/process")
    assert (settings.workers, settings.lease_seconds) == (5, 9.0)


def test_flag_beats_environment(elsewhere: Path) -> None:
    write_toml(elsewhere)
    environ = {"PTIF_SOURCE": "/env/source", "PTIF_WORKERS": "5"}
    flags: dict[str, Any] = {"source": "/flag/source", "workers": 7, "process": None}
    settings = load_settings(flags, environ=environ)
    assert (settings.source, settings.process, settings.workers) == (
        "/flag/source",
        "/file/process",
        7,
    )


def test_original_bucket_variables_are_bare_names() -> None:
    environ = {"RBSC_BUCKET": "rbsc", "PROCESS_BUCKET": "rbsc-process", "IMAGE_BUCKET": "iiif"}
    settings = load_settings(environ=environ)
    assert (settings.source, settings.process, settings.images) == (
        "s3://rbsc",
        "s3://rbsc-process",
        "s3://iiif",
    )


def test_ptif_variables_beat_the_original_names(elsewhere: Path) -> None:
    write_toml(elsewhere, '[ptif]\nimages = "/file/images"\n')
    environ = {"PTIF_SOURCE": "/p/source", "RBSC_BUCKET": "rbsc", "IMAGE_BUCKET": "iiif"}
    settings = load_settings({"images": None}, environ=environ)
    assert (settings.source, settings.images) == ("/p/source", "s3://iiif")


def test_endpoint_from_ptif_then_aws_variable() -> None:
    aws = {"AWS_ENDPOINT_URL": "http://127.0.0.1:1"}
    assert load_settings(environ=aws).endpoint_url == "http://127.0.0.1:1"
    both = aws | {"PTIF_ENDPOINT_URL": "http://127.0.0.1:2"}
    assert load_settings(environ=both).endpoint_url == "http://127.0.0.1:2"


def test_empty_variables_are_unset() -> None:
    settings = load_settings(environ={"PTIF_SOURCE": "", "RBSC_BUCKET": "rbsc"})
    assert settings.source == "s3://rbsc"


def test_config_file_by_variable_and_argument(elsewhere: Path) -> None:
    (elsewhere / "conf").mkdir()
    named = write_toml(elsewhere / "conf", 'queue_prefix = "jobs/"\n', "custom.toml")
    assert load_settings(environ={"PTIF_CONFIG": str(named)}).queue_prefix == "jobs/"
    assert load_settings(environ={}, config_file=named).queue_prefix == "jobs/"


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"PTIF_WORKERS": "0"}, "workers must be at least 1, not 0"),
        ({"PTIF_WORKERS": "two"}, "PTIF_WORKERS=two: workers must be a whole number"),
        ({"PTIF_WORKERS": "2.5"}, "PTIF_WORKERS=2.5: workers must be a whole number"),
        ({"PTIF_LEASE_SECONDS": "4"}, "=4: lease_seconds must be 5 to 86400 seconds"),
        ({"PTIF_LEASE_SECONDS": "soon"}, "lease_seconds must be a number"),
        ({"PTIF_MAX_ATTEMPTS": "0"}, "max_attempts must be at least 1"),
        ({"PTIF_MIN_AGE": "old"}, "min_age must be a number"),
        ({"PTIF_MAX_PIXELS": "lots"}, "max_pixels must be a whole number"),
        ({"PTIF_QUEUE_PREFIX": "rbsc"}, "queue prefix 'rbsc' must end with '/'"),
        ({"PTIF_QUEUE_PREFIX": "/rbsc/"}, "queue prefix '/rbsc/'"),
        ({"PTIF_QUEUE_PREFIX": "failed/"}, "queue prefix 'failed/' overlaps .* failed/ folder"),
        ({"PTIF_QUEUE_PREFIX": "claims/rbsc/"}, "overlaps the process store's claims/ folder"),
        ({"PTIF_QUEUE_PREFIX": ".ptif-q/"}, "starts with '.ptif-'"),
        ({"PTIF_MAX_MEMORY": "lots"}, "PTIF_MAX_MEMORY=lots: max_memory must be a size like 2G"),
        ({"PTIF_MAX_MEMORY": "1M"}, "max memory must be at least 256 MiB, not 1 MiB"),
        ({"PTIF_MAX_SECONDS": "0"}, "max seconds must be 1 to 86400, not 0"),
        ({"PTIF_PROFILE": "fancy"}, "unknown profile 'fancy'"),
    ],
)
def test_bad_environment_values(environ: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(environ=environ)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[ptif]\nbogus = 1\nworkerz = 2\n", r"ptif.toml: unknown setting\(s\) bogus, workerz"),
        ("[ptif\nworkers = 1\n", "ptif.toml: cannot read the configuration"),
        ("[ptif]\nworkers = 0\n", "workers must be at least 1"),
        (
            '[ptif]\nrecipe = {compression = "gif"}\n',
            "ptif.toml: in 'recipe', unknown compression 'gif'",
        ),
        (
            '[ptif]\nrecipe = {colour = "grey"}\n',
            r"unknown conversion setting\(s\) colour in 'recipe'",
        ),
        ('[ptif]\nrecipe = {quality = "high"}\n', "quality must be a whole number, not 'high'"),
        ("[ptif]\nrecipe = {dpi = true}\n", "dpi must be a number, not True"),
        ("[ptif]\nrecipe = {max_width = 2.5}\n", "max-width must be a whole number, not 2.5"),
        ('[ptif]\nrecipe = "marble"\n', "'recipe' must be a table"),
        # int(true) and int(1.9) are 1: a pixel budget of 1 failed every image for ever.
        ("[ptif]\nmax_pixels = true\n", "max_pixels = True: max_pixels must be a whole number"),
        ("[ptif]\nmax_pixels = 1.9\n", "max_pixels = 1.9: max_pixels must be a whole number"),
        ("[ptif]\nmax_seconds = true\n", "max_seconds = True: max_seconds must be a number"),
        ("[ptif]\nworkers = true\n", "workers = True: workers must be a whole number"),
        ("[ptif]\nmax_memory = true\n", "max_memory = True: max_memory must be a size like 2G"),
    ],
)
def test_bad_files(elsewhere: Path, text: str, message: str) -> None:
    write_toml(elsewhere, text)
    with pytest.raises(ConfigError, match=message):
        load_settings(environ={})


def test_whole_floats_are_whole_numbers(elsewhere: Path) -> None:
    write_toml(elsewhere, "[ptif]\nmax_pixels = 1e9\nworkers = 3.0\nmax_seconds = 20\n")
    settings = load_settings(environ={})
    assert (settings.max_pixels, settings.workers, settings.max_seconds) == (10**9, 3, 20.0)


def test_missing_config_file_is_named(elsewhere: Path) -> None:
    missing = elsewhere / "nowhere.toml"
    with pytest.raises(ConfigError, match=f"{missing}: no such configuration file"):
        load_settings(environ={"PTIF_CONFIG": str(missing)})
    with pytest.raises(ConfigError, match="no such configuration file"):
        load_settings(environ={}, config_file=missing)


@pytest.mark.parametrize("value", ["nan", "inf"])
def test_lease_seconds_must_be_finite(value: str) -> None:
    with pytest.raises(ConfigError, match="lease"):
        load_settings(environ={"PTIF_LEASE_SECONDS": value})


def test_max_pixels_must_be_positive() -> None:
    with pytest.raises(ConfigError, match=r"max.pixels"):
        load_settings(environ={"PTIF_MAX_PIXELS": "-1"})


@pytest.mark.parametrize(
    ("text", "extensions"),
    [("jpg, .TIF", (".jpg", ".tif")), ("png jpeg", (".png", ".jpeg")), (",,", ())],
)
def test_parse_extensions(text: str, extensions: tuple[str, ...]) -> None:
    assert parse_extensions(text) == extensions


def test_in_aws() -> None:
    assert not in_aws({})
    assert in_aws({"AWS_LAMBDA_FUNCTION_NAME": "ptif-intake"})
    assert in_aws({"ECS_CONTAINER_METADATA_URI_V4": "http://169.254.170.2/v4/x"})


def test_every_variable_ptif_reads_is_in_the_one_list() -> None:
    """The tests clear ENVIRONMENT_VARIABLES so the developer's shell cannot leak in: a variable
    read anywhere else in ptif must be in it too."""
    src = Path(__file__).parents[1] / "src" / "ptif"
    read = re.compile(r"""(?:environ\.get|environ\[|getenv)\(?\s*["']([A-Z][A-Z0-9_]*)["']""")
    found = {name for path in src.rglob("*.py") for name in read.findall(path.read_text())}
    assert found, "the pattern no longer matches how ptif reads its environment"
    # PATH is not a setting: decoder children get it to find Ghostscript.
    assert found - {"PATH"} <= set(ENVIRONMENT_VARIABLES)
    assert "PTIF_SOURCE" in ENVIRONMENT_VARIABLES and "RBSC_BUCKET" in ENVIRONMENT_VARIABLES


def test_switches_of_the_recipe_read_from_the_environment() -> None:
    environ = {"PTIF_ALL_PAGES": "true", "PTIF_KEEP_METADATA": "off"}
    recipe = load_settings(environ=environ).conversion_profile().recipe
    assert (recipe.all_pages, recipe.keep_metadata) == (True, False)
    with pytest.raises(ConfigError, match="PTIF_KEEP_METADATA='maybe': give true or false"):
        load_settings(environ={"PTIF_KEEP_METADATA": "maybe"})
