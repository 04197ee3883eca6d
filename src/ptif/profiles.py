"""Conversion profiles and the recipe they resolve to.

A :class:`Profile` is a named set of settings plus a policy that reads a marker's fields (the
``marble`` profile shrinks images whose ``copyrightStatus`` is ``copyright``). Resolving a profile
against those fields gives a :class:`Recipe`: the exact settings one conversion uses. The recipe's
short hash is stored with every output, so a change of settings makes old outputs stale.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace

from ptif.errors import ConfigError

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without loading typing on every run
if TYPE_CHECKING:
    from typing import Any

COMPRESSIONS = ("jpeg", "deflate", "lzw", "webp", "zstd", "none")

#: Bumped whenever the pixel pipeline changes in a way that changes outputs.
PIPELINE_VERSION = 1
#: Default pixel budget: three gigapixels, room for a 60,000 x 50,000 map scan.
DEFAULT_MAX_PIXELS = 3_000_000_000


@dataclass(frozen=True)
class Recipe:
    """Exactly how one source becomes one pyramid."""

    compression: str = "jpeg"
    quality: int = 90
    tile_size: int = 256
    dpi: float | None = None
    max_width: int | None = None
    max_height: int | None = None

    def __post_init__(self) -> None:
        if self.compression not in COMPRESSIONS:
            raise ConfigError(
                f"unknown compression {self.compression!r}; choose one of {', '.join(COMPRESSIONS)}"
            )
        if not 1 <= self.quality <= 100:
            raise ConfigError(f"quality {self.quality} is out of range; use 1 to 100")
        if self.tile_size < 16 or self.tile_size % 16:
            raise ConfigError(f"tile size {self.tile_size} must be a multiple of 16, at least 16")
        if self.dpi is not None and not 0 < self.dpi <= 100_000:
            raise ConfigError(f"dpi {self.dpi} must be positive")
        for name in ("max_width", "max_height"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"{name.replace('_', '-')} {value} must be at least 1")

    @property
    def hash(self) -> str:
        """A short, stable digest of the settings and the pipeline version."""
        import hashlib  # imported here: a one-shot convert starts faster without it
        import json

        body = json.dumps(
            {"pipeline": PIPELINE_VERSION, **asdict(self)}, sort_keys=True, separators=(",", ":")
        )
        return hashlib.sha256(body.encode()).hexdigest()[:12]

    def describe(self) -> dict[str, Any]:
        return {**asdict(self), "hash": self.hash}


@dataclass(frozen=True)
class Profile:
    """Named settings, with an optional smaller box for images under copyright."""

    name: str
    recipe: Recipe
    copyright_box: tuple[int, int] | None = None
    description: str = field(default="", compare=False)

    def resolve(self, fields: Mapping[str, object] | None = None) -> Recipe:
        """The recipe for one source, given its marker's fields."""
        fields = fields or {}
        if self.copyright_box and str(fields.get("copyrightStatus", "")).lower() == "copyright":
            width, height = self.copyright_box
            return replace(self.recipe, max_width=width, max_height=height)
        return self.recipe

    def recipe_hashes(self) -> set[str]:
        """Every recipe this profile can resolve to (an output made with any is current)."""
        hashes = {self.recipe.hash}
        if self.copyright_box:
            hashes.add(self.resolve({"copyrightStatus": "copyright"}).hash)
        return hashes

    def with_overrides(self, **settings: Any) -> Profile:
        """This profile with some settings replaced; ``None`` values are ignored."""
        given = {k: v for k, v in settings.items() if v is not None}
        if not given:
            return self
        return replace(self, recipe=replace(self.recipe, **given))


PROFILES: dict[str, Profile] = {
    "default": Profile(
        "default",
        Recipe(),
        description="JPEG Q90 tiles of 256x256, source resolution kept",
    ),
    "marble": Profile(
        "marble",
        Recipe(compression="deflate", tile_size=512, dpi=300.0, max_width=4000, max_height=4000),
        copyright_box=(843, 560),
        description=(
            "deflate, 512x512 tiles, 300 dpi, longest side at most 4000 px; "
            "843x560 when copyrightStatus is copyright"
        ),
    ),
}


def get_profile(name: str) -> Profile:
    try:
        return PROFILES[name]
    except KeyError:
        raise ConfigError(
            f"unknown profile {name!r}; choose one of {', '.join(PROFILES)}"
        ) from None


DEFAULT_RECIPE = PROFILES["default"].recipe
