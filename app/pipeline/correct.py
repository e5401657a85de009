"""Correction strokes: a person paints over what must stay (``keep_mask``) or go (``remove_mask``),
and the mask is corrected over the whole region each stroke touches, not only under the brush.

One stroke over a ghost beside the subject should remove the ghost; one over a part the model
left out should bring it back. So the strokes are taken as sure labels for an interactive
segmentation, GrabCut (Rother, Kolmogorov & Blake, 2004; OpenCV's ``cv2.grabCut``): colour models of
subject and background learned from the strokes and the model's own mask (its opaque half as the
probable subject, the rest as the probable background), then a graph cut. Of what it finds, only
the regions connected to a stroke and within :data:`REACH` of one change: the model's mask is kept
everywhere else. The changed regions are made opaque (keep) or transparent (remove), and their
edge is re-solved along the photo's own edges by the guided upscaling (:mod:`app.pipeline.upscale`)
in a band of :data:`BAND` around them. Under the brush itself the stroke's value always wins.
Where the colour models fail (a region would turn more than :data:`MAX_FLIP` of the subject: grey
on grey), a stroke's region is grown instead through the pixels of its own colours that the model
was unsure of (:func:`_alike`), and the edge matting re-solves the mask with the strokes fixed.

The work is done on a grid of at most :data:`GRID_SIDE` px (GrabCut costs ~0.5 s there on two
cores); the full-size steps are a nearest resize of the labels and the strip-wise guided upscaling.
"""

from __future__ import annotations

import cv2
import numpy as np
from PIL import Image, ImageDraw

from app.pipeline.imaging import DecodedImage
from app.pipeline.options import Strokes
from app.pipeline.upscale import guided_upscale

GRID_SIDE = 640  # GrabCut's grid: the photo fitted into this many px
ITERATIONS = 4  # GrabCut's rounds of colour models and cut
REACH = 0.25  # a stroke changes regions at most this share of the grid's longest side away
BAND = 0.012  # the edge re-solved this share of the photo's longest side around a changed region (≥ 3 px)
MAX_FLIP = 0.12  # a stroke's region may turn at most this share of the subject's area to the other side
# (the strokes of tests/test_strokes.py turn 1-8 %; GrabCut failing on the grey llama, 19-58 %)
PAINTED = 128  # a mask image's grey level from which a pixel counts as painted


def rasterize(strokes: Strokes, size: tuple[int, int], source_size: tuple[int, int]) -> np.ndarray:
    """``strokes`` (px of an upload of ``source_size``) painted on an image of ``size``: HxW bool."""
    sx, sy = size[0] / source_size[0], size[1] / source_size[1]
    width = max(1.0, strokes.width * (sx + sy) / 2)
    canvas = Image.new("1", size, 0)
    draw = ImageDraw.Draw(canvas)
    r = width / 2
    for line in strokes.lines:
        points = [(x * sx, y * sy) for x, y in line]
        if len(points) > 1:
            draw.line(points, fill=1, width=max(1, round(width)), joint="curve")
        for x, y in (points[0], points[-1]):  # round ends (and a dot for a single point)
            draw.ellipse((x - r, y - r, x + r, y + r), fill=1)
    return np.asarray(canvas, bool)


def painted(mask: DecodedImage, size: tuple[int, int]) -> np.ndarray:
    """A mask image sent for the strokes (decoded; the upload's size) at ``size``: HxW bool, painted
    where it is light (grey level from :data:`PAINTED`) and not transparent."""
    grey = np.asarray(Image.fromarray(mask.rgb).convert("L"))
    if mask.alpha is not None:
        grey = np.minimum(grey, mask.alpha)
    return np.asarray(Image.fromarray(grey).resize(size, Image.Resampling.NEAREST)) >= PAINTED


def correct(rgb: np.ndarray, alpha: np.ndarray, keep: np.ndarray | None, remove: np.ndarray | None) -> np.ndarray:
    """``alpha`` (HxW uint8) corrected by the ``keep`` and ``remove`` strokes (HxW bool, or None),
    guided by the photo ``rgb`` (HxWx3 uint8). A new array."""
    height, width = alpha.shape
    keep = keep if keep is not None and keep.any() else None
    remove = remove if remove is not None and remove.any() else None
    if keep is None and remove is None:
        return alpha.copy()
    scale = min(1.0, GRID_SIDE / max(width, height))
    grid = (max(1, round(width * scale)), max(1, round(height * scale)))
    small_rgb = np.asarray(Image.fromarray(rgb).resize(grid, Image.Resampling.BOX))
    small_alpha = np.asarray(Image.fromarray(alpha).resize(grid, Image.Resampling.BOX))
    strokes = [(_shrunk(s, grid), value) for s, value in ((remove, 0), (keep, 1)) if s is not None]
    labels = np.where(small_alpha >= 128, cv2.GC_PR_FGD, cv2.GC_PR_BGD).astype(np.uint8)
    for stroke, value in strokes:
        labels[stroke] = cv2.GC_FGD if value else cv2.GC_BGD
    if _both_classes(labels):
        models = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
        cv2.grabCut(np.ascontiguousarray(small_rgb[..., ::-1]), labels, None, *models, ITERATIONS,
                    cv2.GC_INIT_WITH_MASK)
    subject = (labels == cv2.GC_FGD) | (labels == cv2.GC_PR_FGD)
    model_subject = small_alpha >= 128
    reach = REACH * max(grid)
    target = small_alpha.copy()
    changed = np.zeros(grid[::-1], bool)
    fell_back = False
    for stroke, value in strokes:  # remove first, keep last: a keep stroke wins where both reach
        side = subject if value else ~subject
        near = cv2.distanceTransform(np.where(stroke, 0, 255).astype(np.uint8), cv2.DIST_L2, 3) <= reach
        _, regions = cv2.connectedComponents((side & near).astype(np.uint8), connectivity=8)
        touched = np.unique(regions[stroke & side])
        region = np.isin(regions, touched[touched != 0])
        flipped = region & (model_subject != bool(value))  # what the model had on the other side
        if flipped.sum() > MAX_FLIP * max(1, model_subject.sum()):  # the colour models failed (grey on grey)
            region = _alike(small_rgb, small_alpha, stroke, near, value)
            fell_back = True
        target[region] = 255 if value else 0
        changed |= region
    # the changed regions' edge re-solved along the photo's edges (the guided upscaling of the corrected grid),
    # in a band around them; elsewhere the mask stays as it was
    margin = max(1, round(BAND * max(grid)))
    zone = cv2.dilate(changed.astype(np.uint8), np.ones((2 * margin + 1,) * 2, np.uint8))
    zone_full = np.asarray(Image.fromarray(zone * 255).resize((width, height), Image.Resampling.NEAREST)) > 0
    out = alpha.copy()
    if zone_full.any():
        np.copyto(out, guided_upscale(target, rgb), where=zone_full)
    if remove is not None:
        out[remove] = 0
    if keep is not None:
        out[keep] = 255
    if fell_back:  # the edge around what the strokes grew re-solved by the matting, the strokes as sure labels
        from app.pipeline.matte import matte

        out = matte(rgb, out)
        if remove is not None:
            out[remove] = 0
        if keep is not None:
            out[keep] = 255
    return out


def _alike(rgb: np.ndarray, alpha: np.ndarray, stroke: np.ndarray, near: np.ndarray, value: int) -> np.ndarray:
    """Where GrabCut's colour models fail: the pixels connected to ``stroke`` (within ``near``) whose
    colour lies within the stroke's own (each channel between its 2nd and 98th percentile under the
    stroke, 8 levels of slack) and that the model was not sure of (alpha under 250 for a remove
    stroke, over 5 for a keep one): a dark field around a light animal, grown from a stroke on it."""
    colours = rgb[stroke].astype(np.int16)
    lo, hi = np.percentile(colours, 2, axis=0) - 8, np.percentile(colours, 98, axis=0) + 8
    inside = np.all((rgb >= lo) & (rgb <= hi), axis=-1)
    unsure = alpha < 250 if not value else alpha > 5
    _, regions = cv2.connectedComponents((inside & unsure & near | stroke).astype(np.uint8), connectivity=8)
    touched = np.unique(regions[stroke])
    return np.isin(regions, touched[touched != 0])


def _shrunk(stroke: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """A stroke on the grid: every grid pixel it touches (a thin stroke is not lost)."""
    if stroke.shape[::-1] == grid:
        return stroke
    return np.asarray(Image.fromarray(stroke.astype(np.uint8) * 255).resize(grid, Image.Resampling.BOX)) > 0


def _both_classes(labels: np.ndarray) -> bool:
    """GrabCut needs samples of both: some subject and some background."""
    subject = np.isin(labels, (cv2.GC_FGD, cv2.GC_PR_FGD))
    return bool(subject.any() and not subject.all())
