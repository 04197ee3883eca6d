"""``ptif convert`` on the command line: it never writes over a source, names pyramids as TIFFs,
and converts several files or a folder into a folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import pyvips
from pyramids import read_pyramid

PTIF = Path(sys.executable).parent / "ptif"


def ptif(*args: str | Path, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(PTIF), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=cwd,
        env={**os.environ, **env},
    )


def image(path: Path, width: int = 48, height: int = 32) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    (pyvips.Image.black(width, height) + 128).cast("uchar").write_to_file(str(path))
    return path.read_bytes()


def one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    return lines[0]


# never over a source ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "dst"),
    [
        ("master.tif", "."),  # the folder form: master.tif in this folder
        ("master.tif", "./"),
        ("master.jpg", "./master.jpg"),
        ("master.jpg", "master.jpg"),
        ("master.tif", "sub/../master.tif"),
        ("master.tif", "MASTER_LINK"),  # a symlink to the master
        ("master.tif", "MASTER_HARD"),  # a hard link to it
        ("master.jpg", "MASTER_HARD"),
    ],
)
def test_the_destination_is_never_the_source(tmp_path: Path, name: str, dst: str) -> None:
    master = tmp_path / name
    before = image(master)
    (tmp_path / "sub").mkdir()
    if dst == "MASTER_LINK":
        dst = "link.tif"
        (tmp_path / dst).symlink_to(name)
    elif dst == "MASTER_HARD":
        dst = f"hard{master.suffix}"
        os.link(master, tmp_path / dst)
    done = ptif("convert", name, dst, "--force", cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert "never writes over a source" in one_line(done.stderr)
    assert master.read_bytes() == before
    assert done.stdout == ""


def test_a_symlinked_source_is_not_written_through(tmp_path: Path) -> None:
    """``link.tif -> master.tif``: converting the link onto the master would replace it."""
    before = image(tmp_path / "master.tif")
    (tmp_path / "link.tif").symlink_to("master.tif")
    done = ptif("convert", "link.tif", "master.tif", cwd=tmp_path)
    assert done.returncode == 2
    assert "another name" in one_line(done.stderr)
    assert (tmp_path / "master.tif").read_bytes() == before


def test_a_page_pyramid_is_never_the_source(tmp_path: Path) -> None:
    """With --all-pages, ``book.tif`` makes ``book-p1.tif``…: refused when that is the source."""
    before = image(tmp_path / "book-p1.tif")
    done = ptif("convert", "book-p1.tif", "book.tif", "--all-pages", cwd=tmp_path)
    assert done.returncode == 2
    assert "never writes over a source" in one_line(done.stderr)
    assert (tmp_path / "book-p1.tif").read_bytes() == before
    assert not (tmp_path / "book.tif").exists()


@pytest.mark.parametrize("dst", ["out.jpg", "out.png", "out", "scan.tif.bak"])
def test_a_destination_not_named_as_a_tiff_needs_force(tmp_path: Path, dst: str) -> None:
    image(tmp_path / "scan.jpg")
    done = ptif("convert", "scan.jpg", dst, cwd=tmp_path)
    assert done.returncode == 2
    assert "--force" in one_line(done.stderr)
    assert not (tmp_path / dst).exists()
    forced = ptif("convert", "scan.jpg", dst, "--force", cwd=tmp_path)
    assert forced.returncode == 0, forced.stderr
    assert read_pyramid(tmp_path / dst).sizes[0] == (48, 32)


@pytest.mark.parametrize("dst", ["out.tif", "out.TIFF", "out.ptif", "folder/"])
def test_tiff_names_and_folders_need_no_force(tmp_path: Path, dst: str) -> None:
    image(tmp_path / "scan.jpg")
    done = ptif("convert", "scan.jpg", dst, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    written = tmp_path / "folder" / "scan.tif" if dst.endswith("/") else tmp_path / dst
    assert read_pyramid(written).sizes[0] == (48, 32)


# several sources and folders -------------------------------------------------------------------


def test_several_sources_go_into_a_folder(tmp_path: Path) -> None:
    image(tmp_path / "a.jpg", 40, 30)
    image(tmp_path / "b.png", 30, 40)
    (tmp_path / "out").mkdir()
    done = ptif("convert", "a.jpg", "b.png", "out", "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    results = [json.loads(line) for line in done.stdout.splitlines()]
    assert sorted(Path(r["path"]).name for r in results) == ["a.tif", "b.tif"]
    assert read_pyramid(tmp_path / "out" / "a.tif").sizes[0] == (40, 30)
    assert read_pyramid(tmp_path / "out" / "b.tif").sizes[0] == (30, 40)


@pytest.mark.parametrize("dst", ["missing", "file.tif"])
def test_several_sources_need_a_folder(tmp_path: Path, dst: str) -> None:
    image(tmp_path / "a.jpg")
    image(tmp_path / "b.jpg")
    (tmp_path / "file.tif").write_bytes(b"not a folder")
    done = ptif("convert", "a.jpg", "b.jpg", dst, cwd=tmp_path)
    assert done.returncode == 2
    assert "DST is a folder" in one_line(done.stderr)
    assert (tmp_path / "file.tif").read_bytes() == b"not a folder"
    assert not (tmp_path / "missing").exists()


def test_a_folder_needs_recursive(tmp_path: Path) -> None:
    image(tmp_path / "scans" / "a.jpg")
    done = ptif("convert", "scans", "out/", cwd=tmp_path)
    assert done.returncode == 2
    assert "--recursive" in one_line(done.stderr)
    assert not (tmp_path / "out").exists()


def scans(root: Path) -> Path:
    """A folder as people have them: images in subfolders, a broken one, a clash, clutter."""
    folder = root / "scans"
    image(folder / "box 1" / "a.jpg", 40, 30)
    image(folder / "box 1" / "deep" / "b.tif", 30, 40)
    image(folder / "box 2" / "c.PNG", 20, 20)
    image(folder / "box 2" / "c.jpg", 21, 21)  # c.tif twice: the second is a conflict
    (folder / "box 2" / "torn.jpg").write_bytes(b"\xff\xd8\xff\xe0 cut short")
    (folder / "notes.txt").write_text("not an image")
    image(folder / ".hidden" / "d.jpg")
    image(folder / ".e.jpg")
    (folder / "box 1" / "link.jpg").symlink_to("a.jpg")
    return folder


def test_a_folder_is_mirrored_in_parallel(tmp_path: Path) -> None:
    scans(tmp_path)
    done = ptif("convert", "-r", "scans", "out/", "--workers", "3", cwd=tmp_path)
    assert done.returncode == 1, done.stderr
    out = tmp_path / "out"
    made = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert made == ["box 1/a.tif", "box 1/deep/b.tif", "box 2/c.tif"]
    assert read_pyramid(out / "box 1" / "deep" / "b.tif").sizes[0] == (30, 40)
    assert read_pyramid(out / "box 2" / "c.tif").sizes[0] == (20, 20)  # c.PNG sorts first
    problems = [line for line in done.stderr.splitlines() if line.startswith("ptif: ")]
    assert len(problems) == 2, done.stderr
    assert any("c.jpg" in p and "[output-conflict]" in p for p in problems)
    assert any("torn.jpg" in p and "[undecodable]" in p for p in problems)
    assert "3 converted, 2 failed" in done.stderr


def test_a_folder_converted_into_itself_keeps_its_sources(tmp_path: Path) -> None:
    folder = tmp_path / "scans"
    a_tif = image(folder / "a.tif")
    image(folder / "a.jpg")
    image(folder / "b.jpg", 20, 10)
    done = ptif("convert", "-r", "scans", "scans", cwd=tmp_path)
    assert done.returncode == 1
    assert (folder / "a.tif").read_bytes() == a_tif
    assert read_pyramid(folder / "b.tif").sizes[0] == (20, 10)
    assert "never writes over a source" in done.stderr


def test_a_destination_inside_the_source_is_not_walked(tmp_path: Path) -> None:
    folder = tmp_path / "scans"
    image(folder / "a.jpg")
    for _ in range(2):
        done = ptif("convert", "-r", "scans", "scans/pyramids/", cwd=tmp_path)
        assert done.returncode == 0, done.stderr
    made = sorted(str(p.relative_to(folder)) for p in folder.rglob("*.tif"))
    assert made == ["pyramids/a.tif"]


def test_the_worker_count_setting_is_read(tmp_path: Path) -> None:
    image(tmp_path / "a.jpg")
    image(tmp_path / "b.jpg")
    done = ptif("convert", "a.jpg", "b.jpg", "out/", cwd=tmp_path, PTIF_WORKERS="none")
    assert done.returncode == 2
    assert "workers" in one_line(done.stderr)
    done = ptif("convert", "a.jpg", "b.jpg", "out/", cwd=tmp_path, PTIF_WORKERS="2")
    assert done.returncode == 0, done.stderr
