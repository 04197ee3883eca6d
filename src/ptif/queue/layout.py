"""The process store's layout: every folder ptif keeps there, and the functions that name objects
in them. Every user of a folder imports it from here, the CDK app's IAM policies included.

::

    PROCESS store (a folder, or s3://bucket[/prefix])
    ├── rbsc/                           the queue: DEFAULT_QUEUE_PREFIX, or --queue-prefix
    │   ├── <source key>.json           a marker: marker_key(source key, queue prefix)
    │   └── _long/<sha256 of key>.json  HASHED_FOLDER: keys too long or unsafe to name an object
    ├── claims/<sha256>.json            CLAIMS_PREFIX: leases, claim_key(output key)
    ├── failed/                         FAILED_PREFIX: failure records (ptif.queue.failures)
    │   ├── <source key>.json           failed_key(source key)
    │   ├── _long/<sha256 of key>.json  HASHED_FOLDER, as in the queue
    │   └── _unreadable/<sha256>.json   UNREADABLE_FOLDER: markers that were not JSON,
    │                                   unreadable_key(marker key)
    ├── pages/<source key>.json         PAGES_PREFIX: sources whose pages 2+ were left out
    │                                   (ptif.queue.pages), pages_key(source key)
    ├── reports/<name>.json             REPORTS_PREFIX: run and reconcile reports, report_key(name)
    ├── watch/<sha256>.json             CURSOR_PREFIX: `ptif watch` cursors, cursor_key(source)
    ├── ptif-check/<uuid>               CHECK_PREFIX: the conditional-write check's scratch keys
    │                                   (ptif.stores.base, which any store runs on itself)
    └── .ptif-tmp/ .ptif-meta/          a folder store's own staging and metadata (RESERVED in
                                        ptif.stores.folder): never listed, never a key

Who writes where: intake (the Lambda, ``ptif watch``, ``mark``, ``reconcile``, ``retry``) puts
markers in the queue, and the intake Lambda writes nothing else; the worker deletes markers and
writes ``claims/``, ``failed/``, ``pages/``, ``reports/`` and ``ptif-check/``; ``ptif retry``
deletes failure records; ``ptif watch`` writes its cursor under ``watch/``; ``ptif reconcile``
writes a report.

What the code relies on:

- A listing of the queue prefix returns markers and nothing else, so no other folder may lie
  under the queue prefix, nor the queue prefix under another folder (tests/test_layout.py checks
  the default). ``_long/`` is under the queue *on purpose*: a listing of the queue includes the
  hashed markers, and a worker scoped to a key prefix lists ``<queue>_long/`` besides
  ``<queue><prefix>``, since a hashed name says nothing of its key.
- A key that itself begins with ``_long/`` is always hashed, so an object named
  ``<queue>_long/<hex>.json`` is always a hashed marker, never the marker of a key ``<hex>``.
- A listing of ``failed/`` returns every record, hashed and unreadable ones included; what
  ``ptif status`` counts and what ``ptif retry`` re-queues.
- Folder names never begin with ``.ptif-``, which a folder store keeps for itself.

This module stays light (no pyvips, no boto3, nothing that reaches a store), so the CDK app in
``infra/`` imports it to build its policies.
"""

from __future__ import annotations

import hashlib

from ptif.stores.base import CHECK_PREFIX, key_problem

#: The queue's folder unless settings say otherwise (``rbsc/``, as in the original system).
DEFAULT_QUEUE_PREFIX = "rbsc/"
#: Inside the queue and inside ``failed/``: objects named by a hash of their key.
HASHED_FOLDER = "_long/"
CLAIMS_PREFIX = "claims/"
FAILED_PREFIX = "failed/"
#: Inside ``failed/``: markers that could not be read, named by a hash of the marker's key.
UNREADABLE_FOLDER = "_unreadable/"
REPORTS_PREFIX = "reports/"
#: Notes of multi-page sources converted without ``all_pages``: which pages were left out.
PAGES_PREFIX = "pages/"
CURSOR_PREFIX = "watch/"

#: The folders besides the queue, at the top of the process store. Every one of them is read,
#: written and deleted by the worker's role; infra/ grants exactly these.
FOLDERS = (
    CLAIMS_PREFIX, FAILED_PREFIX, PAGES_PREFIX, REPORTS_PREFIX, CURSOR_PREFIX, CHECK_PREFIX,
)  # fmt: skip
#: The folders inside the queue or ``failed/``.
SUBFOLDERS = (HASHED_FOLDER, UNREADABLE_FOLDER)

S3_KEY_LIMIT = 1024
#: Longest folder or file name most filesystems (and SeaweedFS) accept.
SEGMENT_LIMIT = 255


def queue_prefix_problem(prefix: str) -> str | None:
    """Why ``prefix`` cannot be the queue's folder, or None if it can: a listing of the queue
    must return markers alone, so the queue may neither hold nor sit inside another folder."""
    if not prefix.endswith("/") or prefix.startswith("/"):
        return f"queue prefix {prefix!r} must end with '/', like {DEFAULT_QUEUE_PREFIX!r}"
    for folder in FOLDERS:
        if prefix.startswith(folder) or folder.startswith(prefix):
            return f"queue prefix {prefix!r} overlaps the process store's {folder} folder"
    if prefix.startswith(".ptif-"):
        return (
            f"queue prefix {prefix!r} starts with '.ptif-', which folder stores keep for themselves"
        )
    return None


def _needs_hashing(key: str, prefix: str) -> bool:
    name = f"{prefix}{key}.json"
    unsafe = key_problem(key) is not None  # the stores' own rule: no store could hold the name
    too_long = len(name.encode()) > S3_KEY_LIMIT
    long_segment = any(len(s.encode()) > SEGMENT_LIMIT for s in name.split("/"))
    return unsafe or too_long or long_segment or key.startswith(HASHED_FOLDER)


def record_key(source_key: str, prefix: str) -> str:
    """Where the object about ``source_key`` lives under ``prefix`` (queue or ``failed/``)."""
    if _needs_hashing(source_key, prefix):
        digest = hashlib.sha256(source_key.encode("utf-8", "surrogatepass")).hexdigest()
        return f"{prefix}{HASHED_FOLDER}{digest}.json"
    return f"{prefix}{source_key}.json"


def marker_key(source_key: str, queue_prefix: str) -> str:
    return record_key(source_key, queue_prefix)


def failed_key(source_key: str) -> str:
    return record_key(source_key, FAILED_PREFIX)


def pages_key(source_key: str) -> str:
    """The note that ``source_key``'s pages after the first were left out."""
    return record_key(source_key, PAGES_PREFIX)


def unreadable_key(marker_key: str) -> str:
    """Where the failure record of an unreadable marker goes: its key may not be known."""
    return failed_key(f"{UNREADABLE_FOLDER}{hashlib.sha256(marker_key.encode()).hexdigest()}")


def claim_key(subject: str) -> str:
    """The lease of ``subject`` (an output key)."""
    return f"{CLAIMS_PREFIX}{hashlib.sha256(subject.encode()).hexdigest()[:40]}.json"


def report_key(name: str) -> str:
    return f"{REPORTS_PREFIX}{name}.json"


def cursor_key(source_id: str, prefix: str = "") -> str:
    """The cursor of a poller watching ``prefix`` of the source store named ``source_id``."""
    digest = hashlib.sha256(f"{source_id}\n{prefix}".encode()).hexdigest()[:24]
    return f"{CURSOR_PREFIX}{digest}.json"
