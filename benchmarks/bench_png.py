"""PNG output: our writer at the fast levels (app/pipeline/png.py: Up filter, ISA-L's deflate)
against Pillow's encoder at the same level (best-of-five filters per row, zlib), on real cut-outs:
the 13 AM-2k photos with their true mattes as alpha (1.7 MP each), the 8 fixture photos cut out by
the model, and one 7 MP cut-out (the AM-2k llama scaled up 2x). Prints ms and bytes for each, and
the ratios; one thread, best of ``--runs``.

Usage: python benchmarks/bench_png.py [--runs 5] [--level 1]
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from app.pipeline import png  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
AM2K = ROOT / "tests" / "data" / "quality" / "am2k"
FIXTURES = ROOT / "tests" / "data" / "fixtures"


def cut_outs():
    for photo in sorted(AM2K.glob("*.jpg")):
        rgb = np.asarray(Image.open(photo).convert("RGB"))
        alpha = np.asarray(Image.open(photo.with_name(photo.stem + ".alpha.png")).convert("L"))
        yield photo.stem, _rgba(rgb, alpha)
    for photo in sorted((FIXTURES / "images").glob("*.jpg")):
        rgb = np.asarray(Image.open(photo).convert("RGB"))
        mask = Image.open(FIXTURES / "reference" / "u2netp" / f"{photo.stem}.u2netp.png").convert("L")
        yield photo.stem, _rgba(rgb, np.asarray(mask.resize(rgb.shape[1::-1])))
    big = Image.open(AM2K / "am2k-02.jpg").convert("RGB")
    size = (big.width * 2, big.height * 2)
    alpha = Image.open(AM2K / "am2k-02.alpha.png").convert("L").resize(size, Image.Resampling.LANCZOS)
    yield "am2k-02 x2 (7 MP)", _rgba(np.asarray(big.resize(size, Image.Resampling.LANCZOS)), np.asarray(alpha))


def _rgba(rgb: np.ndarray, alpha: np.ndarray) -> Image.Image:
    rgba = np.dstack([rgb, alpha])
    rgba[alpha == 0, :3] = 0  # as the service composes a transparent cut-out
    return Image.fromarray(rgba, "RGBA")


def best_ms(fn, runs: int) -> tuple[float, int]:
    best, size = float("inf"), 0
    for _ in range(runs):
        t0 = time.perf_counter()
        size = len(fn())
        best = min(best, time.perf_counter() - t0)
    return best * 1000, size


def pillow(img: Image.Image, level: int) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG", compress_level=level)
    return buf.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--level", type=int, default=1, choices=list(png.LEVELS))
    args = parser.parse_args()
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "?")
    print(f"CPU: {cpu}; PNG level {args.level}; best of {args.runs}, one thread")
    print("\n| cut-out | MP | Pillow ms | ours ms | x Pillow's time | Pillow KB | ours KB | x Pillow's size |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    times, sizes = [], []
    for name, img in cut_outs():
        p_ms, p_size = best_ms(lambda: pillow(img, args.level), args.runs)
        o_ms, o_size = best_ms(lambda: png.encode(img, args.level), args.runs)
        times.append(o_ms / p_ms)
        sizes.append(o_size / p_size)
        print(f"| {name} | {img.width * img.height / 1e6:.2f} | {p_ms:.1f} | {o_ms:.1f} | {o_ms / p_ms:.2f} | "
              f"{p_size / 1e3:,.0f} | {o_size / 1e3:,.0f} | {o_size / p_size:.2f} |")
    print(f"\nmedian: {statistics.median(times):.2f}x Pillow's time, {statistics.median(sizes):.2f}x its size "
          f"(range {min(sizes):.2f}-{max(sizes):.2f})")


if __name__ == "__main__":
    main()
