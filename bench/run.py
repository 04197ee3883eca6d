"""Benchmark `ptif convert` against the minimal libvips conversion with the same settings.

Usage: .venv/bin/python bench/run.py [--only NAME] [--repeat N] [--skip-gigapixel]
                                     [--skip-e2e] [--ptif-cmd CMD] [--timeout S]
                                     [--many N] [--many-workers N] [--latency-markers N]
                                     [--poll S]

`--only e2e` runs just the end-to-end section (bench/e2e.py).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import e2e
import pyvips
from images import INPUTS, Input, ensure

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
OUT = BENCH / "out"
INPUT_DIR = OUT / "inputs"
RESULT_DIR = OUT / "results"
LOG_DIR = OUT / "logs"
JSON_PATH = OUT / "results.json"
BASELINE = BENCH / "baseline.py"
MEASURE = BENCH / "measure.py"

DEFAULT_PTIF = ".venv/bin/ptif convert"
TOOLS = ("ptif", "libvips")
GIGAPIXEL = "gigapixel"
E2E = "e2e"
WALL_RATIO_TARGET = 1.10
GIGAPIXEL_RSS_TARGET = 1 << 30
MIB = 1 << 20
BIGTIFF_MAGIC = (b"II+\x00", b"MM\x00+")
METRICS = ("wall_s", "cpu_s", "peak_rss_bytes", "output_bytes")


@dataclass(frozen=True)
class Sample:
    wall_s: float
    cpu_s: float
    peak_rss_bytes: int
    output_bytes: int
    exit_code: int


@dataclass
class ToolRun:
    command: list[str] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    output: dict[str, Any] = field(default_factory=dict)
    error: str = ""

    @property
    def ok(self) -> bool:
        return bool(self.samples) and all(s.exit_code == 0 for s in self.samples)

    def median(self) -> dict[str, float] | None:
        good = [s for s in self.samples if s.exit_code == 0]
        if not good:
            return None
        return {m: statistics.median(getattr(s, m) for s in good) for m in METRICS}

    def wall_spread(self) -> float | None:
        """(slowest - fastest) / median wall time, in percent."""
        walls = [s.wall_s for s in self.samples if s.exit_code == 0]
        if len(walls) < 2:
            return None
        return 100 * (max(walls) - min(walls)) / statistics.median(walls)


@dataclass
class Case:
    item: Input
    source: Path
    runs: dict[str, ToolRun]

    def ratio(self, metric: str) -> float | None:
        ptif, vips = self.runs["ptif"].median(), self.runs["libvips"].median()
        if not (ptif and vips and self.runs["ptif"].ok) or vips[metric] <= 0:
            return None
        return ptif[metric] / vips[metric]


def parse_args(argv: list[str]) -> argparse.Namespace:
    names = [item.name for item in INPUTS]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--only",
        action="append",
        choices=[*names, E2E],
        help=f"run one image, or {E2E!r} for the end-to-end section (repeatable)",
    )
    parser.add_argument("--repeat", type=int, default=3, help="runs per tool (median reported)")
    parser.add_argument("--skip-gigapixel", action="store_true", help="leave out the 1 GP image")
    parser.add_argument(
        "--skip-e2e", action="store_true", help="leave out the end-to-end (SeaweedFS) section"
    )
    parser.add_argument(
        "--ptif-cmd",
        default=DEFAULT_PTIF,
        help=f"command that takes SRC DST (default: {DEFAULT_PTIF!r})",
    )
    parser.add_argument("--timeout", type=float, default=900, help="seconds before a run is killed")
    parser.add_argument(
        "--many",
        type=int,
        default=2000,
        help="small images for the many-workers run of the e2e section (0: leave it out; "
        "200 for a quick look)",
    )
    parser.add_argument(
        "--many-workers", type=int, default=8, help="ptif process processes in that run"
    )
    parser.add_argument(
        "--latency-markers",
        type=int,
        default=12,
        help="markers sent one at a time to an idle --follow worker (0: leave it out)",
    )
    parser.add_argument(
        "--poll", type=float, help="--poll of that worker (default: ptif's own default)"
    )
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    return args


def selected(args: argparse.Namespace) -> list[Input]:
    chosen = [i for i in INPUTS if not args.only or i.name in args.only]
    if args.skip_gigapixel:
        chosen = [i for i in chosen if i.name != GIGAPIXEL]
    if not chosen and not wants_e2e(args):
        sys.exit("run.py: no images selected")
    return chosen


def wants_e2e(args: argparse.Namespace) -> bool:
    return not args.skip_e2e and (not args.only or E2E in args.only)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def generate(items: list[Input]) -> dict[str, float | None]:
    seconds: dict[str, float | None] = {}
    for item in items:
        log(f"input {item.name}: {item.description}")
        seconds[item.name] = ensure(item, INPUT_DIR)
        took = seconds[item.name]
        log(f"  {'cached' if took is None else f'generated in {took:.1f} s'}")
    return seconds


def warm(path: Path) -> None:
    os.sync()
    with path.open("rb") as stream:
        while stream.read(8 * MIB):
            pass


def is_bigtiff(path: Path) -> bool:
    with path.open("rb") as stream:
        return stream.read(4) in BIGTIFF_MAGIC


def ptif_command(args: argparse.Namespace, src: Path, dst: Path) -> list[str]:
    return [*shlex.split(args.ptif_cmd), str(src), str(dst)]


def baseline_command(item: Input, src: Path, dst: Path, bigtiff: bool) -> list[str]:
    flags = [flag for flag, wanted in (("--srgb", item.to_srgb), ("--bigtiff", bigtiff)) if wanted]
    return [sys.executable, str(BASELINE), str(src), str(dst), *flags]


def run_child(command: list[str], dst: Path, log_path: Path, timeout: float) -> Sample:
    dst.unlink(missing_ok=True)
    result_path = log_path.with_suffix(".json")
    launcher = [sys.executable, "-S", str(MEASURE), str(result_path), str(timeout)]
    with log_path.open("wb") as sink:
        subprocess.run(
            [*launcher, *command],
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
            check=True,
        )
    result = json.loads(result_path.read_text())
    return Sample(**result, output_bytes=dst.stat().st_size if dst.exists() else 0)


def describe_image(path: Path) -> dict[str, Any]:
    image = pyvips.Image.new_from_file(str(path))
    fields = image.get_fields()
    return {
        "width": image.width,
        "height": image.height,
        "bands": image.bands,
        "format": image.format,
        "interpretation": image.interpretation,
        "pages": image.get("n-pages") if "n-pages" in fields else 1,
        "subifds": image.get("n-subifds") if "n-subifds" in fields else 0,
    }


def describe_output(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        return {**describe_image(path), "bigtiff": is_bigtiff(path)}
    except pyvips.Error as error:
        return {"unreadable": str(error).strip()}


def tail(path: Path, lines: int = 15) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def report_sample(name: str, tool: str, rep: int, sample: Sample) -> None:
    status = "" if sample.exit_code == 0 else f"  EXIT {sample.exit_code}"
    log(
        f"  {name} {tool} run {rep}: {sample.wall_s:.2f} s wall, {sample.cpu_s:.2f} s CPU, "
        f"{sample.peak_rss_bytes / MIB:.0f} MiB peak{status}"
    )


def bench_case(item: Input, args: argparse.Namespace) -> Case:
    src = INPUT_DIR / item.filename
    case = Case(item, src, {tool: ToolRun() for tool in TOOLS})
    dst = {tool: RESULT_DIR / f"{item.name}.{tool}.tif" for tool in TOOLS}
    bigtiff = False
    warm(src)
    for rep in range(args.repeat):
        for tool in TOOLS if rep % 2 == 0 else TOOLS[::-1]:
            command = (
                ptif_command(args, src, dst[tool])
                if tool == "ptif"
                else baseline_command(item, src, dst[tool], bigtiff)
            )
            log_path = LOG_DIR / f"{item.name}.{tool}.log"
            sample = run_child(command, dst[tool], log_path, args.timeout)
            os.sync()
            run = case.runs[tool]
            run.command, run.samples = command, [*run.samples, sample]
            report_sample(item.name, tool, rep + 1, sample)
            if sample.exit_code != 0:
                run.error = tail(log_path)
            elif tool == "ptif":
                bigtiff = is_bigtiff(dst[tool])
    for tool in TOOLS:
        case.runs[tool].output = describe_output(dst[tool])
    return case


def fmt(value: float | None, scale: float = 1.0, width: int = 8, digits: int = 2) -> str:
    return f"{'-':>{width}}" if value is None else f"{value / scale:>{width}.{digits}f}"


def table_rows(case: Case) -> list[str]:
    rows = []
    for tool in TOOLS:
        median = case.runs[tool].median() or {}
        ratios = (case.ratio("wall_s"), case.ratio("cpu_s")) if tool == "ptif" else (None, None)
        failed = "" if case.runs[tool].ok else "  FAILED"
        rows.append(
            f"{case.item.name if tool == 'ptif' else '':<10} {tool:<8}"
            f"{fmt(median.get('wall_s'))}{fmt(median.get('cpu_s'))}"
            f"{fmt(median.get('peak_rss_bytes'), MIB, 10, 0)}"
            f"{fmt(median.get('output_bytes'), MIB, 9, 1)}"
            f"{fmt(case.runs[tool].wall_spread(), width=8, digits=0)}"
            f"{fmt(ratios[0])}{fmt(ratios[1])}{failed}"
        )
    return rows


def print_table(cases: list[Case]) -> None:
    header = (
        f"{'image':<10} {'tool':<8}{'wall s':>8}{'CPU s':>8}{'peak MiB':>10}"
        f"{'out MiB':>9}{'spread%':>8}{'wall x':>8}{'CPU x':>8}"
    )
    print(header)
    print("-" * len(header))
    for case in cases:
        print("\n".join(table_rows(case)))
    print("(medians; spread% = wall (max - min) / median; x = ptif / libvips)")


def ratio_verdict(cases: list[Case]) -> tuple[str, str]:
    target = f"default profile ratio (wall) <= {WALL_RATIO_TARGET:.2f}"
    failed = [c.item.name for c in cases if not c.runs["ptif"].ok]
    ratios = {c.item.name: c.ratio("wall_s") for c in cases}
    detail = ", ".join(f"{n} {r:.2f}" for n, r in ratios.items() if r is not None)
    if failed:
        return "FAIL", f"{target}  (ptif failed on {', '.join(failed)}; {detail})"
    known = [r for r in ratios.values() if r is not None]
    passed = bool(known) and max(known) <= WALL_RATIO_TARGET
    return ("PASS" if passed else "FAIL"), f"{target}  ({detail})"


def memory_verdict(cases: list[Case]) -> tuple[str, str]:
    target = "1-gigapixel peak memory < 1 GiB"
    giga = next((c for c in cases if c.item.name == GIGAPIXEL), None)
    if giga is None:
        return "SKIP", f"{target}  (gigapixel image not run)"
    run = giga.runs["ptif"]
    median = run.median()
    if not run.ok or median is None:
        return "FAIL", f"{target}  (ptif failed on {GIGAPIXEL})"
    peak = max(s.peak_rss_bytes for s in run.samples)
    verdict = "PASS" if peak < GIGAPIXEL_RSS_TARGET else "FAIL"
    return verdict, f"{target}  (ptif peak {peak / MIB:.0f} MiB, worst of {len(run.samples)})"


def print_failures(cases: list[Case]) -> None:
    for case in cases:
        for tool, run in case.runs.items():
            if run.error:
                print(f"\n{case.item.name} {tool} failed ({shlex.join(run.command)}):")
                print(run.error)


def package_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def meta(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "memory_bytes": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"),
        "python": platform.python_version(),
        "libvips": ".".join(str(pyvips.version(i)) for i in range(3)),
        "pyvips": package_version("pyvips"),
        "ptif": package_version("ptif"),
        "ptif_cmd": args.ptif_cmd,
        "ptif_is_stand_in": args.ptif_cmd != DEFAULT_PTIF,
        "repeat": args.repeat,
    }


def case_json(case: Case) -> dict[str, Any]:
    tools = {
        tool: {
            "command": run.command,
            "ok": run.ok,
            "median": run.median(),
            "samples": [asdict(s) for s in run.samples],
            "output": run.output,
            "error": run.error,
        }
        for tool, run in case.runs.items()
    }
    return {
        "description": case.item.description,
        "source": {
            "path": str(case.source.relative_to(ROOT)),
            "bytes": case.source.stat().st_size,
            **describe_image(case.source),
        },
        "tools": tools,
        "ratio": {"wall": case.ratio("wall_s"), "cpu": case.ratio("cpu_s")},
    }


def write_json(
    args: argparse.Namespace,
    generation: dict[str, float | None],
    cases: list[Case],
    verdicts: list[tuple[str, str]],
    end_to_end: dict[str, Any] | None,
) -> None:
    document = {
        "meta": meta(args),
        "generation_seconds": generation,
        "images": {case.item.name: case_json(case) for case in cases},
        "verdicts": [{"verdict": v, "target": t} for v, t in verdicts],
    }
    if end_to_end is not None:
        document["e2e"] = end_to_end
    JSON_PATH.write_text(json.dumps(document, indent=2) + "\n")


def image_section(args: argparse.Namespace, cases: list[Case]) -> list[tuple[str, str]]:
    kind = "stand-in" if args.ptif_cmd != DEFAULT_PTIF else "real CLI"
    print(f"\nptif side: {args.ptif_cmd} ({kind}); libvips {meta(args)['libvips']}; ", end="")
    print(f"median of {args.repeat} run(s)\n")
    print_table(cases)
    verdicts = [ratio_verdict(cases), memory_verdict(cases)]
    print()
    for verdict, target in verdicts:
        print(f"{verdict}  {target}")
    print_failures(cases)
    return verdicts


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    items = selected(args)
    for directory in (INPUT_DIR, RESULT_DIR, LOG_DIR):
        directory.mkdir(parents=True, exist_ok=True)
    generation = generate(items)
    cases = [bench_case(item, args) for item in items]
    verdicts = image_section(args, cases) if cases else []
    end_to_end = None
    if wants_e2e(args):
        cost_options = {
            "many": args.many,
            "many_workers_count": args.many_workers,
            "latency_markers": args.latency_markers,
            "poll": args.poll,
        }
        e2e_verdicts, end_to_end = e2e.run_e2e(
            args.repeat, args.timeout, log, cost_options=cost_options
        )
        verdicts += e2e_verdicts
    write_json(args, generation, cases, verdicts, end_to_end)
    print(f"\nresults: {JSON_PATH.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
