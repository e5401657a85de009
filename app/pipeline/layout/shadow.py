"""The shadow: drop = the silhouette (with its outline, if any) offset and blurred; contact = an
antialiased ellipse under the subject's lowest part, its centre line on the ground under each
foot, blurred.

Blurred at low resolution (cells of f x f canvas pixels, :func:`planes.reduction`). Over an
opaque colour or a blurred background it is drawn into the background's reduced copy
(:func:`shadow_over`: one upscale for both); otherwise it is a layer of its own (:func:`shadow_plane`).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageFilter

from app.pipeline.layout.framing import SubjectLayer
from app.pipeline.layout.geometry import (ALPHA_THRESHOLD, CONTACT_ASPECT, CONTACT_BAND, CONTACT_BODY, CONTACT_WIDTH,
                                          blur_reach, clip, subject_box)
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
        contact = _contact(silhouette, x0, y0, f, math.ceil(e / f) + 2)
        if contact is None:
            return None
        low, u0, v0 = contact
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


def _contact(silhouette: np.ndarray, x0: int, y0: int, f: int, margin: int) -> tuple[Image.Image, int, int] | None:
    """The contact shadow of ``silhouette`` (at canvas x0, y0) on cells of f x f canvas pixels,
    with ``margin`` cells around: (L image, first cell u0, v0).

    Where the subject touches the ground: the columns that reach into its bottom CONTACT_BAND of
    height; the ground under each, the bottom of the subject's lowest pixel there (each foot at
    its own height; between feet a straight line, past them level). On that ground line: an
    ellipse CONTACT_WIDTH times as wide as those columns span, CONTACT_ASPECT as tall as wide, at
    CONTACT_BODY strength (the shade under a body, between its feet), and under each of those
    columns, at full strength, a band half as tall with round ends (the shade where a foot
    stands). Each cell's coverage is exact in y, from 4 samples in x."""
    box = subject_box(silhouette)
    if box is None:
        return None
    band = max(1, round(CONTACT_BAND * box.height))
    reached = silhouette[box.bottom - band:box.bottom] >= ALPHA_THRESHOLD
    cols = np.flatnonzero(reached.any(axis=0))
    ground = y0 + box.bottom - np.argmax(reached[::-1, cols], axis=0)  # each column's lowest pixel's bottom edge
    centres = x0 + cols + 0.5
    xa, xb = x0 + int(cols[0]), x0 + int(cols[-1]) + 1
    ew = CONTACT_WIDTH * (xb - xa)
    eh = max(2.0, CONTACT_ASPECT * ew)
    cx = (xa + xb) / 2
    u0, u1 = math.floor((cx - ew / 2) / f) - margin, math.ceil((cx + ew / 2) / f) + margin
    v0, v1 = math.floor((ground.min() - eh / 2) / f) - margin, math.ceil((ground.max() + eh / 2) / f) + margin
    ss = 4
    xs = u0 * f + (np.arange((u1 - u0) * ss) + 0.5) * (f / ss)
    centre = (np.interp(xs, centres, ground) / f - v0).astype(np.float32)  # in cells of the grid
    # half heights: of the feet's bands with round ends (by the distance to the nearest contact column), of the ellipse
    i = np.minimum(np.searchsorted(centres, xs), len(centres) - 1)
    near = np.minimum(np.abs(xs - centres[i]), np.abs(xs - centres[np.maximum(i - 1, 0)]))
    feet = (np.sqrt(np.clip((eh / 4) ** 2 - near ** 2, 0, None)) / f).astype(np.float32)
    body = (eh / 2 * np.sqrt(np.clip(1 - ((xs - cx) / (ew / 2)) ** 2, 0, 1)) / f).astype(np.float32)
    rows = np.arange(v1 - v0, dtype=np.float32)[:, None]
    grid = np.empty((v1 - v0, u1 - u0), np.uint8)
    step = max(1, (1 << 16) // (v1 - v0))  # cells a chunk: its arrays hold about 4 * 2**16 floats
    for c in range(0, u1 - u0, step):
        s = slice(c * ss, min(u1 - u0, c + step) * ss)
        cover = np.maximum(_covered(rows, centre[s], feet[s]), CONTACT_BODY * _covered(rows, centre[s], body[s]))
        cover = cover.reshape(len(rows), -1, ss).mean(axis=2)
        grid[:, c:c + cover.shape[1]] = (cover * 255 + 0.5).astype(np.uint8)
    return Image.fromarray(grid, "L"), u0, v0


def _covered(rows: np.ndarray, centre: np.ndarray, half: np.ndarray) -> np.ndarray:
    """How much of each cell row [v, v + 1] (``rows``, a column) lies within ``centre`` ± ``half``
    (a row of samples)."""
    return np.clip(centre + half, rows, rows + 1) - np.clip(centre - half, rows, rows + 1)


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
