"""Conversion profiles and the recipe they resolve to.

A :class:`Profile` is a named set of settings plus a policy that reads a marker's fields (the
``marble`` profile shrinks images whose ``copyrightStatus`` is ``copyright``). Resolving a profile
against those fields gives a :class:`Recipe`: the exact settings one conversion uses. The recipe's
short hash is stored with every output, so a change of settings makes old outputs stale.

Both are plain classes, not dataclasses: the dataclasses module loads inspect, ast and dis, which
a one-shot ``ptif convert`` would pay for at every start. Their attributes are ``Final``, so mypy
rejects any assignment after ``__init__``; ``Recipe.replace`` makes a changed copy.
"""

from __future__ import annotations

from collections.abc import Mapping

from ptif.errors import ConfigError

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without loading typing on every run
if TYPE_CHECKING:
    from typing import Any, Final

COMPRESSIONS = ("jpeg", "deflate", "lzw", "webp", "zstd", "none")

#: Bumped whenever the pixel pipeline changes in a way that changes outputs.
PIPELINE_VERSION = 1
#: Default pixel budget: three gigapixels, room for a 60,000 x 50,000 map scan.
DEFAULT_MAX_PIXELS = 3_000_000_000
#: A recipe's settings, in the order they are shown.
RECIPE_SETTINGS = (
    "compression", "quality", "tile_size", "dpi", "max_width", "max_height", "all_pages",
    "keep_metadata", "min_quality",
)  # fmt: skip
#: The default profile's quality floor: SSIM against the decoded source (ptif.convert.encoding).
#: Tuned on `make bench-quality`: at 0.93 the default's bytes are 0.45x of libvips' RGB Q90,
#: mean SSIM 0.943, no image below 0.930.
DEFAULT_MIN_QUALITY = 0.93


class Recipe:
    """Exactly how one source becomes one pyramid: a value, equal to any with the same settings."""

    __slots__ = RECIPE_SETTINGS

    compression: Final[str]
    quality: Final[int]
    tile_size: Final[int]
    dpi: Final[float | None]
    max_width: Final[int | None]
    max_height: Final[int | None]
    #: One pyramid per page of a multi-page source (PDF, TIFF...), not page 1 alone.
    all_pages: Final[bool]
    #: Carry the source's XMP and IPTC (rights, captions) into the pyramid (capped in size).
    keep_metadata: Final[bool]
    #: A perceptual-quality floor (SSIM, 0 to 1) for JPEG tiles: each image gets the fewest
    #: bytes that hold it (ptif.convert.encoding); ``quality`` is then the fallback.
    min_quality: Final[float | None]

    def __init__(
        self,
        *,
        compression: str = "jpeg",
        quality: int = 90,
        tile_size: int = 256,
        dpi: float | None = None,
        max_width: int | None = None,
        max_height: int | None = None,
        all_pages: bool = False,
        keep_metadata: bool = True,
        min_quality: float | None = None,
    ) -> None:
        self.compression = compression
        self.quality = quality
        self.tile_size = tile_size
        # ptif.toml's 300 and --dpi 300 are one recipe, with one hash.
        self.dpi = float(dpi) if isinstance(dpi, int) and not isinstance(dpi, bool) else dpi
        self.max_width = max_width
        self.max_height = max_height
        self.all_pages = all_pages
        self.keep_metadata = keep_metadata
        # ptif.toml's 1 and --min-quality 1.0 are one recipe, with one hash.
        self.min_quality = (
            float(min_quality)
            if isinstance(min_quality, int) and not isinstance(min_quality, bool)
            else min_quality
        )
        self._check()

    def _check(self) -> None:
        self._check_types()
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
        self._check_floor()

    def _check_floor(self) -> None:
        if self.min_quality is None:
            return
        if not 0 < self.min_quality <= 1:
            raise ConfigError(
                f"min-quality {self.min_quality} is out of range; give an SSIM above 0, "
                f"at most 1 ({DEFAULT_MIN_QUALITY} keeps photographs and fine colour detail sharp)"
            )
        if self.compression != "jpeg":
            raise ConfigError(
                f"min-quality applies to JPEG tiles only, and compression is "
                f"{self.compression}; leave min-quality unset"
            )

    def _check_types(self) -> None:
        """Settings from a file or the environment may be of any type: refuse, with the
        setting's name, what is not a number where a number belongs."""
        for name in RECIPE_SETTINGS:
            value = getattr(self, name)
            if name == "compression":
                wanted, ok = "a name", isinstance(value, str)
            elif name in ("all_pages", "keep_metadata"):
                wanted, ok = "true or false", isinstance(value, bool)
            elif name in ("dpi", "min_quality"):
                wanted = "a number"
                ok = value is None or (
                    isinstance(value, int | float) and not isinstance(value, bool)
                )
            else:
                wanted = "a whole number"
                ok = (value is None and name.startswith("max_")) or (
                    isinstance(value, int) and not isinstance(value, bool)
                )
            if not ok:
                raise ConfigError(f"{name.replace('_', '-')} must be {wanted}, not {value!r}")

    def settings(self) -> dict[str, Any]:
        """Every setting by name, as given: what the hash covers."""
        return {name: getattr(self, name) for name in RECIPE_SETTINGS}

    def replace(self, **changes: Any) -> Recipe:
        """A copy with some settings changed, checked like any new recipe."""
        if "min_quality" not in changes and changes.keys() & {"quality", "compression"}:
            changes["min_quality"] = None  # a quality or compression given is what is wanted
        return Recipe(**{**self.settings(), **changes})

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Recipe):
            return NotImplemented
        return self.settings() == other.settings()

    def __hash__(self) -> int:
        return hash(tuple(self.settings().values()))

    def __repr__(self) -> str:
        settings = ", ".join(f"{name}={value!r}" for name, value in self.settings().items())
        return f"Recipe({settings})"

    @property
    def hash(self) -> str:
        """A short, stable digest of the settings and the pipeline version."""
        import hashlib  # imported here: a one-shot convert starts faster without it

        from ptif.convert.jsontext import dumps

        settings = self.settings()
        for name in ("all_pages", "keep_metadata"):  # off: the hashes recorded before they existed
            if not settings[name]:
                del settings[name]
        if self.min_quality is None:  # likewise
            del settings["min_quality"]
        body = dumps(dict(sorted({"pipeline": PIPELINE_VERSION, **settings}.items())))
        return hashlib.sha256(body.encode()).hexdigest()[:12]

    def describe(self) -> dict[str, Any]:
        return {**self.settings(), "hash": self.hash}


class Profile:
    """Named settings, with an optional smaller box for images under copyright."""

    __slots__ = ("copyright_box", "description", "name", "recipe")

    name: Final[str]
    recipe: Final[Recipe]
    copyright_box: Final[tuple[int, int] | None]
    description: Final[str]

    def __init__(
        self,
        name: str,
        recipe: Recipe,
        *,
        copyright_box: tuple[int, int] | None = None,
        description: str = "",
    ) -> None:
        self.name = name
        self.recipe = recipe
        self.copyright_box = copyright_box
        self.description = description

    def resolve(self, fields: Mapping[str, object] | None = None) -> Recipe:
        """The recipe for one source, given its marker's fields."""
        fields = fields or {}
        if self.copyright_box and str(fields.get("copyrightStatus", "")).lower() == "copyright":
            width, height = self.copyright_box
            return self.recipe.replace(max_width=width, max_height=height)
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
        if "min_quality" not in given and given.keys() & {"quality", "compression"}:
            given["min_quality"] = None  # a quality or compression given is what is wanted
        elif "min_quality" in given and "quality" in given:
            raise ConfigError(
                f"both quality {given['quality']} and min-quality {given['min_quality']} are "
                "set: give quality for a fixed JPEG quality, or min-quality for a floor"
            )
        recipe = self.recipe.replace(**given)
        return Profile(
            self.name, recipe, copyright_box=self.copyright_box, description=self.description
        )


PROFILES: dict[str, Profile] = {
    "default": Profile(
        "default",
        Recipe(min_quality=DEFAULT_MIN_QUALITY),
        description=(
            f"JPEG tiles of 256x256, source resolution kept, the fewest bytes that keep SSIM "
            f"at least {DEFAULT_MIN_QUALITY} (YCbCr 4:2:0 or 4:4:4 at Q74 to Q95)"
        ),
    ),
    "marble": Profile(
        "marble",
        Recipe(
            compression="deflate",
            tile_size=512,
            dpi=300.0,
            max_width=4000,
            max_height=4000,
            keep_metadata=False,
        ),
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
