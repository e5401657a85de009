"""The layout stage: framing, backgrounds, shadows and outlines of a cut-out.

Pure functions of arrays (numpy, Pillow); no Flask, no parsing. Applied after segmentation and
effects, before encoding:

- :func:`subject_box` — the subject's bounding box in an alpha plane;
- :func:`plan` — the geometry alone (canvas size, the subject's scale and place, the bounds of
  the shadow and the outline), from sizes, without pixels: it bounds the output before any
  pixel work and can be property-tested;
- :func:`lay_out` — the pixels: background, shadow, outline, subject (bottom to top).

``layout`` is the request's :class:`app.pipeline.options.Layout`, where each field, its range and
its default are declared, once, and checked: its values are read here as they are, never
re-parsed.

One module per job: geometry (boxes, the plan), framing (the subject on the canvas), background,
shadow, outline; planes (constant-colour layers and compositing, band by band), render
(:func:`lay_out`, the layers in order).

Memory: the output (canvas, RGBA uint8) is the only full-size colour array. Next to it live the
laid-out subject's alpha (one byte a pixel, over the subject's box), the outline's alpha when
there is one (the same), with an outline the subject's trimmed alpha (one byte a pixel of the
input), low-resolution planes for the blurred background and the shadow, and bands of at most
:data:`BAND_PIXELS` pixels while compositing (with an outline, plus the rows and columns its
colour pull reads around a band's soft pixels). Nothing full-size is float.
"""

from app.pipeline.layout.geometry import ALPHA_THRESHOLD, Box, Plan, plan, subject_box
from app.pipeline.layout.outline import dilate_disc
from app.pipeline.layout.planes import BAND_PIXELS
from app.pipeline.layout.render import Composition, lay_out

__all__ = ["ALPHA_THRESHOLD", "BAND_PIXELS", "Box", "Composition", "Plan", "dilate_disc", "lay_out", "plan",
           "subject_box"]
