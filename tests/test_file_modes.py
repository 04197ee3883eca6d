"""Files ptif writes get ordinary permissions: 0666 less the umask (pyramids, markers, claims,
failure records, run reports, ``ptif convert``'s output), or for a folder images store exactly
the mode an operator sets (``--images-mode``, ``PTIF_IMAGES_MODE``, ``images_mode``)."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest
from corpus import jpeg
from store_helpers import PTIF, Bench, folder_bench, put_source

from ptif.cli.common import open_stores
from ptif.config import Settings, load_settings
from ptif.errors import IO_ERROR, ConfigError
from ptif.queue.leases import Lease, acquire
from ptif.stores import FolderStore


def run(bench: Bench, umask: int, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*PTIF, *args],
        env=bench.env(**env),
        cwd=bench.root,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        umask=umask,
    )


def modes(root: Path) -> dict[str, int]:
    """Every file and folder below ``root`` with its permission bits."""
    return {
        str(path.relative_to(root)): stat.S_IMODE(path.lstat().st_mode)
        for path in sorted(root.rglob("*"))
    }


def files(found: dict[str, int], root: Path) -> dict[str, int]:
    return {name: mode for name, mode in found.items() if (root / name).is_file()}


def folders(found: dict[str, int], root: Path) -> dict[str, int]:
    return {name: mode for name, mode in found.items() if (root / name).is_dir()}


def queue_and_process(bench: Bench, umask: int, **env: str) -> None:
    put_source(bench.source, "box/a.jpg", jpeg(64, 48))
    put_source(bench.source, "box/torn.jpg", b"\xff\xd8\xff\xe0 cut short")
    marked = run(bench, umask, "mark", **env)
    assert marked.returncode == 0, marked.stderr
    process_files = files(modes(bench.root / "process"), bench.root / "process")
    assert any(name.startswith("rbsc/") for name in process_files)
    assert set(process_files.values()) == {0o666 & ~umask}, process_files  # the markers
    done = run(bench, umask, "process", "--workers", "1", **env)
    assert done.returncode == 1, done.stderr  # the torn one failed


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_everything_written_is_0666_less_the_umask(tmp_path: Path, umask: int) -> None:
    bench = folder_bench(tmp_path)
    queue_and_process(bench, umask)
    process = files(modes(tmp_path / "process"), tmp_path / "process")
    assert any(name.startswith("failed/") for name in process), process
    assert any(name.startswith("reports/") for name in process), process
    assert set(process.values()) == {0o666 & ~umask}, process
    images = files(modes(tmp_path / "images"), tmp_path / "images")
    assert "box/a.tif" in images
    assert set(images.values()) == {0o666 & ~umask}, images
    assert folders(modes(tmp_path / "images"), tmp_path / "images")["box"] == 0o777 & ~umask


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_convert_output_is_0666_less_the_umask(tmp_path: Path, umask: int) -> None:
    bench = folder_bench(tmp_path)
    (tmp_path / "a.jpg").write_bytes(jpeg(64, 48))
    (tmp_path / "scans").mkdir()
    (tmp_path / "scans" / "b.jpg").write_bytes(jpeg(64, 48))
    assert run(bench, umask, "convert", "a.jpg", "a.tif").returncode == 0
    assert run(bench, umask, "convert", "-r", "scans", "out/").returncode == 0
    for made in (tmp_path / "a.tif", tmp_path / "out" / "b.tif"):
        assert stat.S_IMODE(made.stat().st_mode) == 0o666 & ~umask


@pytest.mark.parametrize(
    ("umask", "setting", "file_mode", "folder_mode"),
    [
        (0o077, {"PTIF_IMAGES_MODE": "0644"}, 0o644, 0o755),
        (0o022, {"PTIF_IMAGES_MODE": "640"}, 0o640, 0o750),
        (0o002, {"PTIF_IMAGES_MODE": "0o600"}, 0o600, 0o700),
    ],
)
def test_the_images_mode_setting_is_exact_whatever_the_umask(
    tmp_path: Path, umask: int, setting: dict[str, str], file_mode: int, folder_mode: int
) -> None:
    bench = folder_bench(tmp_path)
    queue_and_process(bench, umask, **setting)
    images = modes(tmp_path / "images")
    assert files(images, tmp_path / "images")["box/a.tif"] == file_mode
    assert folders(images, tmp_path / "images")["box"] == folder_mode
    process = files(modes(tmp_path / "process"), tmp_path / "process")
    assert set(process.values()) == {0o666 & ~umask}, process  # the queue keeps the umask's


def test_the_images_mode_flag_beats_the_environment(tmp_path: Path) -> None:
    bench = folder_bench(tmp_path)
    put_source(bench.source, "a.jpg", jpeg(64, 48))
    assert run(bench, 0o077, "mark").returncode == 0
    done = run(bench, 0o077, "process", "--images-mode", "0640", PTIF_IMAGES_MODE="0600")
    assert done.returncode == 0, done.stderr
    assert stat.S_IMODE((tmp_path / "images" / "a.tif").stat().st_mode) == 0o640


@pytest.mark.parametrize("value", ["0755", "0666x", "rw-r--r--", "0044", "1644", "", "0o1777"])
def test_a_mode_that_is_no_file_mode_is_refused(tmp_path: Path, value: str) -> None:
    bench = folder_bench(tmp_path)
    put_source(bench.source, "a.jpg", jpeg(64, 48))
    done = run(bench, 0o022, "process", "--images-mode", value)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "images_mode" in lines[0], done.stderr
    assert not list((tmp_path / "images").rglob("*.tif"))


def test_the_toml_file_takes_an_octal_number_or_text(tmp_path: Path) -> None:
    config = tmp_path / "ptif.toml"
    config.write_text("images_mode = 0o640\n")
    assert load_settings(environ={}, config_file=config).images_mode == 0o640
    config.write_text('images_mode = "0644"\n')
    assert load_settings(environ={}, config_file=config).images_mode == 0o644
    config.write_text("images_mode = 644\n")  # decimal 644 is 0o1204: sticky, no read
    with pytest.raises(ConfigError, match="octal file mode"):
        load_settings(environ={}, config_file=config)


def test_the_images_mode_is_refused_for_s3_images(tmp_path: Path, aws_sandbox: None) -> None:
    settings = Settings(
        source=str(tmp_path / "s"),
        process=str(tmp_path / "p"),
        images="s3://iiif-images",
        images_mode=0o644,
    )
    with pytest.raises(ConfigError, match="folder images store"):
        open_stores(settings)


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_claims_are_0666_less_the_umask(tmp_path: Path, umask: int) -> None:
    """A run deletes its claims; one taken and released keeps them, as after a transient error."""
    old = os.umask(umask)
    try:
        lease = acquire(FolderStore(tmp_path / "process"), "a.tif", "me", 60)
        assert isinstance(lease, Lease)
        lease.release_noting(IO_ERROR, "a transient error", counted=False)
    finally:
        os.umask(old)
    claims = files(modes(tmp_path / "process"), tmp_path / "process")
    assert [name for name in claims if name.startswith("claims/")], claims
    assert set(claims.values()) == {0o666 & ~umask}


def test_a_folder_store_mode_applies_to_sidecars_and_new_folders(tmp_path: Path) -> None:
    old = os.umask(0o077)
    try:
        store = FolderStore(tmp_path / "images", xattrs=False, file_mode=0o644)
        store.put_bytes("a/b/c.tif", b"x", metadata={"iiif-width": "1"})
    finally:
        os.umask(old)
    found = modes(tmp_path / "images")
    assert found["a/b/c.tif"] == 0o644
    assert found["a"] == found["a/b"] == 0o755
    assert found[".ptif-meta/a/b/c.tif.json"] == 0o644
