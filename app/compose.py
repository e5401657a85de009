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


def cutout_array(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """HxWx4 uint8 with the original colours and ``alpha``.

    Colours are not darkened at soft edges (rembg's composite over transparent black
    does darken them); fully transparent pixels are zeroed, which nobody sees and
    which keeps PNG/WebP output small.
    """
    rgba = np.dstack((rgb, alpha))
    rgba[alpha == 0] = 0
    return rgba


def cutout(rgb: np.ndarray, alpha: np.ndarray) -> Image.Image:
    """The cut-out as an RGBA image (see :func:`cutout_array`)."""
    return Image.fromarray(cutout_array(rgb, alpha), "RGBA")


def on_background(rgba: np.ndarray, background: tuple[int, int, int] | None) -> Image.Image:
    """An RGBA result kept transparent (``background`` None) or flattened over a solid colour."""
    if background is None:
        return Image.fromarray(rgba, "RGBA")
    return over_color(np.ascontiguousarray(rgba[..., :3]), np.ascontiguousarray(rgba[..., 3]), background)


def over_color(rgb: np.ndarray, alpha: np.ndarray, color: tuple[int, int, int]) -> Image.Image:
    """The subject blended over a solid colour (RGB)."""
    fg = Image.fromarray(rgb, "RGB")
    return Image.composite(fg, Image.new("RGB", fg.size, color), Image.fromarray(alpha, "L"))
