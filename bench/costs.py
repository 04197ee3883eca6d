"""Per-image costs that predict scale: S3 requests, CPU, claim races and ``--follow`` latency.

Called by e2e.py (the end-to-end section of ``make bench``) with a running SeaweedFS. Every
figure is printed with its target, a verdict and the baseline it is judged against, measured in
the same run:

- **requests per image**: ``ptif process`` on a queue of small images, through the pass-through
  fault proxy of the tests (tests/fault_proxy.py), which records every request; an empty-queue
  run through the same proxy gives the one-off requests of a run, so what is left is the
  steady-state cost per image, by kind (LIST, GET, HEAD, PUT, DELETE, other) and by place
  (marker, claim, source, output, failure record, report);
- **many workers**: N ``ptif process`` processes at once on one queue of many small images:
  every image exactly once (the images bucket, the PUTs of each output, the run reports), the
  share of the workers' reaches for a marker (each begins with a read of the marker) that found
  it gone or lost its claim to another worker, and their CPU per image against one worker
  alone on a queue of one N-th of the images (the same work per process: start-up and
  run-level requests weigh the same per image). The same N processes at once, each on a queue
  of its own, are shown beside it: against one alone, they are what N processes on a few cores
  cost the machine (context switches, caches), which no queue can avoid; against them, the
  many workers are what sharing one queue costs (listings, races lost);
- **--follow latency**: from a marker's arrival to its pyramid's upload, with an idle worker.

The CPU of ``ptif process`` on S3 against local conversions is judged in e2e.py, on its
large photos (the per-image CPU of small images is mostly the requests').
"""

from __future__ import annotations

import json
import math
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote

import e2e

REQUESTS_TARGET = 8.0
RACE_TARGET = 0.05
MANY_CPU_TARGET = 1.2
LATENCY_SLACK_S = 5.0
#: A queue of this many small images for the request count (steady state).
REQUEST_QUEUE = 50
#: The many-workers run: this many images, this many processes (``--many``, ``--many-workers``).
MANY_IMAGES = 2000
MANY_WORKERS = 8
#: How many markers the latency run sends, one at a time.
LATENCY_MARKERS = 12
SMALL_SIDE = 64
DISTINCT_SMALL = 20
SMALL_DIR = e2e.OUT / "inputs" / "small"
PAGE = 1000
KINDS = ("LIST", "GET", "HEAD", "PUT", "DELETE", "other")
LOST_STATUSES = (404, 409, 412)


def fault_proxy_module() -> Any:
    e2e.s3_server_module()  # puts tests/ on the path
    import fault_proxy

    # The many-workers run makes tens of thousands of requests; the tests' cap is for tests.
    fault_proxy.MAX_REQUESTS = 10_000_000
    return fault_proxy


# inputs ------------------------------------------------------------------------------------------


def small_images(log: Callable[[str], None]) -> list[Path]:
    """A few distinct small JPEGs, reused under many keys (a key's bytes may repeat)."""
    from images import save_photo_jpeg

    SMALL_DIR.mkdir(parents=True, exist_ok=True)
    files = []
    for number in range(DISTINCT_SMALL):
        path = SMALL_DIR / f"small-{number:02d}-{SMALL_SIDE}.jpg"
        if not path.is_file():
            partial = path.with_name(f".{path.name}.partial")
            save_photo_jpeg(partial, SMALL_SIDE, SMALL_SIDE, seed=500 + number)
            partial.replace(path)
        files.append(path)
    return files


def upload_small(server: Any, bucket: str, files: list[Path], count: int, prefix: str) -> list[str]:
    """``count`` sources under ``prefix``, cycling through ``files``; their keys."""
    client = server.client()
    bodies = [path.read_bytes() for path in files]
    keys = [f"{prefix}{n // 100:03d}/img-{n:05d}.jpg" for n in range(count)]

    def put(number: int) -> None:
        body = bodies[number % len(bodies)]
        client.put_object(Bucket=bucket, Key=keys[number], Body=body)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(put, range(count)))
    return keys


# requests, as the proxy saw them -----------------------------------------------------------------


@dataclass(frozen=True)
class Roles:
    """Which bucket plays which part, to say where each request went."""

    source: str
    process: str
    images: str

    def place(self, bucket: str, key: str, query: str = "") -> str:
        if not key and (prefix := parse_qs(query).get("prefix")):
            key = prefix[0]  # a listing: where it looks
        if not key and "delete" in parse_qs(query, keep_blank_values=True):
            return "batch delete"  # DeleteObjects: the claims of finished images
        if bucket == self.source:
            return "source"
        if bucket == self.images:
            return "output"
        if bucket != self.process:
            return "elsewhere"
        top = key.split("/", 1)[0]
        return {
            "rbsc": "marker",
            "claims": "claim",
            "failed": "failure record",
            "reports": "report",
            "ptif-check": "store check",
        }.get(top, top or "bucket")


def kind_of(method: str, query: str) -> str:
    if method == "GET" and "list-type" in parse_qs(query):
        return "LIST"
    return method if method in KINDS else "other"


def split_target(target: str) -> tuple[str, str, str]:
    path, _, query = target.partition("?")
    bucket, _, key = unquote(path).lstrip("/").partition("/")
    return bucket, key, query


@dataclass
class Tally:
    """Requests by kind, by (kind, place), and the answers that lost a race."""

    kinds: Counter[str] = field(default_factory=Counter)
    places: Counter[tuple[str, str]] = field(default_factory=Counter)
    output_puts: Counter[str] = field(default_factory=Counter)
    #: Reads of a marker (GET or HEAD): each is a worker reaching for one.
    marker_reads: int = 0
    claims_lost: int = 0
    markers_gone: int = 0

    @property
    def total(self) -> int:
        return sum(self.kinds.values())


def tally(events: Iterable[Any], roles: Roles) -> Tally:
    found = Tally()
    for event in events:
        bucket, key, query = split_target(event.target)
        kind, place = kind_of(event.method, query), roles.place(bucket, key, query)
        found.kinds[kind] += 1
        found.places[(kind, place)] += 1
        if place == "output" and kind == "PUT":
            found.output_puts[key] += 1
        if place == "claim" and kind == "PUT":
            found.claims_lost += event.status in LOST_STATUSES
        if place == "marker" and kind in ("GET", "HEAD"):
            found.marker_reads += 1
            found.markers_gone += event.status == 404
    return found


# runs --------------------------------------------------------------------------------------------


@dataclass
class Run:
    """One ``ptif process`` through the proxy: its usage, report and requests."""

    usage: dict[str, Any]
    report: dict[str, Any]
    error: str = ""


def run_process(
    server: Any, proxy: Any, buckets: e2e.Buckets, name: str, timeout: float, workers: int = 1
) -> Run:
    command = e2e.process_command(workers, buckets.flags(proxy.endpoint_url))
    usage, stdout, stderr = e2e.measured(command, name, timeout, env=server.env)
    report = full_report(stdout)
    error = "" if usage["exit_code"] == 0 else e2e.tail(stderr)
    return Run(usage, report, error)


def full_report(stdout: Path) -> dict[str, Any]:
    lines = [line for line in stdout.read_text().splitlines() if line.startswith("{")]
    return json.loads(lines[-1]) if lines else {}


def queue(server: Any, source: str, count: int) -> e2e.Buckets:
    """Fresh process and images buckets, every source of ``source`` marked (none if 0)."""
    buckets, _ = e2e.fresh_queue(server, source, count)
    return buckets


# 1. requests per image ---------------------------------------------------------------------------


@dataclass
class RequestCost:
    images: int
    busy: Tally
    idle: Tally
    ok: bool
    error: str = ""

    def per_image(self, kind: str) -> float:
        extra = (self.busy.kinds[kind] - self.idle.kinds[kind] - self.per_pass(kind)) / self.images
        # A long queue is listed a page of 1,000 markers at a time.
        return extra + (1 / PAGE if kind == "LIST" else 0.0)

    def per_pass(self, kind: str) -> int:
        """Requests a pass makes once it has work (its look at ``failed/``), which the
        empty-queue run does not make."""
        if kind != "LIST":
            return 0
        return (
            self.busy.places[(kind, "failure record")] - self.idle.places[(kind, "failure record")]
        )

    def one_off(self, kind: str) -> int:
        return self.idle.kinds[kind] + self.per_pass(kind)

    @property
    def total(self) -> float:
        return sum(self.per_image(kind) for kind in KINDS)

    def places(self) -> list[tuple[str, str, float]]:
        rows = []
        for (kind, place), count in sorted(self.busy.places.items()):
            extra = (count - self.idle.places[(kind, place)]) / self.images
            if abs(extra) >= 0.005 and (kind, place) != ("LIST", "failure record"):
                rows.append((kind, place, extra))
        return rows


def request_cost(server: Any, proxy: Any, small: list[Path], timeout: float) -> RequestCost:
    source = server.new_bucket("source")
    upload_small(server, source, small, REQUEST_QUEUE, "req/")
    tallies, errors = [], []
    for count, name in ((REQUEST_QUEUE, "requests"), (0, "requests-idle")):
        buckets = queue(server, source, count)
        roles = Roles(buckets.source, buckets.process, buckets.images)
        start = len(proxy.events)
        run = run_process(server, proxy, buckets, f"costs.{name}", timeout)
        tallies.append(tally(proxy.events[start:], roles))
        converted = (run.report.get("counts") or {}).get("converted", 0)
        if run.error or converted != count:
            errors.append(f"{name}: {converted} of {count} converted {run.error}")
    return RequestCost(REQUEST_QUEUE, tallies[0], tallies[1], not errors, "\n".join(errors))


# 3. many workers ---------------------------------------------------------------------------------


@dataclass
class ManyWorkers:
    images: int
    workers: int
    runs: list[Run]
    #: One worker alone on a queue of its share; the N workers at once, each on such a queue.
    alone: Run
    apart: list[Run]
    share: int
    requests: Tally
    stored: int
    problems: list[str]

    @property
    def cpu_per_image(self) -> float:
        return sum(r.usage["cpu_s"] for r in self.runs) / self.images

    @property
    def alone_cpu_per_image(self) -> float:
        return float(self.alone.usage["cpu_s"]) / self.share

    @property
    def baseline_cpu_per_image(self) -> float:
        """The N workers at once, each on a queue of its own."""
        return sum(r.usage["cpu_s"] for r in self.apart) / (self.share * len(self.apart))

    @property
    def wall_s(self) -> float:
        return max(r.usage["wall_s"] for r in self.runs)

    @property
    def lost(self) -> int:
        return self.requests.claims_lost + self.requests.markers_gone

    @property
    def lost_share(self) -> float:
        """Lost races per reach for a marker. (Every claim PUT is not a reach: a won claim is
        written again as its attempt is counted and given back.)"""
        reads = self.requests.marker_reads
        return self.lost / reads if reads else 0.0


def many_workers(
    server: Any, proxy: Any, small: list[Path], images: int, workers: int, timeout: float
) -> ManyWorkers:
    source = server.new_bucket("source")
    upload_small(server, source, small, images, "many/")
    share = max(1, images // workers)
    own_source = server.new_bucket("source")
    upload_small(server, own_source, small, share, "many/")
    alone_queue = queue(server, own_source, share)
    alone = run_process(server, proxy, alone_queue, "costs.many-alone", timeout)
    own = [queue(server, own_source, share) for _ in range(workers)]
    apart = at_once(server, proxy, own, "costs.many-apart", timeout)
    buckets = queue(server, source, images)
    roles = Roles(buckets.source, buckets.process, buckets.images)
    start = len(proxy.events)
    runs = at_once(server, proxy, [buckets] * workers, "costs.many", timeout)
    requests = tally(proxy.events[start:], roles)
    stored, problems = check_many(server, buckets, images, runs, requests)
    for name, run in (("alone", alone), *((f"apart {n}", r) for n, r in enumerate(apart))):
        if run.error or (run.report.get("counts") or {}).get("converted") != share:
            problems.append(f"the worker {name} on its own queue did not convert {share}")
    return ManyWorkers(images, workers, runs, alone, apart, share, requests, stored, problems)


def at_once(
    server: Any, proxy: Any, queues: list[e2e.Buckets], name: str, timeout: float
) -> list[Run]:
    """A ``ptif process`` on each of ``queues``, all at once."""
    with ThreadPoolExecutor(len(queues)) as pool:
        jobs = [
            pool.submit(run_process, server, proxy, buckets, f"{name}-{n}", timeout)
            for n, buckets in enumerate(queues)
        ]
        return [job.result() for job in jobs]


def check_many(
    server: Any, buckets: e2e.Buckets, images: int, runs: list[Run], requests: Tally
) -> tuple[int, list[str]]:
    """Every image exactly once: in the images bucket, in the PUTs seen, in the reports."""
    tifs = [k for k in e2e.list_keys(server, buckets.images) if k.endswith(".tif")]
    problems = [f"worker {n}: {r.error}" for n, r in enumerate(runs) if r.error]
    if len(tifs) != images:
        problems.append(f"{len(tifs)} pyramids of {images} in the images bucket")
    twice = [key for key, count in requests.output_puts.items() if count > 1]
    if twice or len(requests.output_puts) != images:
        problems.append(
            f"{len(requests.output_puts)} outputs uploaded, {len(twice)} of them more than once"
        )
    converted = sum((r.report.get("counts") or {}).get("converted", 0) for r in runs)
    keys = [key for r in runs for key in r.report.get("converted", [])]
    if converted != images or len(set(keys)) != len(keys):
        problems.append(f"the reports count {converted} conversions ({len(set(keys))} keys)")
    for prefix in (e2e.QUEUE_PREFIX, e2e.FAILED_PREFIX):
        if left := e2e.list_keys(server, buckets.process, prefix):
            problems.append(f"{len(left)} objects left under {prefix}")
    return len(tifs), problems


# 4. --follow latency -----------------------------------------------------------------------------


@dataclass
class Latency:
    poll_s: float
    seconds: list[float]
    convert_s: float
    error: str = ""

    def quantile(self, share: float) -> float | None:
        if not self.seconds:
            return None
        ranked = sorted(self.seconds)
        return ranked[min(len(ranked) - 1, math.ceil(share * len(ranked)) - 1)]


def follow_latency(
    server: Any, small: list[Path], markers: int, poll: float | None, timeout: float
) -> Latency:
    """An idle ``ptif process --follow``; one marker at a time, each at a random moment of
    the poll cycle; the time until its pyramid is in the images bucket."""
    import random
    import subprocess

    source = server.new_bucket("source")
    keys = upload_small(server, source, small, markers, "follow/")
    buckets = queue(server, source, 0)
    flags = buckets.flags(server.endpoint_url)
    command = [str(e2e.PTIF), "process", "--follow", "--workers", "1", *flags, "--json"]
    if poll is not None:
        command += ["--poll", str(poll)]
    poll_s = poll if poll is not None else default_poll()
    stderr = e2e.LOG_DIR / "costs.follow.log"
    client, rng, seconds = server.client(), random.Random(7), []
    with stderr.open("wb") as err:
        worker = subprocess.Popen(
            command, cwd=e2e.ROOT, env=server.env, stdout=subprocess.DEVNULL, stderr=err
        )
    try:
        time.sleep(3.0)  # start-up and its first (empty) pass
        for key in keys:
            time.sleep(rng.uniform(0, poll_s))
            sent = mark_one(server, buckets, key)
            out = key.rsplit(".", 1)[0] + ".tif"
            while time.monotonic() - sent < timeout:
                if _exists(client, buckets.images, out):
                    seconds.append(time.monotonic() - sent)
                    break
                time.sleep(0.05)
            else:
                return Latency(poll_s, seconds, 0.0, f"{key}: no pyramid after {timeout:.0f} s")
    finally:
        worker.terminate()
        worker.wait(timeout=60)
    return Latency(poll_s, seconds, convert_seconds(stderr))


def default_poll() -> float:
    from ptif.cli import queue as cli_queue

    found = [a for a in _process_parser(cli_queue)._actions if "--poll" in a.option_strings]
    return float(found[0].default)


def _process_parser(cli_queue: Any) -> Any:
    import argparse

    top = argparse.ArgumentParser()
    commands = top.add_subparsers()
    cli_queue.add_process(commands, argparse.HelpFormatter)
    return commands.choices["process"]


def mark_one(server: Any, buckets: e2e.Buckets, key: str) -> float:
    """Queue ``key`` as an S3 event does (a marker written by ptif's own code); the moment
    the marker is in the store."""
    from ptif.queue.markers import new_marker, write_marker
    from ptif.stores import open_store

    info = server.client().head_object(Bucket=buckets.source, Key=key)
    store = open_store(f"s3://{buckets.process}", endpoint_url=server.endpoint_url)
    marker = new_marker(
        key, origin="s3-event", etag=info["ETag"], size=info["ContentLength"],
        bucket=buckets.source,
    )  # fmt: skip
    write_marker(store, marker, e2e.QUEUE_PREFIX)
    return time.monotonic()


def _exists(client: Any, bucket: str, key: str) -> bool:
    try:
        client.head_object(Bucket=bucket, Key=key)
    except client.exceptions.ClientError:
        return False
    return True


def convert_seconds(stderr: Path) -> float:
    """The median time the worker took over an image, from its JSON log lines."""
    found = []
    for line in stderr.read_text(errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and isinstance(entry.get("seconds"), int | float):
            found.append(float(entry["seconds"]))
    return statistics.median(found) if found else 0.0


# the section -------------------------------------------------------------------------------------


@dataclass
class Costs:
    requests: RequestCost
    many: ManyWorkers | None
    latency: Latency | None


def run_costs(
    server: Any,
    timeout: float,
    log: Callable[[str], None],
    *,
    many: int = MANY_IMAGES,
    many_workers_count: int = MANY_WORKERS,
    latency_markers: int = LATENCY_MARKERS,
    poll: float | None = None,
) -> Costs:
    small = small_images(log)
    with fault_proxy_module().FaultProxy(server.endpoint_url) as proxy:
        started = time.perf_counter()
        requests = request_cost(server, proxy, small, timeout)
        log(f"  costs: requests per image {requests.total:.2f} ({_took(started)})")
        crowd = None
        if many:
            started = time.perf_counter()
            crowd = many_workers(server, proxy, small, many, many_workers_count, timeout)
            log(f"  costs: {many_workers_count} workers on {many} images ({_took(started)})")
    latency = None
    if latency_markers:
        started = time.perf_counter()
        latency = follow_latency(server, small, latency_markers, poll, timeout)
        log(f"  costs: --follow latency, {latency_markers} markers ({_took(started)})")
    return Costs(requests, crowd, latency)


def _took(started: float) -> str:
    return f"{time.perf_counter() - started:.0f} s"


def verdict(passed: bool | None, text: str) -> tuple[str, str]:
    return ("FAIL" if not passed else "PASS"), text


def request_lines(cost: RequestCost) -> tuple[list[str], tuple[str, str]]:
    lines = [
        f"\nS3 requests per converted image: {cost.images} small images, one worker, through "
        "the pass-through proxy; per image = (run - empty-queue run) / images",
        f"{'kind':<8}{'per image':>11}{'one-off per run':>17}",
    ]
    for kind in KINDS:
        lines.append(f"{kind:<8}{cost.per_image(kind):>11.3f}{cost.one_off(kind):>17d}")
    one_off = sum(cost.one_off(kind) for kind in KINDS)
    lines.append(f"{'total':<8}{cost.total:>11.3f}{one_off:>17d}")
    lines.append("(LIST: a page per 1,000 markers of a long queue: 0.001 per image, and relists)")
    lines.append("where they go, per image:")
    lines += [f"  {kind:<7}{place:<16}{count:>6.2f}" for kind, place, count in cost.places()]
    ok = cost.ok and cost.total <= REQUESTS_TARGET
    text = f"S3 requests per image <= {REQUESTS_TARGET:.0f}  ({cost.total:.3f} per image"
    text += f"; {one_off} one-off per run)" if cost.ok else f"; run failed: {cost.error})"
    return lines, verdict(ok, text)


def many_lines(crowd: ManyWorkers) -> tuple[list[str], list[tuple[str, str]]]:
    req = crowd.requests
    lines = [
        f"\n{crowd.workers} ptif process at once on {crowd.images} images of "
        f"{SMALL_SIDE}x{SMALL_SIDE}: {crowd.wall_s:.1f} s wall, "
        f"{crowd.images / crowd.wall_s:.1f} images/s; {req.total / crowd.images:.2f} requests "
        f"per image ({req.kinds['LIST'] / crowd.images:.3f} LIST); markers reached for "
        f"{req.marker_reads}: claims lost {req.claims_lost}, found gone {req.markers_gone}",
        f"the same {crowd.workers} at once, each on a queue of its own of {crowd.share} images: "
        f"{crowd.baseline_cpu_per_image * 1000:.1f} ms CPU per image; one of them alone: "
        f"{crowd.alone.usage['wall_s']:.1f} s wall, {crowd.alone_cpu_per_image * 1000:.1f} ms "
        "CPU per image",
    ]
    once = not crowd.problems
    detail = "; ".join(crowd.problems) if crowd.problems else f"{crowd.stored} pyramids"
    cpu_ratio = crowd.cpu_per_image / crowd.alone_cpu_per_image
    apart_ratio = crowd.baseline_cpu_per_image / crowd.alone_cpu_per_image
    sharing_ratio = crowd.cpu_per_image / crowd.baseline_cpu_per_image
    found = [
        verdict(once, f"{crowd.workers} workers: every image exactly once  ({detail})"),
        verdict(
            crowd.lost_share <= RACE_TARGET,
            f"{crowd.workers} workers: races lost <= {RACE_TARGET:.0%} of reaches for a marker  "
            f"({crowd.lost_share:.1%}: {req.claims_lost} claims lost and {req.markers_gone} "
            f"markers gone of {req.marker_reads} reaches)",
        ),
        verdict(
            cpu_ratio <= MANY_CPU_TARGET,
            f"{crowd.workers} workers: ptif CPU per image <= {MANY_CPU_TARGET} x one worker alone  "
            f"({cpu_ratio:.2f} x: {crowd.cpu_per_image * 1000:.1f} ms vs "
            f"{crowd.alone_cpu_per_image * 1000:.1f} ms; the {crowd.workers} at once on queues "
            f"of their own take {apart_ratio:.2f} x one alone, on one queue {sharing_ratio:.2f} x "
            "that)",
        ),
    ]
    return lines, found


def latency_lines(latency: Latency) -> tuple[list[str], tuple[str, str]]:
    p50, p95 = latency.quantile(0.5), latency.quantile(0.95)
    goal = LATENCY_SLACK_S + latency.convert_s
    lines = [
        f"\n--follow latency (poll {latency.poll_s:g} s, idle worker, {len(latency.seconds)} "
        f"markers): p50 {_s(p50)}, p95 {_s(p95)}, conversion {latency.convert_s:.2f} s"
    ]
    text = f"--follow p95 <= {LATENCY_SLACK_S:g} s + conversion ({_s(p95)} vs {goal:.2f} s"
    text += f"; {latency.error})" if latency.error else ")"
    return lines, verdict(not latency.error and p95 is not None and p95 <= goal, text)


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} s"


def report(costs: Costs) -> tuple[list[str], list[tuple[str, str]], dict[str, Any]]:
    """The lines to print, the verdicts, and the section's part of results.json."""
    lines, first = request_lines(costs.requests)
    found = [first]
    data: dict[str, Any] = {
        "requests_per_image": {k: costs.requests.per_image(k) for k in KINDS},
        "requests_per_image_total": costs.requests.total,
        "requests_one_off": {k: costs.requests.one_off(k) for k in KINDS},
        "requests_by_place": [list(row) for row in costs.requests.places()],
    }
    if costs.many is not None:
        more, verdicts = many_lines(costs.many)
        lines += more
        found += verdicts
        data["many"] = {
            "images": costs.many.images,
            "workers": costs.many.workers,
            "wall_s": costs.many.wall_s,
            "cpu_per_image_s": costs.many.cpu_per_image,
            "baseline_cpu_per_image_s": costs.many.baseline_cpu_per_image,
            "alone_cpu_per_image_s": costs.many.alone_cpu_per_image,
            "cpu_vs_alone": costs.many.cpu_per_image / costs.many.alone_cpu_per_image,
            "cpu_vs_apart": costs.many.cpu_per_image / costs.many.baseline_cpu_per_image,
            "requests_per_image": costs.many.requests.total / costs.many.images,
            "marker_reads": costs.many.requests.marker_reads,
            "claims_lost": costs.many.requests.claims_lost,
            "markers_gone": costs.many.requests.markers_gone,
            "problems": costs.many.problems,
        }
    if costs.latency is not None:
        more, one = latency_lines(costs.latency)
        lines += more
        found.append(one)
        data["follow_latency"] = {
            "poll_s": costs.latency.poll_s,
            "seconds": costs.latency.seconds,
            "convert_s": costs.latency.convert_s,
        }
    return lines, found, data


def main(argv: list[str]) -> int:
    """This section alone, without the large photos: ``python bench/costs.py --many 200``."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--many", type=int, default=MANY_IMAGES)
    parser.add_argument("--many-workers", type=int, default=MANY_WORKERS)
    parser.add_argument("--latency-markers", type=int, default=LATENCY_MARKERS)
    parser.add_argument("--poll", type=float)
    parser.add_argument("--timeout", type=float, default=900)
    args = parser.parse_args(argv)

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    e2e.LOG_DIR.mkdir(parents=True, exist_ok=True)
    with e2e.seaweedfs(log) as server:
        found = run_costs(
            server, args.timeout, log, many=args.many, many_workers_count=args.many_workers,
            latency_markers=args.latency_markers, poll=args.poll,
        )  # fmt: skip
    lines, verdicts, data = report(found)
    print("\n".join(lines))
    print()
    for v, t in verdicts:
        print(f"{v}  {t}")
    (e2e.OUT / "costs.json").write_text(json.dumps(data, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
