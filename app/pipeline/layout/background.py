"""The background: transparent, a colour, the photo blurred, or an image (cover or contain).

Blur: the photo with the subject removed, not the photo: each pixel counts with a weight
1 - clip(4 alpha) (Pillow's premultiplied box reduction gives weighted means), the hole is filled
by push-pull (a pyramid of weighted means), then blurred on a copy reduced by f (at least 2; see
:func:`planes.reduction`) and scaled back bilinearly. No colour of the subject bleeds into it,
and no sharp copy of the old background stays under the subject's soft edge.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageFilter

from app.pipeline.layout.geometry import Plan, clip
from app.pipeline.layout.planes import BAND_PIXELS, UpscaledPlane, composite, reduction, upscale
from app.pipeline.layout.shadow import Shadow, refit, shadow_over, shadow_plane

if TYPE_CHECKING:
    from app.pipeline.options import Layout

_BACKGROUND_RESAMPLE = Image.Resampling.BICUBIC  # an image background's: smooth, antialiased, 2/3 of LANCZOS's cost


class BackgroundLayer:
    """The background, band by band (RGBA images), and whether it is opaque everywhere.

    An opaque smooth background (a colour, or the blurred photo) takes the shadow in at low
    resolution when the shadow's cells are at least 2 pixels: one bilinear upscale then draws
    both (``took_shadow``)."""

    def __init__(self, layout: Layout, p: Plan, photo, alpha, background_image, shadow: Shadow | None):
        self.kind = layout.background[0]
        self.W, self.H = p.canvas
        self.took_shadow = False
        self.shadow_plane: UpscaledPlane | None = None
        # low-res RGB: over the whole canvas (blur), or over the shadow's cells (colour)
        self.low: Image.Image | None = None
        self.color = (0, 0, 0, 0)
        self.opaque = False
        if self.kind == "color":
            self.color = tuple(layout.background[1:5]) if layout.background[4] > 0 else (0, 0, 0, 0)
            self.opaque = self.color[3] == 255
            if self.opaque and shadow is not None and shadow.f >= 2:
                self.low = shadow_over(Image.new("RGB", shadow.low.size, self.color[:3]), shadow,
                                       shadow.u0, shadow.v0, layout.shadow_color)
                self.low_origin = (shadow.u0, shadow.v0)
                self.f = shadow.f
                self.took_shadow = True
        elif self.kind == "blur":
            self.opaque = True
            f = reduction(layout.blur_radius, least=2)
            if shadow is not None and shadow.f >= 2:
                f = min(f, shadow.f)
                if shadow.f != f:
                    shadow = Shadow(*refit(shadow, f))
            self.f = f
            self.low = _blurred_photo(photo, alpha, p, f, layout.blur_radius / f)
            self.low_origin = (0, 0)
            if shadow is not None and shadow.f == f:
                self.low = shadow_over(self.low, shadow, 0, 0, layout.shadow_color)
                self.took_shadow = True
        elif self.kind == "image":
            self._image_setup(layout, background_image)
        if shadow is not None and not self.took_shadow:
            self.shadow_plane = shadow_plane(shadow, layout.shadow_color, self.W, self.H)

    def _image_setup(self, layout: Layout, image: np.ndarray):
        ih, iw = image.shape[:2]
        W, H = self.W, self.H
        self.image = image
        if layout.background_fit == "cover":
            k = max(W / iw, H / ih)
            self.rect = (0, 0, W, H)
            bw, bh = W / k, H / k
            # clamped: W / (W / iw) can come out a hair over iw, and Pillow refuses a negative box
            self.source = (max(0.0, (iw - bw) / 2), max(0.0, (ih - bh) / 2), min(float(iw), (iw + bw) / 2),
                           min(float(ih), (ih + bh) / 2))
        else:
            k = min(W / iw, H / ih)
            rw, rh = max(1, min(W, round(iw * k))), max(1, min(H, round(ih * k)))
            x0, y0 = (W - rw) // 2, (H - rh) // 2
            self.rect = (x0, y0, x0 + rw, y0 + rh)
            self.source = (0.0, 0.0, float(iw), float(ih))
        has_alpha = image.ndim == 3 and image.shape[2] == 4
        self.opaque = layout.background_fit == "cover" and (not has_alpha or bool(image[..., 3].min() == 255))

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
                x0, a0, x1, a1 = clip(u0 * f, max(y0, v0 * f), (u0 + self.low.width) * f,
                                      min(y1, (v0 + self.low.height) * f), W, self.H)
                if x1 > x0 and a1 > a0:
                    img.paste(upscale(self.low, f, u0, v0, x0, a0, x1, a1).convert("RGBA"), (x0, a0 - y0))
        elif self.kind == "blur":
            img, empty = upscale(self.low, self.f, 0, 0, 0, y0, W, y1).convert("RGBA"), False
        else:
            img, empty = self._image_band(y0, y1), False
        if self.shadow_plane is not None:
            empty = composite(img, empty, self.shadow_plane, y0, y1)
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
