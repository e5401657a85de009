"""The embedded default: entries on the local disk under ``CACHE_DIR``, through diskcache
(SQLite index + one file per large value: safe across processes and threads, atomic writes,
LRU eviction under a size bound, TTL). Nothing is memory-mapped and the index is not synced;
why, and what that costs: docs/cache.md ("The local index").
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import diskcache

# SQLite's page cache and memory map count against the 512 MB tier's memory; the index is
# small (values over 32 KB live in their own files), so both stay small.
_SQLITE_CACHE_PAGES = 256  # 1 MiB
_LOCK_TIMEOUT_S = 1.0
# A rollback journal that stays in place between writes (truncated to 0 bytes at commit
# instead of created and unlinked each time); a database left in WAL by an older version
# is converted when it is opened.
JOURNAL_MODE = "truncate"
_SYNCHRONOUS_OFF = 0  # see the module's docstring


class LocalBackend:
    name = "local"

    def __init__(self, directory: Path, max_bytes: int):
        self.directory = directory
        self.max_bytes = max_bytes
        _probe(directory / diskcache.core.DBNAME)
        self._cache = diskcache.Cache(
            str(directory),
            timeout=_LOCK_TIMEOUT_S,  # a locked index answers diskcache.Timeout instead of waiting
            size_limit=max_bytes,
            eviction_policy="least-recently-used",
            cull_limit=2,  # evict at most two least-recently-used entries per write (fine-grained LRU)
            sqlite_cache_size=_SQLITE_CACHE_PAGES,
            sqlite_mmap_size=0,
            sqlite_journal_mode=JOURNAL_MODE,  # not WAL: no memory-mapped -shm index (above)
            sqlite_synchronous=_SYNCHRONOUS_OFF,
        )
        if _in_wal_mode(directory / diskcache.core.DBNAME):  # put back by another process since the probe
            self._cache.close()
            raise OSError(f"{directory / diskcache.core.DBNAME} is in WAL mode (another process has it open)")

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


def _probe(db: Path) -> None:
    """Before diskcache opens an existing index (it retries a locked one for 60 s, which the
    front's reopening on a request thread must not wait): within ``_LOCK_TIMEOUT_S``, leave WAL
    if an older version left it there, and check that the file is a database whose write lock
    can be had. Raises OSError (or sqlite3's error) saying why not; the front serves without
    the cache and tries again after its back-off."""
    if not db.exists():
        return
    con = sqlite3.connect(str(db), timeout=_LOCK_TIMEOUT_S, isolation_level=None)
    try:
        if _in_wal_mode(db):
            (mode,) = con.execute(f"PRAGMA journal_mode = {JOURNAL_MODE}").fetchone()
            if str(mode).lower() != JOURNAL_MODE:
                raise OSError(f"{db} stays in WAL mode (another process has it open)")
        con.execute("BEGIN IMMEDIATE")
        con.execute("ROLLBACK")
    finally:
        con.close()


def _in_wal_mode(path: Path) -> bool:
    """Whether the SQLite file's header says WAL (bytes 18-19, the read and write versions, are 2)."""
    try:
        with open(path, "rb") as f:
            header = f.read(20)
    except FileNotFoundError:
        return False
    return len(header) == 20 and header[18] == 2
