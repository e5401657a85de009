"""How far to trust a mask, from the mask alone: a number in [0, 1] for routing doubtful cut-outs
to a person (``X-Mask-Confidence``; /api/v2/process's ``metadata.mask_confidence``).

A segmentation model is unsure where its mask is neither 0 nor 255: there the pixel's value a
(0..1) carries the uncertainty 4a(1 - a), 1 at a = 1/2 and 0 at either end. A good cut-out is
decided everywhere but along a thin antialiased edge; a doubtful one leaves broad parts of the
subject undecided: fur it half believes in, a background object it half takes for the subject,
a limb it half lost. So the signal is the mean uncertainty within the subject's box (the pixels
at alpha 8/255 and more, as ``layout.subject_box``), a share of the subject's own area, whatever
the subject's size in the photo:

    confidence = 1 - min(1, mean uncertainty in the box / UNDECIDED_AT_ZERO)

Two masks are not cut-outs at all and score 0: no subject (no pixel at 8/255 or more), and a
subject that is the whole photo (FULL_FRAME of its pixels at 1/2 or more: the model found nothing
to remove).

On the quality set (``make quality``, 13 animal photos with true mattes, u2netp) the mean
uncertainty in the box ran from 0.03 on the best cut-outs to 0.10 on the worst, and ranked them
by their error (SAD) with a Spearman correlation of about -0.9; README gives the figures and a
threshold suggestion.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from app.pipeline.layout import subject_box
from app.pipeline.morphology import dilate, erode, region_areas

UNDECIDED_AT_ZERO = 0.2  # a box whose pixels are, on average, this undecided scores 0
FULL_FRAME = 0.98  # a "subject" covering this share of the photo: nothing was cut out

# uncertainty 4a(1 - a) of each 8-bit value: the mean of a histogram weighted by it
_UNCERTAINTY = np.array([4 * (v / 255) * (1 - v / 255) for v in range(256)])


def mask_confidence(alpha: np.ndarray) -> float:
    """The confidence in [0, 1] (rounded to 3 places) of an HxW uint8 mask; see the module's text."""
    if alpha.ndim != 2 or alpha.dtype != np.uint8:
        raise ValueError(f"alpha: an HxW uint8 array, not {alpha.shape} {alpha.dtype}")
    box = subject_box(alpha)
    if box is None:
        return 0.0
    # Pillow's histogram of the box: np.bincount would hold the 12 MP box as int64 (100 MB)
    counts = np.array(Image.fromarray(alpha, "L").crop((box.left, box.top, box.right, box.bottom)).histogram())
    if counts[128:].sum() >= FULL_FRAME * alpha.size:
        return 0.0
    undecided = float(counts @ _UNCERTAINTY) / (box.width * box.height)
    return round(max(0.0, 1.0 - undecided / UNDECIDED_AT_ZERO), 3)


# -- the reasons ----------------------------------------------------------------------------------
# What a person can look for, each read on a grid of WARNING_SIDE px (a 12 MP mask costs no more
# than a small one). Calibrated on the quality set with the default edge matting (docs/quality.md).
WARNING_SIDE = 640
UNDECIDED_SHARE = 0.10  # broad half-transparent areas, as a share of the subject's area
DISCONNECTED_SHARE = 0.005  # a separate part at least this share of the main one's area
LOW_CONTRAST_SHARE = 0.25  # the share of the outline where the photo barely changes across it
LOW_CONTRAST = 30.0  # ...judged by the distance of the mean colours inside and outside (0-255 RGB)


def mask_warnings(rgb: np.ndarray, alpha: np.ndarray) -> tuple[str, ...]:
    """Why a person should look at this cut-out, as words (``X-Mask-Warnings``), none when it looks clean:

    - ``undecided-regions``: broad areas neither subject nor background (a ghost beside the subject,
      a part it half lost), over :data:`UNDECIDED_SHARE` of the subject's area once the thin edge
      is left out (an opening of 7 px);
    - ``disconnected-regions``: parts separate from the main subject, each over
      :data:`DISCONNECTED_SHARE` of it (a second animal, or a stray object);
    - ``low-contrast-edge``: over :data:`LOW_CONTRAST_SHARE` of the outline runs where the photo's
      colours barely change across it (a dark dog on a dark floor): the edge is a guess there;
    - ``no-subject``: nothing was found.
    """
    height, width = alpha.shape
    scale = min(1.0, WARNING_SIDE / max(height, width))
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    a = np.asarray(Image.fromarray(alpha, "L").resize(size, Image.Resampling.BOX)) if scale < 1 else alpha
    subject = a >= 128
    area = int(subject.sum())
    if area == 0:
        return ("no-subject",)
    found = []
    soft = (a >= 32) & (a <= 223)
    broad = dilate(erode(soft, 7, border=True), 7)  # an opening: the thin edge left out
    if broad.sum() > UNDECIDED_SHARE * area:
        found.append("undecided-regions")
    areas = region_areas(subject)
    if areas.size > 1 and areas[1] >= DISCONNECTED_SHARE * areas[0]:
        found.append("disconnected-regions")
    colours = np.asarray(Image.fromarray(rgb, "RGB").resize(size, Image.Resampling.BOX)) if scale < 1 else rgb
    if _low_contrast_share(colours, subject) > LOW_CONTRAST_SHARE:
        found.append("low-contrast-edge")
    return tuple(found)


def _low_contrast_share(rgb: np.ndarray, subject: np.ndarray) -> float:
    """The share of the subject's outline where the mean colour just inside (9 px in) and just outside
    it, each over a 31 px neighbourhood, are closer than :data:`LOW_CONTRAST`. The neighbourhoods'
    sums are wanted on the outline only: each is read there from a summed-area table of its plane
    (borders reflected, the edge pixel repeated, as morphology.BoxMean's). The sums are integers
    (weights 0 or 1, colours 0-255), exact in any order, so the means are BoxMean's to the bit, in a
    third of its time."""
    inside = erode(subject, 9, border=True)
    outside = ~dilate(subject, 9)
    outline = dilate(subject, 3) & ~erode(subject, 3, border=True)  # the morphological gradient
    rows, cols = np.nonzero(outline)
    if rows.size == 0:
        return 0.0
    window = _Windows(subject.shape, rows, cols, NEIGHBOURHOOD)
    weight_in, weight_out = window.means(inside), window.means(outside)
    kept = (weight_in > 0.05) & (weight_out > 0.05)
    if not kept.any():
        return 0.0
    window.keep(kept)
    weight_in, weight_out = weight_in[kept], weight_out[kept]
    mean_in, mean_out = (np.empty((int(kept.sum()), 3), np.float32) for _ in range(2))
    for c in range(3):
        plane = rgb[..., c]
        for where, weight, mean in ((inside, weight_in, mean_in), (outside, weight_out, mean_out)):
            mean[:, c] = window.means(np.where(where, plane, 0)) / np.maximum(weight, 1e-6)
    distance = np.linalg.norm(mean_in - mean_out, axis=-1)
    return float((distance < LOW_CONTRAST).mean())


NEIGHBOURHOOD = 15  # the radius of the low-contrast test's windows (31 px)


class _Windows:
    """The means over the (2r+1)² windows centred on some pixels (``rows``, ``cols``) of planes of
    ``shape``, from summed-area tables (int32: sums of at most 961 values of 0-255) of the planes padded
    by reflection; float32, as ``BoxMean``'s (the exact sum times the float32 of 1/|window|)."""

    def __init__(self, shape: tuple[int, int], rows: np.ndarray, cols: np.ndarray, radius: int):
        self.radius = radius
        self.scale = np.float32(1.0 / (2 * radius + 1) ** 2)
        self.table = np.zeros((shape[0] + 2 * radius + 1, shape[1] + 2 * radius + 1), np.int32)
        self.rows, self.cols = rows, cols

    def keep(self, which: np.ndarray) -> None:
        """Only the pixels ``which`` (a mask over those given so far) from now on."""
        self.rows, self.cols = self.rows[which], self.cols[which]

    def means(self, plane: np.ndarray) -> np.ndarray:
        r, table = self.radius, self.table
        padded = np.pad(plane.astype(np.int32, copy=False), r, mode="symmetric")  # ...cba|abc...
        np.cumsum(padded, axis=0, out=padded)
        np.cumsum(padded, axis=1, out=table[1:, 1:])
        # the window's corners in the table (one row and column of zeros first)
        n, rows, cols = 2 * r + 1, self.rows, self.cols
        sums = table[rows + n, cols + n] - table[rows, cols + n] - table[rows + n, cols] + table[rows, cols]
        return sums.astype(np.float32) * self.scale


__all__ = ["FULL_FRAME", "UNDECIDED_AT_ZERO", "mask_confidence", "mask_warnings"]
