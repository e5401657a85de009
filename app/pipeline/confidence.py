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


__all__ = ["FULL_FRAME", "UNDECIDED_AT_ZERO", "mask_confidence"]
