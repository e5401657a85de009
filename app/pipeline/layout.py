"""The layout stage: framing, backgrounds, shadows and outlines of a cut-out.

Pure functions of arrays (numpy, Pillow); no Flask, no parsing. Applied after segmentation and
effects, before encoding:

- :func:`subject_box` — the subject's bounding box in an alpha plane;
- :func:`plan` — the geometry alone (canvas size, the subject's scale and place, the bounds of
  the shadow and the outline), from sizes, without pixels: it bounds the output before any
  pixel work and can be property-tested;
- :func:`lay_out` — the pixels: background, shadow, outline, subject (bottom to top).

``layout`` is the request's :class:`app.pipeline.options.Layout` (where each field and its default
is declared, once), or any object with the same attributes.

Coordinates are pixels, x to the right and y down; a :class:`Box` is ``left, top, width,
height``. Lengths of the layout (padding in px, blur radii, shadow offset and blur, outline
width) are pixels of the output.

How:

- Framing: at scale 1 (every size but a fixed one) the subject is moved by whole pixels, never
  resampled; otherwise its box (plus the filter's reach) is resampled with LANCZOS on
  premultiplied colours (mode "RGBa"), as app/pipeline/imaging.py scales inputs.
- Blurs (the background's, the shadow's) run on a copy reduced by f = radius // 2 (box filter),
  with Pillow's GaussianBlur at radius/f (2..4 px there), then are scaled back bilinearly.
- Blur background: the photo with the subject removed, not the photo: each pixel counts with a
  weight 1 - clip(4 alpha) (Pillow's premultiplied box reduction gives weighted means), the hole
  is filled by push-pull (a pyramid of weighted means), then blurred. No colour of the subject
  bleeds into it, and no sharp copy of the old background stays under the subject's soft edge.
- Shadow: drop = the silhouette (with its outline, if any) offset and blurred; contact = an
  antialiased ellipse under the subject's lowest part, blurred. Over an opaque colour or a
  blurred background it is drawn into the background's reduced copy (one upscale for both).
- Outline: the alpha, levelled (64..192 -> 0..255) and grey-dilated by an exact digital disc
  (:func:`dilate_disc`: running maxima from power-of-two tables, uint8, in strips).
- Compositing: Pillow's alpha_composite (straight-alpha "over"), band by band; a layer that
  lands on a still transparent band is pasted as it is.

Memory: the output (canvas, RGBA uint8) is the only full-size colour array. Next to it live the
laid-out subject's alpha (one byte a pixel, over the subject's box), the outline's alpha when
there is one (the same), low-resolution planes for the blurred background and the shadow, and
bands of at most :data:`BAND_PIXELS` pixels while compositing. Nothing full-size is float.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

# An alpha at or above this (of 255) is part of the subject's box: 8 is 3 %, below what anyone
# sees against any background, above the faint noise a matting model leaves around a subject
# (u2netp leaves 1..7 over about 1 % of a photo), which must not widen the box.
ALPHA_THRESHOLD = 8

# The contact shadow: an ellipse CONTACT_WIDTH times as wide as the subject's lowest part (its
# bottom CONTACT_BAND of height), CONTACT_ASPECT as tall as wide, centred on the lowest row.
CONTACT_WIDTH = 1.1
CONTACT_BAND = 0.05
CONTACT_ASPECT = 0.1

# A Gaussian blur reaches this many standard deviations: what lies further is below 1/255.
BLUR_REACH = 3.0

# Compositing goes band by band: a band holds at most this many pixels (1 MB of RGBA).
BAND_PIXELS = 1 << 18

# Blurs are computed on a copy reduced by ``radius // 2`` (at least 2 for the background), so that
# the radius there is 2 to 4 pixels, then scaled back bilinearly: at that radius the reduced copy
# holds all the blurred image's detail (its spectrum is ~0 at the reduced Nyquist frequency), so
# this is visually the full-size blur, at ~1/f² of its cost.
_MIN_REDUCED_RADIUS = 2.0

_RESAMPLE = Image.Resampling.LANCZOS  # the subject's scaling, as app/pipeline/imaging.py
_BACKGROUND_RESAMPLE = Image.Resampling.BICUBIC  # an image background's: smooth, antialiased, 2/3 of LANCZOS's cost


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


@dataclass(frozen=True)
class Laid:
    """The laid-out image: HxWx4 uint8 RGBA, straight alpha (opaque wherever the background is),
    and the subject's box in it (what X-Foreground-* report), measured on the laid-out subject's
    own alpha (the outline and the shadow are not part of it; an opaque background neither).
    ``foreground`` is None when no pixel of the subject reaches :data:`ALPHA_THRESHOLD`."""

    image: np.ndarray
    foreground: Box | None
    plan: Plan


def subject_box(alpha: np.ndarray, threshold: int = ALPHA_THRESHOLD) -> Box | None:
    """The bounding box of the pixels of ``alpha`` (HxW uint8) at or above ``threshold``, or None."""
    rows = np.flatnonzero(alpha.max(axis=1) >= threshold)
    if rows.size == 0:
        return None
    top, bottom = int(rows[0]), int(rows[-1]) + 1
    cols = np.flatnonzero(alpha[top:bottom].max(axis=0) >= threshold)
    return Box(int(cols[0]), top, int(cols[-1]) + 1 - int(cols[0]), bottom - top)


def _rgba_box(rgba: np.ndarray, threshold: int = ALPHA_THRESHOLD) -> Box | None:
    """:func:`subject_box` of an RGBA array's alpha, read as one uint32 a pixel (alpha is its top
    byte on a little-endian machine): contiguous reductions instead of strided ones, no copy."""
    if sys.byteorder != "little" or rgba.strides[-2:] != (4, 1):
        return subject_box(rgba[..., 3], threshold)
    return subject_box(rgba.view(np.uint32)[..., 0], threshold << 24)


# ------------------------------------------------------------------ the layout's values


@dataclass(frozen=True)
class _Spec:
    crop: bool
    padding: tuple[tuple[float, str], ...]
    size: tuple[str, int, int]
    position: tuple[float, float]
    scale: float | None
    max_upscale: float
    background: tuple
    blur_radius: float
    background_fit: str
    shadow: str
    shadow_color: tuple[int, int, int]
    shadow_opacity: float
    shadow_blur: float
    shadow_offset: tuple[int, int]
    outline: int
    outline_color: tuple[int, int, int]

    @property
    def identity(self) -> bool:
        return (not self.crop and all(v == 0 for v, _ in self.padding) and self.size[0] == "original"
                and self.scale is None and self.background[0] == "transparent" and self.shadow == "none"
                and self.outline == 0)


def _spec(layout: Any) -> _Spec:
    if isinstance(layout, _Spec):
        return layout
    get = lambda name: getattr(layout, name)  # noqa: E731
    size = tuple(get("size"))
    kind = size[0]
    if kind == "px":
        width, height = int(size[1]), int(size[2])
        if width < 1 or height < 1:
            raise ValueError(f"size: a fixed size must be at least 1x1, not {width}x{height}")
        size = ("px", width, height)
    elif kind in ("original", "subject"):
        size = (kind, 0, 0)
    else:
        raise ValueError(f"size: unknown kind {kind!r}")
    background = tuple(get("background"))
    if background[0] == "color":
        if len(background) == 4:
            background = (*background, 255)
        background = ("color", *(int(v) for v in background[1:5]))
    elif background[0] not in ("transparent", "blur", "image"):
        raise ValueError(f"background: unknown kind {background[0]!r}")
    fit = str(get("background_fit"))
    shadow = str(get("shadow"))
    if fit not in ("cover", "contain"):
        raise ValueError(f"background_fit: unknown {fit!r}")
    if shadow not in ("none", "drop", "contact"):
        raise ValueError(f"shadow: unknown {shadow!r}")
    scale = get("scale")
    px, py = get("position")
    dx, dy = get("shadow_offset")
    return _Spec(
        crop=bool(get("crop")), padding=_padding(get("padding")), size=size,
        position=(min(max(float(px), 0.0), 1.0), min(max(float(py), 0.0), 1.0)),
        scale=None if scale is None else min(max(float(scale), 0.01), 1.0),
        max_upscale=max(float(get("max_upscale")), 1e-6), background=background,
        blur_radius=max(float(get("blur_radius")), 0.0), background_fit=fit, shadow=shadow,
        shadow_color=_rgb(get("shadow_color")), shadow_opacity=min(max(float(get("shadow_opacity")), 0.0), 1.0),
        shadow_blur=max(float(get("shadow_blur")), 0.0), shadow_offset=(round(dx), round(dy)),
        outline=max(int(get("outline")), 0), outline_color=_rgb(get("outline_color")),
    )


def _rgb(value) -> tuple[int, int, int]:
    r, g, b = (int(v) for v in tuple(value)[:3])
    return r, g, b


def _padding(values) -> tuple[tuple[float, str], ...]:
    """Four (value, unit) pairs, CSS order; 1, 2 or 3 values are expanded as CSS does; a bare number is px."""
    items = [(float(v), "px") if isinstance(v, (int, float)) else (float(v[0]), str(v[1])) for v in values]
    if len(items) == 1:
        items *= 4
    elif len(items) == 2:
        items = items * 2
    elif len(items) == 3:
        items = [*items, items[1]]
    if len(items) != 4 or any(u not in ("px", "%") for _, u in items) or any(v < 0 for v, _ in items):
        raise ValueError(f"padding: 1 to 4 non-negative (value, 'px' | '%') pairs, not {values!r}")
    return tuple(items)


# ------------------------------------------------------------------ geometry


def plan(image_size: tuple[int, int], box: Box, layout: Any) -> Plan:
    """The geometry of ``layout`` for an input of ``image_size`` (w, h) whose subject occupies ``box``.

    - size original, no crop, no scale: the input's canvas, grown where the padding, the
      outline or the shadow would leave it; the subject stays where it is.
    - size subject (or original with crop): the subject box plus padding, grown to hold the
      outline and the shadow.
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
    spec = _spec(layout)
    w, h = image_size
    if box.width < 1 or box.height < 1:
        raise ValueError(f"plan: an empty subject box {box}")
    (pt, ut), (pr, ur), (pb, ub), (pl, ul) = spec.padding
    r = spec.outline
    if spec.size[0] == "px":
        W, H = spec.size[1], spec.size[2]
        px_w = (pl if ul == "px" else 0.0) + (pr if ur == "px" else 0.0)
        px_h = (pt if ut == "px" else 0.0) + (pb if ub == "px" else 0.0)
        pc_w = (pl / 100 if ul == "%" else 0.0) + (pr / 100 if ur == "%" else 0.0)
        pc_h = (pt / 100 if ut == "%" else 0.0) + (pb / 100 if ub == "%" else 0.0)
        if spec.scale is not None:
            s = spec.scale * min(W / box.width, H / box.height)
        else:
            s = min(max(W - px_w, 1.0) / (box.width * (1 + pc_w)), max(H - px_h, 1.0) / (box.height * (1 + pc_h)))
        s = min(s, spec.max_upscale)
        sw = min(W, max(1, round(box.width * s)))
        sh = min(H, max(1, round(box.height * s)))
        pads = [p if u == "px" else p / 100 * side for (p, u), side in zip(spec.padding, (sh, sw, sh, sw))]
        left = _place(pads[3], pads[1], sw, W, spec.position[0])
        top = _place(pads[0], pads[2], sh, H, spec.position[1])
        subject = Box(left, top, sw, sh)
        return Plan((W, H), s, box, subject, *_decorations(subject, spec))
    pads = [round(p if u == "px" else p / 100 * side) for (p, u), side in
            zip(spec.padding, (box.height, box.width, box.height, box.width))]
    block_w, block_h = box.width + pads[3] + pads[1], box.height + pads[0] + pads[2]
    if spec.size[0] == "original" and not spec.crop and spec.scale is None:
        x0, y0 = min(0, box.left - pads[3]), min(0, box.top - pads[0])
        x1, y1 = max(w, box.right + pads[1]), max(h, box.bottom + pads[2])
        subject = Box(box.left - x0, box.top - y0, box.width, box.height)
        W, H = x1 - x0, y1 - y0
    else:
        if spec.scale is None:
            W, H = block_w, block_h
        else:
            if spec.size[0] == "original" and not spec.crop:
                k = max(box.width / w, box.height / h) / spec.scale
                W, H = round(k * w), round(k * h)
            else:
                W, H = round(box.width / spec.scale), round(box.height / spec.scale)
            W, H = max(W, block_w), max(H, block_h)
        left = _place(pads[3], pads[1], box.width, W, spec.position[0])
        top = _place(pads[0], pads[2], box.height, H, spec.position[1])
        subject = Box(left, top, box.width, box.height)
    outline, shadow = _decorations(subject, spec)
    # grow the canvas to hold them
    x0, y0, x1, y1 = 0, 0, W, H
    for b in (outline, shadow):
        if b is not None:
            x0, y0, x1, y1 = min(x0, b.left), min(y0, b.top), max(x1, b.right), max(y1, b.bottom)
    if (x0, y0, x1, y1) != (0, 0, W, H):
        subject = _moved(subject, -x0, -y0)
        outline = None if outline is None else _moved(outline, -x0, -y0)
        shadow = None if shadow is None else _moved(shadow, -x0, -y0)
    return Plan((x1 - x0, y1 - y0), 1.0, box, subject, outline, shadow)


def _place(before: float, after: float, length: int, room: int, at: float) -> int:
    """The start of a ``length`` with ``before``/``after`` padding placed at ``at`` (0..1) of the
    free space, kept within [0, room - length]."""
    start = round(before + at * (room - length - before - after))
    return min(max(start, 0), max(room - length, 0))


def _moved(box: Box, dx: int, dy: int) -> Box:
    return Box(box.left + dx, box.top + dy, box.width, box.height)


def _blur_reach(sigma: float) -> int:
    return math.ceil(BLUR_REACH * sigma) + (1 if sigma > 0 else 0)


def _decorations(subject: Box, spec: _Spec) -> tuple[Box | None, Box | None]:
    """The bounds of the outline and of the shadow, given where the subject lands."""
    r = spec.outline
    silhouette = Box(subject.left - r, subject.top - r, subject.width + 2 * r, subject.height + 2 * r)
    outline = silhouette if r > 0 else None
    if spec.shadow == "none" or spec.shadow_opacity <= 0:
        return outline, None
    e = _blur_reach(spec.shadow_blur)
    if spec.shadow == "drop":
        dx, dy = spec.shadow_offset
        b = silhouette
        return outline, Box(b.left + dx - e, b.top + dy - e, b.width + 2 * e, b.height + 2 * e)
    # contact: the widest ellipse the subject's bottom can ask for (see _contact_ellipse)
    ew = CONTACT_WIDTH * silhouette.width
    half_h = max(1.0, CONTACT_ASPECT * ew / 2)
    extra = math.ceil((CONTACT_WIDTH - 1) * silhouette.width / 2) + 1
    left, right = silhouette.left - extra - e, silhouette.right + extra + e
    top = math.floor(silhouette.bottom - half_h) - 1 - e
    bottom = math.ceil(silhouette.bottom + half_h) + 1 + e
    return outline, Box(left, top, right - left, bottom - top)


# ------------------------------------------------------------------ pixels


def lay_out(subject: np.ndarray, layout: Any, *, photo: np.ndarray | None = None,
            background_image: np.ndarray | None = None) -> Laid:
    """Lay out ``subject`` (HxWx4 uint8 RGBA cut-out, straight colours, fully transparent
    pixels zeroed) as ``layout`` says. ``photo`` (the original HxWx3 RGB) is needed for a blur
    background, ``background_image`` (any HxWx3, or HxWx4) for an image background.

    The identity layout (all defaults) returns ``subject`` itself. Bottom to top: background,
    shadow, outline, subject; composited with straight-alpha "over"."""
    spec = _spec(layout)
    h, w = subject.shape[:2]
    if subject.ndim != 3 or subject.shape[2] != 4 or subject.dtype != np.uint8:
        raise ValueError(f"subject: an HxWx4 uint8 array, not {subject.shape} {subject.dtype}")
    alpha = subject[..., 3]
    found = _rgba_box(subject)
    p = plan((w, h), found or Box(0, 0, w, h), spec)
    if spec.identity:
        return Laid(subject, found, p)
    kind = spec.background[0]
    if kind == "blur" and (photo is None or photo.shape[:2] != (h, w)):
        raise ValueError("background blur: the photo (HxWx3, the subject's size) is needed")
    if kind == "image" and background_image is None:
        raise ValueError("background image: background_image is needed")
    W, H = p.canvas

    band = max(16, BAND_PIXELS // max(W, 1))  # rows composited at a time
    layer = _SubjectLayer(subject, p, band)
    foreground = layer.foreground()
    dilated = _outline_alpha(layer, spec) if spec.outline > 0 and found is not None else None
    shadow = _shadow(layer, dilated, spec) if p.shadow is not None and found is not None else None
    outline = None if dilated is None else _clipped_plane(*dilated, spec.outline_color, W, H)
    del dilated
    background = _Background(spec, p, photo, alpha, background_image, shadow)  # it draws the shadow too
    del shadow

    out = np.empty((H, W, 4), np.uint8)
    for y0 in range(0, H, band):
        y1 = min(H, y0 + band)
        img, empty = background.band(y0, y1)
        if outline is not None:
            empty = _composite(img, empty, outline, y0, y1)
        empty = _composite(img, empty, layer, y0, y1)
        out[y0:y1] = np.asarray(img)
    return Laid(out, foreground, p)


def _composite(img: Image.Image, empty: bool, source, y0: int, y1: int) -> bool:
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


def _clip(x0: int, y0: int, x1: int, y1: int, W: int, H: int) -> tuple[int, int, int, int]:
    return max(x0, 0), max(y0, 0), min(x1, W), min(y1, H)


class _Plane:
    """An alpha plane (uint8) at canvas rect (x0, y0, x1, y1), painted with a constant colour."""

    def __init__(self, alpha: np.ndarray, x0: int, y0: int, color: tuple[int, int, int]):
        self.alpha, self.x0, self.y0, self.color = alpha, x0, y0, color

    def band(self, y0: int, y1: int, empty: bool):
        a0, a1 = max(y0, self.y0), min(y1, self.y0 + self.alpha.shape[0])
        if a1 <= a0 or self.alpha.shape[1] == 0:
            return None
        a = Image.fromarray(np.ascontiguousarray(self.alpha[a0 - self.y0:a1 - self.y0]), "L")
        return _painted(a, self.color, empty), self.x0, a0 - y0


class _UpscaledPlane:
    """A low-resolution alpha plane (L image, cell = f x f canvas pixels from canvas (0, 0)),
    placed at cell (u0, v0), upscaled bilinearly band by band, painted with a constant colour."""

    def __init__(self, low: Image.Image, u0: int, v0: int, f: int, color: tuple[int, int, int], W: int, H: int):
        self.low, self.u0, self.v0, self.f, self.color = low, u0, v0, f, color
        self.x0, self.y0, self.x1, self.y1 = _clip(u0 * f, v0 * f, (u0 + low.width) * f, (v0 + low.height) * f, W, H)

    def band(self, y0: int, y1: int, empty: bool):
        a0, a1 = max(y0, self.y0), min(y1, self.y1)
        if a1 <= a0 or self.x1 <= self.x0:
            return None
        a = _upscale(self.low, self.f, self.u0, self.v0, self.x0, a0, self.x1, a1)
        return _painted(a, self.color, empty), self.x0, a0 - y0


def _upscale(low: Image.Image, f: int, u0: int, v0: int, x0: int, y0: int, x1: int, y1: int) -> Image.Image:
    """Canvas rect (x0, y0, x1, y1) of ``low`` (cells of f x f pixels, its first at cell (u0, v0)), bilinear."""
    box = (x0 / f - u0, y0 / f - v0, x1 / f - u0, y1 / f - v0)
    return low.resize((x1 - x0, y1 - y0), Image.Resampling.BILINEAR, box=box)


class _SubjectLayer:
    """The subject on the canvas: its alpha plane (``alpha`` at canvas ``x0, y0``) and its RGBA bands.

    At scale 1 it is the input moved by whole pixels (no resampling); otherwise the subject's
    box, with a margin for the filter's reach, resampled with LANCZOS on premultiplied colours."""

    def __init__(self, subject: np.ndarray, p: Plan, band: int):
        self.subject = subject
        W, H = p.canvas
        h, w = subject.shape[:2]
        self.sx, self.sy, self.tx, self.ty = p.transform
        if not p.resampled:
            tx, ty = round(self.tx), round(self.ty)
            self.x0, self.y0, self.x1, self.y1 = _clip(tx, ty, tx + w, ty + h, W, H)
            self.alpha = subject[self.y0 - ty:self.y1 - ty, self.x0 - tx:self.x1 - tx, 3]
            self.resampled = False
            # where the subject's own box is (the outline and shadow start from it)
            b = p.subject
            self.core = _clip(b.left, b.top, b.right, b.bottom, W, H)
            return
        self.resampled = True
        s = p.scale
        m = math.ceil(3 * max(1.0, s)) + 1  # LANCZOS reaches 3 input pixels: 3*s output pixels when s > 1
        b = p.subject
        # the canvas rect to resample: the box with its margin, within the canvas and the input's image
        fx0, fy0 = self.tx, self.ty
        fx1, fy1 = self.tx + w * self.sx, self.ty + h * self.sy
        self.x0, self.y0, self.x1, self.y1 = _clip(
            max(b.left - m, math.ceil(fx0)), max(b.top - m, math.ceil(fy0)),
            min(b.right + m, math.floor(fx1)), min(b.bottom + m, math.floor(fy1)), W, H)
        self.reach = 3.0 * max(1.0, 1.0 / s) + 2  # input pixels the filter reads around a box edge
        # the alpha plane, band by band as the RGBA bands will be (same crops, same boxes): the
        # filter over the alpha alone gives exactly the premultiplied resample's alpha
        self.alpha = np.zeros((self.y1 - self.y0, self.x1 - self.x0), np.uint8)
        for y0 in range(0, H, band):
            a0, a1 = max(y0, self.y0), min(y0 + band, self.y1)
            if a1 > a0 and self.x1 > self.x0:
                cx0, cy0, cx1, cy1 = self._crop(a0, a1)
                source = Image.fromarray(np.ascontiguousarray(subject[cy0:cy1, cx0:cx1, 3]), "L")
                self.alpha[a0 - self.y0:a1 - self.y0] = np.asarray(
                    source.resize((self.x1 - self.x0, a1 - a0), _RESAMPLE, box=self._box(a0, a1, cx0, cy0)))
        # the scaled subject's box as planned, and the pixel or two the filter spreads past it
        measured = subject_box(self.alpha)
        x0, y0, x1, y1 = b.left, b.top, b.right, b.bottom
        if measured is not None:
            x0, y0 = min(x0, self.x0 + measured.left), min(y0, self.y0 + measured.top)
            x1, y1 = max(x1, self.x0 + measured.right), max(y1, self.y0 + measured.bottom)
        self.core = _clip(x0, y0, x1, y1, W, H)

    def _crop(self, y0: int, y1: int) -> tuple[int, int, int, int]:
        """The input rect that the canvas rows y0..y1 (columns x0..x1) are resampled from, with the filter's reach."""
        h, w = self.subject.shape[:2]
        return (max(0, math.floor((self.x0 - self.tx) / self.sx - self.reach)),
                max(0, math.floor((y0 - self.ty) / self.sy - self.reach)),
                min(w, math.ceil((self.x1 - self.tx) / self.sx + self.reach)),
                min(h, math.ceil((y1 - self.ty) / self.sy + self.reach)))

    def _box(self, y0: int, y1: int, cx0: int, cy0: int) -> tuple[float, float, float, float]:
        h, w = self.subject.shape[:2]
        return (min(max((self.x0 - self.tx) / self.sx, 0.0), w) - cx0, min(max((y0 - self.ty) / self.sy, 0.0), h) - cy0,
                min(max((self.x1 - self.tx) / self.sx, 0.0), w) - cx0, min(max((y1 - self.ty) / self.sy, 0.0), h) - cy0)

    def foreground(self) -> Box | None:
        if not self.alpha.size:
            return None
        if not self.resampled:
            tx, ty = round(self.tx), round(self.ty)
            box = _rgba_box(self.subject[self.y0 - ty:self.y1 - ty, self.x0 - tx:self.x1 - tx])
        else:
            box = subject_box(self.alpha)
        return None if box is None else _moved(box, self.x0, self.y0)

    def core_alpha(self, margin: int) -> tuple[np.ndarray, int, int]:
        """The subject's alpha within its box (what the outline and shadow grow from), padded by
        ``margin`` zero pixels on every side: (array, canvas x, canvas y of its first pixel)."""
        x0, y0, x1, y1 = self.core
        out = np.zeros((max(y1 - y0, 0) + 2 * margin, max(x1 - x0, 0) + 2 * margin), np.uint8)
        if x1 > x0 and y1 > y0:
            out[margin:margin + y1 - y0, margin:margin + x1 - x0] = \
                self.alpha[y0 - self.y0:y1 - self.y0, x0 - self.x0:x1 - self.x0]
        return out, x0 - margin, y0 - margin

    def band(self, y0: int, y1: int, empty: bool = False):
        a0, a1 = max(y0, self.y0), min(y1, self.y1)
        if a1 <= a0 or self.x1 <= self.x0:
            return None
        if not self.resampled:
            tx, ty = round(self.tx), round(self.ty)
            rows = self.subject[a0 - ty:a1 - ty, self.x0 - tx:self.x1 - tx]
            img = Image.fromarray(np.ascontiguousarray(rows), "RGBA")
        else:
            cx0, cy0, cx1, cy1 = self._crop(a0, a1)
            source = Image.fromarray(np.ascontiguousarray(self.subject[cy0:cy1, cx0:cx1]), "RGBA").convert("RGBa")
            img = source.resize((self.x1 - self.x0, a1 - a0), _RESAMPLE, box=self._box(a0, a1, cx0, cy0))
            img = img.convert("RGBA")
        return img, self.x0, a0 - y0


# ------------------------------------------------------------------ outline


# The outline grows from where the subject is about half opaque: alpha 64..192 -> 0..255. A
# solid border, with the antialiased edge of a crisp subject, even around fur whose alpha fades
# over many pixels (the grey dilation of that alpha would be a translucent, ragged border).
_OUTLINE_LEVELS = [min(max(round((v - 64) * 255 / 128), 0), 255) for v in range(256)]


def _lut(a: np.ndarray, table: list[int]) -> np.ndarray:
    """``table[a]`` of a uint8 plane, by Pillow's point (a lookup in C; numpy's fancy indexing is 5x slower)."""
    return np.asarray(Image.fromarray(np.ascontiguousarray(a), "L").point(table))


def _outline_alpha(layer: _SubjectLayer, spec: _Spec) -> tuple[np.ndarray, int, int]:
    """The outline's alpha, the subject's (levelled) dilated by a disc of ``outline`` px: (array, canvas x, y)."""
    r = spec.outline
    a, x0, y0 = layer.core_alpha(r)
    return dilate_disc(_lut(a, _OUTLINE_LEVELS), r), x0, y0


def _clipped_plane(a: np.ndarray, x0: int, y0: int, color, W: int, H: int) -> _Plane:
    cx0, cy0, cx1, cy1 = _clip(x0, y0, x0 + a.shape[1], y0 + a.shape[0], W, H)
    return _Plane(a[max(cy0 - y0, 0):max(cy1 - y0, 0), max(cx0 - x0, 0):max(cx1 - x0, 0)], cx0, cy0, color)


def dilate_disc(a: np.ndarray, r: int, strip: int = 256) -> np.ndarray:
    """Grey-level dilation of ``a`` (HxW uint8) by the digital disc of radius ``r``:
    out[y, x] = max a[y+dy, x+dx] over dx² + dy² <= r² (outside the array: 0).

    The disc is a stack of rows: the row at dy has half-width isqrt(r² - dy²). Each distinct
    half-width h gives one horizontal running max (window 2h+1, the max of two overlapping
    power-of-two windows from a table built by doubling: log2(2r+1) passes for all of them),
    then every row dy with that half-width is one shifted in-place max. About 2r + log r +
    (distinct h) uint8 passes of numpy, in strips of rows that stay in cache; no float, no
    full-size temporary. (8 ms for r = 24 over a 1760x900 box here.)"""
    if r <= 0:
        return a.copy()
    H, W = a.shape
    half = [math.isqrt(r * r - dy * dy) for dy in range(r + 1)]
    by_half: dict[int, list[int]] = {}
    for dy in range(-r, r + 1):
        by_half.setdefault(half[abs(dy)], []).append(dy)
    levels = max(1, (2 * r + 1).bit_length())
    out = np.zeros_like(a)
    padded_w = W + 2 * r
    for y0 in range(0, H, strip):
        y1 = min(H, y0 + strip)
        s0, s1 = max(0, y0 - r), min(H, y1 + r)
        src = np.zeros((s1 - s0, padded_w), np.uint8)
        src[:, r:r + W] = a[s0:s1]
        tables = [src]  # tables[j][:, x] = max(src[:, x : x + 2**j])
        for j in range(1, levels):
            prev, step = tables[-1], 1 << (j - 1)
            tables.append(np.maximum(prev[:, :-step], prev[:, step:]))
        target = out[y0:y1]
        for hw, dys in by_half.items():
            length = 2 * hw + 1
            j = length.bit_length() - 1
            t, span = tables[j], 1 << j
            start = r - hw  # padded column of x - hw for x = 0
            row_max = np.maximum(t[:, start:start + W], t[:, start + length - span:start + length - span + W])
            for dy in dys:
                ya, yb = max(y0, s0 - dy), min(y1, s1 - dy)
                if yb > ya:
                    np.maximum(target[ya - y0:yb - y0], row_max[ya + dy - s0:yb + dy - s0],
                               out=target[ya - y0:yb - y0])
    return out


# ------------------------------------------------------------------ shadow


def _reduction(sigma: float, least: int = 1) -> int:
    return max(least, int(sigma // _MIN_REDUCED_RADIUS))


class _Shadow:
    """The shadow's alpha at low resolution (cells of f x f canvas pixels), opacity included."""

    def __init__(self, low: Image.Image, u0: int, v0: int, f: int):
        self.low, self.u0, self.v0, self.f = low, u0, v0, f


def _shadow(layer: _SubjectLayer, dilated: tuple[np.ndarray, int, int] | None, spec: _Spec) -> _Shadow | None:
    """The shadow of the subject (of the subject with its outline, when it has one)."""
    sigma = spec.shadow_blur
    f = _reduction(sigma)
    e = _blur_reach(sigma)
    silhouette, x0, y0 = dilated if dilated is not None else layer.core_alpha(0)
    if spec.shadow == "drop":
        dx, dy = spec.shadow_offset
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
        ImageDraw.Draw(big).ellipse([((cx - ew / 2) / f - u0) * ss, ((cy - eh / 2) / f - v0) * ss,
                                     ((cx + ew / 2) / f - u0) * ss - 1, ((cy + eh / 2) / f - v0) * ss - 1], fill=255)
        low = big.reduce(ss)
    if sigma > 0:
        low = low.filter(ImageFilter.GaussianBlur(sigma / f))
    opacity = spec.shadow_opacity
    if opacity < 1:
        low = low.point([round(v * opacity) for v in range(256)])
    if low.getbbox() is None:
        return None
    return _Shadow(low, u0, v0, f)


def _shadow_plane(shadow: _Shadow, color, W: int, H: int) -> _UpscaledPlane:
    return _UpscaledPlane(shadow.low, shadow.u0, shadow.v0, shadow.f, color, W, H)


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


# ------------------------------------------------------------------ background


class _Background:
    """The background, band by band (RGBA images), and whether it is opaque everywhere.

    An opaque smooth background (a colour, or the blurred photo) takes the shadow in at low
    resolution when the shadow's cells are at least 2 pixels: one bilinear upscale then draws
    both (``took_shadow``)."""

    def __init__(self, spec: _Spec, p: Plan, photo, alpha, background_image, shadow: _Shadow | None):
        self.kind = spec.background[0]
        self.W, self.H = p.canvas
        self.took_shadow = False
        self.shadow_plane: _UpscaledPlane | None = None
        # low-res RGB: over the whole canvas (blur), or over the shadow's cells (colour)
        self.low: Image.Image | None = None
        self.color = (0, 0, 0, 0)
        self.opaque = False
        if self.kind == "color":
            self.color = tuple(spec.background[1:5]) if spec.background[4] > 0 else (0, 0, 0, 0)
            self.opaque = self.color[3] == 255
            if self.opaque and shadow is not None and shadow.f >= 2:
                self.low = _shadow_over(Image.new("RGB", shadow.low.size, self.color[:3]), shadow,
                                        shadow.u0, shadow.v0, spec.shadow_color)
                self.low_origin = (shadow.u0, shadow.v0)
                self.f = shadow.f
                self.took_shadow = True
        elif self.kind == "blur":
            self.opaque = True
            f = _reduction(spec.blur_radius, least=2)
            if shadow is not None and shadow.f >= 2:
                f = min(f, shadow.f)
                if shadow.f != f:
                    shadow = _Shadow(*_refit(shadow, f))
            self.f = f
            self.low = _blurred_photo(photo, alpha, p, f, spec.blur_radius / f)
            self.low_origin = (0, 0)
            if shadow is not None and shadow.f == f:
                self.low = _shadow_over(self.low, shadow, 0, 0, spec.shadow_color)
                self.took_shadow = True
        elif self.kind == "image":
            self._image_setup(spec, background_image)
        if shadow is not None and not self.took_shadow:
            self.shadow_plane = _shadow_plane(shadow, spec.shadow_color, self.W, self.H)

    def _image_setup(self, spec: _Spec, image: np.ndarray):
        ih, iw = image.shape[:2]
        W, H = self.W, self.H
        self.image = image
        if spec.background_fit == "cover":
            k = max(W / iw, H / ih)
            self.rect = (0, 0, W, H)
            bw, bh = W / k, H / k
            self.source = ((iw - bw) / 2, (ih - bh) / 2, (iw + bw) / 2, (ih + bh) / 2)
        else:
            k = min(W / iw, H / ih)
            rw, rh = max(1, min(W, round(iw * k))), max(1, min(H, round(ih * k)))
            x0, y0 = (W - rw) // 2, (H - rh) // 2
            self.rect = (x0, y0, x0 + rw, y0 + rh)
            self.source = (0.0, 0.0, float(iw), float(ih))
        has_alpha = image.ndim == 3 and image.shape[2] == 4
        self.opaque = spec.background_fit == "cover" and (not has_alpha or bool(image[..., 3].min() == 255))

    def band(self, y0: int, y1: int) -> tuple[Image.Image, bool]:
        """The background of canvas rows y0..y1, and whether it is transparent everywhere (empty)."""
        W = self.W
        if self.kind == "transparent":
            img, empty = Image.new("RGBA", (W, y1 - y0), 0), True
        elif self.kind == "color":
            img, empty = Image.new("RGBA", (W, y1 - y0), self.color), self.color[3] == 0
            if self.low is not None:
                u0, v0 = self.low_origin
                f = self.f
                x0, a0, x1, a1 = _clip(u0 * f, max(y0, v0 * f), (u0 + self.low.width) * f,
                                       min(y1, (v0 + self.low.height) * f), W, self.H)
                if x1 > x0 and a1 > a0:
                    img.paste(_upscale(self.low, f, u0, v0, x0, a0, x1, a1).convert("RGBA"), (x0, a0 - y0))
        elif self.kind == "blur":
            img, empty = _upscale(self.low, self.f, 0, 0, 0, y0, W, y1).convert("RGBA"), False
        else:
            img, empty = self._image_band(y0, y1), False
        if self.shadow_plane is not None:
            empty = _composite(img, empty, self.shadow_plane, y0, y1)
        return img, empty

    def _image_band(self, y0: int, y1: int) -> Image.Image:
        x0, r0, x1, r1 = self.rect
        a0, a1 = max(y0, r0), min(y1, r1)
        if a1 <= a0:
            return Image.new("RGBA", (self.W, y1 - y0), 0)
        sx0, sy0, sx1, sy1 = self.source
        ky = (sy1 - sy0) / (r1 - r0)
        by0, by1 = sy0 + (a0 - r0) * ky, sy0 + (a1 - r0) * ky
        reach = 2 * max(1.0, ky) + 2  # BICUBIC reaches 2 source pixels (2/k when reducing)
        ih = self.image.shape[0]
        c0, c1 = max(0, math.floor(by0 - reach)), min(ih, math.ceil(by1 + reach))
        rows = np.ascontiguousarray(self.image[c0:c1])
        source = Image.fromarray(rows, "RGBA" if rows.shape[2] == 4 else "RGB")
        part = source.resize((x1 - x0, a1 - a0), _BACKGROUND_RESAMPLE, box=(sx0, by0 - c0, sx1, by1 - c0))
        part = part.convert("RGBA")
        if (x0, a0, x1 - x0, a1 - a0) == (0, y0, self.W, y1 - y0):
            return part
        img = Image.new("RGBA", (self.W, y1 - y0), 0)
        img.paste(part, (x0, a0 - y0))
        return img


def _refit(shadow: _Shadow, f: int) -> tuple[Image.Image, int, int, int]:
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


def _shadow_over(low: Image.Image, shadow: _Shadow, lu0: int, lv0: int, color) -> Image.Image:
    """``low`` (RGB cells, its first at cell (lu0, lv0)) with the shadow's cells over it (opaque "over")."""
    W, H = low.size
    u0, v0 = shadow.u0 - lu0, shadow.v0 - lv0
    x0, y0, x1, y1 = _clip(u0, v0, u0 + shadow.low.width, v0 + shadow.low.height, W, H)
    if x1 <= x0 or y1 <= y0:
        return low
    part = low.crop((x0, y0, x1, y1))
    a = shadow.low.crop((x0 - u0, y0 - v0, x1 - u0, y1 - v0))
    part.paste(Image.new("RGB", part.size, tuple(color)), (0, 0), a)  # paste with a mask over an opaque image is "over"
    low = low.copy()
    low.paste(part, (x0, y0))
    return low


def _blurred_photo(photo: np.ndarray, alpha: np.ndarray, p: Plan, f: int, radius: float) -> Image.Image:
    """The photo's background as the canvas sees it, at 1/f (cells of f x f canvas pixels), with
    the subject removed and the hole filled from around it, Gaussian-blurred by ``radius`` (cells).

    Each input pixel counts with weight 1 - clip(4 * alpha) (the subject, and its soft edge down
    to alpha 1/4, count nothing): the cells are weighted means of what is background (box filter
    on premultiplied colours), and holes are filled by push-pull (a pyramid of weighted means).
    So the subject's colours do not bleed into the background, and its soft edge does not sit on
    a sharp copy of the old background. Where the canvas reaches past the photo, the photo is
    mirrored."""
    W, H = p.canvas
    h, w = photo.shape[:2]
    sx, sy, tx, ty = p.transform
    nu, nv = math.ceil(W / f), math.ceil(H / f)
    # the cells the photo covers, and the input rect they are made from
    ua, ub = max(0, math.ceil(tx / f - 1e-9)), min(nu, math.floor((tx + w * sx) / f + 1e-9))
    va, vb = max(0, math.ceil(ty / f - 1e-9)), min(nv, math.floor((ty + h * sy) / f + 1e-9))
    if ub <= ua:  # the photo is narrower than a cell: the cell it is in
        ua = min(max(math.floor(tx / f), 0), nu - 1)
        ub = ua + 1
    if vb <= va:
        va = min(max(math.floor(ty / f), 0), nv - 1)
        vb = va + 1
    x_of = lambda u: min(max((u * f - tx) / sx, 0.0), float(w))  # noqa: E731
    y_of = lambda v: min(max((v * f - ty) / sy, 0.0), float(h))  # noqa: E731
    weight = [max(0, 255 - 4 * a) for a in range(256)]
    cells_rgba = np.empty((vb - va, ub - ua, 4), np.uint8)
    bx0, bx1 = x_of(ua), x_of(ub)
    cx0, cx1 = max(0, math.floor(bx0) - 1), min(w, math.ceil(bx1) + 1)
    rows_per = max(1, BAND_PIXELS // max(1, (cx1 - cx0)) * sy // f)  # cell rows per strip of ~BAND_PIXELS input pixels
    rows_per = max(1, int(rows_per))
    for v in range(va, vb, rows_per):
        v1 = min(vb, v + rows_per)
        by0, by1 = y_of(v), y_of(v1)
        cy0, cy1 = max(0, math.floor(by0) - 1), min(h, math.ceil(by1) + 1)
        strip = Image.fromarray(photo[cy0:cy1, cx0:cx1], "RGB")
        strip.putalpha(Image.fromarray(np.ascontiguousarray(alpha[cy0:cy1, cx0:cx1]), "L").point(weight))
        # Pillow resamples RGBA premultiplied and divides back: each cell is the weighted mean colour
        cells = strip.resize((ub - ua, v1 - v), Image.Resampling.BOX, box=(bx0 - cx0, by0 - cy0, bx1 - cx0, by1 - cy0))
        cells_rgba[v - va:v1 - va] = np.asarray(cells)
    Wt = cells_rgba[..., 3].astype(np.float32) / np.float32(255)
    P = cells_rgba[..., :3].astype(np.float32) * (Wt / np.float32(255))[..., None]
    if Wt.max() <= 0:  # all subject: nothing is known of the background; the photo itself, blurred
        P, Wt = _cells_of_photo(photo, p, f, (ua, ub, va, vb)), np.ones(Wt.shape, np.float32)
    colour = _push_pull(P, Wt)
    cells = np.clip(colour * np.float32(255) + np.float32(0.5), 0, 255).astype(np.uint8)
    if (ua, va, ub, vb) != (0, 0, nu, nv):
        cells = np.pad(cells, ((va, nv - vb), (ua, nu - ub), (0, 0)), mode="symmetric")
    low = Image.fromarray(cells, "RGB")
    return low.filter(ImageFilter.GaussianBlur(radius)) if radius > 0 else low


def _cells_of_photo(photo, p: Plan, f: int, cells) -> np.ndarray:
    ua, ub, va, vb = cells
    h, w = photo.shape[:2]
    sx, sy, tx, ty = p.transform
    box = (min(max((ua * f - tx) / sx, 0), w), min(max((va * f - ty) / sy, 0), h),
           min(max((ub * f - tx) / sx, 0), w), min(max((vb * f - ty) / sy, 0), h))
    img = Image.fromarray(photo, "RGB").resize((ub - ua, vb - va), Image.Resampling.BOX, box=box)
    return np.asarray(img).astype(np.float32) / np.float32(255)


def _push_pull(P: np.ndarray, Wt: np.ndarray) -> np.ndarray:
    """Colours (h x w x 3 float32) from premultiplied colours ``P`` and weights ``Wt`` (0..1):
    where the weight is 1 the colour itself; elsewhere mixed with the (recursively filled)
    coarser level, upsampled bilinearly (Gortler et al.'s push-pull). Needs some weight > 0."""
    h, w = Wt.shape
    if Wt.min() >= 1.0 or (h == 1 and w == 1):
        return P / np.maximum(Wt, np.float32(1e-6))[..., None]
    hp, wp = h + h % 2, w + w % 2
    Pp = np.zeros((hp, wp, 3), np.float32)
    Wp = np.zeros((hp, wp), np.float32)
    Pp[:h, :w], Wp[:h, :w] = P, Wt
    Ps = Pp[0::2, 0::2] + Pp[1::2, 0::2] + Pp[0::2, 1::2] + Pp[1::2, 1::2]
    Ws = Wp[0::2, 0::2] + Wp[1::2, 0::2] + Wp[0::2, 1::2] + Wp[1::2, 1::2]
    Wc = np.minimum(Ws, np.float32(1))
    Pc = Ps * (Wc / np.maximum(Ws, np.float32(1e-12)))[..., None]
    coarse = _push_pull(Pc, Wc)
    up = np.empty((hp, wp, 3), np.float32)
    for c in range(3):
        band = Image.fromarray(np.ascontiguousarray(coarse[..., c]), "F")
        up[..., c] = np.asarray(band.resize((wp, hp), Image.Resampling.BILINEAR))
    return P + (np.float32(1) - Wt)[..., None] * up[:h, :w]


__all__ = ["ALPHA_THRESHOLD", "Box", "Laid", "Plan", "dilate_disc", "lay_out", "plan", "subject_box"]
