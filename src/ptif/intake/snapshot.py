"""What the poller saw on its last pass: each key's identity, in 16 bytes, for millions of keys.

A poller cannot trust modification times to find what is new: ``rsync -t``, ``cp -p`` and ``mv``
bring files in with the times they had elsewhere, often years old, and a multipart upload's
LastModified is when it started. So each pass compares every listed object with what the last
pass saw of the same key: its size, eTag and modification time (a folder store's eTag is the
file's inode, size and modification time in nanoseconds), and anything new or different is
offered to the queue. The time orders nothing; it only tells apart the same bytes uploaded again
(a source back after its deletion) from the object seen before.

The snapshot holds, per key, a 64-bit BLAKE2b digest of the key and one of its size, eTag and time,
in two ``array('Q')`` sorted by the key digest: 16 bytes a key, looked up by bisection. Listings
come in no order that can be relied on (SeaweedFS lists ``/`` first), so the next snapshot is
gathered in 4,096 buckets by the digest's top bits and each bucket is sorted on its own: memory
stays near 16 bytes a key for the old snapshot plus as much again for the new one, never a Python
object per key. Two keys whose digests collide (odds about 3 in 100 million at a million keys)
would share an entry, and a change of one could go unnoticed until ``ptif reconcile``.

Stored in the process store as :data:`MAGIC`, one JSON line of facts, then the two arrays,
little-endian.
"""

from __future__ import annotations

import json
import sys
from array import array
from bisect import bisect_left
from collections.abc import Iterator
from hashlib import blake2b
from typing import Any

MAGIC = b"ptif-watch-snapshot 1\n"
#: The top bits of a key digest that pick its bucket while a new snapshot is gathered.
BUCKET_BITS = 12
_SHIFT = 64 - BUCKET_BITS


def key_digest(key: str) -> int:
    return int.from_bytes(blake2b(key.encode(), digest_size=8, person=b"ptif-key").digest())


def state_digest(size: int, etag: str, modified: float) -> int:
    """What identifies one version of an object: its size, eTag and modification time. The
    time tells the same bytes uploaded again apart from the object seen before (a source back
    after it was deleted, and failed as ``source-missing``, is news); it orders nothing."""
    text = f"{size}\0{etag}\0{modified!r}".encode()
    return int.from_bytes(blake2b(text, digest_size=8, person=b"ptif-state").digest())


class Snapshot:
    """Key digests, sorted, and the state digest of each."""

    __slots__ = ("keys", "states")

    def __init__(self, keys: array[int] | None = None, states: array[int] | None = None) -> None:
        self.keys = keys if keys is not None else array("Q")
        self.states = states if states is not None else array("Q")
        if len(self.keys) != len(self.states):
            raise ValueError("a snapshot needs as many states as keys")

    def __len__(self) -> int:
        return len(self.keys)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Snapshot):
            return NotImplemented
        return self.keys == other.keys and self.states == other.states

    def get(self, key: int) -> int | None:
        """The state digest recorded for a key digest, or None."""
        i = bisect_left(self.keys, key)
        if i < len(self.keys) and self.keys[i] == key:
            return self.states[i]
        return None

    def nbytes(self) -> int:
        return (len(self.keys) + len(self.states)) * 8

    def to_bytes(self, facts: dict[str, Any]) -> bytes:
        header = json.dumps({**facts, "keys": len(self)}, ensure_ascii=False).encode()
        return b"".join((MAGIC, header, b"\n", *_little_endian(self.keys, self.states)))

    @classmethod
    def parse(cls, data: bytes) -> tuple[Snapshot, dict[str, Any]]:
        """A stored snapshot and its facts. Raises ValueError if ``data`` is not one."""
        if not data.startswith(MAGIC):
            raise ValueError("not a watch snapshot")
        end = data.index(b"\n", len(MAGIC))
        facts = json.loads(data[len(MAGIC) : end])
        count = facts.get("keys") if isinstance(facts, dict) else None
        body = memoryview(data)[end + 1 :]
        if not isinstance(count, int) or len(body) != count * 16:
            raise ValueError("the snapshot is cut short or too long")
        keys, states = array("Q"), array("Q")
        keys.frombytes(body[: count * 8])
        states.frombytes(body[count * 8 :])
        if sys.byteorder == "big":
            keys.byteswap()
            states.byteswap()
        if any(keys[i] > keys[i + 1] for i in range(len(keys) - 1)):
            raise ValueError("the snapshot's keys are not sorted")
        return cls(keys, states), facts


class SnapshotBuilder:
    """Gathers (key digest, state digest) pairs in any order; :meth:`build` sorts them."""

    def __init__(self) -> None:
        self._keys: list[array[int]] = [array("Q") for _ in range(1 << BUCKET_BITS)]
        self._states: list[array[int]] = [array("Q") for _ in range(1 << BUCKET_BITS)]

    def add(self, key: int, state: int) -> None:
        bucket = key >> _SHIFT
        self._keys[bucket].append(key)
        self._states[bucket].append(state)

    def build(self) -> Snapshot:
        """The snapshot; the builder is emptied bucket by bucket as it goes."""
        keys, states = array("Q"), array("Q")
        for bucket in range(1 << BUCKET_BITS):
            pairs = sorted(zip(self._keys[bucket], self._states[bucket], strict=True))
            self._keys[bucket] = array("Q")
            self._states[bucket] = array("Q")
            keys.extend(k for k, _ in pairs)
            states.extend(s for _, s in pairs)
        return Snapshot(keys, states)


def _little_endian(*arrays: array[int]) -> Iterator[bytes]:
    for values in arrays:
        if sys.byteorder == "big":
            values = array("Q", values)
            values.byteswap()
        yield values.tobytes()
