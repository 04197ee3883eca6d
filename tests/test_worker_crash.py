"""``ptif process`` as separate processes: killed with SIGKILL at random moments and run again,
and four of them at once on one queue. The stores are the only thing they share."""

from __future__ import annotations

import random
import signal
import time
from dataclasses import dataclass

import pytest
from store_helpers import (
    Bench,
    Size,
    add_images,
    json_report,
    keys,
    live_claims,
    pending,
    reports,
    run_ptif,
    start_ptif,
    stray_files,
    verify_all,
    verify_output,
    wait_for,
)

from ptif.queue.layout import CLAIMS_PREFIX
from ptif.queue.outputs import output_key

pytestmark = pytest.mark.slow

SMALL: Size = (64, 48)
LARGE: Size = (3000, 2000)
#: One colour, so quick to make and to store, but about a second to convert.
HEAVY: Size = (12000, 9000)
KILLS = 12
KILL_WINDOW = (0.05, 1.5)
CRASH_SEED = 20240611
FIRST_WAVE = 18


def size_of(number: int) -> Size:
    """Three heavy images in the first wave; then every other wave brings one, so that most
    kills find a run still at work however fast the rest converts."""
    heavy = number < 3 or (number >= FIRST_WAVE and number % 2 == 0)
    return HEAVY if heavy else LARGE if number % 5 == 0 else SMALL


IMAGES = [(f"crash/{i:02}.jpg", size_of(i)) for i in range(30)]
BATCH = dict(IMAGES)
#: Most of the batch at first, then one more image before each run, as uploads keep coming.
WAVES = [dict(IMAGES[:FIRST_WAVE])] + [dict([item]) for item in IMAGES[FIRST_WAVE:]]
PROCESS = ("process", "--workers", "2", "--quiet")


@dataclass(frozen=True)
class Kill:
    delay: float
    running: bool
    claims_left: int


def crash_env(bench: Bench) -> dict[str, str]:
    return bench.env(PTIF_MAX_ATTEMPTS="100")


def add_wave(bench: Bench, wave: dict[str, Size]) -> None:
    add_images(bench, wave, noise=[key for key, size in wave.items() if size == LARGE])


def claims(bench: Bench) -> set[tuple[str, str]]:
    return {(info.key, info.etag) for info in bench.process.list(CLAIMS_PREFIX)}


def kill_after(bench: Bench, delay: float) -> Kill:
    """Kill ``delay`` seconds into the run's work, counted from its first claim: starting
    Python and boto3 alone takes a second on a busy machine."""
    before = claims(bench)
    process = start_ptif(bench, *PROCESS, env=crash_env(bench))
    wait_for(lambda: process.poll() is not None or bool(claims(bench) - before), 30, step=0.02)
    time.sleep(delay)
    running = process.poll() is None
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=30)
    return Kill(delay, running, len(live_claims(bench)))


def test_sigkill_at_random_moments_loses_nothing(bench: Bench) -> None:
    rng = random.Random(CRASH_SEED)
    kills = []
    for wave in WAVES[:KILLS]:
        add_wave(bench, wave)
        kills.append(kill_after(bench, rng.uniform(*KILL_WINDOW)))
    assert sum(k.running for k in kills) >= KILLS // 2, kills
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
