"""``blackwhite``: black & white film.

1. Grey from linear light weighted like a panchromatic film (Kodak Tri-X's usual
   channel-mixer recipe, R 0.25 / G 0.35 / B 0.40: more blue and less red than the
   eye's luma), not plain luma.
2. Tone: gamma, then a contrast S-curve that keeps black black and white white;
   both folded into one lookup table.
3. Edge-aware local contrast: detail above a fast guided filter's base layer is
   boosted. The guided filter follows strong edges, so texture (fur, skin, fabric)
   gains contrast without halos along outlines.
4. Halation: highlights bleed a soft glow into their surroundings.
5. Grain: seeded noise whose amplitude peaks in the mid-tones, as silver grain does.

Everything that needs a neighbourhood (the guided filter, the glow) is computed at
low resolution from the tone's box sums; at full resolution there are only table
lookups and one multiply-add, done by two compiled passes (``effects/_kernels.c``:
``tone_sums``, ``film_print``) that need no full-size temporary array. Their numpy
definition is in tests/test_effects.py, which checks them against it.

The output is neutral grey (R = G = B); alpha passes through.
"""

from __future__ import annotations

import math
from functools import lru_cache
from statistics import NormalDist
from typing import Any, Mapping

import numpy as np

from effects import _kernels, pixels
from effects.schema import Effect, Param

TRI_X_WEIGHTS = (0.25, 0.35, 0.40)

GUIDED_EPS = 0.01  # variance (in 0..1 units) below which a neighbourhood counts as texture, not edge
HIGHLIGHT_KNEE = 0.7  # halation starts from tones above this
GRAIN_SCALE = 0.25  # grain_strength 1 -> noise of std 0.25 in the mid-tones
# Standard normal quantiles at 256 even probabilities: uniform random bytes -> Gaussian grain, fast.
GAUSSIAN_BYTES = np.array([NormalDist().inv_cdf((i + 0.5) / 256) for i in range(256)], dtype=np.float32)


def render(rgba: np.ndarray, p: Mapping[str, Any]) -> np.ndarray:
    rgba = np.ascontiguousarray(rgba)
    shares = pixels.share_tables(TRI_X_WEIGHTS)
    table = tone_table(p["gamma_correction"], p["contrast_boost"])
    if p["edge_strength"] > 0 or p["halation_strength"] > 0:
        mean, mean_sq = tone_moments(rgba, shares, table)
        k1, k2 = print_coefficients(mean, mean_sq, rgba.shape, p["edge_strength"], p["halation_strength"])
    else:
        k1, k2 = np.ones((1, 1), np.float32), np.zeros((1, 1), np.float32)
    amplitude = grain_amplitude(table, p["grain_strength"]) if p["grain_strength"] > 0 else None
    out = np.empty_like(rgba)
    _kernels.film_print(rgba, shares, table, GAUSSIAN_BYTES, amplitude, k1, k2, p["seed"], out)
    return out


@lru_cache(maxsize=64)
def tone_table(gamma: float, contrast: float) -> np.ndarray:
    """Linear light (sampled over 0..1) -> displayed tone: sRGB encoding, gamma, contrast."""
    linear = np.linspace(0.0, 1.0, pixels.LINEAR_STEPS)
    tone = contrast_curve(pixels.linear_to_srgb(linear) ** (1.0 / gamma), contrast)
    return np.concatenate((tone, tone[-1:], tone[-1:])).astype(np.float32)  # room for fixed-point rounding


def contrast_curve(v: np.ndarray, contrast: float) -> np.ndarray:
    """A tone curve of slope ``contrast`` at mid-grey.

    Above 1: a logistic S-curve rescaled to pass through 0 -> 0 and 1 -> 1 (nothing
    clips), whose steepness is solved so that its slope at 0.5 is exactly
    ``contrast``. Below 1: a straight line towards mid-grey, i.e. a faded print.
    """
    if contrast <= 1.0:
        return 0.5 + (v - 0.5) * contrast
    k = _steepness(contrast)
    lo, hi = _logistic(-k / 2), _logistic(k / 2)
    return (_logistic(k * (v - 0.5)) - lo) / (hi - lo)


def _logistic(x):
    return 1.0 / (1.0 + np.exp(-x))


def _steepness(contrast: float) -> float:
    """k such that the rescaled logistic's slope at 0.5, k / (4 tanh(k/4)), equals ``contrast``."""
    lo, hi = 1e-6, 200.0
    for _ in range(100):
        mid = (lo + hi) / 2
        if mid / (4 * math.tanh(mid / 4)) < contrast:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def low_resolution(shape: tuple[int, ...]) -> tuple[int, int]:
    """The (width, height) of the grid the neighbourhood work runs on: cells of ~1/100 of the longer side."""
    height, width = shape[:2]
    factor = cell_factor(shape)
    return max(1, round(width / factor)), max(1, round(height / factor))


def cell_factor(shape: tuple[int, ...]) -> int:
    """Pixels per low-resolution cell: ~1/100 of the longer side."""
    return pixels.scale_for(shape, 1 / 100, lo=2, hi=32)


def tone_moments(rgba: np.ndarray, shares: np.ndarray, table: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Box means of the tone and of its square on the low-resolution grid, softened (float32)."""
    height, width = rgba.shape[:2]
    low_w, low_h = low_resolution(rgba.shape)
    sums = np.zeros((low_h, low_w), np.float64)
    squares = np.zeros((low_h, low_w), np.float64)
    _kernels.tone_sums(rgba, shares, table, sums, squares)
    counts = np.outer(cell_sizes(height, low_h), cell_sizes(width, low_w))
    return pixels.soften((sums / counts).astype(np.float32)), pixels.soften((squares / counts).astype(np.float32))


def cell_sizes(n: int, cells: int) -> np.ndarray:
    """How many of n pixels fall in each of ``cells`` cells when pixel i goes to cell i*cells//n."""
    return np.bincount(np.arange(n) * cells // n, minlength=cells)


def print_coefficients(mean: np.ndarray, mean_sq: np.ndarray, shape: tuple[int, ...], edge: float,
                       halation: float) -> tuple[np.ndarray, np.ndarray]:
    """Edge-aware local contrast, then highlight halation, as low-resolution K1, K2: print = tone·K1 + K2.

    Local contrast: tone + e·(tone − base), where base = A·tone + B is a fast guided
    filter (He & Sun, 2015) of the image guided by itself, its coefficients computed on
    the low-resolution box means. Where the local variance is far above ``GUIDED_EPS``
    (an edge) A ≈ 1: the base follows the image and nothing is boosted, so outlines get
    no halo; in texture (fur, skin) the base is the local mean and detail is amplified.

    Halation screens a wide glow g of the highlights over that: x·(1 − g) + g, with
    g = h·smooth(highlights) computed from the low-resolution means.

    K1 and K2 are upsampled bilinearly at print time, as the fast guided filter does
    with A and B.
    """
    k1 = np.ones_like(mean)
    k2 = np.zeros_like(mean)
    if edge > 0:
        var = np.maximum(mean_sq - mean * mean, 0.0)
        a = var / (var + np.float32(GUIDED_EPS))
        b = mean - a * mean
        k1 = np.float32(1.0 + edge) - np.float32(edge) * a
        k2 = np.float32(-edge) * b
    if halation > 0:
        highlights = np.clip((mean - np.float32(HIGHLIGHT_KNEE)) / np.float32(1 - HIGHLIGHT_KNEE), 0.0, 1.0) ** 2
        glow_factor = max(1, round(pixels.scale_for(shape, 1 / 40, lo=4, hi=96) / cell_factor(shape)))
        glow = np.float32(halation) * pixels.smooth(highlights, glow_factor)
        k1 = k1 * (np.float32(1.0) - glow)
        k2 = k2 * (np.float32(1.0) - glow) + glow
    return np.ascontiguousarray(k1, np.float32), np.ascontiguousarray(k2, np.float32)


def grain_amplitude(table: np.ndarray, strength: float) -> np.ndarray:
    """Grain std per tone-table entry: strength·GRAIN_SCALE·4t(1−t), strongest in the mid-tones.

    The amplitude follows the tone the film was exposed to (before local contrast and
    halation, which are print-side), looked up through the same index as the tone. The
    print pass multiplies it by a seeded Gaussian sample per pixel (``GAUSSIAN_BYTES``
    indexed by a hash of the seed and the pixel's number).
    """
    t = np.clip(table, 0.0, 1.0)
    return (np.float32(4.0 * strength * GRAIN_SCALE) * t * (np.float32(1.0) - t)).astype(np.float32)


EFFECT = Effect(
    name="blackwhite",
    description="Black & white film: panchromatic (Tri-X-like) grey, gamma and contrast curve, "
    "edge-aware local contrast, highlight halation and mid-tone grain. Neutral grey output.",
    params=(
        Param("gamma_correction", "number", 1.02, "tone gamma: above 1 brightens the mid-tones, below 1 darkens", 0.2, 5.0),
        Param("contrast_boost", "number", 1.12, "slope of the tone curve at mid-grey (1 = unchanged); blacks and whites stay put", 0.5, 3.0),
        Param("edge_strength", "number", 0.9, "edge-aware local contrast: extra texture detail, without halos at outlines (0 = off)", 0.0, 3.0),
        Param("halation_strength", "number", 0.12, "soft glow bleeding from the highlights (0 = off)", 0.0, 1.0),
        Param("grain_strength", "number", 0.08, "film grain, strongest in the mid-tones (0 = off)", 0.0, 1.0),
        Param("seed", "integer", 0, "seed of the grain: the same seed gives the same grain", 0, 2**32 - 1),
    ),
    presets={
        "modern": {"contrast_boost": 1.15, "grain_strength": 0.05},
        "vintage": {"gamma_correction": 1.0, "grain_strength": 0.15},
        "clean": {"edge_strength": 0.8, "grain_strength": 0.06},
    },
    render=render,
)
