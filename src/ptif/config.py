"""Settings, loaded once at the edge: command-line flag, then environment, then ``ptif.toml``,
then the default. Every environment variable ptif reads is named in this module.
"""

from __future__ import annotations

import math
import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ptif.convert.cores import available as _cores
from ptif.convert.formats import READ_EXTENSIONS
from ptif.convert.limits import (
    DEFAULT_MAX_SECONDS,
    DEFAULT_MAX_SOURCE,
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
    "max_source_size": ("PTIF_MAX_SOURCE_SIZE",),
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
#: The backlog publisher's CloudWatch namespace and dimensions (``Stack=ptif,Queue=rbsc/``).
METRICS_NAMESPACE_VARIABLE = "PTIF_METRICS_NAMESPACE"
METRICS_DIMENSIONS_VARIABLE = "PTIF_METRICS_DIMENSIONS"
#: Set in AWS Lambda and ECS; ptif then logs JSON and emits CloudWatch embedded metrics.
AWS_MARKERS = ("AWS_LAMBDA_FUNCTION_NAME", "ECS_CONTAINER_METADATA_URI_V4", "AWS_EXECUTION_ENV")
#: Every variable ptif reads: the settings', the configuration file's and the AWS markers.
ENVIRONMENT_VARIABLES = (
    *(name for names in ENVIRONMENT.values() for name in names),
    *RECIPE_ENVIRONMENT.values(),
    CONFIG_FILE_VARIABLE,
    METRICS_NAMESPACE_VARIABLE,
    METRICS_DIMENSIONS_VARIABLE,
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
    workers: int = field(default_factory=_cores)
    lease_seconds: float = 120.0
    max_attempts: int = 5
    min_age: float = 0.0
    max_pixels: int = DEFAULT_MAX_PIXELS
    #: Bytes one conversion may hold; None: a share of the memory, divided among the workers.
    max_memory: int | None = None
    max_seconds: float = DEFAULT_MAX_SECONDS
    #: Bytes a source may have; a bigger one is ``too-large`` before it is downloaded.
    max_source_size: int = DEFAULT_MAX_SOURCE
    #: Which keys are images to queue: every format ptif reads, unless set.
    extensions: str = ",".join(READ_EXTENSIONS)
    #: ``ptif watch``: seconds a file must stay unchanged before it is queued.
    watch_settle: float = 5.0
    #: ``ptif watch``: seconds between two listings when polling.
    watch_interval: float = 30.0
    #: A folder images store: the exact mode of the pyramids it publishes (``0o644``), whatever
    #: the umask; None: 0666 less the umask, as any program's files.
    images_mode: int | None = None
    #: Where each setting that was given came from, as an error message names it:
    #: ``--min-age -5``, ``PTIF_MIN_AGE=-5``, ``ptif.toml: min_age = -5``.
    origins: dict[str, str] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        for name in (*_URL_SETTINGS, "endpoint_url", "queue_prefix", *_RANGES):
            problem = _problem(name, getattr(self, name))
            if problem:
                raise ConfigError(f"{self.origin(name)}: {problem}")
        try:
            check_limits(self.max_pixels, self.max_memory, self.max_seconds, self.max_source_size)
        except ConfigError as error:
            given = [self.origins[n] for n in _LIMITS if n in self.origins]
            raise ConfigError(f"{'; '.join(given) or 'the limits'}: {error}") from error

    def origin(self, name: str) -> str:
        """Where setting ``name`` came from, for a message: its flag, variable or file."""
        return self.origins.get(name) or f"{name} = {getattr(self, name)!r}"

    def limits(self) -> Limits:
        """The budgets of each of the worker's conversions."""
        memory = self.max_memory or default_max_memory(self.workers)
        return Limits(self.max_pixels, memory, self.max_seconds, self.max_source_size)

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


_URL_SETTINGS = ("source", "process", "images")
_LIMITS = ("max_pixels", "max_memory", "max_seconds", "max_source_size")


def _finite(value: float) -> bool:
    return math.isfinite(value)


#: Range checks of the numbers, by setting: the test, and what a message says it must be.
_RANGES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "workers": (lambda v: v >= 1, "at least 1"),
    "lease_seconds": (lambda v: 5 <= v <= 86_400, "5 to 86400 seconds"),
    "max_attempts": (lambda v: v >= 1, "at least 1"),
    "min_age": (lambda v: _finite(v) and v >= 0, "0 seconds or more"),
    "watch_settle": (lambda v: _finite(v) and v >= 0, "0 seconds or more"),
    "watch_interval": (lambda v: _finite(v) and v > 0, "more than 0 seconds"),
}


def _problem(name: str, value: Any) -> str | None:
    """What is wrong with ``value`` for setting ``name``, or ``None``."""
    if name in _URL_SETTINGS:
        from ptif.stores import check_store_url

        try:
            check_store_url(value)
        except ConfigError as error:
            return str(error).removeprefix(f"{value.strip()}: ")
        return None
    if name == "endpoint_url":
        return endpoint_problem(value) if value is not None else None
    if name == "queue_prefix":
        return queue_prefix_problem(value)
    valid, wanted = _RANGES[name]
    return None if valid(value) else f"{name} must be {wanted}, not {value!r}"


def endpoint_problem(url: str) -> str | None:
    """Why ``url`` is not an S3 endpoint (``http(s)://host[:port][/path]``), or ``None``."""
    parts = urlsplit(url)
    try:
        port_ok = parts.port is None or 0 < parts.port < 65536
    except ValueError:
        port_ok = False
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname or not port_ok:
        return f"{url!r} is not an endpoint URL; give http(s)://host[:port], as http://minio:9000"
    if parts.query or parts.fragment or parts.username or parts.password:
        return f"{url!r}: an endpoint URL takes no query, fragment or credentials"
    return None


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
    origins: dict[str, str] = {}
    # The recipe is merged setting by setting: a flag beats only its own variable or file key.
    recipe: dict[str, Any] = {}
    path = _config_path(config_file, environ)
    from_file = _from_file(path)
    for name, value in from_file.items():
        origins[name] = f"{path}: {name} = {value!r}"
    recipe.update(from_file.pop("recipe", None) or {})
    merged.update(from_file)
    from_environment = _recipe_from_environment(environ)
    if from_environment:
        recipe.update(from_environment)
        origins["recipe"] = " ".join(
            f"{RECIPE_ENVIRONMENT[name]}={value}" for name, value in from_environment.items()
        )
    for name, (variable, value) in _from_environment(environ).items():
        merged[name] = f"s3://{value}" if variable in BARE_BUCKET_VARIABLES else value
        origins[name] = f"{variable}={value}"
    for name, value in (flags or {}).items():
        if name == "recipe":
            recipe.update(value or {})
            if value:
                origins[name] = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in value.items())
        elif value is not None:
            merged[name] = value
            flag = FLAGS.get(name, "--" + name.replace("_", "-"))
            # argparse has parsed it (2G is 2147483648 by now): the message gives the value
            origins[name] = f"{flag} {value}" if isinstance(value, str) else flag
    return _build({**merged, "recipe": recipe}, origins)


#: The command-line flag of each setting whose flag is not its name with dashes.
FLAGS = {
    "extensions": "--only-ext",
    "watch_settle": "--settle",
    "watch_interval": "--interval",
    "max_source_size": "--max-source-size",
}


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
    named = environ.get(CONFIG_FILE_VARIABLE)
    if given is None and named:
        given, flag = Path(named), f"{CONFIG_FILE_VARIABLE}="
    else:
        flag = "--config "
    if given is not None:
        if not given.is_file():
            raise ConfigError(f"{flag}{given}: no such configuration file")
        return given
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
    known = {f.name for f in fields(Settings)} - {"origins"}
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


def _from_environment(environ: Mapping[str, str]) -> dict[str, tuple[str, str]]:
    """Each setting given in the environment: the variable that gave it, and its value."""
    found: dict[str, tuple[str, str]] = {}
    for setting, names in ENVIRONMENT.items():
        for name in names:
            value = environ.get(name)
            if value:
                found[setting] = (name, value)
                break
    return found


_BOOLEANS = {"true": True, "1": True, "yes": True, "on": True,
             "false": False, "0": False, "no": False, "off": False}  # fmt: skip
_RECIPE_TYPES: dict[str, tuple[Callable[[str], Any], str]] = {
    "quality": (int, "a whole number"),
    "tile_size": (int, "a whole number"),
    "dpi": (float, "a number"),
    "min_quality": (float, "a number"),
    "max_width": (int, "a whole number"),
    "max_height": (int, "a whole number"),
    "all_pages": (lambda text: _BOOLEANS[text.lower()], "true or false"),
    "keep_metadata": (lambda text: _BOOLEANS[text.lower()], "true or false"),
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
        except (ValueError, KeyError):
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
    "max_source_size": parse_size,
    "watch_settle": float,
    "watch_interval": float,
}


def _build(values: dict[str, Any], origins: dict[str, str]) -> Settings:
    typed = dict(values)
    for name, kind in _CONVERTERS.items():
        if name in typed:
            try:
                typed[name] = _convert(kind, typed[name])
            except (TypeError, ValueError, OverflowError):
                kinds: dict[object, str] = {int: "a whole number", float: "a number"}
                kind_of = kinds.get(kind, "a size like 2G")
                where = origins.get(name, name)
                raise ConfigError(f"{where}: {name} must be {kind_of}") from None
    if typed.get("images_mode") is not None:
        try:
            typed["images_mode"] = parse_mode(typed["images_mode"])
        except ValueError as error:
            where = origins.get("images_mode", "images_mode")
            raise ConfigError(f"{where}: {error}") from None
    if isinstance(typed.get("extensions"), list | tuple):
        typed["extensions"] = ",".join(typed["extensions"])
    settings = Settings(**typed, origins=origins)
    try:
        settings.conversion_profile()
    except ConfigError as error:
        where = origins.get("profile") or origins.get("recipe") or "the conversion settings"
        raise ConfigError(f"{where}: {error}") from error
    return settings


def _convert(kind: Callable[[Any], Any], value: Any) -> Any:
    """``value`` as the setting's type. TOML gives true and 1.9 as they are: int() would make
    them 1 (every image over a pixel budget of 1), so a setting is a number, a whole one for
    int (``"4.5"`` and ``4.5`` alike), and a finite one."""
    if isinstance(value, bool):
        raise TypeError(value)
    if kind is int:
        number = float(value) if isinstance(value, str) else value
        if not isinstance(number, int | float) or not float(number).is_integer():
            raise ValueError(value)
        return int(number)
    converted = kind(value)
    if isinstance(converted, float) and not math.isfinite(converted):
        raise ValueError(value)
    return converted
