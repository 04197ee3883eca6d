"""Fixtures shared by several test modules. Helper functions live in helper modules: pyramids.py
(reading the TIFFs ptif writes), corpus.py (making input images), store_helpers.py (the three
stores and what tests do with them), aws_events.py, fault_proxy.py, s3_server.py and
iiif_server.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import s3_server as seaweedfs
from corpus import Corpus
from store_helpers import KINDS, Bench, folder_bench, s3_bench


@pytest.fixture(scope="session")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    return Corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture
def out_dir(tmp_path: Path) -> Path:
    d = tmp_path / "out"
    d.mkdir()
    return d


@pytest.fixture(scope="session")
def aws_sandbox(tmp_path_factory: pytest.TempPathFactory) -> None:
    """For tests that make an S3 store without a server: ptif's S3 stores share one boto3
    session, which keeps the credentials it first finds, so the fence must come first."""
    seaweedfs.sandbox_aws(tmp_path_factory.mktemp("aws") / "no-such-aws-dir")


@pytest.fixture(scope="session")
def s3_server(
    tmp_path_factory: pytest.TempPathFactory, aws_sandbox: None
) -> Iterator[seaweedfs.S3Server]:
    """One SeaweedFS per test session (per xdist worker), shared by every module that needs one."""
    server = seaweedfs.start(tmp_path_factory.mktemp("s3-server"))
    try:
        yield server
    finally:
        seaweedfs.stop(server)


@pytest.fixture(params=KINDS)
def bench(request: pytest.FixtureRequest, tmp_path: Path) -> Bench:
    """SOURCE, PROCESS and IMAGES as folders under ``tmp_path``, then as fresh buckets of the
    session's SeaweedFS."""
    if request.param == "folder":
        return folder_bench(tmp_path)
    return s3_bench(tmp_path, request.getfixturevalue("s3_server"))
