from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from corpus import BAD, Corpus

from ptif.convert import convert, convert_pages
from ptif.errors import (
    PixelBudgetError,
    PtifError,
    UndecodableError,
    UnsupportedFormatError,
)

ERROR_FOR_CODE: dict[str, type[PtifError]] = {
    "undecodable": UndecodableError,
    "unsupported": UnsupportedFormatError,
    "pixel-budget": PixelBudgetError,
}
ENTRY_POINTS: dict[str, Callable[..., Any]] = {"convert": convert, "convert_pages": convert_pages}
PTIF = Path(sys.executable).parent / "ptif"
TIME_LIMIT_S = 2.0


@pytest.mark.parametrize("entry", ENTRY_POINTS)
@pytest.mark.parametrize("name", BAD)
def test_bad_input_fails_cleanly(name: str, entry: str, corpus: Corpus, out_dir: Path) -> None:
    bad = corpus.bad(name)
    started = time.monotonic()
    with pytest.raises(PtifError) as info:
        ENTRY_POINTS[entry](bad.path, out_dir / "out.tif")
    elapsed = time.monotonic() - started
    error = info.value
    assert error.code in bad.codes, f"{type(error).__name__} {error.code!r}: {error}"
    assert isinstance(error, ERROR_FOR_CODE[error.code])
    assert error.permanent is True
    assert bad.path.name in str(error)
    assert list(out_dir.iterdir()) == []
    assert sorted(p.name for p in bad.path.parent.iterdir()) == [bad.path.name]
    assert elapsed < TIME_LIMIT_S, f"took {elapsed:.2f} s to fail"


def test_missing_source(out_dir: Path) -> None:
    missing = out_dir.parent / "no-such-image.jpg"
    with pytest.raises(PtifError) as info:
        convert(missing, out_dir / "out.tif")
    assert missing.name in str(info.value)
    assert list(out_dir.iterdir()) == []


def test_failure_keeps_an_existing_destination(corpus: Corpus, out_dir: Path) -> None:
    dst = out_dir / "out.tif"
    dst.write_bytes(b"previous pyramid")
    with pytest.raises(PtifError):
        convert(corpus.bad("truncated_jpeg").path, dst)
    assert dst.read_bytes() == b"previous pyramid"
    assert list(out_dir.iterdir()) == [dst]


@pytest.mark.parametrize("name", ["truncated_jpeg", "svg_as_jpeg", "giant_png_header"])
def test_cli_bad_input(name: str, corpus: Corpus, out_dir: Path) -> None:
    bad = corpus.bad(name)
    proc = subprocess.run(
        [str(PTIF), "convert", str(bad.path), str(out_dir / "out.tif"), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert bad.path.name in lines[0]
    assert list(out_dir.iterdir()) == []
