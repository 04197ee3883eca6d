"""Settings, loaded once at the edge: command-line flag, then environment, then ``ptif.toml``,
then the default. Every environment variable ptif reads is named in this module.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from ptif.convert.formats import READ_EXTENSIONS
from ptif.convert.limits import (
    DEFAULT_MAX_SECONDS,
    Limits,
    check_limits,
    default_max_memory,
    parse_size,
)
from ptif.convert.profiles import (
    DEFAULT_MAX_PIXELS,
    RECIPE_SETTINGS,
    Profile,
    Recipe,
    get_profile,
)
from ptif.errors import ConfigError
from ptif.queue.layout import DEFAULT_QUEUE_PREFIX, queue_prefix_problem

DEFAULT_ROOT = Path("ptif-data")
CONFIG_FILE = "ptif.toml"

#: Environment variables, by setting. The original system's names (bare bucket names) come last.
ENVIRONMENT: dict[str, tuple[str, ...]] = {
    "source": ("PTIF_SOURCE", "RBSC_BUCKET"),
    "process": ("PTIF_PROCESS", "PROCESS_BUCKET"),
    "images": ("PTIF_IMAGES", "IMAGE_BUCKET"),
    "endpoint_url": ("PTIF_ENDPOINT_URL", "AWS_ENDPOINT_URL"),
    "queue_prefix": ("PTIF_QUEUE_PREFIX",),
    "profile": ("PTIF_PROFILE",),
    "workers": ("PTIF_WORKERS",),
    "lease_seconds": ("PTIF_LEASE_SECONDS",),
    "max_attempts": ("PTIF_MAX_ATTEMPTS",),
    "min_age": ("PTIF_MIN_AGE",),
    "max_pixels": ("PTIF_MAX_PIXELS",),
    "max_memory": ("PTIF_MAX_MEMORY",),
    "max_seconds": ("PTIF_MAX_SECONDS",),
    "extensions": ("PTIF_EXTENSIONS",),
    "watch_settle": ("PTIF_WATCH_SETTLE",),
    "watch_interval": ("PTIF_WATCH_INTERVAL",),
    "images_mode": ("PTIF_IMAGES_MODE",),
}
#: Environment variables of the conversion settings, by setting (``ptif.toml``: ``[recipe]``).
RECIPE_ENVIRONMENT: dict[str, str] = {name: f"PTIF_{name.upper()}" for name in RECIPE_SETTINGS}
#: Variables holding a bare bucket name, as the original system set them.
BARE_BUCKET_VARIABLES = {"RBSC_BUCKET", "PROCESS_BUCKET", "IMAGE_BUCKET"}
CONFIG_FILE_VARIABLE = "PTIF_CONFIG"
#: Seconds ``ptif process`` keeps converting after SIGTERM before it releases what is left.
STOP_GRACE_VARIABLE = "PTIF_STOP_GRACE_SECONDS"
#: Set in AWS Lambda and ECS; ptif then logs JSON and emits CloudWatch embedded metrics.
AWS_MARKERS = ("AWS_LAMBDA_FUNCTION_NAME", "ECS_CONTAINER_METADATA_URI_V4", "AWS_EXECUTION_ENV")
#: Every variable ptif reads: the settings', the configuration file's and the AWS markers.
ENVIRONMENT_VARIABLES = (
    *(name for names in ENVIRONMENT.values() for name in names),
    *RECIPE_ENVIRONMENT.values(),
    CONFIG_FILE_VARIABLE,
    *AWS_MARKERS,
)


@dataclass(frozen=True)
class Settings:
    """Where the three stores are and how the queue and the worker behave."""

    source: str = str(DEFAULT_ROOT / "source")
    process: str = str(DEFAULT_ROOT / "process")
    images: str = str(DEFAULT_ROOT / "images")
    endpoint_url: str | None = None
    queue_prefix: str = DEFAULT_QUEUE_PREFIX
    profile: str = "default"
    recipe: dict[str, Any] = field(default_factory=dict)
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)
    lease_seconds: float = 120.0
    max_attempts: int = 5
    min_age: float = 0.0
    max_pixels: int = DEFAULT_MAX_PIXELS
    #: Bytes one conversion may hold; None: a share of the memory, divided among the workers.
    max_memory: int | None = None
    max_seconds: float = DEFAULT_MAX_SECONDS
    #: Which keys are images to queue: every format ptif reads, unless set.
    extensions: str = ",".join(READ_EXTENSIONS)
    #: ``ptif watch``: seconds a file must stay unchanged before it is queued.
    watch_settle: float = 5.0
    #: ``ptif watch``: seconds between two listings when polling.
    watch_interval: float = 30.0
    #: A folder images store: the exact mode of the pyramids it publishes (``0o644``), whatever
    #: the umask; None: 0666 less the umask, as any program's files.
    images_mode: int | None = None

    def __post_init__(self) -> None:
        problem = queue_prefix_problem(self.queue_prefix)
        if problem:
            raise ConfigError(problem)
        if self.workers < 1:
            raise ConfigError(f"workers must be at least 1, not {self.workers}")
        if not 5 <= self.lease_seconds <= 86_400:  # also refuses NaN
            raise ConfigError(f"lease seconds must be 5 to 86400, not {self.lease_seconds}")
        check_limits(self.max_pixels, self.max_memory, self.max_seconds)
        if self.max_attempts < 1:
            raise ConfigError(f"max attempts must be at least 1, not {self.max_attempts}")
        if self.watch_settle < 0:
            raise ConfigError(f"the settle time cannot be negative ({self.watch_settle})")
        if self.watch_interval <= 0:
            raise ConfigError(f"the poll interval must be positive, not {self.watch_interval}")

    def limits(self) -> Limits:
        """The budgets of each of the worker's conversions."""
        memory = self.max_memory or default_max_memory(self.workers)
        return Limits(self.max_pixels, memory, self.max_seconds)

    def conversion_profile(self) -> Profile:
        return get_profile(self.profile).with_overrides(**self.recipe)

    def extension_list(self) -> tuple[str, ...]:
        return parse_extensions(self.extensions)


def parse_mode(value: object) -> int:
    """``"0644"``, ``"644"``, ``"0o640"`` (or TOML's ``0o644``, a number) → the mode. Only read
    and write bits, and the owner's read and write among them: ptif reads back what it
    publishes, and a pyramid is no program."""
    if isinstance(value, int) and not isinstance(value, bool):
        mode = value
    else:
        text = str(value).strip().lower().removeprefix("0o")
        mode = int(text, 8) if text and set(text) <= set("01234567") else -1
    if not 0 <= mode <= 0o777 or mode & 0o111 or mode & 0o600 != 0o600:
        raise ValueError(
            f"images_mode must be an octal file mode such as 0644 or 0640 (the owner reads and "
            f"writes; no execute bits), not {value!r}"
        )
    return mode


def parse_extensions(text: str) -> tuple[str, ...]:
    """``"jpg, .TIF"`` → ``(".jpg", ".tif")``."""
    parts = (p.strip().lower() for p in text.replace(" ", ",").split(","))
    return tuple(p if p.startswith(".") else f".{p}" for p in parts if p)


def in_aws(environ: Mapping[str, str] | None = None) -> bool:
    environ = os.environ if environ is None else environ
    return any(environ.get(name) for name in AWS_MARKERS)


def load_settings(
    flags: Mapping[str, Any] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    config_file: Path | None = None,
) -> Settings:
    """Flags beat the environment, which beats the file, which beats the defaults."""
    environ = os.environ if environ is None else environ
    merged: dict[str, Any] = {}
    recipe: dict[str, Any] = {}  # merged setting by setting: a flag beats only its own variable
    for layer in (
        _from_file(_config_path(config_file, environ)),
        _from_environment(environ),
        {k: v for k, v in (flags or {}).items() if v is not None},
    ):
        recipe.update(layer.pop("recipe", None) or {})
        merged.update(layer)
    return _build({**merged, "recipe": recipe})


def setting_origin(
    name: str, *, environ: Mapping[str, str] | None = None, config_file: Path | None = None
) -> str:
    """Where :func:`load_settings` takes ``name`` from when no flag gives it: the environment
    variable that sets it, the configuration file, or ``"the default"`` (for messages)."""
    environ = os.environ if environ is None else environ
    for variable in ENVIRONMENT.get(name, ()):
        if environ.get(variable):
            return variable
    path = _config_path(config_file, environ)
    if path is not None and name in _from_file(path):
        return str(path)
    return "the default"


def _config_path(given: Path | None, environ: Mapping[str, str]) -> Path | None:
    if given is not None:
        if not given.is_file():
            raise ConfigError(f"{given}: no such configuration file")
        return given
    named = environ.get(CONFIG_FILE_VARIABLE)
    if named:
        return _config_path(Path(named), {})
    default = Path(CONFIG_FILE)
    return default if default.is_file() else None


def _from_file(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise ConfigError(f"{path}: cannot read the configuration ({error})") from error
    table = data.get("ptif", data)
    known = {f.name for f in fields(Settings)}
    unknown = sorted(set(table) - known)
    if unknown:
        raise ConfigError(f"{path}: unknown setting(s) {', '.join(unknown)}")
    recipe = table.get("recipe", {})
    if not isinstance(recipe, dict):
        raise ConfigError(f"{path}: 'recipe' must be a table of conversion settings")
    unknown = sorted(set(recipe) - set(RECIPE_SETTINGS))
    if unknown:
        raise ConfigError(
            f"{path}: unknown conversion setting(s) {', '.join(unknown)} in 'recipe'; "
            f"known: {', '.join(RECIPE_SETTINGS)}"
        )
    try:
        Recipe(**recipe)
    except ConfigError as error:
        raise ConfigError(f"{path}: in 'recipe', {error}") from error
    return dict(table)


def stop_grace_seconds(default: float, environ: Mapping[str, str] | None = None) -> float:
    """The grace period after SIGTERM: ``PTIF_STOP_GRACE_SECONDS``, else ``default``."""
    text = (os.environ if environ is None else environ).get(STOP_GRACE_VARIABLE)
    if not text:
        return default
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds < 86400:
        raise ConfigError(f"{STOP_GRACE_VARIABLE}={text!r}: give a number of seconds, 0 or more")
    return seconds


def _from_environment(environ: Mapping[str, str]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for setting, names in ENVIRONMENT.items():
        for name in names:
            value = environ.get(name)
            if value:
                found[setting] = f"s3://{value}" if name in BARE_BUCKET_VARIABLES else value
                break
    recipe = _recipe_from_environment(environ)
    if recipe:
        found["recipe"] = recipe
    return found


_RECIPE_TYPES: dict[str, tuple[Callable[[str], Any], str]] = {
    "quality": (int, "a whole number"),
    "tile_size": (int, "a whole number"),
    "dpi": (float, "a number"),
    "min_quality": (float, "a number"),
    "max_width": (int, "a whole number"),
    "max_height": (int, "a whole number"),
}


def _recipe_from_environment(environ: Mapping[str, str]) -> dict[str, Any]:
    """The conversion settings of ``PTIF_COMPRESSION``, ``PTIF_QUALITY``…, each checked."""
    recipe: dict[str, Any] = {}
    for setting, name in RECIPE_ENVIRONMENT.items():
        text = environ.get(name, "").strip()
        if not text:
            continue
        kind, wanted = _RECIPE_TYPES.get(setting, (str, "a name"))
        try:
            value: Any = kind(text.replace("_", "")) if kind is not str else text.lower()
            Recipe().replace(**{setting: value})
        except ValueError:
            raise ConfigError(f"{name}={text!r}: give {wanted}") from None
        except ConfigError as error:
            raise ConfigError(f"{name}={text!r}: {error}") from None
        recipe[setting] = value
    return recipe


_CONVERTERS: dict[str, Callable[[Any], Any]] = {
    "workers": int,
    "lease_seconds": float,
    "max_attempts": int,
    "min_age": float,
    "max_pixels": int,
    "max_memory": parse_size,
    "max_seconds": float,
    "watch_settle": float,
    "watch_interval": float,
}


def _build(values: dict[str, Any]) -> Settings:
    typed = dict(values)
    for name, kind in _CONVERTERS.items():
        if name in typed:
            value = typed[name]
            try:
                # TOML gives true and 1.9 as they are: int() would make them 1 (every image
                # over a pixel budget of 1), so a setting is a number, and a whole one for int.
                if isinstance(value, bool) or (
                    kind is int and isinstance(value, float) and not value.is_integer()
                ):
                    raise TypeError(name)
                typed[name] = kind(value)
            except (TypeError, ValueError):
                kind_of = "a size like 2G or 512M" if kind is parse_size else "a number"
                raise ConfigError(f"{name} must be {kind_of}, not {typed[name]!r}") from None
    if typed.get("images_mode") is not None:
        try:
            typed["images_mode"] = parse_mode(typed["images_mode"])
        except ValueError as error:
            raise ConfigError(str(error)) from None
    if isinstance(typed.get("extensions"), list | tuple):
        typed["extensions"] = ",".join(typed["extensions"])
    settings = Settings(**typed)
    settings.conversion_profile()
    return settings
