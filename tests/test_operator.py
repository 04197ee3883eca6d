"""What an operator sees: the progress bar's done/total and time left, failures under ``-q``,
``ptif status --failed``, ``ptif info`` and the pages a multi-page source gives or leaves out."""

from __future__ import annotations

import io
import json
from typing import Any

from rich.console import Console
from store_helpers import Bench, add_images, put_source, queue, run_ptif

from ptif.console import ItemProgress
from ptif.queue.reports import ItemResult, Outcome


class Clock:
    """A clock the test moves: the bar's speed, hence its time left, without sleeping."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def terminal() -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, force_terminal=True, width=160, color_system=None), out


def item(key: str, outcome: Outcome = Outcome.CONVERTED) -> ItemResult:
    return ItemResult(f"rbsc/{key}.json", outcome, key)


# progress ----------------------------------------------------------------------------------------


def test_the_bar_shows_done_of_total_and_the_time_left() -> None:
    console, out = terminal()
    clock = Clock()
    progress = ItemProgress(bar=True, console=console, clock=clock)
    with progress:
        progress.listed(10)
        for number in range(3):
            clock.now += 2.0
            progress(item(f"a/{number}.jpg"))
        progress._bar.refresh()
        shown = out.getvalue()
    assert "3/10" in shown, shown
    assert "ETA" in shown and "0:00:14" in shown, shown  # 7 left at 2 s each


def test_the_bar_shows_no_total_before_the_listing_ends() -> None:
    console, out = terminal()
    progress = ItemProgress(bar=True, console=console, clock=Clock())
    with progress:
        progress(item("a/1.jpg"))
        progress._bar.refresh()
    assert "1/?" in out.getvalue()


def test_a_run_tells_the_bar_how_many_it_listed(bench: Bench) -> None:
    add_images(bench, {f"p/{i}.jpg": (32, 24) for i in range(3)})
    listed: list[int] = []
    worker = bench.worker()
    worker.on_listed = listed.append
    worker.run()
    assert sum(listed) == 3, listed


def test_quiet_still_prints_failures(bench: Bench) -> None:
    add_images(bench, {"ok/1.jpg": (32, 24)})
    put_source(bench.source, "bad/notes.jpg", b"not a picture at all")
    queue(bench, "bad/notes.jpg")
    done = run_ptif(bench, "process", "--workers", "1", "-q")
    assert done.returncode == 1
    assert "bad/notes.jpg" in done.stderr, done.stderr
    assert "ptif process:" not in done.stderr  # the summary is what -q hides


def json_out(done: Any) -> Any:
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


# status --failed ---------------------------------------------------------------------------------


def test_status_failed_lists_the_failure_records(bench: Bench) -> None:
    add_images(bench, {"ok/1.jpg": (32, 24)})
    for key in ("bad/notes.jpg", "bad/more\nnotes.jpg"):
        put_source(bench.source, key, b"not a picture at all")
        queue(bench, key)
    assert run_ptif(bench, "process", "--workers", "1", "-q").returncode == 1
    rows = json_out(run_ptif(bench, "status", "--failed", "--json"))
    assert sorted(row["key"] for row in rows) == ["bad/more\nnotes.jpg", "bad/notes.jpg"]
    for row in rows:
        assert row["code"] == "unsupported" and row["attempts"] == 1, row
        assert row["key"] in row["message"] and row["failed_at"].endswith("Z"), row
    text = run_ptif(bench, "status", "--failed")
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert len(lines) == 2 and all("unsupported" in line for line in lines), lines
    assert any("bad/more\\x0anotes.jpg" in line for line in lines), lines
    assert "2 failure record(s)" in text.stderr
    scoped = json_out(run_ptif(bench, "status", "--failed", "--json", "--prefix", "bad/n"))
    assert [row["key"] for row in scoped] == ["bad/notes.jpg"]
