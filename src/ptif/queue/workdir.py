"""The worker's work folders: where each item downloads its source and writes its pyramid.

What they are: one ``ptif-work-*`` folder per run under the temporary folder (``TMPDIR``),
made with :func:`tempfile.mkdtemp` (new, mode 0700, private to the user running the worker),
and inside it one ``item-*`` folder per image, made the same way when the item starts and
removed, with everything in it, when the item ends. An item's folder holds its download
(``source``) and its pyramid (``pyramid.tif``); nothing else is ever in it but what the
conversion of that one image writes.

Who may see them: another user, nobody (0700 all the way down). The worker's own user may not
list the run folder either: while the run lives it is mode 0300 (``-wx``), so the worker makes
and enters item folders by the names it holds, but no process, a decoder of another image
included, can read from it the names of the folders beside its own. Each name carries 48 random
bits (:func:`tempfile.mkdtemp`), so it cannot be guessed. What this does not do: keep a
program running as the worker's user from reading another item's folder whose name it learnt
elsewhere (``/proc``, its own arguments); that is the decoder sandbox's part, which gives a
decoder its own input and nothing else. root passes every permission. What a decoder could
still do to its own item's files is caught before publishing (:mod:`ptif.queue.fetch`).

How abandoned ones are swept: a run holds an exclusive ``flock`` on its folder's ``.in-use``
file for as long as it lives, and the kernel drops that lock when the process dies, however it
dies. Each run, before making its own folder, removes the ``ptif-work-*`` folders whose lock it
can take: those a killed worker left behind, which would otherwise fill a long-lived host's disk
one crash at a time. A folder without a lock file (made by a run that had not locked it yet, or
by a ptif from before the locks) is left alone for a day.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import shutil
import stat
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from ptif.errors import DISK_FULL, IO_ERROR, PtifError

log = logging.getLogger(__name__)

WORK_PREFIX = "ptif-work-"
ITEM_PREFIX = "item-"
WORK_LOCK = ".in-use"
#: The run folder while it lives: its owner may add and enter folders, nobody may list it.
RUN_MODE = stat.S_IWUSR | stat.S_IXUSR
#: What :func:`tempfile.mkdtemp` gives, and what a folder needs to be listed and removed.
PRIVATE_MODE = stat.S_IRWXU
#: A work folder from before locks were taken is left alone for this long.
UNLOCKED_GRACE_S = 86400.0
#: A full disk, a full quota, or a file past the size limit (RLIMIT_FSIZE): space, not a fault.
NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


@contextlib.contextmanager
def work_folder() -> Iterator[Path]:
    """A private temporary folder for the run's items, locked and unlistable while the run
    lives. Folders that a killed worker left behind (their lock is free) are removed first, so
    a long-lived host does not fill its disk one crash at a time."""
    sweep_work_folders(Path(tempfile.gettempdir()))
    folder = Path(tempfile.mkdtemp(prefix=WORK_PREFIX))
    try:
        with _locked(folder):
            os.chmod(folder, RUN_MODE)
            try:
                yield folder
            finally:
                os.chmod(folder, PRIVATE_MODE)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def item_folder(run: Path) -> Iterator[Path]:
    """A new folder of its own for one item, inside the run's folder, removed when it ends."""
    try:
        folder = Path(tempfile.mkdtemp(prefix=ITEM_PREFIX, dir=run))
    except OSError as error:
        raise local_error(error, f"{run}: cannot make an item's work folder") from error
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def local_error(error: OSError, what: str) -> PtifError:
    """A failure of the worker's own disk as the error its queue disposition needs: a full
    disk is ``disk-full`` (retried, never the image's attempt), anything else ``io-error``."""
    full = error.errno in NO_SPACE
    return PtifError(f"{what} ({error.strerror or error})", code=DISK_FULL if full else IO_ERROR)


def sweep_work_folders(parent: Path) -> list[Path]:
    """Remove the ``ptif-work-*`` folders under ``parent`` that no live run holds."""
    removed = []
    for folder in parent.glob(f"{WORK_PREFIX}*"):
        try:
            if not folder.is_dir() or folder.is_symlink() or not _abandoned(folder):
                continue
            os.chmod(folder, PRIVATE_MODE)  # unlistable while its run lived
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
    """Hold the folder's lock. The lock file is locked under a passing name and only then
    renamed ``.in-use``: were it made under its own name, a sweeper of another run starting at
    the same moment could take the lock between the file's creation and ours, and remove a live
    run's folder."""
    fd, passing = tempfile.mkstemp(prefix=".locking-", dir=folder)
    with os.fdopen(fd, "wb") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        os.replace(passing, folder / WORK_LOCK)
        yield
