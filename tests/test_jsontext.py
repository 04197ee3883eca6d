"""ptif's own JSON writer (the provenance in every pyramid) writes what the json module does."""

from __future__ import annotations

import json
import random

import pytest

from ptif.convert.jsontext import dumps


@pytest.mark.parametrize(
    "value",
    ["plain text, 123 {}[]:", "", 'a "quoted" key', "back\\slash", "tab\there\nnew line",
     "\x00\x1f\x7f", "café/été", "日本", "\U0001f600", "\u2028\u202e", 1.5, -3, True, None,
     {"recipe": {"tile_size": 256, "min_quality": 0.93}, "keys": ["a", "b\u00e9"]}],
)  # fmt: skip
def test_the_same_text_as_the_json_module(value: object) -> None:
    assert dumps(value) == json.dumps(value, separators=(",", ":"))


def test_random_text_reads_back_as_written() -> None:
    rng = random.Random(7)
    alphabet = [chr(c) for c in range(0x7F + 1)] + ["é", "日", "\U0001f600", "\u2028"]
    for _ in range(500):
        text = "".join(rng.choices(alphabet, k=rng.randrange(12)))
        assert dumps(text) == json.dumps(text) and json.loads(dumps(text)) == text
