"""Peak RSS of the whole gunicorn process tree while 4 clients send the fixture images at once,
first to /api/bg/remove, then to /api/v2/process with all four effects.

The 512 MB tier's budget: must stay <= 350 MB, target <= 300 MB. Prints the peak,
the RSS at rest, and the latency seen by the clients.
Usage: python benchmarks/server_memory.py [--clients 4] [--rounds 2]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.serverkit import ALL_EFFECTS, RssSampler, concurrent_clients, fixture_images, running_server  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--cache", choices=("none", "local"), default="none",
                        help="result cache; none (default) makes every request a full pass through the pipeline")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as cache_dir, \
            running_server({"CACHE_BACKEND": args.cache, "CACHE_DIR": cache_dir}) as server:
        print(f"result cache: {args.cache}")
        idle = server.tree_rss_mb()
        for endpoint, data in (("/api/bg/remove", None), ("/api/v2/process", ALL_EFFECTS)):
            with RssSampler(server) as sampler:
                results = concurrent_clients(server.url, args.clients, fixture_images(), args.rounds, endpoint, data)
            statuses = sorted({s for s, _ in results})
            latencies = sorted(t for _, t in results)
            print(f"server memory, {endpoint}{' (4 effects)' if data else ''}: {args.clients} concurrent clients x "
                  f"{len(fixture_images())} fixture images x {args.rounds} rounds -> {len(results)} requests, statuses {statuses}")
            print(f"  process tree RSS: idle {idle:.0f} MB, peak {sampler.peak_mb:.0f} MB "
                  f"(budget 350 MB, target 300 MB), after {sampler.samples[-1]:.0f} MB")
            print(f"  client latency: p50 {statistics.median(latencies) * 1000:.0f} ms, "
                  f"max {latencies[-1] * 1000:.0f} ms (requests queue behind one inference slot)")


if __name__ == "__main__":
    main()
