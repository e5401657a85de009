"""Peak RSS of the whole gunicorn process tree while 4 clients send the fixture images at once,
first to /api/bg/remove, then to /api/v2/process with all four effects.

The 512 MB tier's budget: must stay <= 350 MB, target <= 300 MB. Prints the peak,
the RSS at rest, and the latency seen by the clients.
--layout adds layout form fields (app/pipeline/layout/; GET /api/v2/layouts) to every request
of both passes, e.g. issue 14's check: --layout 'size=2000x2000,shadow=drop,background=blur'
(fields separated by commas; a value may hold commas itself, as shadow_offset=10,10 does).
--photos 12mp sends the fixture photos as 12 MP phone photos (each resized to 4032x3024, or 3024x4032
if portrait, JPEG quality 90, written to a temporary directory), and first prints the time of one
request at a time (POST /api/bg/remove) for those and for the same photos at 1 MP (1155x866).
Usage: python benchmarks/server_memory.py [--clients 4] [--rounds 2] [--cache local] [--layout FIELDS]
       [--photos fixtures|12mp]
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from PIL import Image  # noqa: E402

from tests.serverkit import (  # noqa: E402
    ALL_EFFECTS, RssSampler, concurrent_clients, fixture_images, post_image, running_server,
)

PHONE_12MP = (4032, 3024)
PHOTO_1MP = (1155, 866)


def photos_at(size: tuple[int, int], directory: Path) -> list[Path]:
    """The fixture photos resized to ``size`` (turned for portrait ones) as JPEG quality 90 in ``directory``."""
    paths = []
    for source in fixture_images():
        with Image.open(source) as img:
            rgb = img.convert("RGB")
        wanted = size if rgb.width >= rgb.height else size[::-1]
        path = directory / f"{source.stem}-{wanted[0]}x{wanted[1]}.jpg"
        rgb.resize(wanted, Image.Resampling.LANCZOS).save(path, "JPEG", quality=90)
        paths.append(path)
    return paths


def sequential_ms(url: str, paths: list[Path]) -> float:
    """The median time of one request at a time to /api/bg/remove over ``paths`` (after one warm-up)."""
    post_image(url, paths[0]).raise_for_status()
    times = []
    for path in paths:
        t0 = time.perf_counter()
        post_image(url, path).raise_for_status()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000


def layout_fields(text: str) -> dict[str, str]:
    """'size=2000x2000,shadow=drop,shadow_offset=10,10' -> form fields (a comma starts a new field
    only where a name= follows it)."""
    fields = {}
    for item in re.split(r",(?=\s*[A-Za-z_]+\s*=)", text):
        if item.strip():
            name, sep, value = item.partition("=")
            if not sep:
                raise argparse.ArgumentTypeError(f"--layout: {item!r} is not name=value")
            fields[name.strip()] = value.strip()
    return fields


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--cache", choices=("none", "local"), default="none",
                        help="result cache; none (default) makes every request a full pass through the pipeline")
    parser.add_argument("--layout", type=layout_fields, default={}, metavar="FIELDS",
                        help="layout form fields added to every request, e.g. 'size=2000x2000,shadow=drop,"
                             "background=blur' (default: none, the photo's own canvas)")
    parser.add_argument("--photos", choices=("fixtures", "12mp"), default="fixtures",
                        help="the fixture photos as they are (default), or resized to 12 MP phone photos")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as cache_dir, tempfile.TemporaryDirectory() as photo_dir, \
            running_server({"CACHE_BACKEND": args.cache, "CACHE_DIR": cache_dir}) as server:
        print(f"result cache: {args.cache}")
        idle = server.tree_rss_mb()
        photos = fixture_images()
        if args.photos == "12mp":
            photos = photos_at(PHONE_12MP, Path(photo_dir))
            small = photos_at(PHOTO_1MP, Path(photo_dir))
            for label, paths in (("1 MP (1155x866)", small), ("12 MP (4032x3024)", photos)):
                print(f"one request at a time, /api/bg/remove, {label}: median {sequential_ms(server.url, paths):.0f} ms "
                      f"over {len(paths)} photos")
        if args.layout:
            print("layout: " + ", ".join(f"{k}={v}" for k, v in args.layout.items()))
        for endpoint, effects in (("/api/bg/remove", None), ("/api/v2/process", ALL_EFFECTS)):
            data = {**effects, **args.layout} if effects else args.layout or None
            with RssSampler(server) as sampler:
                results = concurrent_clients(server.url, args.clients, photos, args.rounds, endpoint, data)
            statuses = sorted({s for s, _ in results})
            latencies = sorted(t for _, t in results)
            print(f"server memory, {endpoint}{' (4 effects)' if effects else ''}: {args.clients} concurrent clients x "
                  f"{len(photos)} {'12 MP' if args.photos == '12mp' else 'fixture'} images x {args.rounds} rounds -> {len(results)} requests, statuses {statuses}")
            print(f"  process tree RSS: idle {idle:.0f} MB, peak {sampler.peak_mb:.0f} MB "
                  f"(budget 350 MB, target 300 MB), after {sampler.samples[-1]:.0f} MB")
            print(f"  client latency: p50 {statistics.median(latencies) * 1000:.0f} ms, "
                  f"max {latencies[-1] * 1000:.0f} ms (requests queue behind one inference slot)")


if __name__ == "__main__":
    main()
