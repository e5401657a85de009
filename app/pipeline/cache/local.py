"""The embedded default: entries on the local disk under ``CACHE_DIR``, through diskcache.

diskcache (an SQLite index + one file per large value) is built for exactly this:
- it is safe for several processes (gunicorn workers) and threads on one disk;
- an entry becomes visible only when its index row commits, after its file is
  fully written, so a write killed halfway leaves nothing readable;
- it evicts the least recently used entries to keep the total under a size bound;
- it expires entries after a TTL.

Nothing of the cache is memory-mapped: SQLite's memory map is off (``sqlite_mmap_size=0``)
and the index uses a rollback journal, not diskcache's default WAL. WAL keeps its index in
``cache.db-shm``, a memory-mapped file: when the file stops accepting writes (made immutable,
a filesystem gone read-only or full) the next store into the mapping is a SIGBUS that kills
the worker, with no exception to catch. With a rollback journal every failure is an I/O
error from a system call, which the front (``results.py``) turns into serving without the
cache. Several processes still share the index safely (SQLite's file locks).

A rollback journal takes the index's lock for every commit, and with the LRU policy every
hit is a commit too (its access time). Synced (``synchronous=NORMAL``), each commit held
the lock through two fsyncs, and under load lookups and writes waited past
``_LOCK_TIMEOUT_S`` (tests/test_cache_local.py's four processes: 2 errors in 3 runs of 4).
So the index is not synced (``synchronous=OFF``): commits are as short as WAL's were, and
still atomic when a process dies (the kernel keeps what was written: the killed-writer test);
only an OS crash or power loss could damage the index. ``CACHE_DIR`` defaults to the
container's /tmp, which such a crash loses anyway; on a persistent disk a damaged index is
an I/O error like any other (requests go on without the cache) until the directory is
cleared, and a damaged value is caught by its content hash (``entry.py``).
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

    def close(self) -> None:
        self._cache.close()


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
