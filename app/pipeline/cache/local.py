"""The embedded default: entries on the local disk under ``CACHE_DIR``, through diskcache
(SQLite index + one file per large value: safe across processes and threads, atomic writes,
LRU eviction under a size bound, TTL). Nothing is memory-mapped and the index is not synced;
why, and what that costs: docs/cache.md ("The local index").

Entries are users' images: files are 0600 and directories 0700, whatever the umask. A read
takes no write lock (diskcache's own ``get`` reads the value inside a write transaction, so
concurrent hits on a large entry queued behind each other and timed out into recomputing).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
import time
from pathlib import Path
from typing import Callable

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
_FILE_MODE, _DIR_MODE = 0o600, 0o700
FLIGHTS = "flights"  # lock files of the outputs being computed, one per key (single flight across workers)


class LocalBackend:
    name = "local"

    def __init__(self, directory: Path, max_bytes: int):
        self.directory = directory
        self.max_bytes = max_bytes
        _private_dir(directory)
        _probe(directory / diskcache.core.DBNAME)
        _private_file(directory / diskcache.core.DBNAME)  # SQLite gives its journal the index's mode
        self._cache = diskcache.Cache(
            str(directory),
            disk=_PrivateDisk,
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
        """The value, read outside any transaction (a value's file is complete before its row
        commits and never rewritten); its access time (LRU) is updated only if the index's write
        lock is free at once."""
        cache = self._cache
        db_key, raw = cache._disk.put(key)
        rows = cache._sql("SELECT rowid, mode, filename, value FROM Cache WHERE key = ? AND raw = ?"
                          " AND (expire_time IS NULL OR expire_time > ?)", (db_key, raw, time.time())).fetchall()
        if not rows:
            return None
        ((rowid, mode, filename, value),) = rows
        try:
            data = cache._disk.fetch(mode, filename, value, False)
        except OSError:  # evicted or replaced since the row was read
            return None
        self._touch(rowid)
        return data

    def _touch(self, rowid: int) -> None:
        sql = self._cache._sql
        sql("PRAGMA busy_timeout = 0")
        try:
            sql("UPDATE Cache SET access_time = ? WHERE rowid = ?", (time.time(), rowid))
        except sqlite3.OperationalError:  # locked by a writer: this hit does not count for LRU
            pass
        finally:
            sql(f"PRAGMA busy_timeout = {int(_LOCK_TIMEOUT_S * 1000)}")

    def try_lock(self, key: str) -> Callable[[], None] | None:
        """Take the key's lock file (shared by every process on this host), or None if another
        request holds it. Returns the release; a process that dies releases its locks."""
        flights = self.directory / FLIGHTS
        _private_dir(flights)
        path = flights / key
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, _FILE_MODE)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return None
            try:
                if os.stat(path).st_ino == os.fstat(fd).st_ino:
                    break
            except FileNotFoundError:
                pass
            os.close(fd)  # unlinked by its holder as we opened it: take the new one

        def release() -> None:
            with contextlib.suppress(OSError):
                os.unlink(path)  # before unlocking: whoever waits on this inode takes a fresh file
            os.close(fd)

        return release

    def put(self, key: str, data: bytes, ttl_s: int) -> None:
        self._cache.set(key, data, expire=ttl_s)

    def delete(self, key: str) -> None:
        self._cache.delete(key)

    def clear(self) -> int:
        return self._cache.clear(retry=True)

    def usage(self) -> dict[str, object]:
        return {"entries": len(self._cache), "size_bytes": self._cache.volume(), "max_bytes": self.max_bytes,
                "complete": True}


class _PrivateDisk(diskcache.Disk):
    """diskcache's value files, created 0600 in 0700 directories."""

    def _write(self, full_path, iterator, mode, encoding=None):
        for count in range(1, 11):
            try:
                _private_dirs(Path(self._directory), Path(full_path).parent)
                writer = open(full_path, mode, encoding=encoding, opener=_private_opener)
            except OSError:  # another process removed the directory (emptied by eviction) meanwhile
                if count == 10:
                    raise
                continue
            with writer:
                size = 0
                for chunk in iterator:
                    size += len(chunk)
                    writer.write(chunk)
                return size


def _private_opener(path: str, flags: int) -> int:
    fd = os.open(path, flags, _FILE_MODE)
    os.fchmod(fd, _FILE_MODE)  # the umask can only have narrowed it
    return fd


def _private_file(path: Path) -> None:
    os.close(_private_opener(str(path), os.O_RDWR | os.O_CREAT))


def _private_dir(path: Path) -> None:
    """``path`` as a directory only its owner can enter (its parents are created as usual)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        path.mkdir(_DIR_MODE)
    if path.stat().st_mode & 0o777 != _DIR_MODE:
        with contextlib.suppress(PermissionError):  # a directory given to us by its owner: left as it is
            path.chmod(_DIR_MODE)


def _private_dirs(root: Path, path: Path) -> None:
    """Each missing directory between ``root`` (there) and ``path``, 0700."""
    missing = []
    while path != root and not path.is_dir():
        missing.append(path)
        path = path.parent
    for directory in reversed(missing):
        with contextlib.suppress(FileExistsError):  # made by another process meanwhile
            directory.mkdir(_DIR_MODE)
        directory.chmod(_DIR_MODE)


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
