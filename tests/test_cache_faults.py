"""Cache faults that used to kill the worker or disable the cache for good (issue 12, point 8).

- The local index used SQLite's WAL, whose ``cache.db-shm`` is memory-mapped: with the cache
  directory (or just that file) made immutable, the next store into the mapping was a SIGBUS
  and gunicorn's worker died mid-request. Reproduced here for real with ``chattr +i`` (we run
  as root on ext4; the tests skip, saying so, where the attribute cannot be set), on a live
  process and on a real gunicorn worker.
- After a fault (garbage ``cache.db``, full disk) the front kept the broken backend and never
  recovered until a restart; now it opens the backend afresh after its back-off (2 s, doubling).
  The full disk is a real one: a small tmpfs (skipped, saying so, where mounting is refused).
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import diskcache
import pytest
import requests
from PIL import Image

from app.pipeline.cache import ResultCache
from app.pipeline.cache.local import JOURNAL_MODE, LocalBackend
from tests.serverkit import running_server
from tests.conftest import photo, post

ROOT = Path(__file__).resolve().parent.parent
DB = diskcache.core.DBNAME


def small_jpeg(name: str, side: int = 160) -> bytes:
    img = Image.open(photo(name)).convert("RGB")
    img.thumbnail((side, side))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    return buf.getvalue()


DOG, CAT = small_jpeg("animal-1.jpg"), small_jpeg("animal-2.jpg")


def header_versions(db: Path) -> tuple[int, int]:
    """SQLite's file format read/write versions (bytes 18, 19): 1 = rollback journal, 2 = WAL."""
    data = db.read_bytes()[:20]
    return data[18], data[19]


def chattr(flag: str, path: Path) -> None:
    subprocess.run(["chattr", "-R", flag, str(path)], check=True, capture_output=True)


@pytest.fixture()
def immutable(tmp_path):
    """``make(path)`` sets the immutable attribute on ``path`` (recursively); always undone afterwards."""
    probe = tmp_path / "probe"
    probe.write_bytes(b"x")
    try:
        subprocess.run(["chattr", "+i", str(probe)], check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"cannot set the immutable attribute here (needs root and a filesystem that has it): {exc}")
    try:
        with pytest.raises(PermissionError):  # the attribute really holds, even for root
            probe.write_bytes(b"y")
    finally:
        chattr("-i", probe)
    made: list[Path] = []

    def make(path: Path) -> None:
        chattr("+i", path)
        made.append(path)

    yield make
    for path in made:
        chattr("-i", path)


# -- no memory-mapped index --------------------------------------------------------------

def test_the_index_uses_a_rollback_journal_and_no_shared_memory_file(tmp_path):
    backend = LocalBackend(tmp_path, 2**30)
    for i in range(20):
        backend.put(f"k{i}", bytes([i]) * (1000 if i % 2 else 100_000), 60)
        assert backend.get(f"k{i}") == bytes([i]) * (1000 if i % 2 else 100_000)
    assert not (tmp_path / f"{DB}-shm").exists() and not (tmp_path / f"{DB}-wal").exists()
    assert header_versions(tmp_path / DB) == (1, 1)
    # a rollback journal mode is per connection (only WAL is written into the file): ask the backend's own
    assert backend._cache._sql("PRAGMA journal_mode").fetchone()[0] == JOURNAL_MODE


def test_a_wal_index_left_by_an_older_version_is_converted_and_kept(tmp_path):
    old = diskcache.Cache(str(tmp_path))  # diskcache's default: WAL
    old.set("kept", b"v" * 100_000)
    old.close()
    assert header_versions(tmp_path / DB) == (2, 2)
    backend = LocalBackend(tmp_path, 2**30)
    assert header_versions(tmp_path / DB) == (1, 1)
    assert backend.get("kept") == b"v" * 100_000
    assert not (tmp_path / f"{DB}-shm").exists()


def test_a_wal_index_held_open_elsewhere_is_refused_at_once(tmp_path):
    """It cannot be converted while another process has it open; refused within the lock timeout
    (diskcache itself would retry for 60 s), and served around by the front."""
    old = diskcache.Cache(str(tmp_path))
    old.set("k", b"v")
    started = time.monotonic()
    cache = ResultCache("local", lambda: LocalBackend(tmp_path, 2**30), ttl_s=60)
    assert time.monotonic() - started < 5
    assert cache.lookup("k", "output").status == "BYPASS" and cache.counts()["errors"] == 1
    old.close()


# A process using the cache through the service's own front: stores, then waits for the test to
# make the directory immutable, then looks up and stores again. Prints what it saw.
LIVE = r"""
import json, sys
from pathlib import Path
from app.pipeline.cache import ResultCache
from app.pipeline.cache.local import LocalBackend
cache = ResultCache("local", lambda: LocalBackend(Path(sys.argv[1]), 2**30), ttl_s=3600)
for i in range(20):
    cache.store(f"k{i}", bytes([i]) * (1000 if i % 2 else 100_000))
print("ready", flush=True)
sys.stdin.readline()
seen = [cache.lookup("k1", "output").status, cache.lookup("k2", "output").status]
cache.store("new", b"n" * 1000)
seen += [cache.lookup("new", "output").status, cache.lookup("k1", "output").status]
print(json.dumps({"seen": seen, "data_ok": cache.lookup("k3", "output").data in (None, bytes([3]) * 1000),
                  **cache.counts()}), flush=True)
"""


@pytest.mark.parametrize("target", ["directory and files", "index files only"])
def test_an_immutable_cache_never_kills_the_process(tmp_path, immutable, target):
    directory = tmp_path / "cache"
    proc = subprocess.Popen([sys.executable, "-c", LIVE, str(directory)], cwd=ROOT, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        if target == "directory and files":
            immutable(directory)
        else:
            for path in directory.glob(f"{DB}*"):  # cache.db and its journal (with WAL: -wal and -shm)
                immutable(path)
        os.sync()  # written back: the next store into a mapped page would fault (ext4 refuses it: SIGBUS)
        out, err = proc.communicate("go\n", timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, f"exit {proc.returncode} ({'SIGBUS' if proc.returncode == -signal.SIGBUS else '?'}): {err[-500:]}"
    result = json.loads(out.strip().splitlines()[-1])
    assert result["data_ok"] and set(result["seen"]) <= {"HIT", "MISS", "BYPASS"}
    assert result["errors"] >= 1 and "BYPASS" in result["seen"]  # the fault was met, and served around


# -- a real gunicorn worker, its cache made immutable --------------------------------------

def status(srv) -> dict:
    return requests.get(srv.url + "/api/bg/status", timeout=10).json()


def send(srv, data: bytes, **fields) -> requests.Response:
    resp = requests.post(srv.url + "/api/bg/remove", files={"file": ("p.jpg", data, "image/jpeg")}, data=fields,
                         timeout=60)
    assert resp.status_code == 200, (resp.status_code, resp.text[:300])
    return resp


def poll(srv, data: bytes, want: set[str], timeout_s: float) -> list[str]:
    """Send ``data`` until X-Cache is one of ``want``; returns every X-Cache seen (fails after ``timeout_s``)."""
    seen, deadline = [], time.monotonic() + timeout_s
    while True:
        resp = send(srv, data)
        seen.append(resp.headers["X-Cache"])
        if seen[-1] in want:
            return seen
        assert time.monotonic() < deadline, f"X-Cache never became {want}: {seen}"
        time.sleep(0.2)


def test_gunicorn_worker_survives_an_immutable_cache_and_recovers(tmp_path, immutable):
    directory = tmp_path / "cache"
    with running_server({"CACHE_BACKEND": "local", "CACHE_DIR": str(directory)}, log_dir=tmp_path) as srv:
        expected = {name: send(srv, data, use_cache="false").content for name, data in (("dog", DOG), ("cat", CAT))}
        pid = status(srv)["worker_pid"]
        assert send(srv, DOG).headers["X-Cache"] == "MISS"
        poll(srv, DOG, {"HIT"}, 20)  # stored just after the response
        immutable(directory)
        os.sync()
        answers = []
        deadline = time.monotonic() + 30
        while "BYPASS" not in [a[1] for a in answers]:  # the cat's store fails, then the cache is skipped
            for name, data in (("dog", DOG), ("cat", CAT)):
                resp = send(srv, data)
                answers.append((name, resp.headers["X-Cache"], resp.content == expected[name]))
            assert time.monotonic() < deadline, answers
        assert all(ok for _, _, ok in answers), answers  # every answer is the right image
        assert status(srv)["worker_pid"] == pid, "the worker died and was replaced"
        # made writable again: found again after the back-off, without a restart
        chattr("-i", directory)
        poll(srv, CAT, {"HIT"}, 90)
        assert send(srv, CAT).content == expected["cat"]
        assert status(srv)["worker_pid"] == pid
        log = srv.log()
    assert "SIGBUS" not in log and "Worker exiting" not in log and "Traceback" not in log, log[-2000:]


# -- recovering after a fault without a restart ------------------------------------------

def call(client, data=DOG, **fields):
    resp = post(client, "/api/bg/remove", data, **fields)
    resp.close()  # the cache writes once the response is sent
    assert resp.status_code == 200, resp.data[:300]
    return resp


def poll_client(client, want: set[str], timeout_s: float, data=DOG) -> tuple[list[str], float]:
    seen, started = [], time.monotonic()
    while True:
        seen.append(call(client, data).headers["X-Cache"])
        if seen[-1] in want:
            return seen, time.monotonic() - started
        assert time.monotonic() - started < timeout_s, f"X-Cache never became {want}: {seen}"
        time.sleep(0.1)


@pytest.mark.parametrize("repair", ["removed", "restored"])
def test_garbage_index_then_repaired_recovers_after_the_back_off(make_app, tmp_path, repair):
    directory = tmp_path / "cache"
    client = make_app(cache_backend="local", cache_dir=directory).test_client()
    expected = call(client).data
    assert call(client).headers["X-Cache"] == "HIT"
    backup = (directory / DB).read_bytes()
    with open(directory / DB, "r+b") as f:  # garbage, in place: the open index now reads junk
        f.write(os.urandom(len(backup)))
    fault = time.monotonic()
    first = call(client)
    assert first.headers["X-Cache"] == "BYPASS" and first.data == expected
    if repair == "removed":
        for path in directory.glob(f"{DB}*"):
            path.unlink()
    else:  # a good copy put back, as a new file (the worker's open handle still sees the garbage)
        (directory / "restored.db").write_bytes(backup)
        os.replace(directory / "restored.db", directory / DB)
    seen, _ = poll_client(client, {"HIT", "MISS"}, 40)
    recovered = time.monotonic() - fault
    assert recovered >= 2.0, "the backend was tried again before the first back-off had passed"
    assert set(seen[:-1]) <= {"BYPASS"}, seen
    if repair == "restored":  # the entry is in the good copy
        assert seen[-1] == "HIT", seen
    # (removed: MISS, or HIT when the last skipped request's store, after its response, came after the back-off)
    assert call(client).headers["X-Cache"] == "HIT"
    assert call(client).data == expected
    print(f"{repair}: recovered {recovered:.1f} s after the fault, after {len(seen)} requests")


@contextmanager
def small_tmpfs(path: Path, size: str):
    path.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True,
                          text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here for a real full disk ({proc.stderr.strip()}); this variant needs root")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def fill(directory: Path) -> Path:
    """Fill the filesystem until not one more byte fits (ENOSPC); returns the filler file."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        for size in (1 << 20, 1 << 16, 1 << 12, 1):
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError as exc:
                assert exc.errno == 28, exc  # ENOSPC
    finally:
        os.close(fd)
    return filler


def test_full_disk_then_space_freed_recovers_after_the_back_off(make_app, tmp_path):
    with small_tmpfs(tmp_path / "disk", "8m") as disk:
        client = make_app(cache_backend="local", cache_dir=disk / "cache").test_client()
        expected = {"dog": call(client).data, "cat": call(client, CAT, use_cache="false").data}
        assert call(client).headers["X-Cache"] == "HIT"
        filler = fill(disk)
        # the cat's output cannot be stored: its write fails after the response, then the cache is skipped
        answers = []
        deadline = time.monotonic() + 30
        while "BYPASS" not in answers:
            resp = call(client, CAT)
            assert resp.data == expected["cat"]
            answers.append(resp.headers["X-Cache"])
            assert time.monotonic() < deadline, answers
        stats = client.get("/stats").get_json()["cache"]
        assert stats["write_errors"] >= 1 and stats["available"] is False
        filler.unlink()
        seen, _ = poll_client(client, {"HIT"}, 60, data=CAT)
        assert call(client, CAT).data == expected["cat"]
        assert call(client).headers["X-Cache"] == "HIT"
        print(f"full disk: {answers} while full, then {seen}")
