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
was unsure of (:func:`_alike`), and the edge matting re-solves the mask with the strokes fixed,
there and where the model was sure of the subject near a remove stroke in the stroke's own colours
(:func:`_reopened`: the dark field between a grey llama's ears). That first solve works on the band
the model's vague mask left; the matting then solves once more, on the band of the edge it found
(:data:`FALLBACK_SOLVES`).

The work is done on a grid of at most :data:`GRID_SIDE` px (GrabCut costs 0.3–0.45 s there on two
cores, 2 s on the grey llama); the full-size steps are a nearest resize of the labels and the
strip-wise guided upscaling.
"""

from __future__ import annotations

import cv2
import numpy as np
from PIL import Image, ImageDraw

from app.pipeline.imaging import DecodedImage
from app.pipeline.matte import SURE_SUBJECT, matte
from app.pipeline.options import Strokes
from app.pipeline.upscale import guided_upscale

GRID_SIDE = 640  # GrabCut's grid: the photo fitted into this many px
ITERATIONS = 2  # GrabCut's rounds of colour models and cut (4: ~30 % longer, no better cut-outs: docs/quality.md)
REACH = 0.25  # a stroke changes regions at most this share of the grid's longest side away
BAND = 0.012  # the edge re-solved this share of the photo's longest side around a changed region (≥ 3 px)
MAX_FLIP = 0.12  # a stroke's region may turn at most this share of the subject's area to the other side
# (the strokes of tests/test_strokes.py turn 1-8 %; GrabCut failing on the grey llama, 19-58 %)
PAINTED = 128  # a mask image's grey level from which a pixel counts as painted
GRABCUT_SEED = 0
# Once a stroke fell back, the matting also re-solves the model's sure subject within this share of
# the longest side of a remove stroke, where the colours are the stroke's own (:func:`_reopened`).
# The llama (int8) with tests/test_strokes.py's LLAMA_AROUND: SAD 33.0 without; 28.3 / 27.3 / 27.2 /
# 27.4 / 28.1 at 0.03 / 0.04 / 0.05 / 0.06 / 0.08; with its LLAMA strokes 41.2 -> 37.8 at 0.05.
# Reopening every sure pixel there, whatever its colour, fell off a cliff past 0.04 (24.7 at 0.04,
# 46.7 at 0.06: the matting then has no anchor in the fur and lets it go).
REOPEN = 0.05
# Solves of the matting once a stroke fell back: the first on the band the model's mask leaves (its
# vague glow, the strokes' growth), the next on the band of the edge the first found, the sure parts
# it settled (exactly 0 or 255) fixed. The llama (fp32) with LLAMA_AROUND: SAD 27.4 / 24.6 / 24.3 at
# 1 / 2 / 3 solves (int8 27.2 / 24.4), with its LLAMA strokes 37.5 / 31.8 / 32.0; each solve ~0.15 s.
# A second solve on every default request (no strokes) is no gain: mean SAD 26.79 -> 26.59 on the
# 13 AM-2k photos, but worse on 8 of them (docs/quality.md#correction-strokes).
FALLBACK_SOLVES = 2


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
        # GrabCut seeds its colour models by k-means from the thread's OpenCV random generator: seeded
        # here, the same request gives the same cut-out whatever the process did before (the rabbit's
        # SAD was 11.1 or 12.2 with the order of the requests before it)
        cv2.setRNGSeed(GRABCUT_SEED)
        cv2.grabCut(np.ascontiguousarray(small_rgb[..., ::-1]), labels, None, *models, ITERATIONS,
                    cv2.GC_INIT_WITH_MASK)
    subject = (labels == cv2.GC_FGD) | (labels == cv2.GC_PR_FGD)
    model_subject = small_alpha >= 128
    reach = REACH * max(grid)
    target = small_alpha.copy()
    changed = np.zeros(grid[::-1], bool)
    fell_back = False
    distances = {}  # each stroke's distance on the grid, by value (the remove strokes' reopen the matting)
    for stroke, value in strokes:  # remove first, keep last: a keep stroke wins where both reach
        side = subject if value else ~subject
        distances[value] = cv2.distanceTransform(np.where(stroke, 0, 255).astype(np.uint8), cv2.DIST_L2, 3)
        near = distances[value] <= reach
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
    _brushed(out, keep, remove)
    if fell_back:  # the edge around what the strokes grew re-solved by the matting, the strokes as sure labels
        reopen = None if remove is None else _reopened(rgb, out, remove, distances[0])
        for solve in range(FALLBACK_SOLVES):  # then again, on the band of the edge the first solve found
            out = matte(rgb, out, reopen if solve == 0 else None)
            _brushed(out, keep, remove)
    return out


def _brushed(alpha: np.ndarray, keep: np.ndarray | None, remove: np.ndarray | None) -> None:
    """Under the brush the stroke's value wins: ``alpha`` transparent under ``remove``, then opaque under
    ``keep`` (in place)."""
    if remove is not None:
        alpha[remove] = 0
    if keep is not None:
        alpha[keep] = 255


def _alike(rgb: np.ndarray, alpha: np.ndarray, stroke: np.ndarray, near: np.ndarray, value: int) -> np.ndarray:
    """Where GrabCut's colour models fail: the pixels connected to ``stroke`` (within ``near``) whose
    colour lies within the stroke's own (:func:`_colours_of`) and that the model was not sure of
    (alpha under 250 for a remove stroke, over 5 for a keep one): a dark field around a light
    animal, grown from a stroke on it."""
    inside = _colours_of(rgb, stroke)(rgb)
    unsure = alpha < 250 if not value else alpha > 5
    _, regions = cv2.connectedComponents((inside & unsure & near | stroke).astype(np.uint8), connectivity=8)
    touched = np.unique(regions[stroke])
    return np.isin(regions, touched[touched != 0])


def _colours_of(rgb: np.ndarray, stroke: np.ndarray):
    """A test of whether pixels have the ``stroke``'s colours: each channel between its 2nd and 98th
    percentile under the stroke, 8 levels of slack (HxWx3 uint8 -> HxW bool)."""
    colours = rgb[stroke].astype(np.int16)
    lo, hi = np.percentile(colours, 2, axis=0) - 8, np.percentile(colours, 98, axis=0) + 8
    return lambda pixels: np.all((pixels >= lo) & (pixels <= hi), axis=-1)


def _reopened(rgb: np.ndarray, alpha: np.ndarray, remove: np.ndarray, distance: np.ndarray) -> np.ndarray:
    """What the matting re-solves besides the mask's unsure band once a stroke fell back: the pixels
    within :data:`REOPEN` of the ``remove`` strokes (HxW bool; ``distance``: each grid pixel's from
    them), in their own colours, that the model was sure were subject. The grey llama's model puts the dark
    field between its ears and beside its cheek in the sure subject, out of the band's reach; the
    light fur beside it stays sure, so the matting keeps its anchors, and the dark insides of the
    ears further in are not touched. Only remove strokes: the same near a keep stroke
    (the sure background in its colours) changed none of tests/test_strokes.py's cut-outs but the
    llama's, for the worse (SAD 27.4 -> 27.8, fp32)."""
    height, width = alpha.shape
    reopen = np.zeros((height, width), bool)
    near = np.asarray(Image.fromarray(((distance <= REOPEN * max(distance.shape)) * 255).astype(np.uint8))
                      .resize((width, height), Image.Resampling.NEAREST)) > 0
    rows, cols = np.flatnonzero(near.any(1)), np.flatnonzero(near.any(0))
    if rows.size:
        box = slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)
        reopen[box] = near[box] & (alpha[box] > SURE_SUBJECT) & _colours_of(rgb, remove)(rgb[box])
    return reopen


def _shrunk(stroke: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """A stroke on the grid: every grid pixel it touches (a thin stroke is not lost)."""
    if stroke.shape[::-1] == grid:
        return stroke
    return np.asarray(Image.fromarray(stroke.astype(np.uint8) * 255).resize(grid, Image.Resampling.BOX)) > 0


def _both_classes(labels: np.ndarray) -> bool:
    """GrabCut needs samples of both: some subject and some background."""
    subject = np.isin(labels, (cv2.GC_FGD, cv2.GC_PR_FGD))
    return bool(subject.any() and not subject.all())
