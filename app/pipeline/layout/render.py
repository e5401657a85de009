"""The pixels of a layout: background, shadow, outline, subject (bottom to top), band by band."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from app.pipeline.layout.background import BackgroundLayer
from app.pipeline.layout.framing import SubjectLayer
from app.pipeline.layout.geometry import Box, Plan, plan, rgba_box, subject_box
from app.pipeline.layout.outline import clipped_plane, outline_alpha, thin, trimmed
from app.pipeline.layout.planes import BAND_PIXELS, composite
from app.pipeline.layout.shadow import shadow_of

if TYPE_CHECKING:
    from app.pipeline.options import Layout


@dataclass(frozen=True)
class Composition:
    """The laid-out image: HxWx4 uint8 RGBA, straight alpha (opaque wherever the background is),
    and the subject's box in it (what X-Foreground-* report), measured on the laid-out subject's
    own alpha (the outline and the shadow are not part of it; an opaque background neither).
    ``foreground`` is None when no pixel of the subject reaches :data:`ALPHA_THRESHOLD`."""

    image: np.ndarray
    foreground: Box | None
    plan: Plan


def lay_out(subject: np.ndarray, layout: Layout, *, photo: np.ndarray | None = None,
            background_image: np.ndarray | None = None) -> Composition:
    """Lay out ``subject`` (HxWx4 uint8 RGBA cut-out, straight colours, fully transparent
    pixels zeroed) as ``layout`` says. ``photo`` (the original HxWx3 RGB) is needed for a blur
    background, ``background_image`` (any HxWx3, or HxWx4) for an image background.

    A layout that neither frames nor decorates (:func:`_identity`) returns ``subject`` itself.
    Bottom to top: background, shadow, outline, subject; composited with straight-alpha "over".
    With an outline, the subject is what lies inside it (:func:`outline.trimmed`, the box and the
    plan of that), its soft edge's colours its own (:func:`framing.pulled`)."""
    h, w = subject.shape[:2]
    if subject.ndim != 3 or subject.shape[2] != 4 or subject.dtype != np.uint8:
        raise ValueError(f"subject: an HxWx4 uint8 array, not {subject.shape} {subject.dtype}")
    alpha = subject[..., 3]
    found = rgba_box(subject)
    p = plan((w, h), found or Box(0, 0, w, h), layout)
    if _identity(layout):
        return Composition(subject, found, p)
    kind = layout.background[0]
    if kind == "blur" and (photo is None or photo.shape[:2] != (h, w)):
        raise ValueError("background blur: the photo (HxWx3, the subject's size) is needed")
    if kind == "image" and background_image is None:
        raise ValueError("background image: background_image is needed")
    trim, pull, dilated = None, 0, None
    if layout.outline > 0 and found is not None:
        r = max(1, round(layout.outline / p.scale))  # the outline's width in input pixels
        trim, grown = trimmed(alpha, found, r)
        found = subject_box(trim)
        p = plan((w, h), found or Box(0, 0, w, h), layout)
        pull = r + thin(r) + 1  # the outline reaches r + thin(r) past the subject's body: the colours, as far
        if not p.resampled and found is not None:  # the outline grown in the input, moved
            dilated = grown[0], grown[1] + round(p.transform[2]), grown[2] + round(p.transform[3])
    W, H = p.canvas

    band = max(16, BAND_PIXELS // max(W, 1))  # rows composited at a time
    layer = SubjectLayer(subject, p, band, trim, pull)
    foreground = layer.foreground()
    if dilated is None and layout.outline > 0 and found is not None:
        dilated = outline_alpha(layer, layout)
    shadow = shadow_of(layer, dilated, layout) if p.shadow is not None and found is not None else None
    outline = None if dilated is None else clipped_plane(*dilated, layout.outline_color, W, H)
    del dilated
    background = BackgroundLayer(layout, p, photo, alpha, background_image, shadow)  # it draws the shadow too
    del shadow

    out = np.empty((H, W, 4), np.uint8)
    for y0 in range(0, H, band):
        y1 = min(H, y0 + band)
        img, empty = background.band(y0, y1)
        if outline is not None:
            empty = composite(img, empty, outline, y0, y1)
        empty = composite(img, empty, layer, y0, y1)
        out[y0:y1] = np.asarray(img)
    return Composition(out, foreground, p)


def _identity(layout: Layout) -> bool:
    """No framing, no shadow, no outline, a transparent background: the subject is its own output."""
    return (not layout.crop and all(v == 0 for v, _ in layout.padding) and layout.size[0] == "original"
            and layout.scale is None and layout.background[0] == "transparent" and layout.shadow == "none"
            and layout.outline == 0)
