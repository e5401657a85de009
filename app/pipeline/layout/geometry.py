"""Framing's geometry: the subject's box, and the plan of a layout (sizes only, no pixels).

Coordinates are pixels, x to the right and y down; a :class:`Box` is ``left, top, width,
height``. Lengths of the layout (padding in px, blur radii, shadow offset and blur, outline
width) are pixels of the output.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from app.pipeline.options import Layout

# An alpha at or above this (of 255) is part of the subject's box: 8 is 3 %, below what anyone
# sees against any background, above the faint noise a matting model leaves around a subject
# (u2netp leaves 1..7 over about 1 % of a photo), which must not widen the box.
ALPHA_THRESHOLD = 8

# The contact shadow (shadow.py), on the ground under the parts of the subject that reach into
# its bottom CONTACT_BAND of height: an ellipse CONTACT_WIDTH times as wide as they span,
# CONTACT_ASPECT as tall as wide, at CONTACT_BODY strength, and under each of them a band half as
# tall at full strength. A tenth of the height holds the feet of a standing animal seen from
# above its back (the far ones higher in the picture: 7 % on AM-2k's wildebeest).
CONTACT_WIDTH = 1.1
CONTACT_BAND = 0.1
CONTACT_ASPECT = 0.1
CONTACT_BODY = 0.5

# A Gaussian blur reaches this many standard deviations: what lies further is below 1/255.
BLUR_REACH = 3.0


@dataclass(frozen=True)
class Box:
    left: int
    top: int
    width: int
    height: int

    @property
    def right(self) -> int:
        return self.left + self.width

    @property
    def bottom(self) -> int:
        return self.top + self.height


@dataclass(frozen=True)
class Plan:
    """The geometry of a layout, without pixels.

    ``canvas``: the output's (width, height). ``scale``: output pixels per input pixel of the
    subject (1.0 unless the size is fixed). ``source``: the subject's box in the input.
    ``subject``: where that box lands on the canvas (scaled: ``round(source.width * scale)``
    wide); :attr:`transform` maps input pixels onto the canvas. ``outline`` and ``shadow``: the
    bounds of those layers on the canvas (None when there is none), not clipped to it: with a
    fixed size the canvas clips them, otherwise it holds them."""

    canvas: tuple[int, int]
    scale: float
    source: Box
    subject: Box
    outline: Box | None = None
    shadow: Box | None = None

    @property
    def transform(self) -> tuple[float, float, float, float]:
        """(sx, sy, tx, ty): input (x, y) lands at canvas (tx + sx*x, ty + sy*y)."""
        sx = self.subject.width / self.source.width
        sy = self.subject.height / self.source.height
        return sx, sy, self.subject.left - self.source.left * sx, self.subject.top - self.source.top * sy

    @property
    def resampled(self) -> bool:
        return (self.subject.width, self.subject.height) != (self.source.width, self.source.height)

    @property
    def upscaled(self) -> bool:
        """The subject is enlarged past its own pixels (softer than its source: X-Upscaled)."""
        return self.subject.width > self.source.width or self.subject.height > self.source.height


def subject_box(alpha: np.ndarray, threshold: int = ALPHA_THRESHOLD) -> Box | None:
    """The bounding box of the pixels of ``alpha`` (HxW uint8) at or above ``threshold``, or None."""
    rows = np.flatnonzero(alpha.max(axis=1) >= threshold)
    if rows.size == 0:
        return None
    top, bottom = int(rows[0]), int(rows[-1]) + 1
    cols = np.flatnonzero(alpha[top:bottom].max(axis=0) >= threshold)
    return Box(int(cols[0]), top, int(cols[-1]) + 1 - int(cols[0]), bottom - top)


def rgba_box(rgba: np.ndarray, threshold: int = ALPHA_THRESHOLD) -> Box | None:
    """:func:`subject_box` of an RGBA array's alpha, read as one uint32 a pixel (alpha is its top
    byte on a little-endian machine): contiguous reductions instead of strided ones, no copy."""
    if sys.byteorder != "little" or rgba.strides[-2:] != (4, 1):
        return subject_box(rgba[..., 3], threshold)
    return subject_box(rgba.view(np.uint32)[..., 0], threshold << 24)


def plan(image_size: tuple[int, int], box: Box, layout: Layout) -> Plan:
    """The geometry of ``layout`` for an input of ``image_size`` (w, h) whose subject occupies ``box``.

    - size original, no crop, no scale: the input's canvas, grown where the padding, the
      outline or the shadow would leave it; the subject stays where it is.
    - size subject (or original with crop): the subject box plus padding, grown to hold the
      outline and the shadow.
    - size photo: the input's own size, as a px size (W, H) = (w, h).
    - size px (W, H): the subject with its padding (px padding is output pixels, % padding a
      share of the scaled subject) scaled to fit, at most ``max_upscale``, placed by
      ``position``; outline and shadow are clipped by the canvas.
    - scale: the subject fits in ``scale`` times the canvas, touching it on one axis (on a
      square canvas, or one of the subject's shape, its largest side is that share of the
      canvas's). With a fixed size it sets the subject's scale instead of the fit (still at most
      ``max_upscale``); with original/subject size the canvas is sized so that the subject takes
      that share (original keeps the input's proportions, subject the subject's), and at least
      holds the padding; the subject+padding block is then placed by ``position``.
    """
    w, h = image_size
    if box.width < 1 or box.height < 1:
        raise ValueError(f"plan: an empty subject box {box}")
    (pt, ut), (pr, ur), (pb, ub), (pl, ul) = layout.padding
    if layout.size[0] in ("px", "photo"):
        W, H = (layout.size[1], layout.size[2]) if layout.size[0] == "px" else (w, h)
        px_w = (pl if ul == "px" else 0.0) + (pr if ur == "px" else 0.0)
        px_h = (pt if ut == "px" else 0.0) + (pb if ub == "px" else 0.0)
        pc_w = (pl / 100 if ul == "%" else 0.0) + (pr / 100 if ur == "%" else 0.0)
        pc_h = (pt / 100 if ut == "%" else 0.0) + (pb / 100 if ub == "%" else 0.0)
        if layout.scale is not None:
            s = layout.scale * min(W / box.width, H / box.height)
        else:
            s = min(max(W - px_w, 1.0) / (box.width * (1 + pc_w)), max(H - px_h, 1.0) / (box.height * (1 + pc_h)))
        s = min(s, layout.max_upscale)
        sw = min(W, max(1, round(box.width * s)))
        sh = min(H, max(1, round(box.height * s)))
        pads = [p if u == "px" else p / 100 * side for (p, u), side in zip(layout.padding, (sh, sw, sh, sw))]
        left = _place(pads[3], pads[1], sw, W, layout.position[0])
        top = _place(pads[0], pads[2], sh, H, layout.position[1])
        subject = Box(left, top, sw, sh)
        return Plan((W, H), s, box, subject, *_decorations(subject, layout))
    pads = [round(p if u == "px" else p / 100 * side) for (p, u), side in
            zip(layout.padding, (box.height, box.width, box.height, box.width))]
    block_w, block_h = box.width + pads[3] + pads[1], box.height + pads[0] + pads[2]
    if layout.size[0] == "original" and not layout.crop and layout.scale is None:
        x0, y0 = min(0, box.left - pads[3]), min(0, box.top - pads[0])
        x1, y1 = max(w, box.right + pads[1]), max(h, box.bottom + pads[2])
        subject = Box(box.left - x0, box.top - y0, box.width, box.height)
        W, H = x1 - x0, y1 - y0
    else:
        if layout.scale is None:
            W, H = block_w, block_h
        else:
            if layout.size[0] == "original" and not layout.crop:
                k = max(box.width / w, box.height / h) / layout.scale
                W, H = round(k * w), round(k * h)
            else:
                W, H = round(box.width / layout.scale), round(box.height / layout.scale)
            W, H = max(W, block_w), max(H, block_h)
        left = _place(pads[3], pads[1], box.width, W, layout.position[0])
        top = _place(pads[0], pads[2], box.height, H, layout.position[1])
        subject = Box(left, top, box.width, box.height)
    outline, shadow = _decorations(subject, layout)
    # grow the canvas to hold them
    x0, y0, x1, y1 = 0, 0, W, H
    for b in (outline, shadow):
        if b is not None:
            x0, y0, x1, y1 = min(x0, b.left), min(y0, b.top), max(x1, b.right), max(y1, b.bottom)
    if (x0, y0, x1, y1) != (0, 0, W, H):
        subject = moved(subject, -x0, -y0)
        outline = None if outline is None else moved(outline, -x0, -y0)
        shadow = None if shadow is None else moved(shadow, -x0, -y0)
    return Plan((x1 - x0, y1 - y0), 1.0, box, subject, outline, shadow)


def _place(before: float, after: float, length: int, room: int, at: float) -> int:
    """The start of a ``length`` with ``before``/``after`` padding placed at ``at`` (0..1) of the
    free space, kept within [0, room - length]."""
    start = round(before + at * (room - length - before - after))
    return min(max(start, 0), max(room - length, 0))


def moved(box: Box, dx: int, dy: int) -> Box:
    return Box(box.left + dx, box.top + dy, box.width, box.height)


def clip(x0: int, y0: int, x1: int, y1: int, W: int, H: int) -> tuple[int, int, int, int]:
    return max(x0, 0), max(y0, 0), min(x1, W), min(y1, H)


def blur_reach(sigma: float) -> int:
    return math.ceil(BLUR_REACH * sigma) + (1 if sigma > 0 else 0)


def _decorations(subject: Box, layout: Layout) -> tuple[Box | None, Box | None]:
    """The bounds of the outline and of the shadow, given where the subject lands."""
    r = layout.outline
    silhouette = Box(subject.left - r, subject.top - r, subject.width + 2 * r, subject.height + 2 * r)
    outline = silhouette if r > 0 else None
    if layout.shadow == "none" or layout.shadow_opacity <= 0:
        return outline, None
    e = blur_reach(layout.shadow_blur)
    if layout.shadow == "drop":
        dx, dy = layout.shadow_offset
        b = silhouette
        return outline, Box(b.left + dx - e, b.top + dy - e, b.width + 2 * e, b.height + 2 * e)
    # contact: the widest ellipse the subject's bottom can ask for, as high as its band (see shadow.py)
    ew = CONTACT_WIDTH * silhouette.width
    half_h = max(1.0, CONTACT_ASPECT * ew / 2)
    extra = math.ceil((CONTACT_WIDTH - 1) * silhouette.width / 2) + 1
    left, right = silhouette.left - extra - e, silhouette.right + extra + e
    top = math.floor(silhouette.bottom - math.ceil(CONTACT_BAND * silhouette.height) - half_h) - 2 - e
    bottom = math.ceil(silhouette.bottom + half_h) + 1 + e
    return outline, Box(left, top, right - left, bottom - top)
