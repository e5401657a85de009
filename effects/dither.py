"""``dither``: Floyd–Steinberg error diffusion to two tones, drawn as dots on a grid.

The image's luma is averaged over cells of ``dot_spacing`` pixels; each cell is
diffused to ink or paper by Floyd–Steinberg (compiled kernel, optional serpentine
scan); each ink cell is drawn as a round dot of ``dot_size`` pixels centred in its
cell. ``dot_spacing`` 1 is classic per-pixel dithering. The subject uses only the
ink and paper colours; fully transparent pixels count as paper, so the subject's
outline does not pull errors in from the invisible background.

By default the grid follows the subject: ``DOTS_ACROSS`` cells across it, its size as
:func:`effects.schema.subject_size` measures it (classic per-pixel dithering up to about
375 px, 12 px dots on a 3000 px subject); and each dot is ``DOT_FILL`` times its cell, so
that a dot covers most of its cell: an ink cell is what the diffusion counts as black, and
a smaller dot pales every tone (dot_size 3 in 4 px cells inks a quarter of the cell at
most: a ghost of the subject).
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from effects import pixels
from effects._kernels import diffuse
from effects.schema import AUTO, Effect, Param, ParamError, across_subject

MIDPOINT = 127.5
# Chosen by looking at the fixture and AM-2k pets from 300 px to 3000 px: 250 dots across keeps
# a cat's eyes and nose; 160 loses the eyes in grey fur, and the old 4 px grid kept ~80 on a 450 px cat.
DOTS_ACROSS = 250
DOT_FILL = 1.2  # dot diameter / cell: touching round dots, ~95% of the cell inked


def render(rgba: np.ndarray, p: Mapping[str, Any]) -> np.ndarray:
    height, width = rgba.shape[:2]
    spacing = p["dot_spacing"]
    cells = pixels.luma709_cells(rgba, spacing, transparent=255.0)
    paper = error_diffusion(centre_on(cells, p["threshold"]), MIDPOINT, p["serpentine"])
    ink = paper == 0
    mask = ink[:, None, :, None] & dot_stamp(spacing, p["dot_size"])[None, :, None, :]
    mask = mask.reshape(ink.shape[0] * spacing, ink.shape[1] * spacing)[:height, :width]
    return pixels.paint_rgba(mask.view(np.uint8), np.array([p["paper"], p["ink"]], dtype=np.uint8), rgba)


def centre_on(levels: np.ndarray, threshold: float) -> np.ndarray:
    """Remap tones piecewise-linearly so that ``threshold`` lands on the midpoint; 0 and 255 stay put.

    Error diffusion keeps the average tone whatever its cut-off, so moving the cut-off
    alone would change almost nothing; moving the tones does what users mean by
    threshold: the ``threshold`` grey comes out half ink, and a higher one gives more ink.
    """
    t = np.float32(threshold)
    below = levels * (np.float32(MIDPOINT) / t)
    above = np.float32(MIDPOINT) + (levels - t) * (np.float32(255.0 - MIDPOINT) / (np.float32(255.0) - t))
    return np.where(levels <= t, below, above).astype(np.float32)


def error_diffusion(levels: np.ndarray, threshold: float, serpentine: bool) -> np.ndarray:
    """Floyd–Steinberg: HxW levels (0..255) -> HxW uint8 of 0 (below threshold) and 255."""
    levels = np.ascontiguousarray(levels, dtype=np.float32)
    height, width = levels.shape
    out = diffuse(levels, float(threshold), bool(serpentine))
    return np.frombuffer(out, dtype=np.uint8).reshape(height, width)


def dot_stamp(spacing: int, size: float) -> np.ndarray:
    """spacing×spacing bools: pixels whose centres lie within ``size``/2 of the cell's centre.

    The centre pixel(s) are always inked, so every ink cell leaves a mark.
    """
    centres = np.arange(spacing) + 0.5
    dy, dx = np.meshgrid(centres - spacing / 2, centres - spacing / 2, indexing="ij")
    dist = np.hypot(dy, dx)
    return dist <= max(size / 2, dist.min())


def auto_dot_size(rgba: np.ndarray, values: Mapping[str, Any]) -> float:
    """The default dot: DOT_FILL times its cell, whatever the cell."""
    return DOT_FILL * values["dot_spacing"]


def _check(values: Mapping[str, Any], path: str) -> None:
    if values["ink"] == values["paper"]:
        raise ParamError(f"{path}.ink", "ink and paper must differ, or the image disappears")


EFFECT = Effect(
    name="dither",
    description="Floyd–Steinberg error diffusion to two tones, rendered as dots on a grid "
    "(dot_spacing 1 = classic per-pixel dithering). Uses only the ink and paper colours.",
    params=(
        Param("dot_spacing", "integer", AUTO, f"grid pitch in pixels; 1 = classic per-pixel dithering; "
              f"auto: {DOTS_ACROSS} cells across the subject", 1, 32, auto=across_subject(DOTS_ACROSS)),
        Param("dot_size", "number", AUTO, f"dot diameter in pixels (clipped to its cell: dot_size >= 1.42 x dot_spacing "
              f"fills it); auto: {DOT_FILL} x dot_spacing", 1.0, 64.0, auto=auto_dot_size),
        Param("threshold", "integer", 128, "the grey level (luma 0-255) drawn half ink, half paper; higher = more ink", 1, 254),
        Param("serpentine", "boolean", True, "scan alternate rows right to left (fewer directional artefacts)"),
        Param("ink", "color", (0, 0, 0), "colour of the dots"),
        Param("paper", "color", (255, 255, 255), "colour between the dots"),
    ),
    render=render,
    check=_check,
)
