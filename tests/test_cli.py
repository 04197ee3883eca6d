"""The command line builds only the parser of the command it runs: same help, fewer imports."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import pyvips

from ptif.cli import convert as cli_convert
from ptif.cli import intake as cli_intake
from ptif.cli import main as cli
from ptif.cli import queue as cli_queue
from ptif.convert.verify import read_layout

#: Modules ``ptif convert`` has no use for: the queue's and intake's, and standard ones that
#: would only add to its start-up time (dataclasses brings inspect, ast and dis, none of which
#: pyvips loads).
NOT_FOR_CONVERT = {
    "json",
    "signal",
    "typing",
    "dataclasses",
    "inspect",
    "ast",
    "dis",
    "ptif.cli.queue",
    "ptif.cli.intake",
    "ptif.config",
    "ptif.queue",
    "ptif.stores",
    "ptif.queue.worker",
    "ptif.intake",
    "ptif.intake.watch",
    "ptif.intake.reconcile",
    "ptif.intake.mark",
    "ptif.cli.convert_many",
    "ptif.convert.batch",
}


def help_text(
    parser_command: str | None, argv: list[str], capsys: pytest.CaptureFixture[str]
) -> str:
    with pytest.raises(SystemExit) as done:
        cli.build_parser(parser_command).parse_args(argv)
    assert done.value.code == 0
    return capsys.readouterr().out


def test_table_names_every_command() -> None:
    for module in (cli_convert, cli_queue, cli_intake):
        listed = [f"add_{name}" for name, where in cli.COMMANDS.items() if where == module.__name__]
        assert listed == [add.__name__ for add in module.COMMANDS]


@pytest.mark.parametrize("command", list(cli.COMMANDS))
def test_help_of_a_command_alone_is_the_full_help(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    alone = help_text(command, [command, "--help"], capsys)
    assert alone == help_text(None, [command, "--help"], capsys)
    assert f"usage: ptif {command} " in alone


def test_top_level_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    text = help_text(None, ["--help"], capsys)
    for command in cli.COMMANDS:
        assert f"\n    {command} " in text


@pytest.mark.parametrize(
    ("argv", "command"),
    [
        (["convert", "a.jpg", "b.tif"], "convert"),
        (["-q", "-vv", "--verbose", "process", "--limit", "1"], "process"),
        (["-vq", "formats"], "formats"),
        (["-h", "convert"], None),  # the top-level help lists every command
        (["--verb", "convert"], None),  # an abbreviation argparse may read otherwise
        (["--version"], None),
        (["convrt", "a.jpg"], None),  # the error lists every command
        ([], None),
    ],
)
def test_command_in(argv: list[str], command: str | None) -> None:
    assert cli.command_in(argv) == command


def loaded_by(statements: str) -> set[str]:
    """The modules ``statements`` load, in a fresh interpreter, beyond pyvips'."""
    script = (
        "import sys\n"
        "import pyvips\n"
        "before = set(sys.modules)\n"
        f"{statements}\n"
        "print(*sorted(set(sys.modules) - before))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    return set(proc.stdout.splitlines()[-1].split())


@pytest.mark.parametrize("flags", [["--quality", "90"], []], ids=["libvips", "default"])
def test_convert_loads_only_what_it_needs(tmp_path: Path, flags: list[str]) -> None:
    """With libvips writing, none of NOT_FOR_CONVERT; with ptif's own writer (the default's
    floor), only what its libraries, numpy, imagecodecs and tifffile, bring themselves."""
    src, dst = tmp_path / "tiny.jpg", tmp_path / "tiny.tif"
    pyvips.Image.black(8, 8).write_to_file(str(src))
    args = ["-q", "convert", str(src), str(dst), *flags]
    loaded = loaded_by(f"from ptif.cli.main import main\nassert main({args!r}) == 0")
    assert read_layout(dst).directories[0].width == 8
    assert "ptif.convert.engine" in loaded
    allowed = loaded_by("import numpy, imagecodecs, tifffile") if not flags else set()
    assert "tifffile" in loaded or flags
    assert NOT_FOR_CONVERT & loaded <= allowed, sorted(NOT_FOR_CONVERT & loaded - allowed)


def test_output_cut_short_by_its_reader_is_not_an_error() -> None:
    """`ptif formats | head -1`: here the reader has gone before the first line is written."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "ptif", "formats"],
            stdout=write_end,
            stderr=subprocess.PIPE,
            timeout=60,
        )
    finally:
        os.close(write_end)
    assert proc.returncode == 141
    assert proc.stderr == b""


@pytest.mark.parametrize("command", ["mark", "watch", "reconcile"])
def test_ext_adds_and_only_ext_replaces(
    command: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ptif.cli.common import settings_from
    from ptif.config import ENVIRONMENT_VARIABLES
    from ptif.convert.formats import READ_EXTENSIONS

    monkeypatch.chdir(tmp_path)
    for name in ENVIRONMENT_VARIABLES:
        monkeypatch.delenv(name, raising=False)

    def extensions(*argv: str) -> tuple[str, ...]:
        args = cli.build_parser(command).parse_args([command, *argv])
        return settings_from(args).extension_list()

    assert extensions() == READ_EXTENSIONS
    assert extensions("--ext", "DNG", "--ext", ".cr2") == (*READ_EXTENSIONS, ".dng", ".cr2")
    assert extensions("--only-ext", "jpg", "--only-ext", "TIF") == (".jpg", ".tif")
    assert extensions("--only-ext", "jpg", "--ext", "png") == (".jpg", ".png")
    monkeypatch.setenv("PTIF_EXTENSIONS", "tif")
    assert extensions("--ext", "jpg") == (".tif", ".jpg")
