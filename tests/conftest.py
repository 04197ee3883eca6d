"""Fixtures shared by several test modules. Helper functions live in helper modules: pyramids.py
(reading the TIFFs ptif writes), corpus.py (making input images), store_helpers.py (the three
stores and what tests do with them), aws_events.py, fault_proxy.py, s3_server.py and
iiif_server.py."""

from __future__ import annotations

from pathlib import Path

import pytest
from corpus import Corpus

# One SeaweedFS per test session (per xdist worker), shared by every module that needs one.
from s3_server import aws_sandbox_fixture, s3_server_fixture  # noqa: F401
from store_helpers import KINDS, Bench, folder_bench, s3_bench


@pytest.fixture(scope="session")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    return Corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture
def out_dir(tmp_path: Path) -> Path:
    d = tmp_path / "out"
    d.mkdir()
    return d


@pytest.fixture(params=KINDS)
def bench(request: pytest.FixtureRequest, tmp_path: Path) -> Bench:
    """SOURCE, PROCESS and IMAGES as folders under ``tmp_path``, then as fresh buckets of the
    session's SeaweedFS."""
    if request.param == "folder":
        return folder_bench(tmp_path)
    return s3_bench(tmp_path, request.getfixturevalue("s3_server"))
