"""Settings, credentials and stores are checked before any work, and what a command says it
would do, it does.

- Every command (from cli/main.py's COMMANDS table, so a new one is covered by itself), given a
  bad flag, variable or ptif.toml, exits 1 to 3 with one line on stderr, nothing on stdout, no
  traceback, and leaves the queue exactly as it was.
- A store that refuses the credentials mid-run stops the run (exit 3) and fails no image.
- ``--dry-run`` predicts the real run: same counts, same keys.
- ``--json`` prints JSON alone on stdout, for every command that has it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import botocore.session
import pytest
from botocore.config import Config
from corpus import jpeg
from s3_server import ACCESS_KEY, REGION, SECRET_KEY, S3Server, free_ports
from store_helpers import (
    PTIF,
    QUEUE,
    Bench,
    add_images,
    failures,
    folder_bench,
    keys,
    pending,
    put_output,
    put_source,
    queue,
    run_ptif,
    s3_bench,
)

import ptif.stores.s3 as s3_module
from ptif.cli import main as cli
from ptif.errors import PIXEL_BUDGET, UNDECODABLE, PtifError
from ptif.queue.failures import FailureRecord, write_failure
from ptif.queue.health import StoreLost
from ptif.queue.markers import new_marker, write_marker
from ptif.queue.worker import Stores
from ptif.stores import FolderStore

SMALL = (40, 30)
SOURCES = ("a.jpg", "b.jpg")


# every command, every kind of bad setting -------------------------------------------------------


def store_commands() -> list[str]:
    """The commands that read settings and open stores: those with a --process flag."""
    return [name for name in cli.COMMANDS if "--process" in option_strings(name)]


def option_strings(command: str) -> set[str]:
    parser = cli.build_parser(command)
    sub = next(a for a in parser._actions if a.dest == "==SUPPRESS==" or a.choices)
    return set(sub.choices[command]._option_string_actions)  # type: ignore[index]


#: What each command needs to run at all; the others run with their name alone.
BASE_ARGS = {
    "convert": ["convert", "in.jpg", "out.tif"],
    "watch": ["watch", "--once"],
    "info": ["info", "in.jpg"],
}

#: (id, variables to set, commands it applies to: None for every command that opens stores)
MISSING = "no-such-folder/queue"
ENVIRONMENTS: list[tuple[str, dict[str, str], tuple[str, ...] | None]] = [
    ("bad-bucket", {"PTIF_IMAGES": "s3://bad_bucket_name"}, None),
    ("short-bucket", {"PTIF_SOURCE": "s3://ab"}, None),
    ("ip-bucket", {"PTIF_PROCESS": "s3://192.168.1.10"}, None),
    ("bare-bucket", {"IMAGE_BUCKET": "Scans_2019"}, None),
    ("scheme", {"PTIF_PROCESS": "ftp://host/queue"}, None),
    ("endpoint", {"PTIF_ENDPOINT_URL": "notaurl"}, None),
    ("endpoint-port", {"AWS_ENDPOINT_URL": "http://minio:99999"}, None),
    ("min-age", {"PTIF_MIN_AGE": "-5"}, None),
    ("min-age-nan", {"PTIF_MIN_AGE": "nan"}, None),
    ("workers-half", {"PTIF_WORKERS": "4.5"}, None),
    ("workers-0", {"PTIF_WORKERS": "0"}, None),
    ("lease", {"PTIF_LEASE_SECONDS": "inf"}, None),
    ("attempts", {"PTIF_MAX_ATTEMPTS": "-1"}, None),
    ("pixels", {"PTIF_MAX_PIXELS": "0"}, None),
    ("memory", {"PTIF_MAX_MEMORY": "lots"}, None),
    ("seconds", {"PTIF_MAX_SECONDS": "inf"}, None),
    ("settle", {"PTIF_WATCH_SETTLE": "-1"}, None),
    ("interval", {"PTIF_WATCH_INTERVAL": "0"}, None),
    ("queue-prefix", {"PTIF_QUEUE_PREFIX": "claims/"}, None),
    ("profile", {"PTIF_PROFILE": "fancy"}, None),
    ("config", {"PTIF_CONFIG": "/no/such/ptif.toml"}, None),
    ("stop-grace", {"PTIF_STOP_GRACE_SECONDS": "-1"}, ("process",)),
    ("source-typo", {"PTIF_SOURCE": "typo-folder"}, ("process", "mark", "watch", "reconcile")),
    ("queue-typo", {"PTIF_PROCESS": MISSING}, ("status", "retry")),
]
TOML_FILES = [
    ("toml-workers", "workers = 4.5\n"),
    ("toml-min-age", "[ptif]\nmin_age = -5\n"),
    ("toml-unknown", "[ptif]\nworkerz = 2\n"),
    ("toml-broken", "[ptif\n"),
    ("toml-bucket", '[ptif]\nimages = "s3://Bad_Bucket"\n'),
    ("toml-endpoint", '[ptif]\nendpoint_url = "ftp://x"\n'),
    ("toml-recipe", "[ptif]\nrecipe = {quality = 0}\n"),
    ("toml-types", '[ptif]\nmax_pixels = "many"\n'),
]
FLAGS: list[tuple[str, list[str], tuple[str, ...] | None]] = [
    ("min-age", ["--min-age", "-5"], None),
    ("min-age-nan", ["--min-age", "nan"], None),
    ("workers-half", ["--workers", "4.5"], None),
    ("workers-0", ["--workers", "0"], None),
    ("limit", ["--limit", "-1"], None),
    ("poll", ["--poll", "0"], None),
    ("settle", ["--settle", "-1"], None),
    ("interval", ["--interval", "0"], None),
    ("overlap", ["--overlap", "nan"], None),
    ("code", ["--code", "nonsense"], None),
    ("pixels", ["--max-pixels", "0"], None),
    ("memory", ["--max-memory", "lots"], None),
    ("memory-small", ["--max-memory", "1M"], None),
    ("seconds", ["--max-seconds", "inf"], None),
    ("dpi", ["--dpi", "nan"], None),
    ("bucket", ["--process", "s3://x_y"], None),
    ("endpoint", ["--endpoint-url", "notaurl"], None),
    ("config", ["--config", "/no/such/ptif.toml"], None),
    ("queue-prefix", ["--queue-prefix", "rbsc"], None),
    ("profile", ["--profile", "fancy"], None),
    ("source-typo", ["--source", "typo-folder"], ("process", "mark", "watch", "reconcile")),
    ("queue-typo", ["--process", MISSING], ("status", "retry")),
    ("unknown", ["--no-such-flag"], None),
]


def snapshot(root: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under ``root``, with its bytes and time: what 'nothing touched' compares."""
    return {
        str(path.relative_to(root)): (path.read_bytes(), path.stat().st_mtime_ns)
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default folder stores with two sources and their markers, and a file to convert."""
    root = tmp_path_factory.mktemp("template")
    data = root / "ptif-data"
    source, process = FolderStore(data / "source"), FolderStore(data / "process")
    FolderStore(data / "images")
    for key in SOURCES:
        etag = put_source(source, key, jpeg(*SMALL))
        assert write_marker(process, new_marker(key, origin="mark", etag=etag), QUEUE)
    (root / "in.jpg").write_bytes(jpeg(*SMALL))
    return root


@pytest.fixture
def workspace(
    template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, aws_sandbox: None
) -> Iterator[Path]:
    """A copy of the template as the working folder, an environment with no ptif setting, and
    a fresh botocore session (it keeps the first profile and credentials it finds)."""
    root = tmp_path / "work"
    shutil.copytree(template, root)
    monkeypatch.chdir(root)
    for name in (*cli_variables(), "AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    s3_module._session.cache_clear()
    s3_module._client.cache_clear()
    yield root
    s3_module._session.cache_clear()
    s3_module._client.cache_clear()


def cli_variables() -> tuple[str, ...]:
    from ptif.config import ENVIRONMENT_VARIABLES, STOP_GRACE_VARIABLE

    return (*ENVIRONMENT_VARIABLES, STOP_GRACE_VARIABLE)


def refused(argv: list[str], root: Path, capsys: pytest.CaptureFixture[str]) -> str:
    """Run ``ptif argv`` in this process; assert it refused in one line and touched nothing."""
    before = snapshot(root / "ptif-data")
    try:
        code = cli.main(argv)
    except SystemExit as done:  # argparse's usage errors
        code = done.code  # type: ignore[assignment]
    out, err = capsys.readouterr()
    assert code in (1, 2, 3), (argv, code, err)
    assert "Traceback" not in err and out == "", (argv, out, err)
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("ptif"), (argv, err)
    assert snapshot(root / "ptif-data") == before, argv
    assert not (root / "typo-folder").exists() and not (root / MISSING).exists()
    return lines[0]


def cases() -> Iterator[Any]:
    stores = store_commands()
    for command in cli.COMMANDS:
        base = BASE_ARGS.get(command, [command])
        for name, flags, only in FLAGS:
            if only is None or command in only:
                yield pytest.param(base + flags, {}, None, id=f"{command}-flag-{name}")
        if command not in stores:
            continue
        for name, env, only in ENVIRONMENTS:
            if only is None or command in only:
                yield pytest.param(base, env, None, id=f"{command}-env-{name}")
        for name, text in TOML_FILES:
            yield pytest.param(base, {}, text, id=f"{command}-{name}")


@pytest.mark.parametrize(("argv", "env", "toml"), list(cases()))
def test_every_command_refuses_a_bad_setting_in_one_line(
    argv: list[str],
    env: dict[str, str],
    toml: str | None,
    workspace: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    if toml is not None:
        (workspace / "ptif.toml").write_text(toml)
    line = refused(argv, workspace, capsys)
    given = [*env, *argv[1:]]
    if toml is not None:
        given.append("ptif.toml")
    # The line names where the bad value came from (argparse names its flag itself).
    assert any(name in line for name in given) or "PTIF_CONFIG" in env, line


@pytest.mark.parametrize("command", store_commands())
@pytest.mark.parametrize(
    ("case", "env"),
    [
        ("no-credentials", {"AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": ""}),
        ("no-profile", {"AWS_PROFILE": "prod"}),
    ],
)
def test_credentials_are_checked_before_any_request(
    command: str,
    case: str,
    env: dict[str, str],
    workspace: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """No credentials, or a profile that is not there: exit 2 in one line, before any request
    (the endpoint is a closed port: a request would take seconds of retries, then exit 3)."""
    for name, value in env.items():
        if value:
            monkeypatch.setenv(name, value)
        else:
            monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PTIF_PROCESS", "s3://queue-bucket")
    monkeypatch.setenv("PTIF_IMAGES", "s3://images-bucket")
    monkeypatch.setenv("PTIF_ENDPOINT_URL", f"http://127.0.0.1:{free_ports(1)[0]}")
    line = refused(BASE_ARGS.get(command, [command]), workspace, capsys)
    assert "s3://" in line
    assert ("no AWS credentials" in line) if case == "no-credentials" else ("prod" in line)


def test_an_unreachable_store_exits_3_before_any_marker_is_touched(
    template: Path, tmp_path: Path
) -> None:
    """The queue is a folder, the image store a bucket on a closed port: the check before
    work lists it, gives up after the client's retries, and no marker was claimed."""
    root = tmp_path / "work"
    shutil.copytree(template, root)
    before = snapshot(root / "ptif-data")
    env = {k: v for k, v in os.environ.items() if k not in cli_variables()}
    env.update(
        AWS_ACCESS_KEY_ID=ACCESS_KEY,
        AWS_SECRET_ACCESS_KEY=SECRET_KEY,
        AWS_DEFAULT_REGION=REGION,
        AWS_CONFIG_FILE=str(tmp_path / "no-aws-config"),
        AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "no-aws-credentials"),
        AWS_EC2_METADATA_DISABLED="true",
        PTIF_IMAGES="s3://images-bucket",
        PTIF_ENDPOINT_URL=f"http://127.0.0.1:{free_ports(1)[0]}",
    )
    done = subprocess.run(
        [*PTIF, "process"], env=env, cwd=root, capture_output=True, text=True, timeout=180
    )
    assert done.returncode == 3, done.stderr
    assert done.stderr.startswith("ptif: the images store (PTIF_IMAGES=s3://images-bucket): ")
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert snapshot(root / "ptif-data") == before


def test_a_missing_bucket_is_a_setting_error(s3_server: S3Server, tmp_path: Path) -> None:
    bench = s3_bench(tmp_path, s3_server)
    add_images(bench, {"a.jpg": SMALL})
    env = bench.env(PTIF_IMAGES="s3://no-such-bucket-here")
    done = run_ptif(bench, "process", env=env)
    assert done.returncode == 2, done.stderr
    assert "images store (PTIF_IMAGES=s3://no-such-bucket-here)" in done.stderr
    assert "does not exist" in done.stderr and done.stderr.count("\n") == 1
    assert pending(bench) and not failures(bench) and not keys(bench.process, "claims/")


def test_a_read_only_destination_is_refused_before_decoding(tmp_path: Path) -> None:
    """A read-only mount (EROFS, which even root gets), made in a user namespace."""
    if (
        shutil.which("unshare") is None
        or subprocess.run(["unshare", "-rm", "true"], capture_output=True, check=False).returncode
    ):
        pytest.skip("needs user namespaces (unshare -rm) to mount a folder read-only")
    (tmp_path / "in.jpg").write_bytes(jpeg(*SMALL))
    (tmp_path / "ro").mkdir()
    script = (
        "mount --bind ro ro && mount -o remount,bind,ro ro && "
        f"{sys.executable} -m ptif convert in.jpg ro/"
    )
    done = subprocess.run(
        ["unshare", "-rm", "sh", "-c", script], cwd=tmp_path, capture_output=True, text=True
    )
    assert done.returncode == 2, done.stderr
    assert "cannot write in" in done.stderr and "read-only" in done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr


# a store that refuses the credentials mid-run ----------------------------------------------------


def test_credentials_refused_mid_run_stop_it_and_fail_no_image(
    s3_server: S3Server, tmp_path: Path
) -> None:
    """The image store's credentials stop working after the run has started (the real server
    refuses their signature): the run stops as when a store goes away, every marker stays, no
    failure record is written and no attempt is counted."""
    bench = s3_bench(tmp_path, s3_server)
    add_images(bench, {f"k{n}.jpg": SMALL for n in range(3)})
    images: Any = bench.open("images")
    images.client = botocore.session.get_session().create_client(
        "s3",
        endpoint_url=bench.endpoint_url,
        region_name=REGION,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key="expired-" + SECRET_KEY,
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 0}),
    )
    stores = Stores(source=bench.source, process=bench.process, images=images)
    with pytest.raises(StoreLost) as lost:
        bench.worker(stores).run()
    assert lost.value.refused and lost.value.role == "images"
    assert "refused the run's settings or credentials" in str(lost.value)
    assert len(pending(bench)) == 3 and failures(bench) == {}
    for claim in keys(bench.process, "claims/"):
        data, _ = bench.process.get_bytes(claim)
        assert json.loads(data).get("attempts", 0) == 0, data


# --dry-run predicts the real run -----------------------------------------------------------------


def dry_then_real(bench: Bench, *args: str) -> tuple[dict[str, Any], dict[str, Any]]:
    runs = []
    for extra in (["--dry-run"], []):
        done = run_ptif(bench, *args, *extra, "--json")
        assert done.returncode in (0, 1), done.stderr
        runs.append(json.loads(done.stdout))
    return runs[0], runs[1]


def set_the_scene(bench: Bench) -> None:
    """Sources in every state: new, already queued, converted, failed before."""
    for key in ("a.jpg", "b.jpg", "c.jpg", "d.png", "box 2/e.jpg", "box 2/f.jpg", "box 2/g.jpg"):
        put_source(bench.source, key, jpeg(*SMALL))
    queue(bench, "b.jpg")
    queue(bench, "box 2/e.jpg")
    queue(bench, "box 2/f.jpg")
    put_output(bench.images, "c.jpg", bench.source.head("c.jpg").etag)  # type: ignore[union-attr]
    for key, code in (("d.png", UNDECODABLE), ("box 2/g.jpg", PIXEL_BUDGET)):
        info = bench.source.head(key)
        marker = new_marker(key, origin="mark", etag=info.etag if info else "")
        error = PtifError(f"{key}: test", code=code)
        write_failure(bench.process, FailureRecord(marker, error, key, 1, "test"))


COUNTS = {
    "mark": ("listed", "marked", "already_queued", "up_to_date", "ignored"),
    "reconcile": ("listed", "not_images", "outputs", "marked", "already_queued", "failed_before"),
    "retry": ("requeued", "skipped", "not_retryable"),
}
KEYS = {"mark": "marked_keys", "reconcile": "marked_keys", "retry": "keys"}


@pytest.mark.parametrize(
    "args",
    [
        ["mark"],
        ["mark", "--stale"],
        ["mark", "--prefix", "box 2/"],
        ["reconcile"],
        ["reconcile", "--prefix", "box 2/"],
        ["retry"],
        ["retry", "--code", UNDECODABLE],
        ["retry", "--prefix", "box 2/"],
    ],
    ids=" ".join,
)
def test_dry_run_predicts_the_real_run(bench: Bench, args: list[str]) -> None:
    set_the_scene(bench)
    dry, real = dry_then_real(bench, *args)
    command = args[0]
    assert {k: dry[k] for k in COUNTS[command]} == {k: real[k] for k in COUNTS[command]}
    assert sorted(dry[KEYS[command]]) == sorted(real[KEYS[command]])
    assert real[KEYS[command]] or real["already_queued"]  # the scene tests something


def test_dry_run_counts_what_is_already_queued(bench: Bench) -> None:
    set_the_scene(bench)
    dry, _ = dry_then_real(bench, "reconcile", "--prefix", "box 2/")
    assert (dry["marked"], dry["already_queued"], dry["failed_before"]) == (0, 2, 1)


# --json prints JSON alone ------------------------------------------------------------------------


def json_runs() -> Iterator[Any]:
    for command in cli.COMMANDS:
        options = option_strings(command)
        if "--json" not in options:
            continue
        yield pytest.param(command, [], id=command)
        if "--dry-run" in options:
            yield pytest.param(command, ["--dry-run"], id=f"{command}-dry-run")


@pytest.mark.parametrize(("command", "extra"), list(json_runs()))
def test_json_prints_only_json_on_stdout(command: str, extra: list[str], tmp_path: Path) -> None:
    bench = folder_bench(tmp_path)
    add_images(bench, {"a.jpg": SMALL, "b.jpg": SMALL})
    put_source(bench.source, "c.jpg", jpeg(*SMALL))
    put_source(bench.source, "notes.txt", b"text")
    (tmp_path / "in.jpg").write_bytes(jpeg(*SMALL))
    if command == "info":  # a pyramid to describe
        assert run_ptif(bench, "convert", "in.jpg", "in.tif").returncode == 0
    args = {"convert": ["in.jpg", "out.tif"], "watch": ["--once"], "info": ["in.tif"]}.get(
        command, []
    )
    done = run_ptif(bench, command, *args, *extra, "--json")
    assert done.returncode in (0, 1), done.stderr
    assert isinstance(json.loads(done.stdout), dict), done.stdout
