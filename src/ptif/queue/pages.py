"""Notes of the pages a run left out: a multi-page source converted without ``all_pages`` gives
its first page only, and the operator should know which sources lost what.

The worker writes a note at :func:`~ptif.queue.layout.pages_key` of the source key when it
converts page 1 of a source with more pages (``key``, ``eTag``, ``pages``, ``converted``,
``left_out``, ``at``), and deletes it when that source is converted with every page. ``ptif
status`` counts them. A note is only a note: nothing re-queues from it (turn ``all_pages`` on and
run ``ptif mark --stale``). A source later replaced by a single-page version keeps its note until
it is deleted by hand or converted with every page.
"""

from __future__ import annotations

import contextlib
import json
from typing import Any

from ptif.queue.failures import now_iso
from ptif.queue.layout import pages_key
from ptif.stores.base import ObjectMissing, Store


def note_left_out(process: Store, source_key: str, etag: str, pages: int) -> str:
    """Note that pages 2 to ``pages`` of ``source_key`` were not converted; returns its key."""
    body: dict[str, Any] = {
        "key": source_key,
        "eTag": etag,
        "pages": pages,
        "converted": 1,
        "left_out": pages - 1,
        "at": now_iso(),
    }
    key = pages_key(source_key)
    process.put_bytes(key, json.dumps(body, ensure_ascii=False).encode())
    return key


def clear_left_out(process: Store, source_key: str) -> None:
    """Every page of ``source_key`` is converted now: its note, if any, goes."""
    with contextlib.suppress(ObjectMissing):
        process.delete(pages_key(source_key))
