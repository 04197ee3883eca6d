"""A batch where honest images and hostile ones share a folder source, run as an operator runs
it: ``ptif mark``, then ``ptif process --max-memory 512M --max-seconds 20`` as real processes
whose HOME, TMPDIR and working folder are inside the test's own folder.

What must hold (docs/security.md): every honest image converts as it would alone; every hostile
one fails alone with its own code (bombs ``too-large``, ``too-complex``, ``pixel-budget`` or
``too-slow``, a FIFO or symlink swapped in after marking ``not-a-file``); the snooping EPS
reaches nothing; the run ends with exit 1 and no traceback, leaves no process behind and
nothing changed outside the stores it writes; the worker's own peak memory stays small, however
much its decoders took.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import hostile
import pytest
import pyvips
from bombs import dense_forged_jpeg, forged_jpeg, interlaced_png, scan_bomb_jpeg
from corpus import Corpus, Sample, require_gs
from pyramids import probe_ok, probe_value, read_pixels
from store_helpers import PTIF, Bench, failures, fetch, folder_bench, put_source, verify_output

from ptif.convert import sandbox
from ptif.errors import (
    DISK_FULL,
    NOT_A_FILE,
    PIXEL_BUDGET,
    TOO_COMPLEX,
    TOO_LARGE,
    TOO_SLOW,
    PtifError,
)
from ptif.queue.outputs import output_key
from ptif.stores import FolderStore

MIB = 2**20
LIMITS = ("--max-memory", "512M", "--max-seconds", "20")
#: The worker converting small images holds about 100 MiB; a bomb decoded in it held GBs.
WORKER_PEAK_BOUND = 400 * MIB
#: Runs ``ptif`` in this process and writes its own peak RSS (VmHWM: its children and the
#: process that started it not included) to the file named by PTIF_TEST_PEAK_RSS at exit.
PEAK_WRAPPER = """
import atexit, os, sys
def report():
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith("VmHWM:"))
    with open(os.environ["PTIF_TEST_PEAK_RSS"], "w") as out:
        out.write(str(int(line.split()[1]) * 1024))
atexit.register(report)
sys.argv = ["ptif", *sys.argv[1:]]
from ptif.cli import run
sys.exit(run())
"""

HONEST = {
    # source key: corpus sample
    "honest/photo.jpg": "jpeg_srgb",
    "honest/alpha.png": "png_rgba",
    "honest/pages.tif": "tiff_three_pages",
    "honest/document.pdf": "pdf_three_pages",
    "honest/drawing.eps": "eps_two_inch",
}


#: A bomb that grows its memory step by step meets the memory limit first on a quiet machine,
#: and the time limit first on a loaded one: either budget stops it.
GROWS = frozenset({TOO_LARGE, TOO_SLOW})


def hostile_files(root: Path, corpus: Corpus) -> dict[str, tuple[bytes, str | frozenset[str]]]:
    """Source key → (bytes, the failure code it must get, or the codes it may get)."""
    made = root / "made"
    made.mkdir()
    progressive = dense_forged_jpeg(made / "progressive.jpg", 20_000, 20_000)
    interlaced = interlaced_png(made / "interlaced.png", 9000, 9000)  # 16-bit RGBA: 648 MB
    dense = forged_jpeg(made / "dense.jpg", 20_000, 20_000, progressive=False)
    return {
        "bombs/big-page.pdf": (hostile.big_page_pdf(), TOO_LARGE),
        "bombs/nested-forms.pdf": (hostile.nested_forms_pdf(9), GROWS),
        "bombs/endless.eps": (hostile.ENDLESS_EPS, TOO_SLOW),
        "bombs/greedy.eps": (hostile.GREEDY_EPS, GROWS),
        "bombs/progressive.jpg": (progressive.read_bytes(), TOO_LARGE),
        "bombs/interlaced.png": (interlaced.read_bytes(), TOO_LARGE),
        "bombs/dense.jpg": (dense.read_bytes(), TOO_LARGE),
        "bombs/giant.png": (corpus.bad("giant_png_header").path.read_bytes(), PIXEL_BUDGET),
        "bombs/scans.jpg": (scan_bomb_jpeg(made / "scans.jpg", 16_000).read_bytes(), TOO_COMPLEX),
    }


class Decoys:
    """Files a hostile upload would like to read or rewrite, all inside the test's folder:
    HOME's keys, another run's download in TMPDIR, and an image outside the stores that a
    symlink in the source points at."""

    def __init__(self, root: Path, bench: Bench) -> None:
        self.home = root / "home"
        self.outside = root / "outside"
        files = {
            self.home / ".ssh" / "id_rsa": b"a private key",
            self.home / ".aws" / "credentials": b"[default]\naws_secret_access_key = x\n",
            bench.tmp / "ptif-work-other" / "victim.src": b"another run's download",
            self.outside / "secret.jpg": _colour_jpeg((0, 0, 255)),
        }
        for path, data in files.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        self.watched = [self.home, self.outside, bench.tmp, Path(bench.urls["source"])]

    def snapshot(self) -> dict[str, bytes]:
        return {
            str(path): path.read_bytes() if path.is_file() and not path.is_symlink() else b"<>"
            for folder in self.watched
            for path in sorted(folder.rglob("*"))
        }


def _colour_jpeg(colour: tuple[int, int, int]) -> bytes:
    image = (pyvips.Image.black(200, 100, bands=3) + list(colour)).cast("uchar")
    return bytes(image.jpegsave_buffer(Q=90))


class ProcessTree:
    """Every process descended from ``root`` while it runs, sampled from /proc: its start time
    (a pid may be reused), the names it had (the sandbox's launcher becomes Ghostscript) and
    the working folders it had."""

    def __init__(self, root: int) -> None:
        self.root = root
        self.seen: dict[int, tuple[int, set[str], set[str]]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.is_set():
            table = _processes()
            children: dict[int, list[int]] = {}
            for pid, (ppid, _, _, _) in table.items():
                children.setdefault(ppid, []).append(pid)
            todo = list(children.get(self.root, []))
            while todo:
                pid = todo.pop()
                todo += children.get(pid, [])
                _, _, start, name = table[pid]
                try:
                    cwd = os.readlink(f"/proc/{pid}/cwd")
                except OSError:
                    continue
                _, names, cwds = self.seen.setdefault(pid, (start, set(), set()))
                names.add(name)
                cwds.add(cwd)
            self._stop.wait(0.02)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def alive(self) -> list[str]:
        table = _processes()
        return [
            f"{pid} {'/'.join(sorted(names))}"
            for pid, (start, names, _) in self.seen.items()
            if pid in table and table[pid][2] == start and table[pid][1] != "Z"
        ]


def _processes() -> dict[int, tuple[int, str, int, str]]:
    """pid → (parent pid, state, start time, command name)."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                stat = handle.read()
        except OSError:
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        found[int(entry)] = (int(fields[1]), fields[0], int(fields[19]), name)
    return found


def swap_for_fifo(bench: Bench, key: str) -> None:
    path = Path(bench.urls["source"], key)
    path.unlink()
    os.mkfifo(path)


def swap_for_symlink(bench: Bench, key: str, target: Path) -> None:
    path = Path(bench.urls["source"], key)
    path.unlink()
    path.symlink_to(target)


def assert_converted(bench: Bench, key: str, sample: Sample) -> None:
    verify_output(bench, key, (sample.width, sample.height))
    local, _ = fetch(bench.images, output_key(key), bench.root / "verify")
    pixels = read_pixels(local)
    for probe in sample.probes:
        value = probe_value(pixels, probe)
        assert probe_ok(value, probe), f"{key}: {probe.describe()}: got {value}"
    local.unlink()


def centre(bench: Bench, key: str) -> list[int]:
    local, _ = fetch(bench.images, output_key(key), bench.root / "verify")
    image = pyvips.Image.new_from_file(str(local))
    return [round(v) for v in image.getpoint(image.width // 2, image.height // 2)]


@pytest.mark.slow
def test_a_hostile_batch_fails_alone_and_touches_nothing(tmp_path: Path, corpus: Corpus) -> None:
    require_gs()
    bench = folder_bench(tmp_path)
    decoys = Decoys(tmp_path, bench)
    samples = {key: corpus.sample(name) for key, name in HONEST.items()}
    for key, sample in samples.items():
        put_source(bench.source, key, sample.path.read_bytes())
    bombs = hostile_files(tmp_path, corpus)
    for key, (data, _) in bombs.items():
        put_source(bench.source, key, data)
    roots = [bench.tmp, decoys.home, decoys.home / ".ssh", decoys.outside, tmp_path,
             *(Path(url) for url in bench.urls.values())]  # fmt: skip
    snoop = hostile.snooping_eps(
        inside=tmp_path,
        attack=[f"{root}/*" for root in roots],
        writes=[f"{root}/owned" for root in roots],
        look=["/etc/*"],
        reads=["/etc/passwd", "/proc/self/environ"],
        wait_ms=3000,
    )
    put_source(bench.source, "snoop.eps", snoop)
    swapped = ["swapped/fifo.jpg", "swapped/link.jpg"]
    for key in swapped:
        put_source(bench.source, key, _colour_jpeg((0, 200, 0)))
    env = bench.env(
        HOME=str(decoys.home),
        GS_OPTIONS="-dNOSAFER",  # the worker's environment must not reach Ghostscript
        PTIF_TEST_PEAK_RSS=str(tmp_path / "peak"),
    )
    marked = subprocess.run(
        [*PTIF, "mark", "--quiet"], env=env, cwd=tmp_path, capture_output=True, text=True,
        timeout=120, check=False,
    )  # fmt: skip
    assert marked.returncode == 0, marked.stderr
    # Swapped after marking: the worker meets a FIFO and a symlink where a file was queued.
    swap_for_fifo(bench, swapped[0])
    swap_for_symlink(bench, swapped[1], decoys.outside / "secret.jpg")
    before = decoys.snapshot()

    started = time.monotonic()
    worker = subprocess.Popen(
        [sys.executable, "-c", PEAK_WRAPPER, "process", "--workers", "2", *LIMITS],
        env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    tree = ProcessTree(worker.pid)
    try:
        _, stderr = worker.communicate(timeout=600)
    finally:
        worker.kill()
        tree.stop()
    seconds = time.monotonic() - started

    assert worker.returncode == 1, stderr
    assert "Traceback" not in stderr, stderr
    expected = {key: code for key, (_, code) in bombs.items()}
    expected |= dict.fromkeys(swapped, NOT_A_FILE)
    records = {key: (record["code"], record["attempts"]) for key, record in failures(bench).items()}
    assert sorted(records) == sorted(expected)
    for key, (code, attempts) in records.items():
        wanted = expected[key]
        assert code in wanted if isinstance(wanted, frozenset) else code == wanted, (key, code)
        assert attempts == 1, (key, attempts)
    for key, sample in samples.items():
        assert_converted(bench, key, sample)
    assert centre(bench, "snoop.eps") == list(hostile.SNOOP_BLIND)
    outputs = sorted(info.key for info in bench.images.list())
    assert outputs == sorted(output_key(key) for key in [*samples, "snoop.eps"])
    # The endless EPS holds one slot for its 20 s; everything else fits beside it.
    assert seconds < 20 * 6, f"the batch took {seconds:.0f} s"
    assert tree.alive() == [], "left running"
    assert any("gs" in names for _, names, _ in tree.seen.values()), "Ghostscript never ran"
    cwds = {cwd for _, _, seen in tree.seen.values() for cwd in seen}
    outside = [cwd for cwd in cwds if not cwd.startswith(f"{tmp_path}/")]
    assert outside == [], "a process worked outside the test's folder"
    assert decoys.snapshot() == before  # TMPDIR back to the decoys alone: scratch folders gone
    assert list(tmp_path.rglob("owned")) == []
    assert 0 < int((tmp_path / "peak").read_text()) < WORKER_PEAK_BOUND


# What the batch does not cover: breaks found by the same attacks, pinned for the fix ---------


def test_a_download_that_fills_the_local_disk_is_disk_full(tmp_path: Path) -> None:
    """A sparse file costs its uploader nothing (``truncate -s 50G`` on a share) and fills the
    worker's disk as it is downloaded: that must be ``disk-full``, retried, not an internal
    error with a traceback. /dev/full answers every write with ENOSPC."""
    store = FolderStore(tmp_path / "source")
    store.put_bytes("huge.jpg", b"\xff\xd8\xff" + bytes(1 << 20))
    local = tmp_path / "work" / "download.src"
    local.parent.mkdir()
    local.with_name(local.name + ".part").symlink_to("/dev/full")

    with pytest.raises(PtifError) as failed:
        store.get_file("huge.jpg", local)

    assert failed.value.code == DISK_FULL and not failed.value.permanent
    assert "huge.jpg" in str(failed.value)
    assert not local.exists()


def test_a_decoders_last_words_reach_the_operator_without_control_characters(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ghostscript's standard error is the PostScript program's to write: an EPS that prints an
    escape sequence (here one that retitles the terminal) and fails must not put it in the
    failure record, the log, or the terminal of whoever runs ``ptif convert``."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    (tmp_path / "source").write_bytes(b"")
    budget = sandbox.Budget(str(tmp_path / "source"), "EPS", "Ghostscript", 512 * MIB, 30)
    script = r"printf 'Error: all is well\033]0;owned\007, run this\n' >&2; exit 1"

    with pytest.raises(PtifError) as failed:
        sandbox.run(["sh", "-c", script], tmp_path / "source", budget, lambda out: None)

    message = str(failed.value)
    assert "Error: all is well\\x1b]0;owned\\x07, run this" in message
    assert message.isprintable()


def test_a_progressive_jpeg_with_hundreds_of_scans_is_stopped_in_time(tmp_path: Path) -> None:
    src = scan_bomb_jpeg(tmp_path / "scans.jpg", 8000)
    started = time.monotonic()
    done = subprocess.run(
        [*PTIF, "convert", str(src), str(tmp_path / "out.tif"), "--max-seconds", "1"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    seconds = time.monotonic() - started
    assert done.returncode == 1 and "more than 100 scans" in done.stderr, done.stderr
    assert len(done.stderr.splitlines()) == 1 and "Traceback" not in done.stderr
    assert seconds < 1 + 5, f"stopped after {seconds:.0f} s for a limit of 1 s"
    assert not (tmp_path / "out.tif").exists()
