"""The cache stampede (issue 26): many clients asking for the same large result at once.

Before, a hit read its entry inside the index's write transaction: with the lock busy for a
second it turned into BYPASS and a full recomputation (8 clients, peak 378 MB), and concurrent
misses of one key each computed it. Now a hit never recomputes, and concurrent misses compute
once: the others wait for that result (single flight), in one process and across processes.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import diskcache
import pytest

from app.pipeline.cache import CacheUse
from app.pipeline.errors import ClientGone, Overloaded
from tests.conftest import ROOT, photo, post

DOG = photo("animal-1.jpg").read_bytes()
BIG = {"size": "4096x4096", "crop": "true", "max_upscale": "8"}  # a cut-out of several MB
CLIENTS = 8


@pytest.fixture()
def cached_app(make_app, tmp_path):
    return make_app(cache_backend="local", cache_dir=tmp_path / "cache", max_output_pixels=4096 * 4096,
                    request_timeout_s=120)


def burst(app, n: int = CLIENTS, **fields) -> list[dict]:
    """``n`` clients send the same request at the same moment; what each got back."""
    start = threading.Barrier(n)
    results: list[dict] = [{}] * n

    def client(i: int) -> None:
        c = app.test_client()
        start.wait()
        resp = post(c, "/api/bg/remove", DOG, **fields)
        results[i] = {"status": resp.status_code, "cache": resp.headers.get("X-Cache"),
                      "computed": "encode" in resp.headers.get("Server-Timing", ""), "data": resp.data}
        resp.close()  # as a server does once it is sent: the cache writes then

    threads = [threading.Thread(target=client, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    return results


def cache_stats(app) -> dict:
    return app.test_client().get("/stats").get_json()["cache"]


def test_concurrent_misses_of_one_key_compute_it_once(cached_app):
    results = burst(cached_app, **BIG)
    assert [r["status"] for r in results] == [200] * CLIENTS
    assert sorted(r["cache"] for r in results) == ["HIT"] * (CLIENTS - 1) + ["MISS"]
    assert sum(r["computed"] for r in results) == 1
    assert len({r["data"] for r in results}) == 1 and len(results[0]["data"]) > 2**20
    stats = cache_stats(cached_app)
    assert stats["shared"] == CLIENTS - 1 and stats["writes"] == 2  # the output and its mask, once each
    assert stats["lookups"]["output"] == {"hits": CLIENTS - 1, "misses": 1, "bypassed": 0}


# Holds the index's write lock for a while, as a worker in the middle of a long write would.
LOCK_HOLDER = r"""
import sqlite3, sys, time
con = sqlite3.connect(sys.argv[1], isolation_level=None)
con.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
con.execute("ROLLBACK")
"""


def test_concurrent_hits_of_a_large_result_never_recompute(cached_app, tmp_path):
    """Before: with the index's write lock busy (another worker writing), each hit waited for it,
    timed out after a second, went BYPASS and recomputed the result in full."""
    first = post(cached_app.test_client(), "/api/bg/remove", DOG, **BIG)
    first.close()
    assert first.headers["X-Cache"] == "MISS"
    holder = subprocess.Popen([sys.executable, "-c", LOCK_HOLDER, str(tmp_path / "cache" / diskcache.core.DBNAME),
                               "4"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        started = time.monotonic()
        results = burst(cached_app, **BIG)
        elapsed = time.monotonic() - started
    finally:
        holder.kill()
        holder.wait()
    assert [(r["status"], r["cache"], r["computed"]) for r in results] == [(200, "HIT", False)] * CLIENTS
    assert all(r["data"] == first.data for r in results)
    assert elapsed < 3, f"the hits waited for the writer's lock: {elapsed:.1f} s"
    stats = cache_stats(cached_app)
    assert stats["errors"] == 0 and stats["lookups"]["output"]["hits"] == CLIENTS
    print(f"{CLIENTS} hits in {elapsed:.2f} s; {stats['shared']} handed over by a request reading the same entry")


def test_a_failed_leader_hands_the_computation_to_a_waiting_request(make_app, tmp_path):
    """The leader's client leaves: a request waiting for the same result computes it instead, once."""
    app = make_app(cache_backend="local", cache_dir=tmp_path / "cache", request_timeout_s=60)
    cache = app.extensions["bgremove"].cache
    key_use = CacheUse(cache, True, DOG, app.extensions["bgremove"].cache_model)
    gone = threading.Event()
    led = threading.Event()
    outcome: list[str] = []

    def leader() -> None:  # leads the flight, then its client goes away before it has a result
        with key_use:
            assert key_use.output("remove", {"x": 1}) is None
            led.set()
            try:
                gone.wait(10)  # computing, until its client leaves
                raise ClientGone("client gone")
            except ClientGone:
                outcome.append("leader gave up")

    t = threading.Thread(target=leader)
    t.start()
    led.wait(10)
    follower = CacheUse(cache, True, DOG, app.extensions["bgremove"].cache_model)
    got: list[object] = []

    def follow() -> None:
        with follower:
            got.append(follower.output("remove", {"x": 1}, timeout_s=20))
            follower.keep_output(b"computed by the follower")
        follower.flush()

    f = threading.Thread(target=follow)
    f.start()
    time.sleep(0.3)
    assert not got  # it waits for the leader
    gone.set()
    t.join(10)
    f.join(10)
    assert outcome == ["leader gave up"] and got == [None] and follower.status == "MISS"
    again = CacheUse(cache, True, DOG, app.extensions["bgremove"].cache_model)
    assert again.output("remove", {"x": 1}) == b"computed by the follower" and again.status == "HIT"


def test_a_waiting_request_times_out_with_the_usual_error(make_app, tmp_path):
    app = make_app(cache_backend="local", cache_dir=tmp_path / "cache")
    state = app.extensions["bgremove"]
    leader = CacheUse(state.cache, True, DOG, state.cache_model)
    with leader:
        assert leader.output("remove", {}) is None
        waiter = CacheUse(state.cache, True, DOG, state.cache_model)
        started = time.monotonic()
        with pytest.raises(Overloaded) as error:
            waiter.output("remove", {}, timeout_s=0.5)
        assert 0.4 < time.monotonic() - started < 2
        assert error.value.code == "timeout" and error.value.retry_after >= 1
        gone = CacheUse(state.cache, True, DOG, state.cache_model)
        with pytest.raises(ClientGone):
            gone.output("remove", {}, timeout_s=30, cancelled=lambda: True)
    # the leader ended without a result: the next request leads (a miss), nothing waits for a ghost
    after = CacheUse(state.cache, True, DOG, state.cache_model)
    with after:
        assert after.output("remove", {}, timeout_s=0.5) is None and after.status == "MISS"


# A worker process: several threads ask the cache for the same key at once; a miss "computes"
# (appends to a shared file, takes a while) and stores. Prints each thread's X-Cache status.
WORKER = r"""
import json, os, sys, threading, time
from pathlib import Path
from app.pipeline.cache import CacheUse, ResultCache
from app.pipeline.cache.local import LocalBackend

directory, log = Path(sys.argv[1]), sys.argv[2]
cache = ResultCache("local", lambda: LocalBackend(directory, 2**30), ttl_s=3600)
print("ready", flush=True)
sys.stdin.readline()
statuses, wrong = [], []

def request():
    use = CacheUse(cache, True, b"the same upload", {"model": "m"})
    with use:
        data = use.output("remove", {}, timeout_s=60)
        if data is None:
            with open(log, "a") as f:
                f.write(f"{os.getpid()}\n")
            time.sleep(1.0)
            data = b"result" * 500_000
            use.keep_output(data)
    use.flush()
    statuses.append(use.status)
    wrong.append(data != b"result" * 500_000)

threads = [threading.Thread(target=request) for _ in range(4)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(json.dumps({"statuses": statuses, "wrong": any(wrong)}), flush=True)
"""


def test_workers_of_one_host_compute_a_key_once(tmp_path):
    """Processes sharing a local cache directory (gunicorn workers) wait for each other's result too."""
    log = tmp_path / "computed"
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(tmp_path / "cache"), str(log)], cwd=ROOT,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(4)]
    for p in procs:
        assert p.stdout.readline().strip() == "ready", p.stderr.read()
    for p in procs:  # all at once
        p.stdin.write("go\n")
        p.stdin.flush()
    results = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        results.append(json.loads(out.strip().splitlines()[-1]))
    assert len(log.read_text().split()) == 1, "computed more than once"
    statuses = sorted(s for r in results for s in r["statuses"])
    assert statuses == ["HIT"] * 15 + ["MISS"] and not any(r["wrong"] for r in results)
    assert not list((tmp_path / "cache" / "flights").iterdir())  # no lock file left behind

