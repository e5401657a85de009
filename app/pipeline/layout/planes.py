"""The layers' common machinery: constant-colour alpha planes (full or low resolution) drawn band
by band, and compositing a band.

Compositing is Pillow's alpha_composite (straight-alpha "over"), band by band; a layer that
lands on a still transparent band is pasted as it is.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from app.pipeline.layout.geometry import clip

# Compositing goes band by band: a band holds at most this many pixels (1 MB of RGBA).
BAND_PIXELS = 1 << 18

# Blurs are computed on a copy reduced by ``radius // 2`` (at least 2 for the background), so that
# the radius there is 2 to 4 pixels, then scaled back bilinearly: at that radius the reduced copy
# holds all the blurred image's detail (its spectrum is ~0 at the reduced Nyquist frequency), so
# this is visually the full-size blur, at ~1/f² of its cost.
_MIN_REDUCED_RADIUS = 2.0


def reduction(sigma: float, least: int = 1) -> int:
    """The factor f of the reduced copy a blur of ``sigma`` runs on (see above)."""
    return max(least, int(sigma // _MIN_REDUCED_RADIUS))


def composite(img: Image.Image, empty: bool, source, y0: int, y1: int) -> bool:
    """Put ``source``'s part of canvas rows y0..y1 over the band ``img`` ("over", straight alpha);
    a band still ``empty`` (transparent everywhere) just takes it. Returns whether it still is."""
    part = source.band(y0, y1, empty)
    if part is None:
        return empty
    layer, x, y = part
    if empty:
        img.paste(layer, (x, y))
    else:
        img.alpha_composite(layer, (x, y))
    return False


def _painted(a: Image.Image, color: tuple[int, int, int], zeroed: bool) -> Image.Image:
    """An RGBA layer of ``color`` with alpha ``a``; ``zeroed``: colourless where ``a`` is 0 (a
    layer pasted onto a transparent band stays in the output as it is)."""
    if zeroed:
        return Image.merge("RGBA", [a.point([0] + [c] * 255) for c in color] + [a])
    layer = Image.new("RGBA", a.size, (*color, 0))
    layer.putalpha(a)
    return layer


class Plane:
    """An alpha plane (uint8) at canvas rect (x0, y0, x1, y1), painted with a constant colour."""

    def __init__(self, alpha: np.ndarray, x0: int, y0: int, color: tuple[int, int, int]):
        self.alpha, self.x0, self.y0, self.color = alpha, x0, y0, color

    def band(self, y0: int, y1: int, empty: bool):
        a0, a1 = max(y0, self.y0), min(y1, self.y0 + self.alpha.shape[0])
        if a1 <= a0 or self.alpha.shape[1] == 0:
            return None
        a = Image.fromarray(np.ascontiguousarray(self.alpha[a0 - self.y0:a1 - self.y0]), "L")
        return _painted(a, self.color, empty), self.x0, a0 - y0


class UpscaledPlane:
    """A low-resolution alpha plane (L image, cell = f x f canvas pixels from canvas (0, 0)),
    placed at cell (u0, v0), upscaled bilinearly band by band, painted with a constant colour."""

    def __init__(self, low: Image.Image, u0: int, v0: int, f: int, color: tuple[int, int, int], W: int, H: int):
        self.low, self.u0, self.v0, self.f, self.color = low, u0, v0, f, color
        self.x0, self.y0, self.x1, self.y1 = clip(u0 * f, v0 * f, (u0 + low.width) * f, (v0 + low.height) * f, W, H)

    def band(self, y0: int, y1: int, empty: bool):
        a0, a1 = max(y0, self.y0), min(y1, self.y1)
        if a1 <= a0 or self.x1 <= self.x0:
            return None
        a = upscale(self.low, self.f, self.u0, self.v0, self.x0, a0, self.x1, a1)
        return _painted(a, self.color, empty), self.x0, a0 - y0


def upscale(low: Image.Image, f: int, u0: int, v0: int, x0: int, y0: int, x1: int, y1: int) -> Image.Image:
    """Canvas rect (x0, y0, x1, y1) of ``low`` (cells of f x f pixels, its first at cell (u0, v0)), bilinear."""
    box = (x0 / f - u0, y0 / f - v0, x1 / f - u0, y1 / f - v0)
    return low.resize((x1 - x0, y1 - y0), Image.Resampling.BILINEAR, box=box)
