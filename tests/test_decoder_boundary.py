"""The decoder child as a boundary against code that runs in it.

Each test runs a decoder-like program through :func:`ptif.convert.sandbox.run` (``exec``
mode: what Ghostscript gets), a shell script standing for code an exploited decoder runs, and
checks what it could reach: the worker's memory and environment, other images' folders (when
the worker is root, as in most containers), the network, and whether anything it started
outlives it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from store_helpers import wait_for

from ptif.convert import sandbox

MIB = 2**20
ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not ROOT, reason="the decoder leaves root only when it has it")


@pytest.fixture
def scratch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """This test's own temporary folder, where the decoders' folders go."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    (tmp_path / "source").write_bytes(b"%!PS\n")
    return tmp_path


def run_script(tmp_path: Path, script: str, seconds: float = 30) -> str:
    budget = sandbox.Budget(str(tmp_path / "source"), "EPS", "sh", 512 * MIB, seconds)
    out = sandbox.run(
        ["sh", "-c", script], tmp_path / "source", budget, lambda o: o.read_to_end(1 << 20)
    )
    assert out is not None
    return out.decode()


WORKER = """
import ctypes, sys, tempfile
from pathlib import Path
from ptif.convert import sandbox
tempfile.tempdir = sys.argv[1]
budget = sandbox.Budget("x", "EPS", "sh", 512 << 20, 30)
sandbox.run(["true"], Path(sys.argv[1]) / "source", budget, lambda o: o.read_to_end(1))
print(ctypes.CDLL(None).prctl(3, 0, 0, 0, 0), flush=True)  # PR_GET_DUMPABLE
sys.stdin.read()
"""


def test_the_worker_is_not_dumpable(scratch: Path) -> None:
    """Once it has started a decoder, the worker is undumpable: a process of its own user (an
    exploited decoder that did not leave it) can neither trace it nor read its memory or
    environment, where AWS credentials may sit."""
    worker = subprocess.Popen(
        [sys.executable, "-c", WORKER, str(scratch)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "AWS_SECRET_ACCESS_KEY": "secret-in-the-worker"},
    )
    try:
        assert worker.stdout is not None
        assert worker.stdout.readline().strip() == "0"
        if not ROOT:  # a process of the same user, as a decoder would be
            with pytest.raises(PermissionError):
                Path(f"/proc/{worker.pid}/environ").read_bytes()
    finally:
        worker.kill()
        worker.communicate()


@needs_root
def test_a_decoder_of_a_root_worker_runs_as_nobody_and_reaches_no_private_folder(
    scratch: Path,
) -> None:
    private = scratch / "item-other"
    private.mkdir(mode=0o700)
    (private / "source").write_bytes(b"another image")
    out = run_script(
        scratch,
        f"id -u; id -g; id -G; cat {private}/source || echo refused; "
        "echo scratch > mine && cat mine; ls .. || echo unlisted",
    )
    uid, gid, groups, *rest = out.splitlines()
    assert (uid, gid, groups) == ("65534", "65534", "65534")
    assert "another image" not in out and "refused" in rest
    assert "scratch" in rest  # its own folder is its own
    assert "unlisted" in rest  # the other decoders' folders beside it cannot be listed


@needs_root
def test_a_decoder_of_a_root_worker_has_no_network(scratch: Path) -> None:
    probe = subprocess.run(["unshare", "-n", "true"], capture_output=True, check=False)
    if probe.returncode != 0:
        pytest.skip("this kernel or container lets no one make a network namespace")
    out = run_script(scratch, "cat /proc/net/dev | tail -n +3 | cut -d: -f1 | tr -d ' '")
    assert out.split() == ["lo"]


def test_a_setsid_grandchild_does_not_outlive_its_decoder(scratch: Path) -> None:
    """The decoder starts a sleeper in a session of its own (out of the process group the
    worker kills) and exits: the supervisor kills it."""
    marker = f"ptif-test-sleeper-{os.getpid()}-{time.monotonic_ns()}"
    sleeper = f"setsid sh -c 'exec -a {marker} sleep 300' </dev/null >/dev/null 2>&1 &"
    script = f"{sleeper} sleep 0.5; echo started"
    assert run_script(scratch, script).strip() == "started"
    assert wait_for(lambda: not sleepers(marker), 5), f"left running: {sleepers(marker)}"


def test_a_setsid_grandchild_does_not_outlive_a_decoder_past_its_deadline(scratch: Path) -> None:
    marker = f"ptif-test-sleeper-{os.getpid()}-{time.monotonic_ns()}"
    script = f"setsid sh -c 'exec -a {marker} sleep 300' </dev/null >/dev/null 2>&1 & sleep 300"
    with pytest.raises(Exception, match="time limit"):
        run_script(scratch, script, seconds=2)
    assert wait_for(lambda: not sleepers(marker), 5), f"left running: {sleepers(marker)}"


#: Counts the processes of uid 65534 with shell builtins alone (no fork left to spare).
COUNT_NOBODY = (
    'n=0; for f in /proc/[0-9]*/status; do while read k v rest; do if [ "$k" = Uid: ]; then '
    '[ "$v" = 65534 ] && n=$((n+1)); break; fi; done < $f; done 2>/dev/null; echo $n'
)


@needs_root
def test_a_fork_bomb_stops_at_the_decoder_users_process_limit(scratch: Path) -> None:
    bomb = "sh -c 'while :; do sleep 30 & done' 2>/dev/null; "
    out = run_script(scratch, bomb + COUNT_NOBODY)
    assert 1 < int(out.split()[-1]) <= sandbox.DECODER_NPROC


def sleepers(marker: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found
