"""The embedded default: entries on the local disk under ``CACHE_DIR``, through diskcache.

diskcache (an SQLite index + one file per large value) is built for exactly this:
- it is safe for several processes (gunicorn workers) and threads on one disk;
- an entry becomes visible only when its index row commits, after its file is
  fully written, so a write killed halfway leaves nothing readable;
- it evicts the least recently used entries to keep the total under a size bound;
- it expires entries after a TTL.
"""

from __future__ import annotations

from pathlib import Path

import diskcache

# SQLite's page cache and memory map count against the 512 MB tier's memory; the index is
# small (values over 32 KB live in their own files), so both stay small.
_SQLITE_CACHE_PAGES = 256  # 1 MiB
_LOCK_TIMEOUT_S = 1.0


class LocalBackend:
    name = "local"

    def __init__(self, directory: Path, max_bytes: int):
        self.directory = directory
        self.max_bytes = max_bytes
        self._cache = diskcache.Cache(
            str(directory),
            timeout=_LOCK_TIMEOUT_S,  # a locked index answers diskcache.Timeout instead of waiting
            size_limit=max_bytes,
            eviction_policy="least-recently-used",
            cull_limit=2,  # evict at most two least-recently-used entries per write (fine-grained LRU)
            sqlite_cache_size=_SQLITE_CACHE_PAGES,
            sqlite_mmap_size=0,
        )

    def get(self, key: str) -> bytes | None:
        return self._cache.get(key, default=None)

    def put(self, key: str, data: bytes, ttl_s: int) -> None:
        self._cache.set(key, data, expire=ttl_s)

    def delete(self, key: str) -> None:
        self._cache.delete(key)

    def clear(self) -> int:
        return self._cache.clear(retry=True)

    def usage(self) -> dict[str, object]:
        return {"entries": len(self._cache), "size_bytes": self._cache.volume(), "max_bytes": self.max_bytes,
                "complete": True}

    def close(self) -> None:
        self._cache.close()
