"""Load and soak test of the 512 MB tier over real HTTP: `make loadtest` (not part of CI).

gunicorn on loopback with the tier's settings; N clients for T seconds, each sending a mix of
valid requests (the fixture photos to remove / change_color / v2 process / remove-background)
and bad ones (junk bytes, truncated photos, bad options, no file). A client that gets 503
waits for its Retry-After (at most 2 s), as a well-behaved client does. The run lasts T seconds,
and longer if needed to complete --min-requests. Prints requests/s, latency percentiles,
responses by status, the process tree's peak RSS (sampled every 100 ms) and its growth:
the median RSS sampled while requests 50-100 completed against the median over the
last 50 requests (a median of 100 ms samples, because a single sample depends on whether
an inference happens to be running).

    python benchmarks/loadtest.py [--clients 8] [--seconds 120] [--min-requests 500] [--cache none|local]
"""

from __future__ import annotations

import argparse
import collections
import random
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.serverkit import fixture_images, running_server  # noqa: E402

VALID = [
    ("/api/bg/remove", {}),
    ("/api/bg/change_color", {"color": "#2a6fdb", "format": "jpeg"}),
    ("/api/v2/process", {"effects": '["dither", "8bit"]'}),
    ("/remove-background", {"output_format": "webp"}),
]


def bad_request(rng: random.Random, photos: list[bytes]) -> tuple[str, dict, dict | None]:
    kind = rng.randrange(4)
    if kind == 0:
        return "/api/bg/remove", {}, {"file": ("junk.jpg", rng.randbytes(rng.randrange(1, 4096)))}
    if kind == 1:
        photo = rng.choice(photos)
        return "/api/bg/remove", {}, {"file": ("cut.jpg", photo[: rng.randrange(10, len(photo) // 2)])}
    if kind == 2:
        return "/api/v2/process", {"effects": '["nope"]'}, {"file": ("a.jpg", photos[0])}
    return "/api/bg/change_color", {"color": "not-a-colour"}, None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=120)
    parser.add_argument("--min-requests", type=int, default=500)
    parser.add_argument("--bad-fraction", type=float, default=0.25)
    parser.add_argument("--cache", choices=("none", "local"), default="none",
                        help="none (default): every valid request runs the whole pipeline")
    args = parser.parse_args()
    photos = [p.read_bytes() for p in fixture_images()]
    results: list[tuple[int, float, bool]] = []  # (status, seconds, valid)
    samples: list[tuple[int, float]] = []  # (requests completed, process tree RSS in MB), every 100 ms
    lock = threading.Lock()
    with tempfile.TemporaryDirectory() as cache_dir, \
            running_server({"CACHE_BACKEND": args.cache, "CACHE_DIR": cache_dir}) as server:
        stop_at = time.monotonic() + args.seconds

        def client(seed: int) -> None:
            rng = random.Random(seed)
            session = requests.Session()
            while time.monotonic() < stop_at or len(results) < args.min_requests:
                valid = rng.random() >= args.bad_fraction
                if valid:
                    path, fields = rng.choice(VALID)
                    i = rng.randrange(len(photos))
                    files = {"file": (f"photo{i}.jpg", photos[i])}
                else:
                    path, fields, files = bad_request(rng, photos)
                started = time.perf_counter()
                try:
                    resp = session.post(server.url + path, data=fields, files=files, timeout=120)
                    status, retry_after = resp.status_code, resp.headers.get("Retry-After")
                except requests.RequestException:
                    status, retry_after = -1, None  # a lost request
                elapsed = time.perf_counter() - started
                with lock:
                    results.append((status, elapsed, valid))
                if status == 503 and retry_after:
                    time.sleep(min(2.0, float(retry_after)))

        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                samples.append((len(results), server.tree_rss_mb()))
                done.wait(0.1)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        threads = [threading.Thread(target=client, args=(i,)) for i in range(args.clients)]
        started = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.monotonic() - started
        done.set()
        sampler.join()
        idle = server.tree_rss_mb()

    statuses = collections.Counter(status for status, _, _ in results)
    latencies = sorted(t for _, t, _ in results)
    ok_latencies = sorted(t for s, t, v in results if s == 200)

    def pct(values: list[float], q: float) -> float:
        return values[min(len(values) - 1, int(q * len(values)))] * 1000 if values else float("nan")

    print(f"# load test: {args.clients} clients x {args.seconds:.0f} s, {args.bad_fraction:.0%} bad inputs, "
          f"cache {args.cache}, one gunicorn worker (the 512 MB tier's settings)")
    print(f"requests: {len(results)} in {wall:.1f} s = {len(results) / wall:.2f} req/s "
          f"({sum(1 for s, _, v in results if s == 200 and v) / wall:.2f} successful images/s)")
    print(f"latency, all responses: p50 {pct(latencies, .5):.0f} ms, p95 {pct(latencies, .95):.0f} ms, "
          f"p99 {pct(latencies, .99):.0f} ms")
    print(f"latency, 200s: p50 {pct(ok_latencies, .5):.0f} ms, p95 {pct(ok_latencies, .95):.0f} ms, "
          f"p99 {pct(ok_latencies, .99):.0f} ms")
    print("responses by status: " + ", ".join(f"{s}: {n}" for s, n in sorted(statuses.items())))
    five_xx = {s: n for s, n in statuses.items() if s >= 500 and s != 503}
    lost = statuses.get(-1, 0)
    valid_refused = sum(1 for s, _, v in results if v and 400 <= s < 500)
    bad_accepted = sum(1 for s, _, v in results if not v and s == 200)
    print(f"5xx other than 503 shedding: {sum(five_xx.values())}; lost requests: {lost}; "
          f"valid requests refused: {valid_refused}; bad requests accepted: {bad_accepted}")
    n = len(results)
    peak = max(rss for _, rss in samples)
    early = statistics.median(rss for count, rss in samples if 50 <= count < 100)
    late = statistics.median(rss for count, rss in samples if count >= n - 50)
    growth = late / early - 1
    print(f"process tree RSS: peak {peak:.0f} MB (budget 350); median while requests 50-100 completed "
          f"{early:.0f} MB, over the last 50 (to {n}) {late:.0f} MB: growth {growth:+.1%} (limit +10%); "
          f"at rest after the run {idle:.0f} MB")
    verdict = not five_xx and not lost and peak <= 350 and valid_refused == 0 and bad_accepted == 0 and growth <= 0.10
    print("PASS" if verdict else "FAIL")
    sys.exit(0 if verdict else 1)


if __name__ == "__main__":
    main()
