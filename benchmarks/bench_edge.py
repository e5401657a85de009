"""What the nginx edge costs and what it buys, side by side in one run (`make bench`).

Two servers with the 512 MB tier's settings, one after the other: gunicorn alone, and the
service as deployed (config/serve: nginx in front of gunicorn). For each: the process tree's
RSS at rest, the median end-to-end latency of /api/bg/remove over the fixture photos, and
how many of 10 health probes answer within 5 s while 7 connections that sent one byte wait
(as many as gunicorn has threads).

    python benchmarks/bench_edge.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests import hostile  # noqa: E402
from tests.serverkit import fixture_images, post_image, running_server  # noqa: E402


def measure(edge: bool, rounds: int) -> dict[str, float]:
    with running_server(edge=edge) as server:
        time.sleep(1.0)
        rest = server.tree_rss_mb()
        latencies = []
        for _ in range(rounds):
            for path in fixture_images():
                started = time.perf_counter()
                assert post_image(server.url, path).status_code == 200
                latencies.append(time.perf_counter() - started)
        answered = 0
        with hostile.slow_connections(server.port, 7, kinds=("one_byte",)):
            time.sleep(0.5)
            for _ in range(10):
                try:
                    answered += requests.get(server.url + "/api/bg/health", timeout=5).status_code == 200
                except requests.RequestException:
                    pass
    return {"rest_mb": rest, "p50_ms": statistics.median(latencies) * 1000, "probes": answered}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    bare = measure(False, args.rounds)
    edge = measure(True, args.rounds)
    print(f"# the HTTP edge: {len(fixture_images())} photos x {args.rounds} rounds, /api/bg/remove, one client")
    print("| server | tree RSS at rest | p50 latency | health probes answered with 7 idle connections |")
    print("|---|---:|---:|---:|")
    for name, m in (("gunicorn alone", bare), ("nginx + gunicorn (config/serve)", edge)):
        print(f"| {name} | {m['rest_mb']:.0f} MB | {m['p50_ms']:.0f} ms | {m['probes']:.0f} of 10 |")
    print(f"edge/alone: RSS at rest {edge['rest_mb'] / bare['rest_mb']:.2f}x (+{edge['rest_mb'] - bare['rest_mb']:.0f} MB), "
          f"p50 latency {edge['p50_ms'] / bare['p50_ms']:.2f}x")


if __name__ == "__main__":
    main()
