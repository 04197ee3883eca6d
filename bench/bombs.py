"""What hostile files cost: peak memory and wall time of `ptif convert` on decoder bombs.

Usage: .venv/bin/python bench/bombs.py [--only NAME] [--max-memory SIZE] [--max-seconds S]
                                       [--timeout S]

Each bomb is generated into a temporary folder (tests/hostile.py and tests/bombs.py build the
bytes) and
converted by a fresh `ptif convert` process, run in its own process group by a small launcher
so that everything it starts is counted and, at the timeout, killed. Printed per bomb: the exit
code, the failure line, the wall time, the peak RSS of the ptif process itself, the peak RSS of
the largest process of the tree (``wait4``: ptif or a decoder child it waited for), and the
largest sum of the RSS of ptif and all its descendants, sampled every 0.1 s from /proc (this
one also counts a decoder that was never waited for), and the most its temporary folder (its
TMPDIR, where decoders get their scratch folders) took on disk, sampled likewise. A tree
killed by the bench's own timeout is marked ``killed``; its descendants are found and killed
too.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import bombs  # noqa: E402
import hostile  # noqa: E402

MIB = 1 << 20

#: Runs ptif's command line in this process and, however it ends (short of a signal), writes
#: the process's own peak RSS to the file named by PTIF_BENCH_SELF_RSS.
WRAPPER = """
import atexit, os, sys
def peak_of_this_process():
    # VmHWM: this process's own peak RSS. ru_maxrss would start at the RSS of the process
    # that started it (exec folds the old address space's peak into it).
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith("VmHWM:"))
    return str(int(line.split()[1]) * 1024)
def report():
    with open(os.environ["PTIF_BENCH_SELF_RSS"], "w") as out:
        out.write(peak_of_this_process())
atexit.register(report)
sys.argv = ["ptif", *sys.argv[1:]]
from ptif.cli import run
sys.exit(run())
"""


def bmp_196mp(folder: Path) -> Path:
    """A 14000 x 14000 24-bit BMP (196 megapixels, 588 MB): over Pillow's own bomb limit,
    under ptif's default budget."""
    side = 14000
    path = folder / "big.bmp"
    with open(path, "wb") as out:
        out.write(hostile.big_bmp_header(side, side))
        out.truncate(54 + hostile.bmp_row_bytes(side) * side)
    return path


def writer(name: str, data: bytes) -> Callable[[Path], Path]:
    def write(folder: Path) -> Path:
        path = folder / name
        path.write_bytes(data)
        return path

    return write


def avif_forged_ispe(folder: Path) -> Path:
    """A 1000 x 1000 AVIF of noise (620 kB) whose 'ispe' property declares 16000 x 16000."""
    import struct

    import pyvips

    noise = pyvips.Image.gaussnoise(1000, 1000, mean=128, sigma=40).cast("uchar")
    data = bytearray(noise.bandjoin([noise, noise]).heifsave_buffer(compression="av1", Q=90))
    at = data.find(b"ispe") + 8
    data[at : at + 8] = struct.pack(">II", 16000, 16000)
    path = folder / "forged.avif"
    path.write_bytes(data)
    return path


BOMBS: dict[str, Callable[[Path], Path]] = {
    "pdf-big-page": writer("big-page.pdf", hostile.big_page_pdf()),
    "pdf-nested-7": writer("nested-7.pdf", hostile.nested_forms_pdf(7)),
    "pdf-nested-9": writer("nested-9.pdf", hostile.nested_forms_pdf(9)),
    "eps-endless": writer("endless.eps", hostile.ENDLESS_EPS),
    "eps-greedy": writer("greedy.eps", hostile.GREEDY_EPS),
    "bmp-196mp": bmp_196mp,
    "jpeg-scans": lambda folder: bombs.scan_bomb_jpeg(folder / "scans.jpg", 16000),
    "jpeg-metadata": lambda folder: bombs.metadata_bomb_jpeg(folder / "meta.jpg", 6000),
    "eps-scratch": writer("scratch.eps", hostile.scratch_filling_eps(20, 64)),
    "eps-noise": writer("noise.eps", hostile.noise_eps(12000, 4000)),  # honest: a 137 MiB PNG
    "avif-ispe": avif_forged_ispe,
}


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", choices=sorted(BOMBS))
    parser.add_argument("--max-memory", help="passed to ptif convert")
    parser.add_argument("--max-seconds", help="passed to ptif convert")
    parser.add_argument("--timeout", type=float, default=120, help="the bench's own limit (s)")
    return parser.parse_args(argv)


def run_one(src: Path, folder: Path, args: argparse.Namespace) -> dict[str, object]:
    command = [sys.executable, "-c", WRAPPER, "convert", str(src), str(folder / "out.tif")]
    if args.max_memory:
        command += ["--max-memory", args.max_memory]
    if args.max_seconds:
        command += ["--max-seconds", args.max_seconds]
    self_rss = folder / "self-rss"
    self_rss.unlink(missing_ok=True)
    tmp = folder / "tmp"
    tmp.mkdir(exist_ok=True)
    env = dict(os.environ, PTIF_BENCH_SELF_RSS=str(self_rss), TMPDIR=str(tmp))
    err = folder / "stderr"
    started = time.perf_counter()
    with open(err, "wb") as stderr:
        child = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=stderr,
                                 process_group=0)  # fmt: skip
    killed = False
    deadline = started + args.timeout
    tree_sum = disk = 0
    family: set[int] = set()
    while True:
        family |= descendants(child.pid)
        tree_sum = max(tree_sum, sum(rss(pid) for pid in {child.pid} | family))
        disk = max(disk, disk_use(tmp))
        pid, status, usage = os.wait4(child.pid, os.WNOHANG)
        if pid:
            break
        if time.perf_counter() > deadline and not killed:
            for member in family | {child.pid}:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(member, signal.SIGKILL)
            killed = True
        time.sleep(0.1)
    child.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - started
    for member in family:  # a decoder that outlived ptif (an orphan) goes too
        with contextlib.suppress(ProcessLookupError):
            os.kill(member, signal.SIGKILL)
    lines = err.read_text(errors="replace").strip().splitlines()
    return {
        "exit": child.returncode,
        "killed": killed,
        "wall_s": wall,
        "self_rss": int(self_rss.read_text()) if self_rss.exists() else None,
        "tree_rss": usage.ru_maxrss * 1024,
        "tree_sum": tree_sum,
        "disk": disk,
        "message": lines[-1][:200] if lines else "",
    }


def descendants(root: int) -> set[int]:
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    text = stat.read()
            except OSError:
                continue
            parents[int(entry)] = int(text[text.rindex(")") + 2 :].split()[1])
    found: set[int] = set()
    frontier = {root}
    while frontier:
        frontier = {pid for pid, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def disk_use(folder: Path) -> int:
    total = 0
    for root, _, names in os.walk(folder):
        for name in names:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, name)).st_blocks * 512
    return total


def rss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def mib(value: object) -> str:
    return f"{int(value) / MIB:,.0f} MiB" if isinstance(value, int) else "-"


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    names = args.only or list(BOMBS)
    columns = (
        f"{'exit':>6} {'wall':>7} {'ptif':>10} {'largest':>10} {'tree sum':>10} {'tmp disk':>10}"
    )
    print(f"{'bomb':14} {columns}  message")
    for name in names:
        with tempfile.TemporaryDirectory(prefix="ptif-bomb-") as tmp:
            folder = Path(tmp)
            result = run_one(BOMBS[name](folder), folder, args)
        exit_text = "killed" if result["killed"] else str(result["exit"])
        print(
            f"{name:14} {exit_text:>6} {result['wall_s']:>6.1f}s {mib(result['self_rss']):>10} "
            f"{mib(result['tree_rss']):>10} {mib(result['tree_sum']):>10} "
            f"{mib(result['disk']):>10}  {result['message']}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
