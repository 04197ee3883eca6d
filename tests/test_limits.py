"""The limits' own settings: sizes as people write them, the default memory budget from the
cgroup limits that apply, and limits out of range refused in one line (exit 2) by every command."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import pyvips

from ptif.convert.limits import (
    MIN_MEMORY,
    available_memory,
    cgroup_limit_files,
    check_limits,
    default_max_memory,
    format_size,
    parse_size,
)
from ptif.errors import ConfigError

MiB = 2**20
PTIF = (sys.executable, "-m", "ptif")


@pytest.mark.parametrize(
    ("text", "size"),
    [("2G", 2 * 2**30), ("512MiB", 512 * MiB), ("1.5g", 3 * 2**29), ("2048m", 2 * 2**30),
     ("1073741824", 2**30), ("1_000", 1000), (" 64 KB ", 64 * 1024), ("1T", 2**40)],
)  # fmt: skip
def test_parse_size(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["lots", "", "-1G", "2X", "G", "1.2.3M"])
def test_parse_size_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="is not a size like 2G"):
        parse_size(text)


def test_format_size() -> None:
    assert format_size(512 * MiB) == "512 MiB"
    assert format_size(1.5 * 2**30) == "1.5 GiB"
    assert format_size(2.4e9) == "2.24 GiB"
    assert format_size(100) == "100 B"


def test_memory_limit_comes_from_the_lowest_cgroup(tmp_path: Path) -> None:
    unlimited, container, parent = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    unlimited.write_text("max\n")
    container.write_text(f"{4 * 2**30}\n")
    parent.write_text(f"{8 * 2**30}\n")

    assert available_memory([unlimited, tmp_path / "missing"]) == available_memory([])
    assert available_memory([unlimited, container, parent]) == 4 * 2**30
    assert default_max_memory(3, [container]) == 2**30  # 3/4 of 4 GiB among 3
    assert default_max_memory(64, [container]) == MIN_MEMORY


def test_cgroup_files_follow_this_process_group(tmp_path: Path) -> None:
    membership = tmp_path / "cgroup"
    membership.write_text("0::/system.slice/ptif.service\n")

    files = cgroup_limit_files(tmp_path / "fs", membership)

    assert tmp_path / "fs/system.slice/ptif.service/memory.max" in files
    assert tmp_path / "fs/system.slice/memory.max" in files
    assert tmp_path / "fs/memory.max" in files
    assert tmp_path / "fs/memory/memory.limit_in_bytes" in files


def test_cgroup_v1_memory_group_counts(tmp_path: Path) -> None:
    membership = tmp_path / "cgroup"
    membership.write_text("5:cpu,cpuacct:/jobs\n4:memory:/jobs/ptif\n0::/\n")
    limit = tmp_path / "fs/memory/jobs/ptif/memory.limit_in_bytes"
    limit.parent.mkdir(parents=True)
    limit.write_text(f"{3 * 2**30}\n")

    files = cgroup_limit_files(tmp_path / "fs", membership)

    assert limit in files and tmp_path / "fs/memory/memory.limit_in_bytes" in files
    assert available_memory(files) == 3 * 2**30


@pytest.mark.parametrize(
    ("limits", "message"),
    [
        ((0, None, None), "max pixels must be at least 1, not 0"),
        ((None, 100 * MiB, None), "max memory must be at least 256 MiB, not 100 MiB"),
        # A decoder child takes the budget as a 64-bit resource limit; past it every PDF and EPS
        # failed as undecodable instead of the run stopping on its setting.
        ((None, 2**64, None), "max memory must be at most 512 TiB, not 1.68e[+]07 TiB"),
        ((None, None, 0.0), "max seconds must be 1 to 86400, not 0"),
        ((None, None, float("nan")), "max seconds must be 1 to 86400, not nan"),
    ],
)
def test_limits_out_of_range(limits: tuple[int, int, float], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        check_limits(*limits)


def ptif_cli(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("PTIF_", "AWS_"))}
    return subprocess.run(
        [*PTIF, *args], env={**keep, **env}, cwd=cwd, capture_output=True, text=True, timeout=60
    )


def test_bad_memory_setting_is_one_line_exit_2(tmp_path: Path) -> None:
    done = ptif_cli("status", cwd=tmp_path, PTIF_MAX_MEMORY="lots")

    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "ptif: PTIF_MAX_MEMORY=lots: max_memory must be a size like 2G"
    ]


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--max-seconds", "0"], "ptif: --max-seconds: max seconds must be 1 to 86400, not 0"),
        (
            ["--max-memory", "100M"],
            "ptif: --max-memory: max memory must be at least 256 MiB, not 100 MiB",
        ),
        (
            ["--max-memory", "9999999T"],
            "ptif: --max-memory: max memory must be at most 512 TiB, not 1e+07 TiB",
        ),
    ],
)
def test_bad_limit_flags_are_one_line_exit_2(
    tmp_path: Path, flags: list[str], message: str
) -> None:
    src = tmp_path / "small.jpg"
    (pyvips.Image.black(300, 200) + 128).cast("uchar").jpegsave(str(src))
    for command in (["convert", str(src), str(tmp_path / "out.tif")], ["process"]):
        done = ptif_cli(*command, *flags, cwd=tmp_path)

        assert done.returncode == 2, command
        assert done.stderr.strip().splitlines() == [message], command
    assert not (tmp_path / "out.tif").exists()
