"""The invariant under churn: once intake and workers go quiet, every source has a current
pyramid, a pending marker or a failure record for its current version, and ``ptif reconcile
--dry-run`` finds nothing to queue.

``ptif watch`` and ``ptif process --follow`` run as real processes while the test replaces
sources as they convert: in a folder with files dated a year earlier or to the nanosecond the
same as the version they replace (``rsync -t``, ``cp -p``); in SeaweedFS with PUTs that fall
in the same LastModified second as the version being converted whenever the timing allows.
Each version of a source has its own width, so the pyramid's size says which one it was made
from.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from corpus import jpeg
from s3_server import S3Server
from store_helpers import (
    CURRENT_RECIPE,
    Bench,
    claim_of,
    folder_bench,
    live_claims,
    markers,
    pending,
    put_source,
    run_ptif,
    s3_bench,
    start_ptif,
    wait_for,
)

from ptif.queue.failures import describes
from ptif.queue.layout import failed_key
from ptif.queue.outputs import OutputState, output_state
from ptif.stores import FolderStore, ObjectInfo, ObjectMissing

pytestmark = pytest.mark.slow

KEYS = tuple(f"churn/{i}.jpg" for i in range(5))
ROUNDS = 5
WIDTH, HEIGHT = 2400, 1800
YEAR_NS = 365 * 86400 * 10**9


def version(n: int) -> bytes:
    """Version ``n`` of a source: noise (real work to convert), ``WIDTH + 8n`` pixels wide."""
    return jpeg(WIDTH + 8 * n, HEIGHT, n, noise=True)


def test_churn_on_folders_with_older_and_same_dated_versions(tmp_path: Path) -> None:
    bench = folder_bench(tmp_path)

    def replace(key: str, data: bytes, rng: random.Random) -> str:
        before = bench.source.head(key)
        assert before is not None and isinstance(bench.source, FolderStore)
        put_source(bench.source, key, data)
        path = bench.source.root.joinpath(*key.split("/"))
        dated = rng.choice(["earlier", "same"])
        when = int(before.modified.timestamp() * 1e9)
        when = when - YEAR_NS if dated == "earlier" else when
        os.utime(path, ns=(when, when))
        return dated

    found = _churn(bench, ("watch", "--settle", "0.3", "--initial-scan"), replace)
    assert found["replaced-while-converting"] >= 3, found


def test_churn_on_seaweedfs_with_puts_in_the_same_second(
    s3_server: S3Server, tmp_path: Path
) -> None:
    bench = s3_bench(tmp_path, s3_server)

    def replace(key: str, data: bytes, rng: random.Random) -> str:
        before = bench.source.head(key)
        put_source(bench.source, key, data)
        after = bench.source.head(key)
        assert before is not None and after is not None
        same = int(after.modified.timestamp()) == int(before.modified.timestamp())
        return "same-second" if same else "later"

    watch = ("watch", bench.urls["source"], "--interval", "0.1", "--initial-scan")
    found = _churn(bench, watch, replace)
    assert found["replaced-while-converting"] >= 3, found


def _churn(
    bench: Bench, watch_args: tuple[str, ...], replace: Callable[[str, bytes, random.Random], str]
) -> dict[str, int]:
    """Run the watcher and a following worker, replace sources while they convert, wait for
    quiet, stop both, and check the invariant. Returns what happened, by kind."""
    rng = random.Random(11)
    found = {"replaced-while-converting": 0}
    watcher = start_ptif(bench, *watch_args)
    worker = start_ptif(bench, "process", "--follow", "--poll", "0.1", "--quiet")
    try:
        for n, key in enumerate(KEYS):
            put_source(bench.source, key, version(n))
        assert wait_for(lambda: _converted(bench) == set(KEYS), 240), "the first versions"
        for n in range(len(KEYS), len(KEYS) + 2 * ROUNDS, 2):
            key = rng.choice(KEYS)
            first, second = version(n), version(n + 1)
            replace(key, first, rng)  # queued by the watcher, then claimed by the worker
            converting = wait_for(lambda key=key: key in _converting(bench), 60)
            kind = replace(key, second, rng)  # while the first converts, if the timing allowed
            found[kind] = found.get(kind, 0) + 1
            if converting and key in _converting(bench):
                found["replaced-while-converting"] += 1
        assert _quiet(bench, seconds=3.0, timeout=120), (pending(bench), live_claims(bench))
    finally:
        _stop(watcher, worker)
    _check_invariant(bench)
    return found


def _converted(bench: Bench) -> set[str]:
    return {key for key in KEYS if bench.images.head(key.replace(".jpg", ".tif")) is not None}


def _converting(bench: Bench) -> list[str]:
    """Source keys whose claim is live: a worker is converting them now."""
    keys = []
    for key in KEYS:
        try:
            claim = claim_of(bench, key)
        except ObjectMissing:
            continue
        if claim.get("owner") and float(claim.get("expires", 0)) > time.time():
            keys.append(key)
    return keys


def _quiet(bench: Bench, *, seconds: float, timeout: float) -> bool:
    """Nothing queued and nothing claimed, and so for ``seconds`` on end."""
    deadline = time.monotonic() + timeout
    calm_since: float | None = None
    while time.monotonic() < deadline:
        if pending(bench) or live_claims(bench):
            calm_since = None
        elif calm_since is None:
            calm_since = time.monotonic()
        elif time.monotonic() - calm_since >= seconds:
            return True
        time.sleep(0.1)
    return False


def _stop(*processes: subprocess.Popen[str]) -> None:
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()


def _check_invariant(bench: Bench) -> None:
    queued = markers(bench.process)
    for key in KEYS:
        source = bench.source.head(key)
        assert source is not None
        if key in queued:
            continue
        if _failed_now(bench, source):
            continue
        state = output_state(bench.images, source, {CURRENT_RECIPE})
        assert state is OutputState.CURRENT, (key, state)
        output = bench.images.head(key.replace(".jpg", ".tif"))
        assert output is not None
        width = WIDTH + 8 * _version_of(bench, source)
        assert int(output.metadata["width"]) == width, (key, "an older version's pyramid")
    done = run_ptif(bench, "reconcile", "--dry-run", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["marked"] == 0, report
    assert report["failed_before"] == 0, report


def _failed_now(bench: Bench, source: ObjectInfo) -> bool:
    try:
        record = json.loads(bench.process.get_bytes(failed_key(source.key))[0])
    except ObjectMissing:
        return False
    return describes(record, source)


def _version_of(bench: Bench, source: ObjectInfo) -> int:
    """Which version the source is now, from its width (read from its header with Pillow:
    libvips' loaders are blocked in a test process that converted in-process before)."""
    from io import BytesIO

    from PIL import Image

    data, _ = bench.source.get_bytes(source.key)
    with Image.open(BytesIO(data)) as image:
        return (image.width - WIDTH) // 8
