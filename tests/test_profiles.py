"""Recipes are values: equal settings make equal recipes with the same hash, forever."""

from __future__ import annotations

import pytest

from ptif.convert.profiles import DEFAULT_RECIPE, Recipe, get_profile
from ptif.errors import ConfigError


def test_recipe_hashes_stay_what_outputs_record() -> None:
    """Outputs carry these hashes in their metadata: a new value would make them all stale."""
    marble = get_profile("marble")
    # keep_metadata (on) and the quality floor changed the default's: its outputs gain the
    # source's rights statements, and each image its own encoding. A fixed Q90, the default of
    # ptif 0.1, with the source's metadata left out keeps the hash its outputs recorded.
    assert DEFAULT_RECIPE.hash == "cd279fdbf26d"
    assert get_profile("default").with_overrides(quality=90).recipe.hash == "758ab0b5a8bf"
    q90 = DEFAULT_RECIPE.replace(quality=90, keep_metadata=False)
    assert q90.hash == "9ef783ef7551"
    assert marble.resolve({}).hash == "2f7def2b465d"
    assert marble.resolve({"copyrightStatus": "copyright"}).hash == "4a056c3f4fd1"
    assert marble.recipe_hashes() == {"2f7def2b465d", "4a056c3f4fd1"}


def test_equal_settings_make_equal_recipes() -> None:
    deflate = Recipe(compression="deflate", tile_size=512)
    same = Recipe(tile_size=512).replace(compression="deflate")
    assert deflate == same and hash(deflate) == hash(same) and deflate.hash == same.hash
    assert {deflate: "seen"}[same] == "seen"
    assert deflate != Recipe(compression="deflate") and deflate != deflate.settings()
    assert repr(same) == (
        "Recipe(compression='deflate', quality=90, tile_size=512, dpi=None, max_width=None, "
        "max_height=None, all_pages=False, keep_metadata=True, min_quality=None)"
    )


def test_replace_leaves_the_original_and_checks_the_copy() -> None:
    shrunk = DEFAULT_RECIPE.replace(max_width=800, max_height=600)
    assert (shrunk.max_width, shrunk.max_height) == (800, 600)
    assert (DEFAULT_RECIPE.max_width, DEFAULT_RECIPE.max_height) == (None, None)
    assert shrunk.describe() == {**shrunk.settings(), "hash": shrunk.hash}
    with pytest.raises(ConfigError, match="tile size 100 must be a multiple of 16"):
        DEFAULT_RECIPE.replace(tile_size=100)
    with pytest.raises(TypeError, match="colour"):
        DEFAULT_RECIPE.replace(colour="grey")


def test_overrides_keep_the_profile_and_its_copyright_box() -> None:
    marble = get_profile("marble")
    sharper = marble.with_overrides(quality=95, dpi=None)
    assert sharper.recipe == marble.recipe.replace(quality=95)
    assert (sharper.name, sharper.description) == (marble.name, marble.description)
    assert sharper.resolve({"copyrightStatus": "Copyright"}).max_width == 843
    assert marble.with_overrides(quality=None) is marble
