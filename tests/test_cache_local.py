"""The local backend under real concurrency: several processes on one directory, the size bound, killed writers."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from app.pipeline.cache import ResultCache
from app.pipeline.cache.local import LocalBackend

ROOT = Path(__file__).resolve().parent.parent

# A worker process: the service's own cache front over the local backend, hammering shared keys.
# Each key's payload is a function of the key, so any reader can tell a torn or mixed-up value.
WORKER = r"""
import hashlib, json, random, sys
from pathlib import Path
from app.pipeline.cache import ResultCache
from app.pipeline.cache.local import LocalBackend

def payload(key):
    size = 1_000 if int(key[1:]) % 2 else 200_000   # small ones live in SQLite, large ones in files
    block = hashlib.sha256(key.encode()).digest()
    return (block * (size // 32 + 1))[:size]

directory, seed, ops, max_mb = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
cache = ResultCache("local", lambda: LocalBackend(Path(directory), int(max_mb * 2**20)), ttl_s=3600)
rng = random.Random(seed)
wrong = 0
for _ in range(ops):
    key = f"k{rng.randrange(24)}"
    if rng.random() < 0.5:
        cache.store(key, payload(key))
    else:
        found = cache.lookup(key, "output").data
        wrong += found is not None and found != payload(key)
print(json.dumps({"wrong": wrong, **cache.counts()}))
"""


def payload(key: str) -> bytes:
    import hashlib

    size = 1_000 if int(key[1:]) % 2 else 200_000
    block = hashlib.sha256(key.encode()).digest()
    return (block * (size // 32 + 1))[:size]


def run_workers(directory: Path, processes: int, ops: int, max_mb: float = 1024) -> list[dict]:
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(directory), str(seed), str(ops), str(max_mb)],
                              cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for seed in range(processes)]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        results.append(json.loads(out.strip().splitlines()[-1]))
    return results


def test_several_processes_share_the_same_keys_safely(tmp_path):
    results = run_workers(tmp_path, processes=4, ops=300)
    assert all(r["wrong"] == 0 for r in results), results
    assert sum(r.get("errors", 0) for r in results) == 0, results
    assert sum(r.get("output_hits", 0) for r in results) > 100  # they did read each other's writes
    assert sum(r.get("writes", 0) for r in results) > 400
    cache = ResultCache("local", lambda: LocalBackend(tmp_path, 2**30), ttl_s=3600)
    for i in range(24):
        found = cache.lookup(f"k{i}", "output")
        assert found.status == "HIT" and found.data == payload(f"k{i}")


def test_size_bound_evicts_the_least_recently_used(tmp_path):
    bound = 2**20
    cache = ResultCache("local", lambda: LocalBackend(tmp_path, bound), ttl_s=3600)
    for i in range(40):  # 40 x 100 KB through a 1 MB cache
        cache.store(f"k{i}", bytes([i]) * 100_000)
        assert cache.lookup("k0", "output").status == "HIT"  # k0 stays in use
        usage = cache.stats()
        assert usage["size_mb"] <= 1.0, (i, usage)
    assert cache.lookup("k0", "output").data == bytes([0]) * 100_000
    assert [cache.lookup(f"k{i}", "output").status for i in (1, 2, 3, 20)] == ["MISS"] * 4
    assert cache.lookup("k39", "output").status == "HIT"
    assert cache.stats()["entries"] <= 10


def test_several_processes_keep_the_size_bound(tmp_path):
    run_workers(tmp_path, processes=3, ops=200, max_mb=1.0)
    usage = LocalBackend(tmp_path, 2**20).usage()
    assert usage["size_bytes"] <= 2**20 + 200_000, usage  # at most one value's worth over, culled on the next write


# A writer killed at random moments, mid-write at some of them: 4 MB values, each key's content known.
KILLED_WRITER = r"""
import sys
from pathlib import Path
from app.pipeline.cache.local import LocalBackend
backend = LocalBackend(Path(sys.argv[1]), 2**31)
print("ready", flush=True)
i = 0
while True:
    key = f"big{int(sys.argv[2])}-{i}"
    backend.put(key, bytes([i % 251]) * (4 << 20), 3600)
    i += 1
"""


def test_a_write_killed_halfway_leaves_nothing_readable(tmp_path):
    for round_ in range(6):
        proc = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(tmp_path), str(round_)], cwd=ROOT,
                                stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(0.05 + 0.037 * round_)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    backend = LocalBackend(tmp_path, 2**31)
    keys = list(backend._cache.iterkeys())
    assert keys, "the writer never completed a value; the test proves nothing"
    # Files without an index row: writes that were killed before they committed (the case under test).
    assert len(list(tmp_path.rglob("*.val"))) > len(keys), "no write was interrupted; the test proves nothing"
    for key in keys:  # every key that can be read back is whole, at the backend level itself
        i = int(key.rsplit("-", 1)[1])
        assert backend.get(key) == bytes([i % 251]) * (4 << 20), key
    # and the cache is still writable and readable after the kills
    backend.put("after", b"x" * 100_000, 60)
    assert backend.get("after") == b"x" * 100_000


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_damaged_entry_reads_as_a_miss_and_is_dropped(tmp_path, damage):
    cache = ResultCache("local", lambda: LocalBackend(tmp_path, 2**30), ttl_s=3600)
    cache.store("k", b"v" * 100_000)
    (path,) = tmp_path.rglob("*.val")
    raw = path.read_bytes()
    path.write_bytes(raw[:1000] if damage == "truncate" else raw[:-1] + bytes([raw[-1] ^ 0xFF]))
    assert cache.lookup("k", "output").status == "MISS"
    assert cache.counts()["corrupt"] == 1
    assert LocalBackend(tmp_path, 2**30).get("k") is None  # deleted, not read again


def test_entries_are_private_whatever_the_umask(tmp_path):
    """Entries are users' images: files 0600, directories 0700, even under a umask of 0 (before: 0644/0755)."""
    import os
    import stat

    previous = os.umask(0)
    try:
        cache = ResultCache("local", lambda: LocalBackend(tmp_path / "cache", 2**30), ttl_s=3600)
        for i in range(5):
            cache.store(f"k{i}", bytes([i]) * (1000 if i % 2 else 100_000))  # in the index, and in files
            assert cache.lookup(f"k{i}", "output").status == "HIT"
        release = cache.lock("k0")  # a lock file of the single flight
    finally:
        os.umask(previous)
    paths = [tmp_path / "cache", *(tmp_path / "cache").rglob("*")]
    assert {p.suffix for p in paths} >= {".val", ".db"} and (tmp_path / "cache" / "flights" / "k0").exists()
    for path in paths:
        mode = stat.S_IMODE(os.stat(path).st_mode)
        assert mode == (0o700 if path.is_dir() else 0o600), (path, oct(mode))
    release()


# Holds the index's write lock (as another worker in a long write would) until told to stop.
LOCK_HOLDER = r"""
import sqlite3, sys
con = sqlite3.connect(sys.argv[1], isolation_level=None)
con.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
sys.stdin.readline()
con.execute("ROLLBACK")
"""


def test_a_hit_does_not_wait_for_the_index_write_lock(tmp_path):
    """Before: diskcache read a value inside a write transaction; with another process holding the
    lock, the read timed out after a second, the hit became BYPASS (and the result was recomputed)."""
    import diskcache

    cache = ResultCache("local", lambda: LocalBackend(tmp_path, 2**30), ttl_s=3600)
    big = bytes(range(256)) * 40_000  # ~10 MB
    cache.store("big", big)
    cache.store("small", b"s" * 100)
    holder = subprocess.Popen([sys.executable, "-c", LOCK_HOLDER, str(tmp_path / diskcache.core.DBNAME)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        started = time.monotonic()
        found = [cache.lookup(key, "output") for key in ("big", "small", "big")]
        elapsed = time.monotonic() - started
    finally:
        holder.communicate("done\n", timeout=10)
    assert [f.status for f in found] == ["HIT"] * 3 and found[0].data == big and found[1].data == b"s" * 100
    assert elapsed < 0.5, elapsed
    assert cache.counts().get("errors", 0) == 0
    # the lock gone, hits update the LRU order again
    assert cache.lookup("big", "output").status == "HIT"
