"""Putting the subject onto a background. Pure functions of arrays."""

from __future__ import annotations

import numpy as np
from PIL import Image


def combine_alpha(mask: np.ndarray, alpha: np.ndarray | None) -> np.ndarray:
    """The subject's alpha: the model's mask, within the input's own transparency if it had any."""
    if alpha is None:
        return mask
    return ((mask.astype(np.uint16) * alpha + 127) // 255).astype(np.uint8)


def mask_image(alpha: np.ndarray) -> Image.Image:
    """The alpha alone, as an 8-bit greyscale image."""
    return Image.fromarray(alpha, "L")


def cutout(rgb: np.ndarray, alpha: np.ndarray) -> Image.Image:
    """RGBA with the original colours and ``alpha``.

    Colours are not darkened at soft edges (rembg's composite over transparent black
    does darken them); fully transparent pixels are zeroed, which nobody sees and
    which keeps PNG/WebP output small.
    """
    rgba = np.dstack((rgb, alpha))
    rgba[alpha == 0] = 0
    return Image.fromarray(rgba, "RGBA")


def over_color(rgb: np.ndarray, alpha: np.ndarray, color: tuple[int, int, int]) -> Image.Image:
    """The subject blended over a solid colour (RGB)."""
    fg = Image.fromarray(rgb, "RGB")
    return Image.composite(fg, Image.new("RGB", fg.size, color), Image.fromarray(alpha, "L"))
