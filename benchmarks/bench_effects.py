"""Effects: ms per megapixel on one thread, at 1024x1024 and 2048x2048, against plain per-pixel references.

Each reference below is the same effect written the obvious way, one pixel at a time
in Python (same steps: panchromatic grey + tone curve + local contrast + glow + grain;
cell means + Floyd–Steinberg + dots; luma + blur + bands; block means + nearest palette
colour). References are timed on a 128x128 crop (their cost is linear in pixels) and
reported per megapixel. Then the product's figures are measured again in a fresh
process under the 512 MB tier's malloc policy (app/ops/tuning.py), which makes every
array over 128 KiB a fresh mmap: the page faults are the price of its lower RSS.

Usage: python benchmarks/bench_effects.py [--runs 5]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # one thread, as the goal states

import argparse  # noqa: E402
import math  # noqa: E402
import random  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

import effects  # noqa: E402
from effects import blackwhite, eightbit, popart  # noqa: E402

FIXTURE = Path(__file__).resolve().parent.parent / "tests" / "data" / "fixtures" / "images" / "animal-1.jpg"
SIZES = (1024, 2048)
GOAL_MS_PER_MP = 40.0


def test_image(side: int) -> np.ndarray:
    """A real photo at side x side with a soft elliptical subject alpha (as a cut-out has)."""
    rgb = np.asarray(Image.open(FIXTURE).convert("RGB").resize((side, side), Image.Resampling.LANCZOS))
    yy, xx = np.mgrid[0:side, 0:side]
    r = ((yy - side / 2) / (side / 2.2)) ** 2 + ((xx - side / 2) / (side / 2.2)) ** 2
    alpha = np.clip((1.2 - r) * 600, 0, 255).astype(np.uint8)
    rgba = np.dstack((rgb, alpha))
    rgba[alpha == 0] = 0
    return rgba


def ms_per_mp(fn, pixels: int, runs: int) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000 / (pixels / 1e6)


# ------------------------------------------------------------------ plain per-pixel references


def _srgb_to_linear(c: float) -> float:
    c /= 255.0
    return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4


def _box_mean(plane: list[list[float]], radius: int) -> list[list[float]]:
    h, w = len(plane), len(plane[0])
    out = [[0.0] * w for _ in range(h)]
    for y in range(h):
        for x in range(w):
            total, n = 0.0, 0
            for yy in range(max(0, y - radius), min(h, y + radius + 1), max(1, radius // 2)):
                for xx in range(max(0, x - radius), min(w, x + radius + 1), max(1, radius // 2)):
                    total += plane[yy][xx]
                    n += 1
            out[y][x] = total / n
    return out


def ref_blackwhite(rgba: np.ndarray, p) -> np.ndarray:
    h, w = rgba.shape[:2]
    rows = rgba.tolist()
    k = blackwhite._steepness(p["contrast_boost"]) if p["contrast_boost"] > 1 else None
    tone = [[0.0] * w for _ in range(h)]
    for y in range(h):
        for x in range(w):
            r, g, b, _ = rows[y][x]
            lin = 0.25 * _srgb_to_linear(r) + 0.35 * _srgb_to_linear(g) + 0.40 * _srgb_to_linear(b)
            v = lin * 12.92 if lin <= 0.0031308 else 1.055 * lin ** (1 / 2.4) - 0.055
            v = v ** (1 / p["gamma_correction"])
            if k:
                lo, hi = 1 / (1 + math.exp(k / 2)), 1 / (1 + math.exp(-k / 2))
                v = (1 / (1 + math.exp(-k * (v - 0.5))) - lo) / (hi - lo)
            tone[y][x] = v
    mean = _box_mean(tone, 6)
    sq = _box_mean([[v * v for v in row] for row in tone], 6)
    glow = _box_mean([[max(0.0, min(1.0, (v - 0.7) / 0.3)) ** 2 for v in row] for row in tone], 12)
    rng = random.Random(p["seed"])
    out = np.empty((h, w, 3), np.uint8)
    for y in range(h):
        for x in range(w):
            t, m = tone[y][x], mean[y][x]
            var = max(0.0, sq[y][x] - m * m)
            a = var / (var + 0.01)
            base = a * t + (m - a * m)
            v = t + p["edge_strength"] * (t - base)
            g = p["halation_strength"] * glow[y][x]
            v = v * (1 - g) + g
            v += rng.gauss(0, 1) * p["grain_strength"] * 0.25 * 4 * t * (1 - t)
            out[y, x] = int(min(1.0, max(0.0, v)) * 255 + 0.5)
    return out


def ref_dither(rgba: np.ndarray, p) -> np.ndarray:
    h, w = rgba.shape[:2]
    s = p["dot_spacing"]
    gh, gw = -(-h // s), -(-w // s)
    cells = [[0.0] * gw for _ in range(gh)]
    for cy in range(gh):
        for cx in range(gw):
            total, n = 0.0, 0
            for y in range(cy * s, min(h, cy * s + s)):
                for x in range(cx * s, min(w, cx * s + s)):
                    r, g, b, a = (int(c) for c in rgba[y, x])
                    total += 255.0 if a == 0 else 0.2126 * r + 0.7152 * g + 0.0722 * b
                    n += 1
            cells[cy][cx] = total / n
    t = p["threshold"]
    levels = [[v * 127.5 / t if v <= t else 127.5 + (v - t) * 127.5 / (255 - t) for v in row] for row in cells]
    err = [[0.0] * (gw + 2) for _ in range(gh + 1)]
    ink = [[False] * gw for _ in range(gh)]
    for y in range(gh):
        rev = p["serpentine"] and y % 2 == 1
        step = -1 if rev else 1
        for x in (range(gw - 1, -1, -1) if rev else range(gw)):
            v = levels[y][x] + err[y][x + 1]
            out = 255.0 if v >= 127.5 else 0.0
            ink[y][x] = out == 0.0
            e = v - out
            err[y][x + 1 + step] += e * 7 / 16
            err[y + 1][x + 1 - step] += e * 3 / 16
            err[y + 1][x + 1] += e * 5 / 16
            err[y + 1][x + 1 + step] += e * 1 / 16
    result = np.empty((h, w, 3), np.uint8)
    radius = p["dot_size"] / 2
    for y in range(h):
        for x in range(w):
            cy, cx = y // s, x // s
            dy, dx = (y - cy * s) + 0.5 - s / 2, (x - cx * s) + 0.5 - s / 2
            inside = math.hypot(dy, dx) <= max(radius, math.hypot(0.5 if s % 2 else 0.0, 0.5 if s % 2 else 0.0) if s > 1 else 1)
            result[y, x] = p["ink"] if ink[cy][cx] and inside else p["paper"]
    return result


def ref_popart(rgba: np.ndarray, p) -> np.ndarray:
    h, w = rgba.shape[:2]
    luma = [[0.2126 * int(rgba[y, x, 0]) + 0.7152 * int(rgba[y, x, 1]) + 0.0722 * int(rgba[y, x, 2]) for x in range(w)] for y in range(h)]
    blurred = _box_mean(luma, 1)
    visible = sorted(blurred[y][x] for y in range(h) for x in range(w) if rgba[y, x, 3] > 0) or [0.0, 255.0]
    lo, hi = visible[int(0.02 * (len(visible) - 1))], visible[int(0.98 * (len(visible) - 1))] + 1
    colours = popart.palette_colours(p["palette"], p["levels"]).tolist()
    out = np.empty((h, w, 3), np.uint8)
    for y in range(h):
        for x in range(w):
            band = int(min(p["levels"] - 1, max(0.0, (blurred[y][x] - lo) * p["levels"] / max(1.0, hi - lo))))
            out[y, x] = colours[band]
    return out


def ref_8bit(rgba: np.ndarray, p) -> np.ndarray:
    h, w = rgba.shape[:2]
    s = p["pixel_size"]
    palette = eightbit.palette_array(eightbit.FIXED_PALETTES[p["palette"]]).tolist()
    weights = (eightbit.LIGHTNESS_WEIGHT, 1.0, 1.0)
    lab_palette = [[c * wt for c, wt in zip(eightbit.to_lab(np.array([col], np.uint8))[0].tolist(), weights)] for col in palette]
    out = np.empty((h, w, 3), np.uint8)
    for by in range(0, h, s):
        for bx in range(0, w, s):
            total, acc = 0, [0, 0, 0]
            for y in range(by, min(h, by + s)):
                for x in range(bx, min(w, bx + s)):
                    a = int(rgba[y, x, 3])
                    total += a
                    for c in range(3):
                        acc[c] += int(rgba[y, x, c]) * a
            mean = [round(v / total) if total else 0 for v in acc]
            lab = eightbit.to_lab(np.array([mean], np.uint8))[0].tolist()
            lab = [lab[0] * eightbit.LIGHTNESS_WEIGHT, lab[1] * eightbit.CHROMA_BOOST, lab[2] * eightbit.CHROMA_BOOST]
            best = min(range(len(palette)), key=lambda i: sum((lab[k] - lab_palette[i][k]) ** 2 for k in range(3)))
            for y in range(by, min(h, by + s)):
                for x in range(bx, min(w, bx + s)):
                    out[y, x] = palette[best]
    return out


REFERENCES = {"blackwhite": ref_blackwhite, "dither": ref_dither, "popart": ref_popart, "8bit": ref_8bit}


def measure_ours(runs: int) -> dict[tuple[str, int], float]:
    figures = {}
    for side in SIZES:
        rgba = test_image(side)
        for name in effects.EFFECTS:
            params = effects.resolve(name)
            effects.apply(name, rgba, params)  # warm (lookup tables, caches)
            figures[(name, side)] = ms_per_mp(lambda: effects.apply(name, rgba, params), side * side, runs)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--tier-malloc", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.tier_malloc:  # child process: the 512 MB tier's allocator policy, ours only
        from app.ops import tuning
        from config import Settings

        tuning.configure(Settings())  # the fields' defaults: the onnx tier, lean mode
        for (name, side), value in measure_ours(args.runs).items():
            print(f"{name} {side} {value:.2f}")
        return

    ours = measure_ours(args.runs)
    crop = test_image(1024)[448:576, 448:576].copy()
    reference = {}
    for name, ref in REFERENCES.items():
        params = effects.resolve(name)
        reference[name] = ms_per_mp(lambda: ref(crop, params), crop.shape[0] * crop.shape[1], 1)
    tier_out = subprocess.run([sys.executable, __file__, "--tier-malloc", "--runs", str(args.runs)],
                              capture_output=True, text=True, check=True).stdout.split("\n")
    tier = {(n, int(s)): float(v) for n, s, v in (line.split() for line in tier_out if line.strip())}

    print(f"effects, default parameters, one thread, median of {args.runs} (ms per megapixel; goal <= {GOAL_MS_PER_MP:g})")
    print(f"{'effect':<11} {'size':>9} {'ours':>8} {'per-pixel ref':>14} {'ref/ours':>9} {'ours, 512 MB tier malloc':>25}")
    for name in effects.EFFECTS:
        for side in SIZES:
            o = ours[(name, side)]
            flag = "" if o <= GOAL_MS_PER_MP else "  over goal"
            print(f"{name:<11} {side:>4}x{side:<4} {o:8.1f} {reference[name]:14.0f} {reference[name] / o:8.0f}x "
                  f"{tier[(name, side)]:25.1f}{flag}")


if __name__ == "__main__":
    main()
