"""Result cache: p50 latency of a hit against a miss for the same image, per backend, over real HTTP.

For each backend (local disk; GCS through a gcp-storage-emulator process; none), a
real gunicorn server, and for each round and fixture photo:
- miss: the cache cleared (admin endpoint), then POST /api/bg/remove;
- hit: the same request again, once the first one's entry is written;
- mask hit: /api/bg/change_color with a new colour (the output misses, the mask hits:
  no inference, but decoding, compositing and encoding still run).
Times are end to end at the client (upload, processing, download), in ms.

    python benchmarks/bench_cache.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.serverkit import fixture_images, post_image, running_emulator, running_server  # noqa: E402

TOKEN = "bench-admin-token-0123456789"


def timed(url: str, path: Path, endpoint: str = "/api/bg/remove", data: dict | None = None) -> tuple[float, str]:
    started = time.perf_counter()
    resp = post_image(url, path, endpoint, data)
    elapsed = (time.perf_counter() - started) * 1000
    resp.raise_for_status()
    return elapsed, resp.headers["X-Cache"]


def measure(env: dict[str, str], rounds: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {"miss": [], "hit": [], "mask hit": []}
    with running_server({**env, "ADMIN_TOKEN": TOKEN}) as srv:
        images = fixture_images()
        post_image(srv.url, images[0])  # warm the worker's code paths
        for round_ in range(rounds):
            for i, path in enumerate(images):
                requests.post(srv.url + "/api/bg/clear_cache", headers={"Authorization": f"Bearer {TOKEN}"},
                              timeout=30).raise_for_status()
                ms, status = timed(srv.url, path)
                assert status in ("MISS", "BYPASS"), status
                times["miss"].append(ms)
                if status == "BYPASS":
                    continue
                for _ in range(50):  # the entry is written just after the response; wait for it
                    ms, status = timed(srv.url, path)
                    if status == "HIT":
                        break
                    time.sleep(0.02)
                assert status == "HIT", status
                times["hit"].append(ms)
                colour = "#%02x%02x%02x" % (round_ * 40, i * 25, 128)
                ms, status = timed(srv.url, path, "/api/bg/change_color", {"color": colour, "format": "png"})
                times["mask hit"].append(ms)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    n = len(fixture_images())
    print(f"# result cache, /api/bg/remove over HTTP, {n} photos x {args.rounds} rounds, p50 in ms (end to end)")
    results = {}
    results["none"] = measure({"CACHE_BACKEND": "none"}, args.rounds)
    import tempfile

    with tempfile.TemporaryDirectory() as cache_dir:
        results["local"] = measure({"CACHE_BACKEND": "local", "CACHE_DIR": cache_dir}, args.rounds)
    with running_emulator() as emulator:
        results["gcs (emulator)"] = measure(emulator.env(), args.rounds)
    print(f"{'backend':<16}{'miss':>10}{'hit':>10}{'hit/miss':>10}{'mask hit':>11}{'mask hit/miss':>15}")
    for name, times in results.items():
        miss = statistics.median(times["miss"])
        if not times["hit"]:
            print(f"{name:<16}{miss:>10.1f}{'-':>10}{'-':>10}{'-':>11}{'-':>15}")
            continue
        hit, mask_hit = statistics.median(times["hit"]), statistics.median(times["mask hit"])
        print(f"{name:<16}{miss:>10.1f}{hit:>10.1f}{hit / miss:>9.1%}{mask_hit:>11.1f}{mask_hit / miss:>14.1%}")
    print("goal: a local hit costs <= 5% of a miss")


if __name__ == "__main__":
    main()
