"""Framing's pixels: the subject placed on the canvas.

At scale 1 (every size but a fixed one) the subject is moved by whole pixels, never resampled;
otherwise its box (plus the filter's reach) is resampled with LANCZOS on premultiplied colours
(mode "RGBa"), as app/pipeline/imaging.py scales inputs.

Over an outline, the colours of the subject's soft edge are the subject's own (:func:`pulled`):
the photo's colours there are mixed with its old background, which shows as a dark or coloured
halo between the subject and a white border.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageFilter

from app.pipeline.layout.geometry import Box, Plan, clip, moved, rgba_box, subject_box

_RESAMPLE = Image.Resampling.LANCZOS  # the subject's scaling, as app/pipeline/imaging.py

# Pulled colours: a pixel of alpha a keeps (a - 192) / 63 of its own colour (clipped to 0..1); the
# rest is the mean colour of the subject's pixels around it, each weighted the same way (those at
# least 3/4 opaque: a fur's edge 80 % opaque still carries a fifth of the old background).
_OWN = [min(max(round((v - 192) * 255 / 63), 0), 255) for v in range(256)]
# The near mean (a radius of an eighth of the far one's) where a quarter of its window weighs
# (fully: the fur's own shade nearby), else the far one; the far one where it weighs 1/8 (fully).
_NEAR_TRUST = [min(255, 4 * v) for v in range(256)]
_FAR_TRUST = [min(255, 8 * v) for v in range(256)]


class SubjectLayer:
    """The subject on the canvas: its alpha plane (``alpha`` at canvas ``x0, y0``) and its RGBA bands.

    At scale 1 it is the input moved by whole pixels (no resampling); otherwise the subject's
    box, with a margin for the filter's reach, resampled with LANCZOS on premultiplied colours.
    ``alpha`` (the input's size) replaces the subject's own (a trimmed one); ``pull`` > 0: the
    colours at its soft edge are :func:`pulled` from the subject within that many input pixels."""

    def __init__(self, subject: np.ndarray, p: Plan, band: int, alpha: np.ndarray | None = None, pull: int = 0):
        self.subject = subject
        self.own_alpha = alpha
        self.pull = pull
        source_alpha = subject[..., 3] if alpha is None else alpha
        W, H = p.canvas
        h, w = subject.shape[:2]
        self.sx, self.sy, self.tx, self.ty = p.transform
        if not p.resampled:
            tx, ty = round(self.tx), round(self.ty)
            self.x0, self.y0, self.x1, self.y1 = clip(tx, ty, tx + w, ty + h, W, H)
            self.alpha = source_alpha[self.y0 - ty:self.y1 - ty, self.x0 - tx:self.x1 - tx]
            self.resampled = False
            # where the subject's own box is (the outline and shadow start from it)
            b = p.subject
            self.core = clip(b.left, b.top, b.right, b.bottom, W, H)
            return
        self.resampled = True
        s = p.scale
        m = math.ceil(3 * max(1.0, s)) + 1  # LANCZOS reaches 3 input pixels: 3*s output pixels when s > 1
        b = p.subject
        # the canvas rect to resample: the box with its margin, within the canvas and the input's image
        fx0, fy0 = self.tx, self.ty
        fx1, fy1 = self.tx + w * self.sx, self.ty + h * self.sy
        self.x0, self.y0, self.x1, self.y1 = clip(
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
                source = Image.fromarray(np.ascontiguousarray(source_alpha[cy0:cy1, cx0:cx1]), "L")
                self.alpha[a0 - self.y0:a1 - self.y0] = np.asarray(
                    source.resize((self.x1 - self.x0, a1 - a0), _RESAMPLE, box=self._box(a0, a1, cx0, cy0)))
        # the scaled subject's box as planned, and the pixel or two the filter spreads past it
        measured = subject_box(self.alpha)
        x0, y0, x1, y1 = b.left, b.top, b.right, b.bottom
        if measured is not None:
            x0, y0 = min(x0, self.x0 + measured.left), min(y0, self.y0 + measured.top)
            x1, y1 = max(x1, self.x0 + measured.right), max(y1, self.y0 + measured.bottom)
        self.core = clip(x0, y0, x1, y1, W, H)

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
        if not self.resampled and self.own_alpha is None:
            tx, ty = round(self.tx), round(self.ty)
            box = rgba_box(self.subject[self.y0 - ty:self.y1 - ty, self.x0 - tx:self.x1 - tx])
        else:
            box = subject_box(self.alpha)
        return None if box is None else moved(box, self.x0, self.y0)

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
            img = Image.fromarray(self._rows(a0 - ty, a1 - ty, self.x0 - tx, self.x1 - tx), "RGBA")
        else:
            cx0, cy0, cx1, cy1 = self._crop(a0, a1)
            source = Image.fromarray(self._rows(cy0, cy1, cx0, cx1), "RGBA").convert("RGBa")
            img = source.resize((self.x1 - self.x0, a1 - a0), _RESAMPLE, box=self._box(a0, a1, cx0, cy0))
            img = img.convert("RGBA")
        return img, self.x0, a0 - y0

    def _rows(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """The input's RGBA in rows y0..y1, columns x0..x1 (a copy where it differs): its colours
        (pulled where asked: in the runs of columns that hold a soft pixel, from the pixels around
        them too) and its alpha (or the one given instead)."""
        rows = self.subject[y0:y1, x0:x1]
        if self.pull or self.own_alpha is not None:
            rows = rows.copy()
        if self.pull:
            h, w = self.subject.shape[:2]
            q = _cell(self.pull)
            m = self.pull + 2 * q  # what the far mean reads, its cells and their interpolation included
            b0, b1 = max(0, (y0 - m) // q * q), min(h, y1 + m)  # blocks on the one grid of cells: no seams
            a = rows[..., 3]
            soft = np.flatnonzero(((a > 0) & (a < 255)).any(axis=0)) + x0
            if soft.size:
                runs = np.split(soft, np.flatnonzero(np.diff(soft) > 2 * m) + 1)  # runs closer than 2m: one block
                for run in runs:
                    sa, sb = int(run[0]), int(run[-1]) + 1
                    c0, c1 = max(0, (sa - m) // q * q), min(w, sb + m)
                    block = pulled(np.ascontiguousarray(self.subject[b0:b1, c0:c1]), self.pull)
                    rows[:, sa - x0:sb - x0, :3] = block[y0 - b0:y1 - b0, sa - c0:sb - c0, :3]
        if self.own_alpha is not None:
            rows[..., 3] = self.own_alpha[y0:y1, x0:x1]
        return np.ascontiguousarray(rows)


def _cell(radius: int) -> int:
    """The far mean runs on cells of this many pixels a side (a radius of 4 cells), then is scaled
    back bilinearly: as smooth, at 1/cell² the cost."""
    return max(1, radius // 4)


def pulled(rgba: np.ndarray, radius: int) -> np.ndarray:
    """``rgba`` (HxWx4 uint8) with the colours of its soft edge made the subject's own: each pixel's
    mixed with the weighted mean colour of the subject around it (:data:`_OWN`: only pixels over
    3/4 opaque count, and more the more opaque), the near mean (radius/8) where it is known, else
    the far one (``radius``); where neither is, and where alpha is 0, the pixel's own. Box means
    of premultiplied uint8 (Pillow, "RGBa"): no float plane, one pass over each pixel per mean."""
    img = Image.fromarray(rgba, "RGBA")
    own = img.getchannel("A").point(_OWN)
    weighted = img.copy()
    weighted.putalpha(own)
    weighted = weighted.convert("RGBa")
    near = weighted.filter(ImageFilter.BoxBlur(max(1, radius // 8))).convert("RGBA")
    q = _cell(radius)
    w, h = img.size
    far = weighted.reduce(q).filter(ImageFilter.BoxBlur(radius / q))
    far = far.resize((w, h), Image.Resampling.BILINEAR, box=(0, 0, w / q, h / q)).convert("RGBA")
    mean = Image.composite(near, far, near.getchannel("A").point(_NEAR_TRUST))
    keep = np.maximum(np.asarray(own), 255 - np.asarray(far.getchannel("A").point(_FAR_TRUST)))
    keep[rgba[..., 3] == 0] = 255
    out = np.array(Image.composite(img, mean, Image.fromarray(keep, "L")))
    out[..., 3] = rgba[..., 3]
    return out
