"""Load and soak test of the 512 MB tier over real HTTP: `make loadtest` (not part of CI).

The service as deployed (config/serve: nginx in front of gunicorn) on loopback with the tier's
settings; N clients for T seconds, each sending a mix of valid requests (the fixture photos to
remove / change_color / v2 process / remove-background), bad ones (junk bytes, truncated
photos, bad options, no file) and hostile ones (tests/hostile.py: small files that are
large once decoded, a progressive-JPEG scan bomb, a huge progressive JPEG, odd HTTP methods).
Meanwhile --slow connections that never finish their request are held open (reopened as the
edge cuts them), and a probe asks /api/bg/health every second. A client that gets 503
waits for its Retry-After (at most 2 s), as a well-behaved client does. The run lasts T seconds,
and longer if needed to complete --min-requests. Prints requests/s, latency percentiles,
responses by status, the process tree's peak RSS (sampled every 100 ms) and its growth:
the median RSS sampled while requests 50-100 completed against the median over the
last 50 requests (a median of 100 ms samples, because a single sample depends on whether
an inference happens to be running).

    python benchmarks/loadtest.py [--clients 8] [--seconds 120] [--min-requests 500] [--cache none|local]
                                  [--slow 50] [--hostile-fraction 0.15] [--no-edge]
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
from tests import hostile  # noqa: E402
from tests.serverkit import fixture_images, running_server  # noqa: E402

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


def hostile_inputs() -> list[tuple[str, str, bytes]]:
    """(name, endpoint, bytes): each is answered 200 (it fits the budget) or a 4xx, never more memory."""
    bombs = [(name, "/api/bg/remove", data) for name, data in hostile.memory_bombs().items()]
    bombs.append(("scan_bomb.jpg", "/api/bg/remove", hostile.scan_bomb_jpeg(4096, 3000)))
    bombs.append(("progressive_13000.jpg", "/api/v2/process", hostile.huge_progressive_jpeg(13000)))
    bombs.append(("progressive_4096.jpg", "/api/bg/change_color", hostile.huge_progressive_jpeg(4096)))
    return bombs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=120)
    parser.add_argument("--min-requests", type=int, default=500)
    parser.add_argument("--bad-fraction", type=float, default=0.25)
    parser.add_argument("--hostile-fraction", type=float, default=0.15)
    parser.add_argument("--slow", type=int, default=50, help="slow connections held open during the run")
    parser.add_argument("--no-edge", dest="edge", action="store_false", help="gunicorn alone, without nginx")
    parser.add_argument("--cache", choices=("none", "local"), default="none",
                        help="none (default): every valid request runs the whole pipeline")
    args = parser.parse_args()
    photos = [p.read_bytes() for p in fixture_images()]
    bombs = hostile_inputs()
    results: list[tuple[int, float, str]] = []  # (status, seconds, kind: valid | bad | hostile)
    samples: list[tuple[int, float]] = []  # (requests completed, process tree RSS in MB), every 100 ms
    probes: list[float | None] = []  # health probe latencies (None: no answer within 5 s)
    lock = threading.Lock()
    with tempfile.TemporaryDirectory() as cache_dir, \
            running_server({"CACHE_BACKEND": args.cache, "CACHE_DIR": cache_dir}, edge=args.edge) as server:
        stop_at = time.monotonic() + args.seconds

        def client(seed: int) -> None:
            rng = random.Random(seed)
            session = requests.Session()
            while time.monotonic() < stop_at or len(results) < args.min_requests:
                roll = rng.random()
                method = "POST"
                if roll < args.hostile_fraction:
                    kind = "hostile"
                    if rng.random() < 0.2:  # an odd method on the open probe route
                        method, path, fields, files = "".join(rng.choices("ABCDEFGHIJKLMNOPQRSTUVWXYZ", k=12)), \
                            "/api/bg/health", {}, None
                    else:
                        name, path, data = rng.choice(bombs)
                        fields, files = ({"effects": '["dither"]'} if path == "/api/v2/process" else {}), \
                            {"file": (name, data)}
                elif roll < args.hostile_fraction + args.bad_fraction:
                    kind = "bad"
                    path, fields, files = bad_request(rng, photos)
                else:
                    kind = "valid"
                    path, fields = rng.choice(VALID)
                    i = rng.randrange(len(photos))
                    files = {"file": (f"photo{i}.jpg", photos[i])}
                started = time.perf_counter()
                try:
                    resp = session.request(method, server.url + path, data=fields, files=files, timeout=120)
                    status, retry_after = resp.status_code, resp.headers.get("Retry-After")
                except requests.RequestException:
                    status, retry_after = -1, None  # a lost request
                elapsed = time.perf_counter() - started
                with lock:
                    results.append((status, elapsed, kind))
                if status == 503 and retry_after:
                    time.sleep(min(2.0, float(retry_after)))

        def slow_clients() -> None:
            while time.monotonic() < stop_at or len(results) < args.min_requests:
                with hostile.slow_connections(server.port, args.slow):
                    time.sleep(5)  # the edge cuts unfinished headers after 10 s; reopen before that

        def probe() -> None:
            while time.monotonic() < stop_at or len(results) < args.min_requests:
                t0 = time.perf_counter()
                try:
                    ok = requests.get(server.url + "/api/bg/health", timeout=5).status_code == 200
                    probes.append(time.perf_counter() - t0 if ok else None)
                except requests.RequestException:
                    probes.append(None)
                time.sleep(1.0)

        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                samples.append((len(results), server.tree_rss_mb()))
                done.wait(0.1)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        threads = [threading.Thread(target=client, args=(i,)) for i in range(args.clients)]
        threads.append(threading.Thread(target=probe))
        if args.slow:
            threads.append(threading.Thread(target=slow_clients))
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
    ok_latencies = sorted(t for s, t, k in results if s == 200 and k == "valid")

    def pct(values: list[float], q: float) -> float:
        return values[min(len(values) - 1, int(q * len(values)))] * 1000 if values else float("nan")

    print(f"# load test: {args.clients} clients x {args.seconds:.0f} s, {args.bad_fraction:.0%} bad and "
          f"{args.hostile_fraction:.0%} hostile inputs, {args.slow} slow connections held open, cache {args.cache}, "
          f"{'nginx + ' if args.edge else ''}one gunicorn worker (the 512 MB tier's settings)")
    print(f"requests: {len(results)} in {wall:.1f} s = {len(results) / wall:.2f} req/s "
          f"({sum(1 for s, _, k in results if s == 200 and k == 'valid') / wall:.2f} successful images/s)")
    print(f"latency, all responses: p50 {pct(latencies, .5):.0f} ms, p95 {pct(latencies, .95):.0f} ms, "
          f"p99 {pct(latencies, .99):.0f} ms")
    print(f"latency, valid 200s: p50 {pct(ok_latencies, .5):.0f} ms, p95 {pct(ok_latencies, .95):.0f} ms, "
          f"p99 {pct(ok_latencies, .99):.0f} ms")
    print("responses by status: " + ", ".join(f"{s}: {n}" for s, n in sorted(statuses.items())))
    for kind in ("valid", "bad", "hostile"):
        by_kind = collections.Counter(s for s, _, k in results if k == kind)
        print(f"  {kind}: " + ", ".join(f"{s}: {n}" for s, n in sorted(by_kind.items())))
    answered = [p for p in probes if p is not None]
    print(f"health probes: {len(answered)} of {len(probes)} answered 200 within 5 s"
          + (f", slowest {max(answered) * 1000:.0f} ms" if answered else ""))
    five_xx = {s: n for s, n in statuses.items() if s >= 500 and s != 503}
    lost = statuses.get(-1, 0)
    valid_refused = sum(1 for s, _, k in results if k == "valid" and 400 <= s < 500)
    bad_accepted = sum(1 for s, _, k in results if k == "bad" and s == 200)
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
    verdict = (not five_xx and not lost and peak <= 350 and valid_refused == 0 and bad_accepted == 0
               and growth <= 0.10 and len(answered) == len(probes))
    print("PASS" if verdict else "FAIL")
    sys.exit(0 if verdict else 1)


if __name__ == "__main__":
    main()
