"""Source, process and images never overlap: settings that make two of them the same place, or
one inside another, are refused (exit 2, one line naming both settings and where each came
from) before any store is listed, claimed or even created.

The rule itself (:func:`ptif.stores.overlap.overlap`) on bucket prefixes, folders, symlinks and
bind mounts; then each command that opens the three stores, with the settings given by flag,
environment and ptif.toml; then the case that started it all, a 16-bit master replaced by its own
8-bit pyramid. The CDK app's use of the same rule is tested in test_infra.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import pyvips
from s3_server import S3Server
from store_helpers import Bench, folder_bench, pending, read_only_mount, run_ptif, tree

from ptif.stores.overlap import overlap

#: The commands that open the three stores, each as it would run for real.
COMMANDS: tuple[tuple[str, ...], ...] = (
    ("mark",),
    ("reconcile",),
    ("process",),
    ("watch", "--once", "--initial-scan"),
)


def where(source: str, process: str, images: str) -> str | None:
    return overlap({"source": source, "process": process, "images": images})


# the rule --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "process", "images", "found"),
    [
        ("s3://b", "s3://q", "s3://b/", "source s3://b and images s3://b/ are the same place"),
        ("s3://b/scans", "s3://q", "s3://b/scans/iiif", "images is inside source"),
        ("s3://b/scans/", "s3://b", "s3://i", "source is inside process"),
        ("s3://b", "s3://b/ptif", "s3://i", "process is inside source"),
        ("s3://s", "s3://b/queue", "s3://b/queue/iiif", "images is inside process"),
        ("s3://b/scans", "s3://b/scans2", "s3://b/iiif", None),
        ("s3://scans", "s3://process", "s3://images", None),
        ("s3://scans", "scans", "images", None),
    ],
)
def test_buckets_overlap_on_the_same_bucket_with_nested_prefixes(
    source: str, process: str, images: str, found: str | None
) -> None:
    problem = where(source, process, images)
    if found is None:
        assert problem is None
    else:
        assert problem is not None and found in problem, problem


def test_folders_overlap_when_one_is_inside_the_other(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    assert where(str(a), str(b), str(tmp_path / "ab")) is None
    assert "are the same place" in str(where(str(a), str(b), f"{a}/"))
    assert "are the same place" in str(where(str(a), str(b), f"file://{a}"))
    assert "images is inside source" in str(where(str(a), str(b), str(a / "iiif" / "x")))
    assert "source is inside process" in str(where(str(b / "masters"), str(b), str(a)))


def test_symlinks_are_resolved(tmp_path: Path) -> None:
    masters = tmp_path / "masters"
    masters.mkdir()
    (tmp_path / "link").symlink_to(masters)
    problem = where(str(masters), str(tmp_path / "q"), str(tmp_path / "link" / "iiif"))
    assert problem is not None
    assert f"images {tmp_path}/link/iiif (resolves to {masters}/iiif)" in problem


def test_the_same_folder_through_a_bind_mount_overlaps(tmp_path: Path) -> None:
    masters = tmp_path / "masters"
    masters.mkdir()
    with read_only_mount(masters, tmp_path / "mounted") as mounted:
        problem = where(str(mounted), str(tmp_path / "q"), str(masters))
        assert problem is not None and "are the same place" in problem, problem
        problem = where(str(masters), str(tmp_path / "q"), str(mounted / "iiif"))
        assert problem is not None and "images is inside source" in problem, problem


def test_the_message_names_both_settings_where_they_came_from_and_why() -> None:
    problem = overlap(
        {"source": "s3://scans", "process": "s3://q", "images": "s3://scans"},
        {"source": "PTIF_SOURCE", "process": "--process", "images": "--images"},
    )
    assert problem == (
        "source s3://scans (from PTIF_SOURCE) and images s3://scans (from --images) are the "
        "same place; ptif would write pyramids among the masters, where one can replace a "
        "master of the same name (scan.tif): give each store its own bucket (or prefix) or "
        "folder, none inside another"
    )


# the command line ------------------------------------------------------------------------------


def refused(done: object, *names: str) -> str:
    """The one line a refused command printed; it exited 2 and names each of ``names``."""
    stderr: str = getattr(done, "stderr")  # noqa: B009
    assert getattr(done, "returncode") == 2, stderr  # noqa: B009
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ptif: "), stderr
    for name in names:
        assert name in lines[0], (name, lines[0])
    return lines[0]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c[0])
def test_every_command_refuses_images_in_the_source_before_touching_a_store(
    tmp_path: Path, command: tuple[str, ...]
) -> None:
    bench = folder_bench(tmp_path)
    (tmp_path / "source" / "a.jpg").write_bytes(b"not looked at")
    before = tree(tmp_path)
    env = bench.env(PTIF_IMAGES=str(tmp_path / "source" / "iiif"))
    done = run_ptif(bench, *command, "--process", str(tmp_path / "source" / "queue"), env=env)
    refused(done, "--process", "PTIF_SOURCE", "process is inside source")
    assert tree(tmp_path) == before


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c[0])
def test_settings_from_ptif_toml_are_named_too(tmp_path: Path, command: tuple[str, ...]) -> None:
    bench = folder_bench(tmp_path)
    toml = tmp_path / "ptif.toml"
    toml.write_text(f'[ptif]\nimages = "{tmp_path / "source"}"\n')
    env = {k: v for k, v in bench.env().items() if k != "PTIF_IMAGES"}
    done = run_ptif(bench, *command, "--config", str(toml), env=env)
    refused(done, f"images {tmp_path / 'source'} (from {toml})", "(from PTIF_SOURCE)")


def test_watch_names_its_source_argument(tmp_path: Path) -> None:
    bench = folder_bench(tmp_path)
    done = run_ptif(bench, "watch", "--once", str(tmp_path / "images"))
    refused(done, "(from the SOURCE argument)", "(from PTIF_IMAGES)", "are the same place")


def test_a_16_bit_master_is_not_replaced_by_its_own_pyramid(tmp_path: Path) -> None:
    """``ptif process`` with PTIF_IMAGES equal to PTIF_SOURCE wrote scan.tif's 8-bit JPEG
    pyramid over the 16-bit master and exited 0."""
    bench = folder_bench(tmp_path)
    master = tmp_path / "source" / "scan.tif"
    wide = (pyvips.Image.xyz(512, 384)[0] * 120).cast("ushort")
    wide.tiffsave(str(master), compression="lzw")
    assert run_ptif(bench, "mark").returncode == 0
    before = master.read_bytes()
    done = run_ptif(bench, "process", env=bench.env(PTIF_IMAGES=str(tmp_path / "source")))
    refused(done, "(from PTIF_SOURCE)", "(from PTIF_IMAGES)", "are the same place")
    assert master.read_bytes() == before
    assert pyvips.Image.new_from_file(str(master)).format == "ushort"
    assert pending(bench) == ["rbsc/scan.tif.json"]


def test_nested_prefixes_of_one_bucket_are_refused_before_any_request(
    s3_server: S3Server, tmp_path: Path
) -> None:
    with s3_server.bucket() as bucket, s3_server.bucket() as process:
        client = s3_server.client()
        client.put_object(Bucket=bucket, Key="masters/scan.jpg", Body=b"not looked at")
        urls = {
            "source": f"s3://{bucket}/masters",
            "process": f"s3://{process}",
            "images": f"s3://{bucket}",
        }
        bench = Bench("s3", tmp_path, urls, s3_server.endpoint_url)
        for command in COMMANDS:
            done = run_ptif(bench, *command)
            refused(done, f"s3://{bucket}/masters", "source is inside images")
        assert [o["Key"] for o in client.list_objects_v2(Bucket=bucket)["Contents"]] == [
            "masters/scan.jpg"
        ]
        assert client.list_objects_v2(Bucket=process)["KeyCount"] == 0


def test_stores_apart_are_not_refused(tmp_path: Path) -> None:
    """Siblings in one folder, as the defaults are, and names that share a start."""
    bench = Bench(
        "folder",
        tmp_path,
        {
            "source": str(tmp_path / "scans"),
            "process": str(tmp_path / "scans-queue"),
            "images": str(tmp_path / "scans2"),
        },
    )
    done = run_ptif(bench, "mark")
    assert done.returncode == 0, done.stderr
