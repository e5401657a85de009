"""``popart``: Warhol-style posterisation.

Luma by ITU-R BT.709 (0.2126 R + 0.7152 G + 0.0722 B), lightly smoothed so the
bands come out as flat shapes rather than speckle, stretched over the subject's own
tonal range (2nd to 98th percentile of its visible pixels), cut into ``levels``
bands and painted with a bold palette, dark to light.

``layout`` ``grid`` draws four half-size panels in a 2x2 grid, each with its own
palette, in the same width and height as the input. The panels carry the subject's
transparency, scaled with them, so for this layout alone the alpha channel is the
grid's, not the input's.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
from PIL import Image, ImageFilter

from effects import pixels
from effects.colors import parse_color
from effects.schema import Effect, Param

# Eight colours per palette, dark to light; `levels` of them are picked evenly.
PALETTES: dict[str, tuple[str, ...]] = {
    "marilyn": ("#1a1446", "#5b1a8c", "#c2185b", "#ff3d7f", "#ff7a1a", "#ffc93c", "#fff275", "#fffbe0"),
    "electric": ("#0b0c3f", "#003f91", "#0077ff", "#00b3a4", "#5ce65c", "#c6ff00", "#fff200", "#f5fff0"),
    "candy": ("#2b0a3d", "#8a0051", "#e0007a", "#ff5fa2", "#ff9e3d", "#b4f000", "#7ff0ff", "#fff0fa"),
    "sunset": ("#1f0a0a", "#6b0f1a", "#b91c1c", "#f2542d", "#f5a623", "#38b6ff", "#a0e7e5", "#fff8e7"),
}
PALETTE_ORDER = tuple(PALETTES)


def render(rgba: np.ndarray, p: Mapping[str, Any]) -> np.ndarray:
    levels, first = p["levels"], p["palette"]
    if p["layout"] == "single":
        return pixels.paint_rgba(bands(rgba, levels), palette_colours(first, levels), rgba)
    return grid(rgba, levels, first)


def bands(rgba: np.ndarray, levels: int) -> np.ndarray:
    """HxW band index 0..levels-1, dark to light."""
    luma8 = Image.fromarray(pixels.luma709_u8(rgba), "L").filter(ImageFilter.BoxBlur(1))
    lo, hi = _tonal_range(luma8, Image.fromarray(np.ascontiguousarray(rgba[..., 3]), "L"))
    lut = np.clip((np.arange(256, dtype=np.float32) - lo) * (levels / max(1.0, hi - lo)), 0, levels - 1)
    return np.asarray(luma8.point(lut.astype(np.uint8).tolist()))


def _tonal_range(luma: Image.Image, alpha: Image.Image) -> tuple[float, float]:
    """2nd and 98th percentile of the visible pixels' luma, from a histogram (no sort)."""
    hist = np.array(luma.histogram(mask=alpha.point(lambda a: 255 if a else 0)))
    if hist.sum() == 0:  # nothing visible: the whole image's range
        hist = np.array(luma.histogram())
    cdf = np.cumsum(hist) / hist.sum()
    lo = float(np.searchsorted(cdf, 0.02))
    hi = float(np.searchsorted(cdf, 0.98)) + 1.0
    return lo, max(hi, lo + 1.0)


def palette_colours(name: str, levels: int) -> np.ndarray:
    """``levels`` colours (levels x 3 uint8) of palette ``name``, evenly picked, dark to light."""
    ramp = PALETTES[name]
    picks = np.round(np.linspace(0, len(ramp) - 1, levels)).astype(int)
    return np.array([parse_color(ramp[i]) for i in picks], dtype=np.uint8)


def grid(rgba: np.ndarray, levels: int, first: str) -> np.ndarray:
    """Four half-size panels (2x2), palettes in order from ``first``; returns RGBA."""
    height, width = rgba.shape[:2]
    half_w, half_h = (width + 1) // 2, (height + 1) // 2
    small = Image.fromarray(np.ascontiguousarray(rgba), "RGBA").convert("RGBa")
    small = np.asarray(small.resize((half_w, half_h), Image.Resampling.LANCZOS).convert("RGBA"))
    band = bands(small, levels)
    start = PALETTE_ORDER.index(first)
    out = np.empty((height, width, 4), dtype=np.uint8)
    corners = [(0, 0), (0, half_w), (half_h, 0), (half_h, half_w)]
    for i, (y, x) in enumerate(corners):
        ph, pw = height - y if y else half_h, width - x if x else half_w
        name = PALETTE_ORDER[(start + i) % len(PALETTE_ORDER)]
        out[y:y + ph, x:x + pw, :3] = pixels.paint(band[:ph, :pw], palette_colours(name, levels))
        out[y:y + ph, x:x + pw, 3] = small[:ph, :pw, 3]
    return out


EFFECT = Effect(
    name="popart",
    description="Warhol-style pop art: BT.709 luma posterised into bands painted with a bold palette; "
    "layout 'grid' gives four half-size panels with four palettes.",
    params=(
        Param("levels", "integer", 4, "number of tone bands (and colours per panel)", 2, 8),
        Param("layout", "enum", "single", "'single' image, or a 2x2 'grid' of half-size panels with four palettes",
              choices=("single", "grid")),
        Param("palette", "enum", "marilyn", "palette of the image (for 'grid': of the first panel; the others follow in order)",
              choices=PALETTE_ORDER),
    ),
    render=render,
)
