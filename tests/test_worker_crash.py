"""``ptif process`` as separate processes: killed with SIGKILL at random moments and run again,
and four of them at once on one queue. The stores are the only thing they share."""

from __future__ import annotations

import random
import signal
import time
from dataclasses import dataclass

from queue_helpers import (
    Bench,
    Size,
    add_images,
    json_report,
    keys,
    live_claims,
    pending,
    read_json,
    reports,
    run_ptif,
    start_ptif,
    stray_files,
    verify_all,
    verify_output,
)
from queue_helpers import bench as bench
from s3_server import aws_sandbox_fixture, s3_server_fixture  # noqa: F401 (the fixtures)

from ptif.outputs import output_key

SMALL: Size = (64, 48)
LARGE: Size = (3000, 2000)
#: One colour, so quick to make and to store, but about a second to convert.
HEAVY: Size = (12000, 9000)
KILLS = 12
KILL_WINDOW = (0.05, 1.5)
CRASH_SEED = 20240611


def size_of(number: int) -> Size:
    return HEAVY if number < 3 else LARGE if number % 5 == 0 else SMALL


IMAGES = [(f"crash/{i:02}.jpg", size_of(i)) for i in range(30)]
BATCH = dict(IMAGES)
#: Most of the batch at first, then one more image before each run, as uploads keep coming.
WAVES = [dict(IMAGES[:18])] + [dict([item]) for item in IMAGES[18:]]
PROCESS = ("process", "--workers", "2", "--quiet")
LATE_CALLBACK = (
    "known race (see test_worker.py::test_report_counts_an_item_whose_callback_is_late): a "
    "run ended before the done-callback of its last item, dropping it from its report or "
    "from the markers it waits for"
)
BLOCKED_LOADER = (
    "known race (see test_worker.py::test_first_conversions_of_a_worker_do_not_block_each_"
    "other): two first conversions of a run started together and a good image failed"
)
CUT_PUT = (
    "known bug (see test_worker.py::test_upload_cut_after_its_headers_leaves_no_empty_pyramid): "
    "a kill landed between a PUT's headers and its body and SeaweedFS kept an empty object"
)


@dataclass(frozen=True)
class Kill:
    delay: float
    running: bool
    claims_left: int


def crash_env(bench: Bench) -> dict[str, str]:
    return bench.env(PTIF_MAX_ATTEMPTS="100")


def add_wave(bench: Bench, wave: dict[str, Size]) -> None:
    add_images(bench, wave, noise=[key for key, size in wave.items() if size == LARGE])


def kill_after(bench: Bench, delay: float) -> Kill:
    process = start_ptif(bench, *PROCESS, env=crash_env(bench))
    time.sleep(delay)
    running = process.poll() is None
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=30)
    return Kill(delay, running, len(live_claims(bench)))


def emptied_by_a_cut_put(bench: Bench) -> list[str]:
    """Outputs and markers left empty by a PUT the kill cut off after its headers."""
    outputs = [info.key for info in bench.images.list() if info.size == 0]
    records = (read_json(bench.process, k) for k in keys(bench.process, "failed/_unreadable/"))
    markers = [r["markerKey"] for r in records if r.get("raw") == ""]
    return outputs + markers


def failed_with(bench: Bench, text: str) -> list[str]:
    records = (read_json(bench.process, key) for key in keys(bench.process, "failed/"))
    return [str(r.get("key")) for r in records if text in str(r.get("message"))]


def test_sigkill_at_random_moments_loses_nothing(bench: Bench) -> None:
    rng = random.Random(CRASH_SEED)
    kills = []
    for wave in WAVES[:KILLS]:
        add_wave(bench, wave)
        kills.append(kill_after(bench, rng.uniform(*KILL_WINDOW)))
    assert any(k.claims_left for k in kills), f"no kill caught an image in flight: {kills}"
    for wave in WAVES[KILLS:]:
        add_wave(bench, wave)
    done = run_ptif(bench, *PROCESS, "--json", env=crash_env(bench))
    assert done.returncode == 0, done.stderr
    assert pending(bench) == [] and keys(bench.process, "failed/") == []
    verify_all(bench, BATCH)
    owner = json_report(done)["owner"]
    assert [claim for claim in live_claims(bench) if claim["owner"] == owner] == []
    assert stray_files(bench, [output_key(k) for k in BATCH]) == []


MANY = {f"many/{i:03}.jpg": (16, 16) for i in range(200)}


def test_four_workers_convert_each_image_once(bench: Bench) -> None:
    add_images(bench, MANY)
    workers = [start_ptif(bench, "process", "--workers", "1", "--quiet") for _ in range(4)]
    finished = [w.communicate(timeout=180) for w in workers]
    assert [w.returncode for w in workers] == [0] * 4, finished
    runs = reports(bench)
    assert len(runs) == 4
    converted = [key for run in runs for key in run["converted"]]
    assert pending(bench) == [] and keys(bench.process, "failed/") == []
    assert sorted(keys(bench.images)) == sorted(output_key(k) for k in MANY)
    assert sorted(converted) == sorted(MANY)
    assert sum(run["counts"]["converted"] for run in runs) == len(MANY)
    assert sum(1 for run in runs if run["counts"]["converted"]) >= 2
    for key in list(MANY)[::40]:
        verify_output(bench, key, MANY[key])
