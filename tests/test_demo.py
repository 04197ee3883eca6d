"""`make demo` and `make clean` never touch a real run's data; the licence and changelog exist."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parent.parent


def demo_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("ptif_demo", REPO / "examples" / "demo.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def a_real_run(folder: Path) -> dict[Path, bytes]:
    """What a real run on the default folder stores leaves in ./ptif-data."""
    made = {
        folder / "ptif-data" / "source" / "scan.jpg": b"a master",
        folder / "ptif-data" / "images" / "scan.tif": b"its pyramid",
        folder / "ptif-data" / "process" / "rbsc" / "scan.jpg.json": b"{}",
    }
    for path, data in made.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return made


def unchanged(made: dict[Path, bytes]) -> bool:
    return all(path.read_bytes() == data for path, data in made.items())


def a_demo_that_ran(folder: Path) -> Path:
    """ptif-demo as the demo leaves it: its files, and the list of them."""
    root = folder / "ptif-demo"
    for name in ("source/a.jpg", "images/a.tif", "process/reports/r.json"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"demo")
    names = sorted(str(p.relative_to(root)) for p in root.rglob("*"))
    (root / ".ptif-demo-files").write_text("".join(f"{n}\n" for n in names))
    return root


def test_clean_deletes_only_what_the_demo_made(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    real = a_real_run(tmp_path)
    a_demo_that_ran(tmp_path)
    demo_module().clean()
    assert not (tmp_path / "ptif-demo").exists()
    assert unchanged(real)


def test_the_demo_refuses_a_folder_with_files_it_did_not_make(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    root = a_demo_that_ran(tmp_path)
    mine = root / "images" / "mine.tif"
    mine.write_bytes(b"someone's")
    with pytest.raises(SystemExit, match="did not make"):
        demo_module().main()
    assert mine.read_bytes() == b"someone's"
    assert not (root / "images" / "a.tif").exists()  # the demo's own file went


def test_the_demo_refuses_a_folder_it_never_made(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ptif-demo" / "source").mkdir(parents=True)
    (tmp_path / "ptif-demo" / "source" / "scan.jpg").write_bytes(b"a master")
    with pytest.raises(SystemExit, match="did not make"):
        demo_module().main()
    assert (tmp_path / "ptif-demo" / "source" / "scan.jpg").read_bytes() == b"a master"


def test_make_clean_keeps_a_real_runs_stores(tmp_path: Path) -> None:
    shutil.copy(REPO / "Makefile", tmp_path / "Makefile")
    (tmp_path / "examples").mkdir()
    shutil.copy(REPO / "examples" / "demo.py", tmp_path / "examples" / "demo.py")
    real = a_real_run(tmp_path)
    a_demo_that_ran(tmp_path)
    (tmp_path / "fake-venv").mkdir()
    done = subprocess.run(
        ["make", "clean", "VENV=fake-venv", f"PYTHON={sys.executable}"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert unchanged(real)
    assert not (tmp_path / "ptif-demo").exists()
    assert not (tmp_path / "fake-venv").exists()


@pytest.mark.slow
def test_the_demo_runs_in_its_own_folder(tmp_path: Path) -> None:
    """Even with the environment and a ptif.toml naming ./ptif-data's stores."""
    real = a_real_run(tmp_path)
    data = tmp_path / "ptif-data"
    (tmp_path / "ptif.toml").write_text(f'images = "{data / "images"}"\n')
    env = {**os.environ, "PTIF_SOURCE": str(data / "source"), "PTIF_PROCESS": str(data / "p")}
    for _ in range(2):  # the second run replaces the first's files
        done = subprocess.run(
            [sys.executable, str(REPO / "examples" / "demo.py")],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert "ptif-demo" in done.stdout
    assert unchanged(real)
    assert sorted(p.name for p in data.rglob("*") if p.is_file()) == sorted(p.name for p in real)
    pyramids = list((tmp_path / "ptif-demo" / "images").rglob("*.tif"))
    assert len(pyramids) == 5


def test_the_licence_and_the_changelog_exist() -> None:
    licence = (REPO / "LICENSE").read_text()
    assert "Apache License" in licence and "Version 2.0, January 2004" in licence
    assert "END OF TERMS AND CONDITIONS" in licence
    assert "## Unreleased" in (REPO / "CHANGELOG.md").read_text()
