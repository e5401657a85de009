"""The shadow: drop = the silhouette (with its outline, if any) offset and blurred; contact = an
antialiased ellipse under the subject's lowest part, blurred.

Blurred at low resolution (cells of f x f canvas pixels, :func:`planes.reduction`). Over an
opaque colour or a blurred background it is drawn into the background's reduced copy
(:func:`shadow_over`: one upscale for both); otherwise it is a layer of its own (:func:`shadow_plane`).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from app.pipeline.layout.framing import SubjectLayer
from app.pipeline.layout.geometry import (ALPHA_THRESHOLD, CONTACT_ASPECT, CONTACT_BAND, CONTACT_WIDTH, blur_reach,
                                          clip, subject_box)
from app.pipeline.layout.planes import UpscaledPlane, reduction

if TYPE_CHECKING:
    from app.pipeline.options import Layout


class Shadow:
    """The shadow's alpha at low resolution (cells of f x f canvas pixels), opacity included."""

    def __init__(self, low: Image.Image, u0: int, v0: int, f: int):
        self.low, self.u0, self.v0, self.f = low, u0, v0, f


def shadow_of(layer: SubjectLayer, dilated: tuple[np.ndarray, int, int] | None, layout: Layout) -> Shadow | None:
    """The shadow of the subject (of the subject with its outline, when it has one)."""
    sigma = layout.shadow_blur
    f = reduction(sigma)
    e = blur_reach(sigma)
    silhouette, x0, y0 = dilated if dilated is not None else layer.core_alpha(0)
    if layout.shadow == "drop":
        dx, dy = layout.shadow_offset
        low, u0, v0 = _reduce_to_cells(silhouette, x0 + dx, y0 + dy, f, math.ceil(e / f) + 1)
    else:
        ellipse = _contact_ellipse(silhouette)
        if ellipse is None:
            return None
        cx, cy, ew, eh = ellipse
        cx, cy = cx + x0, cy + y0
        margin = math.ceil(e / f) + 2
        u0 = math.floor((cx - ew / 2) / f) - margin
        v0 = math.floor((cy - eh / 2) / f) - margin
        u1 = math.ceil((cx + ew / 2) / f) + margin
        v1 = math.ceil((cy + eh / 2) / f) + margin
        ss = 4  # drawn 4x larger and reduced: antialiased
        big = Image.new("L", ((u1 - u0) * ss, (v1 - v0) * ss), 0)
        left, top = ((cx - ew / 2) / f - u0) * ss, ((cy - eh / 2) / f - v0) * ss
        # an ellipse under one pixel of the reduced copy (a small subject, a large blur) stays a dot
        right, bottom = max(left, ((cx + ew / 2) / f - u0) * ss - 1), max(top, ((cy + eh / 2) / f - v0) * ss - 1)
        ImageDraw.Draw(big).ellipse([left, top, right, bottom], fill=255)
        low = big.reduce(ss)
    if sigma > 0:
        low = low.filter(ImageFilter.GaussianBlur(sigma / f))
    opacity = layout.shadow_opacity
    if opacity < 1:
        low = low.point([round(v * opacity) for v in range(256)])
    if low.getbbox() is None:
        return None
    return Shadow(low, u0, v0, f)


def shadow_plane(shadow: Shadow, color, W: int, H: int) -> UpscaledPlane:
    return UpscaledPlane(shadow.low, shadow.u0, shadow.v0, shadow.f, color, W, H)


def _reduce_to_cells(a: np.ndarray, x0: int, y0: int, f: int, margin: int) -> tuple[Image.Image, int, int]:
    """``a`` placed at canvas (x0, y0), box-averaged onto cells of f x f canvas pixels, with
    ``margin`` empty cells around: (L image, first cell u0, v0)."""
    u0, v0 = math.floor(x0 / f) - margin, math.floor(y0 / f) - margin
    u1 = math.ceil((x0 + a.shape[1]) / f) + margin
    v1 = math.ceil((y0 + a.shape[0]) / f) + margin
    if f == 1:
        grid = np.zeros((v1 - v0, u1 - u0), np.uint8)
        grid[y0 - v0:y0 - v0 + a.shape[0], x0 - u0:x0 - u0 + a.shape[1]] = a
        return Image.fromarray(grid, "L"), u0, v0
    # reduce the array where it is, then place the cells: only the two partial cells of each edge differ
    ox, oy = x0 - u0 * f, y0 - v0 * f  # the array's offset within the grid, in canvas pixels
    px0, py0 = ox % f, oy % f
    tile = np.zeros((math.ceil((py0 + a.shape[0]) / f) * f, math.ceil((px0 + a.shape[1]) / f) * f), np.uint8)
    tile[py0:py0 + a.shape[0], px0:px0 + a.shape[1]] = a
    cells = Image.fromarray(tile, "L").reduce(f)
    grid = Image.new("L", (u1 - u0, v1 - v0), 0)
    grid.paste(cells, (ox // f, oy // f))
    return grid, u0, v0


def _contact_ellipse(silhouette: np.ndarray) -> tuple[float, float, float, float] | None:
    """(centre x, centre y, width, height) of the contact shadow in ``silhouette``'s pixels:
    under its lowest part (the bottom CONTACT_BAND of its height), CONTACT_WIDTH times as wide."""
    box = subject_box(silhouette)
    if box is None:
        return None
    band = max(1, round(CONTACT_BAND * box.height))
    cols = np.flatnonzero(silhouette[box.bottom - band:box.bottom].max(axis=0) >= ALPHA_THRESHOLD)
    xa, xb = int(cols[0]), int(cols[-1]) + 1
    ew = CONTACT_WIDTH * (xb - xa)
    eh = max(2.0, CONTACT_ASPECT * ew)
    return (xa + xb) / 2, float(box.bottom), ew, eh


def refit(shadow: Shadow, f: int) -> tuple[Image.Image, int, int, int]:
    """The shadow's cells re-sampled onto cells of ``f`` (a smaller factor), for the background's grid
    (the new cells within the old ones: the outermost old cells are empty margin anyway)."""
    g = shadow.f
    x0, y0 = shadow.u0 * g, shadow.v0 * g
    x1, y1 = x0 + shadow.low.width * g, y0 + shadow.low.height * g
    u0, v0, u1, v1 = math.ceil(x0 / f), math.ceil(y0 / f), math.floor(x1 / f), math.floor(y1 / f)
    width, height = shadow.low.size
    box = (min(max(u0 * f / g - shadow.u0, 0.0), width), min(max(v0 * f / g - shadow.v0, 0.0), height),
           min(max(u1 * f / g - shadow.u0, 0.0), width), min(max(v1 * f / g - shadow.v0, 0.0), height))
    return shadow.low.resize((u1 - u0, v1 - v0), Image.Resampling.BILINEAR, box=box), u0, v0, f


def shadow_over(low: Image.Image, shadow: Shadow, lu0: int, lv0: int, color) -> Image.Image:
    """``low`` (RGB cells, its first at cell (lu0, lv0)) with the shadow's cells over it (opaque "over")."""
    W, H = low.size
    u0, v0 = shadow.u0 - lu0, shadow.v0 - lv0
    x0, y0, x1, y1 = clip(u0, v0, u0 + shadow.low.width, v0 + shadow.low.height, W, H)
    if x1 <= x0 or y1 <= y0:
        return low
    part = low.crop((x0, y0, x1, y1))
    a = shadow.low.crop((x0 - u0, y0 - v0, x1 - u0, y1 - v0))
    part.paste(Image.new("RGB", part.size, tuple(color)), (0, 0), a)  # paste with a mask over an opaque image is "over"
    low = low.copy()
    low.paste(part, (x0, y0))
    return low
