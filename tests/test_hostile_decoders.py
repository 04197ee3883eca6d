"""Hostile files against the sandboxed decoders (Ghostscript, PDFium, Pillow): PostScript that
pokes at the file system, loops or hoards memory, PDF bombs, and a BMP over Pillow's own bomb
limit. Inputs are built at test time (tests/hostile.py); Ghostscript, PDFium and Pillow are real,
and so is ``ptif process`` where a test kills it. Outcomes are read from the output pixels, the
stores, the failure records and /proc."""

from __future__ import annotations

import io
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import hostile
import pytest
import pyvips
import tifffile
from store_helpers import (
    Bench,
    add_images,
    failures,
    folder_bench,
    keys,
    pending,
    put_source,
    queue,
    verify_all,
    wait_for,
)

from ptif.convert import convert, sandbox
from ptif.convert.limits import Limits
from ptif.errors import TOO_LARGE, TOO_SLOW, TooLargeError, TooSlowError
from ptif.queue.outputs import output_key

MIB = 2**20
TIGHT = Limits(max_memory=512 * MIB, max_seconds=60)
#: Generous bounds for a bomb to be refused on a busy 2-core machine (it takes 0-7 s alone).
REFUSED_WITHIN_S = 45
#: A worker converting small JPEGs holds about 100 MiB; a bomb decoded in the worker held GBs.
WORKER_PEAK_BOUND = 400 * MIB

needs_gs = pytest.mark.skipif(shutil.which("gs") is None, reason="Ghostscript is not installed")


def centre(path: Path) -> list[float]:
    image = pyvips.Image.new_from_file(str(path))
    return [round(v) for v in image.getpoint(image.width // 2, image.height // 2)]


# Ghostscript: what a PostScript program can reach ---------------------------------------------


@pytest.fixture
def decoy_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A worker's TMPDIR and HOME, each holding a file an EPS would like to read or rewrite."""
    for name in ("tmp", "home"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "victim.src").write_bytes(b"another image's download")
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("GS_OPTIONS", "-dNOSAFER")  # the worker's environment is not passed on
    return tmp_path


def snoop(root: Path) -> bytes:
    return hostile.snooping_eps(
        inside=root,
        attack=[f"{root}/tmp/*", f"{root}/home/*", f"{root}/*"],
        writes=[f"{root}/tmp/owned", f"{root}/home/owned", f"{root}/owned"],
        look=["/tmp/*", "/etc/*"],
        reads=["/etc/passwd", "/proc/self/environ"],
    )


def files_under(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@needs_gs
def test_an_eps_reaches_no_file_outside_its_scratch(decoy_home: Path) -> None:
    root = decoy_home
    (root / "snoop.eps").write_bytes(snoop(root))
    before = files_under(root)
    convert(root / "snoop.eps", root / "out" / "snoop.tif")
    assert centre(root / "out" / "snoop.tif") == list(hostile.SNOOP_BLIND)
    after = files_under(root)
    del after["out/snoop.tif"]
    [decoders] = (root / "tmp").glob(f"{sandbox.SCRATCH_PREFIX}*")
    assert [p.name for p in decoders.iterdir()] == [sandbox.SCRATCH_LOCK]  # scratch removed
    del after[f"tmp/{decoders.name}/{sandbox.SCRATCH_LOCK}"]
    assert after == before


@needs_gs
def test_the_same_eps_under_plain_safer_ghostscript_reaches_them(decoy_home: Path) -> None:
    """The control: -dSAFER alone lets the program see and rewrite the worker's TMPDIR."""
    root = decoy_home
    (root / "snoop.eps").write_bytes(snoop(root))
    env = {k: v for k, v in os.environ.items() if k != "GS_OPTIONS"}
    command = ["gs", "-q", "-dSAFER", "-dBATCH", "-dNOPAUSE", "-dEPSCrop", "-sDEVICE=png16m",
               "-r72", f"-sOutputFile={root / 'plain.png'}", str(root / "snoop.eps")]  # fmt: skip
    subprocess.run(command, env=env, check=True, capture_output=True, timeout=60)
    assert centre(root / "plain.png") == list(hostile.SNOOP_SAW)
    assert (root / "tmp" / "victim.src").read_bytes() == b"owned by an EPS"


@needs_gs
def test_endless_postscript_is_stopped_by_the_time_limit(tmp_path: Path) -> None:
    (tmp_path / "endless.eps").write_bytes(hostile.ENDLESS_EPS)
    started = time.monotonic()
    with pytest.raises(TooSlowError) as failed:
        convert(tmp_path / "endless.eps", tmp_path / "out.tif", limits=Limits(max_seconds=2))
    assert time.monotonic() - started < REFUSED_WITHIN_S
    message = str(failed.value)
    assert "endless.eps" in message and "2 s" in message and "--max-seconds" in message
    assert "PTIF_MAX_SECONDS" in message and failed.value.code == TOO_SLOW
    assert re.search(r"stopped after 2\.\d s", message), message


@needs_gs
def test_postscript_that_hoards_memory_is_stopped_by_the_memory_limit(tmp_path: Path) -> None:
    (tmp_path / "greedy.eps").write_bytes(hostile.GREEDY_EPS)
    with pytest.raises(TooLargeError) as failed:
        convert(tmp_path / "greedy.eps", tmp_path / "out.tif", limits=Limits(max_memory=256 * MIB))
    message = str(failed.value)
    assert "greedy.eps" in message and "256 MiB" in message and "--max-memory" in message
    assert "PTIF_MAX_MEMORY" in message and failed.value.code == TOO_LARGE


@needs_gs
@pytest.mark.parametrize("delete", [False, True], ids=["files", "deleted-open-files"])
def test_postscript_that_fills_its_scratch_folder_is_stopped(tmp_path: Path, delete: bool) -> None:
    # 20 files of 64 MB, each under the 256 MiB limit of one file: 1.3 GB in all.
    (tmp_path / "fill.eps").write_bytes(hostile.scratch_filling_eps(20, 64, delete=delete))
    limits = Limits(max_memory=256 * MIB, max_seconds=60)

    started = time.monotonic()
    with pytest.raises(TooLargeError) as failed:
        convert(tmp_path / "fill.eps", tmp_path / "out.tif", limits=limits)

    assert time.monotonic() - started < REFUSED_WITHIN_S
    message = str(failed.value)
    assert "fill.eps" in message and "wrote more to its scratch folder than" in message
    assert "256 MiB" in message and "--max-memory" in message and failed.value.code == TOO_LARGE
    assert not (tmp_path / "out.tif").exists()


def test_a_folder_of_too_many_scratch_files_counts_as_full(tmp_path: Path) -> None:
    for i in range(sandbox.MAX_SCRATCH_FILES + 1):
        (tmp_path / f"f{i}").touch()
    assert sandbox.scratch_usage(tmp_path, (os.getpid(),)) > 2**62
    (tmp_path / "f0").unlink()
    assert sandbox.scratch_usage(tmp_path, (os.getpid(),)) == 0  # empty files take no blocks


def test_output_past_the_limit_kills_the_child_at_once(tmp_path: Path) -> None:
    (tmp_path / "source").write_bytes(b"")
    started = time.monotonic()
    with pytest.raises(TooLargeError, match="the tool drew more than the limit of 512 MiB"):
        sandbox.run(
            ["yes", "a line of output, for ever"],
            tmp_path / "source",
            budget(tmp_path, seconds=30),
            lambda output: output.read_to_end(1 << 20),
        )
    # Drained instead, it would have run into the 30 s deadline and ended too-slow.
    assert time.monotonic() - started < 10


@needs_gs
@pytest.mark.slow
def test_the_worker_holds_no_copy_of_an_eps_rendering(tmp_path: Path) -> None:
    src = tmp_path / "noise.eps"
    src.write_bytes(hostile.noise_eps(12_000, 4_000))  # a PNG of about 144 MB (137 MiB)

    done = subprocess.run(
        [sys.executable, "-c", PEAK_CHILD, str(src), str(tmp_path / "noise.tif")],
        capture_output=True, text=True, check=True, timeout=600,
    )  # fmt: skip

    peak = int(done.stdout) / MIB
    assert pyvips.Image.new_from_file(str(tmp_path / "noise.tif")).width == 12_000
    # It held the PNG twice (once as it was read, once as it was wrapped): about 320 MiB.
    assert peak < 137, f"the worker peaked at {peak:.0f} MiB"


#: Converts one file and prints this process's own peak RSS (VmHWM), in bytes.
PEAK_CHILD = """
import sys
from ptif.convert import convert
convert(sys.argv[1], sys.argv[2])
print(int(next(l for l in open("/proc/self/status") if l.startswith("VmHWM:")).split()[1]) * 1024)
"""


# PDFium: bombs ---------------------------------------------------------------------------------


def test_a_huge_pdf_page_is_refused_before_rendering(tmp_path: Path) -> None:
    (tmp_path / "big.pdf").write_bytes(hostile.big_page_pdf())
    assert len(hostile.big_page_pdf()) < 500
    started = time.monotonic()
    with pytest.raises(TooLargeError, match=r"big\.pdf: PDFium needs more memory .*--max-memory"):
        convert(tmp_path / "big.pdf", tmp_path / "out.tif", limits=TIGHT)
    assert time.monotonic() - started < REFUSED_WITHIN_S
    assert not (tmp_path / "out.tif").exists()


def test_nested_form_xobjects_hit_the_memory_limit_in_the_child(tmp_path: Path) -> None:
    (tmp_path / "nested.pdf").write_bytes(hostile.nested_forms_pdf(7))
    with pytest.raises(TooLargeError, match=r"nested\.pdf: PDFium needs more memory"):
        convert(tmp_path / "nested.pdf", tmp_path / "out.tif", limits=TIGHT)


def test_a_pdf_within_its_limits_still_renders(tmp_path: Path) -> None:
    (tmp_path / "ok.pdf").write_bytes(hostile.nested_forms_pdf(2, fanout=3))
    (tmp_path / "link.pdf").symlink_to(tmp_path / "ok.pdf")  # ptif convert follows links
    result = convert(tmp_path / "link.pdf", tmp_path / "out.tif", limits=TIGHT)
    assert (result.width, result.height, result.decoder) == (833, 833, "PDFium")


# Pillow: its bomb limit no longer depends on history -------------------------------------------

SIDE_196MP = 14000


@pytest.fixture
def bmp_196mp(tmp_path: Path) -> Path:
    """A 1-bit 14000 x 14000 BMP: 196 megapixels in 25 MB, over Pillow's default limit of
    179 megapixels, well under ptif's budget."""
    head, size = hostile.bilevel_bmp(SIDE_196MP, SIDE_196MP)
    path = tmp_path / "big.bmp"
    with open(path, "wb") as out:
        out.write(head)
        out.truncate(size)
    return path


@pytest.mark.slow
def test_a_196_megapixel_bmp_converts_whether_or_not_an_image_was_opened_first(
    bmp_196mp: Path, tmp_path: Path
) -> None:
    first = subprocess.run(
        [sys.executable, "-m", "ptif", "convert", str(bmp_196mp), str(tmp_path / "first.tif")],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert first.returncode == 0, first.stderr
    small = tmp_path / "small.bmp"
    small.write_bytes(hostile.bilevel_bmp(8, 8)[0] + bytes(32))
    convert(small, tmp_path / "small.tif")
    after = convert(bmp_196mp, tmp_path / "after.tif")
    assert (after.width, after.height) == (SIDE_196MP, SIDE_196MP)
    fresh = pyvips.Image.new_from_file(str(tmp_path / "first.tif"))
    assert (fresh.width, fresh.height) == (SIDE_196MP, SIDE_196MP)


# the sandbox itself ----------------------------------------------------------------------------


def budget(tmp_path: Path, seconds: float = 30) -> sandbox.Budget:
    return sandbox.Budget(str(tmp_path / "source"), "test", "the tool", 512 * MIB, seconds)


def test_a_child_gets_only_its_scratch_folder_and_limits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not for decoders")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    (tmp_path / "source").write_bytes(b"the source, on standard input")
    script = (
        "pwd; stat -c %a .; ls -A | wc -l; ulimit -v; ulimit -t; ulimit -c; cat; echo; "
        "env | sort | cut -d= -f1 | tr '\\n' ' '"
    )
    out = sandbox.run(
        ["sh", "-c", script],
        tmp_path / "source",
        budget(tmp_path, seconds=7),
        lambda output: output.read_to_end(1 << 20),
    )
    assert out is not None
    scratch, mode, entries, memory_kib, cpu, core, source, names = out.decode().splitlines()
    assert Path(scratch).parent.parent == tmp_path
    assert Path(scratch).parent.name.startswith(sandbox.SCRATCH_PREFIX)
    assert (mode, entries, memory_kib, cpu, core) == ("700", "0", str(512 * 1024), "7", "0")
    assert source == "the source, on standard input"
    assert set(names.split()) <= {"HOME", "LC_ALL", "PATH", "PWD", "SHLVL", "TEMP", "TMP",
                                  "TMPDIR", "_"}  # fmt: skip
    assert not Path(scratch).exists()


def test_the_deadline_kills_the_childs_whole_process_group(tmp_path: Path) -> None:
    (tmp_path / "source").write_bytes(b"")
    marker = f"{60 + int.from_bytes(os.urandom(3), 'big') / 1e7:.7f}"
    with pytest.raises(TooSlowError, match="the tool did not finish within the time limit"):
        sandbox.run(
            ["sh", "-c", f"sleep {marker} & sleep {marker}; wait"],
            tmp_path / "source",
            budget(tmp_path, seconds=1),
            lambda output: output.read_to_end(1 << 20),
        )
    assert wait_for(lambda: not processes_running(f"sleep\0{marker}"), 5)


# ptif process: the worker and its decoders -----------------------------------------------------


def processes() -> dict[int, tuple[str, str, int, int, bytes]]:
    """Every process: pid → (command name, state, parent pid, process group, command line)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        state, ppid, pgrp = stat[stat.rindex(")") + 2 :].split()[:3]
        found[int(entry.name)] = (name, state, int(ppid), int(pgrp), cmdline)
    return found


def processes_running(cmdline: str) -> list[int]:
    return [
        pid
        for pid, (_, state, _, _, line) in processes().items()
        if cmdline.encode() in line and state != "Z"
    ]


def ghostscripts_of(worker: int) -> list[int]:
    """Ghostscript processes the worker started: each runs under a supervisor, its child."""
    table = processes()
    return [
        pid
        for pid, (name, _, ppid, _, _) in table.items()
        if name == "gs" and ppid in table and table[ppid][2] == worker
    ]


def alive(pids: list[int]) -> list[int]:
    """Those of ``pids`` still running, or any member of their process groups (a zombie waiting
    for its new parent to reap it is not running)."""
    table = processes()
    return [
        pid
        for pid, (_, state, _, group, _) in table.items()
        if state != "Z" and (pid in pids or group in pids)
    ]


def start_worker(bench: Bench, *args: str, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "ptif", "process", "--workers", "2", "--quiet", *args],
        env=bench.env(**env),
        cwd=bench.root,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


SMALL = {f"batch/{i}.jpg": (300, 200) for i in range(4)}


@needs_gs
@pytest.mark.parametrize("how", ["SIGKILL", "SIGTERM"])
def test_a_stopped_worker_leaves_no_ghostscript_behind(tmp_path: Path, how: str) -> None:
    bench = folder_bench(tmp_path)
    put_source(bench.source, "endless.eps", hostile.ENDLESS_EPS)
    queue(bench, "endless.eps")
    worker = start_worker(bench, PTIF_STOP_GRACE_SECONDS="1")
    try:
        assert wait_for(lambda: ghostscripts_of(worker.pid), 60, step=0.05), "gs never started"
        gs = ghostscripts_of(worker.pid)
        worker.send_signal(getattr(signal, how))
        worker.communicate(timeout=30)
        assert wait_for(lambda: not alive(gs), 5), f"left running: {alive(gs)}"
    finally:
        worker.kill()
        worker.communicate()
    left = list(bench.tmp.glob(f"{sandbox.SCRATCH_PREFIX}*"))
    assert len(left) == 1  # the worker had no time to remove it, so the next process does
    assert sandbox.sweep(bench.tmp) == left and not left[0].exists()


@needs_gs
def test_the_time_limit_fails_an_endless_eps_and_the_batch_converts(tmp_path: Path) -> None:
    bench = folder_bench(tmp_path)
    add_images(bench, SMALL)
    put_source(bench.source, "endless.eps", hostile.ENDLESS_EPS)
    queue(bench, "endless.eps")
    worker = start_worker(bench, "--max-seconds", "3")
    _, stderr = worker.communicate(timeout=300)
    assert worker.returncode == 1, stderr
    failed = failures(bench)
    assert list(failed) == ["endless.eps"]
    assert failed["endless.eps"]["code"] == TOO_SLOW
    assert "--max-seconds" in failed["endless.eps"]["message"]
    assert pending(bench) == []
    verify_all(bench, SMALL)
    assert ghostscripts_of(worker.pid) == []


#: Runs ``ptif`` in this process and writes its own peak RSS (children not included) to the
#: file named by PTIF_TEST_PEAK_RSS when it exits.
PEAK_WRAPPER = """
import atexit, os, sys
def peak_of_this_process():
    # VmHWM: this process's own peak RSS. ru_maxrss would start at the RSS of the process
    # that started it (exec folds the old address space's peak into it).
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith("VmHWM:"))
    return str(int(line.split()[1]) * 1024)
def report():
    with open(os.environ["PTIF_TEST_PEAK_RSS"], "w") as out:
        out.write(peak_of_this_process())
atexit.register(report)
sys.argv = ["ptif", *sys.argv[1:]]
from ptif.cli import run
sys.exit(run())
"""


def test_pdf_bombs_fail_alone_and_the_worker_stays_small(tmp_path: Path) -> None:
    bench = folder_bench(tmp_path)
    add_images(bench, SMALL)
    bombs = {"big-page.pdf": hostile.big_page_pdf(), "nested.pdf": hostile.nested_forms_pdf(9)}
    for key, data in bombs.items():
        put_source(bench.source, key, data)
        queue(bench, key)
    peak = tmp_path / "peak"
    done = subprocess.run(
        [sys.executable, "-c", PEAK_WRAPPER, "process", "--workers", "2", "--quiet",
         "--max-memory", "512M"],
        env=bench.env(PTIF_TEST_PEAK_RSS=str(peak)),
        cwd=bench.root,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    failed = failures(bench)
    assert sorted(failed) == sorted(bombs)
    assert {record["code"] for record in failed.values()} == {TOO_LARGE}
    assert all("--max-memory" in record["message"] for record in failed.values())
    verify_all(bench, SMALL)
    assert 0 < int(peak.read_text()) < WORKER_PEAK_BOUND


@needs_gs
def tiles(data: bytes) -> list[bytes]:
    """Every tile of every level of a pyramid TIFF, as stored."""
    with tifffile.TiffFile(io.BytesIO(data)) as tif:
        return [
            data[offset : offset + size]
            for page in tif.pages
            for offset, size in zip(page.dataoffsets, page.databytecounts, strict=True)
        ]


def test_a_snooping_eps_in_a_batch_changes_no_other_output(tmp_path: Path) -> None:
    clean = folder_bench(tmp_path / "clean")
    add_images(clean, SMALL)
    done = start_worker(clean)
    assert done.wait(timeout=300) == 0, done.communicate()[1]

    bench = folder_bench(tmp_path / "attacked")
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "id_rsa").write_bytes(b"a key")
    add_images(bench, SMALL)
    roots = [bench.tmp, home, *(Path(url) for url in bench.urls.values())]
    eps = hostile.snooping_eps(
        inside=tmp_path,
        attack=[f"{root}/*" for root in roots],
        writes=[f"{root}/owned" for root in roots],
        look=["/tmp/*"],
        reads=["/etc/passwd"],
        wait_ms=3000,
    )
    put_source(bench.source, "snoop.eps", eps)
    queue(bench, "snoop.eps")
    sources = files_under(Path(bench.urls["source"]))
    worker = start_worker(bench, HOME=str(home))
    _, stderr = worker.communicate(timeout=300)
    assert worker.returncode == 0, stderr
    assert files_under(Path(bench.urls["source"])) == sources
    assert files_under(home) == {".ssh/id_rsa": b"a key"}
    for key in SMALL:  # the same tiles; the files differ only in the eTag each one records
        attacked, plain = (tiles(b.images.get_bytes(output_key(key))[0]) for b in (bench, clean))
        assert attacked == plain, key
    local = tmp_path / "snoop.tif"
    local.write_bytes(bench.images.get_bytes(output_key("snoop.eps"))[0])
    assert centre(local) == list(hostile.SNOOP_BLIND)
    assert sorted(keys(bench.images)) == sorted(output_key(k) for k in [*SMALL, "snoop.eps"])
    assert [p for p in bench.root.rglob("owned")] == []
