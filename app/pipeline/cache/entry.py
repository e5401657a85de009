"""What a cache entry looks like in storage: a small header, then the payload.

    magic "BGRC" | format (1 byte) | created (float64, Unix seconds) | sha256(created + payload) | payload

The digest makes a corrupt or truncated entry detectable on any backend, and the
creation time lets the reader enforce the TTL without asking the backend for
metadata (one GET per lookup on GCS). Pure functions of bytes.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

MAGIC = b"BGRC"
FORMAT = 1
_HEADER = struct.Struct(">4sBd32s")
HEADER_BYTES = _HEADER.size


class CorruptEntry(ValueError):
    """The stored bytes are not an intact entry (truncated, altered, or not ours)."""


@dataclass(frozen=True)
class Entry:
    payload: bytes
    created: float  # Unix seconds

    def age_s(self, now: float) -> float:
        return now - self.created


def _digest(created: float, payload: bytes | memoryview) -> bytes:
    """sha256(created + payload), without a concatenated copy of a payload that may be megabytes."""
    digest = hashlib.sha256(struct.pack(">d", created))
    digest.update(payload)
    return digest.digest()


def pack(payload: bytes, created: float) -> bytes:
    return _HEADER.pack(MAGIC, FORMAT, created, _digest(created, payload)) + payload


def unpack(data: bytes) -> Entry:
    if len(data) < HEADER_BYTES:
        raise CorruptEntry(f"{len(data)} bytes, shorter than the {HEADER_BYTES}-byte header")
    magic, fmt, created, digest = _HEADER.unpack_from(data)
    if magic != MAGIC or fmt != FORMAT:
        raise CorruptEntry(f"not a format-{FORMAT} entry (magic {magic!r}, format {fmt})")
    if _digest(created, memoryview(data)[HEADER_BYTES:]) != digest:
        raise CorruptEntry("content hash mismatch (truncated or altered)")
    return Entry(data[HEADER_BYTES:], created)
