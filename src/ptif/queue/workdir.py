"""The worker's work folder: where a run downloads sources and writes pyramids before upload.

What a work folder is: one ``ptif-work-*`` folder per run under the temporary folder
(``TMPDIR``), made with :func:`tempfile.mkdtemp`, so it is new, mode 0700 and private to the
user running the worker. Each item works in it on two files named after the SHA-256 of its
source key (``.src``, the download, and ``.tif``, the pyramid), deleted when the item ends; the
folder itself goes when the run ends.

Who may see it: only the run that made it. It is never shared between runs or workers, never
inside a store, and nothing in it is ever published as it is: the pyramid is uploaded through
the images store, which stages its own copy.

How abandoned ones are swept: a run holds an exclusive ``flock`` on the folder's ``.in-use``
file for as long as it lives, and the kernel drops that lock when the process dies, however it
dies. Each run, before making its own folder, removes the ``ptif-work-*`` folders whose lock it
can take: those a killed worker left behind, which would otherwise fill a long-lived host's disk
one crash at a time. A folder without a lock file (made by a run that had not locked it yet, or
by a ptif from before the locks) is left alone for a day.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)

WORK_PREFIX = "ptif-work-"
WORK_LOCK = ".in-use"
#: A work folder from before locks were taken is left alone for this long.
UNLOCKED_GRACE_S = 86400.0


@contextlib.contextmanager
def work_folder() -> Iterator[Path]:
    """A private temporary folder for the run's downloads and pyramids, locked while the run
    lives. Folders that a killed worker left behind (their lock is free) are removed first, so
    a long-lived host does not fill its disk one crash at a time."""
    sweep_work_folders(Path(tempfile.gettempdir()))
    with tempfile.TemporaryDirectory(prefix=WORK_PREFIX) as name, _locked(Path(name)):
        yield Path(name)


def sweep_work_folders(parent: Path) -> list[Path]:
    """Remove the ``ptif-work-*`` folders under ``parent`` that no live run holds."""
    removed = []
    for folder in parent.glob(f"{WORK_PREFIX}*"):
        try:
            if not folder.is_dir() or folder.is_symlink() or not _abandoned(folder):
                continue
            shutil.rmtree(folder)
        except OSError as error:
            log.debug("%s: left in place (%s)", folder, error)
            continue
        log.info("removed %s, left by a worker that did not finish", folder)
        removed.append(folder)
    return removed


def _abandoned(folder: Path) -> bool:
    lock = folder / WORK_LOCK
    if not lock.exists():
        return time.time() - folder.stat().st_mtime > UNLOCKED_GRACE_S
    with lock.open("rb") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
    return True


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    with (folder / WORK_LOCK).open("wb") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield
